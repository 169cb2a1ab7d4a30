// `qat plan`: per-layer bit allocation of the block linears under a target (SLQ-style: the
// formats that meet an EAR target, or keep a zero-shot task score (--target-task, below), at the
// fewest storage bits, or the best EAR under an average bit budget). MISSION.md: EAR = mean over
// positions of sum_v min(p_v, q_v), p the teacher.
//
// Candidate formats are spelled METHOD-GRANULARITY[-sym|-asym]:
//   METHOD       int2 | int3 | int4 | int8 | ternary | binary   (quant.method / quant.bits)
//   GRANULARITY  tensor | channel | g32 | g64 | g128             (quant.granularity, group_size)
//   sym | asym   int only (quant.symmetric); default sym. Ternary and binary are symmetric.
// or `none` (the layer stays full precision). E.g. int2-g64-asym, int4-g128-asym, int8-channel,
// ternary-channel. Every candidate is the statistic quantizer (quant.scale none: round to
// nearest with scales from the weights). A candidate whose group size does not divide a layer's
// input size is skipped for that layer (with a note); a layer that no candidate fits is an error.
//
// Storage bits are those `qat export` writes (trainer/export.h; ExportReport::linear_bits
// reports the same count): packed codes + fp32 scale (and zero point) tensors, biases excluded:
//   ternary / binary per tensor or channel -> ternary2: rows * ceil(cols/128) * 32 bytes (ternary3:
//       rows * ceil(cols/160) * 32) + 4 bytes per scale (1 or rows)
//   ternary / binary per group, int2       -> int2: rows * ceil(cols/64) * 16 bytes
//   int3, int4                             -> int4: rows * ceil(cols/32) * 16 bytes (int3 costs
//                                              what int4 does: there is no packed 3-bit format)
//       + 8 bytes (fp32 scale + zero) per group of the row; per tensor / channel: groups of 128
//   int8, none                             -> dense fp32: 32 bits per weight (no packed 8-bit
//                                              format), so int8 never saves storage today.
//
// The algorithm:
//   1. Sensitivity: for every block linear L and candidate c, the EAR and KL(teacher || model) of
//      the teacher with only L fake-quantized to c, on the calibration windows. The teacher's
//      logits are computed once; each measurement runs the model from L's block on
//      (the hidden states at each block's input are cached), so earlier blocks are not recomputed.
//   2. Prediction: losses d(L, c) = 1 - EAR(L, c) are treated as additive: predicted EAR of an
//      allocation = 1 - sum_L d(L, c_L).
//   3. Allocation (greedy on the predictions, a multiple-choice knapsack): every layer starts at
//      its cheapest candidate; the upgrade with the largest predicted loss reduction per added
//      bit is applied until the predicted loss is within the budget, then the downgrades that
//      keep it within, most bits saved first. --avg-bits: upgrades while they fit in
//      avg_bits * (block-linear weights) bits; that allocation is measured and returned.
//   4. --target-ear: first the EAR with every layer at its individually most accurate candidate
//      is measured; a target above it is an error that names it (the best EAR reachable with
//      these candidates). Then calibration rounds, because the losses are not additive (large
//      ones overlap, small ones compound): the allocation for the loss budget 1 - target is
//      measured, and the next round's budget is divided by (measured loss / predicted loss) of
//      the last one (calibration_rounds, 4 by default, or until an allocation repeats); the
//      cheapest measured allocation that meets the target is kept (else the closest one).
//   5. Joint refinement: while the measured EAR misses the target, the `refine_tries` most
//      promising upgrades (one per layer, ranked by predicted gain per bit) are each measured and
//      the one with the best measured EAR gain per added bit is kept. Then (downgrade = true) up
//      to `refine_tries` downgrades, cheapest predicted loss per saved bit first, are measured
//      and kept while the measured EAR still meets the target.
//
// --target-task FILE.jsonl (SLQ's "task-lossless" target): the allocation's zero-shot score on
// the multiple-choice file (trainer/tasks.h; acc or acc_norm, --task-metric), measured with the
// fake-quantized model, must be at least the teacher's score on the same file minus
// --task-tolerance D (default 0: no example may be lost on balance). The file is scored once
// with the teacher first (its errors come before the search). Sensitivities, predictions and the
// greedy allocation stay EAR-based (a task score of one layer alone is too coarse to rank
// candidates by); only the acceptance test changes: every measured allocation is scored on the
// file as well as on the calibration windows, and the target check of step 4 (best reachable),
// of the calibration rounds and of the refinement (5) is "task score >= teacher's - D". As the
// target says nothing about the EAR needed, the calibration rounds bisect the predicted loss
// budget (geometrically, between the most accurate and the cheapest allocation's predicted
// losses) instead of rescaling it: a budget whose allocation meets the target moves the search
// to larger budgets, one that misses to smaller ones. A measured upgrade is ranked by its task
// gain per added bit, ties (a small file often gains nothing from one layer) by its EAR gain
// per bit. On a small file the score is noisy (one example of 14 is 0.07 of acc): the standard
// error the teacher's score is printed with is a sensible D when "not worse than the teacher
// within noise" is meant. The noise cuts both ways: a heavily quantized model can match the
// teacher by chance (on the 14 examples of recipes/tasks/fortunes-smoke.jsonl, an allocation of
// 2.1 bits/weight at EAR 0.72 outscores the demo teacher), so the target wants a file of
// hundreds of examples, and the EAR reported beside the score is worth a look.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <torch/types.h>

