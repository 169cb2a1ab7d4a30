// Hugging Face interop: tiny LLaMA / Mistral / Qwen2 directories written here (bf16, fp16, fp32,
// sharded or not, tied or not) import with every tensor equal; export then import is the
// identity; logits of an imported model match a direct computation from the stored tensors;
// recipes take their dimensions from config.json; malformed directories get clear errors.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kernels/json.h"
#include "kernels/safetensors.h"
#include "torch_test_util.h"
#include "trainer/hf.h"
#include "trainer/recipe.h"
#include "trainer/train.h"

namespace qat::trainer {
namespace {

namespace fs = std::filesystem;
using testing_util::FreshDir;

#define EXPECT_CONTAINS(text, part)                          \
  EXPECT_NE(std::string(text).find(part), std::string::npos) \
      << "\"" << std::string(text) << "\" does not contain \"" << (part) << "\""

struct Variant {
  const char* name;
  const char* arch;
  bool tied;
  kernels::DType dtype;
  bool sharded;
};

ModelConfig TinyConfig(const Variant& v) {
  ModelConfig c;
  c.vocab_size = 260;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.max_seq_len = 32;
  c.rope_theta = 500000.0;
  c.rms_norm_eps = 1e-5;
  c.tie_embeddings = v.tied;
  c.attention_bias = std::string(v.arch) == "Qwen2ForCausalLM";
  return c;
}

std::string ConfigJson(const Variant& v, const ModelConfig& c) {
  std::string extra;
  if (std::string(v.arch) == "MistralForCausalLM") extra = R"("sliding_window": 4096,)";
  if (std::string(v.arch) == "Qwen2ForCausalLM")
    extra = R"("use_sliding_window": false, "sliding_window": 8,)";
  return absl::StrCat(
      R"({"architectures": [")", v.arch, R"("], "hidden_act": "silu", )", extra,
      R"( "vocab_size": )", c.vocab_size, R"(, "hidden_size": )", c.hidden_size,
      R"(, "intermediate_size": )", c.intermediate_size, R"(, "num_hidden_layers": )", c.num_layers,
      R"(, "num_attention_heads": )", c.num_heads, R"(, "num_key_value_heads": )", c.num_kv_heads,
      R"(, "max_position_embeddings": 32, "rope_theta": 500000.0, )",
      R"("rms_norm_eps": 1e-05, "tie_word_embeddings": )", c.tie_embeddings ? "true" : "false",
      R"(, "bos_token_id": 256, "eos_token_id": [257, 258], "rope_scaling": null})");
}

torch::ScalarType TorchType(kernels::DType d) {
  return d == kernels::DType::kBF16  ? torch::kBFloat16
         : d == kernels::DType::kF16 ? torch::kFloat16
                                     : torch::kFloat32;
}

// Writes a HF directory for `v` and returns the fp32 values every stored tensor holds.
TensorMap WriteHfDir(const std::string& dir, const Variant& v, uint64_t seed = 1) {
  const ModelConfig c = TinyConfig(v);
  auto gen = at::detail::createCPUGenerator(seed);
  TensorMap values;
  std::vector<kernels::SafetensorsWriter> shards(v.sharded ? 2 : 1);
  std::string weight_map;
  int i = 0;
  for (const auto& [name, shape] : HfTensorShapes(c)) {
    torch::Tensor t = torch::randn(shape, gen) * 0.2;
    if (shape.size() == 1 && name.find("norm") != std::string::npos) t = t + 1.0;
    torch::Tensor stored = t.to(TorchType(v.dtype)).contiguous();
    values[name] = stored.to(torch::kFloat32);
    const int shard = v.sharded ? (i++ % 2) : 0;
    shards[shard].Add(name, v.dtype, shape, stored.data_ptr(),
                      stored.numel() * stored.element_size());
    absl::StrAppend(&weight_map, weight_map.empty() ? "" : ", ", "\"", name, "\": \"part-", shard,
                    ".safetensors\"");
  }
  // A RoPE cache some older checkpoints carry: ignored on import.
  float inv_freq[4] = {1, 0.5f, 0.25f, 0.125f};
  shards[0].Add("model.layers.0.self_attn.rotary_emb.inv_freq", kernels::DType::kF32, {4}, inv_freq,
                sizeof(inv_freq));
  if (v.sharded)
    absl::StrAppend(&weight_map,
                    ", \"model.layers.0.self_attn.rotary_emb.inv_freq\": \"part-0.safetensors\"");
  fs::create_directories(dir);
  if (v.sharded) {
    for (int s = 0; s < 2; ++s) {
      EXPECT_TRUE(shards[s].Write(absl::StrCat(dir, "/part-", s, ".safetensors")).ok());
    }
    EXPECT_TRUE(kernels::WriteFileAtomic(
                    dir + "/model.safetensors.index.json",
                    absl::StrCat(R"({"metadata": {}, "weight_map": {)", weight_map, "}}"))
                    .ok());
  } else {
    EXPECT_TRUE(shards[0].Write(dir + "/model.safetensors").ok());
  }
  EXPECT_TRUE(kernels::WriteFileAtomic(dir + "/config.json", ConfigJson(v, c)).ok());
  return values;
}

const Variant kVariants[] = {
    {"llama_bf16", "LlamaForCausalLM", false, kernels::DType::kBF16, false},
    {"llama_fp32_sharded", "LlamaForCausalLM", false, kernels::DType::kF32, true},
    {"mistral_fp16", "MistralForCausalLM", false, kernels::DType::kF16, false},
    {"qwen2_bias_tied_bf16_sharded", "Qwen2ForCausalLM", true, kernels::DType::kBF16, true},
    {"qwen2_bias_fp32", "Qwen2ForCausalLM", false, kernels::DType::kF32, false},
};

void ExpectSameTensors(const TensorMap& want, const TensorMap& got) {
  ASSERT_EQ(want.size(), got.size());
  for (const auto& [name, t] : want) {
    auto it = got.find(name);
    ASSERT_NE(it, got.end()) << name;
    EXPECT_TRUE(torch::equal(t, it->second)) << name;
  }
}

TEST(HfImport, EveryVariantImportsWithEveryTensorEqual) {
  for (const Variant& v : kVariants) {
    SCOPED_TRACE(v.name);
    const std::string dir = FreshDir(std::string("hf_import_") + v.name);
    const TensorMap values = WriteHfDir(dir, v);
    absl::StatusOr<LoadedModel> loaded = LoadModelFromCheckpoint(dir);  // the teacher path
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    const ModelConfig want = TinyConfig(v);
    const ModelConfig& got = loaded->recipe.model;
    EXPECT_EQ(got.vocab_size, want.vocab_size);
    EXPECT_EQ(got.num_kv_heads, 2);
    EXPECT_EQ(got.tie_embeddings, want.tie_embeddings);
    EXPECT_EQ(got.attention_bias, want.attention_bias);
    EXPECT_EQ(got.rope_theta, 500000.0);
    // Mistral's sliding window (4096) is above max_position_embeddings; Qwen2's is unused.
    EXPECT_EQ(got.max_seq_len, 32);
    EXPECT_EQ(loaded->recipe.quant.method, "none");
    ExpectSameTensors(values, ParameterMap(*loaded->model));
  }
}

TEST(HfExport, ExportThenImportGivesIdenticalTensors) {
  for (const Variant& v : {kVariants[0], kVariants[3]}) {
    SCOPED_TRACE(v.name);
    const std::string dir = FreshDir(std::string("hf_roundtrip_") + v.name);
    const TensorMap values = WriteHfDir(dir + "/in", v);
    absl::StatusOr<LoadedModel> loaded = LoadHfModel(dir + "/in");
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    for (const char* dtype : {"bf16", "fp32"}) {
      const std::string out = dir + "/out_" + dtype;
      absl::StatusOr<HfExportReport> r = ExportHf(loaded->model, out, {dtype, ""});
      ASSERT_TRUE(r.ok()) << r.status();
      EXPECT_FALSE(fs::exists(out + ".tmp"));
      absl::StatusOr<HfConfig> config = ReadHfConfig(out);
      ASSERT_TRUE(config.ok()) << config.status();
      EXPECT_EQ(config->architecture, v.tied ? "Qwen2ForCausalLM" : "LlamaForCausalLM");
      EXPECT_EQ(config->torch_dtype, dtype == std::string("bf16") ? "bfloat16" : "float32");
      absl::StatusOr<TensorMap> back = LoadHfTensors(out, config->model);
      ASSERT_TRUE(back.ok()) << back.status();
      // bf16 sources are exact in both bf16 and fp32.
      ExpectSameTensors(values, *back);
    }
    // Exporting again replaces the directory as a whole.
    ASSERT_TRUE(ExportHf(loaded->model, dir + "/out_fp32", {"fp32", ""}).ok());
    EXPECT_FALSE(fs::exists(dir + "/out_fp32.old"));
  }
}

TEST(HfExport, WritesTheFakeQuantizedWeightsAndTokenizerFiles) {
  const std::string dir = FreshDir("hf_quantized");
  ModelConfig c = TinyConfig(kVariants[4]);  // Qwen2 layout with biases
  QuantConfig q;
  q.method = "ternary";
  absl::StatusOr<CausalLM> model = BuildModel(c, q);
  ASSERT_TRUE(model.ok()) << model.status();
  InitWeights(*model, 3, 0.05);
  {
    torch::NoGradGuard no_grad;
    for (auto& p : (*model)->named_parameters()) {
      if (p.key().find(".bias") != std::string::npos) p.value().normal_(0, 0.1);
    }
  }
  // A byte-level BPE tokenizer.json with nothing but the 256 byte tokens.
  std::string vocab;
  for (int b = 0, n = 0; b < 256; ++b) {
    const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    std::string ch;
    const int cp = printable ? b : 0x100 + n++;
    if (cp < 0x80) {
      ch = cp == '"' ? "\\\"" : cp == '\\' ? "\\\\" : std::string(1, char(cp));
    } else {
      ch = absl::StrFormat("\\u%04x", cp);
    }
    absl::StrAppend(&vocab, b ? "," : "", "\"", ch, "\":", b);
  }
  const std::string tok_dir = dir + "/tok";
  fs::create_directories(tok_dir);
  ASSERT_TRUE(
      kernels::WriteFileAtomic(
          tok_dir + "/tokenizer.json",
          absl::StrCat(R"({"added_tokens": [{"id": 256, "content": "<|eot|>", "special": true}],)",
                       R"("pre_tokenizer": {"type": "ByteLevel", "use_regex": true},)",
                       R"("model": {"type": "BPE", "merges": [], "vocab": {)", vocab, "}}}"))
          .ok());
  ASSERT_TRUE(
      kernels::WriteFileAtomic(tok_dir + "/tokenizer_config.json", R"({"eos_token": "<|eot|>"})")
          .ok());

  absl::StatusOr<HfExportReport> r = ExportHf(*model, dir + "/out", {"fp32", tok_dir});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->copied.size(), 2u);
  EXPECT_TRUE(fs::exists(dir + "/out/tokenizer.json"));
  EXPECT_TRUE(fs::exists(dir + "/out/tokenizer_config.json"));
  absl::StatusOr<HfConfig> config = ReadHfConfig(dir + "/out");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->eos_token_id, 256);
  EXPECT_EQ(config->bos_token_id, -1);
  absl::StatusOr<TensorMap> back = LoadHfTensors(dir + "/out", config->model);
  ASSERT_TRUE(back.ok()) << back.status();
  auto layer = (*model)->model->layers[0]->as<DecoderLayer>();
  torch::NoGradGuard no_grad;
  const torch::Tensor wq = layer->self_attn->q_proj->effective_weight();
  EXPECT_TRUE(torch::equal(back->at("model.layers.0.self_attn.q_proj.weight"), wq));
  // Ternary: at most three distinct values, and not the latent weights.
  EXPECT_LE(std::get<0>(at::_unique(wq)).numel(), 3);
  EXPECT_FALSE(torch::equal(wq, layer->self_attn->q_proj->weight));
  EXPECT_TRUE(torch::equal(back->at("model.layers.0.self_attn.q_proj.bias"),
                           layer->self_attn->q_proj->bias));
  // The imported model computes what the quantized one does.
  absl::StatusOr<LoadedModel> imported = LoadHfModel(dir + "/out");
  ASSERT_TRUE(imported.ok()) << imported.status();
  torch::Tensor tokens = torch::tensor({{1, 5, 9, 200, 3}}, torch::kInt64);
  EXPECT_TRUE(
      torch::allclose(imported->model->forward(tokens), (*model)->forward(tokens), 1e-5, 1e-5));
}

