#include "trainer/optimizer.h"

#include <torch/torch.h>

#include <cmath>

#include "absl/strings/str_cat.h"

namespace qat::trainer {

AdamW::AdamW(std::vector<std::pair<std::string, torch::Tensor>> params, Options options)
    : options_(options) {
  for (auto& [name, p] : params) {
    // Decay applies to weight matrices; gains (RMSNorm) and other vectors are left alone.
    slots_.push_back({name, p, torch::zeros_like(p), torch::zeros_like(p), p.dim() >= 2});
  }
}

void AdamW::Step(double lr) {
  torch::NoGradGuard no_grad;
  ++step_;
  const double bias1 = 1.0 - std::pow(options_.beta1, double(step_));
  const double bias2 = 1.0 - std::pow(options_.beta2, double(step_));
  for (Slot& s : slots_) {
    const torch::Tensor& g = s.param.grad();
    if (!g.defined()) continue;
    s.exp_avg.mul_(options_.beta1).add_(g, 1.0 - options_.beta1);
    s.exp_avg_sq.mul_(options_.beta2).addcmul_(g, g, 1.0 - options_.beta2);
    if (s.decay && options_.weight_decay > 0) s.param.mul_(1.0 - lr * options_.weight_decay);
    torch::Tensor denom = (s.exp_avg_sq / bias2).sqrt_().add_(options_.eps);
    s.param.addcdiv_(s.exp_avg, denom, -lr / bias1);
  }
}

TensorMap AdamW::State() const {
  TensorMap state;
  for (const Slot& s : slots_) {
    state[s.name + ".exp_avg"] = s.exp_avg;
    state[s.name + ".exp_avg_sq"] = s.exp_avg_sq;
  }
  return state;
}

absl::Status AdamW::LoadState(const TensorMap& state, int64_t step, const std::string& origin) {
  torch::NoGradGuard no_grad;
  for (Slot& s : slots_) {
    for (auto [suffix, dst] : {std::pair{".exp_avg", &s.exp_avg}, {".exp_avg_sq", &s.exp_avg_sq}}) {
      auto it = state.find(s.name + suffix);
      if (it == state.end()) {
        return absl::NotFoundError(absl::StrCat(origin, ": missing optimizer tensor '", s.name,
                                                suffix, "'"));
      }
      if (!it->second.sizes().equals(dst->sizes())) {
        return absl::InvalidArgumentError(
            absl::StrCat(origin, ": optimizer tensor '", s.name, suffix, "' has the wrong shape"));
      }
      dst->copy_(it->second);
    }
  }
  step_ = step;
  return absl::OkStatus();
}

}  // namespace qat::trainer
