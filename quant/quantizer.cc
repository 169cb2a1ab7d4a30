#include "quant/quantizer.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace qat::quant {
namespace {

constexpr double kMinMeanScale = 1e-5;   // absmean floor (BitNet): an all-zero group stays finite
constexpr double kMinAbsmax = 1e-8;      // absmax floor of symmetric int k
constexpr double kMinAlpha = 1e-5;       // learned scales are used as max(alpha, 1e-5) (ParetoQ)
constexpr double kSeqClip = 0.99;        // SEQ's clamp of W/alpha (ParetoQ's 1 - 1e-2)
constexpr double kConstantGroup = 1e-6;  // asymmetric: relative range below which a group is flat

// Quantizers compute in fp64 for fp64 weights (the gradient checks) and in fp32 otherwise.
torch::ScalarType ComputeType(const torch::Tensor& w) {
  return w.scalar_type() == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
}

// How a weight [out, in] is cut into scale groups: viewed as [out, C, G], scales are [R, C, 1].
struct Layout {
  int64_t out = 0, in = 0, R = 1, C = 1, G = 0;
};

Layout LayoutOf(const QuantSpec& spec, const torch::Tensor& w) {
  TORCH_CHECK(w.dim() == 2, "fake quantizers take 2-D weights, got ", w.sizes());
  Layout l;
  l.out = w.size(0);
  l.in = w.size(1);
  l.R = spec.granularity == Granularity::kPerTensor ? 1 : l.out;
  l.G = spec.granularity == Granularity::kPerGroup ? spec.group_size : l.in;
  TORCH_CHECK(l.in % l.G == 0, "group size ", l.G, " does not divide ", l.in);
  l.C = l.in / l.G;
  return l;
}

// Mean / max / min over each scale group of x [out, C, G] -> [R, C, 1].
torch::Tensor GroupMean(const torch::Tensor& x, const Layout& l) {
  return l.R == 1 ? x.mean().reshape({1, 1, 1}) : x.mean(/*dim=*/{2}, /*keepdim=*/true);
}
torch::Tensor GroupMax(const torch::Tensor& x, const Layout& l) {
  return l.R == 1 ? x.max().reshape({1, 1, 1}) : std::get<0>(x.max(/*dim=*/2, /*keepdim=*/true));
}
torch::Tensor GroupMin(const torch::Tensor& x, const Layout& l) {
  return l.R == 1 ? x.min().reshape({1, 1, 1}) : std::get<0>(x.min(/*dim=*/2, /*keepdim=*/true));
}

// t / d as an elementwise division of two tensors: libtorch's CUDA kernels turn a division by a
// scalar into a multiplication by its reciprocal, which would make GPU training and CPU export
// disagree in the last bit.
torch::Tensor Div(const torch::Tensor& t, double d) { return t / torch::full_like(t, d); }

// LSQ's Qp: the largest positive integer level of int k (1 for ternary and binary).
double PositiveLevels(const QuantSpec& spec) {
  return spec.method == Method::kInt ? std::max(1.0, std::ldexp(1.0, spec.bits - 1) - 1.0) : 1.0;
}

// SEQ's constants: v -> r = round(clamp(v, -c, c) n - h), level (r + h)/n, code r + o.
struct SeqConstants {
  double n, h, o;
};
SeqConstants Seq(const QuantSpec& spec) {
  if (spec.method == Method::kTernary) return {1.5, 0.0, 1.0};
  const double n = std::ldexp(1.0, spec.bits - 1);
  return {n, 0.5, n};
}

}  // namespace

torch::Tensor QuantParts::Dequantize() const {
  const int64_t out = codes.size(0), in = codes.size(1), C = scale.size(1);
  torch::Tensor u = codes.reshape({out, C, in / C}).to(scale.scalar_type());
  return (scale.unsqueeze(-1) * (u - zero.unsqueeze(-1))).reshape({out, in});
}