// ---------------------------------------------------------------------------------------------
// Logits of an imported model against a direct computation from the stored tensors (double
// precision loops, biases included).

using Vec = std::vector<double>;
Vec Row(const torch::Tensor& t, int64_t r) {
  torch::Tensor row = t[r].to(torch::kFloat64).contiguous();
  return Vec(row.data_ptr<double>(), row.data_ptr<double>() + row.numel());
}
Vec Linear(const TensorMap& w, const std::string& name, const Vec& x, bool bias) {
  const torch::Tensor m = w.at(name + ".weight").to(torch::kFloat64).contiguous();
  const double* p = m.data_ptr<double>();
  Vec y(m.size(0), 0.0);
  for (int64_t o = 0; o < m.size(0); ++o) {
    for (int64_t i = 0; i < m.size(1); ++i) y[o] += p[o * m.size(1) + i] * x[i];
  }
  if (bias) {
    const Vec b = Row(w.at(name + ".bias").unsqueeze(0), 0);
    for (size_t o = 0; o < y.size(); ++o) y[o] += b[o];
  }
  return y;
}
Vec Norm(const Vec& x, const torch::Tensor& g, double eps) {
  double ms = 0;
  for (double v : x) ms += v * v / x.size();
  const Vec gain = Row(g.unsqueeze(0), 0);
  Vec y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] / std::sqrt(ms + eps) * gain[i];
  return y;
}