#include "absl/status/statusor.h"
#include "data/tokens.h"
#include "trainer/model.h"
#include "trainer/recipe.h"
#include "trainer/tasks.h"

namespace qat::ptq {

// One candidate format (see the spelling above).
struct PlanFormat {
  std::string spelling;  // canonical, e.g. "int4-g128-asym", "ternary-channel", "none"
  bool keep = false;     // "none": the layer stays full precision
  // method, bits, symmetric, granularity, group_size (the rest of the keys at their defaults).
  trainer::QuantConfig quant;
};

// Errors name the flag "--candidates" and the spelling.
absl::StatusOr<PlanFormat> ParsePlanFormat(const std::string& spelling);
// A comma-separated list; duplicates are an error.
absl::StatusOr<std::vector<PlanFormat>> ParsePlanCandidates(const std::string& list);

// The bits `qat export` writes for a linear weight [rows, cols] in `format` (see above);
// ternary_format: ternary2 or ternary3 (the export's option). -1 when the format does not fit.
int64_t PlanStorageBits(const PlanFormat& format, int64_t rows, int64_t cols,
                        const std::string& ternary_format = "ternary2");

// --target-task: the allocation's score on `examples` must be >= the teacher's - tolerance.
struct PlanTaskTarget {
  std::string file;  // names the target in messages and the summary
  std::vector<trainer::TaskExample> examples;
  const data::Tokenizer* tokenizer = nullptr;  // the teacher's (not owned)
  std::string metric = "acc";                  // acc | acc_norm (trainer::TaskAccuracy)
  double tolerance = 0.0;                      // D >= 0, in units of the metric
};

struct PlanOptions {
  std::vector<PlanFormat> candidates;
  // Exactly one target: target_ear (in (0, 1]), avg_bits (> 0) or target_task.
  double target_ear = 0.0;
  double avg_bits = 0.0;
  std::optional<PlanTaskTarget> target_task;
  int64_t batch_size = 8;    // windows per forward pass
  int64_t refine_tries = 8;  // measured tries per refinement step (0: every layer)
  // Calibration rounds of --target-ear (step 4); 0: the measured refinement starts from the
  // cheapest allocation.
  int64_t calibration_rounds = 4;
  bool downgrade = true;  // try measured downgrades once the target is met
  std::string ternary_format = "ternary2";
  // Progress lines (without a newline); unset: silent.
  std::function<void(const std::string&)> progress;
};

// One candidate on one layer, measured with only that layer quantized.
struct CandidateScore {
  bool fits = false;  // false: skipped (its group size does not divide the input size)
  double ear = 0.0, kl = 0.0;
  int64_t bits = 0;  // storage bits of the layer in this format
};

struct LayerPlan {
  std::string name;  // e.g. "model.layers.0.mlp.down_proj.weight"
  int64_t rows = 0, cols = 0;
  std::vector<CandidateScore> scores;  // one per candidate, in PlanResult::candidates order
  int chosen = -1;                     // index into candidates
};

struct PlanResult {
  std::vector<PlanFormat> candidates;
  std::vector<LayerPlan> layers;   // every block linear, in model order
  std::vector<std::string> notes;  // candidates skipped, etc.
  int64_t windows = 0, seq_len = 0;
  double target_ear = 0.0, avg_bits = 0.0;  // the request
  double best_ear = 0.0;                    // measured, every layer at its most accurate candidate
  double predicted_ear = 0.0;               // 1 - sum of the chosen losses
  double measured_ear = 0.0, measured_kl = 0.0;  // of the whole allocation
  // --target-task only: the metric's score on the file.
  bool by_task = false;
  std::string task_file, task_metric;
  int64_t task_examples = 0;
  double task_tolerance = 0.0;
  double teacher_task = 0.0, teacher_task_stderr = 0.0;  // the full-precision teacher's
  double best_task = 0.0;                     // every layer at its most accurate candidate
  double measured_task = 0.0;                 // the allocation's
  int64_t total_bits = 0, total_weights = 0;  // over every block linear
  int64_t upgrades = 0, downgrades = 0;       // kept by the joint refinement
  int64_t evaluations = 0;  // measured configurations (forward passes over the data)
  double seconds = 0.0;
  double BitsPerWeight() const {
    return total_weights > 0 ? double(total_bits) / double(total_weights) : 0.0;
  }
};

// The calibration inputs: `windows` windows of the sampler's seq_len tokens, spread evenly over
// its sequential windows (all of them when it holds fewer), as int64 [N, T]. Error when the data
// holds no complete window.
absl::StatusOr<torch::Tensor> CalibrationWindows(const data::WindowSampler& calib, int64_t windows);

// Plans the block linears of `teacher` (full precision: no quantized weight) on `windows`
// [N, T] (on the teacher's device). The teacher's weights are changed during the search and
// restored before it returns. Errors name the flag of the option at fault.
absl::StatusOr<PlanResult> PlanBits(trainer::CausalLM& teacher, const torch::Tensor& windows,
                                    const PlanOptions& options);

// The plan as a recipe fragment (usable as `base:` of a recipe): a quant section with method
// none and one override per block linear (its exact weight name as the pattern) setting method,
// bits, symmetric, granularity and group_size; scale none and activations none. `header` lines
// are written as comments first.
std::string PlanToYaml(const PlanResult& plan, const std::vector<std::string>& header = {});
// A table: layer, format, bits per weight, EAR and KL alone; then the totals (predicted vs
// measured EAR, bits per weight; with --target-task the teacher's and the allocation's scores).
std::string PlanTable(const PlanResult& plan);

}  // namespace qat::ptq