absl::Status WeightQuantizer::CheckShape(const std::string& weight_name, const std::string& key,
                                         int64_t out, int64_t in) const {
  if (out < 1 || in < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(weight_name, ": cannot quantize an empty weight [", out, ", ", in, "]"));
  }
  if (spec_.granularity == Granularity::kPerGroup && in % spec_.group_size != 0) {
    return absl::InvalidArgumentError(absl::StrCat(key, " = ", spec_.group_size,
                                                   " does not divide the input size ", in, " of ",
                                                   weight_name, " [", out, ", ", in, "]"));
  }
  return absl::OkStatus();
}

std::vector<int64_t> WeightQuantizer::ScaleShape(int64_t out, int64_t in) const {
  if (!spec_.stored_scale()) return {};
  int64_t groups = 1;
  switch (spec_.granularity) {
    case Granularity::kPerTensor:
      break;
    case Granularity::kPerChannel:
      groups = out;
      break;
    case Granularity::kPerGroup:
      groups = out * (in / spec_.group_size);
      break;
  }
  // fixed: every group's scale, then every group's zero point.
  return {spec_.scale == ScaleMode::kFixed ? 2 * groups : groups};
}

torch::Tensor WeightQuantizer::InitScale(const torch::Tensor& w) const {
  if (!spec_.stored_scale()) return {};
  if (spec_.scale == ScaleMode::kFixed) {
    // The statistic quantizer's scales and zero points of these weights (round to nearest).
    QuantSpec statistic = spec_;
    statistic.scale = ScaleMode::kStatistic;
    const QuantParts parts = WeightQuantizer(statistic).Decompose(w);
    return FixedScale(parts.scale, parts.zero).to(w.scalar_type());
  }
  torch::NoGradGuard no_grad;
  const Layout l = LayoutOf(spec_, w);
  torch::Tensor a = w.detach().to(ComputeType(w)).reshape({l.out, l.C, l.G}).abs();
  torch::Tensor alpha;
  if (spec_.scale == ScaleMode::kSeq) {
    alpha = GroupMax(a, l);  // ParetoQ: max |W| for ternary and 2-bit
  } else if (spec_.method == Method::kBinary) {
    alpha = GroupMean(a, l);  // ParetoQ: mean |W| for 1-bit
  } else {
    alpha = GroupMean(a, l) * (2.0 / std::sqrt(PositiveLevels(spec_)));  // LSQ: 2<|w|>/sqrt(Qp)
  }
  return alpha.reshape(ScaleShape(l.out, l.in)).to(w.scalar_type());
}

torch::Tensor FixedScale(const torch::Tensor& scale, const torch::Tensor& zero) {
  return torch::cat({scale.reshape({-1}), zero.reshape({-1}).to(scale.scalar_type())});
}

