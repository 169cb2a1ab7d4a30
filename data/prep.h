// `qat prep`: a corpus on disk (data/documents.h: text, fortune, JSONL; .gz, .zst; directories,
// globs) -> token shards (data/tokens.h) for training and validation.
//
// Each document becomes BOS + tokens + EOS (BOS only when the tokenizer has one distinct from
// EOS). Which split it goes to depends only on the seed and a hash of its text, so neither the
// order of the files nor the shard size nor the thread count changes it (and duplicates of a
// document land together). Documents are tokenized on every core, in batches, and written in
// input order: the shards are byte-identical whatever the thread and rank counts.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace qat::data {

struct PrepOptions {
  std::vector<std::string> inputs;                // files, directories, globs
  std::string out_dir;                            // train.bin + val.bin there (or numbered shards)
  double val_fraction = 0.05;                     // expected share of documents held out
  uint64_t seed = 0;                              // which documents go to validation
  std::string tokenizer;                          // LoadTokenizer path; "" = the byte tokenizer
  std::string format = "auto";                    // auto (by file name), text or jsonl
  bool fortune_format = false;                    // text: documents separated by lines holding "%"
  std::vector<std::string> json_keys = {"text"};  // joined by kJsonKeySeparator
  bool skip_bad = false;     // count bad records (malformed JSON, missing key, invalid UTF-8)
                             // instead of stopping at the first
  int threads = 0;           // tokenizing threads; 0: every core
  int64_t shard_tokens = 0;  // > 0: split each split into NAME-00000.bin, ... of about this many
                             // tokens (whole documents); 0: one train.bin and one val.bin
  size_t batch_bytes = 32 << 20;  // input read and tokenized at a time
  // Several processes (mpirun -np N qat prep): every rank reads the whole input and tokenizes
  // batches rank, rank + ranks, ... into a part file in out_dir; rank 0 then writes the shards
  // from the parts in batch order. The shards are the same for any ranks, threads and batch size.
  int rank = 0, ranks = 1;
};

struct PrepProgress {
  int64_t documents = 0, tokens = 0;
  uint64_t file_bytes = 0, total_file_bytes = 0;  // on disk: progress and ETA
  uint64_t text_bytes = 0;                        // decompressed
  double seconds = 0;
  int ranks = 1;  // > 1: documents are those read, tokens those this rank wrote
};

struct PrepStats {
  int64_t documents = 0, train_documents = 0, val_documents = 0;
  int64_t train_tokens = 0, val_tokens = 0;
  int64_t empty_documents = 0;  // blank: skipped
  int64_t skipped = 0;          // bad records skipped (skip_bad)
  std::map<std::string, int64_t> skipped_by_reason;
  std::string first_skipped;  // the error of the first one skipped
  std::vector<std::string> train_files, val_files;
  int64_t input_files = 0;
  uint64_t input_bytes = 0;  // decompressed
  double seconds = 0;
  std::string tokenizer_kind;  // "byte", "bpe" or "sentencepiece"
  int64_t vocab_size = 0;
  int threads = 1;  // of this rank
  int ranks = 1;
};

// With ranks > 1, a collective the caller provides (an all-reduce over the ranks): every rank
// calls it with whether it succeeded so far, and gets true when all did.
using PrepVote = std::function<absl::StatusOr<bool>(bool ok)>;

// On ranks other than 0 (several ranks), the stats hold only what that rank knows (tokenizer,
// threads); the shards and their counts are rank 0's.
absl::StatusOr<PrepStats> Prep(const PrepOptions& options,
                               const std::function<void(const PrepProgress&)>& progress = {},
                               const PrepVote& vote = {});

}  // namespace qat::data
