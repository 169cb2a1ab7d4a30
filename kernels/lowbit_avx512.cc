// AVX-512 kernels of lowbit.h (compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mfma
// -mavx512vnni; run only when cpuid reports them, see lowbit.cc). Only TernaryInt8Rows uses VNNI
// instructions, and lowbit.cc calls it only when CpuHasAvx512Vnni(); nothing else here may (no
// integer dot-product loops the compiler could turn into vpdpbusd).
//
// ternary3: 16 bytes of a block are zero-extended into 16 int32 lanes; lane l of byte 16h + l
// holds the codes of weights 32n + 16h + l (n = 0..4): 16 consecutive activations per n. One
// exact multiply-high (vpmulhuw by ceil(2^16/27) = 2428) gives i = floor(b/27) in 0..9 and one
// multiply-subtract r = b mod 27 in 0..26. Codes 4 and 3 are floor(i/3) mod 3 and i mod 3: two
// 16-float tables (vpermps) indexed by i give their trits; codes 2, 1, 0 are floor(r/9), floor(r/3)
// mod 3 and r mod 3: three 32-float tables (vpermt2ps) indexed by r. That is 1 zero-extension +
// 3 integer ops + 5 lookups + 5 FMAs per 80 weights, with no correction term. Four rows go
// together so each activation load feeds four FMAs. The lookups bound the loop (on Zen 5, with
// data in cache: ~47 G weights/s on one core, against ~63 for ternary2's 4 lookups per 64
// weights); variants with more multiply-highs and only 16-entry tables were slower.
// int2/int4: per row and group, a 16-float table holds the group's dequantized values
// scale * (q - zero) for every code (int2: indexed by 4 bits holding the code and the next one);
// vpermps turns the zero-extended bytes (shifted by the code's position) into weights.
// int8 x ternary2 (VNNI): a 64-byte load covers two blocks; the invalid codes 3 are turned into 1
// (trit 0) for all four fields at once (FixCode3), each bit pair j is shifted down and masked, and
// vpdpbusd adds code * x into int32 lanes; sum (t + 1) * x - sum x is the exact sum t * x. The
// activations are pre-arranged by lowbit.cc (Int8PairedIndex) so the matching 64 activation bytes
// are contiguous. (Masking the fields in place, code * 4^j, without shifts was slower.)
//
// GCC 12's AVX-512 intrinsics build "undefined" vectors from self-initialized variables, which
// trips -Wuninitialized once they are inlined (GCC bug 105593): the warning is about the header.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <cfloat>
#include <cstdint>
#include <cstring>
#include <limits>

#include "kernels/lowbit.h"
#include "kernels/lowbit_impl.h"
#include "kernels/ternary.h"
#include "kernels/ternary_impl.h"