namespace {

// The levels of a quantizer's codes: 3 (ternary), 2 (binary), 2^k (int k).
int Levels(const QuantSpec& spec) {
  if (spec.method == Method::kTernary) return 3;
  if (spec.method == Method::kBinary) return 2;
  return 1 << spec.bits;
}

// The quantizer's grid point of every weight, in float: Wq = scale * (codes - zero).
struct Grid {
  Layout l;
  torch::Tensor codes;        // [out, C, G], integer values in the compute type (or bool)
  torch::Tensor scale;        // [R, C, 1]
  torch::Tensor zero_tensor;  // [R, C, 1] for the asymmetric quantizer, else undefined
  double zero = 0.0;          // the zero point of every other quantizer
  int levels = 0;
};

// The group statistics of a statistic quantizer (scale: none) for w3 [out, C, G] and the constants
// of its codes: codes = clamp(round(w3 / scale), cmin, cmax) + offset, or for the asymmetric one
// clamp(round((w3 - lo) / scale), cmin, cmax) (0 in a flat group) with a zero point per group,
// or w3 >= 0 for binary; the value is scale * (codes - zero point).
struct StatisticGrid {
  torch::Tensor scale;     // [R, C, 1]
  torch::Tensor lo, flat;  // asymmetric: the group minimum and the constant groups; else undefined
  torch::Tensor zero_tensor;  // asymmetric: [R, C, 1]; else undefined
  double zero = 0.0, cmin = 0.0, cmax = 0.0, offset = 0.0;
  bool binary = false;
};

StatisticGrid StatisticParams(const QuantSpec& spec, const torch::Tensor& w3, const Layout& l) {
  StatisticGrid st;
  if (spec.method == Method::kTernary) {
    st.scale = GroupMean(w3.abs(), l).clamp_min(kMinMeanScale);
    st.cmin = -1.0, st.cmax = 1.0, st.offset = 1.0, st.zero = 1.0;
  } else if (spec.method == Method::kBinary) {
    st.binary = true;
    st.scale = GroupMean(w3.abs(), l).clamp_min(kMinMeanScale) * 2.0;
    st.zero = 0.5;
  } else if (spec.symmetric) {
    const double half = std::ldexp(1.0, spec.bits - 1);
    st.scale = Div(GroupMax(w3.abs(), l).clamp_min(kMinAbsmax), half - 0.5);
    st.cmin = -half, st.cmax = half - 1.0, st.offset = half, st.zero = half;
  } else {
    const double top = std::ldexp(1.0, spec.bits) - 1.0;
    st.lo = GroupMin(w3, l);
    const torch::Tensor hi = GroupMax(w3, l);
    st.flat = (hi - st.lo).le(torch::maximum(st.lo.abs(), hi.abs()) * kConstantGroup);
    st.scale = torch::where(st.flat, torch::ones_like(st.lo), Div(hi - st.lo, top));
    st.zero_tensor = torch::where(st.flat, -st.lo, -st.lo / st.scale);
    st.cmin = 0.0, st.cmax = top;
  }
  return st;
}

Grid Quantize(const QuantSpec& spec, const torch::Tensor& w, const torch::Tensor& alpha) {
  torch::NoGradGuard no_grad;
  const Layout l = LayoutOf(spec, w);
  const torch::ScalarType ct = ComputeType(w);
  const torch::Tensor w3 = w.detach().to(ct).reshape({l.out, l.C, l.G});
  Grid p;
  p.l = l;
  p.levels = Levels(spec);
  torch::Tensor codes, scale;
  double zero = 0.0;
  torch::Tensor zero_tensor;
  if (spec.scale == ScaleMode::kFixed) {
    TORCH_CHECK(alpha.defined() && alpha.numel() == 2 * l.R * l.C, "quantizer ", spec.Name(),
                " needs ", 2 * l.R * l.C, " stored scales and zero points");
    const torch::Tensor a = alpha.detach().to(ct).reshape({2, l.R, l.C, 1});
    scale = a[0];
    zero_tensor = a[1];
    codes = spec.method == Method::kBinary
                ? w3.ge(0)
                : torch::clamp(torch::round(w3 / scale + zero_tensor), 0.0, p.levels - 1.0);
  } else if (spec.learnable()) {
    TORCH_CHECK(alpha.defined() && alpha.numel() == l.R * l.C, "quantizer ", spec.Name(),
                " needs a learned scale of ", l.R * l.C, " values");
    torch::Tensor a = alpha.detach().to(ct).reshape({l.R, l.C, 1}).clamp_min(kMinAlpha);
    torch::Tensor v = w3 / a;
    if (spec.method == Method::kBinary) {
      codes = w3.ge(0);
      scale = a * 2.0;
      zero = 0.5;
    } else if (spec.scale == ScaleMode::kLsq) {
      const double qn = -std::ldexp(1.0, spec.bits - 1), qp = -qn - 1.0;
      codes = torch::clamp(torch::round(v), qn, qp) - qn;
      scale = a;
      zero = -qn;
    } else {
      const SeqConstants s = Seq(spec);
      codes = torch::round(torch::clamp(v, -kSeqClip, kSeqClip) * s.n - s.h) + s.o;
      scale = a * (1.0 / s.n);  // the float of 1/n: exact for int k, 2/3 rounded for ternary
      zero = s.o - s.h;
    }
  } else {
    const StatisticGrid st = StatisticParams(spec, w3, l);
    scale = st.scale;
    zero = st.zero;
    zero_tensor = st.zero_tensor;
    if (st.binary) {
      codes = w3.ge(0);
    } else if (st.lo.defined()) {
      codes = torch::where(st.flat, torch::zeros_like(w3),
                           torch::clamp(torch::round((w3 - st.lo) / scale), st.cmin, st.cmax));
    } else {
      codes = torch::clamp(torch::round(w3 / scale), st.cmin, st.cmax) + st.offset;
    }
  }
  p.codes = codes;
  p.scale = scale;
  p.zero_tensor = zero_tensor;
  p.zero = zero;
  return p;
}

// A grid's values in `type`: scale * (codes - zero), the float operations of
// QuantParts::Dequantize without the uint8 round trip.
torch::Tensor GridValue(const Grid& g, torch::ScalarType type) {
  const torch::Tensor u = g.codes.to(g.scale.scalar_type());
  return (g.zero_tensor.defined() ? g.scale * (u - g.zero_tensor) : g.scale * (u - g.zero))
      .reshape({g.l.out, g.l.in})
      .to(type);
}

}  // namespace

