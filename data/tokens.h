// Tokenizers and token shards.
//
// Token shard file (llm.c convention), little-endian:
//   header: 256 x int32
//     [0] magic: 20240520 (uint16 tokens) or 20240801 (uint32 tokens)
//     [1] version: 1 for 20240520, 7 for 20240801
//     [2] number of tokens N (must be >= 0; files with more than 2^31-1 tokens use the
//         uint32 layout and header[3] as the high 32 bits: N = header[2] + header[3] * 2^32)
//     [3..255] zero (except [3] as above)
//   then N tokens, uint16 or uint32 each. The file size must be exactly 1024 + N * token size.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "io/atomic_file.h"
#include "kernels/gguf_export.h"

namespace qat::data {

// Byte-level tokenizer: ids 0..255 are the bytes, 256 is BOS, 257 is EOS.
class ByteTokenizer {
 public:
  static constexpr int32_t kBos = 256;
  static constexpr int32_t kEos = 257;
  static constexpr int32_t kVocabSize = 258;
  std::vector<int32_t> Encode(const std::string& text) const;
  // Special tokens are dropped; the bytes are returned as they are (maybe invalid UTF-8).
  std::string Decode(const std::vector<int32_t>& ids) const;
};

// Text <-> ids, whichever tokenizer a model uses: the byte tokenizer above, byte-level BPE from a
// Hugging Face tokenizer.json (data/bpe.h) or SentencePiece from a tokenizer.model
// (data/sentencepiece.cc). Encode adds no BOS/EOS; callers add bos_id()/eos_id() themselves.
class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::string kind() const = 0;     // "byte", "bpe" or "sentencepiece"
  virtual int64_t vocab_size() const = 0;   // every id is in [0, vocab_size)
  virtual int32_t bos_id() const = 0;       // -1: none
  virtual int32_t eos_id() const = 0;       // -1: none
  // Errors name the byte offset of input the tokenizer cannot take (invalid UTF-8).
  virtual absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text) const = 0;
  // Special tokens decode to their text; an id outside the vocabulary is an error.
  virtual absl::StatusOr<std::string> Decode(const std::vector<int32_t>& ids) const = 0;
  // The vocabulary as GGUF describes it; nullopt for the byte tokenizer, which the GGUF export
  // describes itself.
  virtual std::optional<kernels::GgufTokenizer> ToGguf() const = 0;
  // The files a Hugging Face model directory needs for this tokenizer (copied by `qat export
  // --format hf`); empty for the byte tokenizer.
  virtual std::vector<std::string> files() const = 0;
  // Everything needed to rebuild this tokenizer, as packed-export metadata (see
  // TokenizerFromMetadata): "qat.tokenizer" = kind(), "qat.bos_id", "qat.eos_id", and for BPE
  // "qat.tokenizer.json" (+ "qat.tokenizer.config"), for SentencePiece "qat.tokenizer.model"
  // (base64 of the model proto).
  virtual std::map<std::string, std::string> Metadata() const = 0;
};

std::unique_ptr<Tokenizer> MakeByteTokenizer();
// `path`: "" or "byte" (the byte tokenizer), a tokenizer.json (BPE), a tokenizer.model
// (SentencePiece) or a directory holding one of them (tokenizer.json preferred). Errors name the
// file and what is wrong with it.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& path);
// Rebuilds the tokenizer recorded by Tokenizer::Metadata(); `origin` names the source in errors.
absl::StatusOr<std::unique_ptr<Tokenizer>> TokenizerFromMetadata(
    const std::map<std::string, std::string>& metadata, const std::string& origin);

// Writes tokens as a shard (uint16 layout when every id < 65536, else uint32), atomically.
absl::Status WriteShard(const std::string& path, const std::vector<int32_t>& tokens);
// The same with the layout chosen by the vocabulary: uint32 when vocab_size > 65536, so that all
// shards of one tokenizer share a layout; ids must be in [0, vocab_size).
absl::Status WriteShard(const std::string& path, const std::vector<int32_t>& tokens,
                        int64_t vocab_size);
// Writes a shard as it goes (the header, whose count is known only at the end, last), atomically:
// nothing is at `path` until Commit. The layout is the vocabulary's (uint32 when vocab_size >
// 65536); ids must be in [0, vocab_size).
class ShardWriter {
 public:
  static absl::StatusOr<ShardWriter> Create(const std::string& path, int64_t vocab_size);
  ShardWriter(ShardWriter&&) noexcept;
  ~ShardWriter();
  absl::Status Append(const int32_t* ids, size_t n);
  absl::Status Commit();
  int64_t tokens() const { return tokens_; }
  const std::string& path() const { return path_; }

 private:
  ShardWriter(std::string path, int64_t vocab_size, std::unique_ptr<io::AtomicFileWriter> file);
  std::string path_;
  int64_t vocab_size_ = 0;
  bool wide_ = false;
  int64_t tokens_ = 0;
  std::unique_ptr<io::AtomicFileWriter> file_;
  std::string scratch_;
};

// Reads and validates a shard; errors name the file and the offending byte offset/field.
// vocab_size > 0: every id must be below it (the model's vocabulary); 0: any int32 id.
absl::StatusOr<std::vector<int32_t>> ReadShard(const std::string& path, int64_t vocab_size = 0);

// Serves windows of seq_len + 1 tokens from a set of shards, deterministically: the window of
// sample i in global step s depends only on (seed, s, i), so a run resumed at step s sees the
// same data, and a global batch is the same whatever the number of ranks reading it.
class WindowSampler {
 public:
  // vocab_size > 0: a token id at or above it is an error naming the shard and its byte offset.
  static absl::StatusOr<WindowSampler> Open(const std::vector<std::string>& shard_paths,
                                            int64_t seq_len, uint64_t seed, int64_t vocab_size = 0);
  int64_t seq_len() const { return seq_len_; }
  int64_t total_tokens() const { return static_cast<int64_t>(tokens_.size()); }
  // Fills out (count x (seq_len+1) int32, row-major) with samples first..first+count-1 of step s.
  void Fill(int64_t step, int64_t first, int64_t count, int32_t* out) const;
  // Sequential, non-overlapping windows for evaluation: window w starts at w * seq_len.
  int64_t num_eval_windows() const;
  void FillEval(int64_t window, int32_t* out) const;

 private:
  std::vector<int32_t> tokens_;
  int64_t seq_len_ = 0;
  uint64_t seed_ = 0;
};

}  // namespace qat::data
