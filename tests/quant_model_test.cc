// Quantizers in the model and the recipe: quant keys and per-layer overrides, learned scales as
// parameters, export of every trained quantizer (unpacked with the kernels' reference it gives
// the fake-quantized weights bit for bit), the block_inputs penalty and hidden-state distillation
// as defined in trainer/objective.h, and a short training run with learned scales.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <fstream>

#include "comm/process_group.h"
#include "kernels/lowbit.h"
#include "kernels/runtime.h"
#include "kernels/safetensors.h"
#include "kernels/ternary.h"
#include "quant/distill.h"
#include "torch_test_util.h"
#include "trainer/checkpoint.h"
#include "trainer/export.h"
#include "trainer/model.h"
#include "trainer/objective.h"
#include "trainer/train.h"

namespace qat::trainer {
namespace {

using testing_util::SaveModel;

std::string Write(const std::string& dir, const std::string& text) {
  std::ofstream(dir + "/r.yaml") << text;
  return dir + "/r.yaml";
}

TEST(QuantRecipe, KeysAndOverridesLoadAndRoundTrip) {
  const std::string dir = testing_util::FreshDir("quant_recipe");
  const std::string path = Write(dir,
                                 "quant:\n"
                                 "  method: int\n"
                                 "  bits: 3\n"
                                 "  granularity: per_group\n"
                                 "  group_size: 64\n"
                                 "  scale: lsq\n"
                                 "  activations: int8\n"
                                 "  overrides:\n"
                                 "    - {pattern: \"*.mlp.down_proj.*\", bits: 8, scale: none}\n"
                                 "    - pattern: \"model.layers.0.*\"\n"
                                 "      method: ternary\n"
                                 "      scale: seq\n"
                                 "      granularity: per_channel\n");
  Recipe r = LoadRecipe(path).value();
  EXPECT_EQ(r.quant.method, "int");
  EXPECT_EQ(r.quant.bits, 3);
  ASSERT_EQ(r.quant.overrides.size(), 2u);
  // The first match wins: layer 0's down_proj is int8, its q_proj ternary; layer 1 keeps int3.
  std::string key;
  QuantConfig down0 = LayerQuantConfig(r.quant, "model.layers.0.mlp.down_proj.weight", &key);
  EXPECT_EQ(down0.bits, 8);
  EXPECT_EQ(down0.scale, "none");
  EXPECT_EQ(down0.method, "int");
  EXPECT_EQ(key, "quant.overrides[0].");
  QuantConfig q0 = LayerQuantConfig(r.quant, "model.layers.0.self_attn.q_proj.weight", &key);
  EXPECT_EQ(q0.method, "ternary");
  EXPECT_EQ(q0.scale, "seq");
  EXPECT_EQ(key, "quant.overrides[1].");
  QuantConfig q1 = LayerQuantConfig(r.quant, "model.layers.1.self_attn.q_proj.weight", &key);
  EXPECT_EQ(q1.bits, 3);
  EXPECT_EQ(key, "quant.");
  // The resolved YAML reads back to the same recipe, overrides included.
  Recipe again = ParseRecipeText(RecipeToYaml(r), "resolved").value();
  EXPECT_EQ(RecipeToYaml(again), RecipeToYaml(r));
  ASSERT_EQ(again.quant.overrides.size(), 2u);
  EXPECT_EQ(again.quant.overrides[0].pattern, "*.mlp.down_proj.*");
  // --set replaces the list.
  Recipe set = LoadRecipe(path, {"quant.overrides=[{pattern: lm_head.weight, bits: 4}]"}).value();
  ASSERT_EQ(set.quant.overrides.size(), 1u);
  EXPECT_TRUE(GlobMatch("*.mlp.*_proj.weight", "model.layers.12.mlp.up_proj.weight"));
  EXPECT_FALSE(GlobMatch("*.mlp.*_proj.weight", "model.layers.12.mlp.up_proj.weight_scale"));
  EXPECT_TRUE(GlobMatch("model.layers.?.*", "model.layers.3.x"));
  EXPECT_FALSE(GlobMatch("model.layers.?.*", "model.layers.13.x"));
}

TEST(QuantRecipe, BadValuesNameTheKey) {
  const std::string dir = testing_util::FreshDir("quant_recipe_bad");
  const std::vector<std::pair<std::string, std::vector<std::string>>> cases = {
      {"quant:\n  method: int\n  bits: 9\n", {"'quant.bits'", "out of range"}},
      {"quant:\n  method: int\n  bits: 5\n", {"quant.bits", "2, 3, 4 or 8"}},
      {"quant:\n  method: quaternary\n", {"'quant.method'", "quaternary", "binary, int"}},
      {"quant:\n  granularity: per_group\n  group_size: 48\n", {"quant.group_size", "48"}},
      {"quant:\n  scale: lsq\n", {"quant.scale", "seq"}},
      {"quant:\n  method: int\n  symmetric: false\n  scale: seq\n", {"quant.scale", "symmetric"}},
      {"quant:\n  activations: fp8\n", {"'quant.activations'", "fp8"}},
      {"quant:\n  overrides:\n    - {pattern: \"*\", bits: 12}\n",
       {"r.yaml:3", "'quant.overrides[0].bits'", "out of range"}},
      {"quant:\n  overrides:\n    - {pattern: \"*\", method: int, bits: 6}\n",
       {"quant.overrides[0].bits", "2, 3, 4 or 8"}},
      {"quant:\n  overrides:\n    - {pattern: \"*\", bitz: 4}\n",
       {"unknown key 'quant.overrides[0].bitz'", "did you mean 'bits'"}},
      {"quant:\n  overrides:\n    - {bits: 4}\n", {"quant.overrides[0]", "pattern"}},
      {"quant:\n  overrides: {pattern: x}\n", {"'quant.overrides'", "list"}},
      {"distill:\n  hidden_mse_weight: 1\n", {"distill.hidden_mse_weight", "teacher"}},
      {"distill:\n  hidden_mse_weight: -1\n", {"'distill.hidden_mse_weight'", "out of range"}},
      {"smoothness:\n  at: everywhere\n", {"'smoothness.at'", "block_inputs"}},
  };
  for (const auto& [text, expected] : cases) {
    absl::StatusOr<Recipe> r = LoadRecipe(Write(dir, text));
    ASSERT_FALSE(r.ok()) << text;
    const std::string msg(r.status().message());
    for (const std::string& e : expected) EXPECT_NE(msg.find(e), std::string::npos) << msg;
  }
}

TEST(QuantModel, GroupSizeThatDoesNotDivideALayerNamesLayerAndKey) {
  ModelConfig c = testing_util::TinyModel();  // hidden 32, intermediate 48
  QuantConfig q;
  q.method = "int";
  q.granularity = "per_group";
  q.group_size = 32;
  q.overrides.push_back({"*.down_proj.*", {{"group_size", "64"}}});
  absl::StatusOr<CausalLM> m = BuildModel(c, q);
  ASSERT_FALSE(m.ok());
  const std::string msg(m.status().message());
  EXPECT_NE(msg.find("quant.overrides[0].group_size = 64"), std::string::npos) << msg;
  EXPECT_NE(msg.find("model.layers.0.mlp.down_proj.weight"), std::string::npos) << msg;
  q.overrides.clear();
  q.group_size = 64;  // divides no layer of width 32
  m = BuildModel(c, q);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("quant.group_size = 64"), std::string::npos);
}

TEST(QuantModel, LearnedScalesAreOrdinaryParameters) {
  ModelConfig c = testing_util::TinyModel();
  c.intermediate_size = 64;  // groups of 32 divide every layer
  QuantConfig q;
  q.method = "int";
  q.bits = 4;
  q.scale = "lsq";
  q.granularity = "per_group";
  q.group_size = 32;
  q.embeddings = true;
  q.overrides.push_back(
      {"*.self_attn.*", {{"method", "ternary"}, {"scale", "seq"}, {"granularity", "per_channel"}}});
  q.overrides.push_back({"*.up_proj.*", {{"method", "none"}}});
  CausalLM m = BuildModel(c, q).value();
  InitWeights(m, 3, 0.1);
  TensorMap params = ParameterMap(*m);
  EXPECT_EQ(params.at("model.layers.0.self_attn.q_proj.weight_scale").sizes(),
            torch::IntArrayRef({32}));  // per channel: [out]
  EXPECT_EQ(params.at("model.layers.1.self_attn.k_proj.weight_scale").sizes(),
            torch::IntArrayRef({16}));
  EXPECT_EQ(params.at("model.layers.0.mlp.down_proj.weight_scale").sizes(),
            torch::IntArrayRef({32 * 64 / 32}));  // per group: [out * in / 32]
  EXPECT_EQ(params.at("model.embed_tokens.weight_scale").sizes(), torch::IntArrayRef({258}));
  EXPECT_EQ(params.count("model.layers.0.mlp.up_proj.weight_scale"), 0u);  // method none
  EXPECT_EQ(params.count("lm_head.weight_scale"), 0u);                     // quant.lm_head false
  // InitWeights gave every scale its paper's value for the weights.
  for (const QuantizedWeight& w : QuantizedWeights(m)) {
    if (!w.scale.defined()) continue;
    EXPECT_TRUE(torch::equal(w.scale, w.quantizer->InitScale(w.weight))) << w.name;
  }
  // Scales get gradients like any parameter.
  torch::Tensor tokens = torch::randint(0, 258, {2, 8}, torch::kInt64);
  m->forward(tokens).pow(2).mean().backward();
  EXPECT_TRUE(params.at("model.layers.0.self_attn.q_proj.weight_scale").grad().defined());
  EXPECT_GT(
      params.at("model.layers.0.mlp.gate_proj.weight_scale").grad().abs().sum().item<double>(),
      0.0);
  // A checkpoint of a full-precision model lacks the scales: they come from its weights.
  TensorMap fp = ParameterMap(*m);
  for (auto it = fp.begin(); it != fp.end();) {
    it = it->first.find("weight_scale") != std::string::npos ? fp.erase(it) : std::next(it);
  }
  {
    torch::NoGradGuard ng;
    for (auto& [name, t] : fp) fp[name] = t.clone() * 1.5;
  }
  AddInitialQuantizerScales(m, &fp);
  EXPECT_TRUE(LoadParameters(*m, fp, "fp").ok());
  for (const QuantizedWeight& w : QuantizedWeights(m)) {
    if (!w.scale.defined()) continue;
    EXPECT_TRUE(torch::allclose(w.scale, w.quantizer->InitScale(w.weight))) << w.name;
  }
}

TEST(QuantModel, Int8ActivationsQuantizeBlockLinearInputsOnly) {
  ModelConfig c = testing_util::TinyModel();
  QuantConfig q;
  q.lm_head = true;
  q.activations = "int8";
  CausalLM m = BuildModel(c, q).value();
  InitWeights(m, 4, 0.2);
  for (const QuantizedWeight& w : QuantizedWeights(m)) {
    EXPECT_EQ(w.quantizer->spec().int8_activations, w.name != "lm_head.weight") << w.name;
  }
  auto& up = *m->model->layers[0]->as<DecoderLayer>()->mlp->up_proj;
  torch::Tensor x = torch::randn({3, 32});
  torch::NoGradGuard ng;
  torch::Tensor want = torch::matmul(quant::FakeQuantActivationsInt8(x), up.effective_weight().t());
  EXPECT_TRUE(torch::equal(up.forward(x), want));
  EXPECT_FALSE(torch::allclose(up.forward(x), torch::matmul(x, up.effective_weight().t()), 0, 0));
}

// ----- export -----

struct ExportCase {
  const char* name;
  QuantConfig quant;
  const char* ternary_format;
  const char* format;  // expected storage of the block linears
  int64_t group;       // expected "qat.group" (int2/int4), 0 otherwise
};

QuantConfig Q(const char* method, const char* granularity, int64_t bits = 4, bool symmetric = true,
              const char* scale = "none", int64_t group = 32, const char* act = "none") {
  QuantConfig q;
  q.method = method;
  q.granularity = granularity;
  q.bits = bits;
  q.symmetric = symmetric;
  q.scale = scale;
  q.group_size = group;
  q.activations = act;
  return q;
}

class ExportEveryQuantizer : public ::testing::TestWithParam<ExportCase> {};

// The exported layer unpacked with the kernels' scalar reference equals the fake-quantized
// weight bit for bit; its product equals the fake-quantized matmul; the runtime's logits equal
// libtorch's.
TEST_P(ExportEveryQuantizer, UnpackedWeightsEqualTheFakeQuantizedOnes) {
  const ExportCase& tc = GetParam();
  const std::string dir = testing_util::FreshDir(std::string("qexport_") + tc.name);
  ModelConfig c = testing_util::TinyModel();
  c.vocab_size = 258;
  c.hidden_size = 128;
  // 192 = 1.5 blocks of 128: padding and a short last group (groups of 128 must divide it).
  const bool group128 = tc.quant.granularity == "per_group" && tc.quant.group_size == 128;
  c.intermediate_size = group128 ? 256 : 192;
  CausalLM model = BuildModel(c, tc.quant).value();
  InitWeights(model, 21, 0.05);
  {
    torch::NoGradGuard ng;  // learned scales away from their init, as after training
    torch::manual_seed(21);
    for (QuantizedWeight& w : QuantizedWeights(model)) {
      if (w.scale.defined()) w.scale.mul_(torch::rand_like(w.scale) * 0.6 + 0.7);
    }
  }
  const std::string ckpt = SaveModel(model, dir);
  const std::string out = dir + "/model.qat.safetensors";
  ExportOptions options;
  options.ternary_format = tc.ternary_format;
  ExportReport report = ExportPacked(ckpt, out, options).value();
  const bool dense = std::string(tc.format) == "f32";
  EXPECT_EQ(report.linears_by_format[tc.format], 7 * c.num_layers);
  EXPECT_EQ(report.dense_quantized, dense ? 7 * c.num_layers : 0);

  kernels::SafetensorsFile file = kernels::SafetensorsFile::Open(out).value();
  const auto& meta = file.metadata();
  torch::NoGradGuard ng;
  torch::manual_seed(2);
  for (const QuantizedWeight& w : QuantizedWeights(model)) {
    const std::string& name = w.name;
    const int64_t rows = w.weight.size(0), cols = w.weight.size(1);
    torch::Tensor want = w.quantizer->FakeQuant(w.weight, w.scale).contiguous();
    auto fmt = meta.find("qat.quant." + name);
    EXPECT_EQ(fmt == meta.end() ? "f32" : fmt->second, tc.format) << name;
    EXPECT_EQ(meta.count("qat.act." + name), tc.quant.activations == std::string("int8") ? 1u : 0u);
    std::vector<float> got(size_t(rows * cols));
    const kernels::TensorInfo* t = file.Find(name);
    ASSERT_NE(t, nullptr) << name;
    std::vector<float> scale, zero;
    if (!dense) scale = file.ReadF32(name + ".scale").value();
    const std::string f = tc.format;
    if (f == "ternary2" || f == "ternary3") {
      std::vector<int8_t> trits(got.size());
      if (f == "ternary2") {
        kernels::UnpackTernary(file.Data(*t), rows, cols, trits.data());
      } else {
        kernels::UnpackTernary3(file.Data(*t), rows, cols, trits.data());
      }
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t cc = 0; cc < cols; ++cc)
          got[r * cols + cc] = scale[scale.size() == 1 ? 0 : r] * float(trits[r * cols + cc]);
    } else if (f == "int2" || f == "int4") {
      EXPECT_EQ(meta.at("qat.group." + name), std::to_string(tc.group));
      zero = file.ReadF32(name + ".zero").value();
      kernels::IntKView view{rows,          cols,         f == "int2" ? 2 : 4, tc.group,
                             file.Data(*t), scale.data(), zero.data()};
      kernels::DequantizeIntK(view, got.data());
      EXPECT_EQ(kernels::ValidateIntK(file.Data(*t), rows, cols, view.bits), -1);
    } else {
      got = file.ReadF32(name).value();
    }
    const float* wp = want.data_ptr<float>();
    for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i], wp[i]) << name << " at " << i;
    // The packed product against libtorch's fake-quantized matmul.
    if (f == "int2" || f == "int4") {
      torch::Tensor x = torch::randn({cols});
      std::vector<float> y(size_t(rows), 0.0f);
      kernels::IntKView view{rows,          cols,         f == "int2" ? 2 : 4, tc.group,
                             file.Data(*t), scale.data(), zero.data()};
      kernels::IntKGemv(view, x.data_ptr<float>(), y.data(), kernels::Isa::kScalar, nullptr);
      torch::Tensor yt = torch::matmul(want, x);
      for (int64_t r = 0; r < rows; ++r) {
        EXPECT_NEAR(y[r], yt[r].item<float>(), 1e-4 * (1 + std::abs(yt[r].item<float>())));
      }
    }
  }
  // The whole model through the packed runtime.
  auto packed = kernels::PackedModel::Load(out, 1, kernels::Isa::kScalar);
  ASSERT_TRUE(packed.ok()) << packed.status().message();
  std::vector<int32_t> tokens = {256, 84, 104, 101, 32, 99, 97, 116, 32, 115, 97, 116};
  kernels::Session session = (*packed)->NewSession();
  std::vector<float> logits = session.Forward(tokens.data(), int64_t(tokens.size())).value();
  torch::Tensor ids =
      torch::tensor(std::vector<int64_t>(tokens.begin(), tokens.end())).unsqueeze(0);
  torch::Tensor ref = model->forward(ids)[0].contiguous();
  const double scale = ref.abs().max().item<double>();
  if (tc.quant.activations != "int8") {
    for (size_t i = 0; i < logits.size(); ++i) {
      ASSERT_NEAR(logits[i], ref.data_ptr<float>()[i], 1e-4 * scale) << "logit " << i;
    }
    return;
  }
  // int8 activations round x * 127 / absmax: a value within float rounding of a .5 boundary may
  // round the other way in the runtime than in libtorch (their sums run in different orders),
  // moving one activation by one code. So: almost every logit to 1e-4, none far off.
  size_t off = 0;
  for (size_t i = 0; i < logits.size(); ++i) {
    const double diff = std::abs(logits[i] - ref.data_ptr<float>()[i]);
    off += diff > 1e-4 * scale;
    ASSERT_LE(diff, 5e-2 * scale) << "logit " << i;
  }
  EXPECT_LE(off, logits.size() / 20) << off << " of " << logits.size() << " logits beyond 1e-4";
}

