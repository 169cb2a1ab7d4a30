// Internal: the per-instruction-set kernels behind the dispatch in lowbit.cc.
//
// As in ternary_impl.h, every namespace (scalar, avx2, avx512) implements the same functions, each
// computing the output rows [row_begin, row_end) only, and the arithmetic of an output row never
// depends on how rows were split. Only lowbit.cc calls these, after checking IsaSupported and the
// view (scales present, layout supported).
#pragma once

#include <cstdint>

#include "kernels/lowbit.h"
#include "kernels/ternary.h"

namespace qat::kernels {

// Kernels of every instruction set.
//
// Ternary3GemvRows reads x_padded: x copied into Ternary3RowBytes(cols) / 32 * 160 floats, zero
// past cols, so SIMD kernels read whole blocks and padding weights contribute nothing.
// IntKGemvRows reads x itself (cols floats): SIMD kernels do whole 64-column steps and finish a
// row's last cols % 64 columns with scalar code, so no scale of a group past the row is read.
// TernaryInt8Rows reads m activation rows of TernaryRowBytes(cols) * 4 int8 each (zero past cols),
// their sums xsums[i] and scales xscales[i], and writes y[i * rows + r]. The rows are in column
// order for scalar and avx2; for avx512 (VNNI) each pair of blocks (2p, 2p + 1) is interleaved so
// one 64-byte load matches 64 bytes of packed weights: byte 256p + 64j + 32h + k holds column
// (2p + h) * 128 + 32j + k (see Int8PairedIndex); an unpaired last block stays in column order.
// QuantizeInt8Rows quantizes activation rows [row_begin, row_end) of x (cols floats each) into xq
// (cols int8 each) and xscales.
#define QAT_DECLARE_LOWBIT_KERNELS                                                                 \
  void Ternary3GemvRows(const Ternary3View& w, const float* x_padded, float* y, int64_t row_begin, \
                        int64_t row_end);                                                          \
  void IntKGemvRows(const IntKView& w, const float* x, float* y, int64_t row_begin,                \
                    int64_t row_end);                                                              \
  void TernaryInt8Rows(const TernaryView& w, const int8_t* xq, const int32_t* xsums,               \
                       const float* xscales, int64_t m, float* y, int64_t row_begin,               \
                       int64_t row_end);                                                           \
  void QuantizeInt8Rows(const float* x, int64_t cols, int8_t* xq, float* xscales,                  \
                        int64_t row_begin, int64_t row_end);

// Decoders used by the SIMD GEMMs (lowbit.cc multiplies their output with the dense GEMM kernels
// of ternary_impl.h): rows [row_begin, row_end) as floats, cols per row, row after row.
// Ternary3DecodeRows writes the trits (without the scale); IntKDecodeRows the values.
#define QAT_DECLARE_LOWBIT_DECODERS                                                               \
  void Ternary3DecodeRows(const Ternary3View& w, int64_t row_begin, int64_t row_end, float* out); \
  void IntKDecodeRows(const IntKView& w, int64_t row_begin, int64_t row_end, float* out);

// The reference: plain loops, one accumulator per output, columns in increasing order.
namespace scalar {
QAT_DECLARE_LOWBIT_KERNELS
QAT_DECLARE_LOWBIT_DECODERS
// Plain-loop GEMMs (the SIMD GEMMs decode and reuse the dense kernels instead).
void Ternary3GemmRows(const Ternary3View& w, const float* x, int64_t m, float* y, int64_t row_begin,
                      int64_t row_end);
void IntKGemmRows(const IntKView& w, const float* x, int64_t m, float* y, int64_t row_begin,
                  int64_t row_end);
}  // namespace scalar

// AVX2 + FMA (lowbit_avx2.cc, compiled with -mavx2 -mfma -mf16c).
namespace avx2 {
QAT_DECLARE_LOWBIT_KERNELS
QAT_DECLARE_LOWBIT_DECODERS
}  // namespace avx2

// AVX-512 F/BW/VL/DQ (lowbit_avx512.cc). TernaryInt8Rows there uses VNNI and runs only when
// CpuHasAvx512Vnni(); lowbit.cc falls back to avx2::TernaryInt8Rows otherwise.
namespace avx512 {
QAT_DECLARE_LOWBIT_KERNELS
QAT_DECLARE_LOWBIT_DECODERS
}  // namespace avx512

#undef QAT_DECLARE_LOWBIT_KERNELS
#undef QAT_DECLARE_LOWBIT_DECODERS

// ----- Helpers shared by every variant -----
// In an unnamed namespace on purpose: each translation unit gets its own copy, compiled with its
// own instruction set, so the linker can never hand the AVX-512 copy of a helper to scalar code.
namespace {

// Position of column c in the paired activation order of avx512::TernaryInt8Rows, for a row of
// `blocks` ternary2 blocks.
inline int64_t Int8PairedIndex(int64_t c, int64_t blocks) {
  const int64_t block = c / kTernaryBlock;
  if (block >= blocks / 2 * 2) return c;  // the unpaired last block
  const int64_t in_block = c % kTernaryBlock;
  return block / 2 * 256 + in_block / 32 * 64 + block % 2 * 32 + in_block % 32;
}

inline float Ternary3RowScale(const Ternary3View& w, int64_t r) {
  return w.n_scales == 1 ? w.scales[0] : w.scales[r];
}

// Code n (0..4) of a ternary3 byte: floor(b / 3^n) mod 3, for any byte value.
inline int Ternary3Code(uint8_t b, int n) {
  static constexpr int kPow3[5] = {1, 3, 9, 27, 81};
  return b / kPow3[n] % 3;
}

// Trit of column c (0 <= c < padded columns) of a packed ternary3 row.
inline int Ternary3TritAt(const uint8_t* row, int64_t c) {
  const int64_t in_block = c % kTernary3Block;
  const uint8_t b = row[c / kTernary3Block * kTernary3BlockBytes + in_block % 32];
  return Ternary3Code(b, static_cast<int>(in_block / 32)) - 1;
}

// Code q of column c of a packed int2/int4 row (layouts in lowbit.h).
inline int IntKCodeAt(const uint8_t* row, int bits, int64_t c) {
  if (bits == 4) {
    const int64_t in_unit = c % 32;
    const uint8_t byte = row[c / 32 * kIntKUnitBytes + in_unit % 16];
    return in_unit < 16 ? (byte & 0xF) : (byte >> 4);
  }
  const int64_t in_unit = c % 64;
  const uint8_t byte = row[c / 64 * kIntKUnitBytes + in_unit % 16];
  return (byte >> (2 * (in_unit / 16))) & 3;
}

// The value of weight (r, c): scale * (float(q) - zero), subtraction first.
inline float IntKValueAt(const IntKView& w, int64_t r, int64_t c) {
  const int64_t g = r * IntKGroupsPerRow(w.group, w.cols) + c / w.group;
  const uint8_t* row = w.data + r * IntKRowBytes(w.bits, w.cols);
  return w.scales[g] * (static_cast<float>(IntKCodeAt(row, w.bits, c)) - w.zeros[g]);
}

}  // namespace

}  // namespace qat::kernels
