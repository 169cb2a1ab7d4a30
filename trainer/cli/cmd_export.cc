// qat export --ckpt PATH --out FILE [--format packed|gguf]
#include <cstdio>
#include <filesystem>

#include "data/tokens.h"
#include "kernels/gguf_export.h"
#include "kernels/safetensors.h"
#include "trainer/checkpoint.h"
#include "trainer/cli/commands.h"
#include "trainer/cli/flags.h"
#include "trainer/export.h"
#include "trainer/hf.h"

namespace qat::cli {
namespace {

// data.tokenizer of a checkpoint (its stored recipe) or of a Hugging Face directory.
absl::StatusOr<std::string> CheckpointTokenizer(const std::string& path) {
  if (trainer::IsHfModelDir(path)) {
    std::error_code ec;
    const bool has = std::filesystem::exists(path + "/tokenizer.json", ec) ||
                     std::filesystem::exists(path + "/tokenizer.model", ec);
    return has ? path : std::string();
  }
  absl::StatusOr<std::string> dir = trainer::ResolveCheckpoint(path);
  if (!dir.ok()) return dir.status();
  absl::StatusOr<std::string> text = kernels::ReadFile(*dir + "/recipe.yaml");
  if (!text.ok()) return text.status();
  absl::StatusOr<trainer::Recipe> recipe = trainer::ParseRecipeText(*text, *dir + "/recipe.yaml");
  if (!recipe.ok()) return recipe.status();
  return recipe->data.tokenizer;
}

}  // namespace

int ExportMain(int argc, char** argv) {
  constexpr char kUsage[] =
      "qat export --ckpt CHECKPOINT_RUN_OR_HF_DIR --out FILE_OR_DIR [--format packed|gguf|hf] "
      "[--hf-dtype bf16|fp16|fp32] "
      "[--ternary-format ternary2|ternary3] [--gguf-ternary tq2_0|tq1_0] "
      "[--gguf-dense f16|q8_0|f32]";
  Args args;
  int code = 0;
  if (!ParseCommand(argc, argv, "export", kUsage,
                    {{"ckpt", true, false, "checkpoint directory, or a run directory (newest)"},
                     {"out", true, false, "file to write"},
                     {"format", true, false,
                      "packed (qat runtime, default), gguf (llama.cpp) or hf (a Hugging Face "
                      "directory of dequantized weights, for transformers)"},
                     {"hf-dtype", true, false, "--format hf: bf16 (default), fp16 or fp32"},
                     {"ternary-format", true, false,
                      "packed storage of ternary/binary weights: ternary2 (default) or ternary3"},
                     {"gguf-ternary", true, false, "GGUF type of ternary tensors: tq2_0 or tq1_0"},
                     {"gguf-dense", true, false, "GGUF type of the full-precision matrices (embeddings, output, f32 linears, fallbacks): f16, q8_0 or f32"}},
                    &args, &code)) {
    return code;
  }
  if (!args.Has("ckpt") || !args.Has("out")) return Fail("export", "--ckpt and --out are required");
  if (!args.positional().empty()) return Fail("export", "unexpected argument " + args.positional()[0]);
  const std::string format = args.Get("format", "packed");
  if (format != "packed" && format != "gguf" && format != "hf") {
    return Fail("export", "--format: expected packed, gguf or hf, got '" + format + "'");
  }
  if (format == "hf") {
    absl::StatusOr<trainer::LoadedModel> loaded = trainer::LoadModelFromCheckpoint(args.Get("ckpt"));
    if (!loaded.ok()) return Fail("export", std::string(loaded.status().message()));
    trainer::HfExportOptions hf;
    hf.dtype = args.Get("hf-dtype", "bf16");
    hf.tokenizer = loaded->recipe.data.tokenizer;
    absl::StatusOr<trainer::HfExportReport> r =
        trainer::ExportHf(loaded->model, args.Get("out"), hf);
    if (!r.ok()) return Fail("export", std::string(r.status().message()));
    std::printf("export: %s -> %s (Hugging Face, %s): %lld tensors, model.safetensors %.2f MB, "
                "%zu tokenizer file(s) copied\n",
                loaded->checkpoint.c_str(), args.Get("out").c_str(), hf.dtype.c_str(),
                (long long)r->tensors, r->weights_bytes / 1e6, r->copied.size());
    if (!r->note.empty()) std::printf("export: note: %s\n", r->note.c_str());
    return 0;
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
  trainer::ExportOptions options;
  options.ternary_format = args.Get("ternary-format", "ternary2");
  if (options.ternary_format != "ternary2" && options.ternary_format != "ternary3") {
    return Fail("export", "--ternary-format: expected ternary2 or ternary3, got '" +
                              options.ternary_format + "'");
  }
  absl::StatusOr<trainer::ExportReport> r =
      trainer::ExportPacked(args.Get("ckpt"), packed_path, options);
  if (!r.ok()) return Fail("export", std::string(r.status().message()));
  if (format == "packed") {
    std::string linears;
    for (const auto& [storage, count] : r->linears_by_format) {
      linears += (linears.empty() ? "" : " + ") + std::to_string(count) + " " + storage;
    }
    std::printf("export: %s -> %s: linears %s (%lld weights packed), %lld fp32 tensors, %.2f MB "
                "(fp32 model: %.2f MB)\n",
                r->checkpoint.c_str(), out.c_str(), linears.c_str(), (long long)r->packed_weights,
                (long long)r->dense_tensors, r->file_bytes / 1e6, r->fp32_bytes / 1e6);
    std::printf("export: block linears: %lld bits for %lld weights = %.4f bits/weight "
                "(packed codes + fp32 scales and zero points as written)",
                (long long)r->linear_bits, (long long)r->linear_weights, r->LinearBitsPerWeight());
    if (r->quantized_linear_weights != r->linear_weights) {
      std::printf("; the quantized ones: %lld bits for %lld weights = %.4f bits/weight",
                  (long long)r->quantized_linear_bits, (long long)r->quantized_linear_weights,
                  r->QuantizedBitsPerWeight());
    }
    std::printf("\n");
    if (r->dense_quantized > 0) {
      std::printf("export: %lld int8-quantized linears stored as their dequantized fp32 values "
                  "(there is no packed 8-bit weight format)\n",
                  (long long)r->dense_quantized);
    }
    return 0;
  }
  // GGUF carries the vocabulary: the model's own tokenizer when it has one (byte: built in).
  absl::StatusOr<std::string> tokenizer_path = CheckpointTokenizer(args.Get("ckpt"));
  absl::StatusOr<std::unique_ptr<data::Tokenizer>> tokenizer =
      tokenizer_path.ok() ? data::LoadTokenizer(*tokenizer_path)
                          : absl::StatusOr<std::unique_ptr<data::Tokenizer>>(tokenizer_path.status());
  if (!tokenizer.ok()) {
    std::error_code ec;
    std::filesystem::remove(packed_path, ec);
    return Fail("export", std::string(tokenizer.status().message()));
  }
  gguf.tokenizer = (*tokenizer)->ToGguf();
  // general.name: the output's name ("s" for s.gguf), not that of the temporary packed file.
  gguf.name = std::filesystem::path(out).stem().string();
  absl::StatusOr<kernels::GgufExportReport> g = kernels::ConvertPackedToGguf(packed_path, out, gguf);
  std::error_code ec;
  std::filesystem::remove(packed_path, ec);
  if (!g.ok()) return Fail("export", std::string(g.status().message()));
  std::printf("export: %s -> %s (GGUF v3)\n%s", r->checkpoint.c_str(), out.c_str(),
              kernels::FormatGgufExportReport(*g).c_str());
  return 0;
}

}  // namespace qat::cli
