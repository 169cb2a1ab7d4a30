// The few Unicode facts the tokenizers need: UTF-8 decoding and encoding, and the character
// classes of the pre-tokenizer regexes (\p{L}, \p{N}, \s).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace qat::data::unicode {

struct CodeRange {
  char32_t first, last;  // inclusive
};
// Sorted, disjoint runs of General_Category L* / N* (generated, data/unicode_tables.cc).
extern const CodeRange kLetterRanges[];
extern const CodeRange kNumberRanges[];
extern const int kLetterRangeCount;
extern const int kNumberRangeCount;

bool IsLetter(char32_t c);      // \p{L}
bool IsNumber(char32_t c);      // \p{N}
bool IsWhitespace(char32_t c);  // \s: the White_Space property

// Decodes the UTF-8 sequence starting at s[pos] into *cp and returns its length (1..4), or 0
// when the bytes there are not valid UTF-8 (stray continuation byte, truncated sequence, overlong
// form, UTF-16 surrogate, or a code point above U+10FFFF).
int DecodeUtf8(std::string_view s, size_t pos, char32_t* cp);
// Byte offset of the first invalid UTF-8 sequence in s, or npos when s is valid.
size_t FindInvalidUtf8(std::string_view s);
void AppendUtf8(char32_t cp, std::string* out);

}  // namespace qat::data::unicode
