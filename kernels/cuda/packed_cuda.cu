// CUDA GEMV / small-batch GEMM over packed ternary2 and int2/int4 weights (see packed_cuda.h).
//
// Work split (one kernel template for every format): a thread block owns R consecutive weight
// rows and all M (<= 16) activation rows of a pass. The packed rows are cut into 16-byte units
// (a ternary2 half block, an int4 unit of 32 weights, an int2 unit of 64 weights); thread i of
// the block reads units i, i + blockDim.x, ... of each of its R rows with one 16-byte load per
// row, so a warp reads 512 contiguous bytes of every row (coalesced, each byte once), decodes a
// unit once and uses it for all M activation rows. R = 16 / M (at most 4) keeps R * M
// accumulators per thread. Sums are reduced by a fixed butterfly within the warp, then across
// warps in warp order, so results do not change from run to run.
//
// Decoding without shifts or int->float conversions: a code c of `width` bits at bit p of a
// 16-bit half word, masked in place and OR-ed into the bits of the float 2^(23-p), gives the float
// 2^(23-p) + c exactly (c lands on the mantissa bits worth 2^0); subtracting 2^(23-p) leaves c.
// With p + width <= 16 that is one logic op and one add per weight before the FMAs.
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/packed_cuda.h"

namespace qat::kernels::cuda {
namespace {

constexpr int kMaxWarps = 4;  // warps per thread block at most
constexpr int kUnitBytes = 16;

// Float bits of 2^(23 - p): exponent field 127 + 23 - p.
__host__ __device__ constexpr uint32_t MagicBits(int p) {
  return static_cast<uint32_t>(150 - p) << 23;
}

// The code of `mask` bits at bit p of word w, minus `offset`, as a float. The code is first moved
// into a 16-bit half so that p + width <= 16. Called with constant p and offset from unrolled
// loops, so the branch, the shifts and 2^(23-q) + offset fold into constants.
__device__ __forceinline__ float CodeAt(uint32_t w, int p, uint32_t mask, float offset = 0.0f) {
  const uint32_t half = p >= 16 ? (w >> 16) : w;
  const int q = p >= 16 ? p - 16 : p;
  return __uint_as_float((half & (mask << q)) | MagicBits(q)) -
         (__uint_as_float(MagicBits(q)) + offset);
}

// 16 activations starting at column `col` of one row as floats; columns >= cols are 0. `aligned`:
// the row start is 16-byte aligned (col is a multiple of 16), so whole vectors can be loaded.
__device__ __forceinline__ void LoadX16(const float* row, int64_t col, int64_t cols, bool aligned,
                                        float* out) {
  if (aligned && col + 16 <= cols) {
    const float4* v = reinterpret_cast<const float4*>(row + col);
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
    for (int i = 0; i < 16; ++i) out[i] = col + i < cols ? __ldg(row + col + i) : 0.0f;
  }
}

// The same for bf16 activations (raw 16-bit values: the upper half of an fp32).
__device__ __forceinline__ void LoadX16(const uint16_t* row, int64_t col, int64_t cols,
                                        bool aligned, float* out) {
  if (aligned && col + 16 <= cols) {
    const uint4* v = reinterpret_cast<const uint4*>(row + col);
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
      out[i] = col + i < cols ? __uint_as_float(static_cast<uint32_t>(__ldg(row + col + i)) << 16)
                              : 0.0f;
    }
  }
}

// ----- Formats: how one 16-byte unit of R rows adds to the accumulators -----
// Accumulate(words, unit, rows, x, cols, aligned, xrow, acc): words[r][k] is word k of the unit of
// weight row rows[r]; activation row i of the pass is x + xrow[i] * cols (rows past m repeat the
// last one and are never written). Each unit is decoded once and used for every activation row.
// Pass(i0) gives the format for the pass starting at activation row i0.

struct Ternary2Format {
  const float* scales;
  bool per_row_scale;
  const float* xscales;  // null: no activation scale

  Ternary2Format Pass(int64_t i0) const {
    return {scales, per_row_scale, xscales == nullptr ? nullptr : xscales + i0};
  }