std::vector<Vec> DirectLogits(const TensorMap& w, const ModelConfig& c,
                              const std::vector<int64_t>& tokens) {
  const int64_t H = c.num_heads, KV = c.num_kv_heads, hd = c.hidden_size / H;
  const int64_t T = static_cast<int64_t>(tokens.size());
  std::vector<Vec> h;
  for (int64_t t : tokens) h.push_back(Row(w.at("model.embed_tokens.weight"), t));
  const auto rope = [&](Vec& v, int64_t heads, int64_t pos) {
    for (int64_t k = 0; k < heads; ++k) {
      for (int64_t i = 0; i < hd / 2; ++i) {
        const double a = pos * std::pow(c.rope_theta, -2.0 * i / hd);
        const double x1 = v[k * hd + i], x2 = v[k * hd + i + hd / 2];
        v[k * hd + i] = x1 * std::cos(a) - x2 * std::sin(a);
        v[k * hd + i + hd / 2] = x2 * std::cos(a) + x1 * std::sin(a);
      }
    }
  };
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".");
    std::vector<Vec> q(T), k(T), v(T);
    for (int64_t t = 0; t < T; ++t) {
      const Vec a = Norm(h[t], w.at(p + "input_layernorm.weight"), c.rms_norm_eps);
      q[t] = Linear(w, p + "self_attn.q_proj", a, c.attention_bias);
      k[t] = Linear(w, p + "self_attn.k_proj", a, c.attention_bias);
      v[t] = Linear(w, p + "self_attn.v_proj", a, c.attention_bias);
      rope(q[t], H, t);
      rope(k[t], KV, t);
    }
    for (int64_t t = 0; t < T; ++t) {
      Vec attn(H * hd, 0.0);
      for (int64_t j = 0; j < H; ++j) {
        const int64_t g = j / (H / KV);
        Vec s(t + 1);
        double mx = -1e300, z = 0;
        for (int64_t u = 0; u <= t; ++u) {
          s[u] = 0;
          for (int64_t i = 0; i < hd; ++i) s[u] += q[t][j * hd + i] * k[u][g * hd + i];
          s[u] /= std::sqrt(double(hd));
          mx = std::max(mx, s[u]);
        }
        for (double& x : s) z += (x = std::exp(x - mx));
        for (int64_t u = 0; u <= t; ++u) {
          for (int64_t i = 0; i < hd; ++i) attn[j * hd + i] += s[u] / z * v[u][g * hd + i];
        }
      }
      const Vec o = Linear(w, p + "self_attn.o_proj", attn, false);
      for (size_t i = 0; i < o.size(); ++i) h[t][i] += o[i];
      const Vec m = Norm(h[t], w.at(p + "post_attention_layernorm.weight"), c.rms_norm_eps);
      Vec gate = Linear(w, p + "mlp.gate_proj", m, false);
      const Vec up = Linear(w, p + "mlp.up_proj", m, false);
      for (size_t i = 0; i < gate.size(); ++i) gate[i] = gate[i] / (1 + std::exp(-gate[i])) * up[i];
      const Vec d = Linear(w, p + "mlp.down_proj", gate, false);
      for (size_t i = 0; i < d.size(); ++i) h[t][i] += d[i];
    }
  }
  const std::string head = c.tie_embeddings ? "model.embed_tokens" : "lm_head";
  std::vector<Vec> logits;
  for (int64_t t = 0; t < T; ++t) {
    logits.push_back(Linear(w, head, Norm(h[t], w.at("model.norm.weight"), c.rms_norm_eps), false));
  }
  return logits;
}

