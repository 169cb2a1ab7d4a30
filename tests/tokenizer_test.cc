// Tokenizers: the pre-tokenizer regexes (hand-checked splits), byte-level BPE from a
// tokenizer.json built here, SentencePiece from a model proto written here byte by byte, token
// shards written with them by `prep`, GGUF vocabularies, and clear errors on malformed input.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "data/bpe.h"
#include "data/prep.h"
#include "data/sentencepiece.h"
#include "data/tokens.h"
#include "data/unicode.h"
#include "kernels/gguf.h"
#include "kernels/gguf_export.h"
#include "kernels/json.h"
#include "kernels/safetensors.h"
#include "test_dir.h"

namespace qat::data {
namespace {

namespace json = kernels::json;
namespace fs = std::filesystem;

#define EXPECT_CONTAINS(text, part)                          \
  EXPECT_NE(std::string(text).find(part), std::string::npos) \
      << "\"" << std::string(text) << "\" does not contain \"" << (part) << "\""

std::vector<std::string> Pieces(const std::string& text, BpeSplit split) {
  std::vector<std::string> out;
  for (std::string_view p : PreTokenize(text, split)) out.emplace_back(p);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Pre-tokenizer regexes, checked by hand against the patterns in bpe_pretokenize.cc.

TEST(PreTokenizeTest, Gpt2) {
  EXPECT_EQ(Pieces("Hello world's  test 123\n\n", BpeSplit::kGpt2),
            (std::vector<std::string>{"Hello", " world", "'s", " ", " test", " 123", "\n\n"}));
  // Case-sensitive contractions: 'S is punctuation then a letter.
  EXPECT_EQ(Pieces("IT'S", BpeSplit::kGpt2), (std::vector<std::string>{"IT", "'", "S"}));
  EXPECT_EQ(Pieces("a \n b", BpeSplit::kGpt2), (std::vector<std::string>{"a", " \n", " b"}));
  EXPECT_EQ(Pieces("\tword", BpeSplit::kGpt2), (std::vector<std::string>{"\t", "word"}));
  EXPECT_EQ(Pieces(" !?x", BpeSplit::kGpt2), (std::vector<std::string>{" !?", "x"}));
}

TEST(PreTokenizeTest, Llama3AndQwen2) {
  const std::string text = "Hello WORLD'S 12345 ok!!\n\n  x";
  EXPECT_EQ(Pieces(text, BpeSplit::kLlama3),
            (std::vector<std::string>{"Hello", " WORLD", "'S", " ", "123", "45", " ok", "!!\n\n",
                                      " ", " x"}));
  EXPECT_EQ(Pieces(text, BpeSplit::kQwen2),
            (std::vector<std::string>{"Hello", " WORLD", "'S", " ", "1", "2", "3", "4", "5", " ok",
                                      "!!\n\n", " ", " x"}));
  EXPECT_EQ(Pieces("a \n b", BpeSplit::kLlama3), (std::vector<std::string>{"a", " \n", " b"}));
  // One non-letter, non-digit, non-newline character may lead a word (a tab, a quote); a space
  // followed by punctuation goes with the punctuation instead.
  EXPECT_EQ(Pieces("\tword \"q", BpeSplit::kLlama3),
            (std::vector<std::string>{"\tword", " \"", "q"}));
  EXPECT_EQ(Pieces("\"quoted", BpeSplit::kLlama3), (std::vector<std::string>{"\"quoted"}));
  // Letters and digits beyond ASCII: Greek, CJK, Arabic-Indic digits; U+017F folds to 's'.
  EXPECT_EQ(Pieces("αβγ 日本 \xD9\xA1\xD9\xA2 x'\xC5\xBF", BpeSplit::kLlama3),
            (std::vector<std::string>{"αβγ", " 日本", " ", "\xD9\xA1\xD9\xA2", " x", "'\xC5\xBF"}));
  // Trailing whitespace run: all of it at the end of the text.
  EXPECT_EQ(Pieces("ab   ", BpeSplit::kLlama3), (std::vector<std::string>{"ab", "   "}));
}

TEST(UnicodeTest, ClassesAndUtf8) {
  EXPECT_TRUE(unicode::IsLetter(U'é'));
  EXPECT_TRUE(unicode::IsLetter(0x65E5));   // 日
  EXPECT_FALSE(unicode::IsLetter(0x20AC));  // €
  EXPECT_TRUE(unicode::IsNumber(0x0661));   // Arabic-Indic one
  EXPECT_TRUE(unicode::IsNumber(0x00BD));   // ½ (No)
  EXPECT_TRUE(unicode::IsWhitespace(0x3000));
  EXPECT_FALSE(unicode::IsWhitespace(0x200B));  // zero width space is not White_Space
  EXPECT_EQ(unicode::FindInvalidUtf8("ok\xC3\xA9"), std::string_view::npos);
  EXPECT_EQ(unicode::FindInvalidUtf8("ab\xC3"), 2u);            // truncated
  EXPECT_EQ(unicode::FindInvalidUtf8("a\xC0\xAF"), 1u);         // overlong '/'
  EXPECT_EQ(unicode::FindInvalidUtf8("a\xED\xA0\x80"), 1u);     // surrogate
  EXPECT_EQ(unicode::FindInvalidUtf8("\xF4\x90\x80\x80"), 0u);  // above U+10FFFF
}

std::string Utf8(std::u32string_view cps) {
  std::string out;
  for (char32_t c : cps) unicode::AppendUtf8(c, &out);
  return out;
}

TEST(UnicodeTest, NfcCheckedByHand) {
  const auto nfc = [](std::u32string_view in) { return unicode::ToNfc(Utf8(in)); };
  EXPECT_EQ(unicode::ToNfc("plain ASCII, Latin-1 \xC3\xA9"), "plain ASCII, Latin-1 \xC3\xA9");
  EXPECT_EQ(nfc(U"e\u0301"), Utf8(U"\u00E9"));  // e + acute -> é
  EXPECT_EQ(nfc(U"\u212B"), Utf8(U"\u00C5"));   // ANGSTROM SIGN (singleton) -> Å
  EXPECT_EQ(nfc(U"A\u030A"), Utf8(U"\u00C5"));  // A + ring -> Å
  EXPECT_EQ(nfc(U"a\u0340"), Utf8(U"\u00E0"));  // U+0340 decomposes to U+0300, then composes
  // Canonical ordering: dot below (class 220) sorts before circumflex (230) whatever the input
  // order; then a + dot below -> U+1EA1, and U+1EA1 + circumflex -> U+1EAD.
  EXPECT_EQ(nfc(U"a\u0302\u0323"), Utf8(U"\u1EAD"));
  EXPECT_EQ(nfc(U"a\u0323\u0302"), Utf8(U"\u1EAD"));
  EXPECT_EQ(nfc(U"\u1EA1\u0302"), Utf8(U"\u1EAD"));
  // Blocking: the second acute has the same class as the first, which already composed.
  EXPECT_EQ(nfc(U"a\u0301\u0301"), Utf8(U"\u00E1\u0301"));
  // A mark of a lower class in between does not block a higher one: a + dot below + acute.
  EXPECT_EQ(nfc(U"a\u0323\u0301"), Utf8(U"\u1EA1\u0301"));  // no a-dot-below-acute exists
  EXPECT_EQ(nfc(U"o\u031B\u0301"), Utf8(U"\u1EDB"));  // o + horn (216) + acute -> ớ via U+01A1
  // Hangul, by arithmetic: L + V -> LV, LV + T -> LVT; a syllable decomposes and recomposes.
  EXPECT_EQ(nfc(U"\u1100\u1161"), Utf8(U"\uAC00"));
  EXPECT_EQ(nfc(U"\u1100\u1161\u11A8"), Utf8(U"\uAC01"));
  EXPECT_EQ(nfc(U"\uAC00\u11A8"), Utf8(U"\uAC01"));
  EXPECT_EQ(nfc(U"\uD55C\uAE00"), Utf8(U"\uD55C\uAE00"));  // 한글 is already NFC
  // Composition exclusions stay decomposed: DEVANAGARI LETTER QA -> KA + NUKTA.
  EXPECT_EQ(nfc(U"\u0958"), Utf8(U"\u0915\u093C"));
  EXPECT_EQ(nfc(U"\u0915\u093C"), Utf8(U"\u0915\u093C"));
  // A starter that composes with the starter before it (Oriya AI length mark).
  EXPECT_EQ(nfc(U"\u0B47\u0B56"), Utf8(U"\u0B48"));
  // A leading non-starter has nothing to compose with.
  EXPECT_EQ(nfc(U"\u0301e"), Utf8(U"\u0301e"));
  // Invalid bytes pass through where they are, and nothing composes across them.
  EXPECT_EQ(unicode::ToNfc("e\xFF"
                           "\xCC\x81"),
            "e\xFF"
            "\xCC\x81");
  EXPECT_EQ(unicode::CombiningClass(0x0301), 230);
  EXPECT_EQ(unicode::CombiningClass(0x0323), 220);
  EXPECT_EQ(unicode::CombiningClass('a'), 0);
  // The lookups are binary searches: the generated tables must be sorted.
  for (int i = 1; i < unicode::kCombiningClassesCount; ++i) {
    EXPECT_LT(unicode::kCombiningClasses[i - 1].last, unicode::kCombiningClasses[i].first) << i;
  }
  for (int i = 1; i < unicode::kCanonicalDecompositionsCount; ++i) {
    EXPECT_LT(unicode::kCanonicalDecompositions[i - 1].code_point,
              unicode::kCanonicalDecompositions[i].code_point)
        << i;
  }
  for (int i = 1; i < unicode::kCompositionsCount; ++i) {
    const auto& a = unicode::kCompositions[i - 1];
    const auto& b = unicode::kCompositions[i];
    EXPECT_TRUE(a.first < b.first || (a.first == b.first && a.second < b.second)) << i;
  }
}

// The Unicode conformance suite for the same Unicode version as the tables, from Debian's
// unicode-data package (launch/setup.sh installs it). Part 1 lists every code point with a
// nontrivial normalization; every other code point must be its own NFC.
TEST(UnicodeTest, NfcPassesNormalizationTestTxt) {
  const char* path = "/usr/share/unicode/NormalizationTest.txt.bz2";
  if (!fs::exists(path)) GTEST_SKIP() << path << " is missing (apt-get install unicode-data)";
  FILE* pipe = popen((std::string("bzip2 -dc ") + path).c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string text;
  char buf[1 << 16];
  for (size_t n; (n = fread(buf, 1, sizeof buf, pipe)) > 0;) text.append(buf, n);
  ASSERT_EQ(pclose(pipe), 0) << "bzip2 -dc " << path;
  EXPECT_NE(text.find("# NormalizationTest-" + std::string(unicode::kNfcUnicodeVersion)),
            std::string::npos)
      << "the tables are Unicode " << unicode::kNfcUnicodeVersion;

  const auto parse = [](std::string_view field) {
    std::u32string cps;
    for (size_t pos = 0; pos < field.size();) {
      size_t end = field.find(' ', pos);
      if (end == std::string_view::npos) end = field.size();
      if (end > pos)
        cps.push_back(std::stoul(std::string(field.substr(pos, end - pos)), nullptr, 16));
      pos = end + 1;
    }
    return cps;
  };
  std::vector<bool> in_part1(0x110000);
  int part = -1, lines = 0, failures = 0;
  for (size_t pos = 0; pos < text.size();) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) eol = text.size();
    const std::string_view line(text.data() + pos, eol - pos);
    pos = eol + 1;
    if (line.rfind("@Part", 0) == 0) {
      part = line[5] - '0';
      continue;
    }
    if (line.empty() || line[0] == '#') continue;
    std::vector<std::u32string> c;
    size_t from = 0;
    for (int i = 0; i < 5; ++i) {
      const size_t semi = line.find(';', from);
      ASSERT_NE(semi, std::string_view::npos) << line;
      c.push_back(parse(line.substr(from, semi - from)));
      from = semi + 1;
    }
    ++lines;
    if (part == 1 && c[0].size() == 1) in_part1[c[0][0]] = true;
    // NFC: c2 == toNFC(c1) == toNFC(c2) == toNFC(c3), c4 == toNFC(c4) == toNFC(c5).
    const std::string want13 = Utf8(c[1]), want45 = Utf8(c[3]);
    for (int i : {0, 1, 2}) {
      const std::string got = unicode::ToNfc(Utf8(c[i]));
      if (got != want13 && ++failures <= 10) ADD_FAILURE() << "NFC(c" << i + 1 << ") of " << line;
    }
    for (int i : {3, 4}) {
      const std::string got = unicode::ToNfc(Utf8(c[i]));
      if (got != want45 && ++failures <= 10) ADD_FAILURE() << "NFC(c" << i + 1 << ") of " << line;
    }
  }
  EXPECT_GT(lines, 18000);
  EXPECT_EQ(failures, 0);
  int others = 0;
  for (char32_t c = 0; c < 0x110000; ++c) {
    if (in_part1[c] || (c >= 0xD800 && c <= 0xDFFF)) continue;
    const std::string one = Utf8(std::u32string(1, c));
    if (unicode::ToNfc(one) != one && ++others <= 10) ADD_FAILURE() << "U+" << std::hex << c;
  }
  EXPECT_EQ(others, 0);
}

// ---------------------------------------------------------------------------------------------
// A byte-level BPE tokenizer.json built here. Byte b's character has id b (GPT-2's map, computed
// independently below); merges and added tokens come after.

std::string ByteChar(int b) {
  const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
  int n = 0;
  for (int i = 0; i < b; ++i) {
    if (!((i >= 0x21 && i <= 0x7E) || (i >= 0xA1 && i <= 0xAC) || i >= 0xAE)) ++n;
  }
  std::string out;
  unicode::AppendUtf8(printable ? b : 0x100 + n, &out);
  return out;
}

struct BpeSpec {
  const char* regex = kLlama3Regex;  // nullptr: GPT-2's plain ByteLevel pre-tokenizer
  bool ignore_merges = false;
  bool nfc = false;  // "normalizer": {"type": "NFC"} (Qwen2)
};

// Ids: 0..255 bytes; 256 "he", 257 "ll", 258 "hell", 259 "hello", 260 "Ġw", 261 "Ġwo",
// 262 "ĠĠ", 263 "é" (as "Ã©"), 264 <|begin_of_text|>, 265 <|end_of_text|>, 266 <|sep|>
// (not special), 267 "ab" (no merge leads to it).
std::string BpeJson(const BpeSpec& spec) {
  json::Value vocab = json::Value::MakeObject();
  for (int b = 0; b < 256; ++b) vocab.Set(ByteChar(b), json::Value::Int(b));
  const std::vector<std::pair<std::string, std::string>> merges = {
      {"h", "e"},
      {"l", "l"},
      {"he", "ll"},
      {"hell", "o"},
      {ByteChar(' '), "w"},
      {ByteChar(' ') + "w", "o"},
      {ByteChar(' '), ByteChar(' ')},
      {ByteChar(0xC3), ByteChar(0xA9)}};
  json::Value merge_list = json::Value::MakeArray();
  int next = 256;
  for (const auto& [l, r] : merges) {
    vocab.Set(l + r, json::Value::Int(next++));
    merge_list.Append(json::Value::String(l + " " + r));
  }
  vocab.Set("ab", json::Value::Int(267));
  json::Value model = json::Value::MakeObject();
  model.Set("type", json::Value::String("BPE"));
  model.Set("vocab", std::move(vocab));
  model.Set("merges", std::move(merge_list));
  model.Set("ignore_merges", json::Value::Bool(spec.ignore_merges));
  model.Set("byte_fallback", json::Value::Bool(false));
  json::Value added = json::Value::MakeArray();
  const std::vector<std::pair<std::string, bool>> specials = {
      {"<|begin_of_text|>", true}, {"<|end_of_text|>", true}, {"<|sep|>", false}};
  for (size_t i = 0; i < specials.size(); ++i) {
    json::Value a = json::Value::MakeObject();
    a.Set("id", json::Value::Int(264 + static_cast<int64_t>(i)));
    a.Set("content", json::Value::String(specials[i].first));
    a.Set("special", json::Value::Bool(specials[i].second));
    added.Append(std::move(a));
  }
  json::Value byte_level = json::Value::MakeObject();
  byte_level.Set("type", json::Value::String("ByteLevel"));
  byte_level.Set("add_prefix_space", json::Value::Bool(false));
  json::Value pre;
  if (spec.regex == nullptr) {
    byte_level.Set("use_regex", json::Value::Bool(true));
    pre = std::move(byte_level);
  } else {
    byte_level.Set("use_regex", json::Value::Bool(false));
    json::Value pattern = json::Value::MakeObject();
    pattern.Set("Regex", json::Value::String(spec.regex));
    json::Value split = json::Value::MakeObject();
    split.Set("type", json::Value::String("Split"));
    split.Set("pattern", std::move(pattern));
    split.Set("behavior", json::Value::String("Isolated"));
    split.Set("invert", json::Value::Bool(false));
    pre = json::Value::MakeObject();
    pre.Set("type", json::Value::String("Sequence"));
    pre.Set("pretokenizers", json::Value::MakeArray({std::move(split), std::move(byte_level)}));
  }
  json::Value root = json::Value::MakeObject();
  root.Set("version", json::Value::String("1.0"));
  root.Set("added_tokens", std::move(added));
  json::Value normalizer;
  if (spec.nfc) {
    normalizer = json::Value::MakeObject();
    normalizer.Set("type", json::Value::String("NFC"));
  }
  root.Set("normalizer", std::move(normalizer));
  root.Set("pre_tokenizer", std::move(pre));
  root.Set("model", std::move(model));
  return json::Serialize(root);
}

const char kBpeConfig[] =
    R"({"bos_token": "<|begin_of_text|>", "eos_token": {"content": "<|end_of_text|>"}})";

std::unique_ptr<BpeTokenizer> MakeBpe(const BpeSpec& spec = {}) {
  auto t = BpeTokenizer::Create(BpeJson(spec), kBpeConfig, "test tokenizer.json");
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? *std::move(t) : nullptr;
}

std::vector<int32_t> MustEncode(const Tokenizer& t, const std::string& text) {
  absl::StatusOr<std::vector<int32_t>> ids = t.Encode(text);
  EXPECT_TRUE(ids.ok()) << ids.status();
  if (ids.ok()) {
    absl::StatusOr<std::string> back = t.Decode(*ids);
    EXPECT_TRUE(back.ok()) << back.status();
    if (back.ok()) {
      EXPECT_EQ(*back, text) << "round trip";
    }
  }
  return ids.ok() ? *ids : std::vector<int32_t>{};
}

TEST(BpeTest, EncodesAsCheckedByHandAndRoundTrips) {
  auto t = MakeBpe();
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->vocab_size(), 268);
  EXPECT_EQ(t->bos_id(), 264);
  EXPECT_EQ(t->eos_id(), 265);
  EXPECT_EQ(t->split(), BpeSplit::kLlama3);
  // "hello": h e l l o -> he l l o -> he ll o -> hell o -> hello. " world": Ġ w o r l d ->
  // Ġw o r l d -> Ġwo r l d.
  EXPECT_EQ(MustEncode(*t, "hello world"), (std::vector<int32_t>{259, 261, 'r', 'l', 'd'}));
  // Whitespace run: "a", "  " (merged ĠĠ), " b".
  EXPECT_EQ(MustEncode(*t, "a   b"), (std::vector<int32_t>{'a', 262, ' ', 'b'}));
  EXPECT_EQ(MustEncode(*t, "  \n\t "), (std::vector<int32_t>{262, '\n', '\t', ' '}));
  // Multi-byte UTF-8: é (C3 A9) merges; € (E2 82 AC) stays three byte tokens.
  EXPECT_EQ(MustEncode(*t, "é€"), (std::vector<int32_t>{263, 0xE2, 0x82, 0xAC}));
  EXPECT_EQ(MustEncode(*t, "日"), (std::vector<int32_t>{0xE6, 0x97, 0xA5}));
  // Added tokens are matched before splitting, special or not, anywhere in the text.
  EXPECT_EQ(MustEncode(*t, "<|begin_of_text|>hi<|sep|> there<|end_of_text|>"),
            (std::vector<int32_t>{264, 'h', 'i', 266, ' ', 't', 256, 'r', 'e', 265}));
  // A partial special token is plain text.
  EXPECT_EQ(MustEncode(*t, "<|end"), (std::vector<int32_t>{'<', '|', 'e', 'n', 'd'}));
  EXPECT_EQ(MustEncode(*t, ""), std::vector<int32_t>{});
  // Every byte string that is valid UTF-8 round-trips (here: all of Latin-1 plus controls).
  std::string all;
  for (char32_t c = 1; c < 0x180; ++c) unicode::AppendUtf8(c, &all);
  MustEncode(*t, all);
}

TEST(BpeTest, NfcNormalizerComposesBeforeSplitting) {
  BpeSpec spec;
  spec.nfc = true;
  auto t = MakeBpe(spec);
  auto raw = MakeBpe();
  ASSERT_NE(t, nullptr);
  ASSERT_NE(raw, nullptr);
  // "e" + U+0301 becomes é (C3 A9), one merged token; without the normalizer it is e, CC, 81.
  absl::StatusOr<std::vector<int32_t>> ids = t->Encode("caf" + Utf8(U"e\u0301"));
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(*ids, (std::vector<int32_t>{'c', 'a', 'f', 263}));
  EXPECT_EQ(MustEncode(*raw, "caf" + Utf8(U"e\u0301")),
            (std::vector<int32_t>{'c', 'a', 'f', 'e', 0xCC, 0x81}));
  // Decoding gives the normalized text back; added tokens stay as they are, and the text on
  // either side of one is normalized on its own.
  EXPECT_EQ(*t->Decode(*ids), "caf\xC3\xA9");
  ids = t->Encode("e" + Utf8(U"\u0301") + "<|sep|>" + Utf8(U"\u0301"));
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(*ids, (std::vector<int32_t>{263, 266, 0xCC, 0x81}));
}

TEST(BpeTest, IgnoreMergesTakesWholeVocabularyWords) {
  auto with = MakeBpe({kLlama3Regex, /*ignore_merges=*/true});
  auto without = MakeBpe({kLlama3Regex, /*ignore_merges=*/false});
  ASSERT_NE(with, nullptr);
  ASSERT_NE(without, nullptr);
  EXPECT_EQ(MustEncode(*with, "ab"), std::vector<int32_t>{267});
  EXPECT_EQ(MustEncode(*without, "ab"), (std::vector<int32_t>{'a', 'b'}));
}

TEST(BpeTest, Gpt2ByteLevelPreTokenizer) {
  auto t = MakeBpe({nullptr, false});
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->split(), BpeSplit::kGpt2);
  // GPT-2 splits digits in one run and keeps "\t" apart from the word.
  EXPECT_EQ(MustEncode(*t, "\thello 1234"),
            (std::vector<int32_t>{'\t', 259, ' ', '1', '2', '3', '4'}));
}

