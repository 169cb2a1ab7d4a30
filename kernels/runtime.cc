// The packed-model runtime: loading an export (format "qat-packed" version 1, see runtime.h for
// the file format and the model math), running it with a KV cache, and sampling.
//
// Load reads the whole safetensors file, checks every config key and every tensor against what
// the config implies, and copies the weights into their runtime form: ternary2 bytes plus scales
// for packed linears, fp32 for everything else. Session::Forward runs n tokens at once: every
// linear is one GEMM over the n rows (a GEMV when n == 1), k and v go into the session's cache
// after RoPE, and each query attends to the cache up to its own position.
#include "kernels/runtime.h"

#include <algorithm>
#include <cmath>
#include <iterator>
#include <set>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/safetensors.h"
#include "kernels/thread_pool.h"

namespace qat::kernels {
namespace {

// Returns from the enclosing function when `expr`, an absl::Status, is an error.
#define QAT_RETURN_IF_ERROR(expr)                       \
  do {                                                  \
    if (absl::Status status_ = (expr); !status_.ok()) { \
      return status_;                                   \
    }                                                   \
  } while (false)

// Sanity bounds for config values: far above any real model, low enough that sizes computed
// from them cannot overflow int64.
constexpr int64_t kMaxDim = int64_t{1} << 24;
constexpr int64_t kMaxLayers = 4096;
constexpr char kQuantPrefix[] = "qat.quant.";

// A linear layer y = x W^T with W of logical shape [out, in], held packed or in fp32.
struct Linear {
  int64_t out = 0, in = 0;
  bool packed = false;
  std::vector<float> dense;    // out x in, when !packed
  std::vector<uint8_t> codes;  // out x TernaryRowBytes(in), when packed
  std::vector<float> scales;   // 1 or out, when packed

  int64_t bytes() const {
    return static_cast<int64_t>(dense.size() * sizeof(float) + codes.size() +
                                scales.size() * sizeof(float));
  }
  // x is m x in, y is m x out (row-major).
  void Apply(const float* x, int64_t m, float* y, Isa isa, ThreadPool* pool) const {
    if (packed) {
      const TernaryView w{out, in, codes.data(), scales.data(),
                          static_cast<int64_t>(scales.size())};
      if (m == 1) {
        TernaryGemv(w, x, y, isa, pool);
      } else {
        TernaryGemm(w, x, m, y, isa, pool);
      }
    } else if (m == 1) {
      DenseGemv(dense.data(), out, in, x, y, isa, pool);
    } else {
      DenseGemm(dense.data(), out, in, x, m, y, isa, pool);
    }
  }
};

struct Layer {
  std::vector<float> input_norm, post_attention_norm;
  Linear q, k, v, o, gate, up, down;
};

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

bool IsFloatDType(DType d) {
  return d == DType::kF32 || d == DType::kF16 || d == DType::kBF16 || d == DType::kF64;
}

// The logical [out, in] shapes of the linear weights of one layer, by HF name suffix.
struct LinearSpec {
  const char* suffix;
  Linear Layer::*member;
  bool out_is_kv, in_is_intermediate, out_is_intermediate;
};
constexpr LinearSpec kLinearSpecs[] = {
    {"self_attn.q_proj.weight", &Layer::q, false, false, false},
    {"self_attn.k_proj.weight", &Layer::k, true, false, false},
    {"self_attn.v_proj.weight", &Layer::v, true, false, false},
    {"self_attn.o_proj.weight", &Layer::o, false, false, false},
    {"mlp.gate_proj.weight", &Layer::gate, false, false, true},
    {"mlp.up_proj.weight", &Layer::up, false, false, true},
    {"mlp.down_proj.weight", &Layer::down, false, true, false},
};

std::string LayerPrefix(int64_t layer) { return absl::StrCat("model.layers.", layer, "."); }

// Reads the config and the tensors of one file, remembering which tensors it consumed so that
// leftovers (a typo'd name, an lm_head next to tied embeddings) are reported, not ignored.
class Loader {
 public:
  explicit Loader(const SafetensorsFile& file) : file_(file) {}

  absl::Status ParseConfig(RuntimeConfig* c);
  // Reads "qat.quant.*" keys; needs the config to know which names are linear weights.
  absl::Status ParseQuantKeys(const RuntimeConfig& c);
  absl::Status ReadFloat(const std::string& name, const std::vector<int64_t>& shape,
                         std::vector<float>* out);
  absl::Status ReadLinear(const std::string& name, int64_t out, int64_t in, Linear* lin);
  absl::Status CheckAllTensorsUsed() const;

