// The ternary3 and int2/int4 formats (pack, unpack, validate, quantize; layouts in lowbit.h), the
// VNNI query, and the dispatch of the low-bit kernels to lowbit_{scalar,avx2,avx512}.cc with the
// output rows split over a ThreadPool.
#include "kernels/lowbit.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <vector>

#include "kernels/dispatch.h"
#include "kernels/lowbit_impl.h"
#include "kernels/ternary_impl.h"
#include "kernels/thread_pool.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define QAT_LOWBIT_X86 1
#endif

namespace qat::kernels {

// ----- ternary3 format -----

namespace {

// Code of one trit; any negative value packs as -1 and any positive value as +1.
inline int CodeOf(int8_t trit) { return trit > 0 ? 2 : (trit < 0 ? 0 : 1); }

}  // namespace

void PackTernary3(const int8_t* trits, int64_t rows, int64_t cols, uint8_t* out) {
  if (rows <= 0 || cols <= 0) return;
  const int64_t row_bytes = Ternary3RowBytes(cols);
  for (int64_t r = 0; r < rows; ++r) {
    const int8_t* src = trits + r * cols;
    uint8_t* dst = out + r * row_bytes;
    for (int64_t block = 0; block * kTernary3Block < cols; ++block) {
      const int64_t base = block * kTernary3Block;
      for (int64_t m = 0; m < kTernary3BlockBytes; ++m) {
        int b = 0;
        int weight = 1;  // 3^n
        for (int n = 0; n < 5; ++n, weight *= 3) {
          const int64_t c = base + m + 32 * n;
          b += (c < cols ? CodeOf(src[c]) : 1) * weight;  // padding is code 1
        }
        dst[block * kTernary3BlockBytes + m] = static_cast<uint8_t>(b);
      }
    }
  }
}

void UnpackTernary3(const uint8_t* packed, int64_t rows, int64_t cols, int8_t* trits) {
  if (rows <= 0 || cols <= 0) return;
  const int64_t row_bytes = Ternary3RowBytes(cols);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      trits[r * cols + c] = static_cast<int8_t>(Ternary3TritAt(packed + r * row_bytes, c));
    }
  }
}

int64_t ValidateTernary3(const uint8_t* packed, int64_t rows, int64_t cols) {
  if (rows <= 0 || cols <= 0) return -1;
  const int64_t row_bytes = Ternary3RowBytes(cols);
  const int64_t full_bytes = cols / kTernary3Block * kTernary3BlockBytes;
  const int64_t tail_cols = cols % kTernary3Block;  // real weights of a partial last block
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* row = packed + r * row_bytes;
    for (int64_t b = 0; b < full_bytes; ++b) {
      if (row[b] > 242) return r * row_bytes + b;
    }
    if (tail_cols == 0) continue;
    for (int64_t m = 0; m < kTernary3BlockBytes; ++m) {
      const uint8_t byte = row[full_bytes + m];
      bool bad = byte > 242;
      for (int n = 0; n < 5 && !bad; ++n) {
        bad = m + 32 * n >= tail_cols && Ternary3Code(byte, n) != 1;
      }
      if (bad) return r * row_bytes + full_bytes + m;
    }
  }
  return -1;
}

// ----- int2 / int4 format -----

namespace {

bool BitsSupported(int bits) { return bits == 2 || bits == 4; }

// Byte index within a row and bit shift of column c (layouts in lowbit.h).
inline void IntKPosition(int bits, int64_t c, int64_t* byte, int* shift) {
  if (bits == 4) {
    const int64_t in_unit = c % 32;
    *byte = c / 32 * kIntKUnitBytes + in_unit % 16;
    *shift = in_unit < 16 ? 0 : 4;
  } else {
    const int64_t in_unit = c % 64;
    *byte = c / 64 * kIntKUnitBytes + in_unit % 16;
    *shift = 2 * static_cast<int>(in_unit / 16);
  }
}

}  // namespace

void PackIntK(const uint8_t* q, int64_t rows, int64_t cols, int bits, uint8_t* out) {
  if (!BitsSupported(bits) || rows <= 0 || cols <= 0) return;
  const int64_t row_bytes = IntKRowBytes(bits, cols);
  const int max_code = (1 << bits) - 1;
  for (int64_t r = 0; r < rows; ++r) {
    uint8_t* dst = out + r * row_bytes;
    std::memset(dst, 0, row_bytes);  // padding codes are 0
    for (int64_t c = 0; c < cols; ++c) {
      int64_t byte;
      int shift;
      IntKPosition(bits, c, &byte, &shift);
      const int code = std::min<int>(q[r * cols + c], max_code);
      dst[byte] = static_cast<uint8_t>(dst[byte] | (code << shift));
    }
  }
}

