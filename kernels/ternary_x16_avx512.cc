// AVX-512 kernels for the ternary2-x16 layout (ternary_x16.h; compiled with -mavx512f -mavx512bw
// -mavx512vl -mavx512dq -mfma; run only when cpuid reports them, see ternary_x16.cc).
//
// GEMV (one activation row), by table lookup. Per 32-bit word w of the rows, the 8 nibbles of
// a lane each index one of 8 tables of 16 floats built from x (BuildTernaryX16Tables): table 8w+n
// holds t(lo) * x[c_lo] + t(hi) * x[c_hi] for every nibble value, with c_lo, c_hi the columns of
// nibble n of word w. One vpermps then adds the contribution of 2 columns to 16 rows, and a
// shift by 4 brings the next nibble down: per word of 16 rows (256 weights) 1 load + 8 lookups +
// 7 shifts + 8 adds. Four groups (64 rows) share each table load. Half of the adds are issued as
// FMAs by 1.0 (exact: a * 1 + b rounds once, like a + b), which spreads them over more execution
// pipes on Zen 5: ~15% faster single-threaded than plain adds. The 8 lookups of a word are
// summed as a tree and added to one of two alternating accumulators, so an output's rounding
// grows with cols / 32 additions rather than cols / 2. Measured on the Zen 5 of this project's
// machine, 4096 x 14336 on one thread: ~0.77 ms against ~1.35 ms for the row-major kernel.
//
// GEMM (M > 1 activation rows), by outer products. The same nibbles index the constant trit
// tables (trit_tables_avx512.h), giving for columns c_lo and c_hi the trits of 16 rows; each is
// multiplied by x[i][c] broadcast, for passes of up to 8 activation rows, so one decode feeds 16
// FMAs. Each block of 128 columns is summed in its own accumulator and added to the output's
// total in block order; columns go in chunks of 8 blocks (the activations of a pass, 8 x 4 KiB,
// stay in L1 while a tile of 4 groups streams past), with the totals kept in y between chunks.
// Measured single-threaded, M = 8 on 4096 x 14336: ~5.0 ms against ~10.6 ms row-major.
//
// Every output's arithmetic is fixed by its row and column positions alone, whatever the row
// range, M or tiling, so results do not depend on the thread count.
#include <algorithm>
#include <cstdint>

#include "kernels/ternary_impl.h"
#include "kernels/ternary_x16.h"
#include "kernels/trit_tables_avx512.h"  // includes immintrin.h

