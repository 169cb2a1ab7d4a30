// `qat prep` (data/prep.h): documents -> BOS + tokens + EOS streams in train and val shards.
#include "data/prep.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <optional>
#include <system_error>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "data/documents.h"
#include "data/hash.h"
#include "data/tokens.h"
#include "kernels/thread_pool.h"

namespace qat::data {
namespace {
namespace fs = std::filesystem;

// FNV-1a 64 of the text, 8 bytes at a time mixed through SplitMix64 (fast, and every byte
// counts): the document's identity for the split.
uint64_t TextHash(const std::string& text) {
  uint64_t h = 0xcbf29ce484222325ull ^ text.size();
  size_t i = 0;
  for (; i + 8 <= text.size(); i += 8) {
    uint64_t w;
    std::memcpy(&w, text.data() + i, 8);
    h = SplitMix64(h ^ w);
  }
  for (; i < text.size(); ++i) h = (h ^ static_cast<unsigned char>(text[i])) * 0x100000001b3ull;
  return SplitMix64(h);
}

// A uniform draw in [0, 1) for a document under `seed`.
double DocumentDraw(uint64_t seed, const std::string& text) {
  return static_cast<double>(SplitMix64(SplitMix64(seed) ^ TextHash(text)) >> 11) * 0x1.0p-53;
}

bool IsBlank(const std::string& text) {
  return text.find_first_not_of(" \t\r\n\v\f") == std::string::npos;
}

std::string Reason(const std::string& message) {
  for (const char* r :
       {"malformed JSON", "not a JSON object", "no key", "expected a string", "invalid UTF-8"}) {
    if (absl::StrContains(message, r)) return r;
  }
  return "tokenizer error";
}

// One split's shards: NAME.bin, or NAME-00000.bin, NAME-00001.bin, ... of about shard_tokens
// tokens each (whole documents). Shards are committed as they fill; Abandon removes those.
class SplitWriter {
 public:
  SplitWriter(std::string dir, std::string name, int64_t vocab_size, int64_t shard_tokens)
      : dir_(std::move(dir)),
        name_(std::move(name)),
        vocab_size_(vocab_size),
        shard_tokens_(shard_tokens) {}

  absl::Status Add(const std::vector<int32_t>& document) {
    if (!current_) {
      const std::string path = shard_tokens_ > 0
                                   ? absl::StrFormat("%s/%s-%05d.bin", dir_, name_, files_.size())
                                   : absl::StrCat(dir_, "/", name_, ".bin");
      absl::StatusOr<ShardWriter> w = ShardWriter::Create(path, vocab_size_);
      if (!w.ok()) return w.status();
      current_.emplace(*std::move(w));
    }
    if (absl::Status s = current_->Append(document.data(), document.size()); !s.ok()) return s;
    if (shard_tokens_ > 0 && current_->tokens() >= shard_tokens_) return Close();
    return absl::OkStatus();
  }

  // Commits the open shard (and, unsharded, an empty NAME.bin when nothing was added).
  absl::Status Finish() {
    if (!current_ && shard_tokens_ == 0 && files_.empty()) {
      absl::StatusOr<ShardWriter> w =
          ShardWriter::Create(absl::StrCat(dir_, "/", name_, ".bin"), vocab_size_);
      if (!w.ok()) return w.status();
      current_.emplace(*std::move(w));
    }
    return current_ ? Close() : absl::OkStatus();
  }

  void Abandon() {
    current_.reset();  // its temporary file goes with it
    for (const std::string& f : files_) std::remove(f.c_str());
    files_.clear();
  }

  // Numbered shards of this name beyond the ones written: left by an earlier, larger prep.
  std::vector<std::string> Stale() const {
    std::vector<std::string> stale;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(dir_, ec)) {
      const std::string f = e.path().filename().string();
      const std::string path = e.path().string();
      const bool ours = absl::StartsWith(f, name_ + "-") && absl::EndsWith(f, ".bin") &&
                        f.size() == name_.size() + 10;
      if ((ours || (shard_tokens_ > 0 && f == name_ + ".bin")) &&
          std::find(files_.begin(), files_.end(), path) == files_.end()) {
        stale.push_back(path);
      }
    }
    return stale;
  }

  const std::vector<std::string>& files() const { return files_; }

 private:
  absl::Status Close() {
    const std::string path = current_->path();
    absl::Status s = current_->Commit();
    current_.reset();
    if (s.ok()) files_.push_back(path);
    return s;
  }

  std::string dir_, name_;
  int64_t vocab_size_, shard_tokens_;
  std::optional<ShardWriter> current_;
  std::vector<std::string> files_;
};

struct Encoded {
  absl::Status status;
  std::vector<int32_t> ids;  // BOS + tokens + EOS
  bool blank = false, val = false;
};

}  // namespace

