// The quantizer family: each forward against its formula written out element by element in
// double precision, the STE and learned-scale gradients against finite differences, exactness of
// the (scale, code, zero) form, activations, recipe words, distillation losses.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cctype>
#include <cmath>
#include <functional>
#include <vector>

#include "quant/distill.h"
#include "quant/quantizer.h"

namespace qat::quant {
namespace {

QuantSpec Spec(Method m, Granularity g, int bits = 2, bool symmetric = true,
               ScaleMode scale = ScaleMode::kStatistic, int64_t group = 32) {
  QuantSpec s;
  s.method = m;
  s.granularity = g;
  s.bits = bits;
  s.symmetric = symmetric;
  s.scale = scale;
  s.group_size = group;
  return s;
}

// The quantized values of one scale group (values xs, learned scale alpha if any), written
// straight from the formulas in quant/quantizer.h.
std::vector<double> ReferenceGroup(const QuantSpec& s, const std::vector<double>& xs,
                                   double alpha) {
  double mean_abs = 0, max_abs = 0, lo = xs[0], hi = xs[0];
  for (double x : xs) {
    mean_abs += std::abs(x) / xs.size();
    max_abs = std::max(max_abs, std::abs(x));
    lo = std::min(lo, x);
    hi = std::max(hi, x);
  }
  const double a = std::max(alpha, 1e-5);
  std::vector<double> out;
  for (double x : xs) {
    double q = 0;
    if (s.scale == ScaleMode::kSeq) {
      const double n = s.method == Method::kTernary ? 1.5 : std::pow(2.0, s.bits - 1);
      const double h = s.method == Method::kTernary ? 0.0 : 0.5;
      q = a * (std::nearbyint(std::clamp(x / a, -0.99, 0.99) * n - h) + h) / n;
    } else if (s.scale == ScaleMode::kLsq) {
      const double qn = -std::pow(2.0, s.bits - 1), qp = -qn - 1;
      q = s.method == Method::kBinary ? (x >= 0 ? a : -a)
                                      : a * std::clamp(std::nearbyint(x / a), qn, qp);
    } else if (s.method == Method::kTernary) {
      const double sc = std::max(mean_abs, 1e-5);
      q = sc * std::clamp(std::nearbyint(x / sc), -1.0, 1.0);
    } else if (s.method == Method::kBinary) {
      const double sc = std::max(mean_abs, 1e-5);
      q = x >= 0 ? sc : -sc;
    } else if (s.symmetric) {
      const double half = std::pow(2.0, s.bits - 1);
      const double sc = std::max(max_abs, 1e-8) / (half - 0.5);
      q = sc * std::clamp(std::nearbyint(x / sc), -half, half - 1);
    } else if (hi - lo <= 1e-6 * std::max(std::abs(lo), std::abs(hi))) {
      q = lo;
    } else {
      const double top = std::pow(2.0, s.bits) - 1, sc = (hi - lo) / top;
      q = sc * (std::clamp(std::nearbyint((x - lo) / sc), 0.0, top) + lo / sc);
    }
    out.push_back(q);
  }
  return out;
}

// The whole reference tensor: groups cut as the granularity says.
torch::Tensor Reference(const QuantSpec& s, const torch::Tensor& w, const torch::Tensor& alpha) {
  torch::Tensor w64 = w.to(torch::kFloat64).contiguous(), out = torch::empty_like(w64);
  const int64_t rows = w.size(0), cols = w.size(1);
  const int64_t G = s.granularity == Granularity::kPerGroup ? s.group_size : cols;
  const bool whole = s.granularity == Granularity::kPerTensor;
  auto a = w64.accessor<double, 2>();
  auto o = out.accessor<double, 2>();
  std::vector<double> alphas;
  if (alpha.defined()) {
    torch::Tensor a64 = alpha.to(torch::kFloat64).contiguous();
    alphas.assign(a64.data_ptr<double>(), a64.data_ptr<double>() + a64.numel());
  }
  auto run = [&](const std::vector<std::pair<int64_t, int64_t>>& cells, int64_t index) {
    std::vector<double> xs;
    for (auto [r, c] : cells) xs.push_back(a[r][c]);
    std::vector<double> q = ReferenceGroup(s, xs, alphas.empty() ? 0.0 : alphas[index]);
    for (size_t i = 0; i < cells.size(); ++i) o[cells[i].first][cells[i].second] = q[i];
  };
  if (whole) {
    std::vector<std::pair<int64_t, int64_t>> cells;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) cells.push_back({r, c});
    run(cells, 0);
    return out;
  }
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t g = 0; g < cols / G; ++g) {
      std::vector<std::pair<int64_t, int64_t>> cells;
      for (int64_t c = g * G; c < (g + 1) * G; ++c) cells.push_back({r, c});
      run(cells, r * (cols / G) + g);
    }
  }
  return out;
}

