// Layouts "int4-x16" and "int2-x16": int4/int2 weights (lowbit.h) regrouped 16 output rows at a
// time for products with int8 activations (QuantizeActivationsInt8, lowbit.h) by integer dot
// products. In memory only: the packed runtime builds it at load time from an IntKView
// (RepackIntKX16), and nothing writes it to a file.
//
// What is computed. For activation row i (codes xq[i][c] in [-128, 127], scale xscale[i]) and
// weight row r with codes q[r][c] (0..15 or 0..3), group scales scale[r][g] and zero points
// zero[r][g]:
//     d[i][r][g] = sum_{c in group g} q[r][c] * xq[i][c]     (exact, int32)
//     s[i][g]    = sum_{c in group g} xq[i][c]               (exact, int32)
//     y[i][r]    = xscale[i] * sum_g scale[r][g] * (float(d) - zero[r][g] * float(s))
// which is exactly sum_c value(r, c) * xscale[i] * xq[i][c] before rounding. The float operations
// are fixed, the same in every variant (scalar: std::fma; SIMD: vfnmadd/vfmadd), so every Isa
// returns the same bits:
//     acc = +0.0f
//     for g = 0, 1, ... (increasing):  u = fma(-zero[r][g], float(s), float(d));
//                                      acc = fma(scale[r][g], u, acc)
//     y = xscale[i] * acc
// float(d) and float(s) are exact (|d| <= 128 * 15 * 128 < 2^24), so the term of group g passes
// through at most G + 2 roundings (its u, the accumulations from g on, the final product; G =
// groups per row). A NaN xscale (a row holding NaN or infinity, see QuantizeActivationsInt8) gives
// NaN outputs; a zero row gives +0 (for finite scales and zeros).
//
// Bytes. Rows are taken in tiles of kIntKX16Rows = 16: tile t holds rows 16t .. 16t+15; a last
// partial tile is padded with rows of code 0, scale 0 and zero 0 (their outputs are never
// written). The columns of a row are cut into chunks of IntKX16ChunkCols(bits) columns (8 for
// int4, 16 for int2; groups of 32, 64 and 128 hold whole chunks, so a chunk lies in one group);
// columns past `cols` in the last chunk have code 0. With C = IntKX16Chunks(bits, cols), tile t
// occupies C * 64 bytes from byte t * C * 64, and chunk k of tile t is the 64 bytes from
// byte (t * C + k) * 64, in which byte 4 l + j (l = row in tile 0..15, j = 0..3) holds, of row
// 16t + l:
//   int4: column 8k + j in bits [3:0] and column 8k + 4 + j in bits [7:4];
//   int2: column 16k + 4i + j in bits [2i+1:2i], i = 0..3.
// scales and zeros: per tile, per group g, the 16 rows' values: scale[16t + l][g] is at float
// (t * G + g) * 16 + l (likewise zeros), G = IntKGroupsPerRow(group, cols).
// Why: one 64-byte load (one cache line when the data is 64-byte aligned) of a chunk, masked with
// 0x0F (int4; 0x03 for int2) and shifted, gives u8 operands whose int32 lane l holds 4 codes of row
// l for 4 consecutive columns; vpdpbusd (AVX-512 VNNI) against those 4 activation bytes broadcast
// to every lane adds their dot product into lane l: 16 rows' group sums with no horizontal
// reduction and no per-weight float work. Products with M > 1 activation rows decode each load once
// and reuse it for every row (up to 8 at a time). AVX2 (and AVX-512 CPUs without VNNI) takes each
// 32-byte half (8 rows) with vpmaddubsw + vpmaddwd. Size: 4 * C bytes a row (of rows padded to
// 16), the same as the row-major format up to that padding and chunk rounding (4096 columns: 2048
// bytes a row for int4, 1024 for int2), plus the same scales and zeros (padded rows too).
//
// Accuracy. Scalar against the exact formula in double: |y - exact| <= IntKX16ErrorBound(G) *
// |xscale| * sum_g |scale[r][g] * (d - zero[r][g] * s)| (rigorous, from the G + 2 roundings a
// term passes through, each of relative size at most 2^-24). Against the fp32 path (x' = xscale *
// xq then IntKGemm, what kernels/runtime.cc runs for a layout this file does not support), see
// IntKX16Tolerance below.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <new>
#include <vector>

#include "kernels/lowbit.h"
#include "kernels/ternary.h"

