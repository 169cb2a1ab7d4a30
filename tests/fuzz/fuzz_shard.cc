// libFuzzer harness: token shards (data/tokens.h). The reader takes a path, so each input goes
// through a file of this process's own.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "data/tokens.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = "/tmp/qat-fuzz-shard-" + std::to_string(getpid()) + ".bin";
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return 0;
  std::fwrite(data, 1, size, f);
  std::fclose(f);
  (void)qat::data::ReadShard(path);
  (void)qat::data::ReadShard(path, /*vocab_size=*/300);
  std::remove(path.c_str());
  return 0;
}
