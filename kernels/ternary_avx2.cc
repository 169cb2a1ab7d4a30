// AVX2 kernels (compiled with -mavx2 -mfma -mf16c; run only when cpuid reports them, see
// ternary.cc). The same algorithms as ternary_avx512.cc with 8 lanes.
//
// Ternary GEMV: each 8 bytes of a block are zero-extended from memory into 8 int32 lanes
// (vpmovzxbd). Byte m of a block holds weights m + 32j at bits [2j+1:2j], so bytes [8g, 8g+8)
// give weights [32j + 8g, +8): contiguous activations. vpermps with an 8-float table maps the
// low 3 bits of a lane (the code of bits [1:0] plus one unrelated bit) to the trit, so each group
// costs one shift and one lookup, with no correction term.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "kernels/ternary.h"
#include "kernels/ternary_impl.h"

namespace qat::kernels::avx2 {
namespace {

constexpr int64_t kLanes = 8;

// Lanes summed in a fixed order.
inline float ReduceAdd(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

constexpr int kGemvRows = 2;             // rows per GEMV group (16 vector registers)
constexpr int64_t kPrefetchBlocks = 16;  // how far ahead each row is prefetched

// Lane (index & 7) -> trit of the code in index bits [1:0]; code 3 (invalid) maps to 0, as in
// UnpackTernary.
inline __m256 TritTable() { return _mm256_setr_ps(-1, 0, 1, 0, -1, 0, 1, 0); }

// Trits of one 8-byte quarter of a block, as four vectors of 8 floats (weight groups j = 0..3).
inline void DecodeQuarter(const uint8_t* quarter, __m256 table, __m256 trits[4]) {
  const __m256i v =
      _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(quarter)));
  trits[0] = _mm256_permutevar8x32_ps(table, v);
  trits[1] = _mm256_permutevar8x32_ps(table, _mm256_srli_epi32(v, 2));
  trits[2] = _mm256_permutevar8x32_ps(table, _mm256_srli_epi32(v, 4));
  trits[3] = _mm256_permutevar8x32_ps(table, _mm256_srli_epi32(v, 6));
}

// out[r] = sum_c t[r][c] * x[c] over whole blocks for kRows consecutive packed rows. Each row
// has four accumulators (one per weight group j) combined in a fixed order, so a row's result
// does not depend on kRows.
template <int kRows>
void TritDotRows(const uint8_t* row0, int64_t row_bytes, int64_t blocks, const float* x,
                 float* out) {
  const __m256 table = TritTable();
  __m256 acc[kRows][4];
  for (int r = 0; r < kRows; ++r) {
    for (int j = 0; j < 4; ++j) acc[r][j] = _mm256_setzero_ps();
  }
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* block = row0 + b * kTernaryBlockBytes;
    // A hint only: prefetching past the end of the data is harmless.
    for (int r = 0; r < kRows; ++r) {
      _mm_prefetch(reinterpret_cast<const char*>(block + r * row_bytes +
                                                 kPrefetchBlocks * kTernaryBlockBytes),
                   _MM_HINT_T0);
    }
    for (int g = 0; g < 4; ++g) {
      __m256 xv[4];
      for (int j = 0; j < 4; ++j) xv[j] = _mm256_loadu_ps(x + b * kTernaryBlock + 32 * j + 8 * g);
      for (int r = 0; r < kRows; ++r) {
        __m256 trits[4];
        DecodeQuarter(block + r * row_bytes + 8 * g, table, trits);
        for (int j = 0; j < 4; ++j) acc[r][j] = _mm256_fmadd_ps(trits[j], xv[j], acc[r][j]);
      }
    }
  }
  for (int r = 0; r < kRows; ++r) {
    out[r] = ReduceAdd(
        _mm256_add_ps(_mm256_add_ps(acc[r][0], acc[r][1]), _mm256_add_ps(acc[r][2], acc[r][3])));
  }
}

