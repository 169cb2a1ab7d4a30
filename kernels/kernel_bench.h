// `qat bench kernels`: our packed kernels against a dense baseline on the same shapes in the same
// run, on the CPU (kernel_bench.cc) and on a CUDA GPU (cuda/bench_cuda.cc). Torch-free: the
// libtorch baselines are passed in by the caller (trainer/cli/cmd_bench.cc).
//
// Method (both devices): every timed call reads another copy of the weights, and the copies
// together exceed kBenchRotateBytes (256 MiB: beyond the CPU's last-level cache and 4x an H100's
// 50 MB L2), so weights stream from memory as in decoding. The machine's memory bandwidth is
// measured in the same run (CPU: every pool thread streaming reads over 256 MiB; GPU: a
// device-to-device cudaMemcpy, counted as read + write), and each result's weight bytes per second
// is printed as a share of it. Before its timed calls, each measurement makes one untimed pass over
// all its copies (on this project's VM, the first read of freshly written memory ran up to 10x
// slow for ~100 ms), and the CPU timings of ours start only once libtorch's BLAS threads have
// stopped spinning after the baseline (they shared the cores with our first format otherwise).
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <utility>
#include <vector>

#include "absl/status/status.h"

namespace qat::kernels {

class ThreadPool;

inline constexpr int64_t kBenchRotateBytes = int64_t{256} << 20;

struct KernelBenchOptions {
  std::vector<std::pair<int64_t, int64_t>> shapes;  // rows (out) x cols (in)
  int64_t m = 8;                                    // the small-batch row count timed besides 1
  int iters = 20;      // timed calls per measurement (the median is printed)
  bool quick = false;  // 3 calls per measurement (CPU), for a fast look on small machines
  // The int4 formats' group: 128 stores as many bytes per weight as ggml's Q4_0 (4.5 bits), 32
  // has Q4_0's group (6 bits: a float scale and zero per 32).
  int64_t int4_group = 128;
};

// Median of `iters` timed calls of fn(call index) in microseconds, after `warmups` untimed calls
// (indices 0 .. warmups-1; the timed calls continue from there). iters >= 1.
double MedianMicros(int iters, int warmups, const std::function<void(int)>& fn);

// Microseconds per call of a dense product Y[m x rows] = X[m x cols] W^T with W rotated over
// copies larger than kBenchRotateBytes; a negative value when the baseline cannot run (for
// example libtorch built without CUDA).
using DenseTimer = std::function<double(int64_t rows, int64_t cols, int64_t m, int iters)>;

// Per shape, m in {1, options.m} and format (ternary2, ternary2 in the x16 layout where AVX-512
// runs it, ternary2 with int8 activations, ternary3, int2/g64, int4/g128, and int2/g64 and
// int4/g128 in the x16 layouts with int8 activations, intk_int8.h): our time on the best Isa with
// `pool`, `dense_fp32`'s time, the speedup, the weight GB/s and its share of the measured read
// bandwidth.
void RunCpuKernelBench(const KernelBenchOptions& options, ThreadPool& pool,
                       const DenseTimer& dense_fp32, std::FILE* out);

// The same on GPU 0 with the CUDA kernels (ternary2, int2/g64, int4/g128), against `dense_bf16`
// (libtorch's cuBLAS bf16), or cuBLAS bf16 called directly when that returns a negative value.
// FailedPrecondition in a build without CUDA or when no GPU is visible.
absl::Status RunGpuKernelBench(const KernelBenchOptions& options, const DenseTimer& dense_bf16,
                               std::FILE* out);

}  // namespace qat::kernels