void UnpackIntK(const uint8_t* packed, int64_t rows, int64_t cols, int bits, uint8_t* q) {
  if (!BitsSupported(bits) || rows <= 0 || cols <= 0) return;
  const int64_t row_bytes = IntKRowBytes(bits, cols);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      q[r * cols + c] = static_cast<uint8_t>(IntKCodeAt(packed + r * row_bytes, bits, c));
    }
  }
}

int64_t ValidateIntK(const uint8_t* packed, int64_t rows, int64_t cols, int bits) {
  if (!BitsSupported(bits)) return 0;
  if (rows <= 0 || cols <= 0) return -1;
  const int64_t row_bytes = IntKRowBytes(bits, cols);
  const int64_t unit = IntKUnitWeights(bits);
  if (cols % unit == 0) return -1;  // no padding: every code is valid
  // Bits of the last unit's bytes that hold padding weights.
  uint8_t padding_mask[kIntKUnitBytes] = {};
  const int64_t last_unit = cols / unit;
  for (int64_t c = cols; c < (last_unit + 1) * unit; ++c) {
    int64_t byte;
    int shift;
    IntKPosition(bits, c, &byte, &shift);
    padding_mask[byte - last_unit * kIntKUnitBytes] |=
        static_cast<uint8_t>(((1 << bits) - 1) << shift);
  }
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t base = r * row_bytes + last_unit * kIntKUnitBytes;
    for (int64_t m = 0; m < kIntKUnitBytes; ++m) {
      if (packed[base + m] & padding_mask[m]) return base + m;
    }
  }
  return -1;
}

void QuantizeIntK(const float* w, int64_t rows, int64_t cols, int bits, int64_t group,
                  uint8_t* packed, float* scales, float* zeros) {
  if (!IntKLayoutSupported(bits, group) || rows <= 0 || cols <= 0) return;
  const int64_t groups = IntKGroupsPerRow(group, cols);
  const float max_code = static_cast<float>((1 << bits) - 1);
  std::vector<uint8_t> q(cols);
  for (int64_t r = 0; r < rows; ++r) {
    const float* src = w + r * cols;
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t c0 = g * group, c1 = std::min(cols, c0 + group);
      float lo = src[c0], hi = src[c0];
      for (int64_t c = c0; c < c1; ++c) {
        lo = std::min(lo, src[c]);
        hi = std::max(hi, src[c]);
      }
      float scale = (hi - lo) / max_code;
      float zero = 0.0f;
      // A constant group, or one whose spread underflows or overflows the scale: every weight
      // becomes lo, exactly (1 * (0 - (-lo)) == lo).
      const bool constant = !(hi > lo) || !(scale > 0.0f) || std::isinf(scale);
      if (constant) {
        scale = 1.0f;
        zero = -lo;
      } else {
        zero = -lo / scale;
      }
      for (int64_t c = c0; c < c1; ++c) {
        float code = constant ? 0.0f : std::nearbyint((src[c] - lo) / scale);
        if (!(code >= 0.0f)) code = 0.0f;  // also NaN
        code = std::min(code, max_code);
        q[c] = static_cast<uint8_t>(code);
      }
      scales[r * groups + g] = scale;
      zeros[r * groups + g] = zero;
    }
    PackIntK(q.data(), 1, cols, bits, packed + r * IntKRowBytes(bits, cols));
  }
}

namespace {

bool IntKUsable(const IntKView& w) {
  return IntKLayoutSupported(w.bits, w.group) && w.data != nullptr && w.scales != nullptr &&
         w.zeros != nullptr;
}

void FillNaN(float* y, int64_t n) { std::fill(y, y + n, std::numeric_limits<float>::quiet_NaN()); }

}  // namespace

void DequantizeIntK(const IntKView& w, float* out) {
  if (w.rows <= 0 || w.cols <= 0) return;
  if (!IntKUsable(w)) return FillNaN(out, w.rows * w.cols);
  for (int64_t r = 0; r < w.rows; ++r) {
    for (int64_t c = 0; c < w.cols; ++c) out[r * w.cols + c] = IntKValueAt(w, r, c);
  }
}

// ----- CPU features -----

namespace {

bool DetectAvx512Vnni() {
#ifdef QAT_LOWBIT_X86
  // IsaSupported(kAvx512) already checked that the OS saves the ZMM state.
  if (!IsaSupported(Isa::kAvx512) || __get_cpuid_max(0, nullptr) < 7) return false;
  unsigned eax, ebx, ecx, edx;
  __cpuid_count(7, 0, eax, ebx, ecx, edx);
  return (ecx & bit_AVX512VNNI) != 0;
#else
  return false;
#endif
}

}  // namespace

