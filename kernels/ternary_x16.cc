// The ternary2-x16 layout (ternary_x16.h): repacking from and to ternary2, the scalar reference
// kernel, and the dispatch to the AVX-512 kernels (ternary_x16_avx512.cc) over a ThreadPool.
#include "kernels/ternary_x16.h"

#include <cstdint>
#include <vector>

#include "kernels/dispatch.h"
#include "kernels/ternary_impl.h"
#include "kernels/thread_pool.h"

namespace qat::kernels {
namespace {

// Index of word w of row r in the layout (W words per row).
inline int64_t WordIndex(int64_t r, int64_t w, int64_t words_per_row) {
  return ((r / kTernaryX16Rows) * words_per_row + w) * kTernaryX16Rows + r % kTernaryX16Rows;
}

// A word of four padding bytes (code 1 in every position: trit 0).
constexpr uint32_t kPaddingWord = 0x55555555u;

}  // namespace

void RepackTernaryX16(const uint8_t* packed, int64_t rows, int64_t cols, uint32_t* words) {
  if (rows <= 0 || cols <= 0) return;
  const int64_t row_bytes = TernaryRowBytes(cols), words_per_row = row_bytes / 4;
  const int64_t padded_rows = TernaryX16Groups(rows) * kTernaryX16Rows;
  for (int64_t r = 0; r < padded_rows; ++r) {
    for (int64_t w = 0; w < words_per_row; ++w) {
      uint32_t word = kPaddingWord;
      if (r < rows) {
        const uint8_t* b = packed + r * row_bytes + 4 * w;  // little-endian, as the layout says
        word = static_cast<uint32_t>(b[0]) | static_cast<uint32_t>(b[1]) << 8 |
               static_cast<uint32_t>(b[2]) << 16 | static_cast<uint32_t>(b[3]) << 24;
      }
      words[WordIndex(r, w, words_per_row)] = word;
    }
  }
}

void UnpackTernaryX16(const uint32_t* words, int64_t rows, int64_t cols, uint8_t* packed) {
  if (rows <= 0 || cols <= 0) return;
  const int64_t row_bytes = TernaryRowBytes(cols), words_per_row = row_bytes / 4;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t w = 0; w < words_per_row; ++w) {
      const uint32_t word = words[WordIndex(r, w, words_per_row)];
      for (int i = 0; i < 4; ++i) {
        packed[r * row_bytes + 4 * w + i] = static_cast<uint8_t>(word >> (8 * i));
      }
    }
  }
}

bool TernaryX16Fast() { return IsaSupported(Isa::kAvx512); }

namespace scalar {

void TernaryX16GemmRows(const TernaryX16View& w, const float* x_padded, int64_t m, float* y,
                        int64_t row_begin, int64_t row_end) {
  const int64_t words_per_row = TernaryRowBytes(w.cols) / 4, padded = words_per_row * 16;
  for (int64_t i = 0; i < m; ++i) {
    const float* xi = x_padded + i * padded;
    for (int64_t r = row_begin; r < row_end; ++r) {
      float sum = 0.0f;
      for (int64_t c = 0; c < w.cols; ++c) {  // the column order of scalar::TernaryGemmRows
        const int64_t in_block = c % kTernaryBlock;
        const int64_t byte = c / kTernaryBlock * kTernaryBlockBytes + in_block % 32;
        const uint32_t word = w.words[WordIndex(r, byte / 4, words_per_row)];
        const int code = (word >> (8 * (byte % 4) + 2 * (in_block / 32))) & 3;
        sum += (code == 3 ? 0.0f : static_cast<float>(code - 1)) * xi[c];
      }
      y[i * w.rows + r] = TernaryRowScale(w, r) * sum;
    }
  }
}

}  // namespace scalar

void TernaryX16Gemm(const TernaryX16View& w, const float* x, int64_t m, float* y, Isa isa,
                    ThreadPool* pool) {
  if (dispatch::HandledWithoutKernel(w.rows, w.cols, m, dispatch::ScalesUsable(w), y)) return;
  const int64_t padded = TernaryRowBytes(w.cols) * 4;
  // Kernels read whole blocks; padding codes then meet zeros and contribute exactly nothing.
  const float* x_padded = dispatch::PaddedActivations(x, m, w.cols, padded);
  constexpr int64_t kUnitWork = int64_t{1} << 17;  // multiply-adds handed to a thread at once
  if (dispatch::Usable(isa) != Isa::kAvx512) {
    dispatch::ForRows(pool, w.rows, dispatch::RowGrain(kUnitWork, w.cols * m, kTernaryX16Rows),
                      [&](int64_t begin, int64_t end) {
                        scalar::TernaryX16GemmRows(w, x_padded, m, y, begin, end);
                      });
    return;
  }
  if (m == 1) {
    // (Lambdas below take the pointer: a thread_local named inside them is the worker's own.)
    thread_local std::vector<float> table_buffer;
    table_buffer.resize(padded * 8);
    const float* tables = table_buffer.data();
    avx512::BuildTernaryX16Tables(x_padded, w.cols, table_buffer.data());
    // Whole passes of 4 groups (the GEMV kernel's unit) per thread where the size allows.
    dispatch::ForRows(
        pool, w.rows, dispatch::RowGrain(kUnitWork, w.cols, 4 * kTernaryX16Rows),
        [&](int64_t begin, int64_t end) { avx512::TernaryX16GemvRows(w, tables, y, begin, end); });
    return;
  }
  dispatch::ForRows(pool, w.rows, dispatch::RowGrain(kUnitWork, w.cols * m, kTernaryX16Rows),
                    [&](int64_t begin, int64_t end) {
                      avx512::TernaryX16GemmRows(w, x_padded, m, y, begin, end);
                    });
}

}  // namespace qat::kernels
