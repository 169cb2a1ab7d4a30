// The ternary2 format (pack, unpack, validate; layout in ternary.h), the run-time choice of
// instruction set, and the dispatch of the kernels to ternary_{scalar,avx2,avx512}.cc with the
// output rows split over a ThreadPool.
#include "kernels/ternary.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <vector>

#include "kernels/dispatch.h"
#include "kernels/ternary_impl.h"
#include "kernels/thread_pool.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define QAT_X86 1
#endif

namespace qat::kernels {
namespace {

// Code of one trit; any negative value packs as -1 and any positive value as +1.
inline uint8_t CodeOf(int8_t trit) { return trit > 0 ? 2 : (trit < 0 ? 0 : 1); }

}  // namespace

void PackTernary(const int8_t* trits, int64_t rows, int64_t cols, uint8_t* out) {
  if (rows <= 0 || cols <= 0) return;
  const int64_t row_bytes = TernaryRowBytes(cols);
  for (int64_t r = 0; r < rows; ++r) {
    const int8_t* src = trits + r * cols;
    uint8_t* dst = out + r * row_bytes;
    for (int64_t block = 0; block * kTernaryBlock < cols; ++block) {
      const int64_t base = block * kTernaryBlock;
      for (int64_t m = 0; m < kTernaryBlockBytes; ++m) {
        uint8_t byte = 0;
        for (int j = 0; j < 4; ++j) {
          const int64_t c = base + m + 32 * j;
          const uint8_t code = c < cols ? CodeOf(src[c]) : 1;  // padding is code 1
          byte |= static_cast<uint8_t>(code << (2 * j));
        }
        dst[block * kTernaryBlockBytes + m] = byte;
      }
    }
  }
}

void UnpackTernary(const uint8_t* packed, int64_t rows, int64_t cols, int8_t* trits) {
  if (rows <= 0 || cols <= 0) return;
  const int64_t row_bytes = TernaryRowBytes(cols);
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* src = packed + r * row_bytes;
    int8_t* dst = trits + r * cols;
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t in_block = c % kTernaryBlock;
      const uint8_t byte = src[c / kTernaryBlock * kTernaryBlockBytes + in_block % 32];
      const int code = (byte >> (2 * (in_block / 32))) & 3;
      dst[c] = static_cast<int8_t>(code == 3 ? 0 : code - 1);
    }
  }
}

int64_t ValidateTernary(const uint8_t* packed, int64_t rows, int64_t cols) {
  if (rows <= 0 || cols <= 0) return -1;
  const int64_t row_bytes = TernaryRowBytes(cols);
  const int64_t full_blocks = cols / kTernaryBlock;
  const int64_t tail_cols = cols % kTernaryBlock;  // valid columns of a partial last block
  // For the partial block: per byte m, which of its four codes are real weights (mask of the
  // code's two bits) and what its padding codes must be.
  uint8_t tail_real_mask[kTernaryBlockBytes] = {};
  uint8_t tail_padding[kTernaryBlockBytes] = {};
  for (int64_t m = 0; m < kTernaryBlockBytes; ++m) {
    for (int j = 0; j < 4; ++j) {
      if (m + 32 * j < tail_cols) {
        tail_real_mask[m] |= static_cast<uint8_t>(3 << (2 * j));
      } else {
        tail_padding[m] |= static_cast<uint8_t>(1 << (2 * j));
      }
    }
  }
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* row = packed + r * row_bytes;
    // Full blocks: a code is 3 iff both of its bits are set; test 8 bytes at a time.
    const int64_t full_bytes = full_blocks * kTernaryBlockBytes;
    for (int64_t b = 0; b < full_bytes; b += 8) {
      uint64_t v;
      std::memcpy(&v, row + b, 8);
      const uint64_t code3 = v & (v >> 1) & 0x5555555555555555ULL;
      if (code3 != 0) {
        for (int k = 0; k < 8; ++k) {
          if ((code3 >> (8 * k)) & 0xFF) return r * row_bytes + b + k;
        }
      }
    }
    if (tail_cols == 0) continue;
    for (int64_t m = 0; m < kTernaryBlockBytes; ++m) {
      const uint8_t byte = row[full_bytes + m];
      const uint8_t real = byte & tail_real_mask[m];
      const bool has_code3 = (real & (real >> 1) & 0x55) != 0;
      const bool bad_padding = (byte & ~tail_real_mask[m] & 0xFF) != tail_padding[m];
      if (has_code3 || bad_padding) return r * row_bytes + full_bytes + m;
    }
  }
  return -1;
}

// ----- Instruction sets -----