std::vector<QuantSpec> AllSpecs() {
  std::vector<QuantSpec> specs;
  for (Granularity g :
       {Granularity::kPerTensor, Granularity::kPerChannel, Granularity::kPerGroup}) {
    specs.push_back(Spec(Method::kTernary, g));
    specs.push_back(Spec(Method::kBinary, g));
    specs.push_back(Spec(Method::kTernary, g, 2, true, ScaleMode::kSeq));
    specs.push_back(Spec(Method::kBinary, g, 2, true, ScaleMode::kLsq));
    for (int bits : {2, 3, 4, 8}) {
      specs.push_back(Spec(Method::kInt, g, bits, true));
      specs.push_back(Spec(Method::kInt, g, bits, false));
      specs.push_back(Spec(Method::kInt, g, bits, true, ScaleMode::kLsq));
      if (bits <= 4) specs.push_back(Spec(Method::kInt, g, bits, true, ScaleMode::kSeq));
    }
  }
  specs.push_back(Spec(Method::kInt, Granularity::kPerGroup, 4, false, ScaleMode::kStatistic, 64));
  specs.push_back(
      Spec(Method::kTernary, Granularity::kPerGroup, 2, true, ScaleMode::kStatistic, 128));
  return specs;
}

class EveryQuantizer : public ::testing::TestWithParam<QuantSpec> {};

// Rows of different magnitudes (per-channel scales differ), one all-zero row, 256 columns.
torch::Tensor TestWeight(torch::Dtype dtype) {
  torch::manual_seed(7);
  torch::Tensor w =
      torch::randn({6, 256}, torch::kFloat64) * torch::rand({6, 1}, torch::kFloat64) * 2;
  w[3].zero_();
  return w.to(dtype);
}

TEST_P(EveryQuantizer, ForwardMatchesFormulaInDoublePrecision) {
  const QuantSpec spec = GetParam();
  WeightQuantizer q(spec);
  torch::Tensor w = TestWeight(torch::kFloat64);
  // A learned scale away from its initial value, so that some weights are clipped.
  torch::Tensor alpha = spec.learnable() ? q.InitScale(w) * 0.6 : torch::Tensor();
  torch::Tensor got = q.FakeQuant(w, alpha);
  torch::Tensor want = Reference(spec, w, alpha);
  EXPECT_TRUE(torch::allclose(got, want, 1e-12, 1e-14))
      << spec.Name() << ": max diff " << (got - want).abs().max().item<double>();
  // The distinct values of a scale group (the first 32 weights of row 0, or the whole tensor)
  // are at most the grid's levels.
  const QuantParts parts = q.Decompose(w, alpha);
  EXPECT_LT(parts.codes.max().item<int>(), parts.levels) << spec.Name();
  torch::Tensor group = spec.granularity == Granularity::kPerTensor ? got : got[0].slice(0, 0, 32);
  torch::Tensor sorted = std::get<0>(group.reshape({-1}).sort());
  const int64_t levels = 1 + (sorted.slice(0, 1) != sorted.slice(0, 0, -1)).sum().item<int64_t>();
  EXPECT_LE(levels, parts.levels) << spec.Name();
  EXPECT_GE(levels, 2) << spec.Name();
}

TEST_P(EveryQuantizer, ValueIsExactlyScaleTimesCodeMinusZeroInFloat) {
  const QuantSpec spec = GetParam();
  WeightQuantizer q(spec);
  torch::Tensor w = TestWeight(torch::kFloat32);
  torch::Tensor alpha = spec.learnable() ? q.InitScale(w) * 0.8 : torch::Tensor();
  torch::Tensor fake = q.FakeQuant(w, alpha);
  const QuantParts parts = q.Decompose(w, alpha);
  EXPECT_EQ(parts.codes.scalar_type(), torch::kUInt8);
  EXPECT_EQ(parts.scale.scalar_type(), torch::kFloat32);
  // Bit for bit: export stores (codes, scale, zero) and the runtime computes this formula.
  EXPECT_TRUE(torch::equal(fake, parts.Dequantize())) << spec.Name();
  // And element by element as kernels/lowbit.h writes it: scale * (float(q) - zero).
  auto codes = parts.codes.accessor<uint8_t, 2>();
  auto scale = parts.scale.accessor<float, 2>();
  auto zero = parts.zero.accessor<float, 2>();
  auto f = fake.accessor<float, 2>();
  const int64_t C = parts.scale.size(1), G = w.size(1) / C;
  for (int64_t r = 0; r < w.size(0); ++r) {
    const int64_t rs = parts.scale.size(0) == 1 ? 0 : r;
    for (int64_t c = 0; c < w.size(1); ++c) {
      const float value = scale[rs][c / G] * (float(codes[r][c]) - zero[rs][c / G]);
      ASSERT_EQ(value, f[r][c]) << spec.Name() << " at " << r << "," << c;
    }
  }
}

