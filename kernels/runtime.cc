// The packed-model runtime: running an export (loaded by runtime_load.cc; the file format and the
// model math are in runtime.h) with a KV cache, on the CPU kernels or on the CUDA runtime
// (kernels/cuda/runtime_cuda.h), and sampling.
//
// Session::Forward runs n tokens at once: every linear is one GEMM over the n rows (a GEMV when
// n == 1), k and v go into the session's cache after RoPE, and each query attends to the cache up
// to its own position.
#include "kernels/runtime.h"

#include <algorithm>
#include <cmath>
#include <iterator>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/lowbit.h"
#include "kernels/runtime_internal.h"
#include "kernels/ternary_x16.h"
#include "kernels/thread_pool.h"

#if QAT_HAVE_CUDA
#include "kernels/cuda/runtime_cuda.h"
#else
namespace qat::kernels::cuda {
// Never created in a build without CUDA; complete types for the unique_ptrs that hold them.
class GpuModel {};
class GpuSession {};
}  // namespace qat::kernels::cuda
#endif

namespace qat::kernels {

// ----- Linear layers on the CPU kernels -----

int64_t Linear::bytes() const {
  return static_cast<int64_t>(codes.size() + x16.size() * sizeof(uint32_t) + intk_x16.bytes() +
                              (dense.size() + scales.size() + zeros.size() + bias.size()) *
                                  sizeof(float));
}

void Linear::Apply(const float* x, int64_t m, float* y, Isa isa, ThreadPool* pool) const {
  if (m <= 0) return;
  const LinearFormat format = packing.format;
  const int64_t n_scales = static_cast<int64_t>(scales.size());
  // Reused across calls on the calling thread (a decode step runs every linear of the model).
  thread_local std::vector<int8_t> xq;
  thread_local std::vector<float> xscales, x_dequantized;
  if (packing.act_int8) {
    xq.resize(m * in);
    xscales.resize(m);
    QuantizeActivationsInt8(x, m, in, xq.data(), xscales.data(), isa);
    if (format == LinearFormat::kTernary2) {
      const TernaryView w{out, in, codes.data(), scales.data(), n_scales};
      TernaryGemmInt8(w, xq.data(), xscales.data(), m, y, isa, pool);
    } else if (intk_x16.rows > 0) {  // int2/int4: integer dot products (intk_int8.h)
      IntKX16GemmInt8(intk_x16.view(), xq.data(), xscales.data(), m, y, isa, pool);
    } else {  // the exact equivalent of runtime.h: x' = xscale * q, then the fp32 product
      x_dequantized.resize(m * in);
      for (int64_t i = 0; i < m; ++i) {
        for (int64_t c = 0; c < in; ++c) {
          x_dequantized[i * in + c] = xscales[i] * static_cast<float>(xq[i * in + c]);
        }
      }
      x = x_dequantized.data();
    }
  }
  if (!packing.act_int8 || (format != LinearFormat::kTernary2 && intk_x16.rows == 0)) {
    switch (format) {
      case LinearFormat::kDense:
        DenseGemm(dense.data(), out, in, x, m, y, isa, pool);
        break;
      case LinearFormat::kTernary2:
        if (!x16.empty()) {
          TernaryX16Gemm(TernaryX16View{out, in, x16.data(), scales.data(), n_scales}, x, m, y, isa,
                         pool);
        } else {
          TernaryGemm(TernaryView{out, in, codes.data(), scales.data(), n_scales}, x, m, y, isa,
                      pool);
        }
        break;
      case LinearFormat::kTernary3:
        Ternary3Gemm(Ternary3View{out, in, codes.data(), scales.data(), n_scales}, x, m, y, isa,
                     pool);
        break;
      case LinearFormat::kInt2:
      case LinearFormat::kInt4:
        IntKGemm(
            IntKView{out, in, bits(), packing.group, codes.data(), scales.data(), zeros.data()}, x,
            m, y, isa, pool);
        break;
    }
  }
  if (!bias.empty()) {
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t r = 0; r < out; ++r) y[i * out + r] += bias[r];
    }
  }
}

