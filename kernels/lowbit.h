// More packed low-bit formats and their CPU kernels, next to ternary2 (kernels/ternary.h):
//   "ternary3"  ternary weights at 5 per byte (1.6 bits/weight), fp32 activations;
//   "int2"/"int4"  asymmetric 2- and 4-bit weights with a scale and a zero point per group;
//   int8 per-token activations (W1.58A8) multiplied by ternary2 weights with integer dot products.
// Every kernel exists as scalar (the reference), AVX2 and AVX-512 code, chosen per call with an
// Isa (see ternary.h), and splits output rows over a ThreadPool (which may be null). The result of
// an output row never depends on the thread count.
//
// ---------------------------------------------------------------------------------------------
// Format "ternary3" (version 1), 5 trits per byte.
// A weight matrix has `rows` output rows and `cols` input columns (row-major, [out, in]); each
// weight is a trit t in {-1, 0, +1} with code c = t + 1 in {0, 1, 2}. Each row is cut into blocks
// of 160 weights; a block is 32 bytes, a row occupies Ternary3RowBytes(cols) = ceil(cols/160)*32
// bytes, and rows follow each other with no gap. Byte m (0..31) of a block holds the five weights
// m + 32n (n = 0..4) of the block as the base-3 number
//     b = c_0 + 3 c_1 + 9 c_2 + 27 c_3 + 81 c_4     (so b <= 242),
// c_n being the code of weight m + 32n. Byte values 243..255 are invalid (ValidateTernary3
// rejects them); every kernel and UnpackTernary3 still decode any byte as c_n = floor(b/3^n) mod 3,
// so all variants agree even on unvalidated data. Weights past `cols` in the last block are
// padding with code 1 (trit 0).
// The value of a weight is scale[s] * t, s = 0 for a per-tensor scale (n_scales == 1) or s = row
// (n_scales == rows), as in TernaryView.
// Why this layout: 16 bytes zero-extended into 16 int32 lanes give, for each n, 16 consecutive
// weights (an AVX-512 register of activations; 8 bytes for AVX2), and one exact multiply-high by
// ceil(2^16/27) splits a byte into floor(b/27) (digits 3, 4) and b mod 27 (digits 0..2), each then
// turned into a float trit by a register table lookup. The block has the same 32-byte stride as
// ternary2 and as the first part of ggml's TQ1_0, but holds the plain base-3 number instead of
// TQ1_0's ceil(b*256/243), the first digit is the least significant one, and the scale is per row
// or tensor instead of an fp16 per 256 weights. Padding is at most 159 weights per row:
// 4096 columns take 832 bytes (1.625 bits/weight), 14336 columns 2880 bytes (1.607).
// Trade-off against ternary2: 20% fewer bytes for about a third more decode work per weight, so
// it wins where GEMV is memory-bound (many cores per memory channel) and is on par or slower
// where one core's decode is the limit.
//
// ---------------------------------------------------------------------------------------------
// Formats "int4" and "int2" (version 1), asymmetric, one scale and one zero point per group.
// Each weight has an unsigned code q in [0, 2^bits - 1]. The columns of a row are cut into groups
// of `group` = 32, 64 or 128 consecutive weights (the last group may be shorter); a row has
// IntKGroupsPerRow(group, cols) = ceil(cols/group) groups. The value of weight (r, c) is
//     scales[r * groups_per_row + c / group] * (float(q) - zeros[r * groups_per_row + c / group])
// computed in float, the subtraction first. scales and zeros are float32 arrays of
// rows * groups_per_row values each.
//   int4: a row is cut into units of 32 weights stored in 16 bytes; byte m (0..15) of unit u holds
//         weight 32u + m in bits [3:0] and weight 32u + 16 + m in bits [7:4].
//         IntKRowBytes(4, cols) = ceil(cols/32) * 16.
//   int2: a row is cut into units of 64 weights stored in 16 bytes; byte m (0..15) of unit u holds
//         weight 64u + m + 16j in bits [2j+1:2j], j = 0..3. IntKRowBytes(2, cols) =
//         ceil(cols/64) * 16.
// Rows follow each other with no gap; weights past `cols` in the last unit are padding with q = 0.
// Why: a 16-byte load zero-extended into 16 int32 lanes gives 16 consecutive weights per nibble or
// bit pair (AVX2 uses the two 8-byte halves), and since groups are multiples of 32 weights, every
// 32-weight half of a 64-weight step lies in a single group, so one 16-entry register table of the
// group's dequantized values (vpermps) turns codes into floats. fp32 scales and zero points keep
// trained and exported values exact (no fp16 rounding) at 64 bits per group: 0.5 bits/weight at
// group 128, 2 at group 32. A float zero point covers both integer zero points (exact, and then
// 0.0 is representable) and fractional ones (min-offset or HQQ-style optimized zeros).
//
// ---------------------------------------------------------------------------------------------
// int8 activations (BitNet b1.58 W1.58A8): each activation row x is quantized on its own
// (per token) to q = round_half_even(x * (127 / absmax)) in [-127, 127] with scale
// absmax / 127, where absmax = max |x|; an all-zero row has scale 0 and q = 0; a row holding a
// NaN or an infinity has scale NaN and q = 0, so its outputs are NaN. TernaryGemvInt8 then
// computes acc = sum_c t[r][c] * q[c] exactly in int32 and y[r] = (wscale(r) * xscale) * acc,
// the float multiplications in that order, so every variant returns the same bits.
#pragma once

