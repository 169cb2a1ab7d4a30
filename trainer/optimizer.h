// AdamW (Loshchilov & Hutter) over named parameters, with its state in plain tensors so that a
// checkpoint holds it exactly and sharded optimizers can split it.
//   m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
//   p -= lr * wd * p     (decoupled decay, matrices only)
//   p -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)
#pragma once

#include <string>
#include <vector>

#include <torch/types.h>

#include "absl/status/status.h"
#include "trainer/checkpoint.h"

namespace qat::trainer {

class AdamW {
 public:
  struct Options {
    double beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = 0.1;
  };
  AdamW(std::vector<std::pair<std::string, torch::Tensor>> params, Options options);
  // One update with learning rate lr; parameters without a gradient are skipped.
  void Step(double lr);
  int64_t step() const { return step_; }
  TensorMap State() const;  // "<name>.exp_avg", "<name>.exp_avg_sq"
  absl::Status LoadState(const TensorMap& state, int64_t step, const std::string& origin);

 private:
  struct Slot {
    std::string name;
    torch::Tensor param, exp_avg, exp_avg_sq;
    bool decay;
  };
  std::vector<Slot> slots_;
  Options options_;
  int64_t step_ = 0;
};

}  // namespace qat::trainer
