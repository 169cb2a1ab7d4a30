// The packed runtime on a CUDA GPU (see runtime_cuda.h): weight upload, the per-linear products,
// and the forward pass, mirroring Session::Forward in kernels/runtime.cc step by step.
#include "kernels/cuda/runtime_cuda.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/cuda/ops_cuda.h"
#include "kernels/cuda/packed_cuda.h"
#include "kernels/lowbit.h"
#include "kernels/status_macros.h"

namespace qat::kernels::cuda {
namespace {

// A CUDA runtime call or one of our launches, as a Status naming what was being done.
absl::Status Check(int error, const std::string& what) { return CudaStatus(error, what); }

absl::Status CheckBlas(cublasStatus_t status, const std::string& what) {
  if (status == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  return absl::InternalError(
      absl::StrCat(what, " failed: cuBLAS status ", static_cast<int>(status)));
}

// One linear layer on the device (runtime_internal.h's Linear, ternary3 repacked as ternary2).
struct GpuLinear {
  int64_t out = 0, in = 0;
  LinearFormat format = LinearFormat::kDense;
  bool act_int8 = false;
  int bits = 0;
  int64_t group = 0, n_scales = 0;
  DeviceBuffer data;  // fp32 weights or packed codes
  DeviceBuffer scales, zeros, bias;
};

struct GpuLayer {
  DeviceBuffer input_norm, post_attention_norm;
  GpuLinear q, k, v, o, gate, up, down;
};

absl::Status UploadLinear(const Linear& lin, const std::string& name, GpuLinear* g) {
  g->out = lin.out;
  g->in = lin.in;
  g->format = lin.packing.format;
  g->act_int8 = lin.packing.act_int8;
  g->group = lin.packing.group;
  g->n_scales = static_cast<int64_t>(lin.scales.size());
  const char* what = name.c_str();
  switch (lin.packing.format) {
    case LinearFormat::kDense:
      QAT_RETURN_IF_ERROR(g->data.Upload(lin.dense.data(), lin.dense.size() * sizeof(float), what));
      break;
    case LinearFormat::kTernary3: {  // same trits, ternary2 bytes
      std::vector<int8_t> trits(static_cast<size_t>(lin.out * lin.in));
      UnpackTernary3(lin.codes.data(), lin.out, lin.in, trits.data());
      std::vector<uint8_t> codes(static_cast<size_t>(lin.out * TernaryRowBytes(lin.in)));
      PackTernary(trits.data(), lin.out, lin.in, codes.data());
      g->format = LinearFormat::kTernary2;
      QAT_RETURN_IF_ERROR(g->data.Upload(codes.data(), codes.size(), what));
      break;
    }
    case LinearFormat::kInt2:
    case LinearFormat::kInt4:
      g->bits = lin.bits();
      QAT_RETURN_IF_ERROR(
          g->zeros.Upload(lin.zeros.data(), lin.zeros.size() * sizeof(float), what));
      [[fallthrough]];
    case LinearFormat::kTernary2:
      QAT_RETURN_IF_ERROR(g->data.Upload(lin.codes.data(), lin.codes.size(), what));
      break;
  }
  if (!lin.scales.empty()) {
    QAT_RETURN_IF_ERROR(
        g->scales.Upload(lin.scales.data(), lin.scales.size() * sizeof(float), what));
  }
  if (!lin.bias.empty()) {
    QAT_RETURN_IF_ERROR(g->bias.Upload(lin.bias.data(), lin.bias.size() * sizeof(float), what));
  }
  return absl::OkStatus();
}

}  // namespace

// ----- DeviceBuffer -----

DeviceBuffer::~DeviceBuffer() {
  if (ptr_ != nullptr) cudaFree(ptr_);
}

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept
    : ptr_(std::exchange(other.ptr_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    if (ptr_ != nullptr) cudaFree(ptr_);
    ptr_ = std::exchange(other.ptr_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

absl::Status DeviceBuffer::Reserve(size_t bytes, const char* what) {
  if (bytes <= bytes_) return absl::OkStatus();
  if (ptr_ != nullptr) cudaFree(ptr_);
  ptr_ = nullptr;
  bytes_ = 0;
  void* p = nullptr;
  QAT_RETURN_IF_ERROR(
      Check(cudaMalloc(&p, bytes), absl::StrCat("cudaMalloc of ", bytes, " bytes for ", what)));
  ptr_ = p;
  bytes_ = bytes;
  return absl::OkStatus();
}

absl::Status DeviceBuffer::Upload(const void* host, size_t bytes, const char* what) {
  QAT_RETURN_IF_ERROR(Reserve(std::max<size_t>(bytes, 1), what));
  if (bytes == 0) return absl::OkStatus();
  return Check(cudaMemcpy(ptr_, host, bytes, cudaMemcpyHostToDevice),
               absl::StrCat("copying ", what, " to the GPU"));
}

int VisibleDeviceCount() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error so later calls are not confused by it
    return 0;
  }
  return count;
}

// ----- The model -----

struct GpuModel::Impl {
  RuntimeConfig config;
  int64_t head_dim = 0, kv_dim = 0;
  cudaStream_t stream = nullptr;
  cublasHandle_t blas = nullptr;
  DeviceBuffer embed, lm_head, final_norm;
  std::vector<GpuLayer> layers;
  // Scratch, grown to the largest forward seen (Forward is not reentrant per model).
  mutable DeviceBuffer tokens, h, normed, q, attn, delta, gate, up, logits, scores, xq, xscales,
      rope_cos, rope_sin;  // the RoPE rows of the call (RopeRows, runtime_internal.h)

  ~Impl() {
    if (blas != nullptr) cublasDestroy(blas);
    if (stream != nullptr) cudaStreamDestroy(stream);
  }

  // y (m x out) = lin(x (m x in)).
  absl::Status Apply(const GpuLinear& lin, const float* x, int64_t m, float* y) const {
    const std::string what = absl::StrCat("GPU linear ", lin.out, "x", lin.in, " (m=", m, ")");
    const float* input = x;
    if (lin.act_int8) {
      QAT_RETURN_IF_ERROR(xq.Reserve(m * lin.in * sizeof(float), "int8 activations"));
      QAT_RETURN_IF_ERROR(xscales.Reserve(m * sizeof(float), "activation scales"));
      QAT_RETURN_IF_ERROR(
          Check(QuantizeInt8(x, m, lin.in, xq.as<float>(), xscales.as<float>(), stream), what));
      if (lin.format != LinearFormat::kTernary2) {
        QAT_RETURN_IF_ERROR(
            Check(ScaleRows(xq.as<float>(), xscales.as<float>(), m, lin.in, stream), what));
      }
      input = xq.as<float>();
    }
    switch (lin.format) {
      case LinearFormat::kDense: {
        const float one = 1.0f, zero = 0.0f;
        QAT_RETURN_IF_ERROR(
            CheckBlas(cublasSgemm(blas, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(lin.out),
                                  static_cast<int>(m), static_cast<int>(lin.in), &one,
                                  lin.data.as<float>(), static_cast<int>(lin.in), input,
                                  static_cast<int>(lin.in), &zero, y, static_cast<int>(lin.out)),
                      what));
        break;
      }
      case LinearFormat::kTernary2:
      case LinearFormat::kTernary3: {
        const TernaryView w{lin.out, lin.in, lin.data.as<uint8_t>(), lin.scales.as<float>(),
                            lin.n_scales};
        const float* xs = lin.act_int8 ? xscales.as<float>() : nullptr;
        QAT_RETURN_IF_ERROR(
            Check(TernaryGemm(w, input, m, Activation::kFloat32, xs, y, stream), what));
        break;
      }
      case LinearFormat::kInt2:
      case LinearFormat::kInt4: {
        const IntKView w{lin.out,
                         lin.in,
                         lin.bits,
                         lin.group,
                         lin.data.as<uint8_t>(),
                         lin.scales.as<float>(),
                         lin.zeros.as<float>()};
        QAT_RETURN_IF_ERROR(Check(IntKGemm(w, input, m, Activation::kFloat32, y, stream), what));
        break;
      }
    }
    if (lin.bias.bytes() > 0) {
      QAT_RETURN_IF_ERROR(Check(AddBias(y, lin.bias.as<float>(), m, lin.out, stream), what));
    }
    return absl::OkStatus();
  }
};

GpuModel::GpuModel() : impl_(std::make_unique<Impl>()) {}
GpuModel::~GpuModel() = default;

absl::StatusOr<std::unique_ptr<GpuModel>> GpuModel::Create(const ModelWeights& weights) {
  if (VisibleDeviceCount() == 0) {
    return absl::FailedPreconditionError("--device cuda: no CUDA GPU is visible");
  }
  std::unique_ptr<GpuModel> model(new GpuModel());
  Impl& m = *model->impl_;
  m.config = weights.config;
  const RuntimeConfig& c = m.config;
  m.head_dim = c.hidden_size / c.num_heads;
  m.kv_dim = c.num_kv_heads * m.head_dim;
  if (c.hidden_size > (int64_t{1} << 31) / 4 || c.intermediate_size > (int64_t{1} << 31) / 4 ||
      c.vocab_size > (int64_t{1} << 31) / 4) {
    return absl::InvalidArgumentError("--device cuda: a dimension exceeds cuBLAS's int range");
  }
  QAT_RETURN_IF_ERROR(Check(cudaSetDevice(0), "cudaSetDevice(0)"));
  QAT_RETURN_IF_ERROR(
      Check(cudaStreamCreateWithFlags(&m.stream, cudaStreamNonBlocking), "cudaStreamCreate"));
  QAT_RETURN_IF_ERROR(CheckBlas(cublasCreate(&m.blas), "cublasCreate"));
  QAT_RETURN_IF_ERROR(CheckBlas(cublasSetStream(m.blas, m.stream), "cublasSetStream"));
  // Plain fp32 (no TF32 tensor cores): the fp32 linears must match the CPU runtime closely.
  QAT_RETURN_IF_ERROR(
      CheckBlas(cublasSetMathMode(m.blas, CUBLAS_PEDANTIC_MATH), "cublasSetMathMode"));

  auto upload = [](DeviceBuffer* b, const std::vector<float>& v, const char* what) {
    return b->Upload(v.data(), v.size() * sizeof(float), what);
  };
  QAT_RETURN_IF_ERROR(upload(&m.embed, weights.embed.dense, "model.embed_tokens.weight"));
  if (!c.tie_embeddings) {
    QAT_RETURN_IF_ERROR(upload(&m.lm_head, weights.lm_head.dense, "lm_head.weight"));
  }
  QAT_RETURN_IF_ERROR(upload(&m.final_norm, weights.final_norm, "model.norm.weight"));
  m.layers.resize(weights.layers.size());
  for (size_t l = 0; l < weights.layers.size(); ++l) {
    const Layer& src = weights.layers[l];
    GpuLayer& dst = m.layers[l];
    const std::string prefix = LayerPrefix(static_cast<int64_t>(l));
    QAT_RETURN_IF_ERROR(upload(&dst.input_norm, src.input_norm, "input_layernorm"));
    QAT_RETURN_IF_ERROR(
        upload(&dst.post_attention_norm, src.post_attention_norm, "post_attention_layernorm"));
    const std::pair<const Linear*, GpuLinear*> linears[] = {
        {&src.q, &dst.q},       {&src.k, &dst.k},   {&src.v, &dst.v},      {&src.o, &dst.o},
        {&src.gate, &dst.gate}, {&src.up, &dst.up}, {&src.down, &dst.down}};
    for (size_t i = 0; i < std::size(linears); ++i) {
      QAT_RETURN_IF_ERROR(
          UploadLinear(*linears[i].first, prefix + kLinearSpecs[i].suffix, linears[i].second));
    }
  }
  return model;
}

std::unique_ptr<GpuSession> GpuModel::NewSession() const {
  auto s = std::make_unique<GpuSession>();
  s->k_cache.resize(impl_->config.num_layers);
  s->v_cache.resize(impl_->config.num_layers);
  return s;
}

absl::StatusOr<std::vector<float>> GpuModel::Forward(GpuSession& session, const int32_t* tokens,
                                                     int64_t n, int64_t pos) const {
  const Impl& m = *impl_;
  const RuntimeConfig& c = m.config;
  const int64_t hidden = c.hidden_size, inter = c.intermediate_size;
  cudaStream_t stream = m.stream;

  // Grow the KV cache geometrically (up to max_seq_len rows), keeping rows 0..pos-1.
  if (session.capacity < pos + n) {
    const int64_t rows = std::min(c.max_seq_len, std::max(pos + n, 2 * session.capacity));
    for (int64_t l = 0; l < c.num_layers; ++l) {
      for (DeviceBuffer* cache : {&session.k_cache[l], &session.v_cache[l]}) {
        DeviceBuffer grown;
        QAT_RETURN_IF_ERROR(grown.Reserve(rows * m.kv_dim * sizeof(float), "KV cache"));
        if (pos > 0) {
          QAT_RETURN_IF_ERROR(Check(
              cudaMemcpyAsync(grown.as<float>(), cache->as<float>(), pos * m.kv_dim * sizeof(float),
                              cudaMemcpyDeviceToDevice, stream),
              "growing the KV cache"));
        }
        QAT_RETURN_IF_ERROR(Check(cudaStreamSynchronize(stream), "growing the KV cache"));
        *cache = std::move(grown);
      }
    }
    session.capacity = rows;
  }

  const struct {
    DeviceBuffer* buffer;
    int64_t floats;
  } scratch[] = {{&m.h, n * hidden},
                 {&m.normed, n * hidden},
                 {&m.q, n * hidden},
                 {&m.attn, n * hidden},
                 {&m.delta, n * hidden},
                 {&m.gate, n * inter},
                 {&m.up, n * inter},
                 {&m.logits, n * c.vocab_size},
                 {&m.scores, n * c.num_heads * (pos + n)}};
  for (const auto& s : scratch) {
    QAT_RETURN_IF_ERROR(s.buffer->Reserve(s.floats * sizeof(float), "activations"));
  }
  QAT_RETURN_IF_ERROR(m.tokens.Reserve(n * sizeof(int32_t), "token ids"));
  QAT_RETURN_IF_ERROR(Check(cudaMemcpyAsync(m.tokens.as<int32_t>(), tokens, n * sizeof(int32_t),
                                            cudaMemcpyHostToDevice, stream),
                            "copying token ids"));
  // The host rows may go once the copies return: a pageable source is staged before they do.
  std::vector<float> rope_cos, rope_sin;
  RopeRows(c.rope_theta, m.head_dim, pos, n, &rope_cos, &rope_sin);
  for (auto [buffer, rows] :
       {std::pair{&m.rope_cos, &rope_cos}, std::pair{&m.rope_sin, &rope_sin}}) {
    QAT_RETURN_IF_ERROR(buffer->Reserve(rows->size() * sizeof(float), "RoPE rows"));
    QAT_RETURN_IF_ERROR(
        Check(cudaMemcpyAsync(buffer->as<float>(), rows->data(), rows->size() * sizeof(float),
                              cudaMemcpyHostToDevice, stream),
              "copying RoPE rows"));
  }

  float* h = m.h.as<float>();
  float* normed = m.normed.as<float>();
  float* q = m.q.as<float>();
  float* attn = m.attn.as<float>();
  float* delta = m.delta.as<float>();
  float* gate = m.gate.as<float>();
  float* up = m.up.as<float>();
  const double eps = c.rms_norm_eps;
  QAT_RETURN_IF_ERROR(
      Check(EmbeddingGather(m.embed.as<float>(), m.tokens.as<int32_t>(), n, hidden, h, stream),
            "embedding lookup"));
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const GpuLayer& layer = m.layers[l];
    const std::string where = absl::StrCat("layer ", l);
    float* k_new = session.k_cache[l].as<float>() + pos * m.kv_dim;
    float* v_new = session.v_cache[l].as<float>() + pos * m.kv_dim;
    QAT_RETURN_IF_ERROR(
        Check(RmsNorm(h, n, hidden, layer.input_norm.as<float>(), eps, normed, stream), where));
    QAT_RETURN_IF_ERROR(m.Apply(layer.q, normed, n, q));
    QAT_RETURN_IF_ERROR(m.Apply(layer.k, normed, n, k_new));
    QAT_RETURN_IF_ERROR(m.Apply(layer.v, normed, n, v_new));
    QAT_RETURN_IF_ERROR(Check(
        Rope(q, n, c.num_heads, m.head_dim, m.rope_cos.as<float>(), m.rope_sin.as<float>(), stream),
        where));
    QAT_RETURN_IF_ERROR(Check(Rope(k_new, n, c.num_kv_heads, m.head_dim, m.rope_cos.as<float>(),
                                   m.rope_sin.as<float>(), stream),
                              where));
    QAT_RETURN_IF_ERROR(Check(
        Attention(q, session.k_cache[l].as<float>(), session.v_cache[l].as<float>(), n, pos,
                  c.num_heads, c.num_kv_heads, m.head_dim, m.scores.as<float>(), attn, stream),
        where));
    QAT_RETURN_IF_ERROR(m.Apply(layer.o, attn, n, delta));
    QAT_RETURN_IF_ERROR(Check(AddInPlace(h, delta, n * hidden, stream), where));

    QAT_RETURN_IF_ERROR(Check(
        RmsNorm(h, n, hidden, layer.post_attention_norm.as<float>(), eps, normed, stream), where));
    QAT_RETURN_IF_ERROR(m.Apply(layer.gate, normed, n, gate));
    QAT_RETURN_IF_ERROR(m.Apply(layer.up, normed, n, up));
    QAT_RETURN_IF_ERROR(Check(SiluMul(gate, up, n * inter, stream), where));
    QAT_RETURN_IF_ERROR(m.Apply(layer.down, gate, n, delta));
    QAT_RETURN_IF_ERROR(Check(AddInPlace(h, delta, n * hidden, stream), where));
  }
  QAT_RETURN_IF_ERROR(
      Check(RmsNorm(h, n, hidden, m.final_norm.as<float>(), eps, normed, stream), "final norm"));
  const DeviceBuffer& out_weights = c.tie_embeddings ? m.embed : m.lm_head;
  const float one = 1.0f, zero = 0.0f;
  QAT_RETURN_IF_ERROR(CheckBlas(
      cublasSgemm(m.blas, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(c.vocab_size),
                  static_cast<int>(n), static_cast<int>(hidden), &one, out_weights.as<float>(),
                  static_cast<int>(hidden), normed, static_cast<int>(hidden), &zero,
                  m.logits.as<float>(), static_cast<int>(c.vocab_size)),
      "output projection"));
  std::vector<float> logits(static_cast<size_t>(n * c.vocab_size));
  QAT_RETURN_IF_ERROR(
      Check(cudaMemcpyAsync(logits.data(), m.logits.as<float>(), logits.size() * sizeof(float),
                            cudaMemcpyDeviceToHost, stream),
            "copying logits"));
  QAT_RETURN_IF_ERROR(Check(cudaStreamSynchronize(stream), "the forward pass"));
  return logits;
}

}  // namespace qat::kernels::cuda