 private:
  absl::Status Error(const std::string& what) const {
    return absl::InvalidArgumentError(absl::StrCat(file_.path(), ": ", what));
  }
  absl::StatusOr<std::string> Meta(const std::string& key) const;
  absl::Status ParseInt(const std::string& key, int64_t lo, int64_t hi, int64_t* out) const;
  absl::Status ParseDouble(const std::string& key, double lo, double* out) const;
  // Finds a tensor and checks its dtype (`dtype_ok`, described by `expected_dtype`) and shape.
  absl::StatusOr<const TensorInfo*> Expect(const std::string& name, bool (*dtype_ok)(DType),
                                           const char* expected_dtype,
                                           const std::vector<int64_t>& shape);

  const SafetensorsFile& file_;
  std::set<std::string> used_;
  std::set<std::string> packed_;  // linear names with "qat.quant.NAME" = "ternary2"
};

absl::StatusOr<std::string> Loader::Meta(const std::string& key) const {
  auto it = file_.metadata().find(key);
  if (it == file_.metadata().end()) {
    return Error(absl::StrCat("missing metadata key \"", key, "\""));
  }
  return it->second;
}

absl::Status Loader::ParseInt(const std::string& key, int64_t lo, int64_t hi, int64_t* out) const {
  absl::StatusOr<std::string> s = Meta(key);
  if (!s.ok()) return s.status();
  if (!absl::SimpleAtoi(*s, out)) {
    return Error(absl::StrCat("metadata \"", key, "\" = \"", *s, "\" is not an integer"));
  }
  if (*out < lo || *out > hi) {
    return Error(
        absl::StrCat("metadata \"", key, "\" = ", *out, " is outside [", lo, ", ", hi, "]"));
  }
  return absl::OkStatus();
}

absl::Status Loader::ParseDouble(const std::string& key, double lo, double* out) const {
  absl::StatusOr<std::string> s = Meta(key);
  if (!s.ok()) return s.status();
  if (!absl::SimpleAtod(*s, out) || !std::isfinite(*out)) {
    return Error(absl::StrCat("metadata \"", key, "\" = \"", *s, "\" is not a finite number"));
  }
  if (*out < lo) return Error(absl::StrCat("metadata \"", key, "\" = ", *s, " is below ", lo));
  return absl::OkStatus();
}

absl::Status Loader::ParseConfig(RuntimeConfig* c) {
  absl::StatusOr<std::string> format = Meta("format");
  if (!format.ok()) return format.status();
  if (*format != "qat-packed") {
    return Error(absl::StrCat("metadata \"format\" = \"", *format, "\", expected \"qat-packed\""));
  }
  absl::StatusOr<std::string> version = Meta("qat.version");
  if (!version.ok()) return version.status();
  if (*version != "1") {
    return Error(absl::StrCat("metadata \"qat.version\" = \"", *version, "\", expected \"1\""));
  }
  const struct {
    const char* key;
    int64_t* field;
    int64_t hi;
  } sizes[] = {
      {"qat.vocab_size", &c->vocab_size, kMaxDim},
      {"qat.hidden_size", &c->hidden_size, kMaxDim},
      {"qat.intermediate_size", &c->intermediate_size, kMaxDim},
      {"qat.num_layers", &c->num_layers, kMaxLayers},
      {"qat.num_heads", &c->num_heads, kMaxDim},
      {"qat.num_kv_heads", &c->num_kv_heads, kMaxDim},
      {"qat.max_seq_len", &c->max_seq_len, kMaxDim},
  };
  for (const auto& s : sizes) QAT_RETURN_IF_ERROR(ParseInt(s.key, 1, s.hi, s.field));
  QAT_RETURN_IF_ERROR(ParseDouble("qat.rope_theta", 1e-300, &c->rope_theta));
  QAT_RETURN_IF_ERROR(ParseDouble("qat.rms_norm_eps", 0.0, &c->rms_norm_eps));
  int64_t tie = 0;
  QAT_RETURN_IF_ERROR(ParseInt("qat.tie_embeddings", 0, 1, &tie));
  c->tie_embeddings = tie == 1;
  // -1: the model has no such token.
  QAT_RETURN_IF_ERROR(ParseInt("qat.bos_id", -1, c->vocab_size - 1, &c->bos_id));
  QAT_RETURN_IF_ERROR(ParseInt("qat.eos_id", -1, c->vocab_size - 1, &c->eos_id));
  absl::StatusOr<std::string> tokenizer = Meta("qat.tokenizer");
  if (!tokenizer.ok()) return tokenizer.status();
  if (tokenizer->empty()) return Error("metadata \"qat.tokenizer\" is empty");
  c->tokenizer = *tokenizer;

  if (c->hidden_size % c->num_heads != 0) {
    return Error(absl::StrCat("qat.hidden_size (", c->hidden_size,
                              ") is not a multiple of qat.num_heads (", c->num_heads, ")"));
  }
  if (c->num_heads % c->num_kv_heads != 0) {
    return Error(absl::StrCat("qat.num_heads (", c->num_heads,
                              ") is not a multiple of qat.num_kv_heads (", c->num_kv_heads, ")"));
  }
  if ((c->hidden_size / c->num_heads) % 2 != 0) {
    return Error(absl::StrCat("head dim qat.hidden_size / qat.num_heads = ",
                              c->hidden_size / c->num_heads, " is odd (RoPE rotates pairs)"));
  }
  return absl::OkStatus();
}

absl::Status Loader::ParseQuantKeys(const RuntimeConfig& c) {
  std::set<std::string> linear_names;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    for (const LinearSpec& spec : kLinearSpecs) linear_names.insert(LayerPrefix(l) + spec.suffix);
  }
  for (const auto& [key, value] : file_.metadata()) {
    if (!absl::StartsWith(key, kQuantPrefix)) continue;
    const std::string name = key.substr(sizeof(kQuantPrefix) - 1);
    if (value != "ternary2") {
      return Error(absl::StrCat("metadata \"", key, "\" = \"", value,
                                "\" is not a known format (expected \"ternary2\")"));
    }
    if (linear_names.count(name) == 0) {
      return Error(absl::StrCat("metadata \"", key, "\": \"", name,
                                "\" is not a linear weight of this model"));
    }
    packed_.insert(name);
  }
  return absl::OkStatus();
}

absl::StatusOr<const TensorInfo*> Loader::Expect(const std::string& name, bool (*dtype_ok)(DType),
                                                 const char* expected_dtype,
                                                 const std::vector<int64_t>& shape) {
  const TensorInfo* t = file_.Find(name);
  if (t == nullptr) {
    return Error(absl::StrCat("missing tensor ", name, " (expected ", expected_dtype, " ",
                              ShapeString(shape), ")"));
  }
  used_.insert(name);
  if (!dtype_ok(t->dtype) || t->shape != shape) {
    return Error(absl::StrCat("tensor ", name, " is ", DTypeName(t->dtype), " ",
                              ShapeString(t->shape), ", expected ", expected_dtype, " ",
                              ShapeString(shape)));
  }
  return t;
}

absl::Status Loader::ReadFloat(const std::string& name, const std::vector<int64_t>& shape,
                               std::vector<float>* out) {
  absl::StatusOr<const TensorInfo*> t = Expect(name, IsFloatDType, "F32", shape);
  if (!t.ok()) return t.status();
  absl::StatusOr<std::vector<float>> values = file_.ReadF32(name);
  if (!values.ok()) return values.status();
  *out = std::move(*values);
  return absl::OkStatus();
}

absl::Status Loader::ReadLinear(const std::string& name, int64_t out, int64_t in, Linear* lin) {
  lin->out = out;
  lin->in = in;
  lin->packed = packed_.count(name) > 0;
  if (!lin->packed) return ReadFloat(name, {out, in}, &lin->dense);

  const int64_t row_bytes = TernaryRowBytes(in);
  absl::StatusOr<const TensorInfo*> t =
      Expect(name, [](DType d) { return d == DType::kU8; }, "U8 (ternary2)", {out, row_bytes});
  if (!t.ok()) return t.status();
  const uint8_t* data = file_.Data(**t);
  if (int64_t bad = ValidateTernary(data, out, in); bad >= 0) {
    return Error(absl::StrCat("tensor ", name, ": invalid ternary2 byte 0x",
                              absl::Hex(data[bad], absl::kZeroPad2), " at byte offset ", bad,
                              " (row ", bad / row_bytes, "): a code 3, or padding past column ", in,
                              " that is not code 1"));
  }
  lin->codes.assign(data, data + out * row_bytes);

  const std::string scale_name = name + ".scale";
  const TensorInfo* s = file_.Find(scale_name);
  if (s == nullptr) {
    return Error(absl::StrCat("missing tensor ", scale_name, " (F32 [1] or [", out, "])"));
  }
  used_.insert(scale_name);
  if (!IsFloatDType(s->dtype) || s->shape.size() != 1 || (s->shape[0] != 1 && s->shape[0] != out)) {
    return Error(absl::StrCat("tensor ", scale_name, " is ", DTypeName(s->dtype), " ",
                              ShapeString(s->shape), ", expected F32 [1] or [", out, "]"));
  }
  absl::StatusOr<std::vector<float>> scales = file_.ReadF32(scale_name);
  if (!scales.ok()) return scales.status();
  for (size_t i = 0; i < scales->size(); ++i) {
    if (!std::isfinite((*scales)[i])) {
      return Error(absl::StrCat("tensor ", scale_name, "[", i, "] is not finite"));
    }
  }
  lin->scales = std::move(*scales);
  return absl::OkStatus();
}

absl::Status Loader::CheckAllTensorsUsed() const {
  for (const TensorInfo& t : file_.tensors()) {
    if (used_.count(t.name) == 0) {
      return Error(absl::StrCat("unexpected tensor ", t.name, " (not part of this config)"));
    }
  }
  return absl::OkStatus();
}

// y = rmsnorm(x) * w for n rows of `dim`; the sum of squares is accumulated in double.
void RmsNorm(const float* x, int64_t n, int64_t dim, const std::vector<float>& w, double eps,
             float* y) {
  for (int64_t i = 0; i < n; ++i) {
    const float* xi = x + i * dim;
    double sum_sq = 0;
    for (int64_t d = 0; d < dim; ++d) sum_sq += static_cast<double>(xi[d]) * xi[d];
    const float inv_rms = static_cast<float>(1.0 / std::sqrt(sum_sq / dim + eps));
    for (int64_t d = 0; d < dim; ++d) y[i * dim + d] = xi[d] * inv_rms * w[d];
  }
}

// a . b with 8 independent partial sums: the compiler may not reorder one fp sum, but it can
// vectorise these (attention is a large part of decoding time once the context grows).
float Dot(const float* a, const float* b, int64_t n) {
  float partial[8] = {};
  int64_t d = 0;
  for (; d + 8 <= n; d += 8) {
    for (int lane = 0; lane < 8; ++lane) partial[lane] += a[d + lane] * b[d + lane];
  }
  float sum = 0;
  for (; d < n; ++d) sum += a[d] * b[d];
  for (float p : partial) sum += p;
  return sum;
}

// y += alpha * x.
void Axpy(float alpha, const float* __restrict x, int64_t n, float* __restrict y) {
  for (int64_t d = 0; d < n; ++d) y[d] += alpha * x[d];
}

void AddInPlace(const std::vector<float>& src, std::vector<float>* dst) {
  for (size_t i = 0; i < dst->size(); ++i) (*dst)[i] += src[i];
}

}  // namespace

