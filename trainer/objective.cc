#include "trainer/objective.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "quant/distill.h"

namespace qat::trainer {
namespace {

torch::Tensor TaskLoss(const torch::Tensor& logits, const torch::Tensor& targets,
                       const torch::Tensor& teacher_logits, const DistillConfig& d) {
  torch::Tensor ce = quant::CrossEntropyLoss(logits, targets);
  if (!teacher_logits.defined()) return ce;
  torch::Tensor kd = quant::KlDistillLoss(logits, teacher_logits, d.temperature);
  return d.kd_weight * kd + (1.0 - d.kd_weight) * ce;
}

// The frozen teacher's outputs on a micro batch.
struct TeacherOutputs {
  torch::Tensor logits;               // undefined without a teacher
  std::vector<torch::Tensor> hidden;  // block outputs, when distill.hidden_mse_weight > 0
};

TeacherOutputs TeacherForward(CausalLM* teacher, const torch::Tensor& inputs,
                              const DistillConfig& d) {
  TeacherOutputs t;
  if (teacher == nullptr) return t;
  torch::NoGradGuard no_grad;
  if (d.hidden_mse_weight > 0) {
    BlockTrace trace;
    t.logits = (*teacher)->ForwardFromEmbeddings((*teacher)->Embed(inputs), &trace);
    t.hidden = std::move(trace.outputs);
  } else {
    t.logits = (*teacher)->forward(inputs);
  }
  return t;
}

// The student's task loss from its input embeddings x: TaskLoss, plus hidden_mse_weight times
// the hidden-state MSE against the teacher. logits / trace (optional) receive the forward pass's;
// offsets (optional) are added at the block inputs (ForwardFromEmbeddings).
torch::Tensor StudentLoss(CausalLM& model, const torch::Tensor& x, const torch::Tensor& targets,
                          const TeacherOutputs& t, const DistillConfig& d,
                          torch::Tensor* logits = nullptr, BlockTrace* trace = nullptr,
                          const std::vector<torch::Tensor>* offsets = nullptr) {
  const bool hidden = d.hidden_mse_weight > 0 && !t.hidden.empty();
  BlockTrace local;
  BlockTrace* tr = trace != nullptr ? trace : (hidden ? &local : nullptr);
  torch::Tensor out = model->ForwardFromEmbeddings(x, tr, offsets);
  if (logits != nullptr) *logits = out;
  torch::Tensor loss = TaskLoss(out, targets, t.logits, d);
  if (hidden) loss = loss + d.hidden_mse_weight * quant::HiddenStateMse(tr->outputs, t.hidden);
  return loss;
}

// One forward from x (offsets, optional, added at the block inputs): the task loss L and the loss
// L' whose input gradient the regularizer penalises (L itself for grad_norm, the cross entropy for
// grad_match).
std::pair<torch::Tensor, torch::Tensor> TaskAndPenalizedLoss(
    CausalLM& model, const torch::Tensor& x, const torch::Tensor& targets, const TeacherOutputs& t,
    const DistillConfig& d, bool match, const std::vector<torch::Tensor>* offsets = nullptr) {
  torch::Tensor logits;
  torch::Tensor loss = StudentLoss(model, x, targets, t, d, &logits, nullptr, offsets);
  return {loss, match ? quant::CrossEntropyLoss(logits, targets) : loss};
}

// finite_diff's objective (objective.h) from `losses(side)`, the (L, L') of a forward perturbed by
// side = +1 or -1 times the step: 0.5 (L(+) + L(-)) + (c/2) (L'(+) - L'(-)), the loss gradient as
// the mean of the two sides and the penalty's as their difference. With c = 0 (v = 0) there is
// no penalty gradient, and the objective is L unperturbed (side 0).
torch::Tensor FiniteDiffObjective(
    const std::function<std::pair<torch::Tensor, torch::Tensor>(double side)>& losses, double c) {
  if (c == 0.0) return losses(0.0).first;
  const auto [lp, lpp] = losses(1.0);
  const auto [lm, lpm] = losses(-1.0);
  return 0.5 * (lp + lm) + (0.5 * c) * (lpp - lpm);
}

// dCE_T/dx for the frozen teacher, at its own embeddings of the same tokens (batch-mean scale).
torch::Tensor TeacherInputGrad(CausalLM& teacher, const torch::Tensor& inputs,
                               const torch::Tensor& targets) {
  torch::Tensor xt = teacher->Embed(inputs).detach().requires_grad_(true);
  torch::Tensor ce = quant::CrossEntropyLoss(teacher->ForwardFromEmbeddings(xt), targets);
  return torch::autograd::grad({ce}, {xt})[0].detach();
}

// mean_b ||B * g_b|| for a batch-mean input gradient g [B, T, D].
double SequenceGradNorm(const torch::Tensor& g) {
  const int64_t B = g.size(0);
  return (g.detach().reshape({B, -1}).norm(2, 1) * double(B)).mean().item<double>();
}

// dCE_T/dx_l for the frozen teacher at each of its own block inputs (batch-mean scale).
std::vector<torch::Tensor> TeacherBlockInputGrads(CausalLM& teacher, const torch::Tensor& inputs,
                                                  const torch::Tensor& targets) {
  torch::Tensor xt = teacher->Embed(inputs).detach().requires_grad_(true);
  BlockTrace trace;
  torch::Tensor ce = quant::CrossEntropyLoss(teacher->ForwardFromEmbeddings(xt, &trace), targets);
  std::vector<torch::Tensor> grads = torch::autograd::grad({ce}, trace.inputs);
  for (torch::Tensor& g : grads) g = g.detach();
  return grads;
}

// smoothness.at = block_inputs (objective.h): the penalty over every block input, both
// estimators, both modes. The finite-difference pass is folded into one backward, so nothing
// is rescaled after a pass (sharding-safe, like gradients_leave_each_pass).
MicroBatchResult BackwardAtBlockInputs(CausalLM& model, CausalLM* teacher,
                                       const torch::Tensor& inputs, const torch::Tensor& targets,
                                       const Recipe& recipe, const TeacherOutputs& teacher_out,
                                       double lambda, double weight,
                                       const std::function<void()>& final_pass) {
  const SmoothnessConfig& sm = recipe.smoothness;
  const bool match = sm.mode == "grad_match";
  const double B = double(inputs.size(0));
  MicroBatchResult out;
  BlockTrace trace;
  torch::Tensor logits;
  torch::Tensor loss = StudentLoss(model, model->Embed(inputs), targets, teacher_out,
                                   recipe.distill, &logits, &trace);
  out.loss = loss.item<double>();
  const double N = double(trace.inputs.size());
  torch::Tensor penalized = match ? quant::CrossEntropyLoss(logits, targets) : loss;
  std::vector<torch::Tensor> teacher_grads;
  if (match) teacher_grads = TeacherBlockInputGrads(*teacher, inputs, targets);
  const bool exact = sm.estimator == "exact";
  // exact keeps the graph for the double backward; finite_diff needs only the input gradients of
  // this pass (the parameters get theirs from the perturbed passes below).
  std::vector<torch::Tensor> grads = torch::autograd::grad(
      {penalized}, trace.inputs, {}, /*retain_graph=*/exact, /*create_graph=*/exact);
  out.input_grad_norm = SequenceGradNorm(grads[0]);
  std::vector<torch::Tensor> v(grads.size());
  for (size_t l = 0; l < grads.size(); ++l) v[l] = match ? grads[l] - teacher_grads[l] : grads[l];

  if (exact) {
    torch::Tensor penalty = v[0].pow(2).sum();
    for (size_t l = 1; l < v.size(); ++l) penalty = penalty + v[l].pow(2).sum();
    penalty = penalty * (B / N);  // = (1/N) sum_l mean_b ||B v_{l,b}||^2
    final_pass();
    ((loss + lambda * penalty) * weight).backward();
    out.penalty = penalty.item<double>();
    return out;
  }
  double v2 = 0, x2 = 0;
  for (size_t l = 0; l < v.size(); ++l) {
    v[l] = v[l].detach();
    v2 += v[l].pow(2).sum().item<double>();
    x2 += trace.inputs[l].detach().pow(2).sum().item<double>();
  }
  const double vnorm = std::sqrt(v2), h = sm.fd_step * std::sqrt(x2);
  const double c = vnorm > 0 ? 2.0 * lambda * B * vnorm / (N * h) : 0.0;
  out.penalty = B * v2 / N;
  const torch::Tensor total = FiniteDiffObjective(
      [&](double side) {
        std::vector<torch::Tensor> offsets;  // side h v/||v|| at the block inputs
        if (side != 0.0) {
          for (const torch::Tensor& vl : v) offsets.push_back(vl * (side * h / vnorm));
        }
        return TaskAndPenalizedLoss(model, model->Embed(inputs), targets, teacher_out,
                                    recipe.distill, match, side != 0.0 ? &offsets : nullptr);
      },
      c);
  final_pass();
  (total * weight).backward();
  return out;
}

}  // namespace

absl::Status CheckTeacher(const Recipe& recipe, const ModelConfig& student,
                          const ModelConfig& teacher) {
  const bool hidden = recipe.distill.hidden_mse_weight > 0;
  const bool match = recipe.smoothness.mode == "grad_match";
  const bool depth = hidden || (match && recipe.smoothness.at == "block_inputs");
  if (!hidden && !match) return absl::OkStatus();
  if (teacher.hidden_size != student.hidden_size ||
      (depth && teacher.num_layers != student.num_layers)) {
    return absl::InvalidArgumentError(absl::StrCat(
        recipe.path, ": ", hidden ? "distill.hidden_mse_weight" : "smoothness.mode grad_match",
        " compares the teacher's hidden states with the student's: it needs the same ",
        depth ? "hidden_size and num_layers" : "hidden_size", " (teacher ", teacher.hidden_size,
        " x ", teacher.num_layers, " layers, student ", student.hidden_size, " x ",
        student.num_layers, ")"));
  }
  return absl::OkStatus();
}

double SmoothnessLambda(const SmoothnessConfig& s, int64_t step) {
  if (s.mode == "none" || s.lambda <= 0 || step % s.every_n_steps != 0) return 0.0;
  if (s.lambda_warmup_steps <= 0) return s.lambda;
  return s.lambda * std::min(1.0, double(step + 1) / double(s.lambda_warmup_steps));
}

MicroBatchResult BackwardMicroBatch(CausalLM& model, CausalLM* teacher, const torch::Tensor& inputs,
                                    const torch::Tensor& targets, const Recipe& recipe,
                                    double lambda, double weight, const BackwardHooks& hooks) {
  auto final_pass = [&hooks] {
    if (hooks.before_final_backward) hooks.before_final_backward();
  };
  const SmoothnessConfig& sm = recipe.smoothness;
  const double B = double(inputs.size(0));
  const TeacherOutputs teacher_out = TeacherForward(teacher, inputs, recipe.distill);
  MicroBatchResult out;
  if (sm.mode == "none" || lambda <= 0) {
    torch::Tensor loss =
        StudentLoss(model, model->Embed(inputs), targets, teacher_out, recipe.distill);
    final_pass();
    (loss * weight).backward();
    out.loss = loss.item<double>();
    return out;
  }
  if (sm.at == "block_inputs") {
    return BackwardAtBlockInputs(model, teacher, inputs, targets, recipe, teacher_out, lambda,
                                 weight, final_pass);
  }
  const bool match = sm.mode == "grad_match";
  torch::Tensor x = model->Embed(inputs);
  torch::Tensor logits;
  torch::Tensor loss = StudentLoss(model, x, targets, teacher_out, recipe.distill, &logits);
  out.loss = loss.item<double>();
  torch::Tensor teacher_grad;
  if (match) teacher_grad = TeacherInputGrad(*teacher, inputs, targets);

  if (sm.estimator == "exact") {
    // Double backward: the input gradient stays in the graph and R is differentiated through it.
    torch::Tensor penalized = match ? quant::CrossEntropyLoss(logits, targets) : loss;
    torch::Tensor g = torch::autograd::grad({penalized}, {x}, {}, /*retain_graph=*/true,
                                            /*create_graph=*/true)[0];
    torch::Tensor v = match ? g - teacher_grad : g;
    torch::Tensor penalty = B * v.pow(2).sum();  // = mean_b ||B v_b||^2
    final_pass();
    ((loss + lambda * penalty) * weight).backward();
    out.penalty = penalty.item<double>();
    out.input_grad_norm = SequenceGradNorm(g);
    return out;
  }

  // finite_diff (objective.h): the plain pass at x gives v through an input-gradient-only
  // backward; then one backward into the parameters over the two perturbed forwards, of
  // 0.5 (L(x + h u) + L(x - h u)) + (c/2) (L'(x + h u) - L'(x - h u)).
  torch::Tensor penalized = match ? quant::CrossEntropyLoss(logits, targets) : loss;
  torch::Tensor g = torch::autograd::grad({penalized}, {x})[0].detach();
  out.input_grad_norm = SequenceGradNorm(g);
  const torch::Tensor v = match ? g - teacher_grad : g;
  const double vnorm = v.norm().item<double>();
  const double h = sm.fd_step * x.detach().norm().item<double>();
  const double c = vnorm > 0 ? 2.0 * lambda * B * vnorm / h : 0.0;
  out.penalty = B * vnorm * vnorm;
  const torch::Tensor step = c != 0.0 ? v * (h / vnorm) : torch::Tensor();
  const torch::Tensor total = FiniteDiffObjective(
      [&](double side) {
        torch::Tensor xs = model->Embed(inputs);
        if (side != 0.0) xs = xs + (side > 0 ? step : -step);
        return TaskAndPenalizedLoss(model, xs, targets, teacher_out, recipe.distill, match);
      },
      c);
  final_pass();
  (total * weight).backward();
  return out;
}

}  // namespace qat::trainer
