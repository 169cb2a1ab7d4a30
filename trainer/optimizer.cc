#include "trainer/optimizer.h"

#include <torch/torch.h>

#include <cmath>

namespace qat::trainer {

void AdamWUpdate(torch::Tensor& param, const torch::Tensor& grad, torch::Tensor& exp_avg,
                 torch::Tensor& exp_avg_sq, double lr, int64_t step, const AdamWOptions& options,
                 bool decay) {
  torch::NoGradGuard no_grad;
  const double bias1 = 1.0 - std::pow(options.beta1, double(step));
  const double bias2 = 1.0 - std::pow(options.beta2, double(step));
  exp_avg.mul_(options.beta1).add_(grad, 1.0 - options.beta1);
  exp_avg_sq.mul_(options.beta2).addcmul_(grad, grad, 1.0 - options.beta2);
  if (decay && options.weight_decay > 0) param.mul_(1.0 - lr * options.weight_decay);
  torch::Tensor denom = (exp_avg_sq / bias2).sqrt_().add_(options.eps);
  param.addcdiv_(exp_avg, denom, -lr / bias1);
}

}  // namespace qat::trainer