namespace {

// Round half to even (std::nearbyint in the default rounding mode, as torch::round), written so
// that the loop vectorizes without SSE4.1: below 2^22 (2^51 for double) in magnitude, adding and
// subtracting 1.5 * 2^23 (2^52) leaves the nearest integer, ties to even; larger values are
// integers already. Only the sign of a zero result can differ from nearbyint (+0 for -0.3), and
// every caller adds or subtracts a nonzero constant or an offset >= 0 afterwards, which erases it.
template <typename T>
inline T RoundHalfEven(T v) {
  constexpr bool kFloat = sizeof(T) == 4;
  const T magic = kFloat ? T(12582912.0) : T(6755399441055744.0);
  const T limit = kFloat ? T(4194304.0) : T(2251799813685248.0);
  return std::abs(v) < limit ? (v + magic) - magic : v;
}

template <typename T>
void StatisticLoop(const T* w, T* out, int64_t out_rows, int64_t C, int64_t G, int64_t R,
                   const T* scale, const T* lo, const bool* flat, const T* zero_t, double zero,
                   double cmin, double cmax, double offset, bool binary) {
  const T tmin = static_cast<T>(cmin), tmax = static_cast<T>(cmax);
  const T toff = static_cast<T>(offset), tzero = static_cast<T>(zero);
  at::parallel_for(0, out_rows * C, 16, [&](int64_t begin, int64_t end) {
    for (int64_t rc = begin; rc < end; ++rc) {
      const int64_t g =
          R == 1 ? rc % C : rc;  // the [R, C] scale group of row rc / C, column rc % C
      const T s = scale[g];
      const T* wg = w + rc * G;
      T* og = out + rc * G;
      if (binary) {
        for (int64_t i = 0; i < G; ++i) og[i] = s * ((wg[i] >= 0 ? T(1) : T(0)) - tzero);
      } else if (lo != nullptr) {  // asymmetric: codes of (W - lo) / s, a zero point per group
        const T l = lo[g], z = zero_t[g];
        if (flat[g]) {
          for (int64_t i = 0; i < G; ++i) og[i] = s * (T(0) - z);
        } else {
          for (int64_t i = 0; i < G; ++i) {
            T v = RoundHalfEven((wg[i] - l) / s);
            v = v < tmin ? tmin : (v > tmax ? tmax : v);
            og[i] = s * (v - z);
          }
        }
      } else {
        for (int64_t i = 0; i < G; ++i) {
          T v = RoundHalfEven(wg[i] / s);
          v = v < tmin ? tmin : (v > tmax ? tmax : v);
          og[i] = s * ((v + toff) - tzero);
        }
      }
    }
  });
}

// FakeQuant's value (no gradient) for a statistic quantizer (scale: none). For a CPU float/double
// weight: the group statistics as Quantize computes them (StatisticParams), then one pass over W
// that computes each element's code and value with Quantize's and FakeQuant's float operations
// (divide, round half to even, clamp, add the offset; subtract the zero point, multiply by the
// scale), so the result is bit-identical to the unfused path without its six full-size temporaries.
torch::Tensor StatisticValue(const QuantSpec& spec, const torch::Tensor& w) {
  torch::NoGradGuard no_grad;
  const bool loop = w.device().is_cpu() &&
                    (w.scalar_type() == torch::kFloat32 || w.scalar_type() == torch::kFloat64);
  if (!loop) return GridValue(Quantize(spec, w, torch::Tensor()), w.scalar_type());  // CUDA, halves
  const Layout l = LayoutOf(spec, w);
  const torch::Tensor w3 = w.detach().reshape({l.out, l.C, l.G}).contiguous();
  const StatisticGrid st = StatisticParams(spec, w3, l);
  const torch::Tensor scale = st.scale.contiguous();
  const torch::Tensor lo = st.lo.defined() ? st.lo.contiguous() : st.lo;
  const torch::Tensor flat = st.flat.defined() ? st.flat.contiguous() : st.flat;
  const torch::Tensor zero_t =
      st.zero_tensor.defined() ? st.zero_tensor.contiguous() : st.zero_tensor;
  torch::Tensor out = torch::empty_like(w3);
  AT_DISPATCH_FLOATING_TYPES(w3.scalar_type(), "fake_quant", [&] {
    StatisticLoop<scalar_t>(w3.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), l.out, l.C, l.G, l.R,
                            scale.data_ptr<scalar_t>(),
                            lo.defined() ? lo.data_ptr<scalar_t>() : nullptr,
                            flat.defined() ? flat.data_ptr<bool>() : nullptr,
                            zero_t.defined() ? zero_t.data_ptr<scalar_t>() : nullptr, st.zero,
                            st.cmin, st.cmax, st.offset, st.binary);
  });
  return out.reshape({l.out, l.in});
}