struct PackedModel::Impl {
  RuntimeConfig config;
  Isa isa = Isa::kScalar;
  std::unique_ptr<ThreadPool> pool;
  int64_t head_dim = 0, kv_dim = 0;
  Linear embed;  // vocab x hidden, dense; also the output projection when tied
  Linear lm_head;
  std::vector<Layer> layers;
  std::vector<float> final_norm;
  std::vector<float> rope_cos, rope_sin;  // max_seq_len x head_dim/2

  const Linear& output() const { return config.tie_embeddings ? embed : lm_head; }

  // Rotates n rows of `heads` heads, row i at position pos + i ("rotate half", see runtime.h).
  void ApplyRope(float* x, int64_t n, int64_t heads, int64_t pos) const {
    const int64_t half = head_dim / 2;
    for (int64_t i = 0; i < n; ++i) {
      const float* cos = &rope_cos[(pos + i) * half];
      const float* sin = &rope_sin[(pos + i) * half];
      for (int64_t h = 0; h < heads; ++h) {
        float* v = x + (i * heads + h) * head_dim;
        for (int64_t j = 0; j < half; ++j) {
          const float a = v[j], b = v[j + half];
          v[j] = a * cos[j] - b * sin[j];
          v[j + half] = b * cos[j] + a * sin[j];
        }
      }
    }
  }

