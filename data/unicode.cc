#include "data/unicode.h"

#include <algorithm>
#include <cstddef>
#include <utility>
#include <vector>

#include "kernels/json.h"

namespace qat::data::unicode {
namespace {

bool InRanges(const CodeRange* ranges, int count, char32_t c) {
  // The first range whose end is >= c is the only one that can hold c.
  const CodeRange* end = ranges + count;
  const CodeRange* it =
      std::lower_bound(ranges, end, c, [](const CodeRange& r, char32_t v) { return r.last < v; });
  return it != end && it->first <= c;
}

}  // namespace

bool IsLetter(char32_t c) {
  if (c < 0x80) return (c | 0x20) >= 'a' && (c | 0x20) <= 'z';
  return InRanges(kLetterRanges, kLetterRangeCount, c);
}

bool IsNumber(char32_t c) {
  if (c < 0x80) return c >= '0' && c <= '9';
  return InRanges(kNumberRanges, kNumberRangeCount, c);
}

bool IsWhitespace(char32_t c) {
  // The White_Space property of Unicode's PropList.txt.
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

int DecodeUtf8(std::string_view s, size_t pos, char32_t* cp) {
  if (pos >= s.size()) return 0;
  const auto byte = [&](size_t i) { return static_cast<unsigned char>(s[i]); };
  const unsigned char b0 = byte(pos);
  int len;
  char32_t value, min;
  if (b0 < 0x80) {
    *cp = b0;
    return 1;
  } else if ((b0 & 0xE0) == 0xC0) {
    len = 2, value = b0 & 0x1F, min = 0x80;
  } else if ((b0 & 0xF0) == 0xE0) {
    len = 3, value = b0 & 0x0F, min = 0x800;
  } else if ((b0 & 0xF8) == 0xF0) {
    len = 4, value = b0 & 0x07, min = 0x10000;
  } else {
    return 0;  // a continuation byte or 0xF8..0xFF
  }
  if (s.size() - pos < static_cast<size_t>(len)) return 0;
  for (int i = 1; i < len; ++i) {
    const unsigned char b = byte(pos + i);
    if ((b & 0xC0) != 0x80) return 0;
    value = (value << 6) | (b & 0x3F);
  }
  if (value < min || value > 0x10FFFF || (value >= 0xD800 && value <= 0xDFFF)) return 0;
  *cp = value;
  return len;
}

size_t FindInvalidUtf8(std::string_view s) {
  size_t pos = 0;
  while (pos < s.size()) {
    if (static_cast<unsigned char>(s[pos]) < 0x80) {
      ++pos;
      continue;
    }
    char32_t cp;
    const int n = DecodeUtf8(s, pos, &cp);
    if (n == 0) return pos;
    pos += n;
  }
  return std::string_view::npos;
}

void AppendUtf8(char32_t cp, std::string* out) { kernels::json::AppendUtf8(cp, out); }

// ---- NFC
namespace {

// Hangul syllables decompose and compose by arithmetic (Unicode 15.0, section 3.12).
constexpr char32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr char32_t kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount,
                   kSCount = kLCount * kNCount;

void Decompose(char32_t c, std::vector<char32_t>* out) {
  if (c >= kSBase && c < kSBase + kSCount) {
    const char32_t s = c - kSBase;
    out->push_back(kLBase + s / kNCount);
    out->push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount != 0) out->push_back(kTBase + s % kTCount);
    return;
  }
  const CanonicalDecomposition* end = kCanonicalDecompositions + kCanonicalDecompositionsCount;
  const CanonicalDecomposition* it = std::lower_bound(
      kCanonicalDecompositions, end, c,
      [](const CanonicalDecomposition& d, char32_t v) { return d.code_point < v; });
  if (it == end || it->code_point != c) {
    out->push_back(c);
    return;
  }
  // Mappings are one level deep in the data; their parts may decompose further.
  Decompose(it->first, out);
  if (it->second != 0) Decompose(it->second, out);
}

// The primary composite of (a, b), or 0 when there is none.
char32_t Compose(char32_t a, char32_t b) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount) {
    return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  }
  if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase &&
      b < kTBase + kTCount) {
    return a + (b - kTBase);
  }
  const Composition* end = kCompositions + kCompositionsCount;
  const Composition* it =
      std::lower_bound(kCompositions, end, std::make_pair(a, b),
                       [](const Composition& x, std::pair<char32_t, char32_t> v) {
                         return std::make_pair(x.first, x.second) < v;
                       });
  return it != end && it->first == a && it->second == b ? it->composite : 0;
}

}  // namespace

