// AVX-512 kernels (compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mfma; run only when
// cpuid reports them, see ternary.cc).
//
// Ternary GEMV. Each 16 bytes of a block are zero-extended from memory into 16 int32 lanes
// (vpmovzxbd). Byte m of a block holds the codes of weights m + 32j at bits [2j+1:2j], so bytes
// [16h, 16h+16) give weights [32j + 16h, +16): 16 consecutive activations per group j. The trits
// come out of a table lookup rather than shift-and-convert: vpermps picks lane (index & 15) of a
// 16-float table, and the low 4 bits of a lane hold two codes, so one table maps them to the
// trit of bits [1:0] and another to the trit of bits [3:2]; after one shift by 4, the same two
// tables give groups 2 and 3. That is 1 zero-extension + 1 shift + 4 lookups + 4 FMAs per 64
// weights, with no correction term, and a row of zero trits sums to exactly 0. Four rows are
// processed together so each activation load feeds four FMAs (x does not fit in L1 for
// 14336 columns), with a software prefetch a few blocks ahead in each row. Measured on Zen 5
// (2 cores, shared): 4096 x 14336 in ~1.0 ms on one thread (~60 G weights/s), ~7.5x the fp32
// DenseGemv below (which streams ~31 GB/s). The packed runtime does not use this GEMV or the
// GEMMs below for fp32 activations: on AVX-512 it regroups ternary2 rows into the x16 layout,
// whose table-lookup kernels are ~1.4x faster (ternary_x16_avx512.cc).
//
// GEMM, up to kGemmSmallBatch (16) activation rows: straight from the packed bytes in passes of 4
// activation rows (TritDotBatchRows below), each half block decoded once in registers for all 4.
// Measured single-threaded on the same Zen 5 (thread CPU time, machine loaded), M = 8: 4096 x 14336
// 6.7 ms against 12.2 ms for the decode-to-floats path, 14336 x 4096 8.7 ms against 12.5 ms.
// Larger batches: a tile of rows is decoded to floats one column chunk at a time
// (ternary_impl.h) and multiplied by every activation row with a 4 x 6 register tile of dot
// products, which amortizes the decoding over many rows.

#include <algorithm>
#include <cstdint>

#include "kernels/ternary.h"
#include "kernels/ternary_impl.h"
#include "kernels/trit_tables_avx512.h"  // includes immintrin.h

namespace qat::kernels::avx512 {
namespace {

constexpr int64_t kLanes = 16;
constexpr int kGemvRows = 4;             // rows per GEMV group
constexpr int64_t kPrefetchBlocks = 16;  // how far ahead each row is prefetched
// Activation rows per pass of the small-batch GEMM: 2 rows x 4 activation rows keep 8
// accumulators and 8 trit vectors in registers (8 activation rows spill and run slower).
constexpr int64_t kBatchRows = 4;

// Trits of one 16-byte half of a block, as four vectors of 16 floats (weight groups j = 0..3).
inline void DecodeHalf(const uint8_t* half, __m512 lo, __m512 hi, __m512 trits[4]) {
  const __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(half)));
  const __m512i v4 = _mm512_srli_epi32(v, 4);
  trits[0] = _mm512_permutexvar_ps(v, lo);
  trits[1] = _mm512_permutexvar_ps(v, hi);
  trits[2] = _mm512_permutexvar_ps(v4, lo);
  trits[3] = _mm512_permutexvar_ps(v4, hi);
}

// out[r] = sum_c t[r][c] * x[c] over whole blocks for kRows consecutive packed rows. Each row
// has four accumulators (one per weight group j) combined in a fixed order, so a row's result
// does not depend on kRows.
template <int kRows>
void TritDotRows(const uint8_t* row0, int64_t row_bytes, int64_t blocks, const float* x,
                 float* out) {
  const __m512 lo = TritTableLo(), hi = TritTableHi();
  __m512 acc[kRows][4];
  for (int r = 0; r < kRows; ++r) {
    for (int j = 0; j < 4; ++j) acc[r][j] = _mm512_setzero_ps();
  }
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* block = row0 + b * kTernaryBlockBytes;
    // A hint only: prefetching past the end of the data is harmless.
    for (int r = 0; r < kRows; ++r) {
      _mm_prefetch(reinterpret_cast<const char*>(block + r * row_bytes +
                                                 kPrefetchBlocks * kTernaryBlockBytes),
                   _MM_HINT_T0);
    }
    for (int h = 0; h < 2; ++h) {
      __m512 xv[4];
      for (int j = 0; j < 4; ++j) xv[j] = _mm512_loadu_ps(x + b * kTernaryBlock + 32 * j + 16 * h);
      for (int r = 0; r < kRows; ++r) {
        __m512 trits[4];
        DecodeHalf(block + r * row_bytes + 16 * h, lo, hi, trits);
        for (int j = 0; j < 4; ++j) acc[r][j] = _mm512_fmadd_ps(trits[j], xv[j], acc[r][j]);
      }
    }
  }
  for (int r = 0; r < kRows; ++r) {
    out[r] = _mm512_reduce_add_ps(
        _mm512_add_ps(_mm512_add_ps(acc[r][0], acc[r][1]), _mm512_add_ps(acc[r][2], acc[r][3])));
  }
}

