// AVX2 kernels of lowbit.h (compiled with -mavx2 -mfma -mf16c; run only when cpuid reports them).
//
// ternary3: 8 bytes of a block are zero-extended into 8 int32 lanes; lane l of byte 8g + l holds
// the codes of weights 32n + 8g + l (n = 0..4), so each n is 8 consecutive activations. Exact
// multiply-highs (vpmulhuw by ceil(2^16/3^n)) give floor(b/3^n); code n is floor(b/3^n) -
// 3 floor(b/3^(n+1)), and an 8-float table (vpermps) turns a code into its trit.
// int2: an 8-entry table of the group's dequantized values indexed by the low 3 bits of
// (bits >> 2j) (the code plus one unrelated bit). int4: the nibble is converted to float and
// dequantized as scale * (q - zero), exactly as the scalar code does.
// int8 x ternary2: codes are unpacked to bytes (shift, mask), the invalid code 3 is mapped to 1
// (trit 0) with vpshufb, and vpmaddubsw multiplies the unsigned codes with the signed
// activations; the exact int32 sum of (t + 1) * x minus sum x is sum t * x.
#include <immintrin.h>

#include <cfloat>
#include <cstdint>
#include <cstring>
#include <limits>

#include "kernels/lowbit.h"
#include "kernels/lowbit_impl.h"
#include "kernels/ternary.h"
#include "kernels/ternary_impl.h"

