// libFuzzer harness: the recipe parser (trainer/recipe.h): YAML, the schema, the checks.
#include <cstddef>
#include <cstdint>
#include <string>

#include "trainer/recipe.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  (void)qat::trainer::ParseRecipeText(std::string(reinterpret_cast<const char*>(data), size),
                                      "fuzz.yaml");
  return 0;
}
