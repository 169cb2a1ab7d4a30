// The runtime's elementwise, normalization and attention kernels (see ops_cuda.h). Simple on
// purpose: decoding time is dominated by the packed products; these are written for clarity and
// for agreement with the CPU runtime, with one thread block per row (norm, quantization) or per
// (query, head) pair (attention), and grid-stride loops elsewhere.
#include <cuda_runtime.h>

#include <cfloat>
#include <cstdint>

#include "kernels/cuda/ops_cuda.h"

namespace qat::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxGrid = 0x7FFFFFFF;

unsigned BlocksFor(int64_t count) {
  const int64_t blocks = (count + kThreads - 1) / kThreads;
  return static_cast<unsigned>(
      blocks < 65535 * 16 ? blocks : 65535 * 16);  // grid-stride loops cover the rest
}

// Block-wide reductions over blockDim.x threads (a multiple of 32, at most 1024); every thread
// gets the result. Fixed order: butterfly in each warp, then warps in order.
template <typename T, typename Op>
__device__ T BlockReduce(T v, Op op) {
  __shared__ T warp_results[32];
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1)
    v = op(v, __shfl_xor_sync(0xFFFFFFFFu, v, offset));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();  // warp_results may still be read by a previous call
  if (lane == 0) warp_results[warp] = v;
  __syncthreads();
  T total = warp_results[0];
  for (int w = 1; w < static_cast<int>(blockDim.x >> 5); ++w) total = op(total, warp_results[w]);
  return total;
}

struct Max {
  __device__ float operator()(float a, float b) const { return a > b ? a : b; }
};
struct Sum {
  template <typename T>
  __device__ T operator()(T a, T b) const {
    return a + b;
  }
};

__global__ void EmbeddingKernel(const float* __restrict__ table, const int32_t* __restrict__ tokens,
                                int64_t n, int64_t dim, float* __restrict__ out) {
  const int64_t total = n * dim;
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < total;
       idx += int64_t{gridDim.x} * blockDim.x) {
    const int64_t i = idx / dim, d = idx % dim;
    out[idx] = table[static_cast<int64_t>(tokens[i]) * dim + d];
  }
}

__global__ void RmsNormKernel(const float* __restrict__ x, int64_t dim, const float* __restrict__ w,
                              double eps, float* __restrict__ y) {
  const float* xi = x + blockIdx.x * dim;
  float* yi = y + blockIdx.x * dim;
  double sum_sq = 0;
  for (int64_t d = threadIdx.x; d < dim; d += blockDim.x) {
    sum_sq += static_cast<double>(xi[d]) * xi[d];
  }
  sum_sq = BlockReduce(sum_sq, Sum());
  const float inv_rms = static_cast<float>(1.0 / sqrt(sum_sq / dim + eps));
  for (int64_t d = threadIdx.x; d < dim; d += blockDim.x) yi[d] = xi[d] * inv_rms * w[d];
}

__global__ void RopeKernel(float* x, int64_t n, int64_t heads, int64_t head_dim,
                           const float* __restrict__ cos_rows, const float* __restrict__ sin_rows) {
  const int64_t half = head_dim / 2, total = n * heads * half;
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < total;
       idx += int64_t{gridDim.x} * blockDim.x) {
    const int64_t j = idx % half, head_row = idx / half, i = head_row / heads;
    float* v = x + head_row * head_dim;
    const float c = cos_rows[i * half + j], s = sin_rows[i * half + j];
    const float a = v[j], b = v[j + half];
    v[j] = a * c - b * s;
    v[j + half] = b * c + a * s;
  }
}

