// The byte-level tokenizer: one id per byte, plus BOS/EOS ids above the byte range.
#include "data/tokens.h"

namespace qat::data {

std::vector<int32_t> ByteTokenizer::Encode(const std::string& text) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size());
  for (char c : text) ids.push_back(static_cast<unsigned char>(c));
  return ids;
}

std::string ByteTokenizer::Decode(const std::vector<int32_t>& ids) const {
  std::string text;
  text.reserve(ids.size());
  for (int32_t id : ids) {
    // BOS, EOS and anything outside the vocabulary carry no bytes.
    if (id >= 0 && id < 256) text.push_back(static_cast<char>(id));
  }
  return text;
}

}  // namespace qat::data
