// Post-training quantization (ptq/): round to nearest reproduces each quantizer's forward bit for
// bit; GPTQ lowers each layer's output error against RTN and matches a plain double-precision
// reference of the algorithm; a PTQ checkpoint exports and evaluates like any QAT checkpoint,
// and initialises QAT (stored scales included).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "kernels/runtime.h"
#include "ptq/gptq.h"
#include "ptq/ptq.h"
#include "torch_test_util.h"
#include "trainer/checkpoint.h"
#include "trainer/export.h"
#include "trainer/model.h"
#include "trainer/train.h"

namespace qat::ptq {
namespace {

using trainer::CausalLM;
using trainer::QuantConfig;

QuantConfig Quant(const char* method, int bits, bool symmetric, const char* granularity,
                  int group = 32, const char* scale = "none") {
  QuantConfig q;
  q.method = method;
  q.bits = bits;
  q.symmetric = symmetric;
  q.granularity = granularity;
  q.group_size = group;
  q.scale = scale;
  return q;
}

trainer::ModelConfig Shape() {
  trainer::ModelConfig c = testing_util::TinyModel();
  c.hidden_size = 64;
  c.intermediate_size = 128;
  return c;
}

// A full-precision model and the same weights in a model with `quant` (stored scales from the
// weights), as `qat quantize` builds them.
struct Pair {
  CausalLM fp{nullptr}, q{nullptr};
};
Pair MakePair(const QuantConfig& quant, uint64_t seed = 3) {
  Pair p;
  QuantConfig none;
  none.method = "none";
  p.fp = trainer::BuildModel(Shape(), none).value();
  trainer::InitWeights(p.fp, seed, 0.1);
  p.q = trainer::BuildModel(Shape(), WithStoredScales(quant)).value();
  trainer::TensorMap w = trainer::ParameterMap(*p.fp);
  trainer::AddInitialQuantizerScales(p.q, &w);
  EXPECT_TRUE(trainer::LoadParameters(*p.q, w, "fp").ok());
  return p;
}

torch::Tensor Calibration(int64_t n = 16, int64_t t = 24) {
  torch::manual_seed(9);
  return torch::randint(0, 258, {n, t + 1}, torch::kInt64);
}

const QuantConfig kQuantizers[] = {
    Quant("ternary", 2, true, "per_tensor"),
    Quant("ternary", 2, true, "per_channel"),
    Quant("ternary", 2, true, "per_group"),
    Quant("binary", 1, true, "per_channel"),
    Quant("int", 2, true, "per_channel"),
    Quant("int", 2, false, "per_group"),
    Quant("int", 3, false, "per_group", 64),
    Quant("int", 4, true, "per_group"),
    Quant("int", 4, false, "per_tensor"),
    Quant("int", 8, true, "per_channel"),
    Quant("int", 4, true, "per_channel", 32, "lsq"),
    Quant("ternary", 2, true, "per_channel", 32, "seq"),
    Quant("int", 2, true, "per_group", 32, "seq"),
};

std::string Name(const QuantConfig& q) {
  return q.method + std::to_string(q.bits) + (q.symmetric ? "sym" : "asym") + q.granularity +
         q.scale;
}

class PtqEveryQuantizer : public ::testing::TestWithParam<QuantConfig> {};

// RTN writes the weights the quantizer's own forward would use, and stores their grid: the PTQ
// model's fake-quantized weights and logits equal the original quantizer's on the full-precision
// weights, bit for bit.
TEST_P(PtqEveryQuantizer, RtnEqualsTheQuantizersForwardBitForBit) {
  const QuantConfig quant = GetParam();
  Pair p = MakePair(quant);
  CausalLM reference = trainer::BuildModel(Shape(), quant).value();
  trainer::TensorMap w = trainer::ParameterMap(*p.fp);
  trainer::AddInitialQuantizerScales(reference, &w);
  ASSERT_TRUE(trainer::LoadParameters(*reference, w, "fp").ok());
  PtqOptions o;
  o.method = "rtn";
  ASSERT_TRUE(QuantizeModel(p.q, nullptr, torch::Tensor(), o).ok());
  torch::NoGradGuard ng;
  auto want = trainer::QuantizedWeights(reference), got = trainer::QuantizedWeights(p.q);
  ASSERT_EQ(want.size(), got.size());
  for (size_t i = 0; i < want.size(); ++i) {
    const torch::Tensor a = want[i].quantizer->FakeQuant(want[i].weight, want[i].scale);
    const torch::Tensor b = got[i].quantizer->FakeQuant(got[i].weight, got[i].scale);
    ASSERT_TRUE(torch::equal(a, b))
        << want[i].name << " " << got[i].quantizer->name() << ": " << (a != b).sum().item<int64_t>()
        << " differ, e.g. " << a.masked_select(a != b).narrow(0, 0, 1) << " vs "
        << b.masked_select(a != b).narrow(0, 0, 1) << " from "
        << want[i].weight.masked_select(a != b).narrow(0, 0, 1);
    // The stored weights are on the grid already: quantizing them again changes nothing.
    ASSERT_TRUE(torch::equal(b, got[i].weight)) << got[i].name;
  }
  const torch::Tensor tokens = Calibration(2, 12).narrow(1, 0, 12);
  EXPECT_TRUE(torch::equal(reference->forward(tokens), p.q->forward(tokens)));
}

// GPTQ: every block linear's output error on the calibration inputs is at most RTN's, and lower
// in total; the stored weights are on the stored grid.
TEST_P(PtqEveryQuantizer, GptqLowersTheOutputErrorAgainstRtn) {
  const QuantConfig quant = GetParam();
  Pair p = MakePair(quant);
  PtqOptions o;
  o.gptq.block_size = 16;  // several lazy blocks on these small layers
  absl::StatusOr<PtqReport> r = QuantizeModel(p.q, nullptr, Calibration(), o);
  ASSERT_TRUE(r.ok()) << r.status();
  double rtn = 0, gptq = 0;
  int layers = 0;
  for (const LayerReport& l : r->layers) {
    if (l.rtn_error <= 0) continue;
    ++layers;
    rtn += l.rtn_error;
    gptq += l.error;
    EXPECT_LE(l.error, l.rtn_error * 1.02) << l.name;
  }
  EXPECT_EQ(layers, 7 * Shape().num_layers);
  EXPECT_LT(gptq, 0.95 * rtn) << Name(quant);
  torch::NoGradGuard ng;
  for (const auto& q : trainer::QuantizedWeights(p.q)) {
    ASSERT_TRUE(torch::equal(q.quantizer->FakeQuant(q.weight, q.scale), q.weight)) << q.name;
  }
}

INSTANTIATE_TEST_SUITE_P(Quantizers, PtqEveryQuantizer, ::testing::ValuesIn(kQuantizers),
                         [](const auto& info) { return Name(info.param); });

// The algorithm written plainly in float64: after each column, every later column is updated
// with the full inverse-Hessian row (no lazy blocks); per group, the grid is refitted from the
// updated weights at the group's first column.
torch::Tensor ReferenceGptq(torch::Tensor W, torch::Tensor H, LayerGrid grid, double damp,
                            const GroupRefit& refit) {
  W = W.to(torch::kFloat64).clone();
  H = H.to(torch::kFloat64).clone();
  const int64_t rows = W.size(0), cols = W.size(1);
  for (int64_t c = 0; c < cols; ++c) {
    if (H[c][c].item<double>() == 0) {
      H[c][c] = 1.0;
      W.select(1, c).zero_();
    }
  }
  const double mean = H.diagonal().mean().item<double>();
  for (int64_t c = 0; c < cols; ++c) H[c][c] += damp * mean;
  const torch::Tensor U = torch::linalg::cholesky(torch::inverse(H)).t();
  torch::Tensor codes = torch::zeros({rows, cols}, torch::kInt64);
  for (int64_t c = 0; c < cols; ++c) {
    const int64_t g = c / grid.group_size;
    if (refit && c % grid.group_size == 0 && grid.group_size < cols) {
      refit(g, W.narrow(1, c, grid.group_size), &grid);
    }
    for (int64_t r = 0; r < rows; ++r) {
      const double w = W[r][c].item<double>();
      const double s = grid.scale[r][g].item<double>(), z = grid.zero[r][g].item<double>();
      const double u = grid.binary ? (w >= 0 ? 1.0 : 0.0)
                                   : std::clamp(std::nearbyint(w / s + z), 0.0, grid.levels - 1.0);
      codes[r][c] = int64_t(u);
      const double e = (w - s * (u - z)) / U[c][c].item<double>();
      for (int64_t j = c + 1; j < cols; ++j) W[r][j] -= e * U[c][j].item<double>();
    }
  }
  return codes;
}

TEST(Gptq, MatchesAPlainDoublePrecisionReference) {
  torch::manual_seed(2);
  const int64_t rows = 6, cols = 64;
  const torch::Tensor W = torch::randn({rows, cols}, torch::kFloat64);
  const torch::Tensor X =
      torch::randn({200, cols}, torch::kFloat64) * torch::linspace(0.2, 2.0, cols, torch::kFloat64);
  torch::Tensor H = X.t().mm(X) / 200.0;
  H[5][5] = 0.0;  // a dead input
  H.select(0, 5).zero_();
  H.select(1, 5).zero_();
  struct Case {
    const char* name;
    int levels;
    bool binary;
    int64_t group;
  };
  for (const Case& k :
       {Case{"int3 per row", 8, false, cols}, Case{"ternary per row", 3, false, cols},
        Case{"binary per row", 2, true, cols}, Case{"int2 per group 16", 4, false, 16}}) {
    LayerGrid grid;
    grid.group_size = k.group;
    grid.levels = k.levels;
    grid.binary = k.binary;
    const int64_t groups = cols / k.group;
    grid.scale = torch::full({rows, groups}, k.binary ? 1.6 : 0.5, torch::kFloat64);
    grid.zero = torch::full({rows, groups}, k.binary ? 0.5 : (k.levels - 1) / 2.0, torch::kFloat64);
    // Per group: an asymmetric min/max refit (as the int asym quantizer), from the updated weights.
    GroupRefit refit;
    if (k.group < cols) {
      refit = [](int64_t g, const torch::Tensor& w, LayerGrid* grid) {
        const torch::Tensor lo = std::get<0>(w.min(1)), hi = std::get<0>(w.max(1));
        const torch::Tensor s = (hi - lo) / double(grid->levels - 1);
        grid->scale.select(1, g).copy_(s);
        grid->zero.select(1, g).copy_(-lo / s);
      };
    }
    const torch::Tensor want = ReferenceGptq(W, H, grid, 0.01, refit);
    for (int64_t block : {1, 7, 16, 128}) {
      LayerGrid g = grid;
      g.scale = grid.scale.clone();
      g.zero = grid.zero.clone();
      GptqOptions o;
      o.block_size = block;
      absl::StatusOr<torch::Tensor> got = GptqCodes("w", W, H, &g, o, refit);
      ASSERT_TRUE(got.ok()) << got.status();
      EXPECT_TRUE(torch::equal(*got, want))
          << k.name << ", block " << block << ": " << (*got != want).sum().item<int64_t>()
          << " codes differ";
    }
  }
}

TEST(Gptq, ActOrderAndErrors) {
  torch::manual_seed(3);
  const torch::Tensor W = torch::randn({4, 32}, torch::kFloat64);
  const torch::Tensor X = torch::randn({100, 32}, torch::kFloat64) *
                          torch::linspace(0.1, 3.0, 32, torch::kFloat64).flip(0);
  const torch::Tensor H = X.t().mm(X) / 100.0;
  LayerGrid grid;
  grid.group_size = 32;
  grid.levels = 4;
  grid.scale = torch::full({4, 1}, 0.6, torch::kFloat64);
  grid.zero = torch::full({4, 1}, 1.5, torch::kFloat64);
  GptqOptions o;
  o.act_order = true;
  torch::Tensor codes = GptqCodes("w", W, H, &grid, o).value();
  const double rtn = OutputError(W, GridValues(NearestCodes(W, grid), grid), H);
  EXPECT_LT(OutputError(W, GridValues(codes, grid), H), rtn);
  // Not positive definite even after damping: the error names the layer.
  torch::Tensor bad = -torch::eye(32, torch::kFloat64);
  absl::StatusOr<torch::Tensor> r =
      GptqCodes("model.layers.0.mlp.up_proj.weight", W, bad, &grid, {});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("model.layers.0.mlp.up_proj.weight"), std::string::npos);
  EXPECT_NE(r.status().message().find("positive definite"), std::string::npos);
}

// The smoothness-preserving option keeps the layers' response along the input-gradient
// directions closer than plain GPTQ does (its own objective), at some cost in output error.
TEST(Ptq, SmoothOptionLowersTheGradientResponseError) {
  const QuantConfig quant = Quant("int", 2, false, "per_group");
  Pair plain = MakePair(quant), smooth = MakePair(quant);
  PtqOptions o;
  PtqOptions s = o;
  s.smooth = 1.0;
  // The gradient statistics are needed for the comparison: measure plain GPTQ's with them too.
  absl::StatusOr<PtqReport> rs = QuantizeModel(smooth.q, &smooth.fp, Calibration(), s);
  ASSERT_TRUE(rs.ok()) << rs.status();
  double grad_rtn = 0, grad_smooth = 0, x_rtn = 0, x_smooth = 0;
  for (const LayerReport& l : rs->layers) {
    grad_rtn += l.rtn_grad_error;
    grad_smooth += l.grad_error;
    x_rtn += l.rtn_error;
    x_smooth += l.error;
  }
  EXPECT_GT(grad_rtn, 0.0);
  EXPECT_LT(grad_smooth, grad_rtn);
  EXPECT_LT(x_smooth, x_rtn);
  // Errors: smooth without the full-precision model, gptq without calibration data.
  EXPECT_FALSE(QuantizeModel(plain.q, nullptr, Calibration(), s).ok());
  EXPECT_FALSE(QuantizeModel(plain.q, nullptr, torch::Tensor(), o).ok());
  PtqOptions bad = o;
  bad.method = "awq";
  EXPECT_NE(std::string(QuantizeModel(plain.q, nullptr, Calibration(), bad).status().message())
                .find("awq"),
            std::string::npos);
}

// A PTQ checkpoint through `qat export` and the packed runtime gives the perplexity of its
// fake-quantized evaluation (within 0.5%), for ternary, int2 and int4 grids.
TEST(Ptq, CheckpointExportsAndEvaluatesLikeQat) {
  for (const QuantConfig& quant :
       {Quant("ternary", 2, true, "per_channel"), Quant("int", 2, false, "per_group"),
        Quant("int", 4, true, "per_group")}) {
    const std::string dir = testing_util::FreshDir("ptq_" + Name(quant));
    Pair p = MakePair(quant);
    ASSERT_TRUE(QuantizeModel(p.q, nullptr, Calibration(), PtqOptions()).ok());
    const std::string ckpt = testing_util::SaveModel(p.q, dir);
    const std::string out = dir + "/model.qat.safetensors";
    trainer::ExportReport report = trainer::ExportPacked(ckpt, out).value();
    EXPECT_EQ(report.packed_tensors, 7 * Shape().num_layers) << Name(quant);
    auto packed = kernels::PackedModel::Load(out, 2, kernels::BestIsa()).value();
    const torch::Tensor window = Calibration(1, 30)[0];
    std::vector<int32_t> tokens(window.data_ptr<int64_t>(), window.data_ptr<int64_t>() + 30);
    kernels::Session session = packed->NewSession();
    std::vector<float> logits = session.Forward(tokens.data(), 30).value();
    torch::NoGradGuard ng;
    // The checkpoint as eval loads it.
    trainer::LoadedModel loaded = trainer::LoadModelFromCheckpoint(ckpt).value();
    const torch::Tensor want = loaded.model->forward(window.unsqueeze(0))[0];
    const torch::Tensor got = torch::from_blob(logits.data(), {30, 258}, torch::kFloat32);
    auto nll = [&](const torch::Tensor& l) {
      return torch::nn::functional::cross_entropy(l.narrow(0, 0, 29), window.narrow(0, 1, 29))
          .item<double>();
    };
    const double ppl_fake = std::exp(nll(want)), ppl_packed = std::exp(nll(got));
    EXPECT_NEAR(ppl_packed / ppl_fake, 1.0, 0.005) << Name(quant);
  }
}

// qat train initialised from a PTQ checkpoint (model.init_from) starts from its weights and
// stored scales: step 0's fake-quantized model is the PTQ model.
TEST(Ptq, InitialisesQatWithItsStoredScales) {
  const std::string dir = testing_util::FreshDir("ptq_init");
  testing_util::WriteTinyCorpus(dir);
  for (const char* scale : {"none", "lsq"}) {
    const QuantConfig quant = Quant("int", 4, true, "per_channel", 32, scale);
    Pair p = MakePair(quant);
    ASSERT_TRUE(QuantizeModel(p.q, nullptr, Calibration(), PtqOptions()).ok());
    const std::string ckpt = testing_util::SaveModel(p.q, dir + "/ptq_" + scale);
    trainer::Recipe r = testing_util::TinyRecipe(dir);
    r.model = Shape();
    r.quant = WithStoredScales(quant);
    r.model.init_from = ckpt;
    r.run.dir = dir + "/run_" + scale;
    r.train.steps = 1;
    r.train.lr = 0.0;
    r.train.min_lr = 0.0;
    r.train.weight_decay = 0.0;
    r.distill.teacher = "";
    absl::StatusOr<trainer::TrainResult> t = trainer::Train(r, *comm::MpiWorld().value());
    ASSERT_TRUE(t.ok()) << t.status();
    trainer::LoadedModel after = trainer::LoadModelFromCheckpoint(t->checkpoint).value();
    torch::NoGradGuard ng;
    auto want = trainer::QuantizedWeights(p.q), got = trainer::QuantizedWeights(after.model);
    ASSERT_EQ(want.size(), got.size());
    for (size_t i = 0; i < want.size(); ++i) {
      EXPECT_TRUE(torch::equal(want[i].quantizer->FakeQuant(want[i].weight, want[i].scale),
                               got[i].quantizer->FakeQuant(got[i].weight, got[i].scale)))
          << scale << " " << want[i].name;
    }
  }
}

}  // namespace
}  // namespace qat::ptq