// A statistic quantizer as one autograd node: the value above forward, the straight-through
// identity backward (the gradient passes to W unchanged, and double backward sees an identity).
// Replaces `exact + (w - w.detach())`, whose subtraction, addition and two backward nodes cost
// passes over every weight at every forward.
class StraightThroughStatistic : public torch::autograd::Function<StraightThroughStatistic> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext*, const torch::Tensor& w,
                               const QuantSpec* spec) {
    return StatisticValue(*spec, w);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext*,
                                                 torch::autograd::variable_list grad) {
    return {grad[0], torch::Tensor()};
  }
};

}  // namespace

QuantParts WeightQuantizer::Decompose(const torch::Tensor& w, const torch::Tensor& alpha) const {
  const Grid g = Quantize(spec_, w, alpha);
  QuantParts p;
  p.levels = g.levels;
  p.codes = g.codes.to(torch::kUInt8).reshape({g.l.out, g.l.in});
  p.scale = g.scale.reshape({g.scale.size(0), g.l.C}).contiguous();
  p.zero = g.zero_tensor.defined() ? g.zero_tensor.reshape({g.scale.size(0), g.l.C}).contiguous()
                                   : torch::full_like(p.scale, g.zero);
  return p;
}

torch::Tensor WeightQuantizer::FakeQuant(const torch::Tensor& w, const torch::Tensor& alpha) const {
  if (spec_.scale == ScaleMode::kStatistic) return StraightThroughStatistic::apply(w, &spec_);
  torch::Tensor exact;
  {
    torch::NoGradGuard no_grad;
    exact = GridValue(Quantize(spec_, w, alpha), w.scalar_type());
  }
  // Straight-through: the value of `exact`, the gradient of the identity (w - w.detach() is 0).
  if (spec_.scale == ScaleMode::kFixed) {
    // The stored scales get an exact zero gradient rather than none, so that every parameter of
    // a layer takes part in each backward pass (sharded training counts them, sharding.cc).
    return exact + (w - w.detach()) + (alpha - alpha.detach()).sum().to(w.scalar_type()) * 0.0;
  }

  const Layout l = LayoutOf(spec_, w);
  const torch::ScalarType ct = ComputeType(w);
  torch::Tensor a_live = alpha.reshape({l.R, l.C, 1}).to(ct).clamp_min(kMinAlpha);
  torch::Tensor inside, dalpha;  // dWq/dW and dWq/da per weight, [out, C, G], no gradient
  {
    torch::NoGradGuard no_grad;
    const torch::Tensor v = w.detach().to(ct).reshape({l.out, l.C, l.G}) / a_live.detach();
    if (spec_.method == Method::kBinary) {
      inside = v.abs().le(1.0);
      dalpha = torch::where(v.ge(0), torch::ones_like(v), -torch::ones_like(v));
    } else if (spec_.scale == ScaleMode::kLsq) {
      const double qn = -std::ldexp(1.0, spec_.bits - 1), qp = -qn - 1.0;
      inside = v.ge(qn).logical_and(v.le(qp));
      dalpha = torch::round(torch::clamp(v, qn, qp)) - v * inside;
    } else {
      const SeqConstants s = Seq(spec_);
      inside = v.abs().le(kSeqClip);
      const torch::Tensor level =
          (torch::round(torch::clamp(v, -kSeqClip, kSeqClip) * s.n - s.h) + s.h) / s.n;
      dalpha = level - v * inside;
    }
    dalpha = dalpha * (1.0 / std::sqrt(double(w.numel()) * PositiveLevels(spec_)));
  }
  torch::Tensor w_term = (w - w.detach()) * inside.reshape({l.out, l.in}).to(w.scalar_type());
  torch::Tensor a_term = ((a_live - a_live.detach()) * dalpha).reshape({l.out, l.in});
  return exact + w_term + a_term.to(w.scalar_type());
}

