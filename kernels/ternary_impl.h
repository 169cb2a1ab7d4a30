// Internal: the per-instruction-set kernels behind the dispatch in ternary.cc.
//
// Every namespace (scalar, avx2, avx512) implements the same functions. Each computes the output
// rows [row_begin, row_end) only, so the dispatcher can split rows over threads; the arithmetic of
// one output row never depends on how rows were split, which keeps results reproducible for any
// thread count. Only ternary.cc calls these, and only after checking IsaSupported.
#pragma once

#include <cstdint>

#include "kernels/ternary.h"
#include "kernels/ternary_x16.h"

namespace qat::kernels {

// Column chunk of the GEMM kernels: a tile of weights is decoded (or read) this many columns at a
// time, and each output is the in-order sum of its per-chunk dot products. Fixed, so the
// summation order of an output does not depend on the row split. A multiple of kTernaryBlock.
inline constexpr int64_t kGemmColumnChunk = 1024;
// Activation row counts up to this run the AVX-512 ternary GEMM straight from the packed bytes
// (passes of 4 rows, trits decoded in registers); larger ones decode tiles to floats and reuse the
// dense tile kernel, which amortizes decoding over many rows.
inline constexpr int64_t kGemmSmallBatch = 16;
// Rows decoded together by the ternary GEMM (so a tile is reused by every activation row while
// it sits in cache); the dispatcher uses it as the row grain.
inline constexpr int64_t kGemmRowTile = 32;

#define QAT_DECLARE_TERNARY_KERNELS                                                              \
  void TernaryGemvRows(const TernaryView& w, const float* x_padded, float* y, int64_t row_begin, \
                       int64_t row_end);                                                         \
  void TernaryGemmRows(const TernaryView& w, const float* x, int64_t m, float* y,                \
                       int64_t row_begin, int64_t row_end);                                      \
  void DenseGemvRows(const float* w, int64_t cols, const float* x, float* y, int64_t row_begin,  \
                     int64_t row_end);                                                           \
  void DenseGemmRows(const float* w, int64_t rows, int64_t cols, const float* x, int64_t m,      \
                     float* y, int64_t row_begin, int64_t row_end);

// TernaryGemvRows reads x_padded: x copied by the dispatcher into TernaryRowBytes(cols) * 4
// floats, zero past cols, so the SIMD kernels can read whole blocks and padding columns contribute
// exactly nothing whatever their code.
//
// A code of 3 (rejected by ValidateTernary) counts as trit 0 in every kernel, as in UnpackTernary,
// so all variants agree even on unvalidated data.
//
// The reference: plain loops in the order a reader would write them; it reads x_padded[0, cols).
namespace scalar {
QAT_DECLARE_TERNARY_KERNELS
}  // namespace scalar

// AVX2 + FMA (ternary_avx2.cc, compiled with -mavx2 -mfma -mf16c).
namespace avx2 {
QAT_DECLARE_TERNARY_KERNELS
}  // namespace avx2

// AVX-512 F/BW/VL/DQ (ternary_avx512.cc).
namespace avx512 {
QAT_DECLARE_TERNARY_KERNELS
}  // namespace avx512

#undef QAT_DECLARE_TERNARY_KERNELS

// Scale of output row r of a view (TernaryView or TernaryX16View): per tensor or per row.
template <typename View>
float TernaryRowScale(const View& w, int64_t r) {
  return w.n_scales == 1 ? w.scales[0] : w.scales[r];
}

// ternary2-x16 (ternary_x16.h). Row ranges start at a multiple of kTernaryX16Rows; x_padded holds
// m rows of TernaryRowBytes(cols) * 4 floats, zero past cols.
namespace scalar {  // ternary_x16.cc: the reference, in TernaryGemmRows' summation order
void TernaryX16GemmRows(const TernaryX16View& w, const float* x_padded, int64_t m, float* y,
                        int64_t row_begin, int64_t row_end);
}  // namespace scalar
namespace avx512 {  // ternary_x16_avx512.cc
// The GEMV's lookup tables: 8 tables of 16 floats per 32-bit word of a row, in word order
// (TernaryRowBytes(cols) * 32 floats), from one activation row.
void BuildTernaryX16Tables(const float* x_padded, int64_t cols, float* tables);
void TernaryX16GemvRows(const TernaryX16View& w, const float* tables, float* y, int64_t row_begin,
                        int64_t row_end);
void TernaryX16GemmRows(const TernaryX16View& w, const float* x_padded, int64_t m, float* y,
                        int64_t row_begin, int64_t row_end);
}  // namespace avx512

}  // namespace qat::kernels