absl::StatusOr<PrepStats> Prep(const PrepOptions& options,
                               const std::function<void(const PrepProgress&)>& progress) {
  const auto start = std::chrono::steady_clock::now();
  const auto seconds = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  if (options.inputs.empty()) return absl::InvalidArgumentError("prep: no input files given");
  if (options.out_dir.empty()) return absl::InvalidArgumentError("prep: no output directory given");
  if (!(options.val_fraction >= 0.0 && options.val_fraction < 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("prep: val_fraction ", options.val_fraction, " is outside [0, 1)"));
  }
  if (options.json_keys.empty()) return absl::InvalidArgumentError("prep: no JSON key given");
  if (options.shard_tokens < 0) return absl::InvalidArgumentError("prep: shard_tokens < 0");

  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer_or = LoadTokenizer(options.tokenizer);
  if (!tokenizer_or.ok()) {
    return absl::Status(tokenizer_or.status().code(),
                        absl::StrCat("prep: tokenizer: ", tokenizer_or.status().message()));
  }
  const Tokenizer& tokenizer = **tokenizer_or;
  DocumentSourceOptions source_options;
  source_options.inputs = options.inputs;
  source_options.format = options.format;
  source_options.fortune = options.fortune_format;
  absl::StatusOr<DocumentSource> source = DocumentSource::Open(source_options);
  if (!source.ok()) return source.status();

  std::error_code ec;
  fs::create_directories(options.out_dir, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("prep: cannot create directory ", options.out_dir, ": ", ec.message()));
  }
  PrepStats stats;
  stats.tokenizer_kind = tokenizer.kind();
  stats.vocab_size = tokenizer.vocab_size();
  stats.input_files = static_cast<int64_t>(source->files().size());
  SplitWriter train(options.out_dir, "train", stats.vocab_size, options.shard_tokens);
  SplitWriter val(options.out_dir, "val", stats.vocab_size, options.shard_tokens);
  const auto fail = [&](absl::Status s) {
    train.Abandon();
    val.Abandon();
    return s;
  };

  kernels::ThreadPool pool(options.threads);
  stats.threads = pool.size();
  const bool bos = tokenizer.bos_id() >= 0 && tokenizer.bos_id() != tokenizer.eos_id();
  std::vector<RawRecord> batch;
  std::vector<Encoded> encoded;
  for (;;) {
    batch.clear();
    absl::StatusOr<bool> more = source->ReadBatch(options.batch_bytes, &batch);
    if (!more.ok()) return fail(more.status());
    if (!*more) break;
    encoded.assign(batch.size(), Encoded{});
    pool.ParallelFor(static_cast<int64_t>(batch.size()), 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        Encoded& e = encoded[i];
        absl::StatusOr<std::string> text =
            RecordText(batch[i], source->files()[batch[i].file], options.json_keys);
        if (!text.ok()) {
          e.status = text.status();
          continue;
        }
        if (IsBlank(*text)) {
          e.blank = true;
          continue;
        }
        absl::StatusOr<std::vector<int32_t>> ids = tokenizer.Encode(*text);
        if (!ids.ok()) {
          e.status = absl::InvalidArgumentError(
              absl::StrCat(source->files()[batch[i].file], ":", batch[i].line, " (byte offset ",
                           batch[i].offset, "): ", ids.status().message()));
          continue;
        }
        e.ids.reserve(ids->size() + 2);
        if (bos) e.ids.push_back(tokenizer.bos_id());
        e.ids.insert(e.ids.end(), ids->begin(), ids->end());
        if (tokenizer.eos_id() >= 0) e.ids.push_back(tokenizer.eos_id());
        e.val = DocumentDraw(options.seed, *text) < options.val_fraction;
      }
    });
    // In input order: what is written does not depend on the threads.
    for (Encoded& e : encoded) {
      if (!e.status.ok()) {
        if (!options.skip_bad) {
          return fail(absl::Status(e.status.code(),
                                   absl::StrCat("prep: ", e.status.message(),
                                                " (--skip-bad counts such records instead)")));
        }
        if (stats.skipped++ == 0) stats.first_skipped = std::string(e.status.message());
        ++stats.skipped_by_reason[Reason(std::string(e.status.message()))];
        continue;
      }
      if (e.blank) {
        ++stats.empty_documents;
        continue;
      }
      ++stats.documents;
      ++(e.val ? stats.val_documents : stats.train_documents);
      (e.val ? stats.val_tokens : stats.train_tokens) += static_cast<int64_t>(e.ids.size());
      if (absl::Status s = (e.val ? val : train).Add(e.ids); !s.ok()) return fail(s);
    }
    if (progress) {
      PrepProgress p;
      p.documents = stats.documents;
      p.tokens = stats.train_tokens + stats.val_tokens;
      p.file_bytes = source->file_bytes_read();
      p.total_file_bytes = source->total_file_bytes();
      p.text_bytes = source->bytes_read();
      p.seconds = seconds();
      progress(p);
    }
  }
  stats.input_bytes = source->bytes_read();
  if (stats.documents == 0) {
    return fail(absl::InvalidArgumentError(absl::StrCat(
        "prep: no non-empty documents in ", source->files().front(),
        stats.input_files > 1 ? absl::StrCat(" and ", stats.input_files - 1, " more file(s)") : "",
        stats.skipped > 0 ? absl::StrCat(" (", stats.skipped, " bad record(s) skipped)") : "")));
  }
  // An empty split is an error, with the reason: the split is by a hash of each document.
  if (options.val_fraction > 0 && stats.val_documents == 0) {
    return fail(absl::InvalidArgumentError(absl::StrCat(
        "prep: no document went to validation: each of the ", stats.documents,
        " documents goes there with probability ", options.val_fraction,
        " (--val-fraction), by a hash of its text. Give more documents (--fortune splits text "
        "files at lines holding \"%\"), a larger --val-fraction, or --val-fraction 0 for none")));
  }
  if (stats.train_documents == 0) {
    return fail(absl::InvalidArgumentError(
        absl::StrCat("prep: no document went to training: all ", stats.documents,
                     " drew validation places (--val-fraction ", options.val_fraction,
                     "). Give more documents or a smaller --val-fraction")));
  }
  if (absl::Status s = train.Finish(); !s.ok()) return fail(s);
  if (absl::Status s = val.Finish(); !s.ok()) return fail(s);
  for (const SplitWriter* w : {&train, &val}) {
    for (const std::string& f : w->Stale()) std::remove(f.c_str());
  }
  stats.train_files = train.files();
  stats.val_files = val.files();
  stats.seconds = seconds();
  return stats;
}

}  // namespace qat::data