TEST_P(EveryQuantizer, GradientsMatchFiniteDifferencesOfTheSurrogate) {
  const QuantSpec spec = GetParam();
  WeightQuantizer q(spec);
  torch::Tensor w0 = TestWeight(torch::kFloat64);
  torch::Tensor alpha0 = spec.learnable() ? q.InitScale(w0) * 0.6 : torch::Tensor();
  torch::Tensor w = w0.clone().requires_grad_(true);
  torch::Tensor alpha = spec.learnable() ? alpha0.clone().requires_grad_(true) : torch::Tensor();
  torch::manual_seed(11);
  torch::Tensor upstream = torch::randn_like(w0);
  (q.FakeQuant(w, alpha) * upstream).sum().backward();
  if (!spec.learnable()) {
    // Straight-through: the gradient of the identity, exactly.
    EXPECT_TRUE(torch::equal(w.grad(), upstream)) << spec.Name();
    return;
  }
  // The surrogate whose true derivative is the documented rule: round() (or the sign) frozen at
  // the evaluation point, the clamp kept. It equals the forward value there.
  const int64_t out = w0.size(0), in = w0.size(1);
  const int64_t R = spec.granularity == Granularity::kPerTensor ? 1 : out;
  const int64_t C = spec.granularity == Granularity::kPerGroup ? in / spec.group_size : 1;
  auto broadcast = [&](const torch::Tensor& a) {
    return a.reshape({R, C, 1}).clamp_min(1e-5).expand({out, C, in / C}).reshape({out, in});
  };
  const bool binary = spec.method == Method::kBinary;
  const bool seq = spec.scale == ScaleMode::kSeq;
  const double n = spec.method == Method::kTernary ? 1.5 : std::pow(2.0, spec.bits - 1);
  const double h = spec.method == Method::kTernary ? 0.0 : 0.5;
  const double lo = binary ? -1 : seq ? -0.99 : -std::pow(2.0, spec.bits - 1);
  const double hi = binary ? 1 : seq ? 0.99 : -lo - 1;
  auto level = [&](const torch::Tensor& v) {  // Q(v) for v already clamped
    return seq ? (torch::round(v * n - h) + h) / n : torch::round(v);
  };
  const torch::Tensor a0 = broadcast(alpha0);
  const torch::Tensor v0 = torch::clamp(w0 / a0, lo, hi);
  const torch::Tensor residual = binary ? torch::zeros_like(v0) : level(v0) - v0;
  const torch::Tensor sign0 = torch::where(w0.ge(0), torch::ones_like(w0), -torch::ones_like(w0));
  auto surrogate_w = [&](const torch::Tensor& ww) {
    return a0 * (torch::clamp(ww / a0, lo, hi) + residual);
  };
  auto surrogate_alpha = [&](const torch::Tensor& aa) {
    const torch::Tensor a = broadcast(aa);
    return binary ? a * sign0 : a * (torch::clamp(w0 / a, lo, hi) + residual);
  };
  if (!binary) {
    EXPECT_TRUE(torch::allclose(surrogate_w(w0), q.FakeQuant(w0, alpha0), 1e-12, 1e-14));
  }
  const double gs =
      1.0 / std::sqrt(double(w0.numel()) * (spec.method == Method::kInt
                                                ? std::max(1.0, std::pow(2.0, spec.bits - 1) - 1)
                                                : 1.0));
  auto directional = [&](const std::function<torch::Tensor(double)>& f) {
    const double eps = 1e-7;
    return ((f(eps) * upstream).sum().item<double>() - (f(-eps) * upstream).sum().item<double>()) /
           (2 * eps);
  };
  torch::Tensor dw = torch::randn_like(w0), da = torch::randn_like(alpha0);
  const double num_w = directional([&](double e) { return surrogate_w(w0 + e * dw); });
  const double num_a = gs * directional([&](double e) { return surrogate_alpha(alpha0 + e * da); });
  const double ana_w = (w.grad() * dw).sum().item<double>();
  const double ana_a = (alpha.grad() * da).sum().item<double>();
  EXPECT_NEAR(ana_w, num_w, 1e-6 * std::max(1.0, std::abs(num_w))) << spec.Name();
  EXPECT_NEAR(ana_a, num_a, 1e-6 * std::max(1.0, std::abs(num_a))) << spec.Name();
  EXPECT_GT(std::abs(ana_a), 1e-6) << spec.Name() << ": the scale must get a gradient";
  // Some weights were clipped (alpha at 0.6 of its init; int8's LSQ range is too wide for that):
  // their gradient is cut.
  if (spec.bits != 8 || spec.method != Method::kInt) {
    EXPECT_GT((w.grad() == 0).sum().item<int64_t>(), 0) << spec.Name();
  }
}

