// Checkpoints: everything a run needs to continue bit for bit, written by every rank in parallel.
//
// Layout of one checkpoint, RUN_DIR/checkpoints/step-NNNNNNNN/ (format "qat-checkpoint-2"):
//   model-RRRRR-of-WWWWW.safetensors      rank R's slices of the latent weights (and learnable
//                                         quantizer scales), Hugging Face names
//   optimizer-RRRRR-of-WWWWW.safetensors  rank R's slices of the AdamW moments,
//                                         "<param>.exp_avg" / "<param>.exp_avg_sq"
//   recipe.yaml                           the fully resolved recipe of the run
//   manifest.yaml                         written last: format, step, world_size, sharding,
//                                         recipe_hash, loss, for each file its size and 64-bit
//                                         checksum (Checksum64, hex), and the tensor index:
//                                         tensors: {NAME: {shape: "256,768", slices:
//                                         [[FILE, begin, count], ...]}}; its last line,
//                                         "manifest_checksum: HEX", is Checksum64 of every byte
//                                         before it. Its step must match the directory's name.
// A shard file is a safetensors file whose tensors are 1-D F32 slices of flattened (row-major)
// tensors: tensor NAME holds elements [begin, begin + n) of the whole tensor, with
// __metadata__ "qat.shape.NAME" = the whole shape ("256,768") and "qat.begin.NAME" = begin.
// The slices of all ranks cover every element of every tensor exactly once, whatever the
// sharding mode, so any world size and mode can load any checkpoint (resharding): loading
// assembles whole tensors and checks the coverage.
// The rest of a run's state needs no file of its own: the LR schedule and AdamW's bias corrections
// are functions of the step (the manifest's); the data position is too (the window sampler is a
// pure function of run.seed, the step and the sample index, data/tokens.h); and no random stream
// is drawn from during training (no dropout; the init is a function of run.seed), so there is no
// CPU/CUDA generator state to restore. The resume tests check the result bit for bit.
// Writing: rank 0 makes step-NNNNNNNN.tmp/, every rank writes and fsyncs its files, the sizes and
// checksums are summed over the ranks, rank 0 writes the recipe and the manifest, renames the
// directory into place and fsyncs its parent: a crash leaves either the old set of checkpoints
// or the new one, never a half-written checkpoint with a manifest. Loading verifies every size
// and checksum.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <torch/types.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "comm/process_group.h"
#include "trainer/recipe.h"

namespace qat::trainer {

using TensorMap = std::map<std::string, torch::Tensor>;

struct CheckpointState {
  int64_t step = 0;  // optimizer steps completed
  int64_t world_size = 1;
  std::string sharding = "ddp";
  double loss = 0.0;        // training loss of the last step
  std::string recipe_yaml;  // resolved recipe
  TensorMap model;          // name -> F32 CPU tensor
  TensorMap optimizer;      // name -> F32 CPU tensor
};

// One rank's part of a checkpoint.
struct TensorSlice {
  std::string name;
  std::vector<int64_t> shape;  // of the whole tensor
  int64_t begin = 0;           // first element of the slice in the flattened tensor
  torch::Tensor values;        // 1-D, F32
};
struct CheckpointShard {
  std::vector<TensorSlice> model, optimizer;
};

// Writes a checkpoint for `state.step` (its model / optimizer maps ignored) from every rank's
// `shard`, under run_dir, and removes all but the newest keep_last. Collective over `group`.
// Returns the checkpoint directory (on every rank).
absl::StatusOr<std::string> SaveShardedCheckpoint(const std::string& run_dir,
                                                  const CheckpointState& state,
                                                  const CheckpointShard& shard,
                                                  comm::ProcessGroup& group, int64_t keep_last);
// A one-process checkpoint of whole tensors (state.model, state.optimizer).
absl::StatusOr<std::string> SaveCheckpoint(const std::string& run_dir, const CheckpointState& state,
                                           int64_t keep_last);

// Loads a checkpoint directory (one holding manifest.yaml), verifying every checksum, and
// assembles whole tensors from the shards. With load_optimizer = false the optimizer files are
// neither read nor required.
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
  bool manifest_sealed = false;  // its last line checksums it (qat before that wrote none)
  bool valid = false;
};
absl::StatusOr<CheckpointInfo> InspectCheckpoint(const std::string& ckpt_dir);

// Fault injection for the crash-recovery tests: when the environment holds
// QAT_FAULT_KILL=WHERE:STEP:RANK and this is rank RANK reaching point WHERE ("step": the end of
// training step STEP; "checkpoint": step STEP's checkpoint after this rank's shard files are
// written, before the manifest), the process kills itself with SIGKILL, once: the file named by
// QAT_FAULT_ONCE (required) is created first, and its existence disarms the fault on reruns.
void FaultPoint(const std::string& where, int64_t step, int rank);

// 64-bit checksum of a byte string (fast multiply-xor hash, not cryptographic).
uint64_t Checksum64(const void* data, size_t size);
// The same checksum over bytes that arrive in pieces (a file as it is written); the total size
// must be known first, since it seeds the hash.
class Checksum64Stream {
 public:
  explicit Checksum64Stream(uint64_t total_size);
  void Update(const void* data, size_t size);
  uint64_t Finish() const;  // after exactly total_size bytes

 private:
  uint64_t h_;
  unsigned char pending_[8];  // the bytes of an unfinished 8-byte word
  size_t pending_size_ = 0;
};

}  // namespace qat::trainer
