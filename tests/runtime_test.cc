// Tests of the packed-model runtime (kernels/runtime.h): tiny models are built here with
// SafetensorsWriter, and their logits are checked against a double-precision reference forward
// written directly from the math in runtime.h (whole sequence, no cache).
#include "kernels/runtime.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "kernels/lowbit.h"
#include "kernels/safetensors.h"
#include "kernels/ternary.h"
#include "process_memory.h"
#include "test_dir.h"

namespace qat::kernels {
namespace {

// kDense..kMixed write version 1 files (ternary2 only); kAllFormats cycles the linears through
// f32, ternary2, ternary3, int2 and int4 with biases on q, k, v (version 2), and kAllFormatsInt8
// adds int8 activations on every other linear.
enum class Quant { kDense, kPerTensor, kPerRow, kMixed, kAllFormats, kAllFormatsInt8 };

struct ModelSpec {
  int64_t vocab = 40, hidden = 64, intermediate = 96, layers = 2, heads = 4, kv_heads = 2;
  int64_t max_seq = 32;
  double theta = 10000.0, eps = 1e-5;
  bool tied = false;
  Quant quant = Quant::kDense;
  uint64_t seed = 1;
};

const char* const kLinearSuffixes[] = {"self_attn.q_proj.weight", "self_attn.k_proj.weight",
                                       "self_attn.v_proj.weight", "self_attn.o_proj.weight",
                                       "mlp.gate_proj.weight",    "mlp.up_proj.weight",
                                       "mlp.down_proj.weight"};

std::string LayerName(int64_t layer, const std::string& suffix) {
  return "model.layers." + std::to_string(layer) + "." + suffix;
}

// A model being built: the tensors and metadata to write (editable, to make malformed files),
// and every weight's effective value (dequantized for packed linears) for the reference.
struct TinyModel {
  struct Tensor {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    std::string bytes;
  };
  ModelSpec spec;
  std::map<std::string, std::string> metadata;
  std::vector<Tensor> tensors;
  std::map<std::string, std::vector<double>> weights;
  std::map<std::string, std::vector<double>> biases;  // linears with a bias
  std::set<std::string> int8_act;                     // linears with int8 activations