#include <cstdint>

#include "kernels/ternary.h"

namespace qat::kernels {

class ThreadPool;

// Whether this CPU (and OS) can run AVX-512 VNNI (vpdpbusd). With it, Isa::kAvx512 runs the
// int8 dot products on VNNI; without it, Isa::kAvx512 runs them with the AVX2 code.
bool CpuHasAvx512Vnni();

// ----- ternary3 -----

inline constexpr int64_t kTernary3Block = 160;  // weights per block
inline constexpr int64_t kTernary3BlockBytes = 32;

constexpr int64_t Ternary3RowBytes(int64_t cols) {
  return (cols + kTernary3Block - 1) / kTernary3Block * kTernary3BlockBytes;
}

// A read-only view of one packed ternary3 matrix; the memory belongs to the caller.
struct Ternary3View {
  int64_t rows = 0;
  int64_t cols = 0;
  const uint8_t* data = nullptr;  // rows * Ternary3RowBytes(cols) bytes
  const float* scales = nullptr;  // n_scales floats
  int64_t n_scales = 1;           // 1 (per tensor) or rows (per row)
};

// trits: rows*cols values, row-major; negative values pack as -1, positive ones as +1.
// out: rows*Ternary3RowBytes(cols) bytes.
void PackTernary3(const int8_t* trits, int64_t rows, int64_t cols, uint8_t* out);
// Inverse of PackTernary3 (invalid bytes decode as described above).
void UnpackTernary3(const uint8_t* packed, int64_t rows, int64_t cols, int8_t* trits);
// Returns the byte offset of the first invalid byte (a value above 242, or a padding weight whose
// code is not 1), or -1 if the data is valid.
int64_t ValidateTernary3(const uint8_t* packed, int64_t rows, int64_t cols);

// y[r] = scale(r) * sum_c t[r][c] * x[c]. A view whose scales cannot be indexed (null, or
// n_scales neither 1 nor rows) gives NaN outputs.
void Ternary3Gemv(const Ternary3View& w, const float* x, float* y, Isa isa, ThreadPool* pool);
// Y[i][r] = scale(r) * sum_c t[r][c] * X[i][c]; X is m x cols, Y is m x rows (row-major).
void Ternary3Gemm(const Ternary3View& w, const float* x, int64_t m, float* y, Isa isa,
                  ThreadPool* pool);

// ----- int2 / int4 -----

// Whether (bits, group) is a layout this file implements: bits 2 or 4, group 32, 64 or 128.
constexpr bool IntKLayoutSupported(int bits, int64_t group) {
  return (bits == 2 || bits == 4) && (group == 32 || group == 64 || group == 128);
}
// Weights per 16-byte unit: 32 for int4, 64 for int2.
constexpr int64_t IntKUnitWeights(int bits) { return bits == 4 ? 32 : 64; }
inline constexpr int64_t kIntKUnitBytes = 16;
constexpr int64_t IntKRowBytes(int bits, int64_t cols) {
  return (cols + IntKUnitWeights(bits) - 1) / IntKUnitWeights(bits) * kIntKUnitBytes;
}
constexpr int64_t IntKGroupsPerRow(int64_t group, int64_t cols) {
  return (cols + group - 1) / group;
}

// A read-only view of one packed int2/int4 matrix; the memory belongs to the caller.
struct IntKView {
  int64_t rows = 0;
  int64_t cols = 0;
  int bits = 4;                   // 2 or 4
  int64_t group = 128;            // 32, 64 or 128
  const uint8_t* data = nullptr;  // rows * IntKRowBytes(bits, cols) bytes
  const float* scales = nullptr;  // rows * IntKGroupsPerRow(group, cols) floats
  const float* zeros = nullptr;   // rows * IntKGroupsPerRow(group, cols) floats
};

// q: rows*cols codes, row-major; codes above 2^bits - 1 are clamped to it. out: rows *
// IntKRowBytes(bits, cols) bytes. Does nothing for bits other than 2 and 4.
void PackIntK(const uint8_t* q, int64_t rows, int64_t cols, int bits, uint8_t* out);
// Inverse of PackIntK. Does nothing for bits other than 2 and 4.
void UnpackIntK(const uint8_t* packed, int64_t rows, int64_t cols, int bits, uint8_t* q);
// Returns the byte offset of the first byte with a nonzero padding weight, or -1 if the data is
// valid (every code of a real weight is valid). Returns 0 for bits other than 2 and 4.
int64_t ValidateIntK(const uint8_t* packed, int64_t rows, int64_t cols, int bits);

// Asymmetric min/max quantization of each group of w (rows x cols, row-major) into `packed`,
// `scales` and `zeros` (sized as in IntKView). For a group with lo = min, hi = max:
// scale = (hi - lo) / (2^bits - 1), zero = -lo / scale, q = round((w - lo) / scale) clamped to the
// code range; a constant group (hi == lo) gets scale 1, zero -lo and q 0, which dequantizes to
// exactly lo. Does nothing for an unsupported layout.
void QuantizeIntK(const float* w, int64_t rows, int64_t cols, int bits, int64_t group,
                  uint8_t* packed, float* scales, float* zeros);
// out[r][c] = the value of weight (r, c) (rows x cols floats). Fills NaN for an unsupported layout
// or null scales/zeros.
void DequantizeIntK(const IntKView& w, float* out);

// y[r] = sum_c value(r, c) * x[c]. An unsupported layout or null scales/zeros gives NaN outputs.
void IntKGemv(const IntKView& w, const float* x, float* y, Isa isa, ThreadPool* pool);
// Y[i][r] = sum_c value(r, c) * X[i][c]; X is m x cols, Y is m x rows (row-major).
void IntKGemm(const IntKView& w, const float* x, int64_t m, float* y, Isa isa, ThreadPool* pool);

// ----- int8 activations with ternary2 weights -----

// Quantizes each of the m rows of x (m x cols, row-major) as described above: xq is m x cols
// int8, xscales has m floats. Every isa gives the same bits.
void QuantizeActivationsInt8(const float* x, int64_t m, int64_t cols, int8_t* xq, float* xscales,
                             Isa isa);

// Largest cols the int8 kernels accept: sums of codes times int8 values stay within int32.
inline constexpr int64_t kInt8MaxCols = int64_t{1} << 22;

// y[r] = (scale(r) * xscale) * float(sum_c t[r][c] * xq[c]), the sum exact in int32, for a
// ternary2 matrix and one quantized activation row. Every isa gives the same bits. A view whose
// scales cannot be indexed, or cols > kInt8MaxCols, gives NaN outputs.
void TernaryGemvInt8(const TernaryView& w, const int8_t* xq, float xscale, float* y, Isa isa,
                     ThreadPool* pool);
// The same for m activation rows: xq is m x cols, xscales has m floats, Y is m x rows.
void TernaryGemmInt8(const TernaryView& w, const int8_t* xq, const float* xscales, int64_t m,
                     float* y, Isa isa, ThreadPool* pool);

}  // namespace qat::kernels
