// qat bench [kernels]: every packed format on our kernels vs the dense libtorch product on the
// same shapes, measured side by side in one run, on the CPU (fp32 baseline) and on a CUDA GPU
// (bf16 baseline: cuBLAS through libtorch). Method and columns: kernels/kernel_bench.h.
// qat bench comm: collective bus bandwidth over MPI (comm/bench.h).
#include <torch/cuda.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <random>
#include <thread>

#include "absl/strings/str_split.h"
#include "comm/bench.h"
#include "comm/process_group.h"
#include "kernels/kernel_bench.h"
#include "kernels/runtime.h"
#include "kernels/thread_pool.h"
#include "trainer/cli/commands.h"
#include "trainer/cli/flags.h"

namespace qat::cli {
namespace {

using Clock = std::chrono::steady_clock;

// Copies of one random dense matrix, enough to exceed kBenchRotateBytes (at least 2).
std::vector<torch::Tensor> DenseCopies(int64_t rows, int64_t cols, const torch::TensorOptions& o) {
  const int64_t bytes = rows * cols * static_cast<int64_t>(o.dtype().itemsize());
  const int64_t n = std::max<int64_t>(2, kernels::kBenchRotateBytes / bytes + 1);
  std::vector<torch::Tensor> copies;
  torch::Tensor first = torch::randn({rows, cols}, o);
  for (int64_t i = 0; i < n; ++i) copies.push_back(i == 0 ? first : first.clone());
  return copies;
}

// CPU time of the whole process (every thread) in seconds.
double ProcessCpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

// Returns once the process's other threads have gone quiet: less than 5% of one core used over
// a 20 ms window while this thread sleeps (at most 2 s). libtorch's BLAS (OpenBLAS on Debian)
// leaves its worker threads spinning for a while after a call; timed next to them, our kernels
// shared the 2 cores with a busy-wait and the first format after the baseline read 10x slow.
void WaitForIdleThreads() {
  constexpr double kWindowSeconds = 0.020, kIdleShare = 0.05;
  for (int i = 0; i < 100; ++i) {
    const double before = ProcessCpuSeconds();
    std::this_thread::sleep_for(std::chrono::duration<double>(kWindowSeconds));
    if (ProcessCpuSeconds() - before < kIdleShare * kWindowSeconds) return;
  }
}

// The dense baseline on the CPU: libtorch fp32 (mv for one row, matmul otherwise).
double TorchFp32Micros(int64_t rows, int64_t cols, int64_t m, int iters) {
  torch::NoGradGuard no_grad;
  const std::vector<torch::Tensor> w = DenseCopies(rows, cols, torch::kFloat32);
  const torch::Tensor x = torch::randn({m, cols});
  // One untimed pass over every copy first, as for our kernels (kernel_bench.cc).
  const double us = kernels::MedianMicros(iters, static_cast<int>(w.size()), [&](int i) {
    const torch::Tensor& wi = w[i % w.size()];
    torch::Tensor out = m == 1 ? torch::mv(wi, x[0]) : torch::matmul(x, wi.t());
  });
  WaitForIdleThreads();
  return us;
}

// The dense baseline on the GPU: cuBLAS bf16 through libtorch; -1 when libtorch has no CUDA. The
// mean of `iters` back-to-back calls between synchronizations (median of 5 such means).
double TorchCudaBf16Micros(int64_t rows, int64_t cols, int64_t m, int iters) {
  if (!torch::cuda::is_available()) return -1.0;
  torch::NoGradGuard no_grad;
  const auto options = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kBFloat16);
  const std::vector<torch::Tensor> w = DenseCopies(rows, cols, options);
  const torch::Tensor x = torch::randn({m, cols}, options);
  std::vector<double> means;
  for (int rep = 0; rep < 6; ++rep) {
    torch::cuda::synchronize();
    const Clock::time_point start = Clock::now();
    for (int i = 0; i < iters; ++i) {
      const torch::Tensor& wi = w[i % w.size()];
      torch::Tensor out = m == 1 ? torch::mv(wi, x[0]) : torch::matmul(x, wi.t());
    }
    torch::cuda::synchronize();
    if (rep > 0) {  // the first round warms up (cuBLAS handles, workspaces)
      means.push_back(std::chrono::duration<double, std::micro>(Clock::now() - start).count() /
                      iters);
    }
  }
  std::sort(means.begin(), means.end());
  return means[means.size() / 2];
}

}  // namespace