  Tensor* Find(const std::string& name) {
    for (Tensor& t : tensors) {
      if (t.name == name) return &t;
    }
    return nullptr;
  }
  void Remove(const std::string& name) {
    tensors.erase(std::remove_if(tensors.begin(), tensors.end(),
                                 [&](const Tensor& t) { return t.name == name; }),
                  tensors.end());
  }
  void AddF32(const std::string& name, std::vector<int64_t> shape, const std::vector<float>& v) {
    tensors.push_back({name, DType::kF32, std::move(shape),
                       std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4)});
  }
  // Writes the model into the running test's directory and returns the path.
  std::string Write(const std::string& stem) const {
    SafetensorsWriter writer;
    for (const auto& [key, value] : metadata) writer.SetMetadata(key, value);
    for (const Tensor& t : tensors)
      writer.Add(t.name, t.dtype, t.shape, t.bytes.data(), t.bytes.size());
    const std::string path = testing_util::CurrentTestDir().path(stem + ".safetensors");
    EXPECT_TRUE(writer.Write(path).ok());
    return path;
  }
};

TinyModel BuildModel(const ModelSpec& s) {
  TinyModel m;
  m.spec = s;
  std::mt19937_64 rng(s.seed);
  auto uniform = [&](double lo, double hi) {
    return std::uniform_real_distribution<double>(lo, hi)(rng);
  };
  const bool v2 = s.quant == Quant::kAllFormats || s.quant == Quant::kAllFormatsInt8;
  m.metadata = {{"format", "qat-packed"},
                {"qat.version", v2 ? "2" : "1"},
                {"qat.vocab_size", std::to_string(s.vocab)},
                {"qat.hidden_size", std::to_string(s.hidden)},
                {"qat.intermediate_size", std::to_string(s.intermediate)},
                {"qat.num_layers", std::to_string(s.layers)},
                {"qat.num_heads", std::to_string(s.heads)},
                {"qat.num_kv_heads", std::to_string(s.kv_heads)},
                {"qat.max_seq_len", std::to_string(s.max_seq)},
                {"qat.rope_theta", std::to_string(s.theta)},
                {"qat.rms_norm_eps", "1e-05"},
                {"qat.tie_embeddings", s.tied ? "1" : "0"},
                {"qat.bos_id", "1"},
                {"qat.eos_id", "2"},
                {"qat.tokenizer", "byte"}};
  // Full-precision tensor with values uniform in [center - spread, center + spread].
  auto add_dense = [&](const std::string& name, std::vector<int64_t> shape, double center,
                       double spread) {
    int64_t numel = 1;
    for (int64_t d : shape) numel *= d;
    std::vector<float> v(numel);
    std::vector<double>& w = m.weights[name];
    for (float& x : v) {
      x = static_cast<float>(center + uniform(-spread, spread));
      w.push_back(x);
    }
    m.AddF32(name, std::move(shape), v);
  };
  auto add_packed = [&](const std::string& name, int64_t out, int64_t in, bool per_row,
                        bool ternary3 = false) {
    std::vector<int8_t> trits(out * in);
    for (int8_t& t : trits) t = static_cast<int8_t>(static_cast<int>(rng() % 3) - 1);
    std::vector<float> scales(per_row ? out : 1);
    for (float& sc : scales) sc = static_cast<float>(uniform(0.5, 1.5) * std::sqrt(1.5 / in));
    const int64_t row_bytes = ternary3 ? Ternary3RowBytes(in) : TernaryRowBytes(in);
    std::vector<uint8_t> packed(out * row_bytes);
    if (ternary3) {
      PackTernary3(trits.data(), out, in, packed.data());
    } else {
      PackTernary(trits.data(), out, in, packed.data());
    }
    m.tensors.push_back(
        {name, DType::kU8, {out, row_bytes}, std::string(packed.begin(), packed.end())});
    m.AddF32(name + ".scale", {per_row ? out : 1}, scales);
    m.metadata["qat.quant." + name] = ternary3 ? "ternary3" : "ternary2";
    std::vector<double>& w = m.weights[name];
    for (int64_t r = 0; r < out; ++r) {
      for (int64_t c = 0; c < in; ++c)
        w.push_back(trits[r * in + c] * double{scales[per_row ? r : 0]});
    }
  };

  // int2/int4 with random codes, positive scales and fractional zero points per group.
  auto add_intk = [&](const std::string& name, int64_t out, int64_t in, int bits, int64_t group) {
    const int max_code = (1 << bits) - 1;
    const int64_t groups = IntKGroupsPerRow(group, in);
    std::vector<uint8_t> q(out * in);
    for (uint8_t& v : q) v = static_cast<uint8_t>(rng() % (max_code + 1));
    std::vector<float> scales(out * groups), zeros(out * groups);
    for (int64_t g = 0; g < out * groups; ++g) {
      scales[g] = static_cast<float>(uniform(0.5, 1.5) * std::sqrt(3.0 / in) * 2 / max_code);
      zeros[g] = static_cast<float>(uniform(0.3, 0.7) * max_code);
    }
    std::vector<uint8_t> packed(out * IntKRowBytes(bits, in));
    PackIntK(q.data(), out, in, bits, packed.data());
    m.tensors.push_back({name,
                         DType::kU8,
                         {out, IntKRowBytes(bits, in)},
                         std::string(packed.begin(), packed.end())});
    m.AddF32(name + ".scale", {out * groups}, scales);
    m.AddF32(name + ".zero", {out, groups}, zeros);  // the [out, G] spelling is accepted too
    m.metadata["qat.quant." + name] = bits == 2 ? "int2" : "int4";
    m.metadata["qat.group." + name] = std::to_string(group);
    std::vector<double>& w = m.weights[name];
    for (int64_t r = 0; r < out; ++r) {
      for (int64_t c = 0; c < in; ++c) {
        const int64_t g = r * groups + c / group;
        w.push_back(double{scales[g]} * (double{static_cast<float>(q[r * in + c])} - zeros[g]));
      }
    }
  };

  const int64_t kv_dim = s.kv_heads * (s.hidden / s.heads);
  add_dense("model.embed_tokens.weight", {s.vocab, s.hidden}, 0.0, 1.0);
  int linear_index = 0;
  for (int64_t l = 0; l < s.layers; ++l) {
    add_dense(LayerName(l, "input_layernorm.weight"), {s.hidden}, 1.0, 0.2);
    add_dense(LayerName(l, "post_attention_layernorm.weight"), {s.hidden}, 1.0, 0.2);
    for (const char* suffix : kLinearSuffixes) {
      const std::string name = LayerName(l, suffix);
      const std::string kind(suffix);
      const int64_t out =
          kind.find("k_proj") != std::string::npos || kind.find("v_proj") != std::string::npos
              ? kv_dim
          : kind.find("gate") != std::string::npos || kind.find("up_proj") != std::string::npos
              ? s.intermediate
              : s.hidden;
      const int64_t in = kind.find("down") != std::string::npos ? s.intermediate : s.hidden;
      const bool odd = linear_index++ % 2 == 1;
      switch (s.quant) {
        case Quant::kDense:
          add_dense(name, {out, in}, 0.0, std::sqrt(3.0 / in));
          break;
        case Quant::kPerTensor:
        case Quant::kPerRow:
          add_packed(name, out, in, s.quant == Quant::kPerRow);
          break;
        case Quant::kMixed:  // alternating dense / packed, packed alternating scale kinds
          if (odd) {
            add_packed(name, out, in, linear_index % 4 == 0);
          } else {
            add_dense(name, {out, in}, 0.0, std::sqrt(3.0 / in));
          }
          break;
        case Quant::kAllFormats:
        case Quant::kAllFormatsInt8:
          switch ((linear_index - 1) % 5) {
            case 0:
              add_dense(name, {out, in}, 0.0, std::sqrt(3.0 / in));
              break;
            case 1:
              add_packed(name, out, in, /*per_row=*/true);
              break;
            case 2:
              add_packed(name, out, in, /*per_row=*/false, /*ternary3=*/true);
              break;
            case 3:
              add_intk(name, out, in, 2, 64);  // in = 96 gives a short last group
              break;
            case 4:
              add_intk(name, out, in, 4, 32);
              break;
          }
          if (s.quant == Quant::kAllFormatsInt8 && odd) {
            m.metadata["qat.act." + name] = "int8";
            m.int8_act.insert(name);
          }
          if (kind.find("q_proj") != std::string::npos ||
              kind.find("k_proj") != std::string::npos ||
              kind.find("v_proj") != std::string::npos) {  // Qwen2-style attention biases
            std::vector<float> b(out);
            std::vector<double>& ref = m.biases[name];
            for (float& v : b) {
              v = static_cast<float>(uniform(-0.3, 0.3));
              ref.push_back(v);
            }
            m.AddF32(name + ".bias", {out}, b);
          }
          break;
      }
    }
  }
  add_dense("model.norm.weight", {s.hidden}, 1.0, 0.2);
  if (!s.tied) add_dense("lm_head.weight", {s.vocab, s.hidden}, 0.0, std::sqrt(3.0 / s.hidden));
  return m;
}

// ---- the reference forward, in double, straight from the math in runtime.h ----

using Matrix = std::vector<double>;  // row-major, rows x cols given alongside

// y (rows x out) = x (rows x in) W^T, W out x in.
Matrix MatMulT(const Matrix& x, int64_t rows, int64_t in, const Matrix& w, int64_t out) {
  Matrix y(rows * out, 0.0);
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t o = 0; o < out; ++o) {
      double acc = 0;
      for (int64_t c = 0; c < in; ++c) acc += x[i * in + c] * w[o * in + c];
      y[i * out + o] = acc;
    }
  }
  return y;
}

// Per-token int8 fake quantization of activations (runtime.h): x' = round_half_even(x / s) * s,
// s = absmax / 127, in double.
Matrix QuantizeActivationsRef(const Matrix& x, int64_t rows, int64_t in) {
  Matrix y(x.size());
  for (int64_t i = 0; i < rows; ++i) {
    double absmax = 0;
    for (int64_t c = 0; c < in; ++c) absmax = std::max(absmax, std::abs(x[i * in + c]));
    const double s = absmax / 127;
    for (int64_t c = 0; c < in; ++c) {
      y[i * in + c] = s == 0 ? 0.0 : std::nearbyint(x[i * in + c] / s) * s;
    }
  }
  return y;
}