  // Unit u is half block u: block u / 2, bytes 16 * (u % 2) + [0, 16); byte m of the block holds
  // the codes of columns 128 * block + 32 j + m at bits 2j. Word k holds bytes 4k..4k+3, so for
  // each j the unit covers the 16 columns col0 + 32 j + [0, 16), column 4k + b in byte b of word k.
  template <typename XT, int M, int R>
  __device__ __forceinline__ void Accumulate(const uint32_t (&words)[R][4], int64_t unit,
                                             const int64_t (&)[R], const XT* x, int64_t cols,
                                             const bool (&aligned)[M], const int (&xrow)[M],
                                             float (&acc)[R][M]) const {
    const int64_t col0 = (unit >> 1) * 128 + 16 * (unit & 1);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      float t[R][16];
#pragma unroll
      for (int r = 0; r < R; ++r) {
#pragma unroll
        for (int c = 0; c < 16; ++c)
          t[r][c] = CodeAt(words[r][c / 4], 8 * (c % 4) + 2 * j, 3u, 1.0f);
      }
#pragma unroll
      for (int i = 0; i < M; ++i) {
        float xs[16];
        LoadX16(x + xrow[i] * cols, col0 + 32 * j, cols, aligned[i], xs);
#pragma unroll
        for (int r = 0; r < R; ++r) {
#pragma unroll
          for (int c = 0; c < 16; ++c) acc[r][i] = fmaf(t[r][c], xs[c], acc[r][i]);
        }
      }
    }
  }
  __device__ __forceinline__ float Finish(int64_t row, int i, float sum) const {
    const float s = per_row_scale ? scales[row] : scales[0];
    return xscales == nullptr ? s * sum : (s * xscales[i]) * sum;
  }
};

template <int kBits>
struct IntKFormat {
  const float* scales;
  const float* zeros;
  int64_t group;
  int64_t groups_per_row;

  IntKFormat Pass(int64_t) const { return *this; }

  // Adds scale * (sum q x - zero * sum x) over two runs of 16 columns starting at col_begin, all
  // in one group; code(r, run, c) is the code of column col_begin + 16 run + c of row rows[r].
  template <typename XT, int M, int R, typename Code>
  __device__ __forceinline__ void GroupPart(int64_t col_begin, const int64_t (&rows)[R],
                                            const XT* x, int64_t cols, const bool (&aligned)[M],
                                            const int (&xrow)[M], Code code,
                                            float (&acc)[R][M]) const {
    float sq[R][M] = {};
    float sx[M] = {};
#pragma unroll
    for (int run = 0; run < 2; ++run) {
      float q[R][16];
#pragma unroll
      for (int r = 0; r < R; ++r) {
#pragma unroll
        for (int c = 0; c < 16; ++c) q[r][c] = code(r, run, c);
      }
#pragma unroll
      for (int i = 0; i < M; ++i) {
        float xs[16];
        LoadX16(x + xrow[i] * cols, col_begin + 16 * run, cols, aligned[i], xs);
#pragma unroll
        for (int c = 0; c < 16; ++c) sx[i] += xs[c];
#pragma unroll
        for (int r = 0; r < R; ++r) {
#pragma unroll
          for (int c = 0; c < 16; ++c) sq[r][i] = fmaf(q[r][c], xs[c], sq[r][i]);
        }
      }
    }
    const int64_t g = col_begin / group;
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const float s = __ldg(scales + rows[r] * groups_per_row + g);
      const float z = __ldg(zeros + rows[r] * groups_per_row + g);
#pragma unroll
      for (int i = 0; i < M; ++i) acc[r][i] = fmaf(s, sq[r][i] - z * sx[i], acc[r][i]);
    }
  }

  // int4: unit u holds columns 32u + m (bits [3:0] of byte m) and 32u + 16 + m (bits [7:4]), in
  // one group (groups are multiples of 32). int2: unit u holds columns 64u + m + 16 j at bits 2j
  // of byte m; its two halves of 32 columns may lie in different groups (group 32).
  template <typename XT, int M, int R>
  __device__ __forceinline__ void Accumulate(const uint32_t (&words)[R][4], int64_t unit,
                                             const int64_t (&rows)[R], const XT* x, int64_t cols,
                                             const bool (&aligned)[M], const int (&xrow)[M],
                                             float (&acc)[R][M]) const {
    if (kBits == 4) {
      auto code = [&](int r, int run, int c) {
        return CodeAt(words[r][c / 4], 8 * (c % 4) + 4 * run, 0xFu);
      };
      GroupPart<XT, M, R>(unit * 32, rows, x, cols, aligned, xrow, code, acc);
    } else {
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int64_t col_begin = unit * 64 + 32 * half;
        if (col_begin >= cols) break;  // padding only: no group to read
        auto code = [&](int r, int run, int c) {
          return CodeAt(words[r][c / 4], 8 * (c % 4) + 2 * (2 * half + run), 3u);
        };
        GroupPart<XT, M, R>(col_begin, rows, x, cols, aligned, xrow, code, acc);
      }
    }
  }
  __device__ __forceinline__ float Finish(int64_t, int, float sum) const { return sum; }
};