TEST(BpeTest, GgufVocabularyAndMetadataRebuild) {
  auto t = MakeBpe();
  ASSERT_NE(t, nullptr);
  std::optional<kernels::GgufTokenizer> g = t->ToGguf();
  ASSERT_TRUE(g.has_value());
  EXPECT_EQ(g->model, "gpt2");
  EXPECT_EQ(g->pre, "llama-bpe");
  ASSERT_EQ(g->tokens.size(), 268u);
  EXPECT_EQ(g->tokens[' '], "\xC4\xA0");  // U+0120 'Ġ'
  EXPECT_EQ(g->tokens[259], "hello");
  EXPECT_EQ(g->tokens[264], "<|begin_of_text|>");
  EXPECT_EQ(g->token_types[259], 1);
  EXPECT_EQ(g->token_types[264], 3);  // special: CONTROL
  EXPECT_EQ(g->token_types[266], 4);  // added, not special: USER_DEFINED
  ASSERT_EQ(g->merges.size(), 8u);
  EXPECT_EQ(g->merges[0], "h e");
  EXPECT_EQ(g->merges[4], "\xC4\xA0 w");
  EXPECT_EQ(g->bos, 264);
  EXPECT_EQ(g->eos, 265);
  EXPECT_TRUE(g->add_bos);

  absl::StatusOr<std::unique_ptr<Tokenizer>> again = TokenizerFromMetadata(t->Metadata(), "meta");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ((*again)->kind(), "bpe");
  EXPECT_EQ((*again)->bos_id(), 264);
  EXPECT_EQ(MustEncode(**again, "hello world"), MustEncode(*t, "hello world"));
}

