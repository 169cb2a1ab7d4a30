// CUDA ternary GEMV over the ternary2 layout (see kernels/ternary.h and ternary_cuda.h).
//
// Work split: a thread block owns kRowsPerGroup consecutive rows, and its warps split those rows'
// 16-byte half blocks: thread i of the block reads half blocks i, i + blockDim.x, ... of each row
// with one 16-byte load per row, so a warp reads 512 contiguous bytes of every row (coalesced),
// and each activation the thread loads is reused for all kRowsPerGroup rows. Per-thread sums are
// reduced by a fixed butterfly within the warp and then across warps in warp order, so results
// do not change from run to run.
//
// Decoding without shifts or conversions: a 16-byte half block is four 32-bit words; word q holds
// bytes m = 4q..4q+3 of the block, and byte m holds the codes of columns m + 32j at bits
// [2j+1:2j]. A code c at bit p of a word, masked in place and OR-ed into the bits of the float
// 2^(23-p), gives the float 2^(23-p) + c exactly (c lands on the mantissa bits worth 2^0);
// subtracting 2^(23-p) + 1 leaves t = c - 1. With p <= 14 (the upper half-word is shifted down
// once), that is one logic op and one add per weight before the FMA.
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/ternary_cuda.h"

namespace qat::kernels::cuda {
namespace {

constexpr int kRowsPerGroup = 4;  // rows per thread block, sharing each activation load
constexpr int kMaxWarps = 4;      // warps per thread block at most
constexpr int kHalfBlockBytes = 16;

// Float bits of 2^(23 - p): exponent field 127 + 23 - p.
__host__ __device__ constexpr uint32_t MagicBits(int p) {
  return static_cast<uint32_t>(150 - p) << 23;
}

// Trit of the code at bit p of `word` (p even, p <= 14), as an exact float.
template <int p>
__device__ __forceinline__ float TritAt(uint32_t word) {
  const float biased = __uint_as_float((word & (3u << p)) | MagicBits(p));
  return biased - (static_cast<float>(1u << (23 - p)) + 1.0f);
}

// 16 activations starting at column `col` (a multiple of 16) as floats; columns >= cols are 0.
__device__ __forceinline__ void LoadX16(const float* x, int64_t col, int64_t cols, float* out) {
  if (col + 16 <= cols) {
    const float4* v = reinterpret_cast<const float4*>(x + col);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float4 f = __ldg(v + i);
      out[4 * i] = f.x;
      out[4 * i + 1] = f.y;
      out[4 * i + 2] = f.z;
      out[4 * i + 3] = f.w;
    }
  } else {
#pragma unroll
    for (int i = 0; i < 16; ++i) out[i] = col + i < cols ? __ldg(x + col + i) : 0.0f;
  }
}

// The same for bf16 activations (raw 16-bit values: the upper half of an fp32).
__device__ __forceinline__ void LoadX16(const uint16_t* x, int64_t col, int64_t cols, float* out) {
  if (col + 16 <= cols) {
    const uint4* v = reinterpret_cast<const uint4*>(x + col);
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const uint4 u = __ldg(v + i);
      const uint32_t words[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        out[8 * i + 2 * k] = __uint_as_float(words[k] << 16);
        out[8 * i + 2 * k + 1] = __uint_as_float(words[k] & 0xFFFF0000u);
      }
    }
  } else {
#pragma unroll
    for (int i = 0; i < 16; ++i) {
      out[i] =
          col + i < cols ? __uint_as_float(static_cast<uint32_t>(__ldg(x + col + i)) << 16) : 0.0f;
    }
  }
}

// acc += sum over the 16 columns of group j held by `word` (word q of the half block) of t * x.
// Byte k of the word is column 4q + k of the 16 activations in xs.
template <int j>
__device__ __forceinline__ float WordDot(uint32_t word, const float* xs, float acc) {
  const uint32_t upper = word >> 16;  // bytes 2 and 3, so every code sits at bit <= 14
  acc = fmaf(TritAt<2 * j>(word), xs[0], acc);
  acc = fmaf(TritAt<8 + 2 * j>(word), xs[1], acc);
  acc = fmaf(TritAt<2 * j>(upper), xs[2], acc);
  acc = fmaf(TritAt<8 + 2 * j>(upper), xs[3], acc);
  return acc;
}

template <int j>
__device__ __forceinline__ void GroupDot(const uint4 (&packed)[kRowsPerGroup], const float* xs,
                                         float (&acc)[kRowsPerGroup]) {
#pragma unroll
  for (int r = 0; r < kRowsPerGroup; ++r) {
    acc[r] = WordDot<j>(packed[r].x, xs, acc[r]);
    acc[r] = WordDot<j>(packed[r].y, xs + 4, acc[r]);
    acc[r] = WordDot<j>(packed[r].z, xs + 8, acc[r]);
    acc[r] = WordDot<j>(packed[r].w, xs + 12, acc[r]);
  }
}