  // out (n x hidden) = causal softmax(q k^T / sqrt(hd)) v, query row i at position pos + i
  // attending to cache rows 0..pos+i. Heads are independent, so they are split over the pool.
  void Attention(const float* q, const float* k_cache, const float* v_cache, int64_t n, int64_t pos,
                 float* out) const {
    const int64_t heads = config.num_heads, group = config.num_heads / config.num_kv_heads;
    const float inv_sqrt_hd = static_cast<float>(1.0 / std::sqrt(static_cast<double>(head_dim)));
    pool->ParallelFor(heads, 1, [&](int64_t begin, int64_t end) {
      std::vector<float> probs(pos + n);
      for (int64_t h = begin; h < end; ++h) {
        const int64_t kv_off = (h / group) * head_dim;
        for (int64_t i = 0; i < n; ++i) {
          const float* qi = q + i * config.hidden_size + h * head_dim;
          const int64_t len = pos + i + 1;
          float max_score = -INFINITY;
          for (int64_t t = 0; t < len; ++t) {
            probs[t] = Dot(qi, k_cache + t * kv_dim + kv_off, head_dim) * inv_sqrt_hd;
            max_score = std::max(max_score, probs[t]);
          }
          double sum = 0;
          for (int64_t t = 0; t < len; ++t) {
            probs[t] = std::exp(probs[t] - max_score);
            sum += probs[t];
          }
          const float inv_sum = static_cast<float>(1.0 / sum);
          float* oi = out + i * config.hidden_size + h * head_dim;
          std::fill(oi, oi + head_dim, 0.0f);
          for (int64_t t = 0; t < len; ++t) {
            Axpy(probs[t] * inv_sum, v_cache + t * kv_dim + kv_off, head_dim, oi);
          }
        }
      }
    });
  }
};