TEST(BpeTest, RejectsBadTextAndIds) {
  auto t = MakeBpe();
  ASSERT_NE(t, nullptr);
  absl::StatusOr<std::vector<int32_t>> bad = t->Encode("ok\xC3(");
  ASSERT_FALSE(bad.ok());
  EXPECT_CONTAINS(bad.status().message(), "not valid UTF-8 at byte offset 2");
  absl::StatusOr<std::string> decoded = t->Decode({259, 268});
  ASSERT_FALSE(decoded.ok());
  EXPECT_CONTAINS(decoded.status().message(), "id 268 (position 1) is not a token");
  EXPECT_FALSE(t->Decode({-1}).ok());
}

TEST(BpeTest, MalformedTokenizerJsonGetsClearErrors) {
  const std::string good = BpeJson({});
  struct Case {
    std::string json, config, expect;
  };
  std::string no_byte = good;
  // Remove byte 0x41 'A' from the vocabulary by renaming its token.
  no_byte.replace(no_byte.find("\"A\":65"), 6, "\"AA\":65");
  std::string bad_merge = good;
  bad_merge.replace(bad_merge.find("\"h e\""), 5, "\"h zz\"");
  std::string huge_id = good;
  huge_id.replace(huge_id.find("\"ab\":267"), 8, "\"ab\":99999999999");
  std::string sparse_id = good;  // valid, but would size the id table by one id (issue 15)
  sparse_id.replace(sparse_id.find("\"ab\":267"), 8, "\"ab\":16777215");
  std::string dup_id = good;
  dup_id.replace(dup_id.find("\"ab\":267"), 8, "\"ab\":259");
  std::string regex = good;
  regex.replace(regex.find("\\\\p{N}{1,3}"), 11, "\\\\p{N}{1,4}");
  std::string fallback = good;
  fallback.replace(fallback.find("\"byte_fallback\":false"), 21, "\"byte_fallback\":true");
  const std::vector<Case> cases = {
      {good.substr(0, good.size() / 2), "", "not valid JSON"},
      {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"\xC3\": 0}}}", "", "not valid JSON"},
      {"[]", "", "top level is not a JSON object"},
      {"{\"model\": {\"type\": \"WordPiece\"}}", "", "only \"BPE\""},
      {no_byte, "", "no token for byte 0x41"},
      {bad_merge, "", "zz is not in model.vocab"},
      {huge_id, "", "is not an id in [0, 16777216)"},
      {sparse_id, "", "model.vocab[\"ab\"] has id 16777215, but the file holds only"},
      {dup_id, "", "gives id 259 to both"},
      {regex, "", "unsupported Split regex"},
      {fallback, "", "use the model's tokenizer.model"},
      {good, "{\"bos_token\": \"<|nope|>\"}", "bos_token \"<|nope|>\" is not a token"},
      {good, "{\"eos_token\": 7}", "\"eos_token\" is neither"},
      {good, "{bad", "tokenizer_config.json): not valid JSON"},
  };
  for (const Case& c : cases) {
    auto t = BpeTokenizer::Create(c.json, c.config, "t.json");
    ASSERT_FALSE(t.ok()) << "expected: " << c.expect;
    EXPECT_CONTAINS(t.status().message(), "t.json");
    EXPECT_CONTAINS(t.status().message(), c.expect);
  }
}

