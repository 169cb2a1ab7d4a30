// AVX-512 VNNI kernels of the int4-x16 / int2-x16 products with int8 activations (intk_int8.h;
// compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni -mfma; intk_int8.cc calls
// them only when CpuHasAvx512Vnni()).
//
// Per chunk of a tile (64 bytes, one load), `and 0x0F` and `srli 4; and 0x0F` (int4; for int2
// `srli 2i; and 3`, i = 0..3) give u8 operands whose int32 lane l holds 4 codes of row l for 4
// consecutive columns; vpdpbusd with those 4 activation bytes broadcast to every lane adds the
// lane's dot product into an int32 accumulator per row. At the end of each group the accumulator
// (the exact d of 16 rows) goes through the documented float steps: vcvtdq2ps, vfnmadd (u = d -
// zero * s, s exact in float), vfmadd (acc += scale * u); at the end of the row, one vmulps by
// xscale. A pass runs kT tiles for kM activation rows: each load is decoded once for kM rows, and
// for small kT * kM each tile gets two accumulators (alternating fields), so that the chain of
// vpdpbusd latencies does not bound the loop. The integer sums are exact whatever the pass shape,
// so results do not depend on it.
//
// GCC 12's AVX-512 intrinsics build "undefined" vectors from self-initialized variables, which
// trips -Wuninitialized once they are inlined (GCC bug 105593): the warning is about the header.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <cstdint>
#include <cstring>

#include "kernels/intk_int8.h"
#include "kernels/intk_int8_impl.h"

