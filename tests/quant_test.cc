// The ternary fake quantizer: forward equals the absmean formula, backward is the identity (STE).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "quant/distill.h"
#include "quant/quantizer.h"

namespace qat::quant {
namespace {

// The BitNet b1.58 formula written out element by element in double precision.
torch::Tensor ReferenceTernary(const torch::Tensor& w, bool per_channel) {
  torch::Tensor w64 = w.to(torch::kFloat64);
  torch::Tensor out = torch::empty_like(w64);
  auto a = w64.accessor<double, 2>();
  auto o = out.accessor<double, 2>();
  const int64_t rows = w.size(0), cols = w.size(1);
  double total = 0;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) total += std::abs(a[r][c]);
  for (int64_t r = 0; r < rows; ++r) {
    double s = 0;
    if (per_channel) {
      for (int64_t c = 0; c < cols; ++c) s += std::abs(a[r][c]);
      s /= cols;
    } else {
      s = total / (rows * cols);
    }
    s = std::max(s, 1e-5);
    for (int64_t c = 0; c < cols; ++c) {
      o[r][c] = s * std::clamp(std::nearbyint(a[r][c] / s), -1.0, 1.0);
    }
  }
  return out;
}

class TernaryTest : public ::testing::TestWithParam<bool> {};

TEST_P(TernaryTest, ForwardMatchesFormulaAndBackwardIsIdentity) {
  const bool per_channel = GetParam();
  torch::manual_seed(3);
  TernaryQuantizer q(per_channel ? Granularity::kPerChannel : Granularity::kPerTensor);
  torch::Tensor w = (torch::randn({7, 13}) * torch::rand({7, 1}) * 3).requires_grad_(true);
  torch::Tensor wq = q.FakeQuant(w);
  torch::Tensor expected = ReferenceTernary(w.detach(), per_channel).to(torch::kFloat32);
  EXPECT_TRUE(torch::allclose(wq, expected, 1e-6, 1e-7));
  // Three levels per scale group, and all of them used for a random matrix.
  torch::Tensor g = torch::randn({7, 13});
  (wq * g).sum().backward();
  EXPECT_TRUE(torch::equal(w.grad(), g));

  TernaryParts parts = q.Decompose(w);
  EXPECT_EQ(parts.trits.scalar_type(), torch::kInt8);
  EXPECT_LE(parts.trits.abs().max().item<int>(), 1);
  EXPECT_TRUE(torch::allclose(parts.trits.to(torch::kFloat32) * parts.scale, wq.detach()));
  EXPECT_EQ(parts.scale.numel(), per_channel ? 7 : 1);
}

INSTANTIATE_TEST_SUITE_P(Granularity, TernaryTest, ::testing::Bool());

TEST(TernaryQuantizer, ZeroWeightsStayFinite) {
  TernaryQuantizer q(Granularity::kPerTensor);
  torch::Tensor wq = q.FakeQuant(torch::zeros({4, 4}));
  EXPECT_TRUE(torch::isfinite(wq).all().item<bool>());
  EXPECT_EQ(wq.abs().sum().item<float>(), 0.0f);
}

TEST(MakeWeightQuantizer, RejectsUnknownValues) {
  EXPECT_EQ(MakeWeightQuantizer("none", "per_tensor").value(), nullptr);
  auto bad = MakeWeightQuantizer("quinary", "per_tensor");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("quinary"), std::string::npos);
  bad = MakeWeightQuantizer("ternary", "per_row");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("per_row"), std::string::npos);
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

}  // namespace
}  // namespace qat::quant
