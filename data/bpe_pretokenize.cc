// The pre-tokenizer regexes of GPT-2, LLaMA-3 and Qwen2, matched by hand.
//
// A regex engine finds, at each position, the first alternative (in order) that matches, each
// quantifier greedy with backtracking. For these patterns that reduces to the rules below, where
// L = \p{L}, N = \p{N}, W = \s, O = anything else ([^\s\p{L}\p{N}]), and a "run" is the longest
// sequence of one class starting at a position:
//   GPT-2   's|'t|'re|'ve|'m|'ll|'d | ?\p{L}+ | ?\p{N}+ | ?[^\s\p{L}\p{N}]+ | \s+(?!\S) | \s+
//     contraction (case-sensitive); else an optional ' ' then a run of L, N or O; else a W run:
//     the whole run at the end of the text, all but its last character when it is longer than
//     one (so that the last one can prefix the next word), or the single character.
//   LLaMA-3 (?i:'s|'t|'re|'ve|'m|'ll|'d) | [^\r\n\p{L}\p{N}]?\p{L}+ | \p{N}{1,3} |
//           ?[^\s\p{L}\p{N}]+[\r\n]* | \s*[\r\n]+ | \s+(?!\S) | \s+
//     contraction (case-insensitive: S also matches U+017F, Unicode's long s); else one optional
//     non-CR/LF, non-L, non-N character then an L run; else 1-3 characters of an N run; else an
//     optional ' ' then an O run then a CR/LF run; else, inside the W run, everything up to its
//     last CR or LF when it holds one; else the W rules of GPT-2.
//   Qwen2   as LLaMA-3 with \p{N} (one digit at a time) instead of \p{N}{1,3}.
#include <algorithm>

#include "data/bpe.h"
#include "data/unicode.h"

namespace qat::data {

const char kGpt2Regex[] =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
const char kLlama3Regex[] =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char kQwen2Regex[] =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

namespace {

class Matcher {
 public:
  Matcher(std::string_view text, BpeSplit split) : split_(split) {
    size_t pos = 0;
    while (pos < text.size()) {
      char32_t c;
      int n = unicode::DecodeUtf8(text, pos, &c);
      if (n == 0) n = 1, c = 0xFFFD;  // callers validate; never read past the text regardless
      cps_.push_back(c);
      offsets_.push_back(pos);
      pos += n;
    }
    offsets_.push_back(text.size());
  }
  size_t size() const { return cps_.size(); }
  size_t offset(size_t i) const { return offsets_[i]; }

  // Length in code points of the match at i (always >= 1).
  size_t Match(size_t i) const { return split_ == BpeSplit::kGpt2 ? MatchGpt2(i) : MatchLlama3(i); }

 private:
  static bool L(char32_t c) { return unicode::IsLetter(c); }
  static bool N(char32_t c) { return unicode::IsNumber(c); }
  static bool W(char32_t c) { return unicode::IsWhitespace(c); }
  static bool O(char32_t c) { return !W(c) && !L(c) && !N(c); }
  static bool CrLf(char32_t c) { return c == '\r' || c == '\n'; }

  char32_t At(size_t i) const { return i < cps_.size() ? cps_[i] : 0; }
  bool Has(size_t i) const { return i < cps_.size(); }
  template <typename Pred>
  size_t Run(size_t i, Pred pred) const {
    size_t k = i;
    while (k < cps_.size() && pred(cps_[k])) ++k;
    return k - i;
  }

  // Length of 's 't 're 've 'm 'll 'd at i, or 0.
  size_t Contraction(size_t i, bool ignore_case) const {
    if (At(i) != '\'' || !Has(i + 1)) return 0;
    const auto is = [&](size_t k, char lower) {
      if (!Has(k)) return false;
      const char32_t c = At(k);
      if (c == static_cast<char32_t>(lower)) return true;
      if (!ignore_case) return false;
      return c == static_cast<char32_t>(lower - 'a' + 'A') || (lower == 's' && c == 0x017F);
    };
    if (is(i + 1, 's') || is(i + 1, 't') || is(i + 1, 'm') || is(i + 1, 'd')) return 2;
    if ((is(i + 1, 'r') && is(i + 2, 'e')) || (is(i + 1, 'v') && is(i + 2, 'e')) ||
        (is(i + 1, 'l') && is(i + 2, 'l'))) {
      return 3;
    }
    return 0;
  }

  // \s+(?!\S)|\s+ at i (a whitespace character).
  size_t Whitespace(size_t i) const {
    const size_t w = Run(i, W);
    if (i + w == cps_.size() || w == 1) return w;
    return w - 1;
  }

  size_t MatchGpt2(size_t i) const {
    if (size_t k = Contraction(i, /*ignore_case=*/false)) return k;
    for (bool (*cls)(char32_t) : {&Matcher::L, &Matcher::N, &Matcher::O}) {
      if (At(i) == ' ' && Has(i + 1) && cls(At(i + 1))) return 1 + Run(i + 1, cls);
      if (cls(At(i))) return Run(i, cls);
    }
    return Whitespace(i);
  }

  size_t MatchLlama3(size_t i) const {
    if (size_t k = Contraction(i, /*ignore_case=*/true)) return k;
    const char32_t c = At(i);
    if (!CrLf(c) && !L(c) && !N(c) && Has(i + 1) && L(At(i + 1))) return 1 + Run(i + 1, L);
    if (L(c)) return Run(i, L);
    if (N(c)) return std::min<size_t>(Run(i, N), split_ == BpeSplit::kQwen2 ? 1 : 3);
    size_t k = 0;
    if (c == ' ' && Has(i + 1) && O(At(i + 1))) {
      k = 1 + Run(i + 1, O);
    } else if (O(c)) {
      k = Run(i, O);
    }
    if (k > 0) return k + Run(i + k, CrLf);
    const size_t w = Run(i, W);
    for (size_t j = i + w; j > i; --j) {
      if (CrLf(cps_[j - 1])) return j - i;
    }
    return Whitespace(i);
  }

  BpeSplit split_;
  std::vector<char32_t> cps_;
  std::vector<size_t> offsets_;
};

}  // namespace

std::vector<std::string_view> PreTokenize(std::string_view text, BpeSplit split) {
  Matcher m(text, split);
  std::vector<std::string_view> pieces;
  size_t i = 0;
  while (i < m.size()) {
    const size_t len = m.Match(i);
    pieces.push_back(text.substr(m.offset(i), m.offset(i + len) - m.offset(i)));
    i += len;
  }
  return pieces;
}

}  // namespace qat::data
