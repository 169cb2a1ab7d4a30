// qat prep: text files -> token shards.
#include <cstdio>

#include "data/tokens.h"
#include "trainer/cli/commands.h"
#include "trainer/cli/flags.h"

namespace qat::cli {

int PrepMain(int argc, char** argv) {
  constexpr char kUsage[] =
      "qat prep --out DIR [--tokenizer PATH] [--val-fraction F] [--fortune] [--seed N] FILE...";
  Args args;
  int code = 0;
  if (!ParseCommand(argc, argv, "prep", kUsage,
                    {{"out", true, false, "output directory (train.bin, val.bin)"},
                     {"val-fraction", true, false, "share of documents held out (default 0.05)"},
                     {"fortune", false, false, "documents are separated by lines holding '%'"},
                     {"seed", true, false, "seed of the train/val split (default 0)"},
                     {"tokenizer", true, false,
                      "tokenizer.json (byte-level BPE), tokenizer.model (SentencePiece) or a "
                      "model directory holding one (default: bytes)"}},
                    &args, &code)) {
    return code;
  }
  data::PrepOptions opt;
  opt.inputs = args.positional();
  opt.out_dir = args.Get("out");
  opt.fortune_format = args.Has("fortune");
  opt.tokenizer = args.Get("tokenizer");
  absl::StatusOr<double> frac = args.GetDouble("val-fraction", 0.05);
  absl::StatusOr<int64_t> seed = args.GetInt("seed", 0);
  if (!frac.ok()) return Fail("prep", std::string(frac.status().message()));
  if (!seed.ok()) return Fail("prep", std::string(seed.status().message()));
  if (opt.out_dir.empty()) return Fail("prep", "--out DIR is required");
  if (opt.inputs.empty()) return Fail("prep", "no input files given");
  if (*frac < 0 || *frac >= 1) return Fail("prep", "--val-fraction must be in [0, 1)");
  opt.val_fraction = *frac;
  opt.seed = static_cast<uint64_t>(*seed);
  absl::StatusOr<data::PrepStats> stats = data::Prep(opt);
  if (!stats.ok()) return Fail("prep", std::string(stats.status().message()));
  std::printf("prep: %s tokenizer, vocabulary %lld (%s token ids)\n", stats->tokenizer_kind.c_str(),
              (long long)stats->vocab_size, stats->vocab_size > 65536 ? "uint32" : "uint16");
  std::printf("prep: %lld documents -> %s/train.bin (%lld documents, %lld tokens), %s/val.bin "
              "(%lld documents, %lld tokens)\n",
              (long long)stats->documents, opt.out_dir.c_str(), (long long)stats->train_documents,
              (long long)stats->train_tokens, opt.out_dir.c_str(), (long long)stats->val_documents,
              (long long)stats->val_tokens);
  if (!stats->warning.empty()) std::fprintf(stderr, "prep: warning: %s\n", stats->warning.c_str());
  return 0;
}

}  // namespace qat::cli