namespace {

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

// ----- Devices -----

const char* DeviceName(Device d) { return d == Device::kCuda ? "cuda" : "cpu"; }

bool CudaDeviceAvailable() {
#if QAT_HAVE_CUDA
  return cuda::VisibleDeviceCount() > 0;
#else
  return false;
#endif
}

void RopeRows(double theta, int64_t head_dim, int64_t pos, int64_t n, std::vector<float>* cos,
              std::vector<float>* sin) {
  const int64_t half = head_dim / 2;
  cos->resize(n * half);
  sin->resize(n * half);
  for (int64_t j = 0; j < half; ++j) {
    const double freq = std::pow(theta, -2.0 * j / head_dim);
    for (int64_t i = 0; i < n; ++i) {
      const double angle = static_cast<double>(pos + i) * freq;
      (*cos)[i * half + j] = static_cast<float>(std::cos(angle));
      (*sin)[i * half + j] = static_cast<float>(std::sin(angle));
    }
  }
}

// ----- The model -----

struct PackedModel::Impl {
  ModelWeights w;
  const RuntimeConfig& config = w.config;
  Isa isa = Isa::kScalar;
  Device device = Device::kCpu;
  std::unique_ptr<ThreadPool> pool;
  int64_t head_dim = 0, kv_dim = 0;
  std::unique_ptr<cuda::GpuModel> gpu;    // device == kCuda
  // Counted at load time (a GPU model keeps no host copy of its linears).
  int64_t linears_per_format[5] = {};  // by LinearFormat
  int64_t linears_total = 0, linears_int8_act = 0, gpu_weight_bytes = 0;

