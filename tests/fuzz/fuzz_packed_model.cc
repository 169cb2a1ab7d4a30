// libFuzzer harness: the packed-model loader (a qat export: safetensors with qat.* metadata and
// packed linears, kernels/runtime.h), from the parsed file to the checked weights.
#include <cstddef>
#include <cstdint>
#include <string>

#include "kernels/runtime_internal.h"
#include "kernels/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::StatusOr<qat::kernels::SafetensorsFile> file = qat::kernels::SafetensorsFile::Parse(
      std::string(reinterpret_cast<const char*>(data), size), "fuzz.safetensors");
  if (!file.ok()) return 0;
  (void)qat::kernels::LoadModelWeights(*file);
  return 0;
}
