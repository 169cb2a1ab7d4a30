// qat quantize: post-training quantization of a checkpoint or a Hugging Face model into a
// checkpoint (ptq/ptq.h).
#include <torch/torch.h>

#include <cstdio>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "data/tokens.h"
#include "ptq/ptq.h"
#include "trainer/checkpoint.h"
#include "trainer/cli/commands.h"
#include "trainer/cli/flags.h"
#include "trainer/hf.h"
#include "trainer/hf_config.h"
#include "trainer/placement.h"
#include "trainer/train.h"

namespace qat::cli {
namespace {

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The latent weights of a loaded model (its stored quantizer scales left out: the new quantizers
// get theirs from the weights).
trainer::TensorMap LatentWeights(trainer::CausalLM& model) {
  trainer::TensorMap out;
  for (const auto& [name, t] : trainer::ParameterMap(*model)) {
    if (!EndsWith(name, ".weight_scale")) out[name] = t;
  }
  return out;
}

// N windows of seq_len + 1 tokens from the shards, drawn deterministically from `seed`.
absl::StatusOr<torch::Tensor> CalibrationWindows(const std::vector<std::string>& shards,
                                                 int64_t windows, int64_t seq_len, uint64_t seed,
                                                 int64_t vocab_size) {
  absl::StatusOr<data::WindowSampler> sampler =
      data::WindowSampler::Open(shards, seq_len, seed, vocab_size);
  if (!sampler.ok()) return sampler.status();
  std::vector<int32_t> ids(static_cast<size_t>(windows * (seq_len + 1)));
  sampler->Fill(/*step=*/0, /*first=*/0, windows, ids.data());
  return torch::from_blob(ids.data(), {windows, seq_len + 1}, torch::kInt32).to(torch::kInt64);
}

}  // namespace

int QuantizeMain(int argc, char** argv) {
  constexpr char kUsage[] =
      "qat quantize --from CHECKPOINT_RUN_OR_HF_DIR --quant RECIPE.yaml --out RUN_DIR "
      "[--method gptq|rtn] [--calib SHARD]... [--smooth MU] [--set quant.KEY=VALUE]...";
  Args args;
  int code = 0;
  if (!ParseCommand(
          argc, argv, "quantize", kUsage,
          {{"from", true, false,
            "the full-precision model: a checkpoint, a run directory (newest checkpoint) or a "
            "Hugging Face directory"},
           {"quant", true, false,
            "a recipe (or a fragment, e.g. the output of qat plan) whose quant: section is used, "
            "overrides included"},
           {"set", true, true, "override a quant key of --quant, e.g. --set quant.bits=3"},
           {"out", true, false, "run directory to write the checkpoint into"},
           {"method", true, false, "gptq (default) or rtn (round to nearest)"},
           {"calib", true, true, "calibration token shard(s) (required by gptq)"},
           {"calib-windows", true, false, "calibration windows (default 128)"},
           {"seq-len", true, false, "tokens per window (default: the model's data.seq_len)"},
           {"seed", true, false, "seed of the window draw (default 1234)"},
           {"smooth", true, false,
            "gptq: weight mu of the input-gradient response term (ptq/ptq.h; default 0 = plain "
            "gptq)"},
           {"damp", true, false, "gptq: damping, a fraction of mean(diag H) (default 0.01)"},
           {"act-order", false, false, "gptq: columns by decreasing activation (static groups)"},
           {"block-size", true, false, "gptq: columns per lazy update (default 128)"},
           {"batch", true, false, "calibration sequences per forward pass (default 8)"},
           {"threads", true, false,
            "intra-op threads (default: OMP_NUM_THREADS, else the physical cores)"}},
          &args, &code)) {
    return code;
  }
  auto fail = [](const absl::Status& s) { return Fail("quantize", std::string(s.message())); };
  if (!args.Has("from") || !args.Has("quant") || !args.Has("out")) {
    return Fail("quantize", "--from, --quant and --out are required");
  }
  if (!args.positional().empty()) {
    return Fail("quantize", "unexpected argument " + args.positional()[0]);
  }
  ptq::PtqOptions options;
  options.method = args.Get("method", "gptq");
  if (options.method != "gptq" && options.method != "rtn") {
    return Fail("quantize", "--method: expected gptq or rtn, got '" + options.method + "'");
  }
  absl::StatusOr<double> smooth = args.GetDouble("smooth", 0.0);
  absl::StatusOr<double> damp = args.GetDouble("damp", 0.01);
  absl::StatusOr<int64_t> windows = args.GetInt("calib-windows", 128);
  absl::StatusOr<int64_t> block = args.GetInt("block-size", 128);
  absl::StatusOr<int64_t> batch = args.GetInt("batch", 8);
  absl::StatusOr<int64_t> seed = args.GetInt("seed", 1234);
  absl::StatusOr<int64_t> threads = args.GetInt("threads", 0);
  for (const absl::Status& s : {smooth.status(), damp.status(), windows.status(), block.status(),
                                batch.status(), seed.status(), threads.status()}) {
    if (!s.ok()) return fail(s);
  }
  if (*smooth < 0) return Fail("quantize", "--smooth must be >= 0");
  if (*damp <= 0) return Fail("quantize", "--damp must be > 0");
  if (*windows < 1 || *block < 1 || *batch < 1) {
    return Fail("quantize", "--calib-windows, --block-size and --batch must be >= 1");
  }
  if (*smooth > 0 && options.method != "gptq") {
    return Fail("quantize", "--smooth is an option of --method gptq");
  }
  if (options.method == "gptq" && args.GetAll("calib").empty()) {
    return Fail("quantize", "--method gptq needs calibration data: give --calib SHARD");
  }
  trainer::SetProcessThreads(*threads);
  options.smooth = *smooth;
  options.gptq.damp = *damp;
  options.gptq.act_order = args.Has("act-order");
  options.gptq.block_size = *block;
  options.batch_size = *batch;
  options.log = [](const std::string& line) {
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
  };

  // The source model and its recipe.
  const std::string from = args.Get("from");
  absl::StatusOr<trainer::LoadedModel> source = trainer::IsHfModelDir(from)
                                                    ? trainer::LoadHfModel(from)
                                                    : trainer::LoadModelFromCheckpoint(from);
  if (!source.ok()) return fail(source.status());
  // The quantizers.
  std::vector<std::string> sets = args.GetAll("set");
  for (const std::string& s : sets) {
    if (s.rfind("quant.", 0) != 0) {
      return Fail("quantize", "--set " + s + ": only quant.* keys can be set here");
    }
  }
  absl::StatusOr<trainer::Recipe> quant_recipe = trainer::LoadRecipe(args.Get("quant"), sets);
  if (!quant_recipe.ok()) return fail(quant_recipe.status());
  if (quant_recipe->quant.method == "none" && quant_recipe->quant.overrides.empty()) {
    return Fail("quantize", args.Get("quant") + ": quant.method is none: nothing to quantize");
  }
  trainer::Recipe recipe = source->recipe;
  recipe.quant = ptq::WithStoredScales(quant_recipe->quant);
  recipe.run.dir = args.Get("out");
  recipe.model.init_from.clear();
  recipe.model.from_hf.clear();
  absl::StatusOr<trainer::CausalLM> model = trainer::BuildModel(recipe.model, recipe.quant);
  if (!model.ok()) return fail(model.status());
  trainer::TensorMap weights = LatentWeights(source->model);
  trainer::AddInitialQuantizerScales(*model, &weights);
  absl::Status loaded = trainer::LoadParameters(**model, weights, source->checkpoint);
  if (!loaded.ok()) return fail(loaded);
  (*model)->to(torch::kCPU, torch::kFloat32);

  torch::Tensor calibration;
  if (!args.GetAll("calib").empty()) {
    absl::StatusOr<int64_t> seq_len = args.GetInt("seq-len", recipe.data.seq_len);
    if (!seq_len.ok()) return fail(seq_len.status());
    if (*seq_len < 1 || *seq_len > recipe.model.max_seq_len) {
      return Fail("quantize", absl::StrCat("--seq-len ", *seq_len, " is outside 1..",
                                           recipe.model.max_seq_len, " (model.max_seq_len)"));
    }
    absl::StatusOr<torch::Tensor> c =
        CalibrationWindows(args.GetAll("calib"), *windows, *seq_len, static_cast<uint64_t>(*seed),
                           recipe.model.vocab_size);
    if (!c.ok()) return fail(c.status());
    calibration = *c;
  }
  trainer::CausalLM full_precision{nullptr};
  if (options.smooth > 0) {
    trainer::QuantConfig none;
    none.method = "none";
    absl::StatusOr<trainer::CausalLM> fp = trainer::BuildModel(recipe.model, none);
    if (!fp.ok()) return fail(fp.status());
    full_precision = *fp;
    absl::Status s =
        trainer::LoadParameters(*full_precision, LatentWeights(source->model), source->checkpoint);
    if (!s.ok()) return fail(s);
    full_precision->to(torch::kCPU, torch::kFloat32);
  }
  std::printf("quantize: %s -> %s, %s%s, quantizer %s\n", source->checkpoint.c_str(),
              recipe.run.dir.c_str(), options.method.c_str(),
              options.smooth > 0 ? absl::StrCat(" (smooth ", options.smooth, ")").c_str() : "",
              quant_recipe->quant.method.c_str());
  absl::StatusOr<ptq::PtqReport> report =
      ptq::QuantizeModel(*model, full_precision ? &full_precision : nullptr, calibration, options);
  if (!report.ok()) return fail(report.status());
  if (options.method == "gptq") {
    std::printf("%-44s %-28s %12s %12s %8s\n", "layer", "quantizer", "rtn error", "error", "ratio");
    for (const ptq::LayerReport& l : report->layers) {
      if (l.rtn_error <= 0) continue;
      std::printf("%-44s %-28s %12.4e %12.4e %8.3f\n", l.name.c_str(), l.quantizer.c_str(),
                  l.rtn_error, l.error, l.error / l.rtn_error);
    }
  }
  trainer::CheckpointState state;
  state.step = 0;
  state.recipe_yaml = trainer::RecipeToYaml(recipe);
  state.model = trainer::ParameterMap(**model);
  absl::StatusOr<std::string> dir = trainer::SaveCheckpoint(recipe.run.dir, state, /*keep_last=*/1);
  if (!dir.ok()) return fail(dir.status());
  std::printf("quantize: wrote %s (%zu tensors, %.1f s)\n", dir->c_str(), state.model.size(),
              report->seconds);
  return 0;
}

}  // namespace qat::cli
