// The scalar reference kernels of lowbit.h: the definition every SIMD variant is tested against.
// Plain loops, one accumulator per output, columns in increasing order; the int8 kernels are
// exact, so their SIMD variants must match them bit for bit.
#include <cmath>
#include <cstdint>
#include <limits>

#include "kernels/lowbit.h"
#include "kernels/lowbit_impl.h"
#include "kernels/ternary.h"
#include "kernels/ternary_impl.h"

namespace qat::kernels::scalar {
namespace {

// Trit of column c of a packed ternary2 row (layout in ternary.h); the invalid code 3 is 0.
inline int Ternary2TritAt(const uint8_t* row, int64_t c) {
  const int64_t in_block = c % kTernaryBlock;
  const uint8_t byte = row[c / kTernaryBlock * kTernaryBlockBytes + in_block % 32];
  const int code = (byte >> (2 * (in_block / 32))) & 3;
  return code == 3 ? 0 : code - 1;
}

}  // namespace

void Ternary3GemvRows(const Ternary3View& w, const float* x_padded, float* y, int64_t row_begin,
                      int64_t row_end) {
  const int64_t row_bytes = Ternary3RowBytes(w.cols);
  for (int64_t r = row_begin; r < row_end; ++r) {
    const uint8_t* row = w.data + r * row_bytes;
    float sum = 0.0f;
    for (int64_t c = 0; c < w.cols; ++c) {
      sum += static_cast<float>(Ternary3TritAt(row, c)) * x_padded[c];
    }
    y[r] = Ternary3RowScale(w, r) * sum;
  }
}

void Ternary3GemmRows(const Ternary3View& w, const float* x, int64_t m, float* y, int64_t row_begin,
                      int64_t row_end) {
  const int64_t row_bytes = Ternary3RowBytes(w.cols);
  for (int64_t i = 0; i < m; ++i) {
    const float* xi = x + i * w.cols;
    for (int64_t r = row_begin; r < row_end; ++r) {
      const uint8_t* row = w.data + r * row_bytes;
      float sum = 0.0f;
      for (int64_t c = 0; c < w.cols; ++c) {
        sum += static_cast<float>(Ternary3TritAt(row, c)) * xi[c];
      }
      y[i * w.rows + r] = Ternary3RowScale(w, r) * sum;
    }
  }
}

void Ternary3DecodeRows(const Ternary3View& w, int64_t row_begin, int64_t row_end, float* out) {
  const int64_t row_bytes = Ternary3RowBytes(w.cols);
  for (int64_t r = row_begin; r < row_end; ++r) {
    for (int64_t c = 0; c < w.cols; ++c) {
      out[(r - row_begin) * w.cols + c] =
          static_cast<float>(Ternary3TritAt(w.data + r * row_bytes, c));
    }
  }
}

void IntKGemvRows(const IntKView& w, const float* x, float* y, int64_t row_begin, int64_t row_end) {
  for (int64_t r = row_begin; r < row_end; ++r) {
    float sum = 0.0f;
    for (int64_t c = 0; c < w.cols; ++c) sum += IntKValueAt(w, r, c) * x[c];
    y[r] = sum;
  }
}

void IntKGemmRows(const IntKView& w, const float* x, int64_t m, float* y, int64_t row_begin,
                  int64_t row_end) {
  for (int64_t i = 0; i < m; ++i) {
    const float* xi = x + i * w.cols;
    for (int64_t r = row_begin; r < row_end; ++r) {
      float sum = 0.0f;
      for (int64_t c = 0; c < w.cols; ++c) sum += IntKValueAt(w, r, c) * xi[c];
      y[i * w.rows + r] = sum;
    }
  }
}

void IntKDecodeRows(const IntKView& w, int64_t row_begin, int64_t row_end, float* out) {
  for (int64_t r = row_begin; r < row_end; ++r) {
    for (int64_t c = 0; c < w.cols; ++c) out[(r - row_begin) * w.cols + c] = IntKValueAt(w, r, c);
  }
}

void TernaryInt8Rows(const TernaryView& w, const int8_t* xq, const int32_t* /*xsums*/,
                     const float* xscales, int64_t m, float* y, int64_t row_begin,
                     int64_t row_end) {
  const int64_t row_bytes = TernaryRowBytes(w.cols);
  const int64_t padded = row_bytes * 4;
  for (int64_t i = 0; i < m; ++i) {
    const int8_t* xi = xq + i * padded;
    for (int64_t r = row_begin; r < row_end; ++r) {
      const uint8_t* row = w.data + r * row_bytes;
      int32_t acc = 0;
      for (int64_t c = 0; c < w.cols; ++c) acc += Ternary2TritAt(row, c) * xi[c];
      y[i * w.rows + r] = (TernaryRowScale(w, r) * xscales[i]) * static_cast<float>(acc);
    }
  }
}

void QuantizeInt8Rows(const float* x, int64_t cols, int8_t* xq, float* xscales, int64_t row_begin,
                      int64_t row_end) {
  for (int64_t i = row_begin; i < row_end; ++i) {
    const float* src = x + i * cols;
    int8_t* dst = xq + i * cols;
    float absmax = 0.0f;
    bool finite = true;
    for (int64_t c = 0; c < cols; ++c) {
      const float a = std::fabs(src[c]);
      finite = finite && a <= std::numeric_limits<float>::max();  // false for NaN and inf
      absmax = a > absmax ? a : absmax;
    }
    if (!finite || absmax == 0.0f) {
      xscales[i] = finite ? 0.0f : std::numeric_limits<float>::quiet_NaN();
      for (int64_t c = 0; c < cols; ++c) dst[c] = 0;
      continue;
    }
    xscales[i] = absmax / 127.0f;
    const float inv = 127.0f / absmax;
    for (int64_t c = 0; c < cols; ++c) {
      // |src * inv| <= 127 up to rounding, so the clamp only guards the conversion.
      float q = std::nearbyint(src[c] * inv);
      q = q > 127.0f ? 127.0f : (q < -127.0f ? -127.0f : q);
      dst[c] = static_cast<int8_t>(q);
    }
  }
}

}  // namespace qat::kernels::scalar