TEST(HfImport, LogitsMatchADirectComputationFromTheStoredTensors) {
  for (const Variant& v : {kVariants[2], kVariants[3]}) {
    SCOPED_TRACE(v.name);
    const std::string dir = FreshDir(std::string("hf_logits_") + v.name);
    const TensorMap values = WriteHfDir(dir, v, 7);
    absl::StatusOr<LoadedModel> loaded = LoadHfModel(dir);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    const std::vector<int64_t> tokens = {256, 72, 101, 108, 108, 111, 3};
    torch::NoGradGuard no_grad;
    torch::Tensor got =
        loaded->model->forward(torch::tensor(tokens, torch::kInt64).unsqueeze(0))[0];
    const std::vector<Vec> want = DirectLogits(values, loaded->recipe.model, tokens);
    double max_err = 0, max_abs = 0;
    for (size_t t = 0; t < tokens.size(); ++t) {
      const Vec row = Row(got, static_cast<int64_t>(t));
      for (size_t i = 0; i < row.size(); ++i) {
        max_err = std::max(max_err, std::fabs(row[i] - want[t][i]));
        max_abs = std::max(max_abs, std::fabs(want[t][i]));
      }
    }
    EXPECT_GT(max_abs, 0.1);  // the logits are not trivially zero
    EXPECT_LT(max_err, 1e-4 * std::max(1.0, max_abs));
  }
}