namespace {

struct CpuFeatures {
  bool avx2 = false;    // AVX2 + FMA + F16C, with the OS saving YMM state
  bool avx512 = false;  // AVX-512 F/BW/VL/DQ, with the OS saving ZMM state
};

CpuFeatures DetectCpu() {
  CpuFeatures f;
#ifdef QAT_X86
  unsigned eax, ebx, ecx, edx;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return f;
  const bool osxsave = ecx & bit_OSXSAVE;
  const bool fma = ecx & bit_FMA;
  const bool f16c = ecx & bit_F16C;
  const bool avx = ecx & bit_AVX;
  if (!osxsave || !avx) return f;
  // XCR0: which register state the OS saves on a context switch.
  unsigned xcr0_lo, xcr0_hi;
  __asm__ volatile("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
  const bool os_ymm = (xcr0_lo & 0x6) == 0x6;              // SSE and AVX state
  const bool os_zmm = os_ymm && (xcr0_lo & 0xE0) == 0xE0;  // opmask, ZMM_Hi256, Hi16_ZMM
  if (__get_cpuid_max(0, nullptr) < 7) return f;
  __cpuid_count(7, 0, eax, ebx, ecx, edx);
  f.avx2 = os_ymm && fma && f16c && (ebx & bit_AVX2);
  f.avx512 = os_zmm && fma && f16c && (ebx & bit_AVX512F) && (ebx & bit_AVX512BW) &&
             (ebx & bit_AVX512VL) && (ebx & bit_AVX512DQ);
#endif
  return f;
}

const CpuFeatures& Cpu() {
  static const CpuFeatures features = DetectCpu();
  return features;
}

}  // namespace

bool IsaSupported(Isa isa) {
  switch (isa) {
    case Isa::kScalar:
      return true;
    case Isa::kAvx2:
      return Cpu().avx2;
    case Isa::kAvx512:
      return Cpu().avx512;
  }
  return false;
}

Isa BestIsa() {
  static const Isa best = IsaSupported(Isa::kAvx512) ? Isa::kAvx512
                          : IsaSupported(Isa::kAvx2) ? Isa::kAvx2
                                                     : Isa::kScalar;
  return best;
}

const char* IsaName(Isa isa) {
  switch (isa) {
    case Isa::kScalar:
      return "scalar";
    case Isa::kAvx2:
      return "avx2";
    case Isa::kAvx512:
      return "avx512";
  }
  return "unknown";
}

// ----- Dispatch -----

namespace {

using dispatch::ForRows;
using dispatch::HandledWithoutKernel;
using dispatch::PaddedActivations;
using dispatch::RowGrain;
using dispatch::ScalesUsable;

constexpr int64_t kTernaryUnitWork = int64_t{1} << 17;  // ~2 us of ternary GEMV
constexpr int64_t kDenseUnitWork = int64_t{1} << 16;    // 256 KB of fp32 weights

}  // namespace

void TernaryGemv(const TernaryView& w, const float* x, float* y, Isa isa, ThreadPool* pool) {
  if (HandledWithoutKernel(w.rows, w.cols, 1, ScalesUsable(w), y)) return;
  const auto rows_fn = QAT_KERNEL_FOR_ISA(isa, TernaryGemvRows);
  const float* xp = PaddedActivations(x, 1, w.cols, TernaryRowBytes(w.cols) * 4);
  ForRows(pool, w.rows, RowGrain(kTernaryUnitWork, w.cols, 4),
          [&](int64_t begin, int64_t end) { rows_fn(w, xp, y, begin, end); });
}

void TernaryGemm(const TernaryView& w, const float* x, int64_t m, float* y, Isa isa,
                 ThreadPool* pool) {
  if (m == 1) return TernaryGemv(w, x, y, isa, pool);  // the GEMV kernel is faster for one row
  if (HandledWithoutKernel(w.rows, w.cols, m, ScalesUsable(w), y)) return;
  const auto rows_fn = QAT_KERNEL_FOR_ISA(isa, TernaryGemmRows);
  ForRows(pool, w.rows, RowGrain(kDenseUnitWork, w.cols * m, kGemmRowTile),
          [&](int64_t begin, int64_t end) { rows_fn(w, x, m, y, begin, end); });
}

void DenseGemv(const float* w, int64_t rows, int64_t cols, const float* x, float* y, Isa isa,
               ThreadPool* pool) {
  if (HandledWithoutKernel(rows, cols, 1, true, y)) return;
  const auto rows_fn = QAT_KERNEL_FOR_ISA(isa, DenseGemvRows);
  ForRows(pool, rows, RowGrain(kDenseUnitWork, cols, 4),
          [&](int64_t begin, int64_t end) { rows_fn(w, cols, x, y, begin, end); });
}

void DenseGemm(const float* w, int64_t rows, int64_t cols, const float* x, int64_t m, float* y,
               Isa isa, ThreadPool* pool) {
  if (m == 1) return DenseGemv(w, rows, cols, x, y, isa, pool);
  if (HandledWithoutKernel(rows, cols, m, true, y)) return;
  const auto rows_fn = QAT_KERNEL_FOR_ISA(isa, DenseGemmRows);
  ForRows(pool, rows, RowGrain(kDenseUnitWork, cols * m, kGemmRowTile),
          [&](int64_t begin, int64_t end) { rows_fn(w, rows, cols, x, m, y, begin, end); });
}

}  // namespace qat::kernels