INSTANTIATE_TEST_SUITE_P(
    Quantizers, ExportEveryQuantizer,
    ::testing::Values(
        ExportCase{"ternary_tensor", Q("ternary", "per_tensor"), "ternary2", "ternary2", 0},
        ExportCase{"ternary_channel_t3", Q("ternary", "per_channel"), "ternary3", "ternary3", 0},
        ExportCase{"ternary_seq_a8", Q("ternary", "per_channel", 2, true, "seq", 32, "int8"),
                   "ternary2", "ternary2", 0},
        ExportCase{"ternary_group64", Q("ternary", "per_group", 2, true, "none", 64), "ternary2",
                   "int2", 64},
        ExportCase{"binary_channel", Q("binary", "per_channel"), "ternary2", "ternary2", 0},
        ExportCase{"binary_lsq_group32", Q("binary", "per_group", 2, true, "lsq", 32), "ternary2",
                   "int2", 32},
        ExportCase{"int2_seq_channel", Q("int", "per_channel", 2, true, "seq"), "ternary2", "int2",
                   128},
        ExportCase{"int2_asym_group32", Q("int", "per_group", 2, false, "none", 32), "ternary2",
                   "int2", 32},
        ExportCase{"int3_lsq_group64", Q("int", "per_group", 3, true, "lsq", 64), "ternary2",
                   "int4", 64},
        ExportCase{"int4_sym_tensor_a8", Q("int", "per_tensor", 4, true, "none", 32, "int8"),
                   "ternary2", "int4", 128},
        ExportCase{"int4_asym_group128", Q("int", "per_group", 4, false, "none", 128), "ternary2",
                   "int4", 128},
        ExportCase{"int8_channel", Q("int", "per_channel", 8, true, "lsq"), "ternary2", "f32", 0}),
    [](const auto& info) { return std::string(info.param.name); });