PackedModel::PackedModel() : impl_(std::make_unique<Impl>()) {}
PackedModel::~PackedModel() = default;
const RuntimeConfig& PackedModel::config() const { return impl_->config; }

absl::StatusOr<std::unique_ptr<PackedModel>> PackedModel::Load(const std::string& path, int threads,
                                                               Isa isa) {
  if (!IsaSupported(isa)) {
    return absl::FailedPreconditionError(
        absl::StrCat("PackedModel::Load(", path, "): ISA ", IsaName(isa), " not supported here"));
  }
  absl::StatusOr<SafetensorsFile> file = SafetensorsFile::Open(path);
  if (!file.ok()) return file.status();
  Loader loader(*file);
  std::unique_ptr<PackedModel> model(new PackedModel());
  Impl& m = *model->impl_;
  RuntimeConfig& c = m.config;
  QAT_RETURN_IF_ERROR(loader.ParseConfig(&c));
  QAT_RETURN_IF_ERROR(loader.ParseQuantKeys(c));
  m.head_dim = c.hidden_size / c.num_heads;
  m.kv_dim = c.num_kv_heads * m.head_dim;

  m.embed.out = m.lm_head.out = c.vocab_size;
  m.embed.in = m.lm_head.in = c.hidden_size;
  QAT_RETURN_IF_ERROR(
      loader.ReadFloat("model.embed_tokens.weight", {c.vocab_size, c.hidden_size}, &m.embed.dense));
  m.layers.resize(c.num_layers);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    Layer& layer = m.layers[l];
    const std::string prefix = LayerPrefix(l);
    QAT_RETURN_IF_ERROR(
        loader.ReadFloat(prefix + "input_layernorm.weight", {c.hidden_size}, &layer.input_norm));
    QAT_RETURN_IF_ERROR(loader.ReadFloat(prefix + "post_attention_layernorm.weight",
                                         {c.hidden_size}, &layer.post_attention_norm));
    for (const LinearSpec& spec : kLinearSpecs) {
      const int64_t out = spec.out_is_kv             ? m.kv_dim
                          : spec.out_is_intermediate ? c.intermediate_size
                                                     : c.hidden_size;
      const int64_t in = spec.in_is_intermediate ? c.intermediate_size : c.hidden_size;
      QAT_RETURN_IF_ERROR(loader.ReadLinear(prefix + spec.suffix, out, in, &(layer.*spec.member)));
    }
  }
  QAT_RETURN_IF_ERROR(loader.ReadFloat("model.norm.weight", {c.hidden_size}, &m.final_norm));
  if (!c.tie_embeddings) {
    QAT_RETURN_IF_ERROR(
        loader.ReadFloat("lm_head.weight", {c.vocab_size, c.hidden_size}, &m.lm_head.dense));
  }
  QAT_RETURN_IF_ERROR(loader.CheckAllTensorsUsed());

  // RoPE tables in double, then rounded: angles p * f lose precision in fp32 at large p.
  const int64_t half = m.head_dim / 2;
  m.rope_cos.resize(c.max_seq_len * half);
  m.rope_sin.resize(c.max_seq_len * half);
  for (int64_t j = 0; j < half; ++j) {
    const double freq = std::pow(c.rope_theta, -2.0 * j / m.head_dim);
    for (int64_t p = 0; p < c.max_seq_len; ++p) {
      m.rope_cos[p * half + j] = static_cast<float>(std::cos(p * freq));
      m.rope_sin[p * half + j] = static_cast<float>(std::sin(p * freq));
    }
  }
  m.isa = isa;
  m.pool = std::make_unique<ThreadPool>(threads);
  return model;
}

