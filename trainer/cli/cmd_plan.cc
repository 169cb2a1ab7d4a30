// qat plan: per-layer formats of the block linears under an EAR target, a task-score target or
// an average bit budget (ptq/plan.h), written as a recipe fragment.
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "kernels/safetensors.h"
#include "ptq/plan.h"
#include "trainer/cli/commands.h"
#include "trainer/cli/flags.h"
#include "trainer/placement.h"
#include "trainer/tasks.h"
#include "trainer/train.h"

namespace qat::cli {

int PlanMain(int argc, char** argv) {
  constexpr char kUsage[] =
      "qat plan --teacher RUN_CKPT_OR_HF_DIR --calib train.bin [--calib ...] "
      "(--target-ear 0.99 | --avg-bits 3.5 | --target-task T.jsonl [--task-metric acc|acc_norm] "
      "[--task-tolerance D]) --candidates int2-g64-asym,int4-g128-asym,... "
      "--out plan.yaml [--calib-windows 64] [--seq-len T]\n"
      "Chooses a format per block linear (model.layers.N.{self_attn.{q,k,v,o}_proj,"
      "mlp.{gate,up,down}_proj}): the fewest storage bits (as qat export stores them) whose EAR "
      "against the full-precision teacher meets --target-ear, or whose zero-shot score on the "
      "multiple-choice file --target-task (trainer/tasks.h, as qat eval --tasks scores it, with "
      "the teacher's tokenizer) is at least the teacher's minus --task-tolerance (0: "
      "\"task-lossless\"; on a small file the score is noisy, and e.g. one standard error, "
      "printed with the teacher's score, is a sensible tolerance), or the best EAR within "
      "--avg-bits bits per weight. Each layer's EAR and KL with it alone quantized (round to "
      "nearest) on the calibration windows drive a greedy allocation, which is then measured as "
      "a whole (with --target-task also scored on the file) and refined. The output is a recipe "
      "fragment (quant: method none + one override per layer) for `base:` in a qat train / qat "
      "quantize recipe. Details: ptq/plan.h.\n"
      "Candidates: METHOD-GRANULARITY[-sym|-asym], METHOD int2|int3|int4|int8|ternary|binary, "
      "GRANULARITY tensor|channel|g32|g64|g128 (sym by default; asym for int only), or none "
      "(full precision). A candidate whose group does not divide a layer's input is skipped "
      "for that layer (noted); a layer no candidate fits is an error. Storage: int3 is stored "
      "as int4 and int8 as dense fp32 (32 bits) by qat export today.";
  Args args;
  int code = 0;
  if (!ParseCommand(
          argc, argv, "plan", kUsage,
          {{"teacher", true, false,
            "the full-precision model: checkpoint, run directory (newest) or Hugging Face dir"},
           {"calib", true, true, "calibration token shard (repeatable)"},
           {"calib-windows", true, false, "calibration windows, spread over the data (64)"},
           {"seq-len", true, false, "tokens per window (the teacher recipe's data.seq_len)"},
           {"target-ear", true, false, "EAR to meet against the teacher, e.g. 0.99"},
           {"avg-bits", true, false, "storage bits per block-linear weight to stay within"},
           {"target-task", true, false,
            "multiple-choice tasks, JSON Lines (trainer/tasks.h, e.g. "
            "recipes/tasks/fortunes-smoke.jsonl): the score to keep against the teacher's"},
           {"task-metric", true, false, "with --target-task: acc (default) or acc_norm"},
           {"task-tolerance", true, false,
            "with --target-task: the score may be this much below the teacher's (0)"},
           {"candidates", true, false, "comma-separated formats (see above)"},
           {"out", true, false, "the recipe fragment to write (YAML)"},
           {"batch-size", true, false, "windows per forward pass (8)"},
           {"refine-tries", true, false,
            "measured upgrades / downgrades tried per refinement step (8; 0: every layer)"},
           {"no-downgrade", false, false, "skip the measured downgrade pass"},
           {"calibration-rounds", true, false,
            "allocations measured to rescale the additive prediction (4; 0: refine from the "
            "cheapest allocation by measured upgrades only)"},
           {"ternary-format", true, false,
            "storage of ternary weights counted: ternary2 (default) or ternary3 (as qat export)"},
           {"device", true, false, "cpu (default), cuda or auto"},
           {"threads", true, false,
            "intra-op threads (default: OMP_NUM_THREADS, else the physical cores)"}},
          &args, &code)) {
    return code;
  }
  if (!args.positional().empty())
    return Fail("plan", "unexpected argument " + args.positional()[0]);
  for (const char* required : {"teacher", "calib", "candidates", "out"}) {
    if (!args.Has(required)) return Fail("plan", absl::StrCat("--", required, " is required"));
  }
  if (int(args.Has("target-ear")) + int(args.Has("avg-bits")) + int(args.Has("target-task")) != 1) {
    return Fail("plan", "give exactly one of --target-ear, --avg-bits and --target-task");
  }
  for (const char* flag : {"task-metric", "task-tolerance"}) {
    if (args.Has(flag) && !args.Has("target-task")) {
      return Fail("plan", absl::StrCat("--", flag, " applies to --target-task only"));
    }
  }
  absl::StatusOr<std::vector<ptq::PlanFormat>> candidates =
      ptq::ParsePlanCandidates(args.Get("candidates"));
  if (!candidates.ok()) return Fail("plan", std::string(candidates.status().message()));
  ptq::PlanOptions options;
  options.candidates = *candidates;
  absl::StatusOr<double> target = args.GetDouble("target-ear", 0.0);
  absl::StatusOr<double> avg_bits = args.GetDouble("avg-bits", 0.0);
  absl::StatusOr<int64_t> windows = args.GetInt("calib-windows", 64);
  absl::StatusOr<int64_t> seq_len = args.GetInt("seq-len", 0);
  absl::StatusOr<int64_t> batch = args.GetInt("batch-size", 8);
  absl::StatusOr<int64_t> tries = args.GetInt("refine-tries", 8);
  absl::StatusOr<int64_t> threads = args.GetInt("threads", 0);
  absl::StatusOr<int64_t> rounds = args.GetInt("calibration-rounds", 4);
  absl::StatusOr<double> tolerance = args.GetDouble("task-tolerance", 0.0);
  for (const absl::Status& s :
       {target.status(), avg_bits.status(), windows.status(), seq_len.status(), batch.status(),
        tries.status(), threads.status(), rounds.status(), tolerance.status()}) {
    if (!s.ok()) return Fail("plan", std::string(s.message()));
  }
  if (args.Has("target-ear") && !(*target > 0 && *target <= 1)) {
    return Fail("plan",
                absl::StrCat("--target-ear ", args.Get("target-ear"), " is out of range (0, 1]"));
  }
  if (args.Has("avg-bits") && !(*avg_bits > 0)) {
    return Fail("plan", absl::StrCat("--avg-bits ", args.Get("avg-bits"), " must be positive"));
  }
  const std::string metric = args.Get("task-metric", "acc");
  if (metric != "acc" && metric != "acc_norm") {
    return Fail("plan",
                absl::StrCat("--task-metric: expected acc or acc_norm, got '", metric, "'"));
  }
  if (!(*tolerance >= 0) || !std::isfinite(*tolerance)) {
    return Fail("plan", absl::StrCat("--task-tolerance ", args.Get("task-tolerance"),
                                     " must be a number >= 0"));
  }
  // The task file is read before the teacher is loaded, so that its errors come first.
  std::vector<trainer::TaskExample> task_examples;
  if (args.Has("target-task")) {
    absl::StatusOr<std::vector<trainer::TaskExample>> ex =
        trainer::ReadTaskFile(args.Get("target-task"));
    if (!ex.ok()) return Fail("plan", "--target-task: " + std::string(ex.status().message()));
    task_examples = *std::move(ex);
  }
  if (*tries < 0) return Fail("plan", "--refine-tries must not be negative");
  if (*rounds < 0) return Fail("plan", "--calibration-rounds must not be negative");
  options.calibration_rounds = *rounds;
  options.target_ear = *target;
  options.avg_bits = *avg_bits;
  options.batch_size = *batch;
  options.refine_tries = *tries;
  options.downgrade = !args.Has("no-downgrade");
  options.ternary_format = args.Get("ternary-format", "ternary2");
  options.progress = [](const std::string& line) {
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
  };
  trainer::SetProcessThreads(*threads);
  const std::string device_name = args.Get("device", "cpu");
  absl::StatusOr<torch::Device> device = trainer::ResolveDevice(device_name);
  if (!device.ok()) return Fail("plan", "--device: " + std::string(device.status().message()));

  absl::StatusOr<trainer::LoadedModel> teacher =
      trainer::LoadModelFromCheckpoint(args.Get("teacher"));
  if (!teacher.ok()) {
    return Fail("plan", "--teacher: " + std::string(teacher.status().message()));
  }
  teacher->model->to(*device, torch::kFloat32);
  // --target-task scores with the teacher's tokenizer (its recipe's data.tokenizer), as qat eval
  // --tasks does for a checkpoint.
  std::unique_ptr<data::Tokenizer> tokenizer;
  if (args.Has("target-task")) {
    absl::StatusOr<std::unique_ptr<data::Tokenizer>> tok =
        data::LoadTokenizer(teacher->recipe.data.tokenizer);
    if (!tok.ok()) {
      return Fail("plan",
                  "--target-task: the teacher's tokenizer: " + std::string(tok.status().message()));
    }
    tokenizer = *std::move(tok);
    ptq::PlanTaskTarget t;
    t.file = args.Get("target-task");
    t.examples = std::move(task_examples);
    t.tokenizer = tokenizer.get();
    t.metric = metric;
    t.tolerance = *tolerance;
    options.target_task = std::move(t);
  }
  const trainer::ModelConfig& c = teacher->recipe.model;
  const int64_t T = *seq_len > 0 ? *seq_len : std::min(teacher->recipe.data.seq_len, c.max_seq_len);
  if (T > c.max_seq_len) {
    return Fail("plan", absl::StrCat("--seq-len ", T, " exceeds the teacher's max_seq_len ",
                                     c.max_seq_len));
  }
  const std::vector<std::string> calib = args.GetAll("calib");
  absl::StatusOr<data::WindowSampler> sampler =
      data::WindowSampler::Open(calib, T, 0, c.vocab_size);
  if (!sampler.ok()) return Fail("plan", "--calib: " + std::string(sampler.status().message()));
  absl::StatusOr<torch::Tensor> inputs = ptq::CalibrationWindows(*sampler, *windows);
  if (!inputs.ok()) return Fail("plan", "--calib: " + std::string(inputs.status().message()));
  const int64_t max_token = inputs->max().item<int64_t>();
  if (max_token >= c.vocab_size) {
    return Fail("plan", absl::StrCat("--calib: token ", max_token,
                                     " is outside the teacher's vocabulary of ", c.vocab_size,
                                     " (shards of another tokenizer?)"));
  }
  const std::string target_text =
      options.target_task      ? absl::StrCat("target ", metric, " on ", options.target_task->file,
                                              " >= the teacher's - ", *tolerance)
      : options.target_ear > 0 ? absl::StrCat("target EAR ", options.target_ear)
                               : absl::StrCat("budget ", options.avg_bits, " bits/weight");
  std::printf(
      "plan: teacher %s (%lld layers), %lld calibration windows x %lld tokens, %zu "
      "candidates, %s\n",
      teacher->checkpoint.c_str(), (long long)c.num_layers, (long long)inputs->size(0),
      (long long)T, options.candidates.size(), target_text.c_str());
  absl::StatusOr<ptq::PlanResult> plan =
      ptq::PlanBits(teacher->model, inputs->to(*device), options);
  if (!plan.ok()) return Fail("plan", std::string(plan.status().message()));

  std::vector<std::string> spellings;
  for (const ptq::PlanFormat& f : plan->candidates) spellings.push_back(f.spelling);
  std::vector<std::string> header = {
      "qat plan: a format per block linear (ptq/plan.h). Use as `base:` of a recipe; the",
      "overrides set the format keys, the quant section's scale and activations apply to all.",
      absl::StrCat("teacher: ", teacher->checkpoint),
      absl::StrCat("calibration: ", plan->windows, " windows x ", plan->seq_len, " tokens of ",
                   absl::StrJoin(calib, ", ")),
      absl::StrCat("candidates: ", absl::StrJoin(spellings, ",")),
      plan->by_task
          ? absl::StrFormat("target task %s on %s (%d examples) >= the teacher's %.4f - %g: "
                            "measured %.4f; EAR measured %.5f (predicted %.5f)",
                            plan->task_metric, plan->task_file, plan->task_examples,
                            plan->teacher_task, plan->task_tolerance, plan->measured_task,
                            plan->measured_ear, plan->predicted_ear)
      : options.target_ear > 0
          ? absl::StrFormat("target EAR %g: measured %.5f (predicted %.5f)", options.target_ear,
                            plan->measured_ear, plan->predicted_ear)
          : absl::StrFormat("budget %g bits/weight: measured EAR %.5f "
                            "(predicted %.5f)",
                            options.avg_bits, plan->measured_ear, plan->predicted_ear),
      absl::StrFormat("storage: %.4f bits/weight of the block linears (%d bits, as qat export "
                      "stores them, %s)",
                      plan->BitsPerWeight(), plan->total_bits, options.ternary_format)};
  absl::Status s = kernels::WriteFileAtomic(args.Get("out"), ptq::PlanToYaml(*plan, header));
  if (!s.ok()) return Fail("plan", "--out: " + std::string(s.message()));
  std::printf("%s", ptq::PlanTable(*plan).c_str());
  std::printf("plan: wrote %s (use it as `base:` of a recipe for qat train or qat quantize)\n",
              args.Get("out").c_str());
  return 0;
}

}  // namespace qat::cli