Matrix RmsNormRef(const Matrix& x, int64_t rows, int64_t dim, const Matrix& w, double eps) {
  Matrix y(x.size());
  for (int64_t i = 0; i < rows; ++i) {
    double sum_sq = 0;
    for (int64_t d = 0; d < dim; ++d) sum_sq += x[i * dim + d] * x[i * dim + d];
    const double inv = 1.0 / std::sqrt(sum_sq / dim + eps);
    for (int64_t d = 0; d < dim; ++d) y[i * dim + d] = x[i * dim + d] * inv * w[d];
  }
  return y;
}

void RopeRef(Matrix* x, int64_t rows, int64_t heads, int64_t hd, double theta) {
  for (int64_t p = 0; p < rows; ++p) {
    for (int64_t h = 0; h < heads; ++h) {
      double* v = &(*x)[(p * heads + h) * hd];
      for (int64_t i = 0; i < hd / 2; ++i) {
        const double angle = p * std::pow(theta, -2.0 * i / hd);
        const double a = v[i], b = v[i + hd / 2];
        v[i] = a * std::cos(angle) - b * std::sin(angle);
        v[i + hd / 2] = b * std::cos(angle) + a * std::sin(angle);
      }
    }
  }
}

// quantize_acts = false ignores "qat.act" (to show that the runtime does quantize).
Matrix ReferenceForward(const TinyModel& m, const std::vector<int32_t>& tokens,
                        bool quantize_acts = true) {
  const ModelSpec& s = m.spec;
  const int64_t n = static_cast<int64_t>(tokens.size()), hd = s.hidden / s.heads;
  const int64_t kv_dim = s.kv_heads * hd;
  auto w = [&](const std::string& name) -> const Matrix& { return m.weights.at(name); };
  Matrix h(n * s.hidden);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t d = 0; d < s.hidden; ++d) {
      h[i * s.hidden + d] = w("model.embed_tokens.weight")[tokens[i] * s.hidden + d];
    }
  }
  for (int64_t l = 0; l < s.layers; ++l) {
    auto lw = [&](const char* suffix) -> const Matrix& { return w(LayerName(l, suffix)); };
    // The linear `suffix` of this layer: activations as "qat.act" says, product, bias.
    auto linear = [&](const Matrix& x, int64_t rows, int64_t in, const char* suffix, int64_t out) {
      const std::string name = LayerName(l, suffix);
      const bool int8 = quantize_acts && m.int8_act.count(name) > 0;
      Matrix y = MatMulT(int8 ? QuantizeActivationsRef(x, rows, in) : x, rows, in, w(name), out);
      if (auto b = m.biases.find(name); b != m.biases.end()) {
        for (int64_t i = 0; i < rows; ++i) {
          for (int64_t o = 0; o < out; ++o) y[i * out + o] += b->second[o];
        }
      }
      return y;
    };
    Matrix a = RmsNormRef(h, n, s.hidden, lw("input_layernorm.weight"), s.eps);
    Matrix q = linear(a, n, s.hidden, "self_attn.q_proj.weight", s.hidden);
    Matrix k = linear(a, n, s.hidden, "self_attn.k_proj.weight", kv_dim);
    Matrix v = linear(a, n, s.hidden, "self_attn.v_proj.weight", kv_dim);
    RopeRef(&q, n, s.heads, hd, s.theta);
    RopeRef(&k, n, s.kv_heads, hd, s.theta);
    Matrix attn(n * s.hidden, 0.0);
    for (int64_t j = 0; j < s.heads; ++j) {
      const int64_t kvh = j / (s.heads / s.kv_heads);
      for (int64_t i = 0; i < n; ++i) {
        std::vector<double> scores(i + 1);
        double max_score = -INFINITY, sum = 0;
        for (int64_t t = 0; t <= i; ++t) {
          double dot = 0;
          for (int64_t d = 0; d < hd; ++d) {
            dot += q[i * s.hidden + j * hd + d] * k[t * kv_dim + kvh * hd + d];
          }
          scores[t] = dot / std::sqrt(static_cast<double>(hd));
          max_score = std::max(max_score, scores[t]);
        }
        for (double& sc : scores) sum += (sc = std::exp(sc - max_score));
        for (int64_t t = 0; t <= i; ++t) {
          for (int64_t d = 0; d < hd; ++d) {
            attn[i * s.hidden + j * hd + d] += scores[t] / sum * v[t * kv_dim + kvh * hd + d];
          }
        }
      }
    }
    Matrix o = linear(attn, n, s.hidden, "self_attn.o_proj.weight", s.hidden);
    for (size_t i = 0; i < h.size(); ++i) h[i] += o[i];
    Matrix mm = RmsNormRef(h, n, s.hidden, lw("post_attention_layernorm.weight"), s.eps);
    Matrix g = linear(mm, n, s.hidden, "mlp.gate_proj.weight", s.intermediate);
    Matrix u = linear(mm, n, s.hidden, "mlp.up_proj.weight", s.intermediate);
    for (size_t i = 0; i < g.size(); ++i) g[i] = g[i] / (1.0 + std::exp(-g[i])) * u[i];
    Matrix down = linear(g, n, s.intermediate, "mlp.down_proj.weight", s.hidden);
    for (size_t i = 0; i < h.size(); ++i) h[i] += down[i];
  }
  Matrix final_h = RmsNormRef(h, n, s.hidden, w("model.norm.weight"), s.eps);
  return MatMulT(final_h, n, s.hidden, w(s.tied ? "model.embed_tokens.weight" : "lm_head.weight"),
                 s.vocab);
}

// max |got - want| / max |want| over [begin, end) of both.
template <typename A, typename B>
double RelativeError(const A& got, const B& want, size_t begin = 0, size_t end = SIZE_MAX) {
  end = std::min({end, got.size(), want.size()});
  double max_diff = 0, max_ref = 0;
  for (size_t i = begin; i < end; ++i) {
    max_diff = std::max(max_diff, std::abs(double{got[i]} - double{want[i]}));
    max_ref = std::max(max_ref, std::abs(double{want[i]}));
  }
  return max_diff / std::max(max_ref, 1e-30);
}

std::vector<int32_t> RandomTokens(int64_t n, int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> tokens(n);
  for (int32_t& t : tokens) t = static_cast<int32_t>(rng() % vocab);
  return tokens;
}