Session PackedModel::NewSession() const {
  Session s;
  s.model_ = this;
  s.k_cache_.resize(impl_->config.num_layers);
  s.v_cache_.resize(impl_->config.num_layers);
  return s;
}

int64_t PackedModel::weight_bytes() const {
  const Impl& m = *impl_;
  int64_t bytes = m.embed.bytes() + m.lm_head.bytes() +
                  static_cast<int64_t>(m.final_norm.size() * sizeof(float));
  for (const Layer& layer : m.layers) {
    bytes += static_cast<int64_t>((layer.input_norm.size() + layer.post_attention_norm.size()) *
                                  sizeof(float));
    for (const LinearSpec& spec : kLinearSpecs) bytes += (layer.*spec.member).bytes();
  }
  return bytes;
}

// Counts the 7 linears of each layer (the embedding and lm_head are always fp32).
int64_t PackedModel::packed_linears() const {
  int64_t count = 0;
  for (const Layer& layer : impl_->layers) {
    for (const LinearSpec& spec : kLinearSpecs) count += (layer.*spec.member).packed ? 1 : 0;
  }
  return count;
}

int64_t PackedModel::dense_linears() const {
  return static_cast<int64_t>(impl_->layers.size() * std::size(kLinearSpecs)) - packed_linears();
}

