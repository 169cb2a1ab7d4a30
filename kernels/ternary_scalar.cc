// The scalar reference kernels: the definition every SIMD variant is tested against. Plain loops,
// one float accumulator per output, columns in increasing order.
#include <cstdint>

#include "kernels/ternary.h"
#include "kernels/ternary_impl.h"

namespace qat::kernels::scalar {
namespace {

// Trit of column c in a packed row (see the layout in ternary.h): code - 1, and 0 for the invalid
// code 3.
inline float TritAt(const uint8_t* row, int64_t c) {
  const int64_t in_block = c % kTernaryBlock;
  const uint8_t byte = row[c / kTernaryBlock * kTernaryBlockBytes + in_block % 32];
  const int code = (byte >> (2 * (in_block / 32))) & 3;
  return code == 3 ? 0.0f : static_cast<float>(code - 1);
}

}  // namespace

void TernaryGemvRows(const TernaryView& w, const float* x_padded, float* y, int64_t row_begin,
                     int64_t row_end) {
  const int64_t row_bytes = TernaryRowBytes(w.cols);
  for (int64_t r = row_begin; r < row_end; ++r) {
    const uint8_t* row = w.data + r * row_bytes;
    float sum = 0.0f;
    for (int64_t c = 0; c < w.cols; ++c) sum += TritAt(row, c) * x_padded[c];
    y[r] = TernaryRowScale(w, r) * sum;
  }
}

void TernaryGemmRows(const TernaryView& w, const float* x, int64_t m, float* y, int64_t row_begin,
                     int64_t row_end) {
  const int64_t row_bytes = TernaryRowBytes(w.cols);
  for (int64_t i = 0; i < m; ++i) {
    const float* xi = x + i * w.cols;
    for (int64_t r = row_begin; r < row_end; ++r) {
      const uint8_t* row = w.data + r * row_bytes;
      float sum = 0.0f;
      for (int64_t c = 0; c < w.cols; ++c) sum += TritAt(row, c) * xi[c];
      y[i * w.rows + r] = TernaryRowScale(w, r) * sum;
    }
  }
}

void DenseGemvRows(const float* w, int64_t cols, const float* x, float* y, int64_t row_begin,
                   int64_t row_end) {
  for (int64_t r = row_begin; r < row_end; ++r) {
    const float* row = w + r * cols;
    float sum = 0.0f;
    for (int64_t c = 0; c < cols; ++c) sum += row[c] * x[c];
    y[r] = sum;
  }
}

void DenseGemmRows(const float* w, int64_t rows, int64_t cols, const float* x, int64_t m, float* y,
                   int64_t row_begin, int64_t row_end) {
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t r = row_begin; r < row_end; ++r) {
      const float* row = w + r * cols;
      const float* xi = x + i * cols;
      float sum = 0.0f;
      for (int64_t c = 0; c < cols; ++c) sum += row[c] * xi[c];
      y[i * rows + r] = sum;
    }
  }
}

}  // namespace qat::kernels::scalar
