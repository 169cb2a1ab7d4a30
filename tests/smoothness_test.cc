// The smoothness regularizers: the exact (double backward) gradient against a finite-difference
// check in double precision, the finite_diff estimator against the exact one, and the metrics.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <iostream>
#include <tuple>

#include "torch_test_util.h"
#include "trainer/evaluate.h"
#include "trainer/model.h"
#include "trainer/objective.h"

namespace qat::trainer {
namespace {

CausalLM TinyDoubleModel(const char* quant, uint64_t seed) {
  ModelConfig c = testing_util::TinyModel();
  c.vocab_size = 20;
  c.hidden_size = 16;
  c.intermediate_size = 24;
  QuantConfig q;
  q.method = quant;
  CausalLM m = BuildModel(c, q).value();
  InitWeights(m, seed, 0.3);
  m->to(torch::kFloat64);
  return m;
}

std::vector<torch::Tensor> Grads(CausalLM& m) {
  std::vector<torch::Tensor> out;
  for (auto& p : m->parameters()) out.push_back(p.grad().defined() ? p.grad().clone() : torch::zeros_like(p));
  return out;
}

void ZeroGrads(CausalLM& m) {
  for (auto& p : m->parameters())
    if (p.grad().defined()) p.grad().zero_();
}

double Dot(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += (a[i] * b[i]).sum().item<double>();
  return s;
}

struct Batch {
  torch::Tensor inputs, targets;
};
Batch MakeBatch() {
  torch::manual_seed(4);
  torch::Tensor t = torch::randint(0, 20, {3, 9}, torch::kInt64);
  return {t.narrow(1, 0, 8), t.narrow(1, 1, 8)};
}

Recipe RegRecipe(const char* mode, const char* estimator, double lambda,
                 const char* at = "embeddings", double hidden_mse = 0.0) {
  Recipe r;
  r.smoothness.at = at;
  r.distill.hidden_mse_weight = hidden_mse;
  r.smoothness.mode = mode;
  r.smoothness.estimator = estimator;
  r.smoothness.lambda = lambda;
  r.smoothness.fd_step = 1e-5;
  r.distill.kd_weight = 0.5;
  return r;
}

// (mode, at, distill.hidden_mse_weight)
using RegParams = std::tuple<const char*, const char*, double>;
std::string RegName(const ::testing::TestParamInfo<RegParams>& info) {
  return std::string(std::get<0>(info.param)) + "_" + std::get<1>(info.param) +
         (std::get<2>(info.param) > 0 ? "_hidden_mse" : "");
}
const auto kRegVariants = ::testing::Values(
    RegParams{"grad_norm", "embeddings", 0.0}, RegParams{"grad_match", "embeddings", 0.0},
    RegParams{"grad_norm", "block_inputs", 0.0}, RegParams{"grad_match", "block_inputs", 0.0},
    RegParams{"grad_norm", "embeddings", 0.3}, RegParams{"grad_norm", "block_inputs", 0.3});

// d/deps J(theta + eps d) by central differences vs <dJ/dtheta, d> from the exact estimator.
class ExactGradient : public ::testing::TestWithParam<RegParams> {};

TEST_P(ExactGradient, MatchesFiniteDifferencesInDoublePrecision) {
  const auto [mode_name, at, hidden_mse] = GetParam();
  const std::string mode = mode_name;
  CausalLM model = TinyDoubleModel("none", 1);
  CausalLM teacher = TinyDoubleModel("none", 2);
  for (auto& p : teacher->parameters()) p.set_requires_grad(false);
  Batch b = MakeBatch();
  Recipe r = RegRecipe(mode.c_str(), "exact", 0.7, at, hidden_mse);
  CausalLM* t = mode == "grad_match" || hidden_mse > 0 ? &teacher : nullptr;

  ZeroGrads(model);
  MicroBatchResult res = BackwardMicroBatch(model, t, b.inputs, b.targets, r, 0.7, 1.0);
  EXPECT_GT(res.penalty, 0.0);
  std::vector<torch::Tensor> grad = Grads(model);
  std::vector<torch::Tensor> dir;
  for (auto& p : model->parameters()) dir.push_back(torch::randn_like(p));
  auto objective = [&](double eps) {
    {
      torch::NoGradGuard ng;
      auto params = model->parameters();
      for (size_t i = 0; i < params.size(); ++i) params[i].add_(dir[i], eps);
    }
    MicroBatchResult m = BackwardMicroBatch(model, t, b.inputs, b.targets, r, 0.7, 1.0);
    {
      torch::NoGradGuard ng;
      auto params = model->parameters();
      for (size_t i = 0; i < params.size(); ++i) params[i].add_(dir[i], -eps);
    }
    return m.loss + 0.7 * m.penalty;
  };
  const double eps = 1e-5;
  const double numeric = (objective(eps) - objective(-eps)) / (2 * eps);
  const double analytic = Dot(grad, dir);
  EXPECT_NEAR(analytic, numeric, 1e-6 * std::max(1.0, std::abs(numeric)))
      << "analytic " << analytic << " numeric " << numeric;
  // The regularizer changes the gradient (the check is not passing on L alone).
  ZeroGrads(model);
  BackwardMicroBatch(model, t, b.inputs, b.targets, r, 0.0, 1.0);
  EXPECT_GT(std::abs(Dot(Grads(model), dir) - analytic), 1e-6);
}

INSTANTIATE_TEST_SUITE_P(Modes, ExactGradient, kRegVariants, RegName);

// finite_diff vs exact, on the ternary student (STE) with distillation, with accumulation.
class FiniteDiffEstimator : public ::testing::TestWithParam<RegParams> {};

TEST_P(FiniteDiffEstimator, CosineWithExactAbove099) {
  const auto [mode_name, at, hidden_mse] = GetParam();
  const std::string mode = mode_name;
  CausalLM model = TinyDoubleModel("ternary", 3);
  CausalLM teacher = TinyDoubleModel("none", 4);
  for (auto& p : teacher->parameters()) p.set_requires_grad(false);
  Batch b = MakeBatch();
  auto run = [&](const char* estimator) {
    ZeroGrads(model);
    Recipe r = RegRecipe(mode.c_str(), estimator, 2.0, at, hidden_mse);
    // Two micro batches accumulate, as in training.
    BackwardMicroBatch(model, &teacher, b.inputs, b.targets, r, 2.0, 0.5);
    BackwardMicroBatch(model, &teacher, b.inputs.flip(1), b.targets.flip(1), r, 2.0, 0.5);
    return Grads(model);
  };
  std::vector<torch::Tensor> exact = run("exact"), fd = run("finite_diff"), plain;
  {
    ZeroGrads(model);
    Recipe r = RegRecipe("none", "exact", 0.0, at, hidden_mse);
    BackwardMicroBatch(model, &teacher, b.inputs, b.targets, r, 0.0, 0.5);
    BackwardMicroBatch(model, &teacher, b.inputs.flip(1), b.targets.flip(1), r, 0.0, 0.5);
    plain = Grads(model);
  }
  const double cos = Dot(exact, fd) / std::sqrt(Dot(exact, exact) * Dot(fd, fd));
  EXPECT_GT(cos, 0.99);
  // The regularizer's part of the gradient itself agrees (not only the shared task loss).
  std::vector<torch::Tensor> re, rf;
  for (size_t i = 0; i < exact.size(); ++i) re.push_back(exact[i] - plain[i]), rf.push_back(fd[i] - plain[i]);
  const double cos_reg = Dot(re, rf) / std::sqrt(Dot(re, re) * Dot(rf, rf));
  EXPECT_GT(cos_reg, 0.99) << "regularizer-only cosine";
  EXPECT_GT(std::sqrt(Dot(re, re)), 1e-3 * std::sqrt(Dot(plain, plain)));
}

// finite_diff takes the loss's own gradient as the mean of its two perturbed passes
// (objective.h), not from a pass at x. With lambda so small that the penalty's part is far below
// double rounding, what is left is the mean's error against the plain gradient, which must be
// O(h^2): a tenth of the step must cut it about a hundredfold (a gradient taken from one side
// only, an O(h) error, gives tenfold), and dropping it or counting it twice fails outright.
TEST_P(FiniteDiffEstimator, LossGradientIsTheMeanOfTheTwoSides) {
  const auto [mode_name, at, hidden_mse] = GetParam();
  CausalLM model = TinyDoubleModel("ternary", 3);
  CausalLM teacher = TinyDoubleModel("none", 4);
  for (auto& p : teacher->parameters()) p.set_requires_grad(false);
  Batch b = MakeBatch();
  auto run = [&](const char* mode, double lambda, double fd_step) {
    ZeroGrads(model);
    Recipe r = RegRecipe(mode, "finite_diff", lambda, at, hidden_mse);
    r.smoothness.fd_step = fd_step;
    BackwardMicroBatch(model, &teacher, b.inputs, b.targets, r, lambda, 1.0);
    return Grads(model);
  };
  const std::vector<torch::Tensor> plain = run("none", 0.0, 1e-3);
  auto error = [&](double fd_step) {
    const std::vector<torch::Tensor> fd = run(mode_name, 1e-30, fd_step);
    std::vector<torch::Tensor> diff;
    for (size_t i = 0; i < plain.size(); ++i) diff.push_back(fd[i] - plain[i]);
    return std::sqrt(Dot(diff, diff) / Dot(plain, plain));
  };
  const double coarse = error(1e-3), fine = error(1e-4);
  std::cout << mode_name << " at " << at << ": loss-gradient relative error " << coarse
            << " at fd_step 1e-3, " << fine << " at 1e-4\n";
  EXPECT_LT(coarse, 1e-2);
  EXPECT_LT(fine, coarse / 40);
}

INSTANTIATE_TEST_SUITE_P(Modes, FiniteDiffEstimator, kRegVariants, RegName);

// The finite_diff estimator as training uses it: fp32, the demo's model shape (recipes/
// demo-ternary.yaml), a ternary student distilled from a full-precision teacher, and the
// recipe's default smoothness.fd_step. The penalty's share of the parameter gradient must be
// within 2% (relative L2 error) of the exact double-backward one. Weights drawn with std 0.1 and
// 0.2 make the loss far more curved than the usual 0.02 init (where even the old one-sided
// difference at 1e-3 was within 1.1%), so the test can fail: the one-sided estimator was 6% and
// 92% off (grad_norm, std 0.1 / 0.2) at its old default 1e-3, and 0.6% / 11.5% at 1e-4; the
// central one at the default 1e-4 is 0.04% / 1.4%.
class FiniteDiffFp32DemoShape : public ::testing::TestWithParam<std::tuple<const char*, double>> {};

TEST_P(FiniteDiffFp32DemoShape, PenaltyGradientWithinTwoPercentOfExact) {
  const std::string mode = std::get<0>(GetParam());
  const double init_std = std::get<1>(GetParam());
  absl::StatusOr<Recipe> demo = LoadRecipe(QAT_SOURCE_DIR "/recipes/demo-ternary.yaml", {});
  ASSERT_TRUE(demo.ok()) << demo.status();
  const ModelConfig shape = demo->model;
  QuantConfig ternary = demo->quant, none;
  none.method = "none";
  CausalLM student = BuildModel(shape, ternary).value();
  CausalLM teacher = BuildModel(shape, none).value();
  InitWeights(student, 11, init_std);
  InitWeights(teacher, 12, init_std);
  for (auto& p : teacher->parameters()) p.set_requires_grad(false);
  torch::manual_seed(5);
  torch::Tensor t = torch::randint(0, shape.vocab_size, {4, 129}, torch::kInt64);
  torch::Tensor inputs = t.narrow(1, 0, 128), targets = t.narrow(1, 1, 128);

  const double default_step = SmoothnessConfig().fd_step;
  auto grads = [&](const char* m, const char* estimator, double lambda) {
    ZeroGrads(student);
    Recipe r = *demo;
    r.smoothness.mode = m;
    r.smoothness.estimator = estimator;
    r.smoothness.lambda = lambda;
    r.smoothness.fd_step = default_step;
    BackwardMicroBatch(student, &teacher, inputs, targets, r, lambda, 1.0);
    return Grads(student);
  };
  const double lambda = 1.0;
  std::vector<torch::Tensor> plain = grads("none", "exact", 0.0);
  std::vector<torch::Tensor> exact = grads(mode.c_str(), "exact", lambda);
  std::vector<torch::Tensor> fd = grads(mode.c_str(), "finite_diff", lambda);
  std::vector<torch::Tensor> reg_exact, reg_fd, diff;
  for (size_t i = 0; i < plain.size(); ++i) {
    reg_exact.push_back((exact[i] - plain[i]).to(torch::kFloat64));
    reg_fd.push_back((fd[i] - plain[i]).to(torch::kFloat64));
    diff.push_back(reg_fd.back() - reg_exact.back());
  }
  const double reg_norm = std::sqrt(Dot(reg_exact, reg_exact));
  const double rel = std::sqrt(Dot(diff, diff)) / reg_norm;
  std::vector<torch::Tensor> total_diff, exact64;
  for (size_t i = 0; i < plain.size(); ++i) {
    total_diff.push_back((fd[i] - exact[i]).to(torch::kFloat64));
    exact64.push_back(exact[i].to(torch::kFloat64));
  }
  const double rel_total = std::sqrt(Dot(total_diff, total_diff) / Dot(exact64, exact64));
  std::cout << mode << " init std " << init_std << " fd_step " << default_step
            << ": penalty-gradient relative error " << rel << ", total-gradient relative error "
            << rel_total << " (penalty share " << reg_norm / std::sqrt(Dot(exact64, exact64))
            << ")\n";
  EXPECT_GT(reg_norm, 0.05 * std::sqrt(Dot(exact64, exact64))) << "the penalty must matter";
  EXPECT_LT(rel, 0.02);
  EXPECT_LT(rel_total, 0.02);
}

INSTANTIATE_TEST_SUITE_P(Modes, FiniteDiffFp32DemoShape,
                         ::testing::Combine(::testing::Values("grad_norm", "grad_match"),
                                            ::testing::Values(0.1, 0.2)),
                         [](const auto& info) {
                           const double std = std::get<1>(info.param);
                           return std::string(std::get<0>(info.param)) + "_init_std_" +
                                  (std == 0.1 ? "0_1" : "0_2");
                         });

TEST(Metrics, EarIsOneForIdenticalAndOneMinusTotalVariation) {
  torch::Tensor p = torch::tensor({0.5, 0.3, 0.2}, torch::kFloat64).log().unsqueeze(0);
  torch::Tensor q = torch::tensor({0.2, 0.3, 0.5}, torch::kFloat64).log().unsqueeze(0);
  DistributionSums same = CompareDistributions(p, p, 0.25);
  EXPECT_NEAR(same.ear, 1.0, 1e-12);
  EXPECT_EQ(same.top1, 1.0);
  EXPECT_NEAR(same.kl, 0.0, 1e-12);
  DistributionSums d = CompareDistributions(p, q, 0.25);
  EXPECT_NEAR(d.ear, 1.0 - 0.3, 1e-12);  // TV = (0.3 + 0 + 0.3) / 2
  EXPECT_EQ(d.top1, 0.0);
  EXPECT_EQ(d.p_above, 2.0);  // 0.5 and 0.3 exceed 0.25
  const double h = -(0.5 * std::log(0.5) + 0.3 * std::log(0.3) + 0.2 * std::log(0.2));
  EXPECT_NEAR(d.p_exp_entropy, std::exp(h), 1e-9);
  // Two positions: sums add up.
  DistributionSums two = CompareDistributions(torch::cat({p, p}), torch::cat({q, p}), 0.25);
  EXPECT_NEAR(two.ear, 1.7, 1e-12);
}

TEST(Smoothness, LambdaScheduleAndRecipeChecks) {
  SmoothnessConfig s;
  s.mode = "grad_norm";
  s.lambda = 2.0;
  s.lambda_warmup_steps = 4;
  s.every_n_steps = 2;
  EXPECT_DOUBLE_EQ(SmoothnessLambda(s, 0), 0.5);
  EXPECT_DOUBLE_EQ(SmoothnessLambda(s, 1), 0.0);  // not a regularized step
  EXPECT_DOUBLE_EQ(SmoothnessLambda(s, 6), 2.0);
  s.mode = "none";
  EXPECT_DOUBLE_EQ(SmoothnessLambda(s, 6), 0.0);
  for (auto [set, expect] : std::vector<std::pair<std::string, std::string>>{
           {"smoothness.lambda=-1", "out of range"},
           {"smoothness.mode=grad_max", "not one of"},
           {"smoothness.estimator=magic", "not one of"},
           {"smoothness.mode=grad_match", "needs a teacher"}}) {
    absl::StatusOr<Recipe> r = LoadRecipe(QAT_SOURCE_DIR "/recipes/demo-teacher.yaml", {set});
    ASSERT_FALSE(r.ok()) << set;
    EXPECT_NE(r.status().message().find(expect), std::string::npos) << r.status().message();
    EXPECT_NE(r.status().message().find(set.substr(0, set.find('='))), std::string::npos)
        << "the message names the key: " << r.status().message();
  }
}

}  // namespace
}  // namespace qat::trainer