int BenchMain(int argc, char** argv) {
  constexpr char kUsage[] =
      "qat bench [kernels] [--device cpu|cuda|all] [--threads N] [--iters N] [--shapes OUTxIN,...] "
      "[--m M] [--int4-group 32|64|128] [--quick]";
  if (argc > 2 && std::string(argv[2]) == "interop") return BenchInteropMain(argc, argv);
  Args args;
  int code = 0;
  if (!ParseCommand(
          argc, argv, "bench", kUsage,
          {{"threads", true, false, "threads for ours and for libtorch (default: all)"},
           {"iters", true, false, "timed calls per measurement (default 20; 7 at >= 2^27 weights)"},
           {"shapes", true, false,
            "comma list of OUTxIN (default 4096x4096,4096x14336,8192x8192,28672x8192)"},
           {"m", true, false, "also time matrix-matrix with M activation rows (default 8)"},
           {"int4-group", true, false,
            "group of the CPU int4 formats: 32, 64 or 128 (default 128: Q4_0's 4.5 bits per "
            "weight; 32: Q4_0's group)"},
           {"device", true, false,
            "cpu, cuda or all (default: all = cpu, and cuda when a GPU is visible)"},
           {"quick", false, false, "3 timed calls per CPU measurement"}},
          &args, &code)) {
    return code;
  }
  if (!args.positional().empty() && args.positional()[0] == "comm") {
    // Bus bandwidth per collective and message size (nccl-tests definitions), over MPI.
    absl::StatusOr<std::shared_ptr<comm::ProcessGroup>> world = comm::MpiWorld();
    if (!world.ok()) return Fail("bench", std::string(world.status().message()));
    absl::Status s = comm::RunCommBenchAndPrint(**world, comm::CommBenchOptions{}, stdout);
    if (!s.ok()) return Fail("bench", std::string(s.message()));
    // NCCL too when this build has it and every rank has a GPU (one GPU per rank).
    if (comm::NcclBuilt()) {
      absl::StatusOr<std::shared_ptr<comm::ProcessGroup>> nccl =
          comm::NewNcclGroup(comm::ProcessGroupOptions{});
      if (nccl.ok()) {
        s = comm::RunCommBenchAndPrint(**nccl, comm::CommBenchOptions{}, stdout);
        if (!s.ok()) return Fail("bench", std::string(s.message()));
      } else if ((*world)->rank() == 0) {
        std::printf("(nccl: %s)\n", std::string(nccl.status().message()).c_str());
      }
    }
    return 0;
  }
  if (!args.positional().empty() && args.positional()[0] != "kernels") {
    return Fail("bench", "unknown benchmark '" + args.positional()[0] +
                             "' (expected: kernels, comm, interop)");
  }
  absl::StatusOr<int64_t> threads = args.GetInt("threads", 0), iters = args.GetInt("iters", 20),
                          m = args.GetInt("m", 8), int4_group = args.GetInt("int4-group", 128);
  for (const absl::Status& s :
       {threads.status(), iters.status(), m.status(), int4_group.status()}) {
    if (!s.ok()) return Fail("bench", std::string(s.message()));
  }
  if (*iters < 1 || *m < 1 || *m > 4096) {
    return Fail("bench", "--iters must be >= 1 and --m in [1, 4096]");
  }
  if (*int4_group != 32 && *int4_group != 64 && *int4_group != 128) {
    return Fail("bench",
                "--int4-group: expected 32, 64 or 128, got " + std::to_string(*int4_group));
  }
  const std::string device = args.Get("device", "all");
  if (device != "cpu" && device != "cuda" && device != "all") {
    return Fail("bench", "--device: expected cpu, cuda or all, got '" + device + "'");
  }
  kernels::KernelBenchOptions options;
  options.m = *m;
  options.iters = static_cast<int>(*iters);
  options.quick = args.Has("quick");
  options.int4_group = *int4_group;
  for (absl::string_view item :
       absl::StrSplit(args.Get("shapes", "4096x4096,4096x14336,8192x8192,28672x8192"), ',')) {
    std::vector<std::string> parts = absl::StrSplit(item, 'x');
    int64_t r = 0, c = 0;
    if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &r) || !absl::SimpleAtoi(parts[1], &c) ||
        r <= 0 || c <= 0 || r > (1 << 20) || c > (1 << 20)) {
      return Fail("bench",
                  "--shapes: expected OUTxIN (each in [1, 2^20]), got '" + std::string(item) + "'");
    }
    options.shapes.emplace_back(r, c);
  }
  if (device != "cuda") {
    kernels::ThreadPool pool(static_cast<int>(*threads));
    torch::set_num_threads(pool.size());
    std::printf("libtorch %s fp32 baseline on %d threads\n", TORCH_VERSION,
                torch::get_num_threads());
    kernels::RunCpuKernelBench(options, pool, TorchFp32Micros, stdout);
  }
  if (device == "cuda" || (device == "all" && kernels::CudaDeviceAvailable())) {
    std::printf("\n");
    absl::Status s = kernels::RunGpuKernelBench(options, TorchCudaBf16Micros, stdout);
    if (!s.ok()) return Fail("bench", std::string(s.message()));
  } else if (device == "all") {
    std::printf("\n(no CUDA GPU visible: GPU kernels not benchmarked)\n");
  }
  return 0;
}

}  // namespace qat::cli