// ----- objective -----

CausalLM TinyDouble(uint64_t seed) {
  ModelConfig c = testing_util::TinyModel();
  c.vocab_size = 20;
  c.hidden_size = 16;
  c.intermediate_size = 24;
  QuantConfig q;
  q.method = "none";
  CausalLM m = BuildModel(c, q).value();
  InitWeights(m, seed, 0.3);
  m->to(torch::kFloat64);
  return m;
}

// The penalty and loss reported by BackwardMicroBatch are the ones objective.h defines,
// recomputed here with plain autograd.
TEST(Objective, BlockInputsPenaltyAndHiddenMseFollowTheDefinitions) {
  CausalLM model = TinyDouble(1), teacher = TinyDouble(2);
  for (auto& p : teacher->parameters()) p.set_requires_grad(false);
  torch::manual_seed(4);
  torch::Tensor t = torch::randint(0, 20, {3, 9}, torch::kInt64);
  torch::Tensor inputs = t.narrow(1, 0, 8), targets = t.narrow(1, 1, 8);
  Recipe r;
  r.smoothness.mode = "grad_norm";
  r.smoothness.estimator = "exact";
  r.smoothness.at = "block_inputs";
  r.distill.kd_weight = 0.5;
  r.distill.hidden_mse_weight = 0.25;
  MicroBatchResult got = BackwardMicroBatch(model, &teacher, inputs, targets, r, 1.0, 1.0);

  BlockTrace st, tt;
  torch::Tensor tl;
  {
    torch::NoGradGuard ng;
    tl = teacher->ForwardFromEmbeddings(teacher->Embed(inputs), &tt);
  }
  torch::Tensor logits = model->ForwardFromEmbeddings(model->Embed(inputs), &st);
  double mse = 0;
  for (int l = 0; l < 2; ++l)
    mse += (st.outputs[l] - tt.outputs[l]).pow(2).mean().item<double>() / 2;
  torch::Tensor loss = 0.5 * quant::KlDistillLoss(logits, tl, 1.0) +
                       0.5 * quant::CrossEntropyLoss(logits, targets) +
                       0.25 * quant::HiddenStateMse(st.outputs, tt.outputs);
  EXPECT_NEAR(got.loss, loss.item<double>(), 1e-12);
  EXPECT_NEAR(0.25 * mse, (0.25 * quant::HiddenStateMse(st.outputs, tt.outputs)).item<double>(),
              1e-12);
  std::vector<torch::Tensor> g = torch::autograd::grad({loss}, st.inputs);
  ASSERT_EQ(g.size(), 2u);
  double penalty = 0;
  for (const torch::Tensor& gl : g) penalty += 3.0 * gl.pow(2).sum().item<double>() / 2;
  EXPECT_NEAR(got.penalty, penalty, 1e-10 * penalty);
  // The embeddings alone would give another penalty: the block inputs count.
  Recipe e = r;
  e.smoothness.at = "embeddings";
  MicroBatchResult emb = BackwardMicroBatch(model, &teacher, inputs, targets, e, 1.0, 1.0);
  EXPECT_NEAR(emb.penalty, 3.0 * g[0].pow(2).sum().item<double>(), 1e-10 * penalty);
  EXPECT_NEAR(emb.input_grad_norm, got.input_grad_norm, 1e-12);
}