template <typename XT>
__global__ void __launch_bounds__(32 * kMaxWarps)
    TernaryGemvKernel(const uint8_t* __restrict__ packed, int64_t rows, int64_t cols,
                      int64_t row_bytes, const float* __restrict__ scales, bool per_row_scale,
                      const XT* __restrict__ x, float* __restrict__ y) {
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kRowsPerGroup;
  const int64_t halves = row_bytes / kHalfBlockBytes;
  // Rows past the end read row0 again (always valid) and are not written.
  const uint8_t* row_ptr[kRowsPerGroup];
#pragma unroll
  for (int r = 0; r < kRowsPerGroup; ++r) {
    row_ptr[r] = packed + (row0 + r < rows ? row0 + r : row0) * row_bytes;
  }
  float acc[kRowsPerGroup] = {};
  for (int64_t hb = threadIdx.x; hb < halves; hb += blockDim.x) {
    uint4 words[kRowsPerGroup];
#pragma unroll
    for (int r = 0; r < kRowsPerGroup; ++r) {
      words[r] = __ldg(reinterpret_cast<const uint4*>(row_ptr[r]) + hb);
    }
    // Half block hb: block hb / 2, bytes 16 * (hb % 2) + [0, 16) -> columns of group j are
    // 128 * block + 32 * j + 16 * (hb % 2) + [0, 16).
    const int64_t col0 = (hb >> 1) * 128 + 16 * (hb & 1);
    float xs[16];
    LoadX16(x, col0, cols, xs);
    GroupDot<0>(words, xs, acc);
    LoadX16(x, col0 + 32, cols, xs);
    GroupDot<1>(words, xs, acc);
    LoadX16(x, col0 + 64, cols, xs);
    GroupDot<2>(words, xs, acc);
    LoadX16(x, col0 + 96, cols, xs);
    GroupDot<3>(words, xs, acc);
  }
  // Fixed-order reductions: butterfly within the warp, then warps in order.
  __shared__ float partial[kMaxWarps][kRowsPerGroup];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int r = 0; r < kRowsPerGroup; ++r) {
    float v = acc[r];
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xFFFFFFFFu, v, offset);
    if (lane == 0) partial[warp][r] = v;
  }
  __syncthreads();
  if (threadIdx.x < kRowsPerGroup && row0 + threadIdx.x < rows) {
    const int64_t r = row0 + threadIdx.x;
    float sum = 0.0f;
    for (int w = 0; w < static_cast<int>(blockDim.x >> 5); ++w) sum += partial[w][threadIdx.x];
    y[r] = (per_row_scale ? scales[r] : scales[0]) * sum;
  }
}

bool Aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

}  // namespace

int TernaryGemv(const TernaryView& w, const void* x, Activation x_type, float* y, void* stream) {
  if (w.rows <= 0) return cudaSuccess;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (y == nullptr) return cudaErrorInvalidValue;
  if (w.cols <= 0) return cudaMemsetAsync(y, 0, w.rows * sizeof(float), s);  // empty sums
  if (w.data == nullptr || w.scales == nullptr || x == nullptr) return cudaErrorInvalidValue;
  if (w.n_scales != 1 && w.n_scales != w.rows) return cudaErrorInvalidValue;
  if (!Aligned16(w.data) || !Aligned16(x)) return cudaErrorInvalidValue;
  const int64_t groups = (w.rows + kRowsPerGroup - 1) / kRowsPerGroup;
  if (groups > 0x7FFFFFFF) return cudaErrorInvalidValue;  // grid x limit
  const int64_t row_bytes = TernaryRowBytes(w.cols);
  const int64_t halves = row_bytes / kHalfBlockBytes;
  // One warp per 32 half blocks of a row (512 bytes), up to kMaxWarps.
  const int64_t warps = halves / 32 >= kMaxWarps ? kMaxWarps : (halves + 31) / 32;
  const dim3 grid(static_cast<unsigned>(groups));
  const dim3 block(static_cast<unsigned>(32 * warps));
  const bool per_row = w.n_scales == w.rows && w.rows != 1;
  if (x_type == Activation::kBFloat16) {
    TernaryGemvKernel<uint16_t><<<grid, block, 0, s>>>(w.data, w.rows, w.cols, row_bytes, w.scales,
                                                       per_row, static_cast<const uint16_t*>(x), y);
  } else {
    TernaryGemvKernel<float><<<grid, block, 0, s>>>(w.data, w.rows, w.cols, row_bytes, w.scales,
                                                    per_row, static_cast<const float*>(x), y);
  }
  return cudaGetLastError();
}

const char* ErrorName(int error) { return cudaGetErrorName(static_cast<cudaError_t>(error)); }
const char* ErrorString(int error) { return cudaGetErrorString(static_cast<cudaError_t>(error)); }

}  // namespace qat::kernels::cuda
