// The training objective of one micro batch, and its backward pass: the task loss (cross entropy,
// or distillation from a frozen teacher mixed with CE) plus, when the recipe asks, a smoothness
// regularizer on the input gradient (MISSION.md):
//
//   x      = the token embeddings fed to the first block, [B, T, D]
//   L      = the task loss, a mean over the micro batch's tokens
//   g_b    = B * dL/dx_b, the input gradient of sequence b's own mean loss
//   grad_norm:  R = mean_b ||g_b||^2  = B * ||dL/dx||^2         (penalise sharpness)
//   grad_match: R = mean_b ||gS_b - gT_b||^2 with gS, gT the input gradients of the student's and
//               the teacher's cross entropy on the same targets (CE for both: the teacher's
//               distillation loss against itself would be identically zero)
//   total  = L + lambda * R
//
// Estimators of dR/dtheta:
//   exact:       double backward: g is computed with create_graph, R is backpropagated.
//   finite_diff: with G = dL'/dx (L' the loss whose input gradient R penalises, v the vector
//     R is the squared norm of: v = G for grad_norm, v = G_S - G_T for grad_match),
//       dR/dtheta = 2B (dG/dtheta)^T v = 2B ||v|| * d/dh [dL'/dtheta (x + h v/||v||)] at h = 0
//                 ~ (2B ||v|| / h) * (dL'/dtheta (x + h u) - dL'/dtheta (x)),   u = v/||v||
//     (a Hessian-vector product by one-sided difference: the gradient of the gradient's component
//     along u). So the total gradient is dL/dtheta - c dL'/dtheta(x) + c dL'/dtheta(x + h u)
//     with c = 2 lambda B ||v|| / h: one extra forward/backward at the perturbed input. The
//     perturbation flows through the embedding, so the embedding weights get their share too.
//     h = fd_step * ||x||; the error is O(h) and is checked against exact in the tests.
#pragma once

#include <torch/types.h>

#include "trainer/model.h"
#include "trainer/recipe.h"

namespace qat::trainer {

struct MicroBatchResult {
  double loss = 0.0;     // task loss L
  double penalty = 0.0;  // R (0 when not regularized)
  double input_grad_norm = 0.0;  // mean_b ||g_b||: the smoothness proxy of this micro batch
};

// Computes the objective on (inputs, targets) [B, T] and accumulates weight * d(total)/dtheta into
// the parameters' .grad. `teacher` may be null (no distillation, grad_match unavailable).
// lambda = 0 or smoothness.mode = none gives the plain task loss.
MicroBatchResult BackwardMicroBatch(CausalLM& model, CausalLM* teacher, const torch::Tensor& inputs,
                                    const torch::Tensor& targets, const Recipe& recipe,
                                    double lambda, double weight);

// lambda at `step` (warmup ramp, every_n_steps; 0 on steps without the regularizer).
double SmoothnessLambda(const SmoothnessConfig& s, int64_t step);

}  // namespace qat::trainer