INSTANTIATE_TEST_SUITE_P(Specs, EveryQuantizer, ::testing::ValuesIn(AllSpecs()),
                         [](const auto& info) {
                           std::string name = info.param.Name() + "_" + std::to_string(info.index);
                           for (char& ch : name) {
                             if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           }
                           return name;
                         });

// The statistic quantizers run fused (one autograd node, one pass over W): values, gradients and
// double-backward gradients bit-identical to the unfused expression
// Decompose(w).Dequantize() + (w - w.detach()), in float and double, on a weight with rows of
// different magnitudes, a zero row and constant groups (asymmetric: the flat-group branch).
TEST(FusedStatistic, BitIdenticalToTheUnfusedPath) {
  for (const QuantSpec& spec : AllSpecs()) {
    if (spec.scale != ScaleMode::kStatistic) continue;
    qat::quant::WeightQuantizer q(spec);
    at::set_num_threads(2);
    for (torch::Dtype dtype : {torch::kFloat32, torch::kFloat64}) {
      torch::manual_seed(11);
      torch::Tensor base = torch::randn({64, 256}, torch::kFloat64) *
                           torch::rand({64, 1}, torch::kFloat64).add(0.05) * 3;
      base[5].zero_();
      base[9].fill_(0.37);  // constant groups
      base = base.to(dtype);
      const torch::Tensor x = torch::randn({8, 256}, dtype);
      const torch::Tensor upstream = torch::randn({64, 256}, dtype);
      struct Out {
        torch::Tensor value, grad, grad2;
      };
      auto run = [&](bool fused) {
        torch::Tensor w = base.clone().requires_grad_(true);
        torch::Tensor xs = x.clone().requires_grad_(true);
        torch::Tensor wq = fused ? q.FakeQuant(w) : q.Decompose(w).Dequantize() + (w - w.detach());
        Out o;
        o.value = wq.detach().clone();
        // First order: the gradient to W of <wq, upstream>.
        o.grad = torch::autograd::grad({(wq * upstream).sum()}, {w}, {}, true)[0].detach().clone();
        // Second order, as the exact smoothness penalty: ||d/dx sum((x wq^T)^2)||^2 to W.
        torch::Tensor loss = torch::matmul(xs, wq.t()).pow(2).sum();
        torch::Tensor gx = torch::autograd::grad({loss}, {xs}, {}, true, true)[0];
        o.grad2 = torch::autograd::grad({gx.pow(2).sum()}, {w})[0].detach().clone();
        return o;
      };
      const Out fused = run(true), unfused = run(false);
      const std::string what = spec.Name() + (dtype == torch::kFloat32 ? " float" : " double");
      EXPECT_TRUE(torch::equal(fused.value, unfused.value)) << what;
      EXPECT_TRUE(torch::equal(fused.grad, unfused.grad)) << what;
      EXPECT_TRUE(torch::equal(fused.grad, upstream)) << what;  // the identity
      EXPECT_TRUE(torch::equal(fused.grad2, unfused.grad2)) << what;
    }
  }
}