// ---------------------------------------------------------------------------------------------
// Recipes and malformed input.

TEST(HfRecipe, FromHfFillsTheModelKeys) {
  const std::string dir = FreshDir("hf_recipe");
  WriteHfDir(dir + "/m", kVariants[3]);
  ASSERT_TRUE(kernels::WriteFileAtomic(dir + "/m/tokenizer.json", "{}").ok());
  std::ofstream(dir + "/r.yaml") << "model: {from_hf: " << dir << "/m}\nquant: {method: ternary}\n"
                                 << "data: {seq_len: 16}\n";
  absl::StatusOr<Recipe> r = LoadRecipe(dir + "/r.yaml");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->model.vocab_size, 260);
  EXPECT_EQ(r->model.hidden_size, 32);
  EXPECT_TRUE(r->model.attention_bias);
  EXPECT_TRUE(r->model.tie_embeddings);
  EXPECT_EQ(r->model.max_seq_len, 32);
  EXPECT_EQ(r->data.tokenizer, dir + "/m");
  // The resolved recipe reads back without the directory being consulted again.
  absl::StatusOr<Recipe> again = ParseRecipeText(RecipeToYaml(*r), "resolved");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->model.hidden_size, 32);

  std::ofstream(dir + "/bad.yaml") << "model: {from_hf: " << dir << "/m, hidden_size: 64}\n";
  absl::StatusOr<Recipe> bad = LoadRecipe(dir + "/bad.yaml");
  ASSERT_FALSE(bad.ok());
  EXPECT_CONTAINS(bad.status().message(), "model.hidden_size = 64");
  EXPECT_CONTAINS(bad.status().message(), "config.json says 32");
}

