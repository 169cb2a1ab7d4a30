// The scalar reference of the int4-x16 / int2-x16 products with int8 activations (intk_int8.h):
// the definition every SIMD variant must match bit for bit. The group sums are exact integers; the
// float steps are std::fma (one rounding each, on any x86-64 or other CPU) in the documented order.
#include <cmath>
#include <cstdint>

#include "kernels/intk_int8.h"
#include "kernels/intk_int8_impl.h"

namespace qat::kernels::scalar {

void IntKX16Rows(const IntKX16View& w, const int8_t* x_padded, const int32_t* xsums,
                 const float* xscales, int64_t m, float* y, int64_t tile_begin, int64_t tile_end) {
  const int64_t chunks = IntKX16Chunks(w.bits, w.cols);
  const int64_t padded = chunks * IntKX16ChunkCols(w.bits);
  const int64_t groups = IntKGroupsPerRow(w.group, w.cols);
  const int64_t row_end = tile_end * kIntKX16Rows < w.rows ? tile_end * kIntKX16Rows : w.rows;
  for (int64_t i = 0; i < m; ++i) {
    const int8_t* xi = x_padded + i * padded;
    for (int64_t r = tile_begin * kIntKX16Rows; r < row_end; ++r) {
      float acc = 0.0f;
      for (int64_t g = 0; g < groups; ++g) {
        const int64_t c0 = g * w.group, c1 = c0 + w.group < w.cols ? c0 + w.group : w.cols;
        int32_t d = 0;
        for (int64_t c = c0; c < c1; ++c) {
          d += IntKX16CodeAt(w.data, w.bits, chunks, r, c) * static_cast<int32_t>(xi[c]);
        }
        const int64_t p = IntKX16ParamIndex(r, g, groups);
        const float u =
            std::fma(-w.zeros[p], static_cast<float>(xsums[i * groups + g]), static_cast<float>(d));
        acc = std::fma(w.scales[p], u, acc);
      }
      y[i * w.rows + r] = xscales[i] * acc;
    }
  }
}

}  // namespace qat::kernels::scalar