int CombiningClass(char32_t c) {
  if (c < 0x300) return 0;
  const CombiningClassRange* end = kCombiningClasses + kCombiningClassesCount;
  const CombiningClassRange* it =
      std::lower_bound(kCombiningClasses, end, c,
                       [](const CombiningClassRange& r, char32_t v) { return r.last < v; });
  return it != end && it->first <= c ? it->combining_class : 0;
}

std::string ToNfc(std::string_view text) {
  // Nothing below U+0300 decomposes into something else or combines with what precedes it.
  bool below_0300 = true;
  for (size_t i = 0; i < text.size() && below_0300; ++i) {
    const unsigned char b = static_cast<unsigned char>(text[i]);
    below_0300 = b < 0xCC;  // lead bytes from 0xCC on start U+0300 or higher
  }
  if (below_0300) return std::string(text);

  // 1. Full canonical decomposition. Invalid bytes pass through as they are, each kept in place
  // as a "code point" above U+10FFFF (a starter) so that nothing composes across them.
  constexpr char32_t kRawByte = 0x110000;
  std::vector<char32_t> cps;
  cps.reserve(text.size());
  for (size_t pos = 0; pos < text.size();) {
    char32_t c;
    const int n = DecodeUtf8(text, pos, &c);
    if (n == 0) {
      cps.push_back(kRawByte + static_cast<unsigned char>(text[pos++]));
      continue;
    }
    Decompose(c, &cps);
    pos += n;
  }
  // 2. Canonical ordering: a stable sort of each run of non-starters by combining class
  // (insertion sort: runs are short).
  std::vector<int> classes(cps.size());
  for (size_t i = 0; i < cps.size(); ++i)
    classes[i] = cps[i] >= kRawByte ? 0 : CombiningClass(cps[i]);
  for (size_t i = 1; i < cps.size(); ++i) {
    for (size_t j = i; j > 0 && classes[j] != 0 && classes[j - 1] > classes[j]; --j) {
      std::swap(cps[j], cps[j - 1]);
      std::swap(classes[j], classes[j - 1]);
    }
  }
  // 3. Canonical composition. `last_class` is the class of the last character kept after the
  // starter (0: none yet, the candidate is adjacent to the starter; 256: blocked for good).
  std::vector<char32_t> out;
  out.reserve(cps.size());
  ptrdiff_t starter = -1;
  int last_class = 256;
  for (size_t i = 0; i < cps.size(); ++i) {
    const char32_t c = cps[i];
    const int cc = classes[i];
    if (starter >= 0 && (last_class == 0 || last_class < cc) && c < kRawByte) {
      if (const char32_t composite = Compose(out[starter], c); composite != 0) {
        out[starter] = composite;
        continue;
      }
    }
    if (cc == 0) {
      starter = c < kRawByte ? static_cast<ptrdiff_t>(out.size()) : -1;
      last_class = c < kRawByte ? 0 : 256;
    } else {
      last_class = cc;
    }
    out.push_back(c);
  }
  std::string result;
  result.reserve(text.size() + 8);
  for (char32_t c : out) {
    if (c >= kRawByte) {
      result.push_back(static_cast<char>(c - kRawByte));
    } else {
      AppendUtf8(c, &result);
    }
  }
  return result;
}

}  // namespace qat::data::unicode
