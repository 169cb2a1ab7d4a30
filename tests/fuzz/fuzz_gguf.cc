// libFuzzer harness: the GGUF reader (kernels/gguf.h), and every tensor of a file it accepts
// dequantized (block layouts, bounds).
#include <cstddef>
#include <cstdint>
#include <string>

#include "kernels/gguf.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::StatusOr<qat::kernels::GgufFile> file = qat::kernels::GgufFile::Parse(
      std::string(reinterpret_cast<const char*>(data), size), "fuzz.gguf");
  if (!file.ok()) return 0;
  for (const qat::kernels::GgufTensorInfo& t : file->tensors()) (void)file->Dequantize(t.name);
  return 0;
}
