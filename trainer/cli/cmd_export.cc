// qat export --ckpt PATH --out FILE
#include <cstdio>

#include "trainer/cli/commands.h"
#include "trainer/cli/flags.h"
#include "trainer/export.h"

namespace qat::cli {

int ExportMain(int argc, char** argv) {
  constexpr char kUsage[] = "qat export --ckpt CHECKPOINT_OR_RUN_DIR --out MODEL.safetensors";
  Args args;
  int code = 0;
  if (!ParseCommand(argc, argv, "export", kUsage,
                    {{"ckpt", true, false, "checkpoint directory, or a run directory (newest)"},
                     {"out", true, false, "packed model file to write"}},
                    &args, &code)) {
    return code;
  }
  if (!args.Has("ckpt") || !args.Has("out")) return Fail("export", "--ckpt and --out are required");
  if (!args.positional().empty()) return Fail("export", "unexpected argument " + args.positional()[0]);
  absl::StatusOr<trainer::ExportReport> r = trainer::ExportPacked(args.Get("ckpt"), args.Get("out"));
  if (!r.ok()) return Fail("export", std::string(r.status().message()));
  std::printf("export: %s -> %s: %lld packed ternary tensors (%lld weights at 2 bits), %lld fp32 "
              "tensors, %.2f MB (fp32 model: %.2f MB)\n",
              r->checkpoint.c_str(), args.Get("out").c_str(), (long long)r->packed_tensors,
              (long long)r->packed_weights, (long long)r->dense_tensors, r->file_bytes / 1e6,
              r->fp32_bytes / 1e6);
  return 0;
}

}  // namespace qat::cli
