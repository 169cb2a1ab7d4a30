// Internal to kernels/: what the generic (non-SIMD) dispatch files ternary.cc and lowbit.cc share.
// Not for the SIMD files: library templates instantiated there could be picked by the linker
// for generic code.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>

#include "kernels/ternary.h"
#include "kernels/thread_pool.h"

namespace qat::kernels::dispatch {

// An unsupported isa (a caller bug) falls back to the best supported one rather than executing
// instructions the CPU lacks.
inline Isa Usable(Isa isa) { return IsaSupported(isa) ? isa : BestIsa(); }

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
