// Byte-level BPE: loading tokenizer.json, encoding and decoding (format in bpe.h).
#include "data/bpe.h"

#include <algorithm>
#include <atomic>
#include <limits>
#include <queue>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "data/unicode.h"
#include "kernels/json.h"

namespace qat::data {
namespace {

namespace json = kernels::json;

constexpr int64_t kMaxVocab = int64_t{1} << 24;  // far above any real vocabulary
constexpr int32_t kGgufNormal = 1, kGgufControl = 3, kGgufUserDefined = 4, kGgufUnused = 5;

absl::Status Bad(const std::string& origin, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(origin, ": ", what));
}

// GPT-2's byte-to-unicode map: printable Latin-1 bytes stand for themselves, the others are
// numbered from U+0100 in byte order.
std::array<char32_t, 256> ByteToChar() {
  std::array<char32_t, 256> map{};
  char32_t next = 0x100;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    map[b] = printable ? static_cast<char32_t>(b) : next++;
  }
  return map;
}

uint64_t PairKey(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

bool IsWordChar(char32_t c) { return c == '_' || unicode::IsLetter(c) || unicode::IsNumber(c); }

// The code point that ends just before byte `pos` (pos > 0, valid UTF-8).
char32_t CharBefore(std::string_view s, size_t pos) {
  size_t start = pos - 1;
  while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
  char32_t c = 0;
  return unicode::DecodeUtf8(s, start, &c) > 0 ? c : 0;
}

// "bos_token" / "eos_token" of tokenizer_config.json: a string, {"content": string}, or null.
absl::StatusOr<std::string> SpecialName(const json::Value& config, const char* key,
                                        const std::string& origin) {
  const json::Value* v = config.Find(key);
  if (v == nullptr || v->is_null()) return std::string();
  if (v->is_string()) return v->as_string();
  if (v->is_object() && v->Find("content") != nullptr && v->Find("content")->is_string()) {
    return v->Find("content")->as_string();
  }
  return Bad(origin,
             absl::StrCat("\"", key, "\" is neither a string, {\"content\": string} nor null"));
}

}  // namespace

absl::StatusOr<std::unique_ptr<BpeTokenizer>> BpeTokenizer::Create(std::string json_text,
                                                                   std::string config,
                                                                   const std::string& origin,
                                                                   std::vector<std::string> files) {
  static std::atomic<uint64_t> instances{0};
  std::unique_ptr<BpeTokenizer> t(new BpeTokenizer());
  t->instance_ = ++instances;
  t->json_ = std::move(json_text);
  t->config_ = std::move(config);
  t->files_ = std::move(files);
  if (absl::Status s = t->Load(origin); !s.ok()) return s;
  if (absl::Status s = t->LoadSpecial(origin); !s.ok()) return s;
  return t;
}

