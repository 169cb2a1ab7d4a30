// Data-parallel sharding of a model's parameters, gradients and AdamW state over the ranks of a
// process group (train.sharding):
//
//   ddp    every rank holds everything; gradients are summed by one all-reduce per bucket,
//          started from the backward pass as soon as the bucket's last gradient is accumulated
//   zero1  as ddp, but each rank keeps the AdamW moments of its 1/N of the parameters, updates
//          that part only, and the parameters are all-gathered after the step
//   zero2  as zero1, but gradients are reduce-scattered: each rank keeps only its 1/N of them
//   fsdp   as zero2, and the parameters of each decoder block live sharded too: a block's are
//          all-gathered before its forward (the next block's are prefetched meanwhile), freed after
//          it, gathered again in the backward pass (which recomputes the block's forward), and
//          its gradients are reduce-scattered right after each backward pass through it. The
//          embedding, final norm and LM head (the "root" unit) are gathered for the whole step.
//
// Units and the flat layout. The parameters are grouped in units: one per decoder block (its
// parameters in registration order) and the root unit (everything else). A unit's parameters are
// concatenated, flattened, into a vector of `numel` elements padded with zeros to a multiple of the
// world size N; rank r owns elements [r*S, (r+1)*S) of it, S = padded/N. A unit is also the
// gradient bucket of ddp/zero1/zero2 (one block is a few MB to a few tens of MB, the size
// PyTorch DDP buckets to); buckets are reduced in a fixed order (last block first, root last) so
// every rank starts the same collectives in the same order.
//
// What a rank holds between steps (Footprint):
//            parameters   gradients    AdamW moments
//   ddp      all          all          all
//   zero1    all          all          1/N
//   zero2    all          1/N          1/N
//   fsdp     1/N          1/N          1/N
//
// The arithmetic of the update is elementwise and the same in every mode, so N ranks reproduce one
// rank up to the order of the cross-rank sums of gradients.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <torch/types.h>

#include "absl/status/statusor.h"
#include "comm/process_group.h"
#include "trainer/checkpoint.h"
#include "trainer/model.h"
#include "trainer/objective.h"
#include "trainer/optimizer.h"

namespace torch::autograd {
struct Node;
}

namespace qat::trainer {
namespace sharding_internal {
struct Unit;
class FsdpScheduler;
}  // namespace sharding_internal

enum class ShardingMode { kDdp, kZero1, kZero2, kFsdp };
absl::StatusOr<ShardingMode> ParseShardingMode(const std::string& name);
const char* ShardingModeName(ShardingMode mode);

class ShardedModel {
 public:
  struct Options {
    ShardingMode mode = ShardingMode::kDdp;
    // A frozen model (the teacher) has no gradients and no optimizer; only ddp (replicated) and
    // fsdp (blocks gathered per use) make sense for it.
    bool frozen = false;
    // Start bucket reductions from the backward pass (else all at FinishGradients).
    bool overlap = true;
    AdamWOptions adam;
  };

  // Takes over `model`'s parameters (already on their device): their storage becomes views into
  // the flat unit buffers, or (fsdp) is freed until a block is gathered. `group` carries the
  // tensor collectives (MPI: host tensors; NCCL: CUDA tensors; CUDA tensors over MPI are staged
  // through host memory, without overlap); `control` the scalar sums (an MPI or local group).
  // Collective.
  static absl::StatusOr<std::unique_ptr<ShardedModel>> Create(CausalLM model,
                                                              comm::ProcessGroup& group,
                                                              comm::ProcessGroup& control,
                                                              Options options);
  ~ShardedModel();
  ShardedModel(const ShardedModel&) = delete;
  ShardedModel& operator=(const ShardedModel&) = delete;

  // One optimizer step: BeginStep; per micro batch BackwardMicroBatch(..., Hooks(last)); then
  // FinishGradients, ClipGradients, Step.
  absl::Status BeginStep();
  BackwardHooks Hooks(bool last_micro_batch);
  // Waits for every gradient collective: afterwards each rank's gradients (all or its shard) are
  // sums over the ranks.
  absl::Status FinishGradients();
  // The global gradient norm (over all ranks' shards), then scales gradients to max_norm (> 0).
  absl::StatusOr<double> ClipGradients(double max_norm);
  // AdamW on what this rank owns, then (zero1/zero2) the parameters are all-gathered.
  absl::Status Step(double lr);
  int64_t optimizer_step() const { return optimizer_step_; }

  // fsdp: the root unit gathered so that forward passes outside a training step (evaluation) can
  // run on every rank (blocks are gathered per use), until ReleaseForward. Collective. No-ops in
  // the other modes.
  absl::Status GatherForForward();
  void ReleaseForward();

  struct Footprint {
    int64_t parameter_bytes = 0, gradient_bytes = 0, optimizer_bytes = 0;
    int64_t total() const { return parameter_bytes + gradient_bytes + optimizer_bytes; }
  };
  // Bytes of the tensors this rank keeps between steps (not the transient gathered blocks).
  Footprint Owned() const;
  // Elements of all parameters (unpadded), for the same comparison.
  int64_t parameter_count() const;
  // Seconds this process has spent blocked on tensor collectives (waiting for a reduction or a
  // gather, or staging through host memory), over all sharded models: the communication that
  // the overlap did not hide.
  static double CommWaitSeconds();

  // This rank's part of a checkpoint: for every parameter, the slice of it (flattened) in this
  // rank's owned range of its unit, and the matching AdamW moments. Every element of every
  // tensor is owned by exactly one rank, whatever the mode.
  CheckpointShard OwnedShard() const;
  // Loads full tensors (by name; the optimizer map may be null: moments stay zero) into what
  // this rank holds. Any world size and mode can load any checkpoint (resharding).
  absl::Status LoadFull(const TensorMap& model, const TensorMap* optimizer, int64_t step,
                        const std::string& origin);

  const CausalLM& model() const { return model_; }

 private:
  using Unit = sharding_internal::Unit;
  ShardedModel(CausalLM model, comm::ProcessGroup& group, comm::ProcessGroup& control,
               Options options);
  absl::Status Build();
  void OnGradientAccumulated(size_t unit);
  void LaunchReadyBuckets();
  absl::Status LaunchBucket(Unit& u);
  bool PerStepBucket(const Unit& u) const;

  CausalLM model_;
  comm::ProcessGroup& group_;
  comm::ProcessGroup& control_;
  Options options_;
  std::vector<std::unique_ptr<Unit>> units_;  // blocks 0..L-1, then root
  std::vector<size_t> bucket_order_;          // reduction order of per-step buckets
  size_t next_bucket_ = 0;
  bool armed_ = false;
  absl::Status deferred_error_;  // the first error raised inside an autograd hook
  int64_t optimizer_step_ = 0;
  std::unique_ptr<sharding_internal::FsdpScheduler> fsdp_;
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators_;
};

}  // namespace qat::trainer
