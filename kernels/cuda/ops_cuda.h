// The CUDA kernels of the packed runtime besides the packed products (packed_cuda.h): embedding
// lookup, RMSNorm, RoPE, causal attention over a KV cache, SiLU, residual adds, biases, and the
// int8 per-token activation quantization of runtime.h. fp32 throughout, row-major, device
// pointers, queued on `stream` (a cudaStream_t as void*). Each returns 0 or a cudaError_t value
// (launch errors; cudaErrorInvalidValue for sizes a launch cannot cover).
//
// They compute the math of runtime.h in the same order as the CPU runtime (kernels/runtime.cc)
// where that matters for exactness: the int8 quantization gives the CPU's bits; RMSNorm sums
// squares in double; softmax sums in double.
#pragma once

#include <cstdint>

namespace qat::kernels::cuda {

// out[i] = table[tokens[i]] (dim floats each). Token ids must be in range (checked on the host).
int EmbeddingGather(const float* table, const int32_t* tokens, int64_t n, int64_t dim, float* out,
                    void* stream);
// y = x / sqrt(mean(x^2) + eps) * w for n rows of dim.
int RmsNorm(const float* x, int64_t n, int64_t dim, const float* w, double eps, float* y,
            void* stream);
// Rotates n rows of `heads` heads of head_dim in place ("rotate half"), row i by the angles
// cos/sin [n x head_dim/2] of its position (RopeRows, runtime_internal.h).
int Rope(float* x, int64_t n, int64_t heads, int64_t head_dim, const float* cos, const float* sin,
         void* stream);
// out (n x heads*head_dim) = causal softmax(q k^T / sqrt(head_dim)) v: query row i (position
// pos + i) attends to cache rows 0..pos+i; query head h reads kv head h / (heads / kv_heads).
// k_cache, v_cache: rows of kv_heads*head_dim. scores: scratch of n * heads * (pos + n) floats.
int Attention(const float* q, const float* k_cache, const float* v_cache, int64_t n, int64_t pos,
              int64_t heads, int64_t kv_heads, int64_t head_dim, float* scores, float* out,
              void* stream);
// gate[i] = silu(gate[i]) * up[i] = gate / (1 + exp(-gate)) * up.
int SiluMul(float* gate, const float* up, int64_t count, void* stream);
// dst[i] += src[i].
int AddInPlace(float* dst, const float* src, int64_t count, void* stream);
// y[i * out + r] += bias[r] for m rows.
int AddBias(float* y, const float* bias, int64_t m, int64_t out, void* stream);
// Per row of x (m x cols): xscales[i] = absmax / 127 and q = round_half_even(x * (127 / absmax))
// clamped to [-127, 127], written as exact floats (all-zero row: scale 0, q 0; a row with a NaN
// or infinity: scale NaN, q 0), the bits of QuantizeActivationsInt8 (lowbit.h).
int QuantizeInt8(const float* x, int64_t m, int64_t cols, float* q, float* xscales, void* stream);
// q[i][c] = xscales[i] * q[i][c] in place: the fp32 activations x' of runtime.h's int8 rule.
int ScaleRows(float* q, const float* xscales, int64_t m, int64_t cols, void* stream);

}  // namespace qat::kernels::cuda