std::vector<Isa> SupportedIsas() {
  std::vector<Isa> isas;
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512}) {
    if (IsaSupported(isa)) isas.push_back(isa);
  }
  return isas;
}

std::unique_ptr<PackedModel> LoadOrDie(const std::string& path, int threads = 1,
                                       Isa isa = BestIsa()) {
  absl::StatusOr<std::unique_ptr<PackedModel>> model = PackedModel::Load(path, threads, isa);
  EXPECT_TRUE(model.ok()) << model.status();
  return model.ok() ? std::move(*model) : nullptr;
}

// ---- forward against the reference ----

struct ForwardCase {
  Quant quant;
  bool tied;
};

class RuntimeForwardTest : public testing::TestWithParam<ForwardCase> {};

TEST_P(RuntimeForwardTest, MatchesDoubleReferenceOnEveryIsaAndThreadCount) {
  ModelSpec spec;
  spec.quant = GetParam().quant;
  spec.tied = GetParam().tied;
  spec.seed = 10 + static_cast<int>(spec.quant) * 2 + spec.tied;
  const TinyModel tiny = BuildModel(spec);
  const std::string path = tiny.Write("forward_" + std::to_string(spec.seed));
  const std::vector<int32_t> tokens = RandomTokens(20, spec.vocab, spec.seed);
  const Matrix want = ReferenceForward(tiny, tokens);
  for (Isa isa : SupportedIsas()) {
    for (int threads : {1, 2}) {
      SCOPED_TRACE(testing::Message() << IsaName(isa) << " threads=" << threads);
      std::unique_ptr<PackedModel> model = LoadOrDie(path, threads, isa);
      ASSERT_NE(model, nullptr);
      Session session = model->NewSession();
      absl::StatusOr<std::vector<float>> got = session.Forward(tokens.data(), 20);
      ASSERT_TRUE(got.ok()) << got.status();
      ASSERT_EQ(got->size(), static_cast<size_t>(20 * spec.vocab));
      if (spec.quant != Quant::kAllFormatsInt8) {
        EXPECT_LT(RelativeError(*got, want), 1e-4);
      } else {
        // Rounding to int8 amplifies float differences near ties (a code can flip by one), so
        // the bound is looser; the runtime must still be far closer to the quantized reference
        // than to the same model without activation quantization.
        const double err = RelativeError(*got, want);
        const double err_unquantized =
            RelativeError(*got, ReferenceForward(tiny, tokens, /*quantize_acts=*/false));
        EXPECT_LT(err, 2e-3);
        EXPECT_GT(err_unquantized, 5 * err);
      }
      EXPECT_EQ(session.pos(), 20);
    }
  }
}

std::string ForwardCaseName(const testing::TestParamInfo<ForwardCase>& info) {
  static const char* const kQuantNames[] = {"Dense", "PerTensor",  "PerRow",
                                            "Mixed", "AllFormats", "AllFormatsInt8"};
  return std::string(kQuantNames[static_cast<int>(info.param.quant)]) +
         (info.param.tied ? "Tied" : "Untied");
}

INSTANTIATE_TEST_SUITE_P(
    AllKinds, RuntimeForwardTest,
    testing::Values(ForwardCase{Quant::kDense, false}, ForwardCase{Quant::kDense, true},
                    ForwardCase{Quant::kPerTensor, false}, ForwardCase{Quant::kPerTensor, true},
                    ForwardCase{Quant::kPerRow, false}, ForwardCase{Quant::kPerRow, true},
                    ForwardCase{Quant::kMixed, false}, ForwardCase{Quant::kAllFormats, false},
                    ForwardCase{Quant::kAllFormats, true},
                    ForwardCase{Quant::kAllFormatsInt8, false}),
    ForwardCaseName);

TEST(RuntimeTest, ConfigAndWeightAccounting) {
  for (Quant quant : {Quant::kDense, Quant::kPerRow, Quant::kMixed}) {
    ModelSpec spec;
    spec.quant = quant;
    const TinyModel tiny = BuildModel(spec);
    std::unique_ptr<PackedModel> model = LoadOrDie(tiny.Write("accounting"));
    ASSERT_NE(model, nullptr);
    const RuntimeConfig& c = model->config();
    EXPECT_EQ(c.vocab_size, 40);
    EXPECT_EQ(c.intermediate_size, 96);
    EXPECT_EQ(c.num_kv_heads, 2);
    EXPECT_EQ(c.bos_id, 1);
    EXPECT_EQ(c.eos_id, 2);
    EXPECT_EQ(c.tokenizer, "byte");
    EXPECT_FALSE(c.tie_embeddings);
    int64_t bytes = 0, packed = 0;
    for (const TinyModel::Tensor& t : tiny.tensors) {
      bytes += static_cast<int64_t>(t.bytes.size());
      packed += t.dtype == DType::kU8 ? 1 : 0;
    }
    EXPECT_EQ(model->weight_bytes(), bytes);
    EXPECT_EQ(model->packed_linears(), packed);
    EXPECT_EQ(model->dense_linears(), 14 - packed);
    EXPECT_EQ(packed, quant == Quant::kDense ? 0 : quant == Quant::kPerRow ? 14 : 7);
  }
}

// ---- the KV cache ----

TEST(RuntimeTest, PrefillThenDecodeMatchesOneForward) {
  for (Quant quant : {Quant::kDense, Quant::kPerRow}) {
    ModelSpec spec;
    spec.quant = quant;
    const TinyModel tiny = BuildModel(spec);
    std::unique_ptr<PackedModel> model = LoadOrDie(tiny.Write("decode"), 2);
    ASSERT_NE(model, nullptr);
    const std::vector<int32_t> tokens = RandomTokens(15, spec.vocab, 3);
    Session whole = model->NewSession();
    absl::StatusOr<std::vector<float>> want = whole.Forward(tokens.data(), 15);
    ASSERT_TRUE(want.ok()) << want.status();

    Session session = model->NewSession();
    absl::StatusOr<std::vector<float>> prefill = session.Forward(tokens.data(), 10);
    ASSERT_TRUE(prefill.ok()) << prefill.status();
    EXPECT_LT(RelativeError(*prefill, *want, 0, 10 * spec.vocab), 1e-5);
    for (int64_t i = 10; i < 15; ++i) {
      absl::StatusOr<std::vector<float>> step = session.Forward(&tokens[i], 1);
      ASSERT_TRUE(step.ok()) << step.status();
      ASSERT_EQ(step->size(), static_cast<size_t>(spec.vocab));
      const std::vector<float> want_row(want->begin() + i * spec.vocab,
                                        want->begin() + (i + 1) * spec.vocab);
      EXPECT_LT(RelativeError(*step, want_row), 1e-5) << "position " << i;
    }
    EXPECT_EQ(session.pos(), 15);

    // After Reset the cache is overwritten from position 0: same logits again.
    session.Reset();
    absl::StatusOr<std::vector<float>> again = session.Forward(tokens.data(), 15);
    ASSERT_TRUE(again.ok()) << again.status();
    EXPECT_LT(RelativeError(*again, *want), 1e-6);
  }
}

