// The GPU half of `qat bench kernels` (see kernels/kernel_bench.h).
//
// Method: every timed call reads another copy of the weights, and the copies together are larger
// than 4x the GPU's L2 cache (H100: 50 MB), so weights stream from HBM as in decoding. A timing is
// the mean over `iters` back-to-back calls between two CUDA events; the figure printed is the
// median of 5 timings. Bandwidth: a device-to-device cudaMemcpy of 1 GiB, counted as read + write.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/packed_cuda.h"
#include "kernels/cuda/runtime_cuda.h"
#include "kernels/kernel_bench.h"
#include "kernels/status_macros.h"

namespace qat::kernels {
namespace {

using cuda::DeviceBuffer;

constexpr int kRepeats = 5;

absl::Status Check(int error, const std::string& what) { return cuda::CudaStatus(error, what); }

// Median over kRepeats of the mean microseconds of `iters` calls of fn(i) (i = call index).
template <typename Fn>
absl::StatusOr<double> TimeGpu(int iters, cudaStream_t stream, Fn fn) {
  cudaEvent_t start, stop;
  QAT_RETURN_IF_ERROR(Check(cudaEventCreate(&start), "cudaEventCreate"));
  QAT_RETURN_IF_ERROR(Check(cudaEventCreate(&stop), "cudaEventCreate"));
  std::vector<double> means;
  absl::Status status = absl::OkStatus();
  for (int i = 0; i < 3 && status.ok(); ++i) status = Check(fn(i), "warm-up call");
  for (int rep = 0; rep < kRepeats && status.ok(); ++rep) {
    cudaEventRecord(start, stream);
    for (int i = 0; i < iters && status.ok(); ++i) status = Check(fn(i), "timed call");
    cudaEventRecord(stop, stream);
    if (status.ok()) status = Check(cudaEventSynchronize(stop), "cudaEventSynchronize");
    float ms = 0;
    if (status.ok()) status = Check(cudaEventElapsedTime(&ms, start, stop), "elapsed time");
    means.push_back(1e3 * ms / iters);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  if (!status.ok()) return status;
  std::sort(means.begin(), means.end());
  return means[means.size() / 2];
}

// Copies of `bytes_each` random bytes (made by fill) so that they total >= kRotateBytes.
constexpr int64_t kRotateBytes = kBenchRotateBytes;
absl::Status MakeCopies(int64_t bytes_each, const std::vector<uint8_t>& host,
                        std::vector<DeviceBuffer>* copies) {
  const int64_t count = std::max<int64_t>(2, kRotateBytes / std::max<int64_t>(bytes_each, 1) + 1);
  copies->resize(count);
  for (DeviceBuffer& b : *copies) {
    QAT_RETURN_IF_ERROR(b.Upload(host.data(), host.size(), "benchmark weights"));
  }
  return absl::OkStatus();
}

absl::StatusOr<double> CopyBandwidthGBs() {
  const size_t bytes = size_t{1} << 30;
  DeviceBuffer a, b;
  QAT_RETURN_IF_ERROR(a.Reserve(bytes, "bandwidth test"));
  QAT_RETURN_IF_ERROR(b.Reserve(bytes, "bandwidth test"));
  QAT_RETURN_IF_ERROR(Check(cudaMemset(a.as<void>(), 1, bytes), "cudaMemset"));
  absl::StatusOr<double> us = TimeGpu(5, nullptr, [&](int) {
    return cudaMemcpyAsync(b.as<void>(), a.as<void>(), bytes, cudaMemcpyDeviceToDevice, nullptr);
  });
  if (!us.ok()) return us.status();
  return 2.0 * bytes / (*us * 1e3);
}

// Dense bf16 Y = X W^T with cuBLAS called directly (when libtorch has no CUDA).
absl::StatusOr<double> CublasBf16Micros(cublasHandle_t blas, int64_t rows, int64_t cols, int64_t m,
                                        int iters) {
  std::vector<uint8_t> host(static_cast<size_t>(rows * cols * 2));
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  for (size_t i = 0; i + 1 < host.size(); i += 2) {  // bf16 = the upper half of an fp32
    const float v = uniform(rng);
    uint32_t bits;
    std::memcpy(&bits, &v, 4);
    host[i] = static_cast<uint8_t>(bits >> 16);
    host[i + 1] = static_cast<uint8_t>(bits >> 24);
  }
  std::vector<DeviceBuffer> w;
  QAT_RETURN_IF_ERROR(MakeCopies(rows * cols * 2, host, &w));
  DeviceBuffer x, y;
  std::vector<uint8_t> xhost(static_cast<size_t>(m * cols * 2), 0x3C);
  QAT_RETURN_IF_ERROR(x.Upload(xhost.data(), xhost.size(), "activations"));
  QAT_RETURN_IF_ERROR(y.Reserve(m * rows * 2, "outputs"));
  const float one = 1.0f, zero = 0.0f;
  return TimeGpu(iters, nullptr, [&](int i) {
    const cublasStatus_t s = cublasGemmEx(
        blas, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(rows), static_cast<int>(m),
        static_cast<int>(cols), &one, w[i % w.size()].as<void>(), CUDA_R_16BF,
        static_cast<int>(cols), x.as<void>(), CUDA_R_16BF, static_cast<int>(cols), &zero,
        y.as<void>(), CUDA_R_16BF, static_cast<int>(rows), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    return s == CUBLAS_STATUS_SUCCESS ? 0 : static_cast<int>(cudaErrorUnknown);
  });
}

struct FormatCase {
  const char* name;
  int bits;       // 0: ternary2
  int64_t group;  // int formats
};

}  // namespace

absl::Status RunGpuKernelBench(const KernelBenchOptions& options, const DenseTimer& torch_bf16,
                               std::FILE* out) {
  if (cuda::VisibleDeviceCount() == 0) {
    return absl::FailedPreconditionError("bench kernels --device cuda: no CUDA GPU is visible");
  }
  QAT_RETURN_IF_ERROR(Check(cudaSetDevice(0), "cudaSetDevice"));
  cudaDeviceProp prop{};
  QAT_RETURN_IF_ERROR(Check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties"));
  absl::StatusOr<double> bandwidth = CopyBandwidthGBs();
  if (!bandwidth.ok()) return bandwidth.status();
  cublasHandle_t blas = nullptr;
  if (cublasCreate(&blas) != CUBLAS_STATUS_SUCCESS) return absl::InternalError("cublasCreate");
  std::fprintf(out,
               "bench kernels (GPU): %s, L2 %.0f MB, measured device copy bandwidth %.0f GB/s "
               "(read + write); weights rotated over >= %lld MB of copies\n",
               prop.name, prop.l2CacheSize / 1e6, *bandwidth,
               static_cast<long long>(kRotateBytes >> 20));
  std::fprintf(out, "%-12s %-5s %-9s %11s %11s %-12s %8s %9s %7s\n", "shape", "op", "format",
               "ours_us", "dense_us", "dense", "speedup", "GB/s", "%bw");
  const FormatCase formats[] = {{"ternary2", 0, 0}, {"int2/g64", 2, 64}, {"int4/g128", 4, 128}};
  std::mt19937 rng(11);
  absl::Status status = absl::OkStatus();
  for (auto [rows, cols] : options.shapes) {
    for (int64_t m : {int64_t{1}, options.m}) {
      // The dense baseline once per shape and m.
      const char* dense_name = "torch bf16";
      double dense_us = torch_bf16 ? torch_bf16(rows, cols, m, options.iters) : -1.0;
      if (dense_us < 0) {
        dense_name = "cublas bf16";
        absl::StatusOr<double> t = CublasBf16Micros(blas, rows, cols, m, options.iters);
        if (!t.ok()) {
          status = t.status();
          break;
        }
        dense_us = *t;
      }
      for (const FormatCase& f : formats) {
        const int64_t row_bytes = f.bits == 0 ? TernaryRowBytes(cols) : IntKRowBytes(f.bits, cols);
        const int64_t groups = f.bits == 0 ? 0 : IntKGroupsPerRow(f.group, cols);
        std::vector<uint8_t> host(static_cast<size_t>(rows * row_bytes));
        for (uint8_t& b : host) {
          b = f.bits != 0 ? static_cast<uint8_t>(rng())
                          : static_cast<uint8_t>(rng() % 3 | (rng() % 3) << 2 | (rng() % 3) << 4 |
                                                 (rng() % 3) << 6);
        }
        std::vector<DeviceBuffer> w;
        status = MakeCopies(rows * row_bytes, host, &w);
        const int64_t n_scales = f.bits == 0 ? rows : rows * groups;
        std::vector<float> scales_host(static_cast<size_t>(n_scales), 0.01f);
        std::vector<float> zeros_host(static_cast<size_t>(n_scales), 1.5f);
        std::vector<float> x_host(static_cast<size_t>(m * cols), 0.5f);
        DeviceBuffer scales, zeros, x, y;
        if (status.ok()) status = scales.Upload(scales_host.data(), n_scales * 4, "scales");
        if (status.ok()) status = zeros.Upload(zeros_host.data(), n_scales * 4, "zeros");
        if (status.ok()) status = x.Upload(x_host.data(), x_host.size() * 4, "activations");
        if (status.ok()) status = y.Reserve(m * rows * 4, "outputs");
        if (!status.ok()) break;
        absl::StatusOr<double> ours = TimeGpu(options.iters, nullptr, [&](int i) {
          const uint8_t* data = w[i % w.size()].as<uint8_t>();
          if (f.bits == 0) {
            const TernaryView view{rows, cols, data, scales.as<float>(), rows};
            return cuda::TernaryGemm(view, x.as<void>(), m, cuda::Activation::kFloat32, nullptr,
                                     y.as<float>(), nullptr);
          }
          const IntKView view{
              rows, cols, f.bits, f.group, data, scales.as<float>(), zeros.as<float>()};
          return cuda::IntKGemm(view, x.as<void>(), m, cuda::Activation::kFloat32, y.as<float>(),
                                nullptr);
        });
        if (!ours.ok()) {
          status = ours.status();
          break;
        }
        const double bytes =
            static_cast<double>(rows * row_bytes + n_scales * 4 * (f.bits == 0 ? 1 : 2));
        const double gbs = bytes / (*ours * 1e3);
        std::fprintf(out, "%-12s %-5s %-9s %11.1f %11.1f %-12s %7.2fx %9.0f %6.1f%%\n",
                     absl::StrCat(rows, "x", cols).c_str(),
                     m == 1 ? "gemv" : absl::StrCat("M=", m).c_str(), f.name, *ours, dense_us,
                     dense_name, dense_us / *ours, gbs, 100.0 * gbs / *bandwidth);
      }
      if (!status.ok()) break;
    }
    if (!status.ok()) break;
  }
  cublasDestroy(blas);
  if (status.ok()) {
    std::fprintf(out,
                 "speedup = dense bf16 time / ours, same shape, same run; GB/s counts packed "
                 "weights + scales (+ zeros); %%bw = GB/s / measured copy bandwidth.\n");
  }
  return status;
}

}  // namespace qat::kernels