TEST(AsymmetricInt, ReproducesConstantOffsetsExactly) {
  for (int bits : {2, 3, 4, 8}) {
    WeightQuantizer asym(Spec(Method::kInt, Granularity::kPerGroup, bits, false));
    // A constant per group (an offset with nothing else): reproduced bit for bit.
    torch::Tensor c = torch::randn({4, 3, 1}) * 5;
    torch::Tensor w = c.expand({4, 3, 32}).reshape({4, 96}).contiguous();
    EXPECT_TRUE(torch::equal(asym.FakeQuant(w), w)) << bits;
    // An offset grid c + d k (k = 0 .. 2^bits - 1): reproduced to float rounding, which the
    // symmetric quantizer (a grid through 0) cannot do.
    const int64_t levels = int64_t{1} << bits;
    torch::Tensor k = torch::arange(levels, torch::kFloat64)
                          .repeat({(256 + levels - 1) / levels})
                          .slice(0, 0, 256);
    torch::Tensor grid = (0.37 + 0.013 * k).reshape({1, 256}).to(torch::kFloat32);
    WeightQuantizer asym_row(Spec(Method::kInt, Granularity::kPerChannel, bits, false));
    WeightQuantizer sym_row(Spec(Method::kInt, Granularity::kPerChannel, bits, true));
    const double asym_err = (asym_row.FakeQuant(grid) - grid).abs().max().item<double>();
    const double sym_err = (sym_row.FakeQuant(grid) - grid).abs().max().item<double>();
    EXPECT_LT(asym_err, 1e-6) << bits;
    EXPECT_GT(sym_err, 1e-4) << bits;
  }
}

TEST(LearnedScales, InitialisedAsThePapers) {
  torch::Tensor w = TestWeight(torch::kFloat32);
  torch::Tensor mean = w.abs().mean(1), max = std::get<0>(w.abs().max(1));
  WeightQuantizer lsq4(Spec(Method::kInt, Granularity::kPerChannel, 4, true, ScaleMode::kLsq));
  EXPECT_TRUE(torch::allclose(lsq4.InitScale(w), mean * 2 / std::sqrt(7.0)));  // 2<|w|>/sqrt(Qp)
  WeightQuantizer lsq3(Spec(Method::kInt, Granularity::kPerChannel, 3, true, ScaleMode::kLsq));
  EXPECT_TRUE(torch::allclose(lsq3.InitScale(w), mean * 2 / std::sqrt(3.0)));
  WeightQuantizer seq(Spec(Method::kTernary, Granularity::kPerChannel, 2, true, ScaleMode::kSeq));
  EXPECT_TRUE(torch::equal(seq.InitScale(w), max));
  WeightQuantizer bin(Spec(Method::kBinary, Granularity::kPerChannel, 2, true, ScaleMode::kLsq));
  EXPECT_TRUE(torch::allclose(bin.InitScale(w), mean));
  WeightQuantizer group(Spec(Method::kInt, Granularity::kPerGroup, 2, true, ScaleMode::kSeq, 64));
  EXPECT_EQ(group.ScaleShape(6, 256), (std::vector<int64_t>{6 * 4}));
  EXPECT_EQ(group.InitScale(w).sizes(), torch::IntArrayRef({24}));
  EXPECT_TRUE(
      WeightQuantizer(Spec(Method::kTernary, Granularity::kPerChannel)).ScaleShape(6, 256).empty());
  // SEQ ternary at its init: levels -2/3, 0, 2/3 of max|W|.
  torch::Tensor t = seq.FakeQuant(w, seq.InitScale(w)) / max.unsqueeze(1).clamp_min(1e-5);
  for (double v : {-2.0 / 3, 0.0, 2.0 / 3}) {
    EXPECT_GT(((t - v).abs() < 1e-6).sum().item<int64_t>(), 0) << v;
  }
}

TEST(Activations, Int8PerTokenAbsmaxWithIdentityGradient) {
  torch::manual_seed(5);
  torch::Tensor x = torch::randn({2, 3, 40}, torch::kFloat64) * 3;
  x[1][2].zero_();
  x = x.requires_grad_(true);
  torch::Tensor y = FakeQuantActivationsInt8(x);
  const torch::Tensor xd = x.detach(), yd = y.detach();
  auto xa = xd.accessor<double, 3>();
  auto ya = yd.accessor<double, 3>();
  for (int b = 0; b < 2; ++b) {
    for (int t = 0; t < 3; ++t) {
      double absmax = 0;
      for (int c = 0; c < 40; ++c) absmax = std::max(absmax, std::abs(xa[b][t][c]));
      for (int c = 0; c < 40; ++c) {
        const double want =
            absmax == 0 ? 0 : (absmax / 127) * std::nearbyint(xa[b][t][c] * (127 / absmax));
        ASSERT_NEAR(ya[b][t][c], want, 1e-12 * absmax) << b << t << c;
      }
    }
  }
  EXPECT_EQ(y[1][2].abs().sum().item<double>(), 0.0);
  torch::Tensor g = torch::randn_like(x);
  (y * g).sum().backward();
  EXPECT_TRUE(torch::equal(x.grad(), g));
}