  // Rotates n rows of `heads` heads ("rotate half", see runtime.h) by the angles of RopeRows.
  void ApplyRope(float* x, int64_t n, int64_t heads, const float* cos_rows,
                 const float* sin_rows) const {
    const int64_t half = head_dim / 2;
    for (int64_t i = 0; i < n; ++i) {
      const float* cos = &cos_rows[i * half];
      const float* sin = &sin_rows[i * half];
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

namespace {

// Visits every linear of the model (not the embedding or lm_head); Weights is ModelWeights or
// const ModelWeights.
template <typename Weights, typename Fn>
void ForEachLinear(Weights& w, Fn fn) {
  for (auto& layer : w.layers) {
    for (const LinearSpec& spec : kLinearSpecs) fn(layer.*spec.member);
  }
}

}  // namespace

PackedModel::PackedModel() : impl_(std::make_unique<Impl>()) {}
PackedModel::~PackedModel() = default;
const RuntimeConfig& PackedModel::config() const { return impl_->config; }
Device PackedModel::device() const { return impl_->device; }

absl::StatusOr<std::unique_ptr<PackedModel>> PackedModel::Load(const std::string& path, int threads,
                                                               Isa isa, Device device) {
  if (!IsaSupported(isa)) {
    return absl::FailedPreconditionError(
        absl::StrCat("PackedModel::Load(", path, "): ISA ", IsaName(isa), " not supported here"));
  }
#if !QAT_HAVE_CUDA
  if (device == Device::kCuda) {
    return absl::FailedPreconditionError(
        absl::StrCat("PackedModel::Load(", path,
                     "): --device cuda, but this build has no CUDA kernels "
                     "(configure with -DQAT_CUDA=ON where nvcc is installed)"));
  }
#endif
  absl::StatusOr<SafetensorsFile> file = SafetensorsFile::Open(path);
  if (!file.ok()) return file.status();
  absl::StatusOr<ModelWeights> weights = LoadModelWeights(*file);
  if (!weights.ok()) return weights.status();
  std::unique_ptr<PackedModel> model(new PackedModel());
  Impl& m = *model->impl_;
  m.w = std::move(*weights);
  const RuntimeConfig& c = m.config;
  m.head_dim = c.hidden_size / c.num_heads;
  m.kv_dim = c.num_kv_heads * m.head_dim;

  m.isa = isa;
  m.device = device;
  m.pool = std::make_unique<ThreadPool>(threads);
  // On AVX-512 the ternary2 linears run from the x16 layout (ternary_x16.h: ~1.4x faster decode,
  // ~2x faster prefill); the regrouped copy replaces the file's bytes, so memory stays the same.
  // int8-activation linears keep ternary2 (their kernel reads it), and so does a GPU model.
  // (Load has checked that isa is supported.)
  if (device == Device::kCpu && isa == Isa::kAvx512) {
    ForEachLinear(m.w, [](Linear& lin) {
      if (lin.packing.format != LinearFormat::kTernary2 || lin.packing.act_int8) return;
      lin.x16.resize(TernaryX16Words(lin.out, lin.in));
      RepackTernaryX16(lin.codes.data(), lin.out, lin.in, lin.x16.data());
      std::vector<uint8_t>().swap(lin.codes);
    });
  }
  // int2/int4 linears with int8 activations run on integer dot products over 16-row tiles on
  // every isa (the same bits; 1.6-2.1x faster than dequantizing x to fp32 at M=1, 4-5x at M=8).
  // They agree with the fp32 product of the dequantized activations within
  // IntKX16Tolerance(in) (intk_int8.h), not bit for bit. fp32-activation linears keep the fp32
  // kernels: quantizing their activations would change the model.
  if (device == Device::kCpu) {
    ForEachLinear(m.w, [](Linear& lin) {
      const bool intk =
          lin.packing.format == LinearFormat::kInt2 || lin.packing.format == LinearFormat::kInt4;
      if (!intk || !lin.packing.act_int8) return;
      lin.intk_x16 = RepackIntKX16(IntKView{lin.out, lin.in, lin.bits(), lin.packing.group,
                                            lin.codes.data(), lin.scales.data(), lin.zeros.data()});
      if (lin.intk_x16.rows == 0) return;  // an unsupported layout: the fp32 path stays
      std::vector<uint8_t>().swap(lin.codes);
      std::vector<float>().swap(lin.scales);
      std::vector<float>().swap(lin.zeros);
    });
  }
  ForEachLinear(m.w, [&](const Linear& lin) {
    ++m.linears_per_format[static_cast<int>(lin.packing.format)];
    ++m.linears_total;
    m.linears_int8_act += lin.packing.act_int8 ? 1 : 0;
  });
#if QAT_HAVE_CUDA
  if (device == Device::kCuda) {
    absl::StatusOr<std::unique_ptr<cuda::GpuModel>> gpu = cuda::GpuModel::Create(m.w);
    if (!gpu.ok()) {
      return absl::Status(gpu.status().code(),
                          absl::StrCat("PackedModel::Load(", path, "): ", gpu.status().message()));
    }
    m.gpu = std::move(*gpu);
    m.gpu_weight_bytes = model->weight_bytes();
    // The device holds the weights now; the host copy is not read again.
    m.w = ModelWeights{m.w.config, {}, {}, {}, {}};
  }
#endif
  return model;
}

Session::Session() = default;
Session::~Session() = default;
Session::Session(Session&&) noexcept = default;
Session& Session::operator=(Session&&) noexcept = default;

Session PackedModel::NewSession() const {
  Session s;
  s.model_ = this;
#if QAT_HAVE_CUDA
  if (impl_->gpu != nullptr) {
    s.gpu_ = impl_->gpu->NewSession();
    return s;
  }
#endif
  s.k_cache_.resize(impl_->config.num_layers);
  s.v_cache_.resize(impl_->config.num_layers);
  return s;
}

int64_t PackedModel::weight_bytes() const {
  const Impl& m = *impl_;
  if (m.gpu_weight_bytes > 0) return m.gpu_weight_bytes;
  int64_t bytes = m.w.embed.bytes() + m.w.lm_head.bytes() +
                  static_cast<int64_t>(m.w.final_norm.size() * sizeof(float));
  for (const Layer& layer : m.w.layers) {
    bytes += static_cast<int64_t>((layer.input_norm.size() + layer.post_attention_norm.size()) *
                                  sizeof(float));
  }
  ForEachLinear(m.w, [&](const Linear& lin) { bytes += lin.bytes(); });
  return bytes;
}

int64_t PackedModel::packed_linears() const {
  return impl_->linears_total - impl_->linears_per_format[0];
}

int64_t PackedModel::dense_linears() const { return impl_->linears_per_format[0]; }

std::string PackedModel::LinearSummary() const {
  const Impl& m = *impl_;
  std::string s;
  for (LinearFormat f : {LinearFormat::kTernary2, LinearFormat::kTernary3, LinearFormat::kInt2,
                         LinearFormat::kInt4, LinearFormat::kDense}) {
    const int64_t count = m.linears_per_format[static_cast<int>(f)];
    if (count == 0 && f != LinearFormat::kDense) continue;
    absl::StrAppend(&s, s.empty() ? "" : " + ", count, " ", LinearFormatName(f));
  }
  absl::StrAppend(&s, " linears");
  if (m.linears_int8_act > 0)
    absl::StrAppend(&s, ", ", m.linears_int8_act, " with int8 activations");
  return s;
}

absl::StatusOr<std::vector<float>> Session::Forward(const int32_t* tokens, int64_t n,
                                                    int64_t logits_from) {
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
  if (n > 0 && (logits_from < 0 || logits_from >= n)) {
    return absl::InvalidArgumentError(
        absl::StrCat("Session::Forward: logits_from ", logits_from, " is outside [0, ", n, ")"));
  }
  if (n == 0) return std::vector<float>();
#if QAT_HAVE_CUDA
  if (m.gpu != nullptr) {
    // The device computes every row; the rows asked for are copied out.
    absl::StatusOr<std::vector<float>> logits = m.gpu->Forward(*gpu_, tokens, n, pos_);
    if (!logits.ok()) return logits;
    pos_ += n;
    if (logits_from > 0)
      logits->erase(logits->begin(), logits->begin() + logits_from * c.vocab_size);
    return logits;
  }
#endif

  const int64_t hidden = c.hidden_size, inter = c.intermediate_size;
  ThreadPool* pool = m.pool.get();
  std::vector<float> h(n * hidden), normed(n * hidden), q(n * hidden), attn(n * hidden),
      delta(n * hidden), gate(n * inter), up(n * inter);
  for (int64_t i = 0; i < n; ++i) {
    std::copy_n(&m.w.embed.dense[tokens[i] * hidden], hidden, &h[i * hidden]);
  }
  std::vector<float> rope_cos, rope_sin;
  RopeRows(c.rope_theta, m.head_dim, pos_, n, &rope_cos, &rope_sin);
  const size_t cache_needed = static_cast<size_t>((pos_ + n) * m.kv_dim);
  int64_t rows = n;  // rows of h being computed: n, and n - logits_from in the last layer
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const Layer& layer = m.w.layers[l];
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

    RmsNorm(h.data(), rows, hidden, layer.input_norm, c.rms_norm_eps, normed.data());
    layer.k.Apply(normed.data(), rows, k_new, m.isa, pool);
    layer.v.Apply(normed.data(), rows, v_new, m.isa, pool);
    m.ApplyRope(k_new, rows, c.num_kv_heads, rope_cos.data(), rope_sin.data());
    // Past the keys and values, the last layer works on the rows whose logits are wanted only.
    const int64_t skip = l + 1 == c.num_layers ? logits_from : 0;
    if (skip > 0) {
      rows -= skip;
      std::copy(h.begin() + skip * hidden, h.end(), h.begin());
      for (std::vector<float>* b : {&h, &q, &attn, &delta}) b->resize(rows * hidden);
      for (std::vector<float>* b : {&gate, &up}) b->resize(rows * inter);
    }
    const int64_t half = m.head_dim / 2;
    layer.q.Apply(normed.data() + skip * hidden, rows, q.data(), m.isa, pool);
    m.ApplyRope(q.data(), rows, c.num_heads, rope_cos.data() + skip * half,
                rope_sin.data() + skip * half);
    m.Attention(q.data(), k_cache.data(), v_cache.data(), rows, pos_ + skip, attn.data());
    layer.o.Apply(attn.data(), rows, delta.data(), m.isa, pool);
    AddInPlace(delta, &h);

    RmsNorm(h.data(), rows, hidden, layer.post_attention_norm, c.rms_norm_eps, normed.data());
    layer.gate.Apply(normed.data(), rows, gate.data(), m.isa, pool);
    layer.up.Apply(normed.data(), rows, up.data(), m.isa, pool);
    for (size_t i = 0; i < gate.size(); ++i) {
      const float g = gate[i];
      gate[i] = g / (1.0f + std::exp(-g)) * up[i];  // silu(g) * u
    }
    layer.down.Apply(gate.data(), rows, delta.data(), m.isa, pool);
    AddInPlace(delta, &h);
  }
  RmsNorm(h.data(), rows, hidden, m.w.final_norm, c.rms_norm_eps, normed.data());
  std::vector<float> logits(rows * c.vocab_size);
  m.w.output().Apply(normed.data(), rows, logits.data(), m.isa, pool);
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

}  // namespace qat::kernels
