// The libtorch LLaMA model against a direct, loop-based computation of the same function, and a
// loss that falls on a tiny corpus.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <fstream>

#include "comm/process_group.h"
#include "torch_test_util.h"
#include "trainer/checkpoint.h"
#include "trainer/model.h"
#include "trainer/rope.h"
#include "trainer/train.h"

namespace qat::trainer {
namespace {

using Mat = std::vector<std::vector<double>>;

Mat ToMat(const torch::Tensor& t) {
  torch::Tensor c = t.detach().to(torch::kFloat64).contiguous();
  Mat m(c.size(0), std::vector<double>(c.size(1)));
  for (int64_t i = 0; i < c.size(0); ++i)
    for (int64_t j = 0; j < c.size(1); ++j) m[i][j] = c[i][j].item<double>();
  return m;
}

std::vector<double> Vec(const torch::Tensor& t) {
  torch::Tensor c = t.detach().to(torch::kFloat64).contiguous();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

// y = x W^T, W [out][in]
std::vector<double> MatVec(const Mat& w, const std::vector<double>& x) {
  std::vector<double> y(w.size(), 0.0);
  for (size_t o = 0; o < w.size(); ++o)
    for (size_t i = 0; i < x.size(); ++i) y[o] += w[o][i] * x[i];
  return y;
}

std::vector<double> RmsNorm(const std::vector<double>& x, const std::vector<double>& g, double eps) {
  double ms = 0;
  for (double v : x) ms += v * v;
  ms /= x.size();
  std::vector<double> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] / std::sqrt(ms + eps) * g[i];
  return y;
}

void Rope(std::vector<double>& v, int64_t heads, int64_t hd, int64_t pos, double theta) {
  for (int64_t h = 0; h < heads; ++h) {
    for (int64_t i = 0; i < hd / 2; ++i) {
      const double f = std::pow(theta, -2.0 * i / hd), a = pos * f;
      double& x1 = v[h * hd + i];
      double& x2 = v[h * hd + i + hd / 2];
      const double n1 = x1 * std::cos(a) - x2 * std::sin(a), n2 = x2 * std::cos(a) + x1 * std::sin(a);
      x1 = n1, x2 = n2;
    }
  }
}

// The model written out position by position, head by head (no libtorch ops beyond reading).
Mat ReferenceLogits(CausalLM& model, const std::vector<int64_t>& tokens) {
  const ModelConfig& c = model->config();
  const int64_t H = c.num_heads, KV = c.num_kv_heads, hd = c.hidden_size / H, T = tokens.size();
  Mat embed = ToMat(model->EmbeddingWeight());
  std::vector<std::vector<double>> h;
  for (int64_t t : tokens) h.push_back(embed[t]);
  for (const auto& mod : *model->model->layers) {
    auto layer = mod->as<DecoderLayer>();
    auto& at = layer->self_attn;
    Mat wq = ToMat(at->q_proj->effective_weight()), wk = ToMat(at->k_proj->effective_weight()),
        wv = ToMat(at->v_proj->effective_weight()), wo = ToMat(at->o_proj->effective_weight());
    Mat wg = ToMat(layer->mlp->gate_proj->effective_weight()),
        wu = ToMat(layer->mlp->up_proj->effective_weight()),
        wd = ToMat(layer->mlp->down_proj->effective_weight());
    std::vector<double> g1 = Vec(layer->input_layernorm->weight),
                        g2 = Vec(layer->post_attention_layernorm->weight);
    std::vector<std::vector<double>> q(T), k(T), v(T);
    for (int64_t t = 0; t < T; ++t) {
      std::vector<double> a = RmsNorm(h[t], g1, c.rms_norm_eps);
      q[t] = MatVec(wq, a), k[t] = MatVec(wk, a), v[t] = MatVec(wv, a);
      Rope(q[t], H, hd, t, c.rope_theta);
      Rope(k[t], KV, hd, t, c.rope_theta);
    }
    for (int64_t t = 0; t < T; ++t) {
      std::vector<double> attn(H * hd, 0.0);
      for (int64_t j = 0; j < H; ++j) {
        const int64_t kvh = j / (H / KV);
        std::vector<double> s(t + 1);
        double mx = -1e300;
        for (int64_t u = 0; u <= t; ++u) {
          double d = 0;
          for (int64_t i = 0; i < hd; ++i) d += q[t][j * hd + i] * k[u][kvh * hd + i];
          s[u] = d / std::sqrt(double(hd));
          mx = std::max(mx, s[u]);
        }
        double z = 0;
        for (double& x : s) z += (x = std::exp(x - mx));
        for (int64_t u = 0; u <= t; ++u)
          for (int64_t i = 0; i < hd; ++i) attn[j * hd + i] += s[u] / z * v[u][kvh * hd + i];
      }
      std::vector<double> o = MatVec(wo, attn);
      for (size_t i = 0; i < o.size(); ++i) h[t][i] += o[i];
      std::vector<double> m = RmsNorm(h[t], g2, c.rms_norm_eps);
      std::vector<double> gate = MatVec(wg, m), up = MatVec(wu, m);
      for (size_t i = 0; i < gate.size(); ++i) gate[i] = gate[i] / (1 + std::exp(-gate[i])) * up[i];
      std::vector<double> down = MatVec(wd, gate);
      for (size_t i = 0; i < down.size(); ++i) h[t][i] += down[i];
    }
  }
  Mat head = ToMat(model->LmHeadWeight());
  std::vector<double> gn = Vec(model->model->norm->weight);
  Mat logits;
  for (int64_t t = 0; t < T; ++t) logits.push_back(MatVec(head, RmsNorm(h[t], gn, c.rms_norm_eps)));
  return logits;
}

struct Variant {
  const char* quant;
  bool tied;
};
class ModelForward : public ::testing::TestWithParam<Variant> {};

// The fused RoPE node against the plain torch expression: values, input gradients and
// double-backward gradients bit-identical, in float and double, for several head counts.
TEST(Rope, FusedIsBitIdenticalToTheTorchExpression) {
  for (torch::Dtype dtype : {torch::kFloat32, torch::kFloat64}) {
    for (int64_t heads : {1, 3}) {
      torch::manual_seed(5);
      const int64_t B = 2, T = 7, hd = 16;
      const torch::Tensor x0 = torch::randn({B, T, heads, hd}, dtype);
      torch::Tensor angles =
          torch::outer(torch::arange(T, torch::kFloat64), torch::rand({hd / 2}, torch::kFloat64));
      angles = torch::cat({angles, angles}, -1);
      const torch::Tensor cos = angles.cos().to(dtype), sin = angles.sin().to(dtype);
      const torch::Tensor upstream = torch::randn({B, T, heads, hd}, dtype);
      auto run = [&](bool fused) {
        torch::Tensor x = x0.clone().requires_grad_(true);
        torch::Tensor y = fused ? ApplyRope(x, cos, sin) : ApplyRopeUnfused(x, cos, sin);
        // A loss quadratic in y, so that its input gradient depends on x (RoPE is linear).
        torch::Tensor g = torch::autograd::grad({(y * y * upstream).sum()}, {x}, {}, true, true)[0];
        torch::Tensor g2 = torch::autograd::grad({(g * g).sum()}, {x})[0];
        return std::vector<torch::Tensor>{y.detach(), g.detach(), g2.detach()};
      };
      const std::vector<torch::Tensor> fused = run(true), plain = run(false);
      for (size_t i = 0; i < fused.size(); ++i) {
        EXPECT_TRUE(torch::equal(fused[i], plain[i]))
            << "output " << i << ", heads " << heads << ", max diff "
            << (fused[i] - plain[i]).abs().max().item<double>();
      }
    }
  }
}

TEST_P(ModelForward, MatchesDirectComputation) {
  ModelConfig c = testing_util::TinyModel();
  c.vocab_size = 40;
  c.tie_embeddings = GetParam().tied;
  QuantConfig q;
  q.method = GetParam().quant;
  CausalLM model = BuildModel(c, q).value();
  InitWeights(model, 5, 0.2);
  {
    torch::NoGradGuard ng;  // non-trivial norm gains
    for (auto& p : model->parameters())
      if (p.dim() == 1) p.uniform_(0.5, 1.5);
  }
  std::vector<int64_t> tokens = {1, 7, 3, 39, 0, 12, 7, 7, 25};
  torch::Tensor logits = model->forward(torch::tensor(tokens).unsqueeze(0))[0];
  Mat ref = ReferenceLogits(model, tokens);
  for (size_t t = 0; t < tokens.size(); ++t)
    for (int64_t v = 0; v < c.vocab_size; ++v)
      EXPECT_NEAR(logits[t][v].item<double>(), ref[t][v], 1e-4 * (1 + std::abs(ref[t][v])))
          << "t=" << t << " v=" << v;
}

INSTANTIATE_TEST_SUITE_P(Variants, ModelForward,
                         ::testing::Values(Variant{"none", false}, Variant{"ternary", false},
                                           Variant{"ternary", true}),
                         [](const auto& info) {
                           return std::string(info.param.quant) + (info.param.tied ? "_tied" : "");
                         });

TEST(Model, ParameterNamesAreHuggingFaceLlama) {
  CausalLM model = BuildModel(testing_util::TinyModel(), QuantConfig{}).value();
  TensorMap params = ParameterMap(*model);
  for (const char* name :
       {"model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
        "model.layers.1.self_attn.k_proj.weight", "model.layers.1.self_attn.v_proj.weight",
        "model.layers.0.self_attn.o_proj.weight", "model.layers.1.mlp.gate_proj.weight",
        "model.layers.1.mlp.up_proj.weight", "model.layers.0.mlp.down_proj.weight",
        "model.layers.0.input_layernorm.weight", "model.layers.0.post_attention_layernorm.weight",
        "model.norm.weight", "lm_head.weight"}) {
    EXPECT_EQ(params.count(name), 1u) << name;
  }
  EXPECT_EQ(params.size(), 3u + 2 * 9);
  EXPECT_EQ(params["model.layers.0.self_attn.k_proj.weight"].sizes(), torch::IntArrayRef({16, 32}));
}

TEST(Train, LossFallsOnATinyCorpus) {
  const std::string dir = testing_util::FreshDir("train_loss");
  testing_util::WriteTinyCorpus(dir);
  Recipe r = testing_util::TinyRecipe(dir);
  r.quant.method = "none";
  r.train.steps = 40;
  r.train.lr = 1e-2;
  TrainResult res = Train(r, *comm::MpiWorld().value()).value();
  std::ifstream metrics(r.run.dir + "/metrics.jsonl");
  std::string first;
  std::getline(metrics, first);
  double first_loss = 0;
  ASSERT_EQ(std::sscanf(first.c_str(), "{\"step\": 1, \"loss\": %lf", &first_loss), 1) << first;
  EXPECT_GT(first_loss, 4.0);  // about log(258) at the start
  EXPECT_LT(res.final_loss, 0.5 * first_loss);
  EXPECT_LT(res.val_loss, 0.5 * first_loss);
}

// llm.c's rule: a resumed run matches an uninterrupted one bit for bit.
TEST(Train, ResumeIsBitIdentical) {
  const std::string dir = testing_util::FreshDir("train_resume");
  testing_util::WriteTinyCorpus(dir);
  Recipe full = testing_util::TinyRecipe(dir);
  full.run.dir = dir + "/full";
  TrainResult a = Train(full, *comm::MpiWorld().value()).value();

  Recipe parts = full;
  parts.run.dir = dir + "/parts";
  parts.run.stop_after = 3;
  TrainResult b1 = Train(parts, *comm::MpiWorld().value()).value();
  EXPECT_EQ(b1.final_step, 3);
  parts.run.stop_after = 0;
  TrainResult b2 = Train(parts, *comm::MpiWorld().value()).value();
  EXPECT_EQ(b2.steps_run, full.train.steps - 3);
  EXPECT_EQ(a.final_loss, b2.final_loss);
  TensorMap wa = LoadCheckpoint(a.checkpoint, false).value().model;
  TensorMap wb = LoadCheckpoint(b2.checkpoint, false).value().model;
  ASSERT_EQ(wa.size(), wb.size());
  for (const auto& [name, t] : wa) EXPECT_TRUE(torch::equal(t, wb.at(name))) << name;
}

}  // namespace
}  // namespace qat::trainer