TEST(Objective, TeacherMustMatchForHiddenStates) {
  Recipe r;
  r.distill.hidden_mse_weight = 1.0;
  ModelConfig s = testing_util::TinyModel(), t = s;
  EXPECT_TRUE(CheckTeacher(r, s, t).ok());
  t.num_layers = 3;
  absl::Status bad = CheckTeacher(r, s, t);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.message().find("distill.hidden_mse_weight"), std::string::npos);
  r.distill.hidden_mse_weight = 0;
  EXPECT_TRUE(CheckTeacher(r, s, t).ok());  // nothing compares hidden states
  r.smoothness.mode = "grad_match";
  EXPECT_TRUE(CheckTeacher(r, s, t).ok());  // at the embeddings only the width matters
  r.smoothness.at = "block_inputs";
  EXPECT_FALSE(CheckTeacher(r, s, t).ok());
}

// A short run: learned scales train (they move and land in the checkpoint), and export packs.
TEST(QuantTrain, LearnedScalesTrainAndExport) {
  const std::string dir = testing_util::FreshDir("quant_train");
  testing_util::WriteTinyCorpus(dir);
  Recipe r = testing_util::TinyRecipe(dir);
  r.quant.method = "int";
  r.quant.bits = 3;
  r.quant.scale = "lsq";
  r.quant.granularity = "per_group";
  r.quant.group_size = 32;
  r.quant.activations = "int8";
  r.quant.overrides.push_back(
      {"*.mlp.*", {{"method", "ternary"}, {"scale", "seq"}, {"granularity", "per_channel"}}});
  r.train.steps = 6;
  TrainResult res = Train(r, *comm::MpiWorld().value()).value();
  TensorMap trained = LoadCheckpoint(res.checkpoint, false).value().model;
  CausalLM init = BuildModel(r.model, r.quant).value();
  InitWeights(init, static_cast<uint64_t>(r.run.seed), r.model.init_std);
  TensorMap start = ParameterMap(*init);
  int scales = 0;
  for (const auto& [name, t] : start) {
    if (name.find("weight_scale") == std::string::npos) continue;
    ++scales;
    ASSERT_EQ(trained.count(name), 1u) << name;
    EXPECT_FALSE(torch::equal(trained.at(name), t)) << name << " did not train";
  }
  EXPECT_EQ(scales, 7 * r.model.num_layers);
  ExportReport report = ExportPacked(res.checkpoint, dir + "/m.safetensors").value();
  EXPECT_EQ(report.linears_by_format["int4"], 4 * r.model.num_layers);
  EXPECT_EQ(report.linears_by_format["ternary2"], 3 * r.model.num_layers);
}

}  // namespace
}  // namespace qat::trainer
