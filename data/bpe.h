// Byte-level BPE from a Hugging Face tokenizer.json (GPT-2, LLaMA-3 and Qwen2 style).
//
// What is read from tokenizer.json (other keys are ignored):
//   "model": {"type": "BPE",
//             "vocab": {"<token>": id, ...}             tokens are strings of mapped bytes (below)
//             "merges": ["left right", ...] or [["left", "right"], ...]   rank = position
//             "ignore_merges": bool (optional; LLaMA-3: a pre-token that is itself a vocabulary
//                              token is encoded as that token without merging)
//             "byte_fallback": must be false/absent (true is SentencePiece-style BPE, as in
//                              LLaMA-2's tokenizer.json: load its tokenizer.model instead)
//             "continuing_subword_prefix", "end_of_word_suffix": must be null or ""}
//   "added_tokens": [{"id", "content", "special", "single_word", "lstrip", "rstrip"}, ...]
//   "normalizer": null, or {"type": "NFC"} (Qwen2): the text between added tokens is put in NFC
//                 (unicode::ToNfc) before pre-tokenization. Added tokens are matched on the raw
//                 text, as Hugging Face does for added tokens with "normalized": false (all of
//                 Qwen2's); decoding does not undo the normalization.
//   "pre_tokenizer": one of
//     {"type": "ByteLevel", "add_prefix_space": B, "use_regex": true}         GPT-2 regex
//     {"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": R},
//        "behavior": "Isolated", "invert": false}, {"type": "ByteLevel", "use_regex": false}]}
//        with R exactly the GPT-2, LLaMA-3 or Qwen2 regex (kGpt2Regex ... below)
// BOS/EOS: "bos_token" / "eos_token" of tokenizer_config.json beside tokenizer.json (a string or
// {"content": string}; null or absent: none), looked up among the added tokens and the vocabulary.
//
// Encoding (what Hugging Face's tokenizers library does for these files):
//   1. added tokens are found first, leftmost, longest at a position (lstrip/rstrip absorb the
//      whitespace beside them, single_word requires no letter, digit or '_' beside them);
//   2. the text between them is split by the pre-tokenizer regex, implemented by hand in
//      PreTokenize() (no regex engine);
//   3. each piece's UTF-8 bytes become characters through GPT-2's byte-to-unicode map (bytes
//      0x21-0x7E, 0xA1-0xAC, 0xAE-0xFF map to themselves, the 68 others to U+0100 + n in byte
//      order), each character starts as its vocabulary token, and adjacent pairs are merged
//      lowest rank first (leftmost first among equal ranks) until no pair has a merge.
// Decoding maps tokens back through the inverse byte map; added tokens decode to their content.
// Invalid UTF-8 text is an error (naming the byte offset), as the Hugging Face library only
// takes valid strings.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "data/tokens.h"

namespace qat::data {

// The pre-tokenizer regexes this implementation knows, exactly as tokenizer.json holds them.
enum class BpeSplit { kGpt2, kLlama3, kQwen2 };
extern const char kGpt2Regex[];
extern const char kLlama3Regex[];
extern const char kQwen2Regex[];

// Splits valid UTF-8 `text` into the pieces the regex of `split` matches, in order; the pieces
// cover the text exactly.
std::vector<std::string_view> PreTokenize(std::string_view text, BpeSplit split);

class BpeTokenizer : public Tokenizer {
 public:
  // `json`: the text of tokenizer.json; `config`: the text of tokenizer_config.json or "" (no
  // BOS/EOS); `origin` names the source in errors; `files`: the files to copy on HF export.
  static absl::StatusOr<std::unique_ptr<BpeTokenizer>> Create(std::string json, std::string config,
                                                              const std::string& origin,
                                                              std::vector<std::string> files = {});

  std::string kind() const override { return "bpe"; }
  int64_t vocab_size() const override { return static_cast<int64_t>(id_to_token_.size()); }
  int32_t bos_id() const override { return bos_; }
  int32_t eos_id() const override { return eos_; }
  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text) const override;
  absl::StatusOr<std::string> Decode(const std::vector<int32_t>& ids) const override;
  std::optional<kernels::GgufTokenizer> ToGguf() const override;
  std::vector<std::string> files() const override { return files_; }
  std::map<std::string, std::string> Metadata() const override;

  BpeSplit split() const { return split_; }
  // The id of a vocabulary or added token, or -1.
  int32_t TokenId(const std::string& token) const;

 private:
  struct AddedToken {
    std::string content;
    int32_t id = 0;
    bool special = false, single_word = false, lstrip = false, rstrip = false;
  };
  struct Merge {
    int32_t rank, merged;
  };
  BpeTokenizer() = default;
  absl::Status Load(const std::string& origin);
  absl::Status LoadSpecial(const std::string& origin);
  // Appends the ids of one pre-token.
  void EncodePiece(std::string_view piece,
                   std::unordered_map<std::string, std::vector<int32_t>>* cache,
                   std::vector<int32_t>* out) const;
  void EncodeSegment(std::string_view segment,
                     std::unordered_map<std::string, std::vector<int32_t>>* cache,
                     std::vector<int32_t>* out) const;
  // Leftmost added-token match in text[from, ...): sets *begin/*end (whitespace absorbed by
  // lstrip/rstrip included) and returns the token, or nullptr.
  const AddedToken* FindAdded(std::string_view text, size_t from, size_t* begin, size_t* end) const;

  std::string json_, config_;
  std::vector<std::string> files_;
  BpeSplit split_ = BpeSplit::kGpt2;
  bool add_prefix_space_ = false;
  bool ignore_merges_ = false;
  bool nfc_ = false;                                      // "normalizer": {"type": "NFC"}
  std::vector<std::string> id_to_token_;                  // "" for ids that no token uses
  std::unordered_map<std::string, int32_t> token_to_id_;  // the model's vocabulary
  std::unordered_map<uint64_t, Merge> merges_;            // (left id << 32 | right id)
  std::vector<std::string> merge_strings_;                // "left right" by rank (for GGUF)
  std::array<int32_t, 256> byte_token_{};                 // id of each byte's character
  std::array<int16_t, 0x144> char_to_byte_{};             // inverse byte map, -1: none
  std::array<std::string, 256> byte_char_;                // UTF-8 of each byte's character
  std::vector<AddedToken> added_;
  std::array<std::vector<int>, 256> added_by_first_byte_;  // indexes into added_, longest first
  std::vector<int8_t> added_kind_;                         // per id: 0 none, 1 added, 2 special
  int32_t bos_ = -1, eos_ = -1;
  // This tokenizer's identity for the per-thread cache of merged pieces (bpe.cc): unique over the
  // process's lifetime, unlike an address, which a later tokenizer may reuse.
  uint64_t instance_ = 0;
};

}  // namespace qat::data
