// Internal to kernels/: what the generic (non-SIMD) dispatch files ternary.cc and lowbit.cc share.
// Not for the SIMD files: library templates instantiated there could be picked by the linker
// for generic code.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <limits>
#include <vector>

#include "kernels/ternary.h"
#include "kernels/thread_pool.h"

namespace qat::kernels::dispatch {

// An unsupported isa (a caller bug) falls back to the best supported one rather than executing
// instructions the CPU lacks.
inline Isa Usable(Isa isa) { return IsaSupported(isa) ? isa : BestIsa(); }

// The variant of a kernel for Usable(isa). QAT_KERNEL_FOR_ISA(isa, Name) picks among scalar::Name,
// avx2::Name and avx512::Name (ternary_impl.h, lowbit_impl.h).
template <typename Fn>
Fn ForIsa(Isa isa, Fn scalar_fn, Fn avx2_fn, Fn avx512_fn) {
  switch (Usable(isa)) {
    case Isa::kAvx512:
      return avx512_fn;
    case Isa::kAvx2:
      return avx2_fn;
    default:
      return scalar_fn;
  }
}
#define QAT_KERNEL_FOR_ISA(isa, name) \
  ::qat::kernels::dispatch::ForIsa(isa, scalar::name, avx2::name, avx512::name)

// The products with nothing for a kernel to compute: returns true after writing y (m x rows) when
// rows or m <= 0 (nothing), cols <= 0 (empty sums: zeros) or the view is unusable (NaN, so the
// caller sees the mistake and nothing reads out of bounds); false when a kernel must run.
inline bool HandledWithoutKernel(int64_t rows, int64_t cols, int64_t m, bool usable, float* y) {
  if (rows <= 0 || m <= 0) return true;
  if (cols <= 0) {
    std::fill(y, y + m * rows, 0.0f);
    return true;
  }
  if (!usable) {
    std::fill(y, y + m * rows, std::numeric_limits<float>::quiet_NaN());
    return true;
  }
  return false;
}

// x (rows x cols floats) copied into a buffer of rows x `padded` floats, each row zero past cols,
// so SIMD kernels can read whole blocks. The buffer is reused by the next call on the same thread
// (a decode loop calls this per linear layer); workers of a ParallelFor must get the returned
// pointer, since a thread_local named inside their lambda would be their own.
inline const float* PaddedActivations(const float* x, int64_t rows, int64_t cols, int64_t padded) {
  thread_local std::vector<float> buffer;
  buffer.resize(rows * padded);
  for (int64_t i = 0; i < rows; ++i) {
    float* row = buffer.data() + i * padded;
    std::copy(x + i * cols, x + (i + 1) * cols, row);
    std::fill(row + cols, row + padded, 0.0f);
  }
  return buffer.data();
}

// Runs fn over output rows, on the pool when there is one. Each call of fn gets whole grains.
inline void ForRows(ThreadPool* pool, int64_t rows, int64_t grain,
                    const std::function<void(int64_t, int64_t)>& fn) {
  if (pool == nullptr) {
    fn(0, rows);
  } else {
    pool->ParallelFor(rows, grain, fn);
  }
}

// Rows per work unit, so that a unit holds about `work` multiply-adds (a few microseconds, worth
// handing to another thread), rounded up to a multiple of `multiple_of`: small products run on
// one thread, large ones split evenly.
inline int64_t RowGrain(int64_t work, int64_t cols_times_m, int64_t multiple_of) {
  const int64_t rows = std::max<int64_t>(1, work / std::max<int64_t>(cols_times_m, 1));
  return (rows + multiple_of - 1) / multiple_of * multiple_of;
}

// A view whose scales cannot be indexed (n_scales neither 1 nor rows) produces NaN outputs
// instead of reading past the scales: the caller sees the mistake, nothing crashes.
template <typename View>
bool ScalesUsable(const View& w) {
  return w.scales != nullptr && (w.n_scales == 1 || w.n_scales == w.rows);
}

}  // namespace qat::kernels::dispatch