absl::Status BpeTokenizer::Load(const std::string& origin) {
  absl::StatusOr<json::Value> root = json::Parse(json_);
  if (!root.ok()) return Bad(origin, absl::StrCat("not valid JSON: ", root.status().message()));
  if (!root->is_object()) return Bad(origin, "the top level is not a JSON object");

  // ---- model
  const json::Value* model = root->Find("model");
  if (model == nullptr || !model->is_object()) return Bad(origin, "no \"model\" object");
  const json::Value* type = model->Find("type");
  if (type != nullptr && (!type->is_string() || type->as_string() != "BPE")) {
    return Bad(origin, absl::StrCat("model.type is ", json::Serialize(*type),
                                    "; only \"BPE\" (byte-level) is supported"));
  }
  if (const json::Value* fb = model->Find("byte_fallback"); fb != nullptr && fb->as_bool()) {
    return Bad(origin,
               "model.byte_fallback is true: this is SentencePiece-style BPE (LLaMA-2, "
               "Mistral); use the model's tokenizer.model instead");
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    const json::Value* v = model->Find(key);
    if (v != nullptr && !v->is_null() && !(v->is_string() && v->as_string().empty())) {
      return Bad(origin, absl::StrCat("model.", key, " is set; byte-level BPE has none"));
    }
  }
  if (const json::Value* im = model->Find("ignore_merges"); im != nullptr) {
    ignore_merges_ = im->as_bool();
  }
  const json::Value* vocab = model->Find("vocab");
  if (vocab == nullptr || !vocab->is_object() || vocab->as_object().empty()) {
    return Bad(origin, "model.vocab is missing, empty or not an object");
  }
  int64_t max_id = -1;
  std::string max_id_where;  // what holds max_id, for the sparse-ids error below
  for (const json::Member& m : vocab->as_object()) {
    if (!m.second.is_int() || m.second.as_int() < 0 || m.second.as_int() >= kMaxVocab) {
      return Bad(origin,
                 absl::StrCat("model.vocab[\"", m.first, "\"] = ", json::Serialize(m.second),
                              " is not an id in [0, ", kMaxVocab, ")"));
    }
    if (m.first.empty()) return Bad(origin, "model.vocab holds an empty token");
    if (m.second.as_int() > max_id) {
      max_id = m.second.as_int();
      max_id_where = absl::StrCat("model.vocab[\"", m.first, "\"]");
    }
  }

  // ---- added tokens (their ids may extend the vocabulary)
  const json::Value* added = root->Find("added_tokens");
  if (added != nullptr && !added->is_null() && !added->is_array()) {
    return Bad(origin, "\"added_tokens\" is not an array");
  }
  if (added != nullptr && added->is_array()) {
    for (size_t i = 0; i < added->as_array().size(); ++i) {
      const json::Value& a = added->as_array()[i];
      const json::Value* id = a.Find("id");
      const json::Value* content = a.Find("content");
      if (!a.is_object() || id == nullptr || !id->is_int() || id->as_int() < 0 ||
          id->as_int() >= kMaxVocab || content == nullptr || !content->is_string() ||
          content->as_string().empty()) {
        return Bad(origin, absl::StrCat("added_tokens[", i, "] needs an \"id\" in [0, ", kMaxVocab,
                                        ") and a non-empty \"content\" string"));
      }
      AddedToken t;
      t.id = static_cast<int32_t>(id->as_int());
      t.content = content->as_string();
      const auto flag = [&](const char* key) {
        return a.Find(key) != nullptr && a.Find(key)->as_bool();
      };
      t.special = flag("special");
      t.single_word = flag("single_word");
      t.lstrip = flag("lstrip");
      t.rstrip = flag("rstrip");
      if (t.id > max_id) {
        max_id = t.id;
        max_id_where = absl::StrCat("added_tokens[", i, "]");
      }
      added_.push_back(std::move(t));
    }
  }
  // The id table has max_id + 1 entries, so the ids may leave only so many holes: a 96-byte file
  // with one id of 2^24 - 1 used to cost 855 MB. Real vocabularies (LLaMA-3's, Qwen2.5's) have
  // none; 2^17 holes (4 MB of table) leave room for reserved ranges.
  const int64_t tokens = static_cast<int64_t>(vocab->as_object().size() + added_.size());
  const int64_t id_bound = 2 * tokens + (int64_t{1} << 17);
  if (max_id >= id_bound) {
    return Bad(origin, absl::StrCat(max_id_where, " has id ", max_id, ", but the file holds only ",
                                    tokens, " tokens: ids must lie below 2 x tokens + 2^17 = ",
                                    id_bound, " (the id table is sized by the largest id)"));
  }

  id_to_token_.assign(static_cast<size_t>(max_id + 1), std::string());
  for (const json::Member& m : vocab->as_object()) {
    const int32_t id = static_cast<int32_t>(m.second.as_int());
    if (!id_to_token_[id].empty()) {
      return Bad(origin, absl::StrCat("model.vocab gives id ", id, " to both \"", id_to_token_[id],
                                      "\" and \"", m.first, "\""));
    }
    id_to_token_[id] = m.first;
    token_to_id_[m.first] = id;
  }
  added_kind_.assign(id_to_token_.size(), 0);
  for (size_t i = 0; i < added_.size(); ++i) {
    const AddedToken& t = added_[i];
    if (!id_to_token_[t.id].empty() && id_to_token_[t.id] != t.content) {
      return Bad(origin,
                 absl::StrCat("added token \"", t.content, "\" has id ", t.id,
                              ", which the vocabulary gives to \"", id_to_token_[t.id], "\""));
    }
    if (added_kind_[t.id] != 0) {
      return Bad(origin, absl::StrCat("added_tokens list id ", t.id, " twice"));
    }
    id_to_token_[t.id] = t.content;
    added_kind_[t.id] = t.special ? 2 : 1;
    added_by_first_byte_[static_cast<unsigned char>(t.content[0])].push_back(static_cast<int>(i));
  }
  for (std::vector<int>& list : added_by_first_byte_) {
    std::stable_sort(list.begin(), list.end(), [&](int a, int b) {
      return added_[a].content.size() > added_[b].content.size();
    });
  }

  // ---- the byte map: every byte's character must be a token
  const std::array<char32_t, 256> byte_to_char = ByteToChar();
  char_to_byte_.fill(-1);
  for (int b = 0; b < 256; ++b) {
    unicode::AppendUtf8(byte_to_char[b], &byte_char_[b]);
    char_to_byte_[byte_to_char[b]] = static_cast<int16_t>(b);
    auto it = token_to_id_.find(byte_char_[b]);
    if (it == token_to_id_.end()) {
      return Bad(origin,
                 absl::StrCat("model.vocab has no token for byte 0x", absl::Hex(b, absl::kZeroPad2),
                              " (\"", byte_char_[b], "\"): not a byte-level BPE vocabulary"));
    }
    byte_token_[b] = it->second;
  }

  // ---- merges
  const json::Value* merges = model->Find("merges");
  if (merges == nullptr || !merges->is_array()) return Bad(origin, "model.merges is not an array");
  const json::Array& list = merges->as_array();
  if (list.size() > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    return Bad(origin, "model.merges is too long");
  }
  merge_strings_.reserve(list.size());
  for (size_t rank = 0; rank < list.size(); ++rank) {
    std::string left, right;
    const json::Value& m = list[rank];
    if (m.is_string()) {
      const std::string& s = m.as_string();
      const size_t space = s.find(' ');
      if (space == std::string::npos || space == 0 || space + 1 == s.size() ||
          s.find(' ', space + 1) != std::string::npos) {
        return Bad(origin,
                   absl::StrCat("model.merges[", rank, "] = \"", s, "\" is not \"left right\""));
      }
      left = s.substr(0, space);
      right = s.substr(space + 1);
    } else if (m.is_array() && m.as_array().size() == 2 && m.as_array()[0].is_string() &&
               m.as_array()[1].is_string()) {
      left = m.as_array()[0].as_string();
      right = m.as_array()[1].as_string();
    } else {
      return Bad(origin, absl::StrCat("model.merges[", rank, "] is neither \"left right\" nor ",
                                      "[\"left\", \"right\"]"));
    }
    const auto l = token_to_id_.find(left), r = token_to_id_.find(right),
               merged = token_to_id_.find(left + right);
    if (l == token_to_id_.end() || r == token_to_id_.end() || merged == token_to_id_.end()) {
      return Bad(origin,
                 absl::StrCat("model.merges[", rank, "] (\"", left, "\", \"", right, "\"): ",
                              l == token_to_id_.end()   ? left
                              : r == token_to_id_.end() ? right
                                                        : left + right,
                              " is not in model.vocab"));
    }
    // A repeated pair keeps its first (lowest) rank, as the reference implementation does.
    merges_.emplace(PairKey(l->second, r->second),
                    Merge{static_cast<int32_t>(rank), merged->second});
    merge_strings_.push_back(left + " " + right);
  }

  // ---- normalizer and pre-tokenizer
  if (const json::Value* norm = root->Find("normalizer"); norm != nullptr && !norm->is_null()) {
    const json::Value* nt = norm->Find("type");
    if (nt == nullptr || !nt->is_string() || nt->as_string() != "NFC") {
      return Bad(origin, absl::StrCat("normalizer ", json::Serialize(*norm),
                                      " is not supported (null or NFC only)"));
    }
    nfc_ = true;
  }
  const json::Value* pre = root->Find("pre_tokenizer");
  if (pre == nullptr || !pre->is_object()) {
    return Bad(origin, "\"pre_tokenizer\" is missing: not a byte-level BPE tokenizer");
  }
  const auto type_of = [](const json::Value& v) {
    const json::Value* t = v.Find("type");
    return t != nullptr && t->is_string() ? t->as_string() : std::string();
  };
  const auto byte_level = [&](const json::Value& v, bool want_regex) -> absl::Status {
    if (type_of(v) != "ByteLevel") return Bad(origin, "pre_tokenizer: expected a ByteLevel step");
    const json::Value* use_regex = v.Find("use_regex");
    const bool regex = use_regex == nullptr || use_regex->as_bool();  // HF's default is true
    if (regex != want_regex) {
      return Bad(origin, absl::StrCat("pre_tokenizer: ByteLevel.use_regex must be ",
                                      want_regex ? "true" : "false", " here"));
    }
    const json::Value* aps = v.Find("add_prefix_space");
    add_prefix_space_ = aps != nullptr && aps->as_bool();
    return absl::OkStatus();
  };
  if (type_of(*pre) == "ByteLevel") {
    split_ = BpeSplit::kGpt2;
    if (absl::Status s = byte_level(*pre, true); !s.ok()) return s;
  } else if (type_of(*pre) == "Sequence") {
    const json::Value* steps = pre->Find("pretokenizers");
    if (steps == nullptr || !steps->is_array() || steps->as_array().size() != 2 ||
        type_of(steps->as_array()[0]) != "Split") {
      return Bad(origin, "pre_tokenizer: a Sequence must be [Split, ByteLevel]");
    }
    const json::Value& sp = steps->as_array()[0];
    const json::Value* pattern = sp.Find("pattern");
    const json::Value* regex = pattern != nullptr ? pattern->Find("Regex") : nullptr;
    const json::Value* behavior = sp.Find("behavior");
    const json::Value* invert = sp.Find("invert");
    if (regex == nullptr || !regex->is_string() || behavior == nullptr ||
        behavior->as_string() != "Isolated" || (invert != nullptr && invert->as_bool())) {
      return Bad(origin,
                 "pre_tokenizer: Split needs a {\"Regex\": ...} pattern, behavior "
                 "\"Isolated\" and invert false");
    }
    if (regex->as_string() == kGpt2Regex) {
      split_ = BpeSplit::kGpt2;
    } else if (regex->as_string() == kLlama3Regex) {
      split_ = BpeSplit::kLlama3;
    } else if (regex->as_string() == kQwen2Regex) {
      split_ = BpeSplit::kQwen2;
    } else {
      return Bad(origin,
                 absl::StrCat("pre_tokenizer: unsupported Split regex ", json::Serialize(*regex),
                              " (known: the GPT-2, LLaMA-3 and Qwen2 patterns)"));
    }
    if (absl::Status s = byte_level(steps->as_array()[1], false); !s.ok()) return s;
  } else {
    return Bad(origin,
               absl::StrCat("pre_tokenizer type \"", type_of(*pre),
                            "\" is not supported (ByteLevel, or Sequence[Split, ByteLevel])"));
  }
  return absl::OkStatus();
}