// Small batches (kBatchRows activation rows at a time) straight from the packed bytes: each half
// block is decoded once into registers and used for every activation row, so nothing decoded is
// stored and reloaded. Rows are taken in tiles of kGemmRowTile and columns in chunks of
// kGemmColumnChunk, so the chunk of x (4 rows x 4 KiB) stays in L1 while the tile's rows stream
// past it; each output keeps one 16-lane accumulator, saved in `partial` between chunks, and is
// reduced in a fixed lane order at the end: its value does not depend on the row split.

// partial[r][i] (16 lanes) += t[r][blocks b0..b1) * x[i][same columns] for kRows packed rows.
// A partial last block reads x with masked loads (padding trits are 0 and masked x is 0).
template <int kRows, int kM>
void TritDotBatchChunk(const uint8_t* row0, int64_t row_bytes, int64_t cols, int64_t b0, int64_t b1,
                       const float* x, int64_t x_stride, float* partial) {
  const __m512 lo = TritTableLo(), hi = TritTableHi();
  __m512 acc[kRows][kM];
  for (int r = 0; r < kRows; ++r) {
    for (int i = 0; i < kM; ++i) acc[r][i] = _mm512_load_ps(partial + (r * kM + i) * kLanes);
  }
  for (int64_t b = b0; b < b1; ++b) {
    const uint8_t* block = row0 + b * kTernaryBlockBytes;
    for (int r = 0; r < kRows; ++r) {
      _mm_prefetch(reinterpret_cast<const char*>(block + r * row_bytes +
                                                 kPrefetchBlocks * kTernaryBlockBytes),
                   _MM_HINT_T0);
    }
    const bool full = (b + 1) * kTernaryBlock <= cols;
    for (int h = 0; h < 2; ++h) {
      __m512 trits[kRows][4];
      for (int r = 0; r < kRows; ++r) DecodeHalf(block + r * row_bytes + 16 * h, lo, hi, trits[r]);
      for (int j = 0; j < 4; ++j) {
        const int64_t col = b * kTernaryBlock + 32 * j + 16 * h;
        const int64_t left = std::max<int64_t>(0, std::min<int64_t>(kLanes, cols - col));
        const __mmask16 mask = static_cast<__mmask16>((1u << left) - 1);
        for (int i = 0; i < kM; ++i) {
          const float* xi = x + i * x_stride + col;
          const __m512 xv = full ? _mm512_loadu_ps(xi) : _mm512_maskz_loadu_ps(mask, xi);
          for (int r = 0; r < kRows; ++r) acc[r][i] = _mm512_fmadd_ps(trits[r][j], xv, acc[r][i]);
        }
      }
    }
  }
  for (int r = 0; r < kRows; ++r) {
    for (int i = 0; i < kM; ++i) _mm512_store_ps(partial + (r * kM + i) * kLanes, acc[r][i]);
  }
}

// Y rows [row_begin, row_end) for activation rows i0..i0+kM-1.
template <int kM>
void TritDotBatchRows(const TernaryView& w, const float* x, int64_t i0, float* y, int64_t row_begin,
                      int64_t row_end) {
  const int64_t row_bytes = TernaryRowBytes(w.cols);
  const int64_t blocks = row_bytes / kTernaryBlockBytes;
  constexpr int64_t kChunkBlocks = kGemmColumnChunk / kTernaryBlock;
  alignas(64) float partial[kGemmRowTile * kM * kLanes];
  const float* xs = x + i0 * w.cols;
  for (int64_t t0 = row_begin; t0 < row_end; t0 += kGemmRowTile) {
    const int64_t t1 = std::min(row_end, t0 + kGemmRowTile);
    for (float& p : partial) p = 0.0f;
    for (int64_t b0 = 0; b0 < blocks; b0 += kChunkBlocks) {
      const int64_t b1 = std::min(blocks, b0 + kChunkBlocks);
      for (int64_t r = t0; r < t1; r += 2) {
        const uint8_t* rows = w.data + r * row_bytes;
        float* p = partial + (r - t0) * kM * kLanes;
        if (t1 - r >= 2) {
          TritDotBatchChunk<2, kM>(rows, row_bytes, w.cols, b0, b1, xs, w.cols, p);
        } else {
          TritDotBatchChunk<1, kM>(rows, row_bytes, w.cols, b0, b1, xs, w.cols, p);
        }
      }
    }
    for (int64_t r = t0; r < t1; ++r) {
      for (int i = 0; i < kM; ++i) {
        const __m512 v = _mm512_load_ps(partial + ((r - t0) * kM + i) * kLanes);
        y[(i0 + i) * w.rows + r] = TernaryRowScale(w, r) * _mm512_reduce_add_ps(v);
      }
    }
  }
}

