// Export -> packed runtime round trip: the packed model computes what the libtorch model does.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "kernels/runtime.h"
#include "kernels/ternary.h"
#include "torch_test_util.h"
#include "trainer/checkpoint.h"
#include "trainer/export.h"
#include "trainer/model.h"

namespace qat::trainer {
namespace {

using testing_util::SaveModel;

struct Variant {
  const char* granularity;
  bool tied;
  const char* method;
};
class ExportRoundTrip : public ::testing::TestWithParam<Variant> {};

TEST_P(ExportRoundTrip, PackedLogitsEqualLibtorchLogits) {
  const std::string dir = testing_util::FreshDir("export");
  ModelConfig c = testing_util::TinyModel();
  c.hidden_size = 64;
  c.intermediate_size = 160;  // not a multiple of the 128-weight block: padding is exercised
  c.tie_embeddings = GetParam().tied;
  QuantConfig q;
  q.method = GetParam().method;
  q.granularity = GetParam().granularity;
  CausalLM model = BuildModel(c, q).value();
  InitWeights(model, 11, 0.1);
  const std::string ckpt = SaveModel(model, dir);
  const std::string out = dir + "/model.qat.safetensors";
  ExportReport report = ExportPacked(ckpt, out).value();
  EXPECT_EQ(report.packed_tensors, q.method == std::string("ternary") ? 7 * c.num_layers : 0);

  auto packed = kernels::PackedModel::Load(out, 2, kernels::BestIsa()).value();
  EXPECT_EQ(packed->packed_linears(), report.packed_tensors);
  std::vector<int32_t> tokens = {256, 84, 104, 101, 32, 99, 97, 116, 32, 115, 97, 116, 10, 257};
  kernels::Session session = packed->NewSession();
  std::vector<float> got = session.Forward(tokens.data(), int64_t(tokens.size())).value();

  torch::NoGradGuard ng;
  torch::Tensor ids =
      torch::tensor(std::vector<int64_t>(tokens.begin(), tokens.end())).unsqueeze(0);
  torch::Tensor want = model->forward(ids)[0].contiguous();
  ASSERT_EQ(int64_t(got.size()), want.numel());
  const float* w = want.data_ptr<float>();
  const double scale = want.abs().max().item<double>();
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_NEAR(got[i], w[i], 1e-4 * scale) << "logit " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Variants, ExportRoundTrip,
                         ::testing::Values(Variant{"per_tensor", false, "ternary"},
                                           Variant{"per_channel", false, "ternary"},
                                           Variant{"per_tensor", true, "ternary"},
                                           Variant{"per_tensor", false, "none"}),
                         [](const auto& info) {
                           return std::string(info.param.method) + "_" + info.param.granularity +
                                  (info.param.tied ? "_tied" : "");
                         });

// The kernel against libtorch's fake-quantized matmul on one layer.
TEST(TernaryKernel, EqualsLibtorchFakeQuantMatmul) {
  torch::manual_seed(9);
  for (auto [rows, cols] : {std::pair{64, 96}, {33, 300}, {128, 128}}) {
    quant::QuantSpec spec;
    spec.granularity = quant::Granularity::kPerChannel;
    quant::WeightQuantizer q(spec);
    torch::Tensor weight = torch::randn({rows, cols});
    torch::Tensor x = torch::randn({5, cols});
    torch::Tensor want = torch::matmul(x, q.FakeQuant(weight).t()).contiguous();
    quant::QuantParts parts = q.Decompose(weight);
    torch::Tensor trits = (parts.codes.to(torch::kInt8) - 1).contiguous();
    std::vector<uint8_t> packed(size_t(rows * kernels::TernaryRowBytes(cols)));
    kernels::PackTernary(trits.data_ptr<int8_t>(), rows, cols, packed.data());
    torch::Tensor scale = parts.scale.reshape({-1}).contiguous();
    kernels::TernaryView view{rows, cols, packed.data(), scale.data_ptr<float>(), rows};
    std::vector<float> y(static_cast<size_t>(5 * rows)), yv(static_cast<size_t>(rows));
    kernels::TernaryGemm(view, x.data_ptr<float>(), 5, y.data(), kernels::BestIsa(), nullptr);
    kernels::TernaryGemv(view, x.data_ptr<float>(), yv.data(), kernels::BestIsa(), nullptr);
    for (int64_t i = 0; i < 5 * rows; ++i) {
      EXPECT_NEAR(y[i], want.data_ptr<float>()[i],
                  1e-4 * (1 + std::abs(want.data_ptr<float>()[i])));
    }
    for (int64_t r = 0; r < rows; ++r) EXPECT_NEAR(yv[r], y[r], 1e-4 * (1 + std::abs(y[r])));
  }
}

}  // namespace
}  // namespace qat::trainer
