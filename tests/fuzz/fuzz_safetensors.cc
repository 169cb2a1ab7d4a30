// libFuzzer harness: the safetensors reader (kernels/safetensors.h), and every tensor of a file it
// accepts converted to fp32 (the bounds of each tensor's bytes).
#include <cstddef>
#include <cstdint>
#include <string>

#include "kernels/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::StatusOr<qat::kernels::SafetensorsFile> file = qat::kernels::SafetensorsFile::Parse(
      std::string(reinterpret_cast<const char*>(data), size), "fuzz.safetensors");
  if (!file.ok()) return 0;
  for (const qat::kernels::TensorInfo& t : file->tensors()) {
    if (t.numel() <= (int64_t{1} << 24)) (void)file->ReadF32(t.name);
  }
  return 0;
}