TEST(QuantSpec, BadWordsNameTheKey) {
  struct Case {
    QuantWords words;
    const char* key;
  };
  auto words = [](auto edit) {
    QuantWords w;
    edit(w);
    return w;
  };
  const std::vector<Case> cases = {
      {words([](QuantWords& w) { w.method = "quinary"; }), "quant.method"},
      {words([](QuantWords& w) { w.method = "int", w.bits = 5; }), "quant.bits"},
      {words([](QuantWords& w) { w.method = "int", w.bits = 1; }), "quant.bits"},
      {words([](QuantWords& w) { w.granularity = "per_row"; }), "quant.granularity"},
      {words([](QuantWords& w) { w.granularity = "per_group", w.group_size = 48; }),
       "quant.group_size"},
      {words([](QuantWords& w) { w.scale = "lsq"; }), "quant.scale"},  // ternary learns with seq
      {words([](QuantWords& w) { w.method = "binary", w.scale = "seq"; }), "quant.scale"},
      {words([](QuantWords& w) { w.method = "int", w.symmetric = false, w.scale = "lsq"; }),
       "quant.scale"},
      {words([](QuantWords& w) { w.symmetric = false; }), "quant.symmetric"},
      {words([](QuantWords& w) { w.scale = "magic"; }), "quant.scale"},
      {words([](QuantWords& w) { w.activations = "int4"; }), "quant.activations"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<QuantSpec> spec = MakeQuantSpec(c.words, "quant.");
    ASSERT_FALSE(spec.ok()) << c.key;
    EXPECT_NE(spec.status().message().find(c.key), std::string::npos) << spec.status().message();
  }
  EXPECT_EQ(MakeWeightQuantizer(words([](QuantWords& w) { w.method = "none"; })).value(), nullptr);
  QuantSpec ok = MakeQuantSpec(words([](QuantWords& w) {
                                 w.method = "int", w.bits = 3, w.granularity = "per_group",
                                 w.group_size = 64, w.scale = "lsq", w.activations = "int8";
                               }),
                               "quant.")
                     .value();
  EXPECT_EQ(ok.Name(), "int3/sym/per_group64/lsq/a8");
  // A group size that does not divide the layer: the error names layer and key.
  WeightQuantizer q(ok);
  absl::Status s = q.CheckShape("model.layers.1.mlp.down_proj.weight", "quant.group_size", 8, 96);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("model.layers.1.mlp.down_proj.weight"), std::string::npos);
  EXPECT_NE(s.message().find("quant.group_size = 64"), std::string::npos);
  EXPECT_TRUE(q.CheckShape("w", "quant.group_size", 8, 128).ok());
}

TEST(Distill, KlIsZeroForIdenticalLogitsAndMatchesDefinition) {
  torch::manual_seed(1);
  torch::Tensor s = torch::randn({2, 3, 11}), t = torch::randn({2, 3, 11});
  EXPECT_NEAR(KlDistillLoss(s, s, 2.0).item<double>(), 0.0, 1e-6);
  const double T = 2.0;
  torch::Tensor p = torch::softmax(t.to(torch::kFloat64) / T, -1);
  torch::Tensor q = torch::softmax(s.to(torch::kFloat64) / T, -1);
  double expected = (p * (p.log() - q.log())).sum(-1).mean().item<double>() * T * T;
  EXPECT_NEAR(KlDistillLoss(s, t, T).item<double>(), expected, 1e-5);
}

TEST(Distill, HiddenStateMseIsTheMeanOverBlocks) {
  torch::Tensor a = torch::zeros({2, 3, 4}), b = torch::ones({2, 3, 4});
  torch::Tensor c = torch::full({2, 3, 4}, 3.0);
  // Block 0: (0-1)^2 = 1; block 1: (3-1)^2 = 4 -> mean 2.5.
  EXPECT_NEAR(HiddenStateMse({a, c}, {b, b}).item<double>(), 2.5, 1e-12);
  torch::Tensor s = c.clone().requires_grad_(true);
  HiddenStateMse({s}, {b}).backward();
  EXPECT_NEAR(s.grad()[0][0][0].item<double>(), 2.0 * 2 / 24, 1e-6);  // d/ds mean((s-t)^2)
}

}  // namespace
}  // namespace qat::quant