// ---------------------------------------------------------------------------------------------
// SentencePiece: a unigram model proto written by hand (wire format of sentencepiece_model.proto:
// ModelProto{pieces = 1 {piece = 1, score = 2, type = 3}, trainer_spec = 2, normalizer_spec = 3}).

void Varint(uint64_t v, std::string* out) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}
void Tag(int field, int wire, std::string* out) { Varint((uint64_t(field) << 3) | wire, out); }
void IntField(int field, int64_t v, std::string* out) {
  Tag(field, 0, out);
  Varint(static_cast<uint64_t>(v), out);  // negative int32 values take ten bytes, as in protobuf
}
void BytesField(int field, const std::string& v, std::string* out) {
  Tag(field, 2, out);
  Varint(v.size(), out);
  *out += v;
}
void FloatField(int field, float v, std::string* out) {
  Tag(field, 5, out);
  char b[4];
  std::memcpy(b, &v, 4);
  out->append(b, 4);
}

// Ids: 0 <unk>, 1 <s>, 2 </s>, 3..258 <0x00>..<0xFF>, then the pieces of kSpPieces.
struct SpPiece {
  const char* piece;
  float score;
  int type;
};
const SpPiece kSpPieces[] = {
    {"\xE2\x96\x81", -5, 1},       // 259 ▁
    {"\xE2\x96\x81hello", -1, 1},  // 260 ▁hello
    {"\xE2\x96\x81world", -1, 1},  // 261 ▁world
    {"he", -3, 1},                 // 262
    {"llo", -3, 1},                // 263
    {"\xE2\x96\x81he", -2, 1},     // 264 ▁he
    {"\xE2\x82\xAC", -2, 1},       // 265 €
    {"h", -6, 1},
    {"e", -6, 1},
    {"l", -6, 1},
    {"o", -6, 1},  // 266..269
    {"w", -6, 1},
    {"r", -6, 1},
    {"d", -6, 1},     // 270..272
    {"<sep>", 0, 4},  // 273 USER_DEFINED
};