absl::StatusOr<std::shared_ptr<WeightQuantizer>> MakeWeightQuantizer(const QuantWords& words) {
  if (words.method == "none") return std::shared_ptr<WeightQuantizer>();
  absl::StatusOr<QuantSpec> spec = MakeQuantSpec(words, "quant.");
  if (!spec.ok()) return spec.status();
  return std::make_shared<WeightQuantizer>(*spec);
}

torch::Tensor FakeQuantActivationsInt8(const torch::Tensor& x) {
  torch::Tensor xq;
  {
    torch::NoGradGuard no_grad;
    const bool half = x.scalar_type() == torch::kBFloat16 || x.scalar_type() == torch::kHalf;
    torch::Tensor xf = half ? x.detach().to(torch::kFloat32) : x.detach();
    torch::Tensor absmax = xf.abs().amax(/*dim=*/{-1}, /*keepdim=*/true);
    torch::Tensor zero_row = absmax.eq(0);
    // As the kernels: q = round_half_even(x * (127 / absmax)), x' = (absmax / 127) * q.
    torch::Tensor inv =
        torch::where(zero_row, torch::zeros_like(absmax), torch::full_like(absmax, 127.0) / absmax);
    torch::Tensor q = torch::clamp(torch::round(xf * inv), -127, 127);
    xq = (Div(absmax, 127.0) * q).to(x.scalar_type());
  }
  return xq + (x - x.detach());
}

}  // namespace qat::quant