namespace qat::kernels {

class ThreadPool;

inline constexpr int64_t kIntKX16Rows = 16;        // rows per tile
inline constexpr int64_t kIntKX16ChunkBytes = 64;  // bytes per chunk of a tile

constexpr int64_t IntKX16ChunkCols(int bits) { return bits == 4 ? 8 : 16; }
constexpr int64_t IntKX16Tiles(int64_t rows) { return (rows + kIntKX16Rows - 1) / kIntKX16Rows; }
constexpr int64_t IntKX16Chunks(int bits, int64_t cols) {
  return (cols + IntKX16ChunkCols(bits) - 1) / IntKX16ChunkCols(bits);
}
// Bytes of codes of a rows x cols matrix in this layout.
constexpr int64_t IntKX16DataBytes(int bits, int64_t rows, int64_t cols) {
  return IntKX16Tiles(rows) * IntKX16Chunks(bits, cols) * kIntKX16ChunkBytes;
}
// Floats of scales (and as many of zeros).
constexpr int64_t IntKX16Params(int64_t rows, int64_t cols, int64_t group) {
  return IntKX16Tiles(rows) * kIntKX16Rows * IntKGroupsPerRow(group, cols);
}

// Relative error bound of the documented float order against the exact value, for G groups:
// gamma_{G+2} = (G+2) u / (1 - (G+2) u), u = 2^-24 (see Accuracy above).
constexpr double IntKX16ErrorBound(int64_t groups) {
  const double n = static_cast<double>(groups + 2) * (1.0 / 16777216.0);
  return n / (1.0 - n);
}

// The tolerance of this path against the fp32 path (y32 = IntKGemm of the IntKView on
// x'[c] = xscale * xq[c], any isa), per output, as a share of T = sum_c |value(r, c) * x'[c]|:
//     |y_int8 - y32| <= IntKX16Tolerance(cols) * T,   IntKX16Tolerance = (4 sqrt(cols) + 16) 2^-24
// (1.6e-5 at 4096 columns, 3.0e-5 at 14336). The runtime may accept the integer path for
// int8-activation models with this bound. Why: the fp32 path rounds x' and each value (3
// roundings a term) and sums cols terms; its sum's error grows in practice as sqrt(cols) 2^-24
// of T, largest for one-signed terms and the scalar in-order sum (measured: up to 1.07 sqrt(cols)
// 2^-24 at 4096 and 14336 columns, positive weights and activations; its SIMD sums stay under 0.2
// sqrt(cols) 2^-24). The integer path's error is far smaller (exact group sums, 2 roundings per
// group: measured under 3 * 2^-24 of T). One wrong weight moves an output by about T / cols,
// still 2.3x the bound at 14336 columns and 15x at 4096, so the bound catches a broken kernel. (The
// rigorous worst cases, cols 2^-24 T for the fp32 sum and IntKX16ErrorBound for this path, are far
// looser and never approached by rounding that is not adversarial.)
inline double IntKX16Tolerance(int64_t cols) {
  return (4.0 * std::sqrt(static_cast<double>(cols)) + 16.0) / 16777216.0;
}

// A read-only view of one matrix in this layout; the memory belongs to the caller (64-byte
// aligned data makes every chunk load one cache line; any alignment works).
struct IntKX16View {
  int64_t rows = 0;
  int64_t cols = 0;
  int bits = 4;                   // 2 or 4
  int64_t group = 128;            // 32, 64 or 128
  const uint8_t* data = nullptr;  // IntKX16DataBytes(bits, rows, cols) bytes
  const float* scales = nullptr;  // IntKX16Params(rows, cols, group) floats
  const float* zeros = nullptr;   // IntKX16Params(rows, cols, group) floats
};

// Repacks a row-major int2/int4 matrix (lowbit.h) into this layout: data gets
// IntKX16DataBytes(w.bits, w.rows, w.cols) bytes, scales and zeros IntKX16Params(...) floats each.
// Padding codes of the source (which ValidateIntK rejects) are ignored: the padding here is 0.
// Does nothing for an unsupported layout or a view without data, scales or zeros.
void RepackIntKX16(const IntKView& w, uint8_t* data, float* scales, float* zeros);
// The inverse: the row-major packed codes (rows * IntKRowBytes(bits, cols) bytes, padding 0) and
// the rows * IntKGroupsPerRow(group, cols) scales and zeros. Does nothing for an unsupported
// layout.
void UnpackIntKX16(const IntKX16View& w, uint8_t* packed, float* scales, float* zeros);

// A std::allocator that aligns to 64 bytes (C++17 aligned new), so that copies stay aligned.
template <typename T>
struct Aligned64Allocator {
  using value_type = T;
  Aligned64Allocator() = default;
  template <typename U>
  Aligned64Allocator(const Aligned64Allocator<U>&) {}  // NOLINT: implicit, as allocators are
  T* allocate(std::size_t n) {
    return static_cast<T*>(::operator new (n * sizeof(T), std::align_val_t{64}));
  }
  void deallocate(T* p, std::size_t) { ::operator delete (p, std::align_val_t{64}); }
  template <typename U>
  bool operator==(const Aligned64Allocator<U>&) const {
    return true;
  }
  template <typename U>
  bool operator!=(const Aligned64Allocator<U>&) const {
    return false;
  }
};

// An owning copy in this layout (what the runtime keeps per linear, in place of the row-major
// codes, scales and zeros: the same size up to the padding of rows to 16), data 64-byte aligned.
struct IntKX16Matrix {
  int64_t rows = 0, cols = 0;
  int bits = 4;
  int64_t group = 128;
  std::vector<uint8_t, Aligned64Allocator<uint8_t>> data;  // IntKX16DataBytes bytes
  std::vector<float> scales, zeros;                        // IntKX16Params floats each
  IntKX16View view() const {
    return IntKX16View{rows, cols, bits, group, data.data(), scales.data(), zeros.data()};
  }
  int64_t bytes() const {
    return static_cast<int64_t>(data.size() + 4 * (scales.size() + zeros.size()));
  }
};
// Empty matrix (rows = 0) for an unsupported layout or a view without data, scales or zeros.
IntKX16Matrix RepackIntKX16(const IntKView& w);

// Y[i][r] as documented above, for m activation rows xq (m x cols int8, row-major; any value
// -128..127) with scales xscales (m floats); Y is m x rows (row-major). Every isa gives the same
// bits (kAvx512 runs VNNI when CpuHasAvx512Vnni(), the AVX2 code otherwise), whatever the thread
// count. An unsupported layout or a view without data, scales or zeros gives NaN outputs; cols <= 0
// gives zeros.
void IntKX16GemmInt8(const IntKX16View& w, const int8_t* xq, const float* xscales, int64_t m,
                     float* y, Isa isa, ThreadPool* pool);
// The same for one activation row.
void IntKX16GemvInt8(const IntKX16View& w, const int8_t* xq, float xscale, float* y, Isa isa,
                     ThreadPool* pool);

}  // namespace qat::kernels