std::string SentencePieceModel() {
  std::string model;
  const auto piece = [&](const std::string& p, float score, int type) {
    std::string sp;
    BytesField(1, p, &sp);
    FloatField(2, score, &sp);
    IntField(3, type, &sp);
    BytesField(1, sp, &model);
  };
  piece("<unk>", 0, 2);
  piece("<s>", 0, 3);
  piece("</s>", 0, 3);
  char name[8];
  for (int b = 0; b < 256; ++b) {
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    piece(name, 0, 6);
  }
  int count = 259;
  for (const SpPiece& p : kSpPieces) piece(p.piece, p.score, p.type), ++count;
  std::string trainer;
  IntField(3, 1, &trainer);  // model_type UNIGRAM
  IntField(4, count, &trainer);
  IntField(35, 1, &trainer);   // byte_fallback
  IntField(40, 0, &trainer);   // unk_id
  IntField(41, 1, &trainer);   // bos_id
  IntField(42, 2, &trainer);   // eos_id
  IntField(43, -1, &trainer);  // pad_id: none
  BytesField(2, trainer, &model);
  std::string normalizer;
  BytesField(1, "identity", &normalizer);
  IntField(3, 1, &normalizer);  // add_dummy_prefix
  IntField(4, 0, &normalizer);  // remove_extra_whitespaces: keep whitespace runs
  IntField(5, 1, &normalizer);  // escape_whitespaces
  BytesField(3, normalizer, &model);
  return model;
}