namespace qat::kernels::avx512 {
namespace {

constexpr int64_t kLanes = 16;          // = kTernaryX16Rows: one row per lane
constexpr int kGemvGroups = 4;          // groups per GEMV pass (share each table load)
constexpr int64_t kPrefetchWords = 16;  // how far ahead (in words, 1 KiB) each group is prefetched
constexpr int kPassRows = 8;            // activation rows per GEMM pass (8 + 8 accumulators)
constexpr int64_t kChunkBlocks = 8;     // 1024 columns per GEMM chunk
constexpr int64_t kTileGroups = 4;      // groups sharing a GEMM pass's activations
constexpr int64_t kWordsPerBlock = kTernaryBlockBytes / 4;

// Lanes of group g that are real rows (the last group may be partial).
inline __mmask16 RowMask(const TernaryX16View& w, int64_t g) {
  const int64_t n = std::min<int64_t>(kLanes, w.rows - g * kLanes);
  return static_cast<__mmask16>((1u << n) - 1);
}

// Scales of the 16 rows of group g (per tensor: the one scale in every lane).
inline __m512 GroupScales(const TernaryX16View& w, int64_t g, __mmask16 mask) {
  return w.n_scales == 1 ? _mm512_set1_ps(w.scales[0])
                         : _mm512_maskz_loadu_ps(mask, w.scales + g * kLanes);
}

// Column c_lo of nibble n of word `word` (ternary_x16.h); c_hi = c_lo + 32.
constexpr int64_t LowColumn(int64_t word, int n) {
  return kTernaryBlock * (word / kWordsPerBlock) + 4 * (word % kWordsPerBlock) + n / 2 +
         64 * (n % 2);
}

// y for groups g0 .. g0+kGroups-1 of a GEMV.
template <int kGroups>
void GemvPass(const TernaryX16View& w, int64_t words_per_row, const float* tables, int64_t g0,
              float* y) {
  const uint32_t* base = w.words + g0 * words_per_row * kLanes;
  const __m512 ones = _mm512_set1_ps(1.0f);
  __m512 acc[kGroups][2];
  for (int g = 0; g < kGroups; ++g) acc[g][0] = acc[g][1] = _mm512_setzero_ps();
  for (int64_t word = 0; word < words_per_row; ++word) {
    __m512i v[kGroups];
    for (int g = 0; g < kGroups; ++g) {
      const uint32_t* p = base + (g * words_per_row + word) * kLanes;
      v[g] = _mm512_loadu_si512(p);
      // A hint only: prefetching past the end of the data is harmless.
      _mm_prefetch(reinterpret_cast<const char*>(p + kPrefetchWords * kLanes), _MM_HINT_T0);
    }
    const float* t = tables + word * 8 * kLanes;
    __m512 pair_sums[kGroups][4];
    for (int q = 0; q < 4; ++q) {  // nibbles 2q and 2q+1
      const __m512 t0 = _mm512_loadu_ps(t + 2 * q * kLanes);
      const __m512 t1 = _mm512_loadu_ps(t + (2 * q + 1) * kLanes);
      for (int g = 0; g < kGroups; ++g) {
        const __m512 a = _mm512_permutexvar_ps(v[g], t0);
        v[g] = _mm512_srli_epi32(v[g], 4);
        const __m512 b = _mm512_permutexvar_ps(v[g], t1);
        v[g] = _mm512_srli_epi32(v[g], 4);
        pair_sums[g][q] = _mm512_fmadd_ps(a, ones, b);  // = a + b exactly, on the FMA pipes
      }
    }
    for (int g = 0; g < kGroups; ++g) {
      const __m512 word_sum = _mm512_add_ps(_mm512_add_ps(pair_sums[g][0], pair_sums[g][1]),
                                            _mm512_add_ps(pair_sums[g][2], pair_sums[g][3]));
      acc[g][word & 1] = _mm512_add_ps(acc[g][word & 1], word_sum);
    }
  }
  for (int g = 0; g < kGroups; ++g) {
    const __mmask16 mask = RowMask(w, g0 + g);
    const __m512 sum = _mm512_add_ps(acc[g][0], acc[g][1]);
    _mm512_mask_storeu_ps(y + (g0 + g) * kLanes, mask,
                          _mm512_mul_ps(sum, GroupScales(w, g0 + g, mask)));
  }
}

// total[i] += the products of group `group` (its words from `group_words`) with activation rows
// x[i] (row stride `padded`) over blocks [b0, b1).
template <int kM>
void OuterBlocks(const uint32_t* group_words, int64_t b0, int64_t b1, const float* x,
                 int64_t padded, __m512 total[kM]) {
  const __m512 lo = TritTableLo(), hi = TritTableHi();
  for (int64_t b = b0; b < b1; ++b) {
    __m512 acc[kM];
    for (int i = 0; i < kM; ++i) acc[i] = _mm512_setzero_ps();
    for (int64_t word = b * kWordsPerBlock; word < (b + 1) * kWordsPerBlock; ++word) {
      const uint32_t* p = group_words + word * kLanes;
      __m512i v = _mm512_loadu_si512(p);
      _mm_prefetch(reinterpret_cast<const char*>(p + kPrefetchWords * kLanes), _MM_HINT_T0);
      for (int n = 0; n < 8; ++n) {
        const __m512 t_lo = _mm512_permutexvar_ps(v, lo);
        const __m512 t_hi = _mm512_permutexvar_ps(v, hi);
        v = _mm512_srli_epi32(v, 4);
        const float* xc = x + LowColumn(word, n);
        for (int i = 0; i < kM; ++i) {
          acc[i] = _mm512_fmadd_ps(t_lo, _mm512_set1_ps(xc[i * padded]), acc[i]);
          acc[i] = _mm512_fmadd_ps(t_hi, _mm512_set1_ps(xc[i * padded + 32]), acc[i]);
        }
      }
    }
    for (int i = 0; i < kM; ++i) total[i] = _mm512_add_ps(total[i], acc[i]);
  }
}

// One pass: activation rows i0 .. i0+kM-1 times group g over blocks [b0, b1), the running
// totals kept in y (zero before the first chunk).
template <int kM>
void OuterPass(const TernaryX16View& w, int64_t words_per_row, const float* x_padded, int64_t i0,
               int64_t g, int64_t b0, int64_t b1, float* y) {
  const int64_t padded = words_per_row * kLanes;
  const __mmask16 mask = RowMask(w, g);
  __m512 total[kM];
  for (int i = 0; i < kM; ++i) {
    total[i] = b0 == 0 ? _mm512_setzero_ps()
                       : _mm512_maskz_loadu_ps(mask, y + (i0 + i) * w.rows + g * kLanes);
  }
  OuterBlocks<kM>(w.words + g * words_per_row * kLanes, b0, b1, x_padded + i0 * padded, padded,
                  total);
  for (int i = 0; i < kM; ++i) {
    _mm512_mask_storeu_ps(y + (i0 + i) * w.rows + g * kLanes, mask, total[i]);
  }
}

template <int kM>
void OuterPassM(int64_t m, const TernaryX16View& w, int64_t words_per_row, const float* x_padded,
                int64_t i0, int64_t g, int64_t b0, int64_t b1, float* y) {
  if constexpr (kM > 1) {
    if (m < kM) return OuterPassM<kM - 1>(m, w, words_per_row, x_padded, i0, g, b0, b1, y);
  }
  OuterPass<kM>(w, words_per_row, x_padded, i0, g, b0, b1, y);
}

}  // namespace

void BuildTernaryX16Tables(const float* x_padded, int64_t cols, float* tables) {
  const int64_t words_per_row = TernaryRowBytes(cols) / 4;
  const __m512 lo = TritTableLo(), hi = TritTableHi();
  for (int64_t word = 0; word < words_per_row; ++word) {
    for (int n = 0; n < 8; ++n) {
      const int64_t c = LowColumn(word, n);
      // lo * x exactly (trits are -1, 0, 1), then one rounding when hi * x is added.
      const __m512 t = _mm512_fmadd_ps(hi, _mm512_set1_ps(x_padded[c + 32]),
                                       _mm512_mul_ps(lo, _mm512_set1_ps(x_padded[c])));
      _mm512_storeu_ps(tables + (word * 8 + n) * kLanes, t);
    }
  }
}

void TernaryX16GemvRows(const TernaryX16View& w, const float* tables, float* y, int64_t row_begin,
                        int64_t row_end) {
  const int64_t words_per_row = TernaryRowBytes(w.cols) / 4;
  const int64_t g_end = TernaryX16Groups(row_end);
  for (int64_t g = row_begin / kLanes; g < g_end; g += kGemvGroups) {
    switch (std::min<int64_t>(kGemvGroups, g_end - g)) {
      case 1:
        GemvPass<1>(w, words_per_row, tables, g, y);
        break;
      case 2:
        GemvPass<2>(w, words_per_row, tables, g, y);
        break;
      case 3:
        GemvPass<3>(w, words_per_row, tables, g, y);
        break;
      default:
        GemvPass<4>(w, words_per_row, tables, g, y);
    }
  }
}

void TernaryX16GemmRows(const TernaryX16View& w, const float* x_padded, int64_t m, float* y,
                        int64_t row_begin, int64_t row_end) {
  const int64_t words_per_row = TernaryRowBytes(w.cols) / 4;
  const int64_t blocks = words_per_row / kWordsPerBlock;
  const int64_t g_end = TernaryX16Groups(row_end);
  for (int64_t t0 = row_begin / kLanes; t0 < g_end; t0 += kTileGroups) {
    const int64_t t1 = std::min(g_end, t0 + kTileGroups);
    for (int64_t b0 = 0; b0 < blocks; b0 += kChunkBlocks) {
      const int64_t b1 = std::min(blocks, b0 + kChunkBlocks);
      for (int64_t i0 = 0; i0 < m; i0 += kPassRows) {
        for (int64_t g = t0; g < t1; ++g) {
          OuterPassM<kPassRows>(m - i0, w, words_per_row, x_padded, i0, g, b0, b1, y);
        }
      }
    }
    for (int64_t g = t0; g < t1; ++g) {
      const __mmask16 mask = RowMask(w, g);
      const __m512 scales = GroupScales(w, g, mask);
      for (int64_t i = 0; i < m; ++i) {
        float* yi = y + i * w.rows + g * kLanes;
        _mm512_mask_storeu_ps(yi, mask, _mm512_mul_ps(_mm512_maskz_loadu_ps(mask, yi), scales));
      }
    }
  }
}

}  // namespace qat::kernels::avx512
