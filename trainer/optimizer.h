// AdamW (Loshchilov & Hutter), one elementwise update of a parameter (or any slice of one):
//   m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
//   p -= lr * wd * p     (decoupled decay, weight matrices only)
//   p -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)
// Every operation is elementwise, so updating a parameter whole or in slices (sharded
// optimizers, trainer/sharding.h) gives the same values.
#pragma once

#include <cstdint>

#include <torch/types.h>

namespace qat::trainer {

struct AdamWOptions {
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = 0.1;
};

// Updates param, exp_avg and exp_avg_sq in place (same shapes as grad). `step` counts updates
// from 1. `decay`: apply weight decay (matrices) or not (norm gains and other vectors).
void AdamWUpdate(torch::Tensor& param, const torch::Tensor& grad, torch::Tensor& exp_avg,
                 torch::Tensor& exp_avg_sq, double lr, int64_t step, const AdamWOptions& options,
                 bool decay);

}  // namespace qat::trainer
