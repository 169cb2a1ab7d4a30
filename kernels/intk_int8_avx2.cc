// AVX2 kernels of the int4-x16 / int2-x16 products with int8 activations (intk_int8.h; compiled
// with -mavx2 -mfma -mf16c; also what AVX-512 CPUs without VNNI run).
//
// A tile is taken as two 8-row halves: bytes 32h .. 32h + 31 of each chunk hold rows 8h .. 8h + 7.
// The 32 bytes, masked and shifted as in the AVX-512 kernel, give u8 operands whose int32 lane l
// holds 4 codes of one row; vpmaddubsw against the 4 activation bytes broadcast to every lane gives
// int16 pair sums (|.| <= 2 * 15 * 128 = 3840, no saturation), the chunk's 2 (int4) or 4 (int2) of
// them are added in int16 (|.| <= 7680) and widened by vpmaddwd with ones into an exact int32
// accumulator. The float steps per group and row are those of intk_int8.h (vcvtdq2ps, vfnmadd,
// vfmadd, then vmulps by xscale).
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "kernels/intk_int8.h"
#include "kernels/intk_int8_impl.h"

namespace qat::kernels::avx2 {
namespace {

// Complete unrolling of the short fixed loops keeps the small arrays of vectors in registers.
#define QAT_UNROLL _Pragma("GCC unroll 16")

// No std:: algorithm templates in this file: an out-of-line instantiation compiled for this
// instruction set could be picked by the linker for code that runs on any CPU.
inline int64_t MinInt(int64_t a, int64_t b) { return a < b ? a : b; }

constexpr int kMaxM = 4;                  // activation rows per pass (16 ymm registers)
constexpr int64_t kPrefetchBytes = 1024;  // how far ahead each tile's stream is prefetched

inline __m256i Broadcast4(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm256_set1_epi32(v);
}

// Outputs of kH consecutive 8-row halves from half h0 (half h = rows 8h .. 8h + 7) for activation
// rows i0 .. i0 + kM - 1.
template <int kBits, int kH, int kM>
void Pass(const IntKX16View& w, const int8_t* x_padded, const int32_t* xsums, const float* xscales,
          int64_t i0, int64_t h0, float* y) {
  constexpr int kFields = kBits == 4 ? 2 : 4;
  constexpr int64_t kChunkCols = kBits == 4 ? 8 : 16;
  const int64_t chunks = IntKX16Chunks(kBits, w.cols);
  const int64_t padded = chunks * kChunkCols;
  const int64_t groups = IntKGroupsPerRow(w.group, w.cols);
  const int64_t chunks_per_group = w.group / kChunkCols;
  const __m256i mask = _mm256_set1_epi8(kBits == 4 ? 0x0F : 0x03);
  const __m256i ones = _mm256_set1_epi16(1);
  const int8_t* x[kM];
  QAT_UNROLL
  for (int i = 0; i < kM; ++i) x[i] = x_padded + (i0 + i) * padded;
  const uint8_t* base[kH];
  QAT_UNROLL
  for (int h = 0; h < kH; ++h) {
    const int64_t half = h0 + h;
    base[h] = w.data + half / 2 * chunks * kIntKX16ChunkBytes + half % 2 * 32;
  }
  // d: running sums over the row (wrapping int32); a group's sum is the difference from `start`,
  // the total at the group's start: exact modulo 2^32, so exact. (Zeroing per group made GCC 12
  // copy and spill the accumulators.)
  __m256 acc[kH][kM];
  __m256i d[kH][kM], start[kH][kM];
  QAT_UNROLL
  for (int h = 0; h < kH; ++h) {
    QAT_UNROLL
    for (int i = 0; i < kM; ++i) {
      acc[h][i] = _mm256_setzero_ps();
      d[h][i] = start[h][i] = _mm256_setzero_si256();
    }
  }
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t k1 = MinInt(chunks, (g + 1) * chunks_per_group);
    for (int64_t k = g * chunks_per_group; k < k1; ++k) {
      QAT_UNROLL
      for (int h = 0; h < kH; ++h) {
        const uint8_t* p = base[h] + k * kIntKX16ChunkBytes;
        _mm_prefetch(reinterpret_cast<const char*>(p + kPrefetchBytes), _MM_HINT_T0);
        const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
        __m256i v[kFields];
        QAT_UNROLL
        for (int f = 0; f < kFields; ++f) {
          const int shift = (kBits == 4 ? 4 : 2) * f;
          v[f] = _mm256_and_si256(f == 0 ? raw : _mm256_srli_epi16(raw, shift), mask);
        }
        QAT_UNROLL
        for (int i = 0; i < kM; ++i) {
          // The chunk's int16 pair sums (|.| <= kFields * 3840), widened once per chunk.
          __m256i sum16 = _mm256_maddubs_epi16(v[0], Broadcast4(x[i] + k * kChunkCols));
          QAT_UNROLL
          for (int f = 1; f < kFields; ++f) {
            sum16 = _mm256_add_epi16(
                sum16, _mm256_maddubs_epi16(v[f], Broadcast4(x[i] + k * kChunkCols + 4 * f)));
          }
          d[h][i] = _mm256_add_epi32(d[h][i], _mm256_madd_epi16(sum16, ones));
        }
      }
    }
    QAT_UNROLL
    for (int h = 0; h < kH; ++h) {
      const int64_t half = h0 + h;
      const int64_t p = (half / 2 * groups + g) * kIntKX16Rows + half % 2 * 8;
      const __m256 scale = _mm256_loadu_ps(w.scales + p);
      const __m256 zero = _mm256_loadu_ps(w.zeros + p);
      QAT_UNROLL
      for (int i = 0; i < kM; ++i) {
        const __m256i dsum = _mm256_sub_epi32(d[h][i], start[h][i]);
        start[h][i] = d[h][i];
        const __m256 s = _mm256_set1_ps(static_cast<float>(xsums[(i0 + i) * groups + g]));
        const __m256 u = _mm256_fnmadd_ps(zero, s, _mm256_cvtepi32_ps(dsum));
        acc[h][i] = _mm256_fmadd_ps(scale, u, acc[h][i]);
      }
    }
  }
  QAT_UNROLL
  for (int h = 0; h < kH; ++h) {
    const int64_t r0 = (h0 + h) * 8;
    const int64_t live = MinInt(8, w.rows - r0);
    if (live <= 0) continue;  // a padding half
    const __m256i store = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int32_t>(live)),
                                             _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    QAT_UNROLL
    for (int i = 0; i < kM; ++i) {
      _mm256_maskstore_ps(y + (i0 + i) * w.rows + r0, store,
                          _mm256_mul_ps(_mm256_set1_ps(xscales[i0 + i]), acc[h][i]));
    }
  }
}