// logits_from: the rows before it only fill the cache (the last layer computes their keys and
// values alone); the rows returned, and every later step on that cache, are those of the full
// forward. Every packed format, over several layers, from a fresh cache and from one part-filled.
TEST(RuntimeTest, LogitsOfTheLastRowsOnlyMatchTheFullForward) {
  for (Quant quant : {Quant::kDense, Quant::kPerRow, Quant::kPerTensor}) {
    ModelSpec spec;
    spec.quant = quant;
    const TinyModel tiny = BuildModel(spec);
    std::unique_ptr<PackedModel> model = LoadOrDie(tiny.Write("tail"), 2);
    ASSERT_NE(model, nullptr);
    const int64_t V = spec.vocab;
    const std::vector<int32_t> tokens = RandomTokens(16, V, 9);
    Session whole = model->NewSession();
    absl::StatusOr<std::vector<float>> want = whole.Forward(tokens.data(), 16);
    ASSERT_TRUE(want.ok()) << want.status();
    for (int64_t from : {0, 1, 7, 11}) {
      Session session = model->NewSession();
      absl::StatusOr<std::vector<float>> tail = session.Forward(tokens.data(), 12, from);
      ASSERT_TRUE(tail.ok()) << tail.status();
      ASSERT_EQ(tail->size(), size_t((12 - from) * V)) << "from " << from;
      EXPECT_LT(RelativeError(*tail,
                              std::vector<float>(want->begin() + from * V, want->begin() + 12 * V)),
                1e-5)
          << "from " << from;
      // The skipped rows' keys and values are in the cache: the next rows see them.
      absl::StatusOr<std::vector<float>> next = session.Forward(&tokens[12], 4, 3);
      ASSERT_TRUE(next.ok()) << next.status();
      EXPECT_LT(RelativeError(*next, std::vector<float>(want->begin() + 15 * V, want->end())), 1e-5)
          << "from " << from;
      EXPECT_EQ(session.pos(), 16);
    }
    Session session = model->NewSession();
    for (int64_t bad : {-1, 5, 6}) {
      absl::StatusOr<std::vector<float>> r = session.Forward(tokens.data(), 5, bad);
      EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad;
      EXPECT_EQ(session.pos(), 0);
    }
  }
}

// qat.max_seq_len is a limit, not an allocation: a file claiming 2^24 positions used to make the
// runtime build RoPE tables of 2^24 rows at load (1 GiB at this head_dim, 128 GiB at 128).
TEST(RuntimeTest, HugeMaxSeqLenAllocatesNothingUntilUsed) {
  ModelSpec spec;
  spec.quant = Quant::kPerRow;
  const TinyModel small = BuildModel(spec);
  spec.max_seq = int64_t{1} << 24;          // the loader's limit
  const TinyModel huge = BuildModel(spec);  // same seed: the same weights
  const std::vector<int32_t> tokens = RandomTokens(12, spec.vocab, 5);

  std::unique_ptr<PackedModel> reference = LoadOrDie(small.Write("small"), 1);
  ASSERT_NE(reference, nullptr);
  Session ref_session = reference->NewSession();
  absl::StatusOr<std::vector<float>> want = ref_session.Forward(tokens.data(), 12);
  ASSERT_TRUE(want.ok()) << want.status();

  const std::string path = huge.Write("huge");
  const int64_t before = testing_util::ResidentBytes();
  std::unique_ptr<PackedModel> model = LoadOrDie(path, 1);
  ASSERT_NE(model, nullptr);
  EXPECT_EQ(model->config().max_seq_len, int64_t{1} << 24);
  Session session = model->NewSession();
  absl::StatusOr<std::vector<float>> got = session.Forward(tokens.data(), 12);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_LT(testing_util::ResidentBytes() - before, int64_t{64} << 20) << "loading and 12 tokens";
  EXPECT_EQ(*got, *want);  // the same angles, computed per call instead of from a table
}

TEST(RuntimeTest, BadTokenOrFullCacheIsAnErrorAndChangesNothing) {
  ModelSpec spec;
  spec.quant = Quant::kPerTensor;
  const TinyModel tiny = BuildModel(spec);
  std::unique_ptr<PackedModel> model = LoadOrDie(tiny.Write("errors"));
  ASSERT_NE(model, nullptr);
  const std::vector<int32_t> tokens = RandomTokens(32, spec.vocab, 4);
  Session whole = model->NewSession();
  absl::StatusOr<std::vector<float>> want = whole.Forward(tokens.data(), 32);
  ASSERT_TRUE(want.ok()) << want.status();

  Session session = model->NewSession();
  ASSERT_TRUE(session.Forward(tokens.data(), 3).ok());
  for (int32_t bad : {-1, 40, 1000000}) {
    const int32_t batch[3] = {tokens[3], bad, tokens[5]};
    absl::StatusOr<std::vector<float>> r = session.Forward(batch, 3);
    EXPECT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find(std::to_string(bad)), std::string::npos) << r.status();
    EXPECT_EQ(session.pos(), 3);
  }
  // 3 + 30 > 32 tokens.
  absl::StatusOr<std::vector<float>> too_long = session.Forward(tokens.data(), 30);
  EXPECT_EQ(too_long.status().code(), absl::StatusCode::kOutOfRange) << too_long.status();
  EXPECT_EQ(session.pos(), 3);
  // The failed calls left the cache as it was: the rest of the sequence still matches.
  absl::StatusOr<std::vector<float>> rest = session.Forward(&tokens[3], 29);
  ASSERT_TRUE(rest.ok()) << rest.status();
  EXPECT_LT(RelativeError(*rest, std::vector<float>(want->begin() + 3 * spec.vocab, want->end())),
            1e-5);
  EXPECT_EQ(session.pos(), 32);
  EXPECT_FALSE(session.Forward(tokens.data(), 1).ok());
  EXPECT_EQ(session.pos(), 32);

  absl::StatusOr<std::vector<float>> empty = model->NewSession().Forward(tokens.data(), 0);
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->empty());
  Session unbound;
  EXPECT_FALSE(unbound.Forward(tokens.data(), 1).ok());
}