// One block per (query row i, head h): scores, softmax and the weighted sum of v.
__global__ void AttentionKernel(const float* __restrict__ q, const float* __restrict__ k_cache,
                                const float* __restrict__ v_cache, int64_t pos, int64_t heads,
                                int64_t kv_heads, int64_t head_dim, int64_t stride,
                                float* __restrict__ scores, float* __restrict__ out) {
  extern __shared__ float q_head[];  // head_dim floats
  const int64_t i = blockIdx.x / heads, h = blockIdx.x % heads;
  const int64_t hidden = heads * head_dim, kv_dim = kv_heads * head_dim;
  const int64_t kv_off = (h / (heads / kv_heads)) * head_dim;
  const int64_t len = pos + i + 1;
  const float* qi = q + i * hidden + h * head_dim;
  float* s = scores + blockIdx.x * stride;
  for (int64_t d = threadIdx.x; d < head_dim; d += blockDim.x) q_head[d] = qi[d];
  __syncthreads();
  const float inv_sqrt_hd = static_cast<float>(1.0 / sqrt(static_cast<double>(head_dim)));
  float local_max = -FLT_MAX;
  for (int64_t t = threadIdx.x; t < len; t += blockDim.x) {
    const float* kt = k_cache + t * kv_dim + kv_off;
    float dot = 0.0f;
    for (int64_t d = 0; d < head_dim; ++d) dot = fmaf(q_head[d], kt[d], dot);
    s[t] = dot * inv_sqrt_hd;
    local_max = fmaxf(local_max, s[t]);
  }
  const float max_score = BlockReduce(local_max, Max());
  double local_sum = 0;
  for (int64_t t = threadIdx.x; t < len; t += blockDim.x) {
    s[t] = expf(s[t] - max_score);
    local_sum += s[t];
  }
  const double sum = BlockReduce(local_sum, Sum());  // also orders the writes to s before reads
  const float inv_sum = static_cast<float>(1.0 / sum);
  for (int64_t d = threadIdx.x; d < head_dim; d += blockDim.x) {
    float acc = 0.0f;
    for (int64_t t = 0; t < len; ++t)
      acc = fmaf(s[t] * inv_sum, v_cache[t * kv_dim + kv_off + d], acc);
    out[i * hidden + h * head_dim + d] = acc;
  }
}

__global__ void SiluMulKernel(float* gate, const float* __restrict__ up, int64_t count) {
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < count;
       idx += int64_t{gridDim.x} * blockDim.x) {
    const float g = gate[idx];
    gate[idx] = g / (1.0f + expf(-g)) * up[idx];
  }
}

__global__ void AddKernel(float* dst, const float* __restrict__ src, int64_t count) {
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < count;
       idx += int64_t{gridDim.x} * blockDim.x) {
    dst[idx] += src[idx];
  }
}

__global__ void AddBiasKernel(float* y, const float* __restrict__ bias, int64_t m, int64_t out) {
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < m * out;
       idx += int64_t{gridDim.x} * blockDim.x) {
    y[idx] += bias[idx % out];
  }
}

// One block per activation row; the same operations as lowbit_scalar.cc's QuantizeInt8Rows.
__global__ void QuantizeInt8Kernel(const float* __restrict__ x, int64_t cols, float* __restrict__ q,
                                   float* __restrict__ xscales) {
  const float* xi = x + blockIdx.x * cols;
  float* qi = q + blockIdx.x * cols;
  float local_max = 0.0f;
  int local_bad = 0;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    const float a = fabsf(xi[c]);
    local_bad |= !(a <= FLT_MAX);  // NaN or infinity
    local_max = fmaxf(local_max, a);
  }
  const float absmax = BlockReduce(local_max, Max());
  const int bad = BlockReduce(local_bad, Sum());
  if (bad != 0 || absmax == 0.0f) {
    if (threadIdx.x == 0) xscales[blockIdx.x] = bad != 0 ? __int_as_float(0x7FC00000) : 0.0f;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) qi[c] = 0.0f;
    return;
  }
  if (threadIdx.x == 0) xscales[blockIdx.x] = __fdiv_rn(absmax, 127.0f);
  const float inv = __fdiv_rn(127.0f, absmax);
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    const float v = rintf(__fmul_rn(xi[c], inv));  // round half to even, as std::nearbyint
    qi[c] = fminf(fmaxf(v, -127.0f), 127.0f);
  }
}

