// The training loop: data -> model (+ quantizers) -> loss (CE or distillation) -> gradients
// (summed over ranks) -> clipped AdamW step; logs, metrics, checkpoints and exact resume.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "comm/process_group.h"
#include "trainer/model.h"
#include "trainer/recipe.h"

namespace qat::trainer {

struct TrainResult {
  int64_t steps_run = 0;  // steps this invocation ran (0 when the run was already complete)
  int64_t final_step = 0;
  double final_loss = 0.0;  // training loss of the last step
  double val_loss = 0.0;    // mean validation NLL at the end (nan when no data.val)
  std::string checkpoint;   // the final checkpoint directory
  // Steady-state speed of this invocation: the training steps after its first one (which pays
  // for allocations and warm-up), excluding evaluation and checkpoints.
  int64_t timed_steps = 0;
  double timed_seconds = 0.0;
  double tokens_per_s = 0.0;        // global tokens (all ranks) per second
  double comm_wait_fraction = 0.0;  // share of the step time blocked on collectives (rank 0)
};

absl::StatusOr<TrainResult> Train(const Recipe& recipe, comm::ProcessGroup& group);

// "auto" (cuda when libtorch sees a GPU), "cpu" or "cuda".
absl::StatusOr<torch::Device> ResolveDevice(const std::string& name);

// Learning rate at `step` (0-based): linear warmup to lr, then cosine down to min_lr.
double LearningRate(const TrainConfig& train, int64_t step);

// A model restored from a checkpoint directory (or a run directory's newest checkpoint), built
// from the recipe stored with it.
struct LoadedModel {
  CausalLM model{nullptr};
  Recipe recipe;
  std::string checkpoint;
  int64_t step = 0;
};
absl::StatusOr<LoadedModel> LoadModelFromCheckpoint(const std::string& path);

}  // namespace qat::trainer