template <typename Format, typename XT, int M, int R>
__global__ void __launch_bounds__(32 * kMaxWarps)
    PackedGemmKernel(Format format, const uint8_t* __restrict__ packed, int64_t rows, int64_t cols,
                     int64_t row_bytes, const XT* __restrict__ x, int m, float* __restrict__ y) {
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * R;
  const int64_t units = row_bytes / kUnitBytes;
  // Rows past the end read row0 again (always valid) and are not written.
  int64_t row_index[R];
  const uint4* row_ptr[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    row_index[r] = row0 + r < rows ? row0 + r : row0;
    row_ptr[r] = reinterpret_cast<const uint4*>(packed + row_index[r] * row_bytes);
  }
  int xrow[M];
  bool aligned[M];
#pragma unroll
  for (int i = 0; i < M; ++i) {
    xrow[i] = i < m ? i : m - 1;
    aligned[i] = (reinterpret_cast<uintptr_t>(x + xrow[i] * cols) & 15) == 0;
  }
  float acc[R][M] = {};
  for (int64_t u = threadIdx.x; u < units; u += blockDim.x) {
    uint32_t words[R][4];
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const uint4 v = __ldg(row_ptr[r] + u);
      words[r][0] = v.x;
      words[r][1] = v.y;
      words[r][2] = v.z;
      words[r][3] = v.w;
    }
    format.template Accumulate<XT, M, R>(words, u, row_index, x, cols, aligned, xrow, acc);
  }
  // Fixed-order reductions: butterfly within the warp, then warps in order.
  __shared__ float partial[kMaxWarps][R][M];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int r = 0; r < R; ++r) {
#pragma unroll
    for (int i = 0; i < M; ++i) {
      float v = acc[r][i];
#pragma unroll
      for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xFFFFFFFFu, v, offset);
      if (lane == 0) partial[warp][r][i] = v;
    }
  }
  __syncthreads();
  const int warps = static_cast<int>(blockDim.x >> 5);
  for (int idx = threadIdx.x; idx < R * M; idx += blockDim.x) {
    const int r = idx / M, i = idx % M;
    if (row0 + r >= rows || i >= m) continue;
    float sum = 0.0f;
    for (int w = 0; w < warps; ++w) sum += partial[w][r][i];
    y[static_cast<int64_t>(i) * rows + row0 + r] = format.Finish(row0 + r, i, sum);
  }
}

bool Aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

template <typename Format, typename XT, int M>
cudaError_t LaunchM(const Format& format, const uint8_t* packed, int64_t rows, int64_t cols,
                    int64_t row_bytes, const XT* x, int m, float* y, cudaStream_t stream) {
  constexpr int R = M >= 16 ? 1 : (M >= 8 ? 2 : 4);
  const int64_t blocks = (rows + R - 1) / R;
  if (blocks > 0x7FFFFFFF) return cudaErrorInvalidValue;  // grid x limit
  const int64_t units = row_bytes / kUnitBytes;
  // One warp per 32 units of a row (512 bytes), up to kMaxWarps.
  const int64_t warps = units / 32 >= kMaxWarps ? kMaxWarps : (units + 31) / 32;
  PackedGemmKernel<Format, XT, M, R>
      <<<static_cast<unsigned>(blocks), static_cast<unsigned>(32 * warps), 0, stream>>>(
          format, packed, rows, cols, row_bytes, x, m, y);
  return cudaGetLastError();
}