absl::Status BpeTokenizer::LoadSpecial(const std::string& origin) {
  if (config_.empty()) return absl::OkStatus();
  const std::string where = origin + " (tokenizer_config.json)";
  absl::StatusOr<json::Value> config = json::Parse(config_);
  if (!config.ok()) return Bad(where, absl::StrCat("not valid JSON: ", config.status().message()));
  if (!config->is_object()) return Bad(where, "the top level is not a JSON object");
  for (auto [key, out] :
       {std::pair<const char*, int32_t*>{"bos_token", &bos_}, {"eos_token", &eos_}}) {
    absl::StatusOr<std::string> name = SpecialName(*config, key, where);
    if (!name.ok()) return name.status();
    if (name->empty()) continue;
    *out = TokenId(*name);
    if (*out < 0) {
      return Bad(where, absl::StrCat(key, " \"", *name, "\" is not a token of the tokenizer"));
    }
  }
  return absl::OkStatus();
}

int32_t BpeTokenizer::TokenId(const std::string& token) const {
  for (const AddedToken& a : added_) {
    if (a.content == token) return a.id;
  }
  auto it = token_to_id_.find(token);
  return it == token_to_id_.end() ? -1 : it->second;
}

const BpeTokenizer::AddedToken* BpeTokenizer::FindAdded(std::string_view text, size_t from,
                                                        size_t* begin, size_t* end) const {
  for (size_t pos = from; pos < text.size(); ++pos) {
    for (int index : added_by_first_byte_[static_cast<unsigned char>(text[pos])]) {
      const AddedToken& a = added_[index];
      if (text.compare(pos, a.content.size(), a.content) != 0) continue;
      size_t b = pos, e = pos + a.content.size();
      if (a.single_word && ((b > 0 && IsWordChar(CharBefore(text, b))) || (e < text.size() && [&] {
                              char32_t c = 0;
                              return unicode::DecodeUtf8(text, e, &c) > 0 && IsWordChar(c);
                            }()))) {
        continue;
      }
      if (a.lstrip) {
        while (b > from && unicode::IsWhitespace(CharBefore(text, b))) {
          do --b;
          while ((static_cast<unsigned char>(text[b]) & 0xC0) == 0x80);
        }
      }
      if (a.rstrip) {
        char32_t c = 0;
        int n;
        while (e < text.size() && (n = unicode::DecodeUtf8(text, e, &c)) > 0 &&
               unicode::IsWhitespace(c)) {
          e += n;
        }
      }
      *begin = b;
      *end = e;
      return &a;
    }
  }
  return nullptr;
}

