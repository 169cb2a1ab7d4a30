// Fake quantizers with straight-through estimators (STE).
//
// A fake quantizer maps a full-precision latent weight W [out, in] to a tensor of the same shape
// whose values lie on the quantization grid; the gradient reaches W (and a learned scale) by the
// rules below, so the optimizer keeps updating the latent weights.
//
// Every quantizer writes its result in one form, that of the packed int2/int4 formats
// (kernels/lowbit.h), so that export stores exactly the values the forward pass used:
//     Wq[r][c] = scale[r', g] * (u[r][c] - zero[r', g])    (in W's float type, subtraction first)
// with integer codes u, and a scale and a zero point per scale group: r' = 0 (per_tensor) or r,
// g = c / group_size (per_group) or 0. mean_g, max_g, min_g below run over one scale group.
//
// Scales computed from the weights at every forward pass (scale: none):
//   ternary (BitNet b1.58 absmean): s = max(mean_g|W|, 1e-5), t = clamp(round(W/s), -1, 1);
//       u = t + 1, scale s, zero 1 (so Wq = s t).
//   binary: s = max(mean_g|W|, 1e-5), b = +1 where W >= 0, else -1; u = (b + 1)/2, scale 2s,
//       zero 1/2 (so Wq = s b exactly).
//   int k symmetric (absmax over all 2^k levels, as PyTorch's symmetric observers):
//       s = max(max_g|W|, 1e-8) / (2^(k-1) - 1/2), q = clamp(round(W/s), -2^(k-1), 2^(k-1) - 1);
//       u = q + 2^(k-1), scale s, zero 2^(k-1). (2-bit: levels {-4/3, -2/3, 0, 2/3} max|W|.)
//   int k asymmetric (min/max, float zero point): lo = min_g W, hi = max_g W,
//       s = (hi - lo)/(2^k - 1), zero = -lo/s, u = clamp(round((W - lo)/s), 0, 2^k - 1).
//       A group with hi - lo <= 1e-6 max(|lo|, |hi|) (a constant) gets s = 1, zero = -lo,
//       u = 0: it is reproduced exactly.
//   Gradient: identity to W (the scale is a constant of the forward pass).
// Learned scales: a parameter alpha per scale group, used as a = max(alpha, 1e-5); v = W/a:
//   lsq (Esser et al., LSQ), int k symmetric: q = clamp(round(v), Qn, Qp), Qn = -2^(k-1);
//       u = q - Qn, scale a, zero -Qn. Init alpha = 2 mean_g|W| / sqrt(Qp) (the paper's).
//   lsq, binary (ParetoQ's 1-bit): Wq = a b as above. Init alpha = mean_g|W|.
//   seq (ParetoQ's stretched elastic quant), ternary and int k symmetric: with n = 1.5, h = 0
//       (ternary) or n = 2^(k-1), h = 1/2 (int k) and c = 0.99,
//       r = round(clamp(v, -c, c) n - h), Wq = a (r + h)/n: scale a * float(1/n), u = r + o,
//       zero o - h, with o = 1 (ternary) or n (int k). Levels: ternary {-2/3, 0, 2/3} a;
//       2-bit {-3/4, -1/4, 1/4, 3/4} a (no zero level). Init alpha = max_g|W| (ParetoQ's).
//   (Qp = 2^(k-1) - 1 for int k, 1 for ternary and binary.)
//   Gradients (as LSQ; a weight is "inside" when not clipped: Qn <= v <= Qp for lsq int,
//   |v| <= c for seq, |v| <= 1 for lsq binary):
//       dWq/dW = 1 inside, 0 outside;
//       dWq/dalpha = gs (Q(clip(v)) - v [inside]), where Q(.) = Wq/a is the level a weight gets
//       and clip() the clamp above (so a clipped weight contributes its clip level); binary:
//       gs b (ParetoQ). gs = 1/sqrt(numel(W) max(Qp, 1)) is LSQ's gradient scale; the gradient
//       is 0 where alpha < 1e-5. (ParetoQ's code uses +-1 instead of the clip level +-2/3 for
//       clipped ternary weights; we use the level, which makes the rule one formula.)
// Stored scales (scale: fixed): alpha = [scale of every group, then zero point of every group]
//   (each [R, C] flattened row-major), set by post-training quantization (ptq/ptq.h) or, for a
//   fresh model, to the statistic quantizer's values (round to nearest). codes =
//   clamp(round(W/scale + zero), 0, levels - 1) (binary: W >= 0), Wq = scale * (codes - zero).
//   Every quantizer above writes its grid in this form, so a weight already on its grid, stored
//   with its scales and zero points, is reproduced bit for bit. Gradient: identity to W, zero to
//   alpha (never trained).
// Activations (BitNet b1.58 W1.58A8): each row x (a token) becomes xq = (absmax/127) *
// round_half_even(x * (127/absmax)) (0 for an all-zero row), gradient identity, as the packed
// runtime computes it (kernels/lowbit.h).
// The forward value is scale * (u - zero) computed as in Decompose (exactly, not up to
// rounding); the gradient rules are added by terms whose value is zero (x - x.detach()), so
// double backward (the exact smoothness regularizer) works through every quantizer. The
// statistic quantizers (scale: none) are one autograd node instead, fused: their group
// statistics, then one pass over W computing each value with the same float operations (a CPU
// loop; the torch ops elsewhere), and an identity backward. Values and gradients are
// bit-identical to Decompose(w).Dequantize() + (w - w.detach()) (tests/quant_test.cc).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <torch/types.h>