namespace qat::kernels::avx512 {
namespace {

// Complete unrolling of the short fixed loops keeps the small arrays of vectors in registers; GCC
// does it at -O3 by itself but not at -O2, where the kernels would run several times slower.
#define QAT_UNROLL _Pragma("GCC unroll 16")

// No std:: algorithm templates in this file: an out-of-line instantiation compiled for this
// instruction set could be picked by the linker for code that runs on any CPU.
inline int64_t MinInt(int64_t a, int64_t b) { return a < b ? a : b; }

constexpr int64_t kPrefetchBytes = 4096;  // how far ahead each weight row is prefetched
constexpr int kGemvRows = 4;              // rows per GEMV group

inline __m512i Load16Bytes(const uint8_t* p) {
  return _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

// ----- ternary3 -----

// Lookup tables from i = floor(b/27) (0..9; 9 only for invalid bytes) and r = b mod 27 (0..26)
// to trits. Unused entries are 0.
struct Ternary3Tables {
  __m512 code4, code3;                  // from i: floor(i/3) mod 3 - 1, i mod 3 - 1
  __m512 code2[2], code1[2], code0[2];  // from r, entries 0..15 and 16..31
};

inline Ternary3Tables MakeTernary3Tables() {
  alignas(64) float t4[16] = {}, t3[16] = {}, t2[32] = {}, t1[32] = {}, t0[32] = {};
  for (int i = 0; i < 10; ++i) {
    t4[i] = static_cast<float>(i / 3 % 3 - 1);
    t3[i] = static_cast<float>(i % 3 - 1);
  }
  for (int r = 0; r < 27; ++r) {
    t2[r] = static_cast<float>(r / 9 - 1);
    t1[r] = static_cast<float>(r / 3 % 3 - 1);
    t0[r] = static_cast<float>(r % 3 - 1);
  }
  Ternary3Tables t;
  t.code4 = _mm512_load_ps(t4);
  t.code3 = _mm512_load_ps(t3);
  QAT_UNROLL
  for (int k = 0; k < 2; ++k) {
    t.code2[k] = _mm512_load_ps(t2 + 16 * k);
    t.code1[k] = _mm512_load_ps(t1 + 16 * k);
    t.code0[k] = _mm512_load_ps(t0 + 16 * k);
  }
  return t;
}

// Trits of the 80 weights held by 16 bytes: t[n] lane l is weight 32n + l relative to the first
// byte's weights. The lanes hold b < 256 in their low 16 bits, so the 16-bit multiplies act on b
// alone (the high halves stay 0).
inline void DecodeTernary3Half(const uint8_t* p, const Ternary3Tables& tab, __m512 t[5]) {
  const __m512i b = Load16Bytes(p);
  const __m512i i = _mm512_mulhi_epu16(b, _mm512_set1_epi32(2428));  // floor(b / 27)
  const __m512i r = _mm512_sub_epi16(b, _mm512_mullo_epi16(i, _mm512_set1_epi32(27)));
  t[4] = _mm512_permutexvar_ps(i, tab.code4);
  t[3] = _mm512_permutexvar_ps(i, tab.code3);
  t[2] = _mm512_permutex2var_ps(tab.code2[0], r, tab.code2[1]);
  t[1] = _mm512_permutex2var_ps(tab.code1[0], r, tab.code1[1]);
  t[0] = _mm512_permutex2var_ps(tab.code0[0], r, tab.code0[1]);
}

// out[r] = sum_c t[r][c] * x[c] over whole blocks for kRows consecutive rows. Two accumulators
// per row, combined in a fixed order, so a row's result does not depend on kRows.
template <int kRows>
void Ternary3DotRows(const uint8_t* row0, int64_t row_bytes, int64_t blocks, const float* x,
                     float* out) {
  const Ternary3Tables tab = MakeTernary3Tables();
  __m512 acc[kRows][2];
  QAT_UNROLL
  for (int r = 0; r < kRows; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* block = row0 + b * kTernary3BlockBytes;
    QAT_UNROLL
    for (int r = 0; r < kRows; ++r) {  // a hint only: past the end is harmless
      _mm_prefetch(reinterpret_cast<const char*>(block + r * row_bytes + kPrefetchBytes),
                   _MM_HINT_T0);
    }
    QAT_UNROLL
    for (int h = 0; h < 2; ++h) {
      __m512 xv[5];
      QAT_UNROLL
      for (int n = 0; n < 5; ++n) {
        xv[n] = _mm512_loadu_ps(x + b * kTernary3Block + 32 * n + 16 * h);
      }
      QAT_UNROLL
      for (int r = 0; r < kRows; ++r) {
        __m512 t[5];
        DecodeTernary3Half(block + r * row_bytes + 16 * h, tab, t);
        QAT_UNROLL
        for (int n = 0; n < 5; ++n) acc[r][n & 1] = _mm512_fmadd_ps(t[n], xv[n], acc[r][n & 1]);
      }
    }
  }
  QAT_UNROLL
  for (int r = 0; r < kRows; ++r) {
    out[r] = _mm512_reduce_add_ps(_mm512_add_ps(acc[r][0], acc[r][1]));
  }
}

// ----- int2 / int4 -----

constexpr int64_t kStep = 64;  // columns per step; each 32-column half lies in one group

// Dequantization table of a group: lane i -> scale * (code(i) - zero), where code(i) = i for
// int4 and i & 3 for int2 (the index holds the code in bits [1:0] and the next code above it).
template <int kBits>
inline __m512 GroupTable(float scale, float zero) {
  const __m512 codes = kBits == 4
                           ? _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
                           : _mm512_setr_ps(0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3);
  return _mm512_mul_ps(_mm512_sub_ps(codes, _mm512_set1_ps(zero)), _mm512_set1_ps(scale));
}

// Tables of the two 32-column halves of the step at column c. For groups of 64 and 128 both
// halves share one group; for 128 the table is rebuilt only every other step.
template <int kBits, int kGroup>
inline void UpdateTables(const float* scales, const float* zeros, int64_t c, __m512 table[2]) {
  if constexpr (kGroup == 32) {
    table[0] = GroupTable<kBits>(scales[c / 32], zeros[c / 32]);
    table[1] = GroupTable<kBits>(scales[c / 32 + 1], zeros[c / 32 + 1]);
  } else {
    if (kGroup == 64 || c % kGroup == 0) {
      table[0] = GroupTable<kBits>(scales[c / kGroup], zeros[c / kGroup]);
    }
    table[1] = table[0];
  }
}

// The values of the 64 weights of one step: v[k] holds weights 16k .. 16k + 15 of the step.
template <int kBits>
inline void DecodeIntKStep(const uint8_t* p, const __m512 table[2], __m512 v[4]) {
  if constexpr (kBits == 4) {
    // Unit u (16 bytes) = half u: byte l holds weight 32u + l (low nibble) and 32u + 16 + l.
    QAT_UNROLL
    for (int u = 0; u < 2; ++u) {
      const __m512i b = Load16Bytes(p + 16 * u);
      v[2 * u] = _mm512_permutexvar_ps(b, table[u]);  // vpermps reads the low 4 bits only
      v[2 * u + 1] = _mm512_permutexvar_ps(_mm512_srli_epi32(b, 4), table[u]);
    }
  } else {
    // One unit: byte l holds weight 16j + l at bits [2j+1:2j]; j = 0, 1 are the first half.
    const __m512i b = Load16Bytes(p);
    v[0] = _mm512_permutexvar_ps(b, table[0]);
    v[1] = _mm512_permutexvar_ps(_mm512_srli_epi32(b, 2), table[0]);
    v[2] = _mm512_permutexvar_ps(_mm512_srli_epi32(b, 4), table[1]);
    v[3] = _mm512_permutexvar_ps(_mm512_srli_epi32(b, 6), table[1]);
  }
}

// y[r] for kRows consecutive rows from r0: whole steps in SIMD (two accumulators per row), then
// the last cols % 64 columns in scalar code, added after the lane reduction.
template <int kBits, int kGroup, int kRows>
void IntKDotRows(const IntKView& w, int64_t r0, const float* x, float* y) {
  const int64_t row_bytes = IntKRowBytes(kBits, w.cols);
  const int64_t groups = IntKGroupsPerRow(kGroup, w.cols);
  const int64_t steps = w.cols / kStep;
  constexpr int64_t kStepBytes = kStep * kBits / 8;
  __m512 acc[kRows][2];
  __m512 table[kRows][2];
  QAT_UNROLL
  for (int r = 0; r < kRows; ++r) {
    acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    table[r][0] = table[r][1] = _mm512_setzero_ps();
  }
  for (int64_t s = 0; s < steps; ++s) {
    const int64_t c = s * kStep;
    __m512 xv[4];
    QAT_UNROLL
    for (int k = 0; k < 4; ++k) xv[k] = _mm512_loadu_ps(x + c + 16 * k);
    QAT_UNROLL
    for (int r = 0; r < kRows; ++r) {
      const uint8_t* p = w.data + (r0 + r) * row_bytes + s * kStepBytes;
      _mm_prefetch(reinterpret_cast<const char*>(p + kPrefetchBytes), _MM_HINT_T0);
      UpdateTables<kBits, kGroup>(w.scales + (r0 + r) * groups, w.zeros + (r0 + r) * groups, c,
                                  table[r]);
      __m512 v[4];
      DecodeIntKStep<kBits>(p, table[r], v);
      QAT_UNROLL
      for (int k = 0; k < 4; ++k) acc[r][k & 1] = _mm512_fmadd_ps(v[k], xv[k], acc[r][k & 1]);
    }
  }
  QAT_UNROLL
  for (int r = 0; r < kRows; ++r) {
    float tail = 0.0f;
    for (int64_t c = steps * kStep; c < w.cols; ++c) tail += IntKValueAt(w, r0 + r, c) * x[c];
    y[r0 + r] = _mm512_reduce_add_ps(_mm512_add_ps(acc[r][0], acc[r][1])) + tail;
  }
}

template <int kBits, int kGroup>
void IntKGemvRowsT(const IntKView& w, const float* x, float* y, int64_t row_begin,
                   int64_t row_end) {
  int64_t r = row_begin;
  for (; r + kGemvRows <= row_end; r += kGemvRows) {
    IntKDotRows<kBits, kGroup, kGemvRows>(w, r, x, y);
  }
  for (; r < row_end; ++r) IntKDotRows<kBits, kGroup, 1>(w, r, x, y);
}

template <int kBits, int kGroup>
void IntKDecodeRowsT(const IntKView& w, int64_t row_begin, int64_t row_end, float* out) {
  const int64_t row_bytes = IntKRowBytes(kBits, w.cols);
  const int64_t groups = IntKGroupsPerRow(kGroup, w.cols);
  const int64_t steps = w.cols / kStep;
  for (int64_t r = row_begin; r < row_end; ++r) {
    float* dst = out + (r - row_begin) * w.cols;
    __m512 table[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
    for (int64_t s = 0; s < steps; ++s) {
      UpdateTables<kBits, kGroup>(w.scales + r * groups, w.zeros + r * groups, s * kStep, table);
      __m512 v[4];
      DecodeIntKStep<kBits>(w.data + r * row_bytes + s * (kStep * kBits / 8), table, v);
      QAT_UNROLL
      for (int k = 0; k < 4; ++k) _mm512_storeu_ps(dst + s * kStep + 16 * k, v[k]);
    }
    for (int64_t c = steps * kStep; c < w.cols; ++c) dst[c] = IntKValueAt(w, r, c);
  }
}

// Calls fn<bits, group>(args...) for the view's layout (checked by lowbit.cc).
#define QAT_INTK_DISPATCH(fn, w, ...)                     \
  do {                                                    \
    if ((w).bits == 4) {                                  \
      if ((w).group == 32) return fn<4, 32>(__VA_ARGS__); \
      if ((w).group == 64) return fn<4, 64>(__VA_ARGS__); \
      return fn<4, 128>(__VA_ARGS__);                     \
    }                                                     \
    if ((w).group == 32) return fn<2, 32>(__VA_ARGS__);   \
    if ((w).group == 64) return fn<2, 64>(__VA_ARGS__);   \
    return fn<2, 128>(__VA_ARGS__);                       \
  } while (false)

// ----- int8 activations x ternary2 (VNNI) -----

// Packed ternary2 bytes with every invalid code 3 (11b) turned into 1 (01b, trit 0), as in the
// scalar code: `three` marks the low bit of each 11b field, and xor with it shifted up clears the
// field's high bit. Two ops, on any vector width.
inline __m512i FixCode3(__m512i raw) {
  const __m512i three = _mm512_ternarylogic_epi32(_mm512_srli_epi16(raw, 1), raw,
                                                  _mm512_set1_epi8(0x55), 0x80);  // a & b & c
  return _mm512_xor_si512(raw, _mm512_add_epi8(three, three));
}

// out[r] = sum_c (t[r][c] + 1) * x[c] over `blocks` whole blocks for kRows rows, exactly. x is in
// the paired order (lowbit_impl.h): pairs of blocks with zmm registers, a last odd block with ymm.
template <int kRows>
void CodeDotRows(const uint8_t* row0, int64_t row_bytes, int64_t blocks, const int8_t* x,
                 int32_t* out) {
  const __m512i mask = _mm512_set1_epi8(3);
  // Two accumulators per row (even and odd bit pairs), so one chain of vpdpbusd latencies does
  // not bound the loop.
  __m512i acc[kRows][2];
  QAT_UNROLL
  for (int r = 0; r < kRows; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_si512();
  const int64_t pairs = blocks / 2;
  for (int64_t p = 0; p < pairs; ++p) {
    __m512i xv[4];
    QAT_UNROLL
    for (int j = 0; j < 4; ++j) xv[j] = _mm512_loadu_si512(x + p * 256 + 64 * j);
    QAT_UNROLL
    for (int r = 0; r < kRows; ++r) {
      const uint8_t* bytes = row0 + r * row_bytes + p * 2 * kTernaryBlockBytes;
      _mm_prefetch(reinterpret_cast<const char*>(bytes + kPrefetchBytes), _MM_HINT_T0);
      const __m512i packed = FixCode3(_mm512_loadu_si512(bytes));
      QAT_UNROLL
      for (int j = 0; j < 4; ++j) {
        // Byte m of each 32-byte half, bits [2j+1:2j]: weight 32j + m of that half's block.
        const __m512i codes =
            _mm512_and_si512(j == 0 ? packed : _mm512_srli_epi16(packed, 2 * j), mask);
        acc[r][j & 1] = _mm512_dpbusd_epi32(acc[r][j & 1], codes, xv[j]);
      }
    }
  }
  if (blocks % 2 != 0) {  // the unpaired last block, in column order
    const __m256i mask256 = _mm512_castsi512_si256(mask);
    __m256i xv[4];
    QAT_UNROLL
    for (int j = 0; j < 4; ++j) {
      xv[j] = _mm256_loadu_si256(
          reinterpret_cast<const __m256i*>(x + pairs * 2 * kTernaryBlock + 32 * j));
    }
    QAT_UNROLL
    for (int r = 0; r < kRows; ++r) {
      const __m256i packed = _mm512_castsi512_si256(
          FixCode3(_mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(
              row0 + r * row_bytes + pairs * 2 * kTernaryBlockBytes)))));
      __m256i acc256 = _mm256_setzero_si256();
      QAT_UNROLL
      for (int j = 0; j < 4; ++j) {
        const __m256i codes =
            _mm256_and_si256(j == 0 ? packed : _mm256_srli_epi16(packed, 2 * j), mask256);
        acc256 = _mm256_dpbusd_epi32(acc256, codes, xv[j]);
      }
      acc[r][0] = _mm512_add_epi32(acc[r][0], _mm512_castsi256_si512(acc256));
    }
  }
  QAT_UNROLL
  for (int r = 0; r < kRows; ++r) {
    out[r] = _mm512_reduce_add_epi32(_mm512_add_epi32(acc[r][0], acc[r][1]));
  }
}

constexpr int kInt8Rows = 4;  // rows per int8 group: each activation load feeds four rows

}  // namespace

void Ternary3GemvRows(const Ternary3View& w, const float* x_padded, float* y, int64_t row_begin,
                      int64_t row_end) {
  const int64_t row_bytes = Ternary3RowBytes(w.cols);
  const int64_t blocks = row_bytes / kTernary3BlockBytes;
  float dots[kGemvRows];
  for (int64_t r = row_begin; r < row_end; r += kGemvRows) {
    const uint8_t* rows = w.data + r * row_bytes;
    const int64_t n = MinInt(kGemvRows, row_end - r);
    switch (n) {
      case 1:
        Ternary3DotRows<1>(rows, row_bytes, blocks, x_padded, dots);
        break;
      case 2:
        Ternary3DotRows<2>(rows, row_bytes, blocks, x_padded, dots);
        break;
      case 3:
        Ternary3DotRows<3>(rows, row_bytes, blocks, x_padded, dots);
        break;
      default:
        Ternary3DotRows<4>(rows, row_bytes, blocks, x_padded, dots);
    }
    for (int64_t k = 0; k < n; ++k) y[r + k] = Ternary3RowScale(w, r + k) * dots[k];
  }
}

void Ternary3DecodeRows(const Ternary3View& w, int64_t row_begin, int64_t row_end, float* out) {
  const int64_t row_bytes = Ternary3RowBytes(w.cols);
  const int64_t blocks = row_bytes / kTernary3BlockBytes;
  const Ternary3Tables tab = MakeTernary3Tables();
  alignas(64) float partial[kTernary3Block];
  for (int64_t r = row_begin; r < row_end; ++r) {
    float* dst = out + (r - row_begin) * w.cols;
    for (int64_t b = 0; b < blocks; ++b) {
      // A partial last block is decoded aside and only its real columns copied.
      const bool whole = (b + 1) * kTernary3Block <= w.cols;
      float* block_dst = whole ? dst + b * kTernary3Block : partial;
      QAT_UNROLL
      for (int h = 0; h < 2; ++h) {
        __m512 t[5];
        DecodeTernary3Half(w.data + r * row_bytes + b * kTernary3BlockBytes + 16 * h, tab, t);
        QAT_UNROLL
        for (int n = 0; n < 5; ++n) _mm512_storeu_ps(block_dst + 32 * n + 16 * h, t[n]);
      }
      if (!whole) {
        std::memcpy(dst + b * kTernary3Block, partial,
                    sizeof(float) * (w.cols - b * kTernary3Block));
      }
    }
  }
}

void IntKGemvRows(const IntKView& w, const float* x, float* y, int64_t row_begin, int64_t row_end) {
  QAT_INTK_DISPATCH(IntKGemvRowsT, w, w, x, y, row_begin, row_end);
}

void IntKDecodeRows(const IntKView& w, int64_t row_begin, int64_t row_end, float* out) {
  QAT_INTK_DISPATCH(IntKDecodeRowsT, w, w, row_begin, row_end, out);
}

void TernaryInt8Rows(const TernaryView& w, const int8_t* xq, const int32_t* xsums,
                     const float* xscales, int64_t m, float* y, int64_t row_begin,
                     int64_t row_end) {
  const int64_t row_bytes = TernaryRowBytes(w.cols);
  const int64_t blocks = row_bytes / kTernaryBlockBytes;
  const int64_t padded = row_bytes * 4;
  int32_t dots[kInt8Rows];
  // Weight rows outermost: a group of rows stays in L1 while every activation row passes.
  for (int64_t r = row_begin; r < row_end; r += kInt8Rows) {
    const int64_t n = MinInt(kInt8Rows, row_end - r);
    for (int64_t i = 0; i < m; ++i) {
      const int8_t* xi = xq + i * padded;
      switch (n) {
        case 1:
          CodeDotRows<1>(w.data + r * row_bytes, row_bytes, blocks, xi, dots);
          break;
        case 2:
          CodeDotRows<2>(w.data + r * row_bytes, row_bytes, blocks, xi, dots);
          break;
        case 3:
          CodeDotRows<3>(w.data + r * row_bytes, row_bytes, blocks, xi, dots);
          break;
        default:
          CodeDotRows<4>(w.data + r * row_bytes, row_bytes, blocks, xi, dots);
      }
      for (int64_t k = 0; k < n; ++k) {
        y[i * w.rows + r + k] =
            (TernaryRowScale(w, r + k) * xscales[i]) * static_cast<float>(dots[k] - xsums[i]);
      }
    }
  }
}

void QuantizeInt8Rows(const float* x, int64_t cols, int8_t* xq, float* xscales, int64_t row_begin,
                      int64_t row_end) {
  const __m512 float_max = _mm512_set1_ps(FLT_MAX);
  for (int64_t i = row_begin; i < row_end; ++i) {
    const float* src = x + i * cols;
    int8_t* dst = xq + i * cols;
    // absmax and finiteness (masked loads cover the tail): max is exact in any order, so this
    // equals the scalar result.
    __m512 vmax = _mm512_setzero_ps();
    __mmask16 finite = 0xFFFF;
    for (int64_t c = 0; c < cols; c += 16) {
      const __mmask16 live =
          cols - c >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << (cols - c)) - 1);
      const __m512 a = _mm512_abs_ps(_mm512_maskz_loadu_ps(live, src + c));
      finite &= _mm512_cmp_ps_mask(a, float_max, _CMP_LE_OQ);
      vmax = _mm512_max_ps(vmax, a);
    }
    const float absmax = _mm512_reduce_max_ps(vmax);
    if (finite != 0xFFFF || absmax == 0.0f) {
      xscales[i] = finite == 0xFFFF ? 0.0f : std::numeric_limits<float>::quiet_NaN();
      std::memset(dst, 0, cols);
      continue;
    }
    xscales[i] = absmax / 127.0f;
    const __m512 inv = _mm512_set1_ps(127.0f / absmax);
    const __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127);
    for (int64_t c = 0; c < cols; c += 16) {
      const __mmask16 live =
          cols - c >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << (cols - c)) - 1);
      // Round half to even (the MXCSR default, as nearbyint), clamp, narrow.
      __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(live, src + c), inv));
      q = _mm512_min_epi32(_mm512_max_epi32(q, lo), hi);
      _mm_mask_storeu_epi8(dst + c, live, _mm512_cvtepi32_epi8(q));
    }
  }
}

}  // namespace qat::kernels::avx512