bool CpuHasAvx512Vnni() {
  static const bool has = DetectAvx512Vnni();
  return has;
}

// ----- Dispatch -----

namespace {

using dispatch::ForRows;
using dispatch::HandledWithoutKernel;
using dispatch::PaddedActivations;
using dispatch::RowGrain;
using dispatch::ScalesUsable;
using dispatch::Usable;

constexpr int64_t kFloatUnitWork = int64_t{1} << 17;  // ~2 us of a decoding fp32 GEMV
constexpr int64_t kInt8UnitWork = int64_t{1} << 19;   // ~2 us of int8 dot products
constexpr int64_t kGemmUnitWork = int64_t{1} << 16;   // as DenseGemm

// The dense GEMM kernel of a SIMD isa (ternary_impl.h).
using DenseGemmFn = void (*)(const float*, int64_t, int64_t, const float*, int64_t, float*, int64_t,
                             int64_t);
DenseGemmFn DenseGemmOf(Isa isa) {
  return isa == Isa::kAvx512 ? avx512::DenseGemmRows : avx2::DenseGemmRows;
}

// Rows decoded to floats at a time by the SIMD GEMMs: about 256 KiB of floats (stays in L2 while
// every activation row passes over it), a multiple of 4 rows when there is room.
int64_t DecodeTileRows(int64_t cols) {
  const int64_t rows = std::clamp<int64_t>((int64_t{64} << 10) / cols, 1, 32);
  return rows >= 4 ? rows / 4 * 4 : rows;
}

// Y = W X^T for a W produced tile by tile by decode(row_begin, row_end, out) (cols floats a row),
// multiplied by the dense GEMM of `isa`; then finish(row_begin, row_end) may rescale the outputs.
// Each output row is computed by the same kernel calls whatever the split, so the result does not
// depend on the thread count.
void DecodedGemm(int64_t rows, int64_t cols, const float* x, int64_t m, float* y, Isa isa,
                 ThreadPool* pool, const std::function<void(int64_t, int64_t, float*)>& decode,
                 const std::function<void(int64_t, int64_t)>& finish) {
  const DenseGemmFn dense = DenseGemmOf(isa);
  const int64_t tile = DecodeTileRows(cols);
  ForRows(pool, rows, RowGrain(kGemmUnitWork, cols * m, tile), [&](int64_t begin, int64_t end) {
    thread_local std::vector<float> decoded;
    for (int64_t t0 = begin; t0 < end; t0 += tile) {
      const int64_t t1 = std::min(end, t0 + tile);
      decoded.resize((t1 - t0) * cols);
      decode(t0, t1, decoded.data());
      // The dense kernel indexes outputs as y[i * rows + r]: offsetting y by t0 makes the tile's
      // row 0 land on output row t0.
      dense(decoded.data(), rows, cols, x, m, y + t0, 0, t1 - t0);
      if (finish) finish(t0, t1);
    }
  });
}

}  // namespace

void Ternary3Gemv(const Ternary3View& w, const float* x, float* y, Isa isa, ThreadPool* pool) {
  if (HandledWithoutKernel(w.rows, w.cols, 1, ScalesUsable(w) && w.data != nullptr, y)) return;
  const auto rows_fn = QAT_KERNEL_FOR_ISA(isa, Ternary3GemvRows);
  const float* xp = PaddedActivations(
      x, 1, w.cols, Ternary3RowBytes(w.cols) / kTernary3BlockBytes * kTernary3Block);
  ForRows(pool, w.rows, RowGrain(kFloatUnitWork, w.cols, 4),
          [&](int64_t begin, int64_t end) { rows_fn(w, xp, y, begin, end); });
}

void Ternary3Gemm(const Ternary3View& w, const float* x, int64_t m, float* y, Isa isa,
                  ThreadPool* pool) {
  if (m == 1) return Ternary3Gemv(w, x, y, isa, pool);  // the GEMV kernel is faster for one row
  if (HandledWithoutKernel(w.rows, w.cols, m, ScalesUsable(w) && w.data != nullptr, y)) return;
  const Isa use = Usable(isa);
  if (use == Isa::kScalar) {
    return ForRows(
        pool, w.rows, RowGrain(kGemmUnitWork, w.cols * m, 1),
        [&](int64_t begin, int64_t end) { scalar::Ternary3GemmRows(w, x, m, y, begin, end); });
  }
  auto decode = use == Isa::kAvx512 ? avx512::Ternary3DecodeRows : avx2::Ternary3DecodeRows;
  DecodedGemm(
      w.rows, w.cols, x, m, y, use, pool,
      [&](int64_t begin, int64_t end, float* out) { decode(w, begin, end, out); },
      [&](int64_t begin, int64_t end) {
        for (int64_t i = 0; i < m; ++i) {
          for (int64_t r = begin; r < end; ++r) y[i * w.rows + r] *= Ternary3RowScale(w, r);
        }
      });
}