// ---- malformed files ----

struct MalformedCase {
  const char* what;
  std::function<void(TinyModel*)> corrupt;
  std::string expected_in_message;
};

// Each case corrupts a fresh model of `spec`; loading must fail with an error naming the file and
// containing the case's expected text.
void ExpectLoadErrors(const ModelSpec& spec, const std::vector<MalformedCase>& cases) {
  for (const MalformedCase& c : cases) {
    SCOPED_TRACE(c.what);
    TinyModel tiny = BuildModel(spec);
    c.corrupt(&tiny);
    const std::string path = tiny.Write("malformed");
    absl::StatusOr<std::unique_ptr<PackedModel>> model = PackedModel::Load(path, 1, BestIsa());
    ASSERT_FALSE(model.ok());
    EXPECT_NE(model.status().message().find(c.expected_in_message), std::string::npos)
        << model.status();
    EXPECT_NE(model.status().message().find(path), std::string::npos) << model.status();
  }
}

TEST(RuntimeTest, MalformedFilesGiveClearErrors) {
  ModelSpec spec;
  spec.quant = Quant::kMixed;  // layer 0: q dense, k packed per tensor, ..., down dense
  const std::string packed_name = LayerName(0, "self_attn.k_proj.weight");
  const std::string gate_packed = LayerName(1, "mlp.gate_proj.weight");
  ASSERT_TRUE(BuildModel(spec).Find(packed_name + ".scale") != nullptr);
  auto set_meta = [](const char* key, const char* value) {
    return [=](TinyModel* m) { m->metadata[key] = value; };
  };
  const std::vector<MalformedCase> cases = {
      {"missing config key", [](TinyModel* m) { m->metadata.erase("qat.num_heads"); },
       "qat.num_heads"},
      {"config not a number", set_meta("qat.hidden_size", "sixty-four"), "qat.hidden_size"},
      {"float not a number", set_meta("qat.rope_theta", "x"), "qat.rope_theta"},
      {"zero size", set_meta("qat.num_layers", "0"), "qat.num_layers"},
      {"tie not 0/1", set_meta("qat.tie_embeddings", "2"), "qat.tie_embeddings"},
      {"wrong format", set_meta("format", "gguf"), "format"},
      {"wrong version", set_meta("qat.version", "3"), "qat.version"},
      {"heads not dividing hidden", set_meta("qat.num_heads", "5"), "qat.num_heads"},
      {"kv heads not dividing heads", set_meta("qat.num_kv_heads", "3"), "qat.num_kv_heads"},
      {"odd head dim", set_meta("qat.num_heads", "64"), "head dim"},
      {"bos out of range", set_meta("qat.bos_id", "40"), "qat.bos_id"},
      {"missing tensor", [](TinyModel* m) { m->Remove(LayerName(1, "mlp.up_proj.weight")); },
       "model.layers.1.mlp.up_proj.weight"},
      {"missing norm", [](TinyModel* m) { m->Remove("model.norm.weight"); }, "model.norm.weight"},
      {"wrong shape",
       [](TinyModel* m) {
         const std::string name = LayerName(0, "self_attn.q_proj.weight");
         m->Remove(name);
         m->AddF32(name, {32, 64}, std::vector<float>(32 * 64, 0.0f));
       },
       "model.layers.0.self_attn.q_proj.weight"},
      {"wrong dtype", [](TinyModel* m) { m->Find("model.norm.weight")->dtype = DType::kI32; },
       "model.norm.weight"},
      {"packed tensor stored as F32",
       [&](TinyModel* m) {
         m->Remove(packed_name);
         m->AddF32(packed_name, {32, 64}, std::vector<float>(32 * 64, 0.0f));
       },
       "model.layers.0.self_attn.k_proj.weight"},
      {"code 3 byte", [&](TinyModel* m) { m->Find(packed_name)->bytes[2 * 32 + 7] |= 0x03; },
       "byte offset 71"},
      {"bad padding",  // down_proj of layer 1 is packed: 96 columns, so bits 7:6 are padding
       [](TinyModel* m) {
         const std::string name = LayerName(1, "mlp.down_proj.weight");
         ASSERT_NE(m->Find(name), nullptr);
         m->Find(name)->bytes[5] = static_cast<char>((m->Find(name)->bytes[5] & 0x3F) | 0x80);
       },
       "model.layers.1.mlp.down_proj.weight"},
      {"scale of wrong size",
       [&](TinyModel* m) {
         m->Remove(packed_name + ".scale");
         m->AddF32(packed_name + ".scale", {3}, {1.0f, 1.0f, 1.0f});
       },
       "model.layers.0.self_attn.k_proj.weight.scale"},
      {"missing scale", [&](TinyModel* m) { m->Remove(gate_packed + ".scale"); },
       "model.layers.1.mlp.gate_proj.weight.scale"},
      {"non-finite scale",
       [&](TinyModel* m) {
         m->Remove(packed_name + ".scale");
         m->AddF32(packed_name + ".scale", {1}, {NAN});
       },
       "model.layers.0.self_attn.k_proj.weight.scale"},
      {"quant key on a norm", set_meta("qat.quant.model.norm.weight", "ternary2"),
       "qat.quant.model.norm.weight"},
      {"quant key on a missing layer",
       set_meta("qat.quant.model.layers.7.mlp.up_proj.weight", "ternary2"),
       "qat.quant.model.layers.7.mlp.up_proj.weight"},
      {"unknown quant format",
       [&](TinyModel* m) { m->metadata["qat.quant." + packed_name] = "int4"; }, "int4"},
      {"lm_head although tied", set_meta("qat.tie_embeddings", "1"), "lm_head.weight"},
  };
  ExpectLoadErrors(spec, cases);
}