TEST(SentencePieceTest, EncodesAsCheckedByHandAndRoundTrips) {
  if (!SentencePieceAvailable()) {
    auto t = LoadSentencePiece(SentencePieceModel(), "m.model");
    ASSERT_FALSE(t.ok());
    EXPECT_CONTAINS(t.status().message(), "libsentencepiece-dev");
    return;  // the build without the library: the clear error is what there is to check
  }
  auto loaded = LoadSentencePiece(SentencePieceModel(), "m.model");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const Tokenizer& t = **loaded;
  EXPECT_EQ(t.kind(), "sentencepiece");
  EXPECT_EQ(t.vocab_size(), 274);
  EXPECT_EQ(t.bos_id(), 1);
  EXPECT_EQ(t.eos_id(), 2);
  // "▁hello▁world": the two best-scoring pieces (-2 in all).
  EXPECT_EQ(MustEncode(t, "hello world"), (std::vector<int32_t>{260, 261}));
  // A whitespace run is kept: ▁hello ▁ ▁world.
  EXPECT_EQ(MustEncode(t, "hello  world"), (std::vector<int32_t>{260, 259, 261}));
  // ▁hello + llo (-4) beats ▁he + llo + llo (-8).
  EXPECT_EQ(MustEncode(t, "hellollo"), (std::vector<int32_t>{260, 263}));
  // € is a piece; é is not, so it falls back to its UTF-8 bytes C3 A9 (ids 3 + byte).
  EXPECT_EQ(MustEncode(t, "h€é"), (std::vector<int32_t>{259, 266, 265, 3 + 0xC3, 3 + 0xA9}));
  // A user-defined piece is matched in the text.
  EXPECT_EQ(MustEncode(t, "hello<sep>world"),
            (std::vector<int32_t>{260, 273, 270, 269, 271, 268, 272}));
  // Control tokens (BOS/EOS) decode to nothing, as the library does.
  absl::StatusOr<std::string> text = t.Decode({1, 260, 2});
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(*text, "hello");
  EXPECT_FALSE(t.Decode({274}).ok());
  absl::StatusOr<std::vector<int32_t>> bad = t.Encode("a\xFF");
  ASSERT_FALSE(bad.ok());
  EXPECT_CONTAINS(bad.status().message(), "not valid UTF-8 at byte offset 1");

  std::optional<kernels::GgufTokenizer> g = t.ToGguf();
  ASSERT_TRUE(g.has_value());
  EXPECT_EQ(g->model, "llama");
  ASSERT_EQ(g->tokens.size(), 274u);
  EXPECT_EQ(g->tokens[260], "\xE2\x96\x81hello");
  EXPECT_FLOAT_EQ(g->scores[260], -1.0f);
  EXPECT_EQ(g->token_types[0], 2);    // UNKNOWN
  EXPECT_EQ(g->token_types[1], 3);    // CONTROL
  EXPECT_EQ(g->token_types[3], 6);    // BYTE
  EXPECT_EQ(g->token_types[260], 1);  // NORMAL
  EXPECT_EQ(g->unk, 0);
  EXPECT_TRUE(g->add_space_prefix);

  absl::StatusOr<std::unique_ptr<Tokenizer>> again = TokenizerFromMetadata(t.Metadata(), "meta");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(MustEncode(**again, "hello  world"), (std::vector<int32_t>{260, 259, 261}));
}

TEST(SentencePieceTest, MalformedModelsGetClearErrors) {
  if (!SentencePieceAvailable()) GTEST_SKIP() << "built without libsentencepiece";
  const std::string model = SentencePieceModel();
  for (const std::string& bytes : {model.substr(0, model.size() / 2),
                                   std::string("\xFF\xFF\xFF\xFF garbage"), std::string()}) {
    auto t = LoadSentencePiece(bytes, "broken.model");
    ASSERT_FALSE(t.ok());
    EXPECT_CONTAINS(t.status().message(), "broken.model");
  }
  auto meta = TokenizerFromMetadata(
      {{"qat.tokenizer", "sentencepiece"}, {"qat.tokenizer.model", "not base64!"}},
      "packed.safetensors");
  ASSERT_FALSE(meta.ok());
  EXPECT_CONTAINS(meta.status().message(), "not base64");
}

// ---------------------------------------------------------------------------------------------
// Loading by path, prep with a model tokenizer, shard layouts.

TEST(TokenizerFilesTest, LoadsByPathAndPrepWritesShards) {
  const testing_util::TestDir tmp;
  const std::string dir = tmp.dir();
  ASSERT_TRUE(kernels::WriteFileAtomic(dir + "/tokenizer.json", BpeJson({})).ok());
  ASSERT_TRUE(kernels::WriteFileAtomic(dir + "/tokenizer_config.json", kBpeConfig).ok());
  absl::StatusOr<std::unique_ptr<Tokenizer>> t = LoadTokenizer(dir);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)->kind(), "bpe");
  EXPECT_EQ((*t)->files(),
            (std::vector<std::string>{dir + "/tokenizer.json", dir + "/tokenizer_config.json"}));
  EXPECT_EQ((*LoadTokenizer(""))->kind(), "byte");
  EXPECT_FALSE(LoadTokenizer(dir + "/missing.json").ok());

  ASSERT_TRUE(kernels::WriteFileAtomic(dir + "/a.txt", "hello world").ok());
  ASSERT_TRUE(kernels::WriteFileAtomic(dir + "/b.txt", "a   b").ok());
  PrepOptions opt;
  opt.inputs = {dir + "/a.txt", dir + "/b.txt"};
  opt.out_dir = dir + "/shards";
  opt.val_fraction = 0;  // both in train.bin, in input order
  opt.tokenizer = dir + "/tokenizer.json";
  absl::StatusOr<PrepStats> stats = Prep(opt);
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->tokenizer_kind, "bpe");
  auto train = ReadShard(dir + "/shards/train.bin");
  auto val = ReadShard(dir + "/shards/val.bin");
  ASSERT_TRUE(train.ok() && val.ok());
  std::vector<int32_t> all = *train;
  all.insert(all.end(), val->begin(), val->end());
  const std::vector<int32_t> doc_a = {264, 259, 261, 'r', 'l', 'd', 265};
  const std::vector<int32_t> doc_b = {264, 'a', 262, ' ', 'b', 265};
  std::vector<int32_t> ab = doc_a, ba = doc_b;
  ab.insert(ab.end(), doc_b.begin(), doc_b.end());
  ba.insert(ba.end(), doc_a.begin(), doc_a.end());
  EXPECT_TRUE(all == ab);
  EXPECT_TRUE(val->empty());
  // A small vocabulary gives the uint16 layout.
  std::string head = *kernels::ReadFile(dir + "/shards/train.bin");
  int32_t magic;
  std::memcpy(&magic, head.data(), 4);
  EXPECT_EQ(magic, 20240520);

  // Invalid UTF-8 in a document is an error naming it.
  ASSERT_TRUE(kernels::WriteFileAtomic(dir + "/bad.txt", "fine\xC3").ok());
  opt.inputs = {dir + "/bad.txt"};
  absl::StatusOr<PrepStats> bad = Prep(opt);
  ASSERT_FALSE(bad.ok());
  EXPECT_CONTAINS(bad.status().message(), "bad.txt:1: byte offset 4: invalid UTF-8");
}