void IntKGemv(const IntKView& w, const float* x, float* y, Isa isa, ThreadPool* pool) {
  if (HandledWithoutKernel(w.rows, w.cols, 1, IntKUsable(w), y)) return;
  const auto rows_fn = QAT_KERNEL_FOR_ISA(isa, IntKGemvRows);
  ForRows(pool, w.rows, RowGrain(kFloatUnitWork, w.cols, 4),
          [&](int64_t begin, int64_t end) { rows_fn(w, x, y, begin, end); });
}

void IntKGemm(const IntKView& w, const float* x, int64_t m, float* y, Isa isa, ThreadPool* pool) {
  if (m == 1) return IntKGemv(w, x, y, isa, pool);
  if (HandledWithoutKernel(w.rows, w.cols, m, IntKUsable(w), y)) return;
  const Isa use = Usable(isa);
  if (use == Isa::kScalar) {
    return ForRows(
        pool, w.rows, RowGrain(kGemmUnitWork, w.cols * m, 1),
        [&](int64_t begin, int64_t end) { scalar::IntKGemmRows(w, x, m, y, begin, end); });
  }
  auto decode = use == Isa::kAvx512 ? avx512::IntKDecodeRows : avx2::IntKDecodeRows;
  DecodedGemm(
      w.rows, w.cols, x, m, y, use, pool,
      [&](int64_t begin, int64_t end, float* out) { decode(w, begin, end, out); }, nullptr);
}

void QuantizeActivationsInt8(const float* x, int64_t m, int64_t cols, int8_t* xq, float* xscales,
                             Isa isa) {
  if (m <= 0) return;
  if (cols <= 0) return std::fill(xscales, xscales + m, 0.0f);
  QAT_KERNEL_FOR_ISA(isa, QuantizeInt8Rows)(x, cols, xq, xscales, 0, m);
}

void TernaryGemmInt8(const TernaryView& w, const int8_t* xq, const float* xscales, int64_t m,
                     float* y, Isa isa, ThreadPool* pool) {
  if (HandledWithoutKernel(w.rows, w.cols, m,
                           ScalesUsable(w) && w.data != nullptr && w.cols <= kInt8MaxCols, y)) {
    return;
  }
  const Isa use = Usable(isa);
  // AVX-512 without VNNI runs the AVX2 code (every AVX-512 CPU has AVX2).
  const bool vnni = use == Isa::kAvx512 && CpuHasAvx512Vnni();
  void (*rows_fn)(const TernaryView&, const int8_t*, const int32_t*, const float*, int64_t, float*,
                  int64_t, int64_t) = vnni                  ? avx512::TernaryInt8Rows
                                      : use != Isa::kScalar ? avx2::TernaryInt8Rows
                                                            : scalar::TernaryInt8Rows;
  // Activations padded to whole blocks with zeros (so padding weights add nothing whatever their
  // code), in the order the kernel reads them, and their sums (the SIMD kernels compute
  // sum (t + 1) * x and subtract sum x).
  const int64_t padded = TernaryRowBytes(w.cols) * 4;
  const int64_t blocks = padded / kTernaryBlock;
  thread_local std::vector<int8_t> x_padded, x_paired;
  thread_local std::vector<int32_t> sums;
  x_padded.assign(m * padded, 0);
  sums.assign(m, 0);
  for (int64_t i = 0; i < m; ++i) {
    const int8_t* src = xq + i * w.cols;
    std::copy(src, src + w.cols, x_padded.begin() + i * padded);
    int32_t sum = 0;
    for (int64_t c = 0; c < w.cols; ++c) sum += src[c];
    sums[i] = sum;
  }
  if (vnni) {  // rearranged 32 columns at a time (Int8PairedIndex keeps runs of 32 together)
    x_paired.resize(m * padded);
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t c = 0; c < padded; c += 32) {
        std::memcpy(x_paired.data() + i * padded + Int8PairedIndex(c, blocks),
                    x_padded.data() + i * padded + c, 32);
      }
    }
    x_padded.swap(x_paired);
  }
  const int8_t* xp = x_padded.data();
  const int32_t* xs = sums.data();
  ForRows(pool, w.rows, RowGrain(kInt8UnitWork, w.cols * m, 4),
          [&](int64_t begin, int64_t end) { rows_fn(w, xp, xs, xscales, m, y, begin, end); });
}

void TernaryGemvInt8(const TernaryView& w, const int8_t* xq, float xscale, float* y, Isa isa,
                     ThreadPool* pool) {
  TernaryGemmInt8(w, xq, &xscale, 1, y, isa, pool);
}

}  // namespace qat::kernels