namespace qat::kernels::avx2 {
namespace {

// Complete unrolling of the short fixed loops keeps the small arrays of vectors in registers; GCC
// does it at -O3 by itself but not at -O2, where the kernels would run several times slower.
#define QAT_UNROLL _Pragma("GCC unroll 16")

// No std:: algorithm templates in this file: an out-of-line instantiation compiled for this
// instruction set could be picked by the linker for code that runs on any CPU.
inline int64_t MinInt(int64_t a, int64_t b) { return a < b ? a : b; }

// Lanes summed in a fixed order.
inline float ReduceAdd(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline int32_t ReduceAddInt(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm_cvtsi128_si32(s);
}

inline __m256i Load8Bytes(const uint8_t* p) {
  return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
}

constexpr int64_t kPrefetchBytes = 4096;  // how far ahead each weight row is prefetched

// ----- ternary3 -----

// Lane i -> trit of code i mod 3 (index 3 is the top digit of an invalid byte, 3 mod 3 = 0).
inline __m256 Mod3Table() { return _mm256_setr_ps(-1, 0, 1, -1, 0, 1, -1, 0); }

// Trits of the 40 weights held by 8 bytes: t[n] lane l is the trit of weight 32n + l relative to
// the first byte's weights. The 32-bit lanes hold b < 256 in their low 16 bits, so the 16-bit
// multiplies act on b alone (the high halves stay 0).
inline void DecodeTernary3Eighth(const uint8_t* p, __m256 table, __m256 t[5]) {
  const __m256i b = Load8Bytes(p);
  const __m256i three = _mm256_set1_epi32(3);
  const __m256i d1 = _mm256_mulhi_epu16(b, _mm256_set1_epi32(21846));  // floor(b / 3)
  const __m256i d2 = _mm256_mulhi_epu16(b, _mm256_set1_epi32(7282));   // floor(b / 9)
  const __m256i d3 = _mm256_mulhi_epu16(b, _mm256_set1_epi32(2428));   // floor(b / 27)
  const __m256i d4 = _mm256_mulhi_epu16(b, _mm256_set1_epi32(810));    // floor(b / 81)
  t[0] = _mm256_permutevar8x32_ps(table, _mm256_sub_epi32(b, _mm256_mullo_epi16(d1, three)));
  t[1] = _mm256_permutevar8x32_ps(table, _mm256_sub_epi32(d1, _mm256_mullo_epi16(d2, three)));
  t[2] = _mm256_permutevar8x32_ps(table, _mm256_sub_epi32(d2, _mm256_mullo_epi16(d3, three)));
  t[3] = _mm256_permutevar8x32_ps(table, _mm256_sub_epi32(d3, _mm256_mullo_epi16(d4, three)));
  t[4] = _mm256_permutevar8x32_ps(table, d4);
}

// out[r] = sum_c t[r][c] * x[c] over whole blocks for kRows consecutive rows. Two accumulators
// per row, combined in a fixed order, so a row's result does not depend on kRows.
template <int kRows>
void Ternary3DotRows(const uint8_t* row0, int64_t row_bytes, int64_t blocks, const float* x,
                     float* out) {
  const __m256 table = Mod3Table();
  __m256 acc[kRows][2];
  QAT_UNROLL
  for (int r = 0; r < kRows; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* block = row0 + b * kTernary3BlockBytes;
    QAT_UNROLL
    for (int r = 0; r < kRows; ++r) {  // a hint only: past the end is harmless
      _mm_prefetch(reinterpret_cast<const char*>(block + r * row_bytes + kPrefetchBytes),
                   _MM_HINT_T0);
    }
    QAT_UNROLL
    for (int g = 0; g < 4; ++g) {
      __m256 xv[5];
      QAT_UNROLL
      for (int n = 0; n < 5; ++n) xv[n] = _mm256_loadu_ps(x + b * kTernary3Block + 32 * n + 8 * g);
      QAT_UNROLL
      for (int r = 0; r < kRows; ++r) {
        __m256 t[5];
        DecodeTernary3Eighth(block + r * row_bytes + 8 * g, table, t);
        QAT_UNROLL
        for (int n = 0; n < 5; ++n) acc[r][n & 1] = _mm256_fmadd_ps(t[n], xv[n], acc[r][n & 1]);
      }
    }
  }
  QAT_UNROLL
  for (int r = 0; r < kRows; ++r) out[r] = ReduceAdd(_mm256_add_ps(acc[r][0], acc[r][1]));
}

// ----- int2 / int4 -----

constexpr int64_t kStep = 64;  // columns per step; each 32-column half lies in one group

// Dequantization table of a group for int2: lane i -> scale * ((i & 3) - zero), the index
// holding the code in bits [1:0] and one bit of the next code above it.
inline __m256 Int2Table(__m256 scale, __m256 zero) {
  const __m256 codes = _mm256_setr_ps(0, 1, 2, 3, 0, 1, 2, 3);
  return _mm256_mul_ps(_mm256_sub_ps(codes, zero), scale);
}

// Scale and zero point of the two 32-column halves of the step at column c of row r.
struct StepParams {
  __m256 scale[2], zero[2];
};

// The values of the 64 weights of one step: v[k] holds weights 8k .. 8k + 7 of the step.
template <int kBits>
inline void DecodeIntKStep(const uint8_t* p, const StepParams& sp, __m256 v[8]) {
  if constexpr (kBits == 4) {
    // Unit u (16 bytes, 32 weights) = half u; bytes 8h .. 8h+7 hold weights 8h + l (low nibble)
    // and 16 + 8h + l (high nibble).
    const __m256i low_nibble = _mm256_set1_epi32(0xF);
    QAT_UNROLL
    for (int u = 0; u < 2; ++u) {
      QAT_UNROLL
      for (int h = 0; h < 2; ++h) {
        const __m256i b = Load8Bytes(p + 16 * u + 8 * h);
        const __m256 lo = _mm256_cvtepi32_ps(_mm256_and_si256(b, low_nibble));
        const __m256 hi = _mm256_cvtepi32_ps(_mm256_srli_epi32(b, 4));
        v[4 * u + h] = _mm256_mul_ps(_mm256_sub_ps(lo, sp.zero[u]), sp.scale[u]);
        v[4 * u + 2 + h] = _mm256_mul_ps(_mm256_sub_ps(hi, sp.zero[u]), sp.scale[u]);
      }
    }
  } else {
    // One unit (16 bytes); bytes 8h .. 8h+7 hold weights 16j + 8h + l at bits [2j+1:2j];
    // j = 0, 1 are the first half, j = 2, 3 the second.
    const __m256 table[2] = {Int2Table(sp.scale[0], sp.zero[0]),
                             Int2Table(sp.scale[1], sp.zero[1])};
    QAT_UNROLL
    for (int h = 0; h < 2; ++h) {
      const __m256i b = Load8Bytes(p + 8 * h);
      QAT_UNROLL
      for (int j = 0; j < 4; ++j) {
        const __m256i index = j == 0 ? b : _mm256_srli_epi32(b, 2 * j);
        v[2 * j + h] = _mm256_permutevar8x32_ps(table[j / 2], index);
      }
    }
  }
}

template <int kGroup>
inline StepParams LoadStepParams(const float* scales, const float* zeros, int64_t c) {
  StepParams sp;
  for (int half = 0; half < 2; ++half) {
    const int64_t g = (c + 32 * half) / kGroup;
    sp.scale[half] = _mm256_set1_ps(scales[g]);
    sp.zero[half] = _mm256_set1_ps(zeros[g]);
  }
  return sp;
}

// y[r] for kRows consecutive rows from r0: whole steps in SIMD (two accumulators per row), then
// the last cols % 64 columns in scalar code, added after the lane reduction.
template <int kBits, int kGroup, int kRows>
void IntKDotRows(const IntKView& w, int64_t r0, const float* x, float* y) {
  const int64_t row_bytes = IntKRowBytes(kBits, w.cols);
  const int64_t groups = IntKGroupsPerRow(kGroup, w.cols);
  const int64_t steps = w.cols / kStep;
  constexpr int64_t kStepBytes = kStep * kBits / 8;
  __m256 acc[kRows][2];
  QAT_UNROLL
  for (int r = 0; r < kRows; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
  for (int64_t s = 0; s < steps; ++s) {
    const int64_t c = s * kStep;
    __m256 xv[8];
    QAT_UNROLL
    for (int k = 0; k < 8; ++k) xv[k] = _mm256_loadu_ps(x + c + 8 * k);
    QAT_UNROLL
    for (int r = 0; r < kRows; ++r) {
      const uint8_t* p = w.data + (r0 + r) * row_bytes + s * kStepBytes;
      _mm_prefetch(reinterpret_cast<const char*>(p + kPrefetchBytes), _MM_HINT_T0);
      const StepParams sp =
          LoadStepParams<kGroup>(w.scales + (r0 + r) * groups, w.zeros + (r0 + r) * groups, c);
      __m256 v[8];
      DecodeIntKStep<kBits>(p, sp, v);
      QAT_UNROLL
      for (int k = 0; k < 8; ++k) acc[r][k & 1] = _mm256_fmadd_ps(v[k], xv[k], acc[r][k & 1]);
    }
  }
  QAT_UNROLL
  for (int r = 0; r < kRows; ++r) {
    float tail = 0.0f;
    for (int64_t c = steps * kStep; c < w.cols; ++c) tail += IntKValueAt(w, r0 + r, c) * x[c];
    y[r0 + r] = ReduceAdd(_mm256_add_ps(acc[r][0], acc[r][1])) + tail;
  }
}

constexpr int kGemvRows = 2;  // rows per GEMV group (16 vector registers)

template <int kBits, int kGroup>
void IntKGemvRowsT(const IntKView& w, const float* x, float* y, int64_t row_begin,
                   int64_t row_end) {
  int64_t r = row_begin;
  for (; r + kGemvRows <= row_end; r += kGemvRows)
    IntKDotRows<kBits, kGroup, kGemvRows>(w, r, x, y);
  for (; r < row_end; ++r) IntKDotRows<kBits, kGroup, 1>(w, r, x, y);
}

template <int kBits, int kGroup>
void IntKDecodeRowsT(const IntKView& w, int64_t row_begin, int64_t row_end, float* out) {
  const int64_t row_bytes = IntKRowBytes(kBits, w.cols);
  const int64_t groups = IntKGroupsPerRow(kGroup, w.cols);
  const int64_t steps = w.cols / kStep;
  for (int64_t r = row_begin; r < row_end; ++r) {
    float* dst = out + (r - row_begin) * w.cols;
    for (int64_t s = 0; s < steps; ++s) {
      const StepParams sp =
          LoadStepParams<kGroup>(w.scales + r * groups, w.zeros + r * groups, s * kStep);
      __m256 v[8];
      DecodeIntKStep<kBits>(w.data + r * row_bytes + s * (kStep * kBits / 8), sp, v);
      QAT_UNROLL
      for (int k = 0; k < 8; ++k) _mm256_storeu_ps(dst + s * kStep + 8 * k, v[k]);
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

// ----- int8 activations x ternary2 -----

// Byte lookup (vpshufb, per 128-bit lane): code -> code, except the invalid code 3 -> 1 (trit 0).
inline __m256i CodeFixTable() {
  return _mm256_setr_epi8(0, 1, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,  //
                          0, 1, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
}

// out[r] = sum_c (t[r][c] + 1) * x[c] over `blocks` whole blocks for kRows rows, exactly.
template <int kRows>
void CodeDotRows(const uint8_t* row0, int64_t row_bytes, int64_t blocks, const int8_t* x,
                 int32_t* out) {
  const __m256i fix = CodeFixTable();
  const __m256i mask = _mm256_set1_epi8(3);
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i acc[kRows];
  QAT_UNROLL
  for (int r = 0; r < kRows; ++r) acc[r] = _mm256_setzero_si256();
  for (int64_t b = 0; b < blocks; ++b) {
    __m256i xv[4];
    QAT_UNROLL
    for (int j = 0; j < 4; ++j) {
      xv[j] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + b * kTernaryBlock + 32 * j));
    }
    QAT_UNROLL
    for (int r = 0; r < kRows; ++r) {
      const uint8_t* block = row0 + r * row_bytes + b * kTernaryBlockBytes;
      _mm_prefetch(reinterpret_cast<const char*>(block + kPrefetchBytes), _MM_HINT_T0);
      const __m256i packed = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block));
      __m256i sum16 = _mm256_setzero_si256();
      QAT_UNROLL
      for (int j = 0; j < 4; ++j) {
        // Byte m, bits [2j+1:2j]: weight 32j + m. Each product pair is at most 2 * 2 * 128, four
        // of them fit int16 without saturation.
        const __m256i codes = _mm256_shuffle_epi8(
            fix, _mm256_and_si256(j == 0 ? packed : _mm256_srli_epi16(packed, 2 * j), mask));
        sum16 = _mm256_add_epi16(sum16, _mm256_maddubs_epi16(codes, xv[j]));
      }
      acc[r] = _mm256_add_epi32(acc[r], _mm256_madd_epi16(sum16, ones));
    }
  }
  QAT_UNROLL
  for (int r = 0; r < kRows; ++r) out[r] = ReduceAddInt(acc[r]);
}

constexpr int kInt8Rows = 4;  // rows per int8 group: each activation load feeds four rows

}  // namespace

void Ternary3GemvRows(const Ternary3View& w, const float* x_padded, float* y, int64_t row_begin,
                      int64_t row_end) {
  const int64_t row_bytes = Ternary3RowBytes(w.cols);
  const int64_t blocks = row_bytes / kTernary3BlockBytes;
  float dots[kGemvRows];
  for (int64_t r = row_begin; r < row_end; r += kGemvRows) {
    const int64_t n = MinInt(kGemvRows, row_end - r);
    if (n == kGemvRows) {
      Ternary3DotRows<kGemvRows>(w.data + r * row_bytes, row_bytes, blocks, x_padded, dots);
    } else {
      Ternary3DotRows<1>(w.data + r * row_bytes, row_bytes, blocks, x_padded, dots);
    }
    for (int64_t k = 0; k < n; ++k) y[r + k] = Ternary3RowScale(w, r + k) * dots[k];
  }
}

void Ternary3DecodeRows(const Ternary3View& w, int64_t row_begin, int64_t row_end, float* out) {
  const int64_t row_bytes = Ternary3RowBytes(w.cols);
  const int64_t blocks = row_bytes / kTernary3BlockBytes;
  const __m256 table = Mod3Table();
  alignas(32) float partial[kTernary3Block];
  for (int64_t r = row_begin; r < row_end; ++r) {
    float* dst = out + (r - row_begin) * w.cols;
    for (int64_t b = 0; b < blocks; ++b) {
      // A partial last block is decoded aside and only its real columns copied.
      const bool whole = (b + 1) * kTernary3Block <= w.cols;
      float* block_dst = whole ? dst + b * kTernary3Block : partial;
      QAT_UNROLL
      for (int g = 0; g < 4; ++g) {
        __m256 t[5];
        DecodeTernary3Eighth(w.data + r * row_bytes + b * kTernary3BlockBytes + 8 * g, table, t);
        QAT_UNROLL
        for (int n = 0; n < 5; ++n) _mm256_storeu_ps(block_dst + 32 * n + 8 * g, t[n]);
      }
      if (!whole)
        std::memcpy(dst + b * kTernary3Block, partial,
                    sizeof(float) * (w.cols - b * kTernary3Block));
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
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  const __m256 float_max = _mm256_set1_ps(FLT_MAX);
  for (int64_t i = row_begin; i < row_end; ++i) {
    const float* src = x + i * cols;
    int8_t* dst = xq + i * cols;
    // absmax and finiteness: max is exact in any order, so this equals the scalar result.
    __m256 vmax = _mm256_setzero_ps();
    __m256 finite = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
    int64_t c = 0;
    for (; c + 8 <= cols; c += 8) {
      const __m256 a = _mm256_and_ps(_mm256_loadu_ps(src + c), abs_mask);
      finite = _mm256_and_ps(finite, _mm256_cmp_ps(a, float_max, _CMP_LE_OQ));
      vmax = _mm256_max_ps(vmax, a);
    }
    bool all_finite = _mm256_movemask_ps(finite) == 0xFF;
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, vmax);
    float absmax = 0.0f;
    for (float v : lanes) absmax = v > absmax ? v : absmax;
    for (; c < cols; ++c) {
      const float a = src[c] < 0 ? -src[c] : src[c];
      all_finite = all_finite && a <= FLT_MAX;
      absmax = a > absmax ? a : absmax;
    }
    if (!all_finite || absmax == 0.0f) {
      xscales[i] = all_finite ? 0.0f : std::numeric_limits<float>::quiet_NaN();
      std::memset(dst, 0, cols);
      continue;
    }
    xscales[i] = absmax / 127.0f;
    const float inv = 127.0f / absmax;
    const __m256 vinv = _mm256_set1_ps(inv);
    const __m256i lo = _mm256_set1_epi32(-127), hi = _mm256_set1_epi32(127);
    // Round half to even (the MXCSR default, as nearbyint), clamp, and narrow 32 at a time.
    auto quantize8 = [&](const float* p) {
      const __m256i q = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(p), vinv));
      return _mm256_min_epi32(_mm256_max_epi32(q, lo), hi);
    };
    c = 0;
    for (; c + 32 <= cols; c += 32) {
      const __m256i ab = _mm256_packs_epi32(quantize8(src + c), quantize8(src + c + 8));
      const __m256i cd = _mm256_packs_epi32(quantize8(src + c + 16), quantize8(src + c + 24));
      // packs works per 128-bit lane: restore column order with one dword permutation.
      const __m256i bytes = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(ab, cd),
                                                        _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + c), bytes);
    }
    for (; c < cols; ++c) {
      const int32_t q = _mm_cvtss_si32(_mm_set_ss(src[c] * inv));
      dst[c] = static_cast<int8_t>(q > 127 ? 127 : (q < -127 ? -127 : q));
    }
  }
}

}  // namespace qat::kernels::avx2