namespace qat::kernels::avx512 {
namespace {

// Complete unrolling of the short fixed loops keeps the small arrays of vectors in registers.
#define QAT_UNROLL _Pragma("GCC unroll 16")

// No std:: algorithm templates in this file: an out-of-line instantiation compiled for this
// instruction set could be picked by the linker for code that runs on any CPU.
inline int64_t MinInt(int64_t a, int64_t b) { return a < b ? a : b; }

constexpr int kMaxM = 8;                  // activation rows per pass
constexpr int kTileBlock = 4;             // tiles per outer step (kept in L2 across passes)
constexpr int64_t kPrefetchBytes = 1024;  // how far ahead each tile's stream is prefetched

// The 4 bytes at p in every int32 lane.
inline __m512i Broadcast4(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm512_set1_epi32(v);
}

// Outputs of tiles t0 .. t0 + kT - 1 for activation rows i0 .. i0 + kM - 1.
template <int kBits, int kT, int kM>
void Pass(const IntKX16View& w, const int8_t* x_padded, const int32_t* xsums, const float* xscales,
          int64_t i0, int64_t t0, float* y) {
  constexpr int kFields = kBits == 4 ? 2 : 4;  // u8 operands per chunk
  constexpr int64_t kChunkCols = kBits == 4 ? 8 : 16;
  constexpr bool kSplit = kT * kM <= 4;  // two accumulators per (tile, row)
  constexpr int kAcc = kSplit ? 2 : 1;
  const int64_t chunks = IntKX16Chunks(kBits, w.cols);
  const int64_t padded = chunks * kChunkCols;
  const int64_t groups = IntKGroupsPerRow(w.group, w.cols);
  const int64_t chunks_per_group = w.group / kChunkCols;
  const __m512i mask = _mm512_set1_epi8(kBits == 4 ? 0x0F : 0x03);
  const int8_t* x[kM];
  QAT_UNROLL
  for (int i = 0; i < kM; ++i) x[i] = x_padded + (i0 + i) * padded;
  const uint8_t* base[kT];
  QAT_UNROLL
  for (int t = 0; t < kT; ++t) base[t] = w.data + (t0 + t) * chunks * kIntKX16ChunkBytes;
  // d: running sums over the row (wrapping int32); a group's sum is the difference from `start`,
  // the total at the group's start: exact modulo 2^32, so exact. (Zeroing d per group instead
  // made GCC 12 copy every accumulator twice per chunk.)
  __m512 acc[kT][kM];
  __m512i d[kT][kM][kAcc], start[kT][kM];
  QAT_UNROLL
  for (int t = 0; t < kT; ++t) {
    QAT_UNROLL
    for (int i = 0; i < kM; ++i) {
      acc[t][i] = _mm512_setzero_ps();
      start[t][i] = _mm512_setzero_si512();
      QAT_UNROLL
      for (int a = 0; a < kAcc; ++a) d[t][i][a] = _mm512_setzero_si512();
    }
  }
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t k1 = MinInt(chunks, (g + 1) * chunks_per_group);
    for (int64_t k = g * chunks_per_group; k < k1; ++k) {
      QAT_UNROLL
      for (int t = 0; t < kT; ++t) {
        const uint8_t* p = base[t] + k * kIntKX16ChunkBytes;
        _mm_prefetch(reinterpret_cast<const char*>(p + kPrefetchBytes), _MM_HINT_T0);
        const __m512i raw = _mm512_loadu_si512(p);
        __m512i v[kFields];
        QAT_UNROLL
        for (int f = 0; f < kFields; ++f) {
          const int shift = (kBits == 4 ? 4 : 2) * f;
          v[f] = _mm512_and_si512(f == 0 ? raw : _mm512_srli_epi16(raw, shift), mask);
        }
        QAT_UNROLL
        for (int i = 0; i < kM; ++i) {
          QAT_UNROLL
          for (int f = 0; f < kFields; ++f) {
            d[t][i][f % kAcc] = _mm512_dpbusd_epi32(d[t][i][f % kAcc], v[f],
                                                    Broadcast4(x[i] + k * kChunkCols + 4 * f));
          }
        }
      }
    }
    QAT_UNROLL
    for (int t = 0; t < kT; ++t) {
      const int64_t p = ((t0 + t) * groups + g) * kIntKX16Rows;
      const __m512 scale = _mm512_loadu_ps(w.scales + p);
      const __m512 zero = _mm512_loadu_ps(w.zeros + p);
      QAT_UNROLL
      for (int i = 0; i < kM; ++i) {
        const __m512i total = kSplit ? _mm512_add_epi32(d[t][i][0], d[t][i][kAcc - 1]) : d[t][i][0];
        const __m512i dsum = _mm512_sub_epi32(total, start[t][i]);
        start[t][i] = total;
        const __m512 s = _mm512_set1_ps(static_cast<float>(xsums[(i0 + i) * groups + g]));
        const __m512 u = _mm512_fnmadd_ps(zero, s, _mm512_cvtepi32_ps(dsum));
        acc[t][i] = _mm512_fmadd_ps(scale, u, acc[t][i]);
      }
    }
  }
  QAT_UNROLL
  for (int t = 0; t < kT; ++t) {
    const int64_t r0 = (t0 + t) * kIntKX16Rows;
    const int64_t live = MinInt(kIntKX16Rows, w.rows - r0);
    const __mmask16 store = static_cast<__mmask16>((1u << live) - 1);
    QAT_UNROLL
    for (int i = 0; i < kM; ++i) {
      _mm512_mask_storeu_ps(y + (i0 + i) * w.rows + r0, store,
                            _mm512_mul_ps(_mm512_set1_ps(xscales[i0 + i]), acc[t][i]));
    }
  }
}

// Tiles [t0, t1) for activation rows i0 .. i0 + kM - 1, in passes of kT tiles.
template <int kBits, int kM>
void Tiles(const IntKX16View& w, const int8_t* x_padded, const int32_t* xsums, const float* xscales,
           int64_t i0, int64_t t0, int64_t t1, float* y) {
  constexpr int kT = kM == 1 ? 4 : (kM == 2 ? 2 : 1);
  int64_t t = t0;
  for (; t + kT <= t1; t += kT) Pass<kBits, kT, kM>(w, x_padded, xsums, xscales, i0, t, y);
  for (; t < t1; ++t) Pass<kBits, 1, kM>(w, x_padded, xsums, xscales, i0, t, y);
}

template <int kBits>
void RowsT(const IntKX16View& w, const int8_t* x_padded, const int32_t* xsums, const float* xscales,
           int64_t m, float* y, int64_t tile_begin, int64_t tile_end) {
  // m rows in balanced passes of at most kMaxM (17 = 6 + 6 + 5).
  const int64_t passes = (m + kMaxM - 1) / kMaxM;
  for (int64_t t0 = tile_begin; t0 < tile_end; t0 += kTileBlock) {
    const int64_t t1 = MinInt(tile_end, t0 + kTileBlock);
    int64_t i0 = 0;
    for (int64_t pass = 0; pass < passes; ++pass) {
      const int64_t n = m / passes + (pass < m % passes ? 1 : 0);
      switch (n) {
        case 1:
          Tiles<kBits, 1>(w, x_padded, xsums, xscales, i0, t0, t1, y);
          break;
        case 2:
          Tiles<kBits, 2>(w, x_padded, xsums, xscales, i0, t0, t1, y);
          break;
        case 3:
          Tiles<kBits, 3>(w, x_padded, xsums, xscales, i0, t0, t1, y);
          break;
        case 4:
          Tiles<kBits, 4>(w, x_padded, xsums, xscales, i0, t0, t1, y);
          break;
        case 5:
          Tiles<kBits, 5>(w, x_padded, xsums, xscales, i0, t0, t1, y);
          break;
        case 6:
          Tiles<kBits, 6>(w, x_padded, xsums, xscales, i0, t0, t1, y);
          break;
        case 7:
          Tiles<kBits, 7>(w, x_padded, xsums, xscales, i0, t0, t1, y);
          break;
        default:
          Tiles<kBits, 8>(w, x_padded, xsums, xscales, i0, t0, t1, y);
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

}  // namespace qat::kernels::avx512
