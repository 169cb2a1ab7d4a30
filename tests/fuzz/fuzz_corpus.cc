// libFuzzer harness: corpus files as `qat prep` reads them (data/documents.h). Each input is
// written as a JSON Lines file, as the same bytes named .jsonl.gz and .jsonl.zst (hostile
// compressed streams) and as a fortune text file; every record is read and turned into text.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "data/documents.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string base = "/tmp/qat-fuzz-corpus-" + std::to_string(getpid());
  for (const char* suffix : {".jsonl", ".jsonl.gz", ".jsonl.zst", ".txt"}) {
    const std::string path = base + suffix;
    std::FILE* f = std::fopen(path.c_str(), "wb");
    if (f == nullptr) return 0;
    std::fwrite(data, 1, size, f);
    std::fclose(f);
    qat::data::DocumentSourceOptions options;
    options.inputs = {path};
    options.fortune = true;
    absl::StatusOr<qat::data::DocumentSource> source = qat::data::DocumentSource::Open(options);
    if (source.ok()) {
      std::vector<qat::data::RawRecord> batch;
      for (;;) {
        batch.clear();
        absl::StatusOr<bool> more = source->ReadBatch(64, &batch);
        if (!more.ok() || !*more) break;
        for (const qat::data::RawRecord& r : batch) {
          (void)qat::data::RecordText(r, path, {"text", "title"});
        }
      }
    }
    std::remove(path.c_str());
  }
  return 0;
}
