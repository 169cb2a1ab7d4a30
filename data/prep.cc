// `qat prep` (data/prep.h): documents -> BOS + tokens + EOS streams in train and val shards.
#include "data/prep.h"

#include <algorithm>
#include <cerrno>
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
#include "io/atomic_file.h"
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

// Tokenizes one batch of records on the pool, in place of `encoded` (one entry per record).
void EncodeBatch(kernels::ThreadPool& pool, const std::vector<RawRecord>& batch,
                 const DocumentSource& source, const Tokenizer& tokenizer,
                 const PrepOptions& options, std::vector<Encoded>* encoded) {
  const bool bos = tokenizer.bos_id() >= 0 && tokenizer.bos_id() != tokenizer.eos_id();
  encoded->assign(batch.size(), Encoded{});
  pool.ParallelFor(static_cast<int64_t>(batch.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      Encoded& e = (*encoded)[i];
      absl::StatusOr<std::string> text =
          RecordText(batch[i], source.files()[batch[i].file], options.json_keys);
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
            absl::StrCat(source.files()[batch[i].file], ":", batch[i].line, " (byte offset ",
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
}

// The one writer of the shards: takes the encoded batches in input order, so what is written
// depends neither on the threads nor on the ranks that encoded them.
class Assembler {
 public:
  Assembler(const PrepOptions& options, PrepStats* stats)
      : options_(options),
        stats_(*stats),
        train_(options.out_dir, "train", stats->vocab_size, options.shard_tokens),
        val_(options.out_dir, "val", stats->vocab_size, options.shard_tokens) {}

  // The first bad record stops prep unless skip_bad, which counts it.
  absl::Status Add(const std::vector<Encoded>& batch) {
    for (const Encoded& e : batch) {
      if (!e.status.ok()) {
        if (!options_.skip_bad) {
          return Fail(absl::Status(e.status.code(),
                                   absl::StrCat("prep: ", e.status.message(),
                                                " (--skip-bad counts such records instead)")));
        }
        if (stats_.skipped++ == 0) stats_.first_skipped = std::string(e.status.message());
        ++stats_.skipped_by_reason[Reason(std::string(e.status.message()))];
        continue;
      }
      if (e.blank) {
        ++stats_.empty_documents;
        continue;
      }
      ++stats_.documents;
      ++(e.val ? stats_.val_documents : stats_.train_documents);
      (e.val ? stats_.val_tokens : stats_.train_tokens) += static_cast<int64_t>(e.ids.size());
      if (absl::Status s = (e.val ? val_ : train_).Add(e.ids); !s.ok()) return Fail(s);
    }
    return absl::OkStatus();
  }

  // After the last batch: the splits' checks, then the shards committed and stale ones removed.
  absl::Status Finish(const std::vector<std::string>& files) {
    if (stats_.documents == 0) {
      return Fail(absl::InvalidArgumentError(absl::StrCat(
          "prep: no non-empty documents in ", files.front(),
          stats_.input_files > 1 ? absl::StrCat(" and ", stats_.input_files - 1, " more file(s)")
                                 : "",
          stats_.skipped > 0 ? absl::StrCat(" (", stats_.skipped, " bad record(s) skipped)")
                             : "")));
    }
    // An empty split is an error, with the reason: the split is by a hash of each document.
    if (options_.val_fraction > 0 && stats_.val_documents == 0) {
      return Fail(absl::InvalidArgumentError(absl::StrCat(
          "prep: no document went to validation: each of the ", stats_.documents,
          " documents goes there with probability ", options_.val_fraction,
          " (--val-fraction), by a hash of its text. Give more documents (--fortune splits text "
          "files at lines holding \"%\"), a larger --val-fraction, or --val-fraction 0 for none")));
    }
    if (stats_.train_documents == 0) {
      return Fail(absl::InvalidArgumentError(
          absl::StrCat("prep: no document went to training: all ", stats_.documents,
                       " drew validation places (--val-fraction ", options_.val_fraction,
                       "). Give more documents or a smaller --val-fraction")));
    }
    if (absl::Status s = train_.Finish(); !s.ok()) return Fail(s);
    if (absl::Status s = val_.Finish(); !s.ok()) return Fail(s);
    for (const SplitWriter* w : {&train_, &val_}) {
      for (const std::string& f : w->Stale()) std::remove(f.c_str());
    }
    stats_.train_files = train_.files();
    stats_.val_files = val_.files();
    return absl::OkStatus();
  }

  absl::Status Fail(absl::Status s) {
    train_.Abandon();
    val_.Abandon();
    return s;
  }

 private:
  const PrepOptions& options_;
  PrepStats& stats_;
  SplitWriter train_, val_;
};

// A rank's part file (prep on several ranks): the batches it encoded, in input order. Little-
// endian (every platform qat builds for); written and read by the ranks of one job, then removed.
//   per batch:  u64 batch index, u64 record count, then per record:
//     u8 flags (1: blank, 2: validation, 4: bad record)
//     bad record: i32 absl status code, u32 message bytes, the message
//     otherwise:  u32 token count, the tokens as i32
std::string PartPath(const PrepOptions& options, int rank) {
  return absl::StrFormat("%s/.prep-part-%d-of-%d", options.out_dir, rank, options.ranks);
}

class PartWriter {
 public:
  absl::Status Open(const std::string& path) {
    path_ = path;
    file_ = std::fopen(path.c_str(), "wb");
    return file_ ? absl::OkStatus() : io::ErrnoError("prep: cannot create part file", path, errno);
  }
  ~PartWriter() {
    if (file_) std::fclose(file_);
  }
  absl::Status Write(uint64_t batch_index, const std::vector<Encoded>& batch) {
    Put(batch_index);
    Put(static_cast<uint64_t>(batch.size()));
    for (const Encoded& e : batch) {
      Put(static_cast<uint8_t>((e.blank ? 1 : 0) | (e.val ? 2 : 0) | (e.status.ok() ? 0 : 4)));
      if (!e.status.ok()) {
        Put(static_cast<int32_t>(e.status.code()));
        Put(static_cast<uint32_t>(e.status.message().size()));
        Bytes(e.status.message().data(), e.status.message().size());
      } else if (!e.blank) {
        Put(static_cast<uint32_t>(e.ids.size()));
        Bytes(e.ids.data(), e.ids.size() * sizeof(int32_t));
      }
    }
    return failed_ ? io::ErrnoError("prep: cannot write part file", path_, errno)
                   : absl::OkStatus();
  }
  absl::Status Close() {
    const bool ok = !failed_ && std::fclose(file_) == 0;
    file_ = nullptr;
    return ok ? absl::OkStatus() : io::ErrnoError("prep: cannot write part file", path_, errno);
  }

 private:
  template <typename T>
  void Put(T v) {
    Bytes(&v, sizeof v);
  }
  void Bytes(const void* p, size_t n) {
    if (!failed_ && n > 0 && std::fwrite(p, 1, n, file_) != n) failed_ = true;
  }
  std::string path_;
  std::FILE* file_ = nullptr;
  bool failed_ = false;
};

class PartReader {
 public:
  absl::Status Open(const std::string& path) {
    path_ = path;
    file_ = std::fopen(path.c_str(), "rb");
    return file_ ? absl::OkStatus() : io::ErrnoError("prep: cannot open part file", path, errno);
  }
  ~PartReader() {
    if (file_) std::fclose(file_);
  }
  // The next batch, which must be `batch_index`.
  absl::Status Read(uint64_t batch_index, std::vector<Encoded>* batch) {
    uint64_t index = 0, records = 0;
    if (!Get(&index) || !Get(&records)) return Truncated(batch_index);
    if (index != batch_index) {
      return absl::DataLossError(absl::StrCat("prep: part file ", path_, " holds batch ", index,
                                              " where batch ", batch_index, " was expected"));
    }
    batch->assign(records, Encoded{});
    for (Encoded& e : *batch) {
      uint8_t flags = 0;
      if (!Get(&flags)) return Truncated(batch_index);
      e.blank = flags & 1;
      e.val = flags & 2;
      uint32_t n = 0;
      if (flags & 4) {
        int32_t code = 0;
        if (!Get(&code) || !Get(&n)) return Truncated(batch_index);
        std::string message(n, '\0');
        if (!Bytes(message.data(), n)) return Truncated(batch_index);
        e.status = absl::Status(static_cast<absl::StatusCode>(code), message);
      } else if (!e.blank) {
        if (!Get(&n)) return Truncated(batch_index);
        e.ids.resize(n);
        if (!Bytes(e.ids.data(), size_t(n) * sizeof(int32_t))) return Truncated(batch_index);
      }
    }
    return absl::OkStatus();
  }

 private:
  template <typename T>
  bool Get(T* v) {
    return Bytes(v, sizeof *v);
  }
  bool Bytes(void* p, size_t n) { return n == 0 || std::fread(p, 1, n, file_) == n; }
  absl::Status Truncated(uint64_t batch_index) const {
    return absl::DataLossError(
        absl::StrCat("prep: part file ", path_, " ends inside or before batch ", batch_index));
  }
  std::string path_;
  std::FILE* file_ = nullptr;
};

}  // namespace

absl::StatusOr<PrepStats> Prep(const PrepOptions& options,
                               const std::function<void(const PrepProgress&)>& progress,
                               const PrepVote& vote) {
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
  if (options.batch_bytes == 0) return absl::InvalidArgumentError("prep: batch_bytes is 0");
  if (options.ranks < 1 || options.rank < 0 || options.rank >= options.ranks) {
    return absl::InvalidArgumentError(
        absl::StrCat("prep: rank ", options.rank, " of ", options.ranks));
  }
  const int ranks = options.ranks, rank = options.rank;
  if (ranks > 1 && !vote) {
    return absl::InvalidArgumentError("prep: several ranks need the collective vote");
  }

  // Everything that can fail before the batches, as one status (every rank votes on it).
  PrepStats stats;
  stats.ranks = ranks;
  std::unique_ptr<Tokenizer> tokenizer;
  std::optional<DocumentSource> source;
  const auto set_up = [&]() -> absl::Status {
    absl::StatusOr<std::unique_ptr<Tokenizer>> t = LoadTokenizer(options.tokenizer);
    if (!t.ok()) {
      return absl::Status(t.status().code(),
                          absl::StrCat("prep: tokenizer: ", t.status().message()));
    }
    tokenizer = *std::move(t);
    DocumentSourceOptions source_options;
    source_options.inputs = options.inputs;
    source_options.format = options.format;
    source_options.fortune = options.fortune_format;
    absl::StatusOr<DocumentSource> s = DocumentSource::Open(source_options);
    if (!s.ok()) return s.status();
    source.emplace(*std::move(s));
    std::error_code ec;
    fs::create_directories(options.out_dir, ec);
    if (ec) {
      return absl::InternalError(
          absl::StrCat("prep: cannot create directory ", options.out_dir, ": ", ec.message()));
    }
    return absl::OkStatus();
  };
  absl::Status status = set_up();
  if (!status.ok() && ranks == 1) return status;
  if (status.ok()) {
    stats.tokenizer_kind = tokenizer->kind();
    stats.vocab_size = tokenizer->vocab_size();
    stats.input_files = static_cast<int64_t>(source->files().size());
  }
  const auto report = [&](int64_t documents, int64_t tokens) {
    if (!progress) return;
    PrepProgress p;
    p.documents = documents;
    p.tokens = tokens;
    p.file_bytes = source->file_bytes_read();
    p.total_file_bytes = source->total_file_bytes();
    p.text_bytes = source->bytes_read();
    p.seconds = seconds();
    p.ranks = ranks;
    progress(p);
  };

  kernels::ThreadPool pool(options.threads);
  stats.threads = pool.size();
  std::vector<RawRecord> batch;
  std::vector<Encoded> encoded;
  // A read error ends the input where it occurs; records before it are still judged first, as in
  // input order the first problem is the one reported.
  absl::Status read_error;
  uint64_t batches = 0;

  if (ranks == 1) {
    Assembler assembler(options, &stats);
    for (;; ++batches) {
      batch.clear();
      absl::StatusOr<bool> more = source->ReadBatch(options.batch_bytes, &batch);
      if (!more.ok()) return assembler.Fail(more.status());
      if (!*more) break;
      EncodeBatch(pool, batch, *source, *tokenizer, options, &encoded);
      if (absl::Status s = assembler.Add(encoded); !s.ok()) return s;
      report(stats.documents, stats.train_tokens + stats.val_tokens);
    }
    stats.input_bytes = source->bytes_read();
    if (absl::Status s = assembler.Finish(source->files()); !s.ok()) return s;
    stats.seconds = seconds();
    return stats;
  }

  // Several ranks. Every rank reads the whole input (batch boundaries depend on it alone) and
  // encodes batches rank, rank + ranks, ... into its part file; then rank 0 writes the shards from
  // the parts in batch order, through the same Assembler as one process would.
  if (status.ok()) {
    PartWriter part;
    status = part.Open(PartPath(options, rank));
    int64_t documents = 0, tokens = 0;
    for (; status.ok(); ++batches) {
      batch.clear();
      absl::StatusOr<bool> more = source->ReadBatch(options.batch_bytes, &batch);
      if (!more.ok()) {
        read_error = more.status();
        break;
      }
      if (!*more) break;
      documents += static_cast<int64_t>(batch.size());
      if (batches % ranks != static_cast<uint64_t>(rank)) continue;
      EncodeBatch(pool, batch, *source, *tokenizer, options, &encoded);
      status = part.Write(batches, encoded);
      for (const Encoded& e : encoded) tokens += static_cast<int64_t>(e.ids.size());
      report(documents, tokens);
      // Without skip_bad, a bad record here stops prep at or before it: no later batch is read.
      if (!options.skip_bad && std::any_of(encoded.begin(), encoded.end(),
                                           [](const Encoded& e) { return !e.status.ok(); })) {
        ++batches;
        break;
      }
    }
    if (absl::Status s = part.Close(); status.ok()) status = s;
  }
  const auto remove_parts = [&] {
    if (rank != 0) return;
    for (int r = 0; r < ranks; ++r) std::remove(PartPath(options, r).c_str());
  };
  absl::StatusOr<bool> all_encoded = vote(status.ok());
  if (!all_encoded.ok()) return all_encoded.status();
  if (!*all_encoded) {
    remove_parts();
    if (!status.ok()) return status;
    return absl::AbortedError("prep: another rank failed (its error is above)");
  }
  if (rank == 0) {
    Assembler assembler(options, &stats);
    std::vector<PartReader> parts(ranks);
    for (int r = 0; r < ranks && status.ok(); ++r) status = parts[r].Open(PartPath(options, r));
    for (uint64_t b = 0; b < batches && status.ok(); ++b) {
      status = parts[b % ranks].Read(b, &encoded);
      if (status.ok()) status = assembler.Add(encoded);
    }
    if (status.ok() && !read_error.ok()) status = assembler.Fail(read_error);
    stats.input_bytes = source->bytes_read();
    if (status.ok()) status = assembler.Finish(source->files());
    parts.clear();
    remove_parts();
  }
  absl::StatusOr<bool> all_done = vote(status.ok());
  if (!all_done.ok()) return all_done.status();
  if (!status.ok()) return status;
  if (!*all_done)
    return absl::AbortedError("prep: rank 0 failed writing the shards (its error is above)");
  stats.seconds = seconds();
  return stats;
}

}  // namespace qat::data