// Version 2 files: the formats beyond ternary2, their keys, zero points, biases.
TEST(RuntimeTest, MalformedVersion2FilesGiveClearErrors) {
  ModelSpec spec;
  spec.quant = Quant::kAllFormatsInt8;
  // Layer 0 in order q..down: f32, ternary2, ternary3, int2/g64, int4/g32, f32, ternary2;
  // odd linears (k, o, up) have int8 activations; q, k, v have biases.
  const std::string ternary2 = LayerName(0, "self_attn.k_proj.weight");
  const std::string ternary3 = LayerName(0, "self_attn.v_proj.weight");
  const std::string int2 = LayerName(0, "self_attn.o_proj.weight");
  const std::string int4 = LayerName(0, "mlp.gate_proj.weight");
  const std::string dense = LayerName(0, "mlp.up_proj.weight");
  const std::string int2_down = LayerName(1, "mlp.down_proj.weight");  // [64, 96]
  {
    const TinyModel tiny = BuildModel(spec);
    ASSERT_EQ(tiny.metadata.at("qat.quant." + ternary3), "ternary3");
    ASSERT_EQ(tiny.metadata.at("qat.quant." + int2), "int2");
    ASSERT_EQ(tiny.metadata.at("qat.quant." + int4), "int4");
    ASSERT_EQ(tiny.metadata.count("qat.quant." + dense), 0u);
    ASSERT_EQ(tiny.metadata.at("qat.quant." + int2_down), "int2");
  }
  auto set_meta = [](std::string key, const char* value) {
    return [=](TinyModel* m) { m->metadata[key] = value; };
  };
  auto replace_f32 = [](std::string name, std::vector<int64_t> shape, float value) {
    return [=](TinyModel* m) {
      m->Remove(name);
      int64_t numel = 1;
      for (int64_t d : shape) numel *= d;
      m->AddF32(name, shape, std::vector<float>(numel, value));
    };
  };
  const std::vector<MalformedCase> cases = {
      {"version 3", set_meta("qat.version", "3"), "qat.version"},
      {"int4 without group", [&](TinyModel* m) { m->metadata.erase("qat.group." + int4); },
       "qat.group." + int4},
      {"group 48", set_meta("qat.group." + int4, "48"), "qat.group." + int4},
      {"group not a number", set_meta("qat.group." + int2, "big"), "qat.group." + int2},
      {"group on ternary", set_meta("qat.group." + ternary2, "64"), "qat.group." + ternary2},
      {"group on a dense linear", set_meta("qat.group." + dense, "64"), "qat.group." + dense},
      {"unknown activation format", set_meta("qat.act." + int4, "int4"), "qat.act." + int4},
      {"activation key on a norm", set_meta("qat.act.model.norm.weight", "int8"),
       "qat.act.model.norm.weight"},
      {"unknown weight format", set_meta("qat.quant." + int4, "int3"), "int3"},
      {"ternary3 byte above 242",
       [&](TinyModel* m) { m->Find(ternary3)->bytes[32 + 3] = static_cast<char>(250); },
       "byte offset 35"},
      {"int2 padding set",  // 96 columns: the second unit's bits 5:4 and 7:6 are padding
       [&](TinyModel* m) { m->Find(int2_down)->bytes[16 + 2] |= static_cast<char>(0x40); },
       "byte offset 18"},
      {"int4 codes of a ternary size",
       [&](TinyModel* m) {
         m->Find(int4)->shape = {64, 32};
         m->Find(int4)->bytes.resize(64 * 32);
       },
       int4},
      {"missing zero", [&](TinyModel* m) { m->Remove(int4 + ".zero"); }, int4 + ".zero"},
      {"zero of wrong size", replace_f32(int2 + ".zero", {65}, 1.0f), int2 + ".zero"},
      {"non-finite zero", replace_f32(int2 + ".zero", {64}, INFINITY), int2 + ".zero"},
      {"int scale of per-row size", replace_f32(int4 + ".scale", {96}, 1.0f), int4 + ".scale"},
      {"ternary3 scale missing", [&](TinyModel* m) { m->Remove(ternary3 + ".scale"); },
       ternary3 + ".scale"},
      {"bias of wrong size", replace_f32(ternary2 + ".bias", {31}, 0.0f), ternary2 + ".bias"},
      {"non-finite bias", replace_f32(ternary2 + ".bias", {32}, NAN), ternary2 + ".bias"},
      {"added bias of the wrong size", replace_f32(int4 + ".bias", {64}, 0.0f), int4 + ".bias"},
      {"bias in a version 1 file",
       [&](TinyModel* m) {
         for (const auto& [key, value] : std::map<std::string, std::string>(m->metadata)) {
           if (key.rfind("qat.quant.", 0) == 0 || key.rfind("qat.group.", 0) == 0 ||
               key.rfind("qat.act.", 0) == 0) {
             m->metadata.erase(key);
           }
         }
         m->metadata["qat.version"] = "1";
         ModelSpec dense_spec;
         TinyModel plain = BuildModel(dense_spec);
         plain.metadata = m->metadata;
         plain.AddF32(LayerName(0, "self_attn.q_proj.weight.bias"), {64},
                      std::vector<float>(64, 0.0f));
         *m = plain;
       },
       "qat.version 2"},
      {"int4 in a version 1 file", set_meta("qat.version", "1"), "needs qat.version 2"},
  };
  ExpectLoadErrors(spec, cases);
}

TEST(RuntimeTest, UnreadableFilesAreErrors) {
  const TinyModel tiny = BuildModel(ModelSpec());
  SafetensorsWriter writer;
  for (const auto& [key, value] : tiny.metadata) writer.SetMetadata(key, value);
  for (const TinyModel::Tensor& t : tiny.tensors) {
    writer.Add(t.name, t.dtype, t.shape, t.bytes.data(), t.bytes.size());
  }
  const std::string bytes = writer.Serialize();
  const testing_util::TestDir tmp;
  const std::string path = tmp.path("truncated.safetensors");
  for (size_t keep : {size_t{0}, size_t{5}, size_t{100}, bytes.size() / 2, bytes.size() - 1}) {
    ASSERT_TRUE(WriteFileAtomic(path, bytes.substr(0, keep)).ok());
    EXPECT_FALSE(PackedModel::Load(path, 1, BestIsa()).ok()) << "kept " << keep;
  }
  EXPECT_FALSE(PackedModel::Load(tmp.path("no_such_file"), 1, BestIsa()).ok());
}