#include "absl/status/statusor.h"
#include "quant/spec.h"

namespace qat::quant {

// Wq = scale * (codes - zero) per scale group (see above).
struct QuantParts {
  torch::Tensor codes;  // uint8 [out, in]
  torch::Tensor scale;  // [R, C] in W's float type: R = 1 or out, C = 1 or in / group_size
  torch::Tensor zero;   // [R, C]
  int levels = 0;       // codes lie in [0, levels): 3 (ternary), 2 (binary), 2^k (int k)
  // The values Wq [out, in], computed exactly as in the formula.
  torch::Tensor Dequantize() const;
};

class WeightQuantizer {
 public:
  explicit WeightQuantizer(QuantSpec spec) : spec_(spec) {}
  const QuantSpec& spec() const { return spec_; }
  std::string name() const { return spec_.Name(); }

  // Whether a weight [out, in] can be quantized (per_group: group_size divides in); the error
  // names `weight_name` and `key` (the recipe key of the group size).
  absl::Status CheckShape(const std::string& weight_name, const std::string& key, int64_t out,
                          int64_t in) const;
  // Shape of the learned scale of a weight [out, in] (1-D: [1], [out] or [out * in/group]);
  // empty when the scale is not learned.
  std::vector<int64_t> ScaleShape(int64_t out, int64_t in) const;
  // The papers' initial learned scale for `w` (shape ScaleShape); undefined when not learned.
  torch::Tensor InitScale(const torch::Tensor& w) const;

  // The fake-quantized weight; `alpha` is the stored scale (required iff spec().stored_scale()).
  torch::Tensor FakeQuant(const torch::Tensor& w, const torch::Tensor& alpha = {}) const;
  // The codes, scales and zero points of FakeQuant's value (no gradient).
  QuantParts Decompose(const torch::Tensor& w, const torch::Tensor& alpha = {}) const;

 private:
  QuantSpec spec_;
};

// The stored-scale tensor of scale: fixed from a grid's scale and zero [R, C] (see above).
torch::Tensor FixedScale(const torch::Tensor& scale, const torch::Tensor& zero);

// A quantizer from recipe words (method "none" gives null); errors name the key under "quant.".
absl::StatusOr<std::shared_ptr<WeightQuantizer>> MakeWeightQuantizer(const QuantWords& words);

// int8 per-token absmax fake quantization of activations x [..., features] (see above).
torch::Tensor FakeQuantActivationsInt8(const torch::Tensor& x);

}  // namespace qat::quant