// Trits of `blocks` whole blocks as floats, 128 per block in column order.
inline void DecodeBlocks(const uint8_t* row, int64_t blocks, float* dst) {
  const __m256 table = TritTable();
  for (int64_t b = 0; b < blocks; ++b) {
    for (int g = 0; g < 4; ++g) {
      __m256 trits[4];
      DecodeQuarter(row + b * kTernaryBlockBytes + 8 * g, table, trits);
      for (int j = 0; j < 4; ++j) {
        _mm256_storeu_ps(dst + b * kTernaryBlock + 32 * j + 8 * g, trits[j]);
      }
    }
  }
}

// out[r][i] = dot(w[r][0, n), x[i][0, n)) for kRows weight rows and kM activation rows, sharing
// each load across the products. One accumulator per output and one fixed order (16-lane FMA
// steps, then a fixed lane reduction), so an output's value does not depend on kRows or kM.
template <int kRows, int kM>
void DotTile(const float* const* w, const float* const* x, int64_t n, float* out) {
  __m256 acc[kRows][kM];
  for (int r = 0; r < kRows; ++r) {
    for (int i = 0; i < kM; ++i) acc[r][i] = _mm256_setzero_ps();
  }
  int64_t c = 0;
  for (; c + kLanes <= n; c += kLanes) {
    __m256 xv[kM];
    for (int i = 0; i < kM; ++i) xv[i] = _mm256_loadu_ps(x[i] + c);
    for (int r = 0; r < kRows; ++r) {
      const __m256 wv = _mm256_loadu_ps(w[r] + c);
      for (int i = 0; i < kM; ++i) acc[r][i] = _mm256_fmadd_ps(wv, xv[i], acc[r][i]);
    }
  }
  if (c < n) {  // masked loads read nothing past n
    // Lane l is loaded iff l < n - c (maskload tests the sign bit of each lane).
    const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n - c)),
                                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    __m256 xv[kM];
    for (int i = 0; i < kM; ++i) xv[i] = _mm256_maskload_ps(x[i] + c, mask);
    for (int r = 0; r < kRows; ++r) {
      const __m256 wv = _mm256_maskload_ps(w[r] + c, mask);
      for (int i = 0; i < kM; ++i) acc[r][i] = _mm256_fmadd_ps(wv, xv[i], acc[r][i]);
    }
  }
  for (int r = 0; r < kRows; ++r) {
    for (int i = 0; i < kM; ++i) out[r * kM + i] = ReduceAdd(acc[r][i]);
  }
}

constexpr int kTileRows = 4;  // weight rows per DotTile
constexpr int kTileM = 2;     // activation rows per DotTile (8 accumulators of 16 registers)

template <int kRows>
void DotTileM(int m, const float* const* w, const float* const* x, int64_t n, float* out) {
  switch (m) {
    case 1:
      return DotTile<kRows, 1>(w, x, n, out);
    default:
      return DotTile<kRows, 2>(w, x, n, out);
  }
}

void DotTileAny(int rows, int m, const float* const* w, const float* const* x, int64_t n,
                float* out) {
  switch (rows) {
    case 1:
      return DotTileM<1>(m, w, x, n, out);
    case 2:
      return DotTileM<2>(m, w, x, n, out);
    case 3:
      return DotTileM<3>(m, w, x, n, out);
    default:
      return DotTileM<4>(m, w, x, n, out);
  }
}

// The GEMM loop shared by the ternary and dense kernels. For each tile of up to kGemmRowTile
// output rows and each column chunk [k0, k0 + kGemmColumnChunk), chunk_rows(t0, t1, k0, kn)
// returns pointers to the chunk of rows t0..t1-1 (row stride `stride` floats); every activation
// row is multiplied by them, and chunk results are added into y in chunk order.
template <typename ChunkRows>
void GemmRows(int64_t rows, int64_t cols, const float* x, int64_t m, float* y, int64_t row_begin,
              int64_t row_end, ChunkRows chunk_rows) {
  for (int64_t t0 = row_begin; t0 < row_end; t0 += kGemmRowTile) {
    const int64_t t1 = std::min(row_end, t0 + kGemmRowTile);
    for (int64_t k0 = 0; k0 < cols; k0 += kGemmColumnChunk) {
      const int64_t kn = std::min(kGemmColumnChunk, cols - k0);
      int64_t stride = 0;
      const float* tile = chunk_rows(t0, t1, k0, kn, &stride);
      // Weight rows outermost: a kTileRows x chunk slice stays in L1 while every activation row
      // streams past it.
      for (int64_t r = t0; r < t1; r += kTileRows) {
        const int tr = static_cast<int>(std::min<int64_t>(kTileRows, t1 - r));
        const float* ws[kTileRows];
        for (int rr = 0; rr < tr; ++rr) ws[rr] = tile + (r - t0 + rr) * stride;
        for (int64_t i = 0; i < m; i += kTileM) {
          const int tm = static_cast<int>(std::min<int64_t>(kTileM, m - i));
          const float* xs[kTileM];
          for (int ii = 0; ii < tm; ++ii) xs[ii] = x + (i + ii) * cols + k0;
          float out[kTileRows * kTileM];
          DotTileAny(tr, tm, ws, xs, kn, out);
          for (int rr = 0; rr < tr; ++rr) {
            for (int ii = 0; ii < tm; ++ii) {
              float& dst = y[(i + ii) * rows + r + rr];
              dst = (k0 == 0 ? 0.0f : dst) + out[rr * tm + ii];
            }
          }
        }
      }
    }
  }
}

}  // namespace

