// qat prep: a corpus on disk -> token shards (data/prep.h). Under mpirun, every rank of the job
// tokenizes a share of the batches and rank 0 writes the shards.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "comm/bootstrap.h"
#include "comm/process_group.h"
#include "data/documents.h"
#include "data/prep.h"
#include "trainer/cli/commands.h"
#include "trainer/cli/flags.h"
#include "trainer/placement.h"

namespace qat::cli {
namespace {

// Started by an MPI launcher (mpirun, srun with PMI/PMIx)? Only then is MPI initialised: a plain
// `qat prep` does not pay for it.
bool LaunchedByMpi() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"}) {
    if (std::getenv(v) != nullptr) return true;
  }
  return false;
}

}  // namespace

int PrepMain(int argc, char** argv) {
  constexpr char kUsage[] =
      "qat prep --out DIR [--tokenizer PATH] [--format auto|text|jsonl] [--json-key K]... "
      "[--fortune] [--val-fraction F] [--seed N] [--shard-tokens N] [--threads N] [--skip-bad] "
      "[--batch-mb N] [--progress] INPUT...   (INPUT: files, directories, globs; .gz and .zst are "
      "decompressed)";
  Args args;
  int code = 0;
  if (!ParseCommand(
          argc, argv, "prep", kUsage,
          {{"out", true, false, "output directory (train.bin, val.bin, or numbered shards)"},
           {"val-fraction", true, false,
            "expected share of documents held out, by a hash of each (default 0.05)"},
           {"fortune", false, false, "text files: documents separated by lines holding '%'"},
           {"seed", true, false, "seed of the train/val split (default 0)"},
           {"tokenizer", true, false,
            "tokenizer.json (byte-level BPE), tokenizer.model (SentencePiece) or a model "
            "directory holding one (default: bytes)"},
           {"format", true, false,
            "auto (by name: .jsonl/.ndjson/.json are JSON Lines, the rest text), text or jsonl"},
           {"json-key", true, true,
            "JSON Lines: the key(s) holding the text (default text; several are joined by a "
            "blank line, in the order given; also comma-separated)"},
           {"skip-bad", false, false,
            "count malformed lines, missing keys, non-string values and invalid UTF-8 instead "
            "of stopping at the first"},
           {"threads", true, false, "tokenizing threads (default: every core)"},
           {"shard-tokens", true, false,
            "write NAME-00000.bin, ... of about N tokens each (whole documents; default: one "
            "train.bin and one val.bin)"},
           {"batch-mb", true, false,
            "MB of input read and tokenized at a time (default 32); under mpirun the ranks take "
            "batches in turn"},
           {"progress", false, false,
            "a progress line on stderr (default: when it is a terminal)"}},
          &args, &code)) {
    return code;
  }
  data::PrepOptions opt;
  opt.inputs = args.positional();
  opt.out_dir = args.Get("out");
  opt.fortune_format = args.Has("fortune");
  opt.tokenizer = args.Get("tokenizer");
  opt.skip_bad = args.Has("skip-bad");
  if (args.Has("format")) opt.format = args.Get("format");
  if (args.Has("json-key")) {
    opt.json_keys.clear();
    for (const std::string& k : args.GetAll("json-key")) {
      for (absl::string_view part : absl::StrSplit(k, ',')) {
        if (part.empty()) return Fail("prep", "--json-key: an empty key");
        opt.json_keys.emplace_back(part);
      }
    }
  }
  absl::StatusOr<double> frac = args.GetDouble("val-fraction", 0.05);
  absl::StatusOr<int64_t> seed = args.GetInt("seed", 0);
  absl::StatusOr<int64_t> threads = args.GetInt("threads", 0);
  absl::StatusOr<int64_t> shard_tokens = args.GetInt("shard-tokens", 0);
  absl::StatusOr<double> batch_mb = args.GetDouble("batch-mb", 32);
  for (const absl::Status& s :
       {frac.status(), seed.status(), threads.status(), shard_tokens.status(), batch_mb.status()}) {
    if (!s.ok()) return Fail("prep", std::string(s.message()));
  }
  if (opt.out_dir.empty()) return Fail("prep", "--out DIR is required");
  if (opt.inputs.empty()) return Fail("prep", "no input files given");
  if (*frac < 0 || *frac >= 1) return Fail("prep", "--val-fraction must be in [0, 1)");
  if (*threads < 0 || *threads > 4096) return Fail("prep", "--threads must be in [0, 4096]");
  if (*shard_tokens < 0) return Fail("prep", "--shard-tokens must be >= 0");
  if (!(*batch_mb * 1e6 >= 1 && *batch_mb <= 65536)) {
    return Fail("prep", "--batch-mb must be in [1e-6, 65536]");
  }
  opt.val_fraction = *frac;
  opt.seed = static_cast<uint64_t>(*seed);
  opt.threads = static_cast<int>(*threads);
  opt.shard_tokens = *shard_tokens;
  opt.batch_bytes = static_cast<size_t>(*batch_mb * 1e6);

  // Under mpirun: this rank's place, its threads (the node's cores shared by the node's ranks,
  // unless --threads), and the vote that keeps every rank's outcome the same.
  std::shared_ptr<comm::ProcessGroup> world;
  data::PrepVote vote;
  if (LaunchedByMpi()) {
    absl::StatusOr<std::shared_ptr<comm::ProcessGroup>> w = comm::MpiWorld();
    if (!w.ok()) return Fail("prep", std::string(w.status().message()));
    world = *w;
    opt.rank = world->rank();
    opt.ranks = world->size();
    if (opt.ranks > 1) {
      absl::StatusOr<comm::LocalPlacement> placement = comm::MpiLocalPlacement();
      if (!placement.ok()) return Fail("prep", std::string(placement.status().message()));
      opt.threads =
          trainer::ChooseThreads(opt.threads, nullptr, placement->node_cores, placement->local_size)
              .threads;
      vote = [&world](bool ok) -> absl::StatusOr<bool> {
        double failed = ok ? 0 : 1;
        if (absl::Status s = world->AllReduceSum(&failed, 1); !s.ok()) return s;
        return failed == 0;
      };
    }
  }
  const bool printer = opt.rank == 0;

  const bool show = printer && (args.Has("progress") || isatty(STDERR_FILENO));
  double last = -1;
  const auto progress = [&](const data::PrepProgress& p) {
    if (!show || (p.seconds - last < 1.0 && p.file_bytes < p.total_file_bytes)) return;
    last = p.seconds;
    const double s = p.seconds > 0 ? p.seconds : 1e-9;
    const double done = p.total_file_bytes ? double(p.file_bytes) / double(p.total_file_bytes) : 1;
    const double eta = done > 0 ? p.seconds * (1 - done) / done : 0;
    std::fprintf(stderr,
                 "prep: %5.1f%% | %lld docs (%.0f docs/s) | %.1f MB in (%.1f MB/s) | %lld tokens "
                 "(%.0f tokens/s)%s | ETA %.0f s%s",
                 100 * done, (long long)p.documents, p.documents / s, p.text_bytes / 1e6,
                 p.text_bytes / 1e6 / s, (long long)p.tokens, p.tokens / s,
                 p.ranks > 1 ? " on rank 0" : "", eta, isatty(STDERR_FILENO) ? "\r" : "\n");
    std::fflush(stderr);
  };
  absl::StatusOr<data::PrepStats> stats = data::Prep(opt, progress, vote);
  if (show && isatty(STDERR_FILENO)) std::fprintf(stderr, "\n");
  if (!stats.ok()) {
    // Another rank's failure is that rank's message; this one only says so on rank 0.
    if (stats.status().code() == absl::StatusCode::kAborted && !printer) return 1;
    return Fail("prep", std::string(stats.status().message()));
  }
  if (!printer) return 0;
  std::printf("prep: %s tokenizer, vocabulary %lld (%s token ids), %s%d thread(s)%s\n",
              stats->tokenizer_kind.c_str(), (long long)stats->vocab_size,
              stats->vocab_size > 65536 ? "uint32" : "uint16",
              stats->ranks > 1 ? absl::StrCat(stats->ranks, " ranks x ").c_str() : "",
              stats->threads, stats->ranks > 1 ? " (rank 0)" : "");
  std::printf(
      "prep: %lld documents from %lld file(s) -> train: %lld documents, %lld tokens in "
      "%s; val: %lld documents, %lld tokens in %s\n",
      (long long)stats->documents, (long long)stats->input_files, (long long)stats->train_documents,
      (long long)stats->train_tokens, absl::StrJoin(stats->train_files, ", ").c_str(),
      (long long)stats->val_documents, (long long)stats->val_tokens,
      absl::StrJoin(stats->val_files, ", ").c_str());
  std::printf(
      "prep: %.1f MB of text in %.2f s (%.1f MB/s, %.0f tokens/s); %lld empty document(s) "
      "skipped\n",
      stats->input_bytes / 1e6, stats->seconds,
      stats->input_bytes / 1e6 / (stats->seconds > 0 ? stats->seconds : 1e-9),
      (stats->train_tokens + stats->val_tokens) / (stats->seconds > 0 ? stats->seconds : 1e-9),
      (long long)stats->empty_documents);
  if (stats->skipped > 0) {
    std::string reasons;
    for (const auto& [reason, n] : stats->skipped_by_reason) {
      reasons += (reasons.empty() ? "" : ", ") + std::to_string(n) + " " + reason;
    }
    std::printf("prep: skipped %lld bad record(s) (%s); the first: %s\n", (long long)stats->skipped,
                reasons.c_str(), stats->first_skipped.c_str());
  }
  return 0;
}

}  // namespace qat::cli