absl::StatusOr<std::vector<float>> Session::Forward(const int32_t* tokens, int64_t n) {
  if (model_ == nullptr) {
    return absl::FailedPreconditionError(
        "Session::Forward: the session was not created by PackedModel::NewSession");
  }
  const PackedModel::Impl& m = *model_->impl_;
  const RuntimeConfig& c = m.config;
  if (n < 0 || (n > 0 && tokens == nullptr)) {
    return absl::InvalidArgumentError(absl::StrCat("Session::Forward: bad token count ", n));
  }
  if (n > c.max_seq_len - pos_) {
    return absl::OutOfRangeError(absl::StrCat("Session::Forward: ", n, " tokens at position ", pos_,
                                              " exceed max_seq_len ", c.max_seq_len));
  }
  for (int64_t i = 0; i < n; ++i) {
    if (tokens[i] < 0 || tokens[i] >= c.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("Session::Forward: token id ", tokens[i],
                                                     " at index ", i, " is outside [0, ",
                                                     c.vocab_size, ")"));
    }
  }
  if (n == 0) return std::vector<float>();

  const int64_t hidden = c.hidden_size, inter = c.intermediate_size;
  ThreadPool* pool = m.pool.get();
  std::vector<float> h(n * hidden), normed(n * hidden), q(n * hidden), attn(n * hidden),
      delta(n * hidden), gate(n * inter), up(n * inter);
  for (int64_t i = 0; i < n; ++i) {
    std::copy_n(&m.embed.dense[tokens[i] * hidden], hidden, &h[i * hidden]);
  }
  const size_t cache_needed = static_cast<size_t>((pos_ + n) * m.kv_dim);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const Layer& layer = m.layers[l];
    std::vector<float>& k_cache = k_cache_[l];
    std::vector<float>& v_cache = v_cache_[l];
    if (k_cache.size() < cache_needed) {  // grow geometrically, up to max_seq_len rows
      const size_t grown = std::min(static_cast<size_t>(c.max_seq_len * m.kv_dim),
                                    std::max(cache_needed, 2 * k_cache.size()));
      k_cache.resize(grown);
      v_cache.resize(grown);
    }
    float* k_new = &k_cache[pos_ * m.kv_dim];
    float* v_new = &v_cache[pos_ * m.kv_dim];

    RmsNorm(h.data(), n, hidden, layer.input_norm, c.rms_norm_eps, normed.data());
    layer.q.Apply(normed.data(), n, q.data(), m.isa, pool);
    layer.k.Apply(normed.data(), n, k_new, m.isa, pool);
    layer.v.Apply(normed.data(), n, v_new, m.isa, pool);
    m.ApplyRope(q.data(), n, c.num_heads, pos_);
    m.ApplyRope(k_new, n, c.num_kv_heads, pos_);
    m.Attention(q.data(), k_cache.data(), v_cache.data(), n, pos_, attn.data());
    layer.o.Apply(attn.data(), n, delta.data(), m.isa, pool);
    AddInPlace(delta, &h);

    RmsNorm(h.data(), n, hidden, layer.post_attention_norm, c.rms_norm_eps, normed.data());
    layer.gate.Apply(normed.data(), n, gate.data(), m.isa, pool);
    layer.up.Apply(normed.data(), n, up.data(), m.isa, pool);
    for (size_t i = 0; i < gate.size(); ++i) {
      const float g = gate[i];
      gate[i] = g / (1.0f + std::exp(-g)) * up[i];  // silu(g) * u
    }
    layer.down.Apply(gate.data(), n, delta.data(), m.isa, pool);
    AddInPlace(delta, &h);
  }
  RmsNorm(h.data(), n, hidden, m.final_norm, c.rms_norm_eps, normed.data());
  std::vector<float> logits(n * c.vocab_size);
  m.output().Apply(normed.data(), n, logits.data(), m.isa, pool);
  pos_ += n;
  return logits;
}

int32_t SampleToken(const float* logits, int64_t vocab, float temperature, int top_k,
                    std::mt19937_64& rng) {
  if (logits == nullptr || vocab <= 0) return -1;
  // Ranking: higher logit first, lower id on ties; NaN ranks below every number.
  auto ranks_before = [logits](int64_t a, int64_t b) {
    const float la = logits[a], lb = logits[b];
    if (std::isnan(la) != std::isnan(lb)) return std::isnan(lb);
    if (!std::isnan(la) && la != lb) return la > lb;
    return a < b;
  };
  int64_t best = 0;
  for (int64_t i = 1; i < vocab; ++i) {
    if (ranks_before(i, best)) best = i;
  }
  if (temperature <= 0 || top_k == 1 || !std::isfinite(logits[best])) {
    return static_cast<int32_t>(best);
  }
  std::vector<int64_t> candidates(vocab);
  for (int64_t i = 0; i < vocab; ++i) candidates[i] = i;
  if (top_k > 0 && top_k < vocab) {
    std::partial_sort(candidates.begin(), candidates.begin() + top_k, candidates.end(),
                      ranks_before);
    candidates.resize(top_k);
  }
  // Weights exp((l - max) / T) in double; NaN or -inf logits get weight 0.
  std::vector<double> weights(candidates.size());
  double total = 0;
  for (size_t i = 0; i < candidates.size(); ++i) {
    const double w = std::exp((static_cast<double>(logits[candidates[i]]) - logits[best]) /
                              static_cast<double>(temperature));
    weights[i] = std::isfinite(w) ? w : 0.0;
    total += weights[i];
  }
  if (!(total > 0) || !std::isfinite(total)) return static_cast<int32_t>(best);  // e.g. T = NaN
  double u = std::uniform_real_distribution<double>(0.0, total)(rng);
  for (size_t i = 0; i < candidates.size(); ++i) {
    if (u < weights[i]) return static_cast<int32_t>(candidates[i]);
    u -= weights[i];
  }
  return static_cast<int32_t>(best);  // only reached through rounding at the very top
}

#undef QAT_RETURN_IF_ERROR

}  // namespace qat::kernels