void TernaryGemvRows(const TernaryView& w, const float* x_padded, float* y, int64_t row_begin,
                     int64_t row_end) {
  const int64_t row_bytes = TernaryRowBytes(w.cols);
  const int64_t blocks = row_bytes / kTernaryBlockBytes;
  float dots[kGemvRows];
  for (int64_t r = row_begin; r < row_end; r += kGemvRows) {
    const uint8_t* rows = w.data + r * row_bytes;
    const int64_t n = std::min<int64_t>(kGemvRows, row_end - r);
    if (n == kGemvRows) {
      TritDotRows<kGemvRows>(rows, row_bytes, blocks, x_padded, dots);
    } else {
      TritDotRows<1>(rows, row_bytes, blocks, x_padded, dots);
    }
    for (int64_t k = 0; k < n; ++k) y[r + k] = TernaryRowScale(w, r + k) * dots[k];
  }
}

void TernaryGemmRows(const TernaryView& w, const float* x, int64_t m, float* y, int64_t row_begin,
                     int64_t row_end) {
  const int64_t row_bytes = TernaryRowBytes(w.cols);
  // A plain array, not std::vector: a library template instantiated in this AVX file could be
  // picked by the linker for generic code and crash on CPUs without the instruction set.
  alignas(64) static thread_local float decoded[kGemmRowTile * kGemmColumnChunk];
  GemmRows(w.rows, w.cols, x, m, y, row_begin, row_end,
           [&](int64_t t0, int64_t t1, int64_t k0, int64_t kn, int64_t* stride) {
             const int64_t first_block = k0 / kTernaryBlock;
             const int64_t blocks = (kn + kTernaryBlock - 1) / kTernaryBlock;
             for (int64_t r = t0; r < t1; ++r) {
               DecodeBlocks(w.data + r * row_bytes + first_block * kTernaryBlockBytes, blocks,
                            decoded + (r - t0) * kGemmColumnChunk);
             }
             *stride = kGemmColumnChunk;
             return decoded;
           });
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t r = row_begin; r < row_end; ++r) y[i * w.rows + r] *= TernaryRowScale(w, r);
  }
}

void DenseGemvRows(const float* w, int64_t cols, const float* x, float* y, int64_t row_begin,
                   int64_t row_end) {
  for (int64_t r = row_begin; r < row_end; r += kTileRows) {
    const int tr = static_cast<int>(std::min<int64_t>(kTileRows, row_end - r));
    const float* ws[kTileRows];
    for (int rr = 0; rr < tr; ++rr) ws[rr] = w + (r + rr) * cols;
    DotTileAny(tr, 1, ws, &x, cols, y + r);
  }
}

void DenseGemmRows(const float* w, int64_t rows, int64_t cols, const float* x, int64_t m, float* y,
                   int64_t row_begin, int64_t row_end) {
  GemmRows(rows, cols, x, m, y, row_begin, row_end,
           [&](int64_t t0, int64_t, int64_t k0, int64_t, int64_t* stride) {
             *stride = cols;
             return w + t0 * cols + k0;
           });
}

}  // namespace qat::kernels::avx2