TEST(TokenizerFilesTest, LargeVocabularyWritesUint32Shards) {
  const testing_util::TestDir tmp;
  const std::string dir = tmp.dir();
  std::string j = BpeJson({});
  // One more added token with an id past 65535: the vocabulary needs 32-bit ids.
  j.replace(j.find("\"added_tokens\":["), 16,
            "\"added_tokens\":[{\"id\":70000,\"content\":\"<|big|>\",\"special\":true},");
  ASSERT_TRUE(kernels::WriteFileAtomic(dir + "/tokenizer.json", j).ok());
  ASSERT_TRUE(kernels::WriteFileAtomic(dir + "/doc.txt", "hi<|big|>").ok());
  PrepOptions opt;
  opt.inputs = {dir + "/doc.txt"};
  opt.out_dir = dir;
  opt.val_fraction = 0;
  opt.tokenizer = dir;
  absl::StatusOr<PrepStats> stats = Prep(opt);
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->vocab_size, 70001);
  std::string bytes = *kernels::ReadFile(dir + "/train.bin");
  int32_t header[2];
  std::memcpy(header, bytes.data(), 8);
  EXPECT_EQ(header[0], 20240801);
  EXPECT_EQ(header[1], 7);
  // No BOS/EOS without a tokenizer_config.json: just the text's ids.
  EXPECT_EQ(*ReadShard(dir + "/train.bin"), (std::vector<int32_t>{'h', 'i', 70000}));
}

// ---------------------------------------------------------------------------------------------
// GGUF export with a model tokenizer (kernels/gguf_export.h): the vocabulary, merges or scores,
// types and special ids land in the tokenizer.ggml.* keys; biases follow the q/k permutation.

namespace gguf_export {

constexpr int64_t kVocab = 280, kHidden = 32, kInter = 48, kKv = 16, kHeadDim = 8;

// A one-layer packed model (all tensors F32) whose q bias is 0, 1, 2, ... so that its GGUF
// permutation can be read back.
std::string WritePacked(const std::string& dir, int64_t bos, int64_t eos) {
  kernels::SafetensorsWriter w;
  const std::vector<std::pair<std::string, std::string>> meta = {
      {"format", "qat-packed"},
      {"qat.version", "2"},
      {"qat.vocab_size", "280"},
      {"qat.hidden_size", "32"},
      {"qat.intermediate_size", "48"},
      {"qat.num_layers", "1"},
      {"qat.num_heads", "4"},
      {"qat.num_kv_heads", "2"},
      {"qat.max_seq_len", "16"},
      {"qat.rope_theta", "10000"},
      {"qat.rms_norm_eps", "1e-05"},
      {"qat.tie_embeddings", "1"},
      {"qat.bos_id", std::to_string(bos)},
      {"qat.eos_id", std::to_string(eos)},
      {"qat.tokenizer", "bpe"}};
  for (const auto& [k, v] : meta) w.SetMetadata(k, v);
  const auto add = [&](const std::string& name, std::vector<int64_t> shape, bool ramp = false) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    std::vector<float> v(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) v[i] = ramp ? float(i) : 0.01f * float(i % 7);
    w.Add(name, kernels::DType::kF32, shape, v.data(), v.size() * 4);
  };
  add("model.embed_tokens.weight", {kVocab, kHidden});
  add("model.norm.weight", {kHidden});
  const std::string p = "model.layers.0.";
  add(p + "input_layernorm.weight", {kHidden});
  add(p + "post_attention_layernorm.weight", {kHidden});
  add(p + "self_attn.q_proj.weight", {kHidden, kHidden});
  add(p + "self_attn.q_proj.weight.bias", {kHidden}, /*ramp=*/true);
  add(p + "self_attn.k_proj.weight", {kKv, kHidden});
  add(p + "self_attn.k_proj.weight.bias", {kKv}, true);
  add(p + "self_attn.v_proj.weight", {kKv, kHidden});
  add(p + "self_attn.v_proj.weight.bias", {kKv}, true);
  add(p + "self_attn.o_proj.weight", {kHidden, kHidden});
  add(p + "mlp.gate_proj.weight", {kInter, kHidden});
  add(p + "mlp.up_proj.weight", {kInter, kHidden});
  add(p + "mlp.down_proj.weight", {kHidden, kInter});
  const std::string path = dir + "/model.qat.safetensors";
  EXPECT_TRUE(w.Write(path).ok());
  return path;
}

std::vector<std::string> Strings(const kernels::GgufValue& v) {
  std::vector<std::string> out;
  for (const kernels::GgufValue& e : v.as_array()) out.push_back(e.as_string());
  return out;
}

