#include "quant/quantizer.h"

#include <torch/torch.h>

#include "absl/strings/str_cat.h"

namespace qat::quant {
namespace {
constexpr double kMinScale = 1e-5;  // keeps an all-zero tensor from dividing by zero
}  // namespace

TernaryParts TernaryQuantizer::Decompose(const torch::Tensor& w) const {
  torch::NoGradGuard no_grad;
  const torch::Tensor w32 = w.detach().to(torch::kFloat32);
  torch::Tensor scale;
  if (granularity_ == Granularity::kPerTensor || w32.dim() < 2) {
    scale = w32.abs().mean().clamp_min(kMinScale).reshape({1});
  } else {
    scale = w32.abs().mean(/*dim=*/{1}, /*keepdim=*/true).clamp_min(kMinScale);
  }
  torch::Tensor trits = torch::clamp(torch::round(w32 / scale), -1, 1).to(torch::kInt8);
  return {trits, scale};
}

torch::Tensor TernaryQuantizer::FakeQuant(const torch::Tensor& w) const {
  TernaryParts parts = Decompose(w);
  torch::Tensor wq = (parts.trits.to(w.scalar_type()) * parts.scale.to(w.scalar_type()));
  // Straight-through estimator: the value of wq, the gradient of the identity.
  return w + (wq - w).detach();
}

std::string TernaryQuantizer::name() const {
  return granularity_ == Granularity::kPerTensor ? "ternary/per_tensor" : "ternary/per_channel";
}

absl::StatusOr<std::shared_ptr<WeightQuantizer>> MakeWeightQuantizer(
    const std::string& method, const std::string& granularity) {
  if (method == "none") return std::shared_ptr<WeightQuantizer>();
  Granularity g;
  if (granularity == "per_tensor") {
    g = Granularity::kPerTensor;
  } else if (granularity == "per_channel") {
    g = Granularity::kPerChannel;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "quant.granularity: unknown value '", granularity, "' (expected per_tensor or per_channel)"));
  }
  if (method == "ternary") return std::shared_ptr<WeightQuantizer>(new TernaryQuantizer(g));
  return absl::InvalidArgumentError(
      absl::StrCat("quant.method: unknown value '", method, "' (expected none or ternary)"));
}

}  // namespace qat::quant
