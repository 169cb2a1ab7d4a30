// qat prep: a corpus on disk -> token shards (data/prep.h).
#include <unistd.h>

#include <cstdio>

#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "data/documents.h"
#include "data/prep.h"
#include "trainer/cli/commands.h"
#include "trainer/cli/flags.h"

namespace qat::cli {

int PrepMain(int argc, char** argv) {
  constexpr char kUsage[] =
      "qat prep --out DIR [--tokenizer PATH] [--format auto|text|jsonl] [--json-key K]... "
      "[--fortune] [--val-fraction F] [--seed N] [--shard-tokens N] [--threads N] [--skip-bad] "
      "[--progress] INPUT...   (INPUT: files, directories, globs; .gz and .zst are decompressed)";
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
  for (const absl::Status& s :
       {frac.status(), seed.status(), threads.status(), shard_tokens.status()}) {
    if (!s.ok()) return Fail("prep", std::string(s.message()));
  }
  if (opt.out_dir.empty()) return Fail("prep", "--out DIR is required");
  if (opt.inputs.empty()) return Fail("prep", "no input files given");
  if (*frac < 0 || *frac >= 1) return Fail("prep", "--val-fraction must be in [0, 1)");
  if (*threads < 0 || *threads > 4096) return Fail("prep", "--threads must be in [0, 4096]");
  if (*shard_tokens < 0) return Fail("prep", "--shard-tokens must be >= 0");
  opt.val_fraction = *frac;
  opt.seed = static_cast<uint64_t>(*seed);
  opt.threads = static_cast<int>(*threads);
  opt.shard_tokens = *shard_tokens;

  const bool show = args.Has("progress") || isatty(STDERR_FILENO);
  double last = -1;
  const auto progress = [&](const data::PrepProgress& p) {
    if (!show || (p.seconds - last < 1.0 && p.file_bytes < p.total_file_bytes)) return;
    last = p.seconds;
    const double s = p.seconds > 0 ? p.seconds : 1e-9;
    const double done = p.total_file_bytes ? double(p.file_bytes) / double(p.total_file_bytes) : 1;
    const double eta = done > 0 ? p.seconds * (1 - done) / done : 0;
    std::fprintf(stderr,
                 "prep: %5.1f%% | %lld docs (%.0f docs/s) | %.1f MB in (%.1f MB/s) | %lld tokens "
                 "(%.0f tokens/s) | ETA %.0f s%s",
                 100 * done, (long long)p.documents, p.documents / s, p.text_bytes / 1e6,
                 p.text_bytes / 1e6 / s, (long long)p.tokens, p.tokens / s, eta,
                 isatty(STDERR_FILENO) ? "\r" : "\n");
    std::fflush(stderr);
  };
  absl::StatusOr<data::PrepStats> stats = data::Prep(opt, progress);
  if (show && isatty(STDERR_FILENO)) std::fprintf(stderr, "\n");
  if (!stats.ok()) return Fail("prep", std::string(stats.status().message()));
  std::printf("prep: %s tokenizer, vocabulary %lld (%s token ids), %d thread(s)\n",
              stats->tokenizer_kind.c_str(), (long long)stats->vocab_size,
              stats->vocab_size > 65536 ? "uint32" : "uint16", stats->threads);
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