// Halves [h_begin, h_end) for activation rows i0 .. i0 + kM - 1, in passes of kH halves.
template <int kBits, int kM>
void Halves(const IntKX16View& w, const int8_t* x_padded, const int32_t* xsums,
            const float* xscales, int64_t i0, int64_t h_begin, int64_t h_end, float* y) {
  constexpr int kH = kM == 1 ? 2 : 1;
  int64_t h = h_begin;
  for (; h + kH <= h_end; h += kH) Pass<kBits, kH, kM>(w, x_padded, xsums, xscales, i0, h, y);
  for (; h < h_end; ++h) Pass<kBits, 1, kM>(w, x_padded, xsums, xscales, i0, h, y);
}

template <int kBits>
void RowsT(const IntKX16View& w, const int8_t* x_padded, const int32_t* xsums, const float* xscales,
           int64_t m, float* y, int64_t tile_begin, int64_t tile_end) {
  const int64_t passes = (m + kMaxM - 1) / kMaxM;
  // Halves of real rows only: a tile's second half may be all padding.
  const int64_t h_last = MinInt(2 * tile_end, (w.rows + 7) / 8);
  for (int64_t t = tile_begin; t < tile_end; ++t) {  // a tile (up to 16 KiB per 1024 columns)
    const int64_t h0 = 2 * t, h1 = MinInt(h0 + 2, h_last);
    int64_t i0 = 0;
    for (int64_t pass = 0; pass < passes; ++pass) {
      const int64_t n = m / passes + (pass < m % passes ? 1 : 0);
      switch (n) {
        case 1:
          Halves<kBits, 1>(w, x_padded, xsums, xscales, i0, h0, h1, y);
          break;
        case 2:
          Halves<kBits, 2>(w, x_padded, xsums, xscales, i0, h0, h1, y);
          break;
        case 3:
          Halves<kBits, 3>(w, x_padded, xsums, xscales, i0, h0, h1, y);
          break;
        default:
          Halves<kBits, 4>(w, x_padded, xsums, xscales, i0, h0, h1, y);
      }
      i0 += n;
    }
  }
}

}  // namespace

void IntKX16Rows(const IntKX16View& w, const int8_t* x_padded, const int32_t* xsums,
                 const float* xscales, int64_t m, float* y, int64_t tile_begin, int64_t tile_end) {
  if (w.bits == 4) return RowsT<4>(w, x_padded, xsums, xscales, m, y, tile_begin, tile_end);
  RowsT<2>(w, x_padded, xsums, xscales, m, y, tile_begin, tile_end);
}

}  // namespace qat::kernels::avx2
