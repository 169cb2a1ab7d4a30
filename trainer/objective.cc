#include "trainer/objective.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>

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

}  // namespace

double SmoothnessLambda(const SmoothnessConfig& s, int64_t step) {
  if (s.mode == "none" || s.lambda <= 0 || step % s.every_n_steps != 0) return 0.0;
  if (s.lambda_warmup_steps <= 0) return s.lambda;
  return s.lambda * std::min(1.0, double(step + 1) / double(s.lambda_warmup_steps));
}

MicroBatchResult BackwardMicroBatch(CausalLM& model, CausalLM* teacher, const torch::Tensor& inputs,
                                    const torch::Tensor& targets, const Recipe& recipe,
                                    double lambda, double weight) {
  const SmoothnessConfig& sm = recipe.smoothness;
  const double B = double(inputs.size(0));
  torch::Tensor teacher_logits;
  if (teacher != nullptr) {
    torch::NoGradGuard no_grad;
    teacher_logits = (*teacher)->forward(inputs);
  }
  MicroBatchResult out;
  if (sm.mode == "none" || lambda <= 0) {
    torch::Tensor loss = TaskLoss(model->forward(inputs), targets, teacher_logits, recipe.distill);
    (loss * weight).backward();
    out.loss = loss.item<double>();
    return out;
  }
  const bool match = sm.mode == "grad_match";
  torch::Tensor x = model->Embed(inputs);
  torch::Tensor logits = model->ForwardFromEmbeddings(x);
  torch::Tensor loss = TaskLoss(logits, targets, teacher_logits, recipe.distill);
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
    ((loss + lambda * penalty) * weight).backward();
    out.penalty = penalty.item<double>();
    out.input_grad_norm = SequenceGradNorm(g);
    return out;
  }

  // finite_diff: one pass at x (with -c dL'/dtheta folded in), one at x + h u (weight +c).
  std::vector<torch::Tensor> params = model->parameters();
  torch::Tensor v, penalized;
  if (match) {
    penalized = quant::CrossEntropyLoss(logits, targets);
    torch::Tensor g = torch::autograd::grad({penalized}, {x}, {}, /*retain_graph=*/true)[0];
    out.input_grad_norm = SequenceGradNorm(g);
    v = (g - teacher_grad).detach();
  } else {
    // The plain backward also yields dL/dx; its -c share is taken out of this micro batch's
    // contribution afterwards (earlier micro batches' gradients are kept aside).
    std::vector<torch::Tensor> before;
    for (const torch::Tensor& p : params) {
      before.push_back(p.grad().defined() ? p.grad().clone() : torch::Tensor());
    }
    x.retain_grad();
    (loss * weight).backward();
    v = (x.grad() / weight).detach();
    out.input_grad_norm = SequenceGradNorm(v);
    const double vnorm = v.norm().item<double>();
    const double h = sm.fd_step * x.detach().norm().item<double>();
    const double c = vnorm > 0 ? 2.0 * lambda * B * vnorm / h : 0.0;
    out.penalty = B * vnorm * vnorm;
    {
      torch::NoGradGuard no_grad;
      for (size_t i = 0; i < params.size(); ++i) {
        torch::Tensor grad = params[i].grad();
        if (!grad.defined()) continue;
        // grad = before + (1 - c) * (grad - before)
        grad.mul_(1.0 - c);
        if (before[i].defined()) grad.add_(before[i], c);
      }
    }
    if (c == 0.0) return out;
    torch::Tensor x2 = model->Embed(inputs) + h * (v / vnorm);
    torch::Tensor loss2 =
        TaskLoss(model->ForwardFromEmbeddings(x2), targets, teacher_logits, recipe.distill);
    (loss2 * (c * weight)).backward();
    return out;
  }
  // grad_match: c known before the first backward.
  const double vnorm = v.norm().item<double>();
  const double h = sm.fd_step * x.detach().norm().item<double>();
  const double c = vnorm > 0 ? 2.0 * lambda * B * vnorm / h : 0.0;
  out.penalty = B * vnorm * vnorm;
  ((loss - c * penalized) * weight).backward();
  if (c == 0.0) return out;
  torch::Tensor x2 = model->Embed(inputs) + h * (v / vnorm);
  torch::Tensor ce2 = quant::CrossEntropyLoss(model->ForwardFromEmbeddings(x2), targets);
  (ce2 * (c * weight)).backward();
  return out;
}

}  // namespace qat::trainer
