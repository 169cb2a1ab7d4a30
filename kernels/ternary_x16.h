// Layout "ternary2-x16": ternary2 weights (ternary.h) regrouped 16 rows at a time, for the
// AVX-512 kernels. In memory only: the packed runtime builds it at load time from the file's
// ternary2 bytes on CPUs with AVX-512, and nothing writes it to a file.
//
// Why. Over row-major ternary2, a matrix-vector product decodes every weight to a float and
// multiplies it (ternary_avx512.cc); on 2 cores that is compute-bound at ~6x the fp32 product.
// With 16 rows grouped, one 512-bit load holds a 32-bit word of each of 16 rows, one row per
// lane. Each 4-bit nibble of a word holds the codes of two weights of its row, and the same
// nibble position of all 16 rows belongs to the same two columns c_lo, c_hi. So a 16-entry table
// of the values t_lo * x[c_lo] + t_hi * x[c_hi] for every pair of codes (built once per product
// from x) turns one vpermps into the contribution of 2 columns to 16 rows: 1 lookup + 1 add per
// 32 weights, against 1 decode + 1 FMA per 16 weights row-major (the table-lookup idea of T-MAC,
// with fp32 tables, so nothing is rounded to fewer bits). Products with M > 1 activation rows read
// the same registers the other way: two lookups in constant tables give the trits of columns
// c_lo and c_hi for 16 rows, each multiplied by a broadcast activation for every activation row
// (an outer product); decoding is then shared by all M rows.
//
// Bytes. Rows are taken in groups of 16: group g holds rows 16g .. 16g+15, and a last partial
// group is padded with rows of code 1 (trit 0). Let W = TernaryRowBytes(cols) / 4, the 32-bit
// words of one ternary2 row. Group g occupies W * 64 bytes starting at byte g * W * 64; in it, for
// w = 0 .. W-1 in order, word w of each of its 16 rows in row order: word w of row 16g + l is at
// byte g*W*64 + w*64 + 4*l. Word w of a row is bytes [4w, 4w + 4) of that row's ternary2 bytes,
// unchanged and little-endian, so bits [8i+2j+1 : 8i+2j] (i, j = 0..3) of word w hold the code of
// column 128*(w/8) + 4*(w%8) + i + 32*j. Equivalently, nibble n = 2i + h (bits [4n+3 : 4n]) holds
// the codes of columns c_lo = 128*(w/8) + 4*(w%8) + i + 64*h (bits [1:0] of the nibble) and
// c_hi = c_lo + 32 (bits [3:2]).
#pragma once

#include <cstdint>

#include "kernels/ternary.h"

namespace qat::kernels {

inline constexpr int64_t kTernaryX16Rows = 16;  // rows per group

constexpr int64_t TernaryX16Groups(int64_t rows) {
  return (rows + kTernaryX16Rows - 1) / kTernaryX16Rows;
}
// 32-bit words of a rows x cols matrix in this layout.
constexpr int64_t TernaryX16Words(int64_t rows, int64_t cols) {
  return TernaryX16Groups(rows) * kTernaryX16Rows * (TernaryRowBytes(cols) / 4);
}

// A read-only view like TernaryView, over words in this layout.
struct TernaryX16View {
  int64_t rows = 0;
  int64_t cols = 0;
  const uint32_t* words = nullptr;  // TernaryX16Words(rows, cols) words
  const float* scales = nullptr;    // n_scales floats
  int64_t n_scales = 1;             // 1 (per tensor) or rows (per row)
};

// packed: rows * TernaryRowBytes(cols) ternary2 bytes. words: TernaryX16Words(rows, cols).
void RepackTernaryX16(const uint8_t* packed, int64_t rows, int64_t cols, uint32_t* words);
// The inverse: the ternary2 bytes of the rows (padding rows dropped).
void UnpackTernaryX16(const uint32_t* words, int64_t rows, int64_t cols, uint8_t* packed);

// Whether this CPU runs the layout's AVX-512 kernels. Only then is the layout worth building: on
// other CPUs TernaryX16Gemm runs its scalar reference.
bool TernaryX16Fast();

// Y[i][r] = scale(r) * sum_c t[r][c] * X[i][c], X is m x cols, Y is m x rows (row-major), as
// TernaryGemm. isa kAvx512 (where supported) runs the AVX-512 kernels; any other isa runs the
// scalar reference, which sums in the same order as TernaryGemm's scalar reference (the results
// are bit-identical). Every output's arithmetic is fixed, so results do not depend on the thread
// count; m == 1 (table lookups) and m > 1 (outer products) round differently.
void TernaryX16Gemm(const TernaryX16View& w, const float* x, int64_t m, float* y, Isa isa,
                    ThreadPool* pool);

}  // namespace qat::kernels