void BpeTokenizer::EncodePiece(std::string_view piece,
                               std::unordered_map<std::string, std::vector<int32_t>>* cache,
                               std::vector<int32_t>* out) const {
  constexpr size_t kCachedPieceBytes = 64;
  const bool cacheable = piece.size() <= kCachedPieceBytes;
  std::string key;
  if (cacheable) {
    key.assign(piece);
    auto it = cache->find(key);
    if (it != cache->end()) {
      out->insert(out->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> ids;
  if (ignore_merges_) {
    std::string mapped;
    for (unsigned char b : piece) mapped += byte_char_[b];
    auto it = token_to_id_.find(mapped);
    if (it != token_to_id_.end()) ids.push_back(it->second);
  }
  if (ids.empty()) {
    // Symbols in a linked list; candidate merges in a heap ordered by (rank, position).
    const int n = static_cast<int>(piece.size());
    std::vector<int32_t> sym(n);
    std::vector<int> prev(n), next(n);
    for (int i = 0; i < n; ++i) {
      sym[i] = byte_token_[static_cast<unsigned char>(piece[i])];
      prev[i] = i - 1;
      next[i] = i + 1 < n ? i + 1 : -1;
    }
    struct Candidate {
      int32_t rank;
      int pos;
      int32_t left, right;  // the ids the merge was computed for (stale when they changed)
      bool operator>(const Candidate& o) const {
        return rank != o.rank ? rank > o.rank : pos > o.pos;
      }
    };
    std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> heap;
    const auto push = [&](int pos) {
      if (pos < 0 || next[pos] < 0) return;
      auto it = merges_.find(PairKey(sym[pos], sym[next[pos]]));
      if (it != merges_.end()) heap.push({it->second.rank, pos, sym[pos], sym[next[pos]]});
    };
    for (int i = 0; i + 1 < n; ++i) push(i);
    while (!heap.empty()) {
      const Candidate c = heap.top();
      heap.pop();
      const int right = next[c.pos];
      if (sym[c.pos] != c.left || right < 0 || sym[right] != c.right) continue;  // stale
      sym[c.pos] = merges_.at(PairKey(c.left, c.right)).merged;
      sym[right] = -1;
      next[c.pos] = next[right];
      if (next[right] >= 0) prev[next[right]] = c.pos;
      push(prev[c.pos]);
      push(c.pos);
    }
    for (int i = 0; i >= 0 && i < n; i = next[i]) ids.push_back(sym[i]);
  }
  out->insert(out->end(), ids.begin(), ids.end());
  if (cacheable) (*cache)[std::move(key)] = std::move(ids);
}

void BpeTokenizer::EncodeSegment(std::string_view segment,
                                 std::unordered_map<std::string, std::vector<int32_t>>* cache,
                                 std::vector<int32_t>* out) const {
  if (segment.empty()) return;
  std::string normalized;
  if (nfc_) {
    normalized = unicode::ToNfc(segment);
    segment = normalized;
  }
  std::string prefixed;
  if (add_prefix_space_ && segment[0] != ' ') {
    prefixed = " " + std::string(segment);
    segment = prefixed;
  }
  for (std::string_view piece : PreTokenize(segment, split_)) EncodePiece(piece, cache, out);
}

absl::StatusOr<std::vector<int32_t>> BpeTokenizer::Encode(std::string_view text) const {
  if (size_t bad = unicode::FindInvalidUtf8(text); bad != std::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("BPE tokenizer: text is not valid UTF-8 at byte offset ", bad, " (byte 0x",
                     absl::Hex(static_cast<unsigned char>(text[bad]), absl::kZeroPad2), ")"));
  }
  // Pieces merged before, kept per thread across calls: a corpus repeats its words, and merging
  // is most of the time (prep calls Encode once per document, on the same pool threads). The
  // cache belongs to one tokenizer at a time and is bounded.
  constexpr size_t kMaxCachedPieces = 1 << 18;
  struct PieceCache {
    uint64_t owner = 0;
    std::unordered_map<std::string, std::vector<int32_t>> pieces;
  };
  thread_local PieceCache thread_cache;
  if (thread_cache.owner != instance_ || thread_cache.pieces.size() > kMaxCachedPieces) {
    thread_cache.pieces.clear();
    thread_cache.owner = instance_;
  }
  std::unordered_map<std::string, std::vector<int32_t>>& cache = thread_cache.pieces;
  std::vector<int32_t> ids;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t begin = 0, end = 0;
    const AddedToken* a = FindAdded(text, pos, &begin, &end);
    if (a == nullptr) {
      EncodeSegment(text.substr(pos), &cache, &ids);
      break;
    }
    EncodeSegment(text.substr(pos, begin - pos), &cache, &ids);
    ids.push_back(a->id);
    pos = end;
  }
  return ids;
}

absl::StatusOr<std::string> BpeTokenizer::Decode(const std::vector<int32_t>& ids) const {
  std::string text;
  for (size_t i = 0; i < ids.size(); ++i) {
    const int32_t id = ids[i];
    if (id < 0 || id >= vocab_size() || id_to_token_[id].empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("BPE tokenizer: id ", id, " (position ", i, ") is not a token"));
    }
    const std::string& token = id_to_token_[id];
    if (added_kind_[id] != 0) {
      text += token;
      continue;
    }
    size_t pos = 0;
    while (pos < token.size()) {
      char32_t c = 0;
      const int n = unicode::DecodeUtf8(token, pos, &c);
      if (n == 0 || c >= char_to_byte_.size() || char_to_byte_[c] < 0) {
        return absl::InvalidArgumentError(absl::StrCat("BPE tokenizer: token ", id, " \"", token,
                                                       "\" holds a character that is not in the "
                                                       "byte-level alphabet at byte ",
                                                       pos));
      }
      text.push_back(static_cast<char>(char_to_byte_[c]));
      pos += n;
    }
  }
  return text;
}