TEST(HfImport, MalformedDirectoriesGetClearErrors) {
  const Variant v = kVariants[0];
  const ModelConfig c = TinyConfig(v);
  struct Case {
    std::string name, expect;
    std::function<void(const std::string&)> spoil;
  };
  const auto replace_in = [](const std::string& path, const std::string& from,
                             const std::string& to) {
    std::string text = *kernels::ReadFile(path);
    ASSERT_NE(text.find(from), std::string::npos) << from;
    text.replace(text.find(from), from.size(), to);
    ASSERT_TRUE(kernels::WriteFileAtomic(path, text).ok());
  };
  const std::vector<Case> cases = {
      {"arch", "supported are LlamaForCausalLM",
       [&](const std::string& d) {
         replace_in(d + "/config.json", "LlamaForCausalLM", "GPT2LMHeadModel");
       }},
      {"missing_key", "\"hidden_size\" is missing",
       [&](const std::string& d) {
         replace_in(d + "/config.json", "\"hidden_size\"", "\"hidden\"");
       }},
      {"rope_scaling", "scaled RoPE",
       [&](const std::string& d) {
         replace_in(d + "/config.json", "\"rope_scaling\": null",
                    "\"rope_scaling\": {\"factor\": 8.0}");
       }},
      {"bad_json", "not valid JSON",
       [&](const std::string& d) { replace_in(d + "/config.json", "}", ""); }},
      {"truncated", "runs past the end",
       [&](const std::string& d) {
         std::string bytes = *kernels::ReadFile(d + "/model.safetensors");
         ASSERT_TRUE(kernels::WriteFileAtomic(d + "/model.safetensors", bytes.substr(0, 40)).ok());
       }},
      {"huge_header", "exceeds the",
       [&](const std::string& d) {
         std::string bytes = *kernels::ReadFile(d + "/model.safetensors");
         for (int i = 0; i < 8; ++i) bytes[i] = '\xFF';
         ASSERT_TRUE(kernels::WriteFileAtomic(d + "/model.safetensors", bytes).ok());
       }},
      {"shape", "has shape [260, 16], config.json implies [260, 32]",
       [&](const std::string& d) {
         kernels::SafetensorsWriter w;
         std::vector<uint16_t> zeros(260 * 16, 0);
         w.Add("model.embed_tokens.weight", kernels::DType::kBF16, {260, 16}, zeros.data(),
               zeros.size() * 2);
         ASSERT_TRUE(w.Write(d + "/model.safetensors").ok());
       }},
      {"missing_tensor", "missing tensor \"lm_head.weight\"",
       [&](const std::string& d) {
         kernels::SafetensorsFile f = *kernels::SafetensorsFile::Open(d + "/model.safetensors");
         kernels::SafetensorsWriter w;
         for (const kernels::TensorInfo& t : f.tensors()) {
           if (t.name == "lm_head.weight") continue;
           w.Add(t.name, t.dtype, t.shape, f.Data(t), t.end - t.begin);
         }
         ASSERT_TRUE(w.Write(d + "/model.safetensors").ok());
       }},
      {"unexpected", "unexpected tensor \"model.layers.9.mlp.up_proj.weight\"",
       [&](const std::string& d) {
         kernels::SafetensorsFile f = *kernels::SafetensorsFile::Open(d + "/model.safetensors");
         kernels::SafetensorsWriter w;
         for (const kernels::TensorInfo& t : f.tensors())
           w.Add(t.name, t.dtype, t.shape, f.Data(t), t.end - t.begin);
         float x = 0;
         w.Add("model.layers.9.mlp.up_proj.weight", kernels::DType::kF32, {1}, &x, 4);
         ASSERT_TRUE(w.Write(d + "/model.safetensors").ok());
       }},
      {"overlap", "overlap",
       [&](const std::string& d) {
         // Point the second tensor's data_offsets at the first one's bytes (same length).
         std::string bytes = *kernels::ReadFile(d + "/model.safetensors");
         uint64_t n;
         std::memcpy(&n, bytes.data(), 8);
         auto header = kernels::json::Parse(std::string_view(bytes).substr(8, n));
         ASSERT_TRUE(header.ok());
         const std::string a = "model.layers.0.input_layernorm.weight";
         const std::string b = "model.layers.0.post_attention_layernorm.weight";
         kernels::json::Value h = *header;
         kernels::json::Value eb = *h.Find(b);
         eb.Set("data_offsets", *h.Find(a)->Find("data_offsets"));
         h.Set(b, eb);
         std::string text = kernels::json::Serialize(h);
         text.resize(n, ' ');
         ASSERT_EQ(text.size(), n);
         bytes.replace(8, n, text);
         ASSERT_TRUE(kernels::WriteFileAtomic(d + "/model.safetensors", bytes).ok());
       }},
  };
  for (const Case& k : cases) {
    SCOPED_TRACE(k.name);
    const std::string dir = FreshDir("hf_bad_" + k.name);
    WriteHfDir(dir, v);
    k.spoil(dir);
    absl::StatusOr<LoadedModel> loaded = LoadHfModel(dir);
    ASSERT_FALSE(loaded.ok());
    EXPECT_CONTAINS(loaded.status().message(), dir);
    EXPECT_CONTAINS(loaded.status().message(), k.expect);
  }
}

