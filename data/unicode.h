// The few Unicode facts the tokenizers need: UTF-8 decoding and encoding, the character classes
// of the pre-tokenizer regexes (\p{L}, \p{N}, \s), and NFC normalization (Qwen2's tokenizer.json
// normalizer).
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

// ---- NFC (Unicode Standard Annex #15, Normalization Form C)
// Canonical decomposition (recursive, Hangul syllables algorithmically), canonical ordering of
// each run of non-starters by combining class (stable), then canonical composition: a character
// joins the last starter when a primary composite of the two exists and nothing between them
// blocks it (an intervening character of the same or a higher class, or any starter).
// Generated data (data/unicode_nfc_tables.cc, data/gen_unicode_nfc_tables.sh):
struct CombiningClassRange {
  char32_t first, last;  // inclusive
  int combining_class;   // nonzero Canonical_Combining_Class
};
struct CanonicalDecomposition {
  char32_t code_point, first, second;  // second = 0: a singleton mapping
};
struct Composition {
  char32_t first, second, composite;
};
extern const char kNfcUnicodeVersion[];
extern const CombiningClassRange kCombiningClasses[];
extern const CanonicalDecomposition kCanonicalDecompositions[];
extern const Composition kCompositions[];
extern const int kCombiningClassesCount;
extern const int kCanonicalDecompositionsCount;
extern const int kCompositionsCount;

int CombiningClass(char32_t c);  // 0 for starters
// The NFC form of valid UTF-8 `text` (call FindInvalidUtf8 first: invalid bytes are copied
// through unchanged, not normalized). Text whose code points are all below U+0300 is already NFC
// and is returned as it is without decoding.
std::string ToNfc(std::string_view text);

}  // namespace qat::data::unicode
