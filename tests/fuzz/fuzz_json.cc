// libFuzzer harness: the JSON parser (kernels/json.h), then the serialiser on what it accepted:
// what Parse accepts, Serialize must write and Parse must read back.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "kernels/json.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<qat::kernels::json::Value> value = qat::kernels::json::Parse(text);
  if (!value.ok()) return 0;
  const std::string again = qat::kernels::json::Serialize(*value);
  if (!qat::kernels::json::Parse(again).ok()) std::abort();  // our own output must read back
  return 0;
}
