// Fake quantizers with straight-through estimators (STE).
//
// A fake quantizer maps a full-precision latent weight W to a tensor of the same shape whose
// values lie on the quantization grid, and lets the gradient pass to W unchanged (STE:
// forward Wq, backward identity), so the optimizer keeps updating the latent weights.
//
// Ternary absmean (BitNet b1.58): s = max(mean|W|, 1e-5) over the tensor (per_tensor) or over
// each output row (per_channel); t = clamp(round(W / s), -1, 1); Wq = s * t.
// Export uses the very same decomposition (Decompose), so a packed model reproduces the
// fake-quantized one exactly, up to float summation order.
#pragma once

#include <memory>
#include <string>

#include <torch/types.h>

#include "absl/status/statusor.h"

namespace qat::quant {

enum class Granularity { kPerTensor, kPerChannel };

// The integer grid point and the scale of every weight: Wq = scale * trits, where scale has
// shape [1] (per tensor) or [out, 1] (per channel).
struct TernaryParts {
  torch::Tensor trits;  // int8, same shape as W, values in {-1, 0, 1}
  torch::Tensor scale;  // float32
};

class WeightQuantizer {
 public:
  virtual ~WeightQuantizer() = default;
  // The fake-quantized weight, differentiable with respect to w through the STE.
  virtual torch::Tensor FakeQuant(const torch::Tensor& w) const = 0;
  virtual std::string name() const = 0;
};

class TernaryQuantizer : public WeightQuantizer {
 public:
  explicit TernaryQuantizer(Granularity granularity) : granularity_(granularity) {}
  torch::Tensor FakeQuant(const torch::Tensor& w) const override;
  std::string name() const override;
  // Exact decomposition used by FakeQuant and by export.
  TernaryParts Decompose(const torch::Tensor& w) const;
  Granularity granularity() const { return granularity_; }

 private:
  Granularity granularity_;
};

// Builds a quantizer from recipe words: method "none" (returns null) or "ternary";
// granularity "per_tensor" or "per_channel". Errors name the bad value.
absl::StatusOr<std::shared_ptr<WeightQuantizer>> MakeWeightQuantizer(const std::string& method,
                                                                     const std::string& granularity);

}  // namespace qat::quant
