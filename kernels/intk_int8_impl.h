// Internal: the per-instruction-set kernels behind the dispatch in intk_int8.cc (layouts and
// arithmetic in intk_int8.h).
//
// IntKX16Rows computes the outputs of the tiles [tile_begin, tile_end) (rows 16 * tile_begin ..
// min(rows, 16 * tile_end) - 1) for m activation rows. It reads:
//   x_padded  m rows of IntKX16Chunks(bits, cols) * IntKX16ChunkCols(bits) int8 each: xq copied,
//             zero past cols (so padding codes meet zeros and every chunk is whole);
//   xsums     m rows of IntKGroupsPerRow(group, cols) int32: s[i][g], the sum of row i's codes
//             over group g;
//   xscales   m floats;
// and writes y[i * rows + r]. Every variant computes each output with the float operations of
// intk_int8.h in that order, so results are bit-identical and do not depend on the tile split.
// Only intk_int8.cc calls these, after checking IsaSupported (and CpuHasAvx512Vnni for avx512)
// and the view.
#pragma once

#include <cstdint>

#include "kernels/intk_int8.h"

namespace qat::kernels {

#define QAT_DECLARE_INTK_X16_KERNELS                                                   \
  void IntKX16Rows(const IntKX16View& w, const int8_t* x_padded, const int32_t* xsums, \
                   const float* xscales, int64_t m, float* y, int64_t tile_begin,      \
                   int64_t tile_end);

// The reference (intk_int8_scalar.cc): plain loops, std::fma.
namespace scalar {
QAT_DECLARE_INTK_X16_KERNELS
}  // namespace scalar

// AVX2 + FMA (intk_int8_avx2.cc): vpmaddubsw + vpmaddwd on 8-row halves of a tile.
namespace avx2 {
QAT_DECLARE_INTK_X16_KERNELS
}  // namespace avx2

// AVX-512 F/BW/VL + VNNI (intk_int8_avx512.cc): runs only when CpuHasAvx512Vnni().
namespace avx512 {
QAT_DECLARE_INTK_X16_KERNELS
}  // namespace avx512

#undef QAT_DECLARE_INTK_X16_KERNELS

// In an unnamed namespace on purpose (as lowbit_impl.h): each translation unit gets its own copy,
// compiled for its own instruction set.
namespace {

// Code of column c (0 <= c < chunks * chunk columns) of row r in the layout, chunks = C.
inline int IntKX16CodeAt(const uint8_t* data, int bits, int64_t chunks, int64_t r, int64_t c) {
  const int64_t cc = IntKX16ChunkCols(bits);
  const int64_t k = c / cc, in_chunk = c % cc;
  const uint8_t* chunk = data + (r / kIntKX16Rows * chunks + k) * kIntKX16ChunkBytes;
  const int l = static_cast<int>(r % kIntKX16Rows);
  if (bits == 4) {
    const uint8_t b = chunk[4 * l + in_chunk % 4];
    return in_chunk < 4 ? (b & 0xF) : (b >> 4);
  }
  const uint8_t b = chunk[4 * l + in_chunk % 4];
  return (b >> (2 * (in_chunk / 4))) & 3;
}

// Index of the scale (or zero) of row r, group g, in the layout (G groups per row).
inline int64_t IntKX16ParamIndex(int64_t r, int64_t g, int64_t groups) {
  return (r / kIntKX16Rows * groups + g) * kIntKX16Rows + r % kIntKX16Rows;
}

}  // namespace

}  // namespace qat::kernels