__global__ void ScaleRowsKernel(float* q, const float* __restrict__ xscales, int64_t m,
                                int64_t cols) {
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < m * cols;
       idx += int64_t{gridDim.x} * blockDim.x) {
    q[idx] = __fmul_rn(xscales[idx / cols], q[idx]);
  }
}

cudaStream_t S(void* stream) { return static_cast<cudaStream_t>(stream); }

}  // namespace

int EmbeddingGather(const float* table, const int32_t* tokens, int64_t n, int64_t dim, float* out,
                    void* stream) {
  if (n <= 0 || dim <= 0) return cudaSuccess;
  EmbeddingKernel<<<BlocksFor(n * dim), kThreads, 0, S(stream)>>>(table, tokens, n, dim, out);
  return cudaGetLastError();
}

int RmsNorm(const float* x, int64_t n, int64_t dim, const float* w, double eps, float* y,
            void* stream) {
  if (n <= 0) return cudaSuccess;
  if (n > kMaxGrid) return cudaErrorInvalidValue;
  RmsNormKernel<<<static_cast<unsigned>(n), kThreads, 0, S(stream)>>>(x, dim, w, eps, y);
  return cudaGetLastError();
}

int Rope(float* x, int64_t n, int64_t heads, int64_t head_dim, const float* cos, const float* sin,
         void* stream) {
  const int64_t total = n * heads * (head_dim / 2);
  if (total <= 0) return cudaSuccess;
  RopeKernel<<<BlocksFor(total), kThreads, 0, S(stream)>>>(x, n, heads, head_dim, cos, sin);
  return cudaGetLastError();
}

int Attention(const float* q, const float* k_cache, const float* v_cache, int64_t n, int64_t pos,
              int64_t heads, int64_t kv_heads, int64_t head_dim, float* scores, float* out,
              void* stream) {
  if (n <= 0) return cudaSuccess;
  if (n * heads > kMaxGrid || head_dim * sizeof(float) > 48 * 1024 || kv_heads <= 0 ||
      heads % kv_heads != 0) {
    return cudaErrorInvalidValue;
  }
  AttentionKernel<<<static_cast<unsigned>(n * heads), 128, head_dim * sizeof(float), S(stream)>>>(
      q, k_cache, v_cache, pos, heads, kv_heads, head_dim, pos + n, scores, out);
  return cudaGetLastError();
}

int SiluMul(float* gate, const float* up, int64_t count, void* stream) {
  if (count <= 0) return cudaSuccess;
  SiluMulKernel<<<BlocksFor(count), kThreads, 0, S(stream)>>>(gate, up, count);
  return cudaGetLastError();
}

int AddInPlace(float* dst, const float* src, int64_t count, void* stream) {
  if (count <= 0) return cudaSuccess;
  AddKernel<<<BlocksFor(count), kThreads, 0, S(stream)>>>(dst, src, count);
  return cudaGetLastError();
}

int AddBias(float* y, const float* bias, int64_t m, int64_t out, void* stream) {
  if (m * out <= 0) return cudaSuccess;
  AddBiasKernel<<<BlocksFor(m * out), kThreads, 0, S(stream)>>>(y, bias, m, out);
  return cudaGetLastError();
}

int QuantizeInt8(const float* x, int64_t m, int64_t cols, float* q, float* xscales, void* stream) {
  if (m <= 0) return cudaSuccess;
  if (m > kMaxGrid) return cudaErrorInvalidValue;
  QuantizeInt8Kernel<<<static_cast<unsigned>(m), kThreads, 0, S(stream)>>>(x, cols, q, xscales);
  return cudaGetLastError();
}

int ScaleRows(float* q, const float* xscales, int64_t m, int64_t cols, void* stream) {
  if (m * cols <= 0) return cudaSuccess;
  ScaleRowsKernel<<<BlocksFor(m * cols), kThreads, 0, S(stream)>>>(q, xscales, m, cols);
  return cudaGetLastError();
}

}  // namespace qat::kernels::cuda