// ---- the GPU runtime ----

TEST(RuntimeGpuTest, CudaDeviceWithoutGpuIsAClearError) {
  if (CudaDeviceAvailable()) GTEST_SKIP() << "a GPU is visible: RuntimeGpuTest.* run for real";
  const std::string path = BuildModel(ModelSpec()).Write("no_gpu");
  absl::StatusOr<std::unique_ptr<PackedModel>> model =
      PackedModel::Load(path, 1, BestIsa(), Device::kCuda);
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kFailedPrecondition) << model.status();
  EXPECT_NE(model.status().message().find("CUDA"), std::string::npos) << model.status();
}

// The whole model on the CUDA kernels against the CPU runtime: prefill, then decode steps on the
// device KV cache (including its growth), then a reset.
TEST(RuntimeGpuTest, MatchesCpuRuntimeOnEveryFormat) {
  if (!CudaDeviceAvailable()) {
    GTEST_SKIP() << "no CUDA GPU visible (or a build without CUDA): the GPU runtime is not run";
  }
  for (Quant quant : {Quant::kPerRow, Quant::kMixed, Quant::kAllFormats, Quant::kAllFormatsInt8}) {
    SCOPED_TRACE(testing::Message() << "quant " << static_cast<int>(quant));
    ModelSpec spec;
    spec.quant = quant;
    spec.tied = quant == Quant::kAllFormats;
    const TinyModel tiny = BuildModel(spec);
    const std::string path = tiny.Write("gpu");
    std::unique_ptr<PackedModel> cpu = LoadOrDie(path, 2);
    absl::StatusOr<std::unique_ptr<PackedModel>> gpu =
        PackedModel::Load(path, 1, BestIsa(), Device::kCuda);
    ASSERT_TRUE(gpu.ok()) << gpu.status();
    EXPECT_EQ((*gpu)->device(), Device::kCuda);
    EXPECT_EQ((*gpu)->weight_bytes(), cpu->weight_bytes());
    EXPECT_EQ((*gpu)->LinearSummary(), cpu->LinearSummary());
    const std::vector<int32_t> tokens = RandomTokens(24, spec.vocab, 9);
    const Matrix want = ReferenceForward(tiny, tokens);
    const double tolerance = quant == Quant::kAllFormatsInt8 ? 1e-3 : 1e-4;
    Session on_cpu = cpu->NewSession();
    Session on_gpu = (*gpu)->NewSession();
    for (int round = 0; round < 2; ++round) {  // the second round runs after Reset
      absl::StatusOr<std::vector<float>> c = on_cpu.Forward(tokens.data(), 16);
      absl::StatusOr<std::vector<float>> g = on_gpu.Forward(tokens.data(), 16);
      ASSERT_TRUE(c.ok()) << c.status();
      ASSERT_TRUE(g.ok()) << g.status();
      EXPECT_LT(RelativeError(*g, *c), tolerance);
      EXPECT_LT(RelativeError(*g, want, 0, 16 * spec.vocab), tolerance);
      for (int64_t i = 16; i < 24; ++i) {
        c = on_cpu.Forward(&tokens[i], 1);
        g = on_gpu.Forward(&tokens[i], 1);
        ASSERT_TRUE(c.ok()) << c.status();
        ASSERT_TRUE(g.ok()) << g.status();
        EXPECT_LT(RelativeError(*g, *c), tolerance) << "position " << i;
      }
      EXPECT_EQ(on_gpu.pos(), 24);
      on_cpu.Reset();
      on_gpu.Reset();
    }
    // Checks on the host side still apply: a bad token changes nothing.
    const int32_t bad = static_cast<int32_t>(spec.vocab);
    EXPECT_FALSE(on_gpu.Forward(&bad, 1).ok());
    EXPECT_EQ(on_gpu.pos(), 0);
  }
}

// ---- sampling ----

TEST(SampleTokenTest, GreedyPicksArgmaxLowestIdOnTies) {
  std::mt19937_64 rng(1);
  const float logits[] = {1.0f, 3.0f, -2.0f, 3.0f, 2.5f};
  for (float t : {0.0f, -1.0f}) EXPECT_EQ(SampleToken(logits, 5, t, 0, rng), 1);
  std::vector<float> random(100);
  for (int trial = 0; trial < 20; ++trial) {
    for (float& x : random) x = std::normal_distribution<float>(0, 3)(rng);
    const int64_t argmax = std::max_element(random.begin(), random.end()) - random.begin();
    EXPECT_EQ(SampleToken(random.data(), 100, 0.0f, 0, rng), argmax);
    for (float t : {0.01f, 1.0f, 100.0f}) {
      EXPECT_EQ(SampleToken(random.data(), 100, t, 1, rng), argmax) << "top_k 1, T " << t;
    }
  }
}

TEST(SampleTokenTest, FollowsSoftmaxOfScaledLogits) {
  const std::vector<float> logits = {0.5f, -1.0f, 2.0f, 0.0f, 1.0f};
  const float temperature = 1.5f;
  const int draws = 20000;
  for (int top_k : {0, 2}) {
    SCOPED_TRACE(testing::Message() << "top_k " << top_k);
    std::vector<double> want(5, 0.0);
    double sum = 0;
    for (int i = 0; i < 5; ++i) {
      const bool kept = top_k == 0 || i == 2 || i == 4;  // the two largest logits
      want[i] = kept ? std::exp(logits[i] / temperature) : 0.0;
      sum += want[i];
    }
    std::mt19937_64 rng(42);
    std::vector<int> counts(5, 0);
    for (int d = 0; d < draws; ++d) {
      const int32_t token = SampleToken(logits.data(), 5, temperature, top_k, rng);
      ASSERT_GE(token, 0);
      ASSERT_LT(token, 5);
      ++counts[token];
    }
    for (int i = 0; i < 5; ++i) {
      // Standard deviation of a frequency is at most 0.0036 here; 0.015 is over 4 of them.
      EXPECT_NEAR(counts[i] / static_cast<double>(draws), want[i] / sum, 0.015) << "token " << i;
      if (want[i] == 0.0) {
        EXPECT_EQ(counts[i], 0) << "token " << i;
      }
    }
  }
}

}  // namespace
}  // namespace qat::kernels
