// Packed ternary weights and the CPU kernels that multiply by them.
//
// Format "ternary2" (version 1), 2 bits per weight, 4 weights per byte.
// A weight matrix W has `rows` output rows and `cols` input columns (row-major, like a
// torch Linear weight [out, in]). Each weight is a trit t in {-1, 0, +1}; its stored code is
// c = t + 1 in {0, 1, 2} (code 3 never occurs and is rejected by Validate).
// Each row is cut into blocks of 128 weights; a row occupies RowBytes(cols) = ceil(cols/128)*32
// bytes and rows follow each other with no gap. Inside a block, byte m (0..31) holds the codes of
// the block's weights m, m+32, m+64, m+96 at bits [1:0], [3:2], [5:4], [7:6] respectively.
// Columns past `cols` in the last block are padding with code 1 (trit 0).
// Why this layout: one 32-byte load followed by (v >> 2j) & 3 yields 32 consecutive codes, which
// is what an AVX2 register holds, and it is the same interleave ggml's TQ2_0 uses per half block.
// The real value of a weight is scale[s] * t, where s = 0 for a per-tensor scale (n_scales == 1)
// or s = row for a per-row scale (n_scales == rows).
#pragma once

#include <cstddef>
#include <cstdint>

namespace qat::kernels {

class ThreadPool;

inline constexpr int64_t kTernaryBlock = 128;  // weights per block
inline constexpr int64_t kTernaryBlockBytes = 32;

constexpr int64_t TernaryRowBytes(int64_t cols) {
  return (cols + kTernaryBlock - 1) / kTernaryBlock * kTernaryBlockBytes;
}

// A read-only view of one packed matrix; the memory belongs to the caller.
struct TernaryView {
  int64_t rows = 0;
  int64_t cols = 0;
  const uint8_t* data = nullptr;  // rows * TernaryRowBytes(cols) bytes
  const float* scales = nullptr;  // n_scales floats
  int64_t n_scales = 1;           // 1 (per tensor) or rows (per row)
};

// trits: rows*cols values in {-1,0,1}, row-major. out: rows*TernaryRowBytes(cols) bytes.
void PackTernary(const int8_t* trits, int64_t rows, int64_t cols, uint8_t* out);
// Inverse of PackTernary. Codes of 3 decode as 0 (Validate rejects them first).
void UnpackTernary(const uint8_t* packed, int64_t rows, int64_t cols, int8_t* trits);
// Returns the byte offset of the first invalid byte (a code 3, or non-1 padding), or -1 if valid.
int64_t ValidateTernary(const uint8_t* packed, int64_t rows, int64_t cols);

// Instruction sets a kernel can be built for; Best() is chosen once at run time from cpuid.
enum class Isa { kScalar = 0, kAvx2 = 1, kAvx512 = 2 };
Isa BestIsa();
const char* IsaName(Isa isa);
bool IsaSupported(Isa isa);

// y[r] = scale(r) * sum_c t[r][c] * x[c] for r in [0, rows). x has cols floats.
// pool may be null (single thread). isa must be supported.
void TernaryGemv(const TernaryView& w, const float* x, float* y, Isa isa, ThreadPool* pool);
// Y[i][r] = scale(r) * sum_c t[r][c] * X[i][c], X is m x cols, Y is m x rows (row-major).
void TernaryGemm(const TernaryView& w, const float* x, int64_t m, float* y, Isa isa,
                 ThreadPool* pool);

// Dense fp32 products with the same shapes (W is rows x cols row-major fp32), used for the
// full-precision tensors of a packed model and for full-precision models in the same runtime.
void DenseGemv(const float* w, int64_t rows, int64_t cols, const float* x, float* y, Isa isa,
               ThreadPool* pool);
void DenseGemm(const float* w, int64_t rows, int64_t cols, const float* x, int64_t m, float* y,
               Isa isa, ThreadPool* pool);

}  // namespace qat::kernels
