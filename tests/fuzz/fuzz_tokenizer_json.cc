// libFuzzer harness: byte-level BPE from a Hugging Face tokenizer.json (data/bpe.h); a tokenizer
// it accepts encodes and decodes a fixed text with special-token look-alikes.
#include <cstddef>
#include <cstdint>
#include <string>

#include "data/bpe.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::StatusOr<std::unique_ptr<qat::data::BpeTokenizer>> tokenizer =
      qat::data::BpeTokenizer::Create(std::string(reinterpret_cast<const char*>(data), size), "",
                                      "fuzz/tokenizer.json");
  if (!tokenizer.ok()) return 0;
  absl::StatusOr<std::vector<int32_t>> ids =
      (*tokenizer)->Encode("Hello, world! <|endoftext|> 12345 \xC3\xA9t\xC3\xA9\n\n  x");
  if (ids.ok()) (void)(*tokenizer)->Decode(*ids);
  return 0;
}