TEST(GgufTokenizerTest, BpeVocabularyMergesAndBiases) {
  const testing_util::TestDir tmp;
  const std::string dir = tmp.dir();
  const std::string packed = WritePacked(dir, 256, 257);
  auto bpe = MakeBpe();
  ASSERT_NE(bpe, nullptr);
  kernels::GgufExportOptions options;
  options.dense_type = kernels::GgmlType::kF32;
  // Without a vocabulary a non-byte packed file cannot be described.
  absl::StatusOr<kernels::GgufExportReport> refused =
      kernels::ConvertPackedToGguf(packed, dir + "/m.gguf", options);
  ASSERT_FALSE(refused.ok());
  EXPECT_CONTAINS(refused.status().message(), "only the \"byte\" tokenizer");

  options.tokenizer = bpe->ToGguf();
  absl::StatusOr<kernels::GgufExportReport> r =
      kernels::ConvertPackedToGguf(packed, dir + "/m.gguf", options);
  ASSERT_TRUE(r.ok()) << r.status();
  absl::StatusOr<kernels::GgufFile> g = kernels::GgufFile::Open(dir + "/m.gguf");
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->FindKv("tokenizer.ggml.model")->as_string(), "gpt2");
  EXPECT_EQ(g->FindKv("tokenizer.ggml.pre")->as_string(), "llama-bpe");
  const std::vector<std::string> tokens = Strings(*g->FindKv("tokenizer.ggml.tokens"));
  ASSERT_EQ(tokens.size(), static_cast<size_t>(kVocab));
  EXPECT_EQ(tokens[259], "hello");
  EXPECT_EQ(tokens[264], "<|begin_of_text|>");
  EXPECT_EQ(tokens[268], "[PAD268]");  // the model's padded rows
  const auto& types = g->FindKv("tokenizer.ggml.token_type")->as_array();
  EXPECT_EQ(types[259].as_int(), 1);
  EXPECT_EQ(types[264].as_int(), 3);
  EXPECT_EQ(types[266].as_int(), 4);
  EXPECT_EQ(types[279].as_int(), 5);
  EXPECT_EQ(Strings(*g->FindKv("tokenizer.ggml.merges")),
            (std::vector<std::string>{"h e", "l l", "he ll", "hell o", "\xC4\xA0 w", "\xC4\xA0w o",
                                      "\xC4\xA0 \xC4\xA0", "\xC3\x83 \xC2\xA9"}));
  EXPECT_EQ(g->FindKv("tokenizer.ggml.bos_token_id")->as_uint(), 264u);
  EXPECT_EQ(g->FindKv("tokenizer.ggml.eos_token_id")->as_uint(), 265u);
  EXPECT_TRUE(g->FindKv("tokenizer.ggml.add_bos_token")->as_bool());
  EXPECT_EQ(g->FindKv("tokenizer.ggml.scores"), nullptr);
  // q bias: GGUF row 2i+j of head h holds HF row h*8 + j*4 + i (the rotate-half permutation).
  absl::StatusOr<std::vector<float>> qb = g->Dequantize("blk.0.attn_q.bias");
  ASSERT_TRUE(qb.ok()) << qb.status();
  ASSERT_EQ(qb->size(), static_cast<size_t>(kHidden));
  for (int64_t row = 0; row < kHidden; ++row) {
    const int64_t h = row / kHeadDim, w = row % kHeadDim;
    EXPECT_EQ((*qb)[row], float(h * kHeadDim + (w % 2) * (kHeadDim / 2) + w / 2)) << row;
  }
  absl::StatusOr<std::vector<float>> vb = g->Dequantize("blk.0.attn_v.bias");
  ASSERT_TRUE(vb.ok()) << vb.status();
  for (int64_t row = 0; row < kKv; ++row) EXPECT_EQ((*vb)[row], float(row));  // not permuted

  // A truncated GGUF is an error, not a crash.
  std::string bytes = *kernels::ReadFile(dir + "/m.gguf");
  for (size_t cut : {size_t(3), size_t(40), bytes.size() / 2, bytes.size() - 1}) {
    EXPECT_FALSE(kernels::GgufFile::Parse(bytes.substr(0, cut), "cut.gguf").ok()) << cut;
  }
  // A vocabulary larger than the model's is refused.
  kernels::GgufTokenizer big = *bpe->ToGguf();
  big.tokens.resize(kVocab + 1, "x");
  big.token_types.resize(kVocab + 1, 1);
  options.tokenizer = big;
  absl::StatusOr<kernels::GgufExportReport> too_big =
      kernels::ConvertPackedToGguf(packed, dir + "/big.gguf", options);
  ASSERT_FALSE(too_big.ok());
  EXPECT_CONTAINS(too_big.status().message(), "281 tokens for a model vocabulary of 280");
}

TEST(GgufTokenizerTest, SentencePieceScoresAndTypes) {
  if (!SentencePieceAvailable()) GTEST_SKIP() << "built without libsentencepiece";
  const testing_util::TestDir tmp;
  const std::string dir = tmp.dir();
  const std::string packed = WritePacked(dir, 1, 2);
  auto sp = LoadSentencePiece(SentencePieceModel(), "m.model");
  ASSERT_TRUE(sp.ok()) << sp.status();
  kernels::GgufExportOptions options;
  options.tokenizer = (*sp)->ToGguf();
  ASSERT_TRUE(kernels::ConvertPackedToGguf(packed, dir + "/sp.gguf", options).ok());
  absl::StatusOr<kernels::GgufFile> g = kernels::GgufFile::Open(dir + "/sp.gguf");
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->FindKv("tokenizer.ggml.model")->as_string(), "llama");
  const std::vector<std::string> tokens = Strings(*g->FindKv("tokenizer.ggml.tokens"));
  ASSERT_EQ(tokens.size(), static_cast<size_t>(kVocab));
  EXPECT_EQ(tokens[260], "\xE2\x96\x81hello");
  EXPECT_EQ(tokens[3 + 0x41], "<0x41>");
  const auto& scores = g->FindKv("tokenizer.ggml.scores")->as_array();
  ASSERT_EQ(scores.size(), static_cast<size_t>(kVocab));
  EXPECT_EQ(scores[260].as_float(), -1.0);
  EXPECT_EQ(scores[259].as_float(), -5.0);
  const auto& types = g->FindKv("tokenizer.ggml.token_type")->as_array();
  EXPECT_EQ(types[0].as_int(), 2);
  EXPECT_EQ(types[1].as_int(), 3);
  EXPECT_EQ(types[3].as_int(), 6);
  EXPECT_EQ(types[273].as_int(), 1);  // user-defined pieces: NORMAL (the library hides the type)
  EXPECT_EQ(g->FindKv("tokenizer.ggml.unknown_token_id")->as_uint(), 0u);
  EXPECT_EQ(g->FindKv("tokenizer.ggml.bos_token_id")->as_uint(), 1u);
  EXPECT_TRUE(g->FindKv("tokenizer.ggml.add_space_prefix")->as_bool());
}

}  // namespace gguf_export

}  // namespace
}  // namespace qat::data
