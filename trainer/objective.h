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
//                 ~ (B ||v|| / h) * (dL'/dtheta (x + h u) - dL'/dtheta (x - h u)),  u = v/||v||
//     (a Hessian-vector product by central difference: the gradient of the gradient's component
//     along u): lambda dR/dtheta ~ (c/2) (dL'/dtheta(x + h u) - dL'/dtheta(x - h u)) with
//     c = 2 lambda B ||v|| / h. The loss's own gradient is taken from the same two
//     passes, as their mean: dL/dtheta(x) = (1/2) (dL/dtheta(x + h u) + dL/dtheta(x - h u)) +
//     O(h^2), the same order as the difference's truncation error. So the plain pass at x
//     only gives v, by an input-gradient backward that skips every weight-gradient matmul (one
//     of the nine forward-sized matmul passes of the step), and one backward into the parameters
//     runs over 0.5 (L(x + h u) + L(x - h u)) + (c/2) (L'(x + h u) - L'(x - h u)), both losses
//     from the same two forwards: the plain forward, its input-gradient pass, then two perturbed
//     forwards and their backward. The perturbation flows through the embedding, so the
//     embedding weights get their share too. h = fd_step * ||x|| (the norm of the micro batch's
//     whole embedding tensor). With activation quantizers (act_int8), x +- h u can cross a
//     rounding boundary of an activation, as it already can for the penalty's difference.
//     Why central: the error of the one-sided difference (x + h u against x) is O(h) and
//     measured 11% of the penalty gradient on the demo shape in fp32 at fd_step 1e-3; smaller
//     steps drown in fp32 rounding (3% at 1e-6). The central difference cancels the O(h) term;
//     what remains is O(h^2) truncation plus rounding of order eps_fp32 / fd_step, both under
//     2% at the default (tests/smoothness_test.cc, FiniteDiffFp32DemoShape).
// smoothness.at = block_inputs: the same regularizer at every block's input. With N blocks,
//   x_l = the input of block l (x_0 = the embeddings, x_l = the output of block l-1) and
//   v_l = dL'/dx_l (grad_norm) or dL'_S/dx_l - dL'_T/dx_l (grad_match; the teacher's at its own
//   block inputs, so it needs the student's depth and width), the batch-mean gradients,
//       R = (1/N) sum_l B ||v_l||^2            (each term is R above taken at x_l)
//   exact: double backward through all v_l. finite_diff: perturb every block input at once by
//   an additive offset that flows on through the later blocks, x_l + h v_l/||v|| with
//   ||v||^2 = sum_l ||v_l||^2; since the offsets are independent inputs,
//       d/dh dL'/dtheta(offsets h v/||v||) = sum_l (d^2 L'/dtheta dx_l) v_l / ||v||,
//   so dR/dtheta = (2B/N) sum_l (dv_l/dtheta)^T v_l ~ (c/2) (dL'/dtheta(offsets +h v/||v||) -
//   dL'/dtheta(offsets -h v/||v||)) with c = 2 lambda B ||v|| / (N h), h = fd_step *
//   ||(x_0, ..., x_{N-1})||: a central difference, like the estimator above, and the loss
//   gradient again as the mean of the two sides, in one backward. input_grad_norm stays the
//   proxy at the embeddings.
//
// Distillation (a teacher given): L = kd_weight * KL_T + (1 - kd_weight) * CE
//   + hidden_mse_weight * (1/N) sum_l mean((hS_l - hT_l)^2), h_l = the output of block l of the
//   student and the teacher (same width and depth, see CheckTeacher).
#pragma once

#include <torch/types.h>

#include <functional>

#include "trainer/model.h"
#include "trainer/recipe.h"

namespace qat::trainer {

struct MicroBatchResult {
  double loss = 0.0;             // task loss L
  double penalty = 0.0;          // R (0 when not regularized)
  double input_grad_norm = 0.0;  // mean_b ||g_b||: the smoothness proxy of this micro batch
};

// What a data-parallel trainer needs to know about the backward passes of a micro batch.
struct BackwardHooks {
  // Called right before the last backward pass into the parameters (the one after which their
  // .grad is final): bucketed all-reduces start from there, overlapped with that pass.
  std::function<void()> before_final_backward;
  // The parameter gradients of each backward pass leave the model right away (FSDP
  // reduce-scatters them inside the pass), so .grad must never be rescaled after a pass. No
  // estimator rescales today; the flag stays for any that would.
  bool gradients_leave_each_pass = false;
};

// Computes the objective on (inputs, targets) [B, T] and accumulates weight * d(total)/dtheta into
// the parameters' .grad. `teacher` may be null (no distillation, grad_match unavailable).
// lambda = 0 or smoothness.mode = none gives the plain task loss.
MicroBatchResult BackwardMicroBatch(CausalLM& model, CausalLM* teacher, const torch::Tensor& inputs,
                                    const torch::Tensor& targets, const Recipe& recipe,
                                    double lambda, double weight, const BackwardHooks& hooks = {});

// Whether `teacher` can serve the recipe: hidden-state distillation and grad_match need the
// student's hidden_size (and num_layers for hidden_mse_weight or block_inputs). Errors name the
// key and both shapes.
absl::Status CheckTeacher(const Recipe& recipe, const ModelConfig& student,
                          const ModelConfig& teacher);

// lambda at `step` (warmup ramp, every_n_steps; 0 on steps without the regularizer).
double SmoothnessLambda(const SmoothnessConfig& s, int64_t step);

}  // namespace qat::trainer