// Trits of `blocks` whole blocks as floats, 128 per block in column order.
inline void DecodeBlocks(const uint8_t* row, int64_t blocks, float* dst) {
  const __m512 lo = TritTableLo(), hi = TritTableHi();
  for (int64_t b = 0; b < blocks; ++b) {
    for (int h = 0; h < 2; ++h) {
      __m512 trits[4];
      DecodeHalf(row + b * kTernaryBlockBytes + 16 * h, lo, hi, trits);
      for (int j = 0; j < 4; ++j) {
        _mm512_storeu_ps(dst + b * kTernaryBlock + 32 * j + 16 * h, trits[j]);
      }
    }
  }
}

// out[r][i] = dot(w[r][0, n), x[i][0, n)) for kRows weight rows and kM activation rows, sharing
// each load across the products. One accumulator per output and one fixed order (16-lane FMA
// steps, then a fixed lane reduction), so an output's value does not depend on kRows or kM.
template <int kRows, int kM>
void DotTile(const float* const* w, const float* const* x, int64_t n, float* out) {
  __m512 acc[kRows][kM];
  for (int r = 0; r < kRows; ++r) {
    for (int i = 0; i < kM; ++i) acc[r][i] = _mm512_setzero_ps();
  }
  int64_t c = 0;
  for (; c + kLanes <= n; c += kLanes) {
    __m512 xv[kM];
    for (int i = 0; i < kM; ++i) xv[i] = _mm512_loadu_ps(x[i] + c);
    for (int r = 0; r < kRows; ++r) {
      const __m512 wv = _mm512_loadu_ps(w[r] + c);
      for (int i = 0; i < kM; ++i) acc[r][i] = _mm512_fmadd_ps(wv, xv[i], acc[r][i]);
    }
  }
  if (c < n) {  // masked loads read nothing past n
    const __mmask16 mask = static_cast<__mmask16>((1u << (n - c)) - 1);
    __m512 xv[kM];
    for (int i = 0; i < kM; ++i) xv[i] = _mm512_maskz_loadu_ps(mask, x[i] + c);
    for (int r = 0; r < kRows; ++r) {
      const __m512 wv = _mm512_maskz_loadu_ps(mask, w[r] + c);
      for (int i = 0; i < kM; ++i) acc[r][i] = _mm512_fmadd_ps(wv, xv[i], acc[r][i]);
    }
  }
  for (int r = 0; r < kRows; ++r) {
    for (int i = 0; i < kM; ++i) out[r * kM + i] = _mm512_reduce_add_ps(acc[r][i]);
  }
}

constexpr int kTileRows = 4;  // weight rows per DotTile
constexpr int kTileM = 6;     // activation rows per DotTile (24 accumulators of 32 registers)

template <int kRows>
void DotTileM(int m, const float* const* w, const float* const* x, int64_t n, float* out) {
  switch (m) {
    case 1:
      return DotTile<kRows, 1>(w, x, n, out);
    case 2:
      return DotTile<kRows, 2>(w, x, n, out);
    case 3:
      return DotTile<kRows, 3>(w, x, n, out);
    case 4:
      return DotTile<kRows, 4>(w, x, n, out);
    case 5:
      return DotTile<kRows, 5>(w, x, n, out);
    default:
      return DotTile<kRows, 6>(w, x, n, out);
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
    switch (n) {
      case 1:
        TritDotRows<1>(rows, row_bytes, blocks, x_padded, dots);
        break;
      case 2:
        TritDotRows<2>(rows, row_bytes, blocks, x_padded, dots);
        break;
      case 3:
        TritDotRows<3>(rows, row_bytes, blocks, x_padded, dots);
        break;
      default:
        TritDotRows<4>(rows, row_bytes, blocks, x_padded, dots);
    }
    for (int64_t k = 0; k < n; ++k) y[r + k] = TernaryRowScale(w, r + k) * dots[k];
  }
}

void TernaryGemmRows(const TernaryView& w, const float* x, int64_t m, float* y, int64_t row_begin,
                     int64_t row_end) {
  if (m <= kGemmSmallBatch) {  // passes of kBatchRows activation rows, decoding in registers
    for (int64_t i0 = 0; i0 < m; i0 += kBatchRows) {
      switch (std::min<int64_t>(kBatchRows, m - i0)) {
        case 1:
          TritDotBatchRows<1>(w, x, i0, y, row_begin, row_end);
          break;
        case 2:
          TritDotBatchRows<2>(w, x, i0, y, row_begin, row_end);
          break;
        case 3:
          TritDotBatchRows<3>(w, x, i0, y, row_begin, row_end);
          break;
        default:
          TritDotBatchRows<4>(w, x, i0, y, row_begin, row_end);
      }
    }
    return;
  }
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

}  // namespace qat::kernels::avx512