// Runs passes of up to 16 activation rows, each with the smallest instantiated M >= its rows.
template <typename Format, typename XT>
cudaError_t LaunchAll(const Format& all, const uint8_t* packed, int64_t rows, int64_t cols,
                      int64_t row_bytes, const XT* x, int64_t m, float* y, cudaStream_t stream) {
  for (int64_t i0 = 0; i0 < m; i0 += kMaxBatchRows) {
    const int pass = static_cast<int>(m - i0 < kMaxBatchRows ? m - i0 : kMaxBatchRows);
    const XT* xp = x + i0 * cols;
    float* yp = y + i0 * rows;
    const Format format = all.Pass(i0);
    cudaError_t e;
    if (pass == 1) {
      e = LaunchM<Format, XT, 1>(format, packed, rows, cols, row_bytes, xp, pass, yp, stream);
    } else if (pass == 2) {
      e = LaunchM<Format, XT, 2>(format, packed, rows, cols, row_bytes, xp, pass, yp, stream);
    } else if (pass <= 4) {
      e = LaunchM<Format, XT, 4>(format, packed, rows, cols, row_bytes, xp, pass, yp, stream);
    } else if (pass <= 8) {
      e = LaunchM<Format, XT, 8>(format, packed, rows, cols, row_bytes, xp, pass, yp, stream);
    } else {
      e = LaunchM<Format, XT, 16>(format, packed, rows, cols, row_bytes, xp, pass, yp, stream);
    }
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

}  // namespace

int TernaryGemm(const TernaryView& w, const void* x, int64_t m, Activation x_type,
                const float* xscales, float* y, void* stream) {
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (m < 0) return cudaErrorInvalidValue;
  if (w.rows <= 0 || m == 0) return cudaSuccess;
  if (y == nullptr) return cudaErrorInvalidValue;
  if (w.cols <= 0) return cudaMemsetAsync(y, 0, m * w.rows * sizeof(float), s);  // empty sums
  if (w.data == nullptr || w.scales == nullptr || x == nullptr) return cudaErrorInvalidValue;
  if (w.n_scales != 1 && w.n_scales != w.rows) return cudaErrorInvalidValue;
  if (!Aligned16(w.data)) return cudaErrorInvalidValue;
  const Ternary2Format format{w.scales, w.n_scales == w.rows && w.rows != 1, xscales};
  const int64_t row_bytes = TernaryRowBytes(w.cols);
  if (x_type == Activation::kBFloat16) {
    return LaunchAll(format, w.data, w.rows, w.cols, row_bytes, static_cast<const uint16_t*>(x), m,
                     y, s);
  }
  return LaunchAll(format, w.data, w.rows, w.cols, row_bytes, static_cast<const float*>(x), m, y,
                   s);
}

int IntKGemm(const IntKView& w, const void* x, int64_t m, Activation x_type, float* y,
             void* stream) {
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (m < 0 || !IntKLayoutSupported(w.bits, w.group)) return cudaErrorInvalidValue;
  if (w.rows <= 0 || m == 0) return cudaSuccess;
  if (y == nullptr) return cudaErrorInvalidValue;
  if (w.cols <= 0) return cudaMemsetAsync(y, 0, m * w.rows * sizeof(float), s);
  if (w.data == nullptr || w.scales == nullptr || w.zeros == nullptr || x == nullptr) {
    return cudaErrorInvalidValue;
  }
  if (!Aligned16(w.data)) return cudaErrorInvalidValue;
  const int64_t row_bytes = IntKRowBytes(w.bits, w.cols);
  const int64_t groups = IntKGroupsPerRow(w.group, w.cols);
  const bool bf16 = x_type == Activation::kBFloat16;
  if (w.bits == 4) {
    const IntKFormat<4> format{w.scales, w.zeros, w.group, groups};
    return bf16 ? LaunchAll(format, w.data, w.rows, w.cols, row_bytes,
                            static_cast<const uint16_t*>(x), m, y, s)
                : LaunchAll(format, w.data, w.rows, w.cols, row_bytes, static_cast<const float*>(x),
                            m, y, s);
  }
  const IntKFormat<2> format{w.scales, w.zeros, w.group, groups};
  return bf16 ? LaunchAll(format, w.data, w.rows, w.cols, row_bytes,
                          static_cast<const uint16_t*>(x), m, y, s)
              : LaunchAll(format, w.data, w.rows, w.cols, row_bytes, static_cast<const float*>(x),
                          m, y, s);
}

const char* ErrorName(int error) { return cudaGetErrorName(static_cast<cudaError_t>(error)); }
const char* ErrorString(int error) { return cudaGetErrorString(static_cast<cudaError_t>(error)); }

}  // namespace qat::kernels::cuda