TEST(HfImport, MalformedShardIndexesGetClearErrors) {
  const Variant v = kVariants[1];  // sharded
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"\"part-1.safetensors\"", "\"../part-1.safetensors\""},  // escapes the directory
      {"\"weight_map\"", "\"weights\""},
  };
  const std::vector<std::string> expect = {"is not a file name inside the directory",
                                           "\"weight_map\" is missing"};
  for (size_t i = 0; i < cases.size(); ++i) {
    const std::string dir = FreshDir(absl::StrCat("hf_bad_index_", i));
    WriteHfDir(dir, v);
    std::string text = *kernels::ReadFile(dir + "/model.safetensors.index.json");
    text.replace(text.find(cases[i].first), cases[i].first.size(), cases[i].second);
    ASSERT_TRUE(kernels::WriteFileAtomic(dir + "/model.safetensors.index.json", text).ok());
    absl::StatusOr<LoadedModel> loaded = LoadHfModel(dir);
    ASSERT_FALSE(loaded.ok());
    EXPECT_CONTAINS(loaded.status().message(), expect[i]);
  }
  // A tensor the index lists for a shard that does not hold it.
  const std::string dir = FreshDir("hf_bad_index_moved");
  WriteHfDir(dir, v);
  std::string text = *kernels::ReadFile(dir + "/model.safetensors.index.json");
  const std::string from = "\"model.norm.weight\": \"part-";
  const size_t at = text.find(from) + from.size();
  text[at] = text[at] == '0' ? '1' : '0';
  ASSERT_TRUE(kernels::WriteFileAtomic(dir + "/model.safetensors.index.json", text).ok());
  absl::StatusOr<LoadedModel> loaded = LoadHfModel(dir);
  ASSERT_FALSE(loaded.ok());
  EXPECT_CONTAINS(loaded.status().message(), "model.norm.weight");
}

}  // namespace
}  // namespace qat::trainer
