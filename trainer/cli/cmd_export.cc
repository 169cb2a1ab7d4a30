// qat export --ckpt PATH --out FILE [--format packed|gguf]
#include <cstdio>
#include <filesystem>

#include "kernels/gguf_export.h"
#include "trainer/cli/commands.h"
#include "trainer/cli/flags.h"
#include "trainer/export.h"

namespace qat::cli {

int ExportMain(int argc, char** argv) {
  constexpr char kUsage[] =
      "qat export --ckpt CHECKPOINT_OR_RUN_DIR --out FILE [--format packed|gguf] "
      "[--gguf-ternary tq2_0|tq1_0] [--gguf-dense f16|q8_0|f32]";
  Args args;
  int code = 0;
  if (!ParseCommand(argc, argv, "export", kUsage,
                    {{"ckpt", true, false, "checkpoint directory, or a run directory (newest)"},
                     {"out", true, false, "file to write"},
                     {"format", true, false, "packed (qat runtime, default) or gguf (llama.cpp)"},
                     {"gguf-ternary", true, false, "GGUF type of ternary tensors: tq2_0 or tq1_0"},
                     {"gguf-dense", true, false, "GGUF type of other matrices: f16, q8_0 or f32"}},
                    &args, &code)) {
    return code;
  }
  if (!args.Has("ckpt") || !args.Has("out")) return Fail("export", "--ckpt and --out are required");
  if (!args.positional().empty()) return Fail("export", "unexpected argument " + args.positional()[0]);
  const std::string format = args.Get("format", "packed");
  if (format != "packed" && format != "gguf") {
    return Fail("export", "--format: expected packed or gguf, got '" + format + "'");
  }
  kernels::GgufExportOptions gguf;
  const std::string ternary = args.Get("gguf-ternary", "tq2_0"), dense = args.Get("gguf-dense", "f16");
  if (ternary == "tq2_0") {
    gguf.ternary_type = kernels::GgmlType::kTQ2_0;
  } else if (ternary == "tq1_0") {
    gguf.ternary_type = kernels::GgmlType::kTQ1_0;
  } else {
    return Fail("export", "--gguf-ternary: expected tq2_0 or tq1_0, got '" + ternary + "'");
  }
  if (dense == "f16") {
    gguf.dense_type = kernels::GgmlType::kF16;
  } else if (dense == "q8_0") {
    gguf.dense_type = kernels::GgmlType::kQ8_0;
  } else if (dense == "f32") {
    gguf.dense_type = kernels::GgmlType::kF32;
  } else {
    return Fail("export", "--gguf-dense: expected f16, q8_0 or f32, got '" + dense + "'");
  }

  const std::string out = args.Get("out");
  // GGUF is converted from the packed export, which holds exactly the trained trits and scales.
  const std::string packed_path = format == "packed" ? out : out + ".packed.tmp";
  absl::StatusOr<trainer::ExportReport> r = trainer::ExportPacked(args.Get("ckpt"), packed_path);
  if (!r.ok()) return Fail("export", std::string(r.status().message()));
  if (format == "packed") {
    std::printf("export: %s -> %s: %lld packed ternary tensors (%lld weights at 2 bits), %lld fp32 "
                "tensors, %.2f MB (fp32 model: %.2f MB)\n",
                r->checkpoint.c_str(), out.c_str(), (long long)r->packed_tensors,
                (long long)r->packed_weights, (long long)r->dense_tensors, r->file_bytes / 1e6,
                r->fp32_bytes / 1e6);
    return 0;
  }
  absl::StatusOr<kernels::GgufExportReport> g = kernels::ConvertPackedToGguf(packed_path, out, gguf);
  std::error_code ec;
  std::filesystem::remove(packed_path, ec);
  if (!g.ok()) return Fail("export", std::string(g.status().message()));
  std::printf("export: %s -> %s (GGUF v3)\n%s", r->checkpoint.c_str(), out.c_str(),
              kernels::FormatGgufExportReport(*g).c_str());
  return 0;
}

}  // namespace qat::cli
