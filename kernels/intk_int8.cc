// The int4-x16 / int2-x16 layouts (intk_int8.h): repacking from and to the row-major int2/int4
// format, and the dispatch of the int8-activation products to intk_int8_{scalar,avx2,avx512}.cc
// with the tiles split over a ThreadPool.
#include "kernels/intk_int8.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kernels/dispatch.h"
#include "kernels/intk_int8_impl.h"
#include "kernels/lowbit.h"
#include "kernels/lowbit_impl.h"
#include "kernels/thread_pool.h"

namespace qat::kernels {
namespace {

bool Usable(const IntKView& w) {
  return IntKLayoutSupported(w.bits, w.group) && w.data != nullptr && w.scales != nullptr &&
         w.zeros != nullptr;
}

bool Usable(const IntKX16View& w) {
  return IntKLayoutSupported(w.bits, w.group) && w.data != nullptr && w.scales != nullptr &&
         w.zeros != nullptr;
}

// Byte index within a chunk and bit shift of column `in_chunk` of row l of a tile.
inline void ChunkPosition(int bits, int64_t l, int64_t in_chunk, int64_t* byte, int* shift) {
  *byte = 4 * l + in_chunk % 4;
  *shift = bits == 4 ? 4 * static_cast<int>(in_chunk / 4) : 2 * static_cast<int>(in_chunk / 4);
}

}  // namespace

void RepackIntKX16(const IntKView& w, uint8_t* data, float* scales, float* zeros) {
  if (!Usable(w) || w.rows <= 0 || w.cols <= 0) return;
  const int64_t chunks = IntKX16Chunks(w.bits, w.cols), cc = IntKX16ChunkCols(w.bits);
  const int64_t tiles = IntKX16Tiles(w.rows), groups = IntKGroupsPerRow(w.group, w.cols);
  const int64_t row_bytes = IntKRowBytes(w.bits, w.cols);
  std::memset(data, 0, IntKX16DataBytes(w.bits, w.rows, w.cols));  // padding codes are 0
  for (int64_t r = 0; r < w.rows; ++r) {
    const uint8_t* src = w.data + r * row_bytes;
    for (int64_t c = 0; c < w.cols; ++c) {
      int64_t byte;
      int shift;
      ChunkPosition(w.bits, r % kIntKX16Rows, c % cc, &byte, &shift);
      uint8_t* chunk = data + (r / kIntKX16Rows * chunks + c / cc) * kIntKX16ChunkBytes;
      chunk[byte] = static_cast<uint8_t>(chunk[byte] | (IntKCodeAt(src, w.bits, c) << shift));
    }
  }
  for (int64_t r = 0; r < tiles * kIntKX16Rows; ++r) {
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t p = IntKX16ParamIndex(r, g, groups);
      scales[p] = r < w.rows ? w.scales[r * groups + g] : 0.0f;
      zeros[p] = r < w.rows ? w.zeros[r * groups + g] : 0.0f;
    }
  }
}

void UnpackIntKX16(const IntKX16View& w, uint8_t* packed, float* scales, float* zeros) {
  if (!IntKLayoutSupported(w.bits, w.group) || w.rows <= 0 || w.cols <= 0) return;
  const int64_t chunks = IntKX16Chunks(w.bits, w.cols);
  const int64_t groups = IntKGroupsPerRow(w.group, w.cols);
  std::vector<uint8_t> q(w.cols);
  for (int64_t r = 0; r < w.rows; ++r) {
    for (int64_t c = 0; c < w.cols; ++c) {
      q[c] = static_cast<uint8_t>(IntKX16CodeAt(w.data, w.bits, chunks, r, c));
    }
    PackIntK(q.data(), 1, w.cols, w.bits, packed + r * IntKRowBytes(w.bits, w.cols));
    for (int64_t g = 0; g < groups; ++g) {
      scales[r * groups + g] = w.scales[IntKX16ParamIndex(r, g, groups)];
      zeros[r * groups + g] = w.zeros[IntKX16ParamIndex(r, g, groups)];
    }
  }
}

IntKX16Matrix RepackIntKX16(const IntKView& w) {
  IntKX16Matrix out;
  if (!Usable(w) || w.rows <= 0 || w.cols <= 0) return out;
  out.rows = w.rows;
  out.cols = w.cols;
  out.bits = w.bits;
  out.group = w.group;
  out.data.resize(IntKX16DataBytes(w.bits, w.rows, w.cols));
  out.scales.resize(IntKX16Params(w.rows, w.cols, w.group));
  out.zeros.resize(out.scales.size());
  RepackIntKX16(w, out.data.data(), out.scales.data(), out.zeros.data());
  return out;
}

// ----- Dispatch -----

void IntKX16GemmInt8(const IntKX16View& w, const int8_t* xq, const float* xscales, int64_t m,
                     float* y, Isa isa, ThreadPool* pool) {
  if (dispatch::HandledWithoutKernel(w.rows, w.cols, m, Usable(w), y)) return;
  const Isa use = dispatch::Usable(isa);
  // AVX-512 without VNNI runs the AVX2 code (every AVX-512 CPU has AVX2).
  const bool vnni = use == Isa::kAvx512 && CpuHasAvx512Vnni();
  void (*rows_fn)(const IntKX16View&, const int8_t*, const int32_t*, const float*, int64_t, float*,
                  int64_t, int64_t) = vnni                  ? avx512::IntKX16Rows
                                      : use != Isa::kScalar ? avx2::IntKX16Rows
                                                            : scalar::IntKX16Rows;
  // Activations padded with zeros to whole chunks, and their sums per group.
  const int64_t padded = IntKX16Chunks(w.bits, w.cols) * IntKX16ChunkCols(w.bits);
  const int64_t groups = IntKGroupsPerRow(w.group, w.cols);
  thread_local std::vector<int8_t> x_padded;
  thread_local std::vector<int32_t> sums;
  x_padded.assign(m * padded, 0);
  sums.assign(m * groups, 0);
  for (int64_t i = 0; i < m; ++i) {
    const int8_t* src = xq + i * w.cols;
    std::memcpy(x_padded.data() + i * padded, src, w.cols);
    for (int64_t g = 0; g < groups; ++g) {
      int32_t sum = 0;
      for (int64_t c = g * w.group; c < std::min(w.cols, (g + 1) * w.group); ++c) sum += src[c];
      sums[i * groups + g] = sum;
    }
  }
  // (The lambda takes the pointers: a thread_local named inside it is the worker's own.)
  const int8_t* xp = x_padded.data();
  const int32_t* xs = sums.data();
  // Work units of about 2^19 multiply-adds (a few microseconds), whole passes of 4 tiles.
  constexpr int64_t kUnitWork = int64_t{1} << 19;
  const int64_t grain = dispatch::RowGrain(kUnitWork, w.cols * m, 4 * kIntKX16Rows) / kIntKX16Rows;
  dispatch::ForRows(pool, IntKX16Tiles(w.rows), grain, [&](int64_t begin, int64_t end) {
    rows_fn(w, xp, xs, xscales, m, y, begin, end);
  });
}

void IntKX16GemvInt8(const IntKX16View& w, const int8_t* xq, float xscale, float* y, Isa isa,
                     ThreadPool* pool) {
  IntKX16GemmInt8(w, xq, &xscale, 1, y, isa, pool);
}

}  // namespace qat::kernels
