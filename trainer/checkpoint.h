// Checkpoints: everything a run needs to continue bit for bit.
//
// Layout of one checkpoint, RUN_DIR/checkpoints/step-NNNNNNNN/:
//   model.safetensors      latent weights (F32), Hugging Face names
//   optimizer.safetensors  AdamW moments, "<param>.exp_avg" / "<param>.exp_avg_sq" (F32)
//   recipe.yaml            the fully resolved recipe of the run
//   manifest.yaml          written last: format, step, world_size, sharding, recipe_hash,
//                          optimizer_step, loss, and for each file its size and 64-bit checksum
// A checkpoint is written into step-NNNNNNNN.tmp/, every file fsynced, the manifest last, then the
// directory is renamed into place: a crash leaves either the old set of checkpoints or the new
// one, never a half-written checkpoint with a manifest. Loading verifies sizes and checksums.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <torch/types.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "trainer/recipe.h"

namespace qat::trainer {

using TensorMap = std::map<std::string, torch::Tensor>;

struct CheckpointState {
  int64_t step = 0;            // optimizer steps completed
  int64_t world_size = 1;
  std::string sharding = "ddp";
  double loss = 0.0;           // training loss of the last step
  std::string recipe_yaml;     // resolved recipe
  TensorMap model;             // name -> F32 CPU tensor
  TensorMap optimizer;         // name -> F32 CPU tensor
};

// Writes a checkpoint for `state.step` under run_dir and removes all but the newest keep_last.
// Returns the checkpoint directory.
absl::StatusOr<std::string> SaveCheckpoint(const std::string& run_dir, const CheckpointState& state,
                                           int64_t keep_last);

// Loads a checkpoint directory (one holding manifest.yaml), verifying every checksum.
// With load_optimizer = false the optimizer file is neither read nor required.
absl::StatusOr<CheckpointState> LoadCheckpoint(const std::string& ckpt_dir, bool load_optimizer);

// Resolves a path given by a user: a checkpoint directory, or a run directory (its newest valid
// checkpoint). Invalid checkpoints met on the way are reported in `skipped` (one line each).
absl::StatusOr<std::string> ResolveCheckpoint(const std::string& path,
                                              std::vector<std::string>* skipped = nullptr);
// The newest valid checkpoint in run_dir, or "" when there is none.
std::string FindLatestCheckpoint(const std::string& run_dir, std::vector<std::string>* skipped);

// Tensors <-> safetensors files (F32 only); errors name the file.
absl::Status SaveTensors(const std::string& path, const TensorMap& tensors,
                         const std::map<std::string, std::string>& metadata = {});
absl::StatusOr<TensorMap> LoadTensors(const std::string& path);

// Copies `tensors` into the parameters of `module` by name; every parameter must be present with
// the same shape (error names the first one that is not).
absl::Status LoadParameters(torch::nn::Module& module, const TensorMap& tensors,
                            const std::string& origin);
TensorMap ParameterMap(torch::nn::Module& module);

// What `qat ckpt inspect` shows: the manifest and the state of every file it lists.
struct CheckpointFileStatus {
  std::string name;
  int64_t bytes = 0;
  std::string checksum;
  std::string status;  // "ok" or what is wrong
};
struct CheckpointInfo {
  std::string dir;
  int64_t step = 0, world_size = 0;
  std::string sharding, recipe_hash;
  double loss = 0.0;
  std::vector<CheckpointFileStatus> files;
  bool valid = false;
};
absl::StatusOr<CheckpointInfo> InspectCheckpoint(const std::string& ckpt_dir);

// 64-bit checksum of a byte string (fast multiply-xor hash, not cryptographic).
uint64_t Checksum64(const void* data, size_t size);

}  // namespace qat::trainer