std::optional<kernels::GgufTokenizer> BpeTokenizer::ToGguf() const {
  kernels::GgufTokenizer g;
  g.model = "gpt2";
  g.pre = split_ == BpeSplit::kGpt2 ? "gpt-2" : split_ == BpeSplit::kLlama3 ? "llama-bpe" : "qwen2";
  for (size_t id = 0; id < id_to_token_.size(); ++id) {
    if (id_to_token_[id].empty()) {
      g.tokens.push_back(absl::StrCat("[PAD", id, "]"));
      g.token_types.push_back(kGgufUnused);
    } else {
      g.tokens.push_back(id_to_token_[id]);
      g.token_types.push_back(added_kind_[id] == 2   ? kGgufControl
                              : added_kind_[id] == 1 ? kGgufUserDefined
                                                     : kGgufNormal);
    }
  }
  g.merges = merge_strings_;
  g.bos = bos_;
  g.eos = eos_;
  g.add_bos = bos_ >= 0 && bos_ != eos_;
  return g;
}

std::map<std::string, std::string> BpeTokenizer::Metadata() const {
  std::map<std::string, std::string> m = {{"qat.tokenizer", "bpe"},
                                          {"qat.tokenizer.json", json_},
                                          {"qat.bos_id", absl::StrCat(bos_)},
                                          {"qat.eos_id", absl::StrCat(eos_)}};
  if (!config_.empty()) m["qat.tokenizer.config"] = config_;
  return m;
}

}  // namespace qat::data
