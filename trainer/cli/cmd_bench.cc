// qat bench [kernels]: packed ternary kernels vs dense fp32 libtorch on the same shapes, measured
// side by side in one run. Weights are rotated over enough copies that every call streams them
// from memory rather than from the last-level cache.
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>

#include "absl/strings/str_split.h"
#include "comm/bench.h"
#include "comm/process_group.h"
#include "kernels/lowbit.h"
#include "kernels/ternary.h"
#include "kernels/thread_pool.h"
#include "trainer/cli/commands.h"
#include "trainer/cli/flags.h"

namespace qat::cli {
namespace {

using Clock = std::chrono::steady_clock;
constexpr int64_t kRotateBytes = 256ll << 20;  // well beyond any last-level cache here

template <typename Fn>
double MedianMicros(int iters, Fn fn) {
  std::vector<double> t;
  fn(0);  // warm up
  for (int i = 0; i < iters; ++i) {
    Clock::time_point a = Clock::now();
    fn(i + 1);
    t.push_back(std::chrono::duration<double, std::micro>(Clock::now() - a).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

double MemoryBandwidthGBs() {
  const size_t n = size_t(kRotateBytes);
  std::vector<char> a(n, 1), b(n, 2);
  double us = MedianMicros(5, [&](int) { std::memcpy(b.data(), a.data(), n); });
  return 2.0 * double(n) / (us * 1e3);  // read + write
}

}  // namespace

int BenchMain(int argc, char** argv) {
  constexpr char kUsage[] = "qat bench [kernels] [--threads N] [--iters N] [--shapes OUTxIN,...] [--m M]";
  Args args;
  int code = 0;
  if (!ParseCommand(argc, argv, "bench", kUsage,
                    {{"threads", true, false, "threads for ours and for libtorch (default: all)"},
                     {"iters", true, false, "timed calls per measurement (default 20)"},
                     {"shapes", true, false, "comma list of OUTxIN (default 4096x4096,4096x14336,14336x4096)"},
                     {"m", true, false, "also time matrix-matrix with M activation rows (default 8)"}},
                    &args, &code)) {
    return code;
  }
  if (!args.positional().empty() && args.positional()[0] == "comm") {
    // Bus bandwidth per collective and message size (nccl-tests definitions), over MPI.
    absl::StatusOr<std::shared_ptr<comm::ProcessGroup>> world = comm::MpiWorld();
    if (!world.ok()) return Fail("bench", std::string(world.status().message()));
    absl::Status s = comm::RunCommBenchAndPrint(**world, comm::CommBenchOptions{}, stdout);
    if (!s.ok()) return Fail("bench", std::string(s.message()));
    return 0;
  }
  if (!args.positional().empty() && args.positional()[0] != "kernels") {
    return Fail("bench", "unknown benchmark '" + args.positional()[0] +
                             "' (expected: kernels, comm)");
  }
  absl::StatusOr<int64_t> threads = args.GetInt("threads", 0), iters = args.GetInt("iters", 20),
                          m = args.GetInt("m", 8);
  for (const absl::Status& s : {threads.status(), iters.status(), m.status()}) {
    if (!s.ok()) return Fail("bench", std::string(s.message()));
  }
  std::vector<std::pair<int64_t, int64_t>> shapes;
  for (absl::string_view item :
       absl::StrSplit(args.Get("shapes", "4096x4096,4096x14336,14336x4096"), ',')) {
    std::vector<std::string> parts = absl::StrSplit(item, 'x');
    int64_t r = 0, c = 0;
    if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &r) || !absl::SimpleAtoi(parts[1], &c) ||
        r <= 0 || c <= 0) {
      return Fail("bench", "--shapes: expected OUTxIN, got '" + std::string(item) + "'");
    }
    shapes.emplace_back(r, c);
  }
  kernels::ThreadPool pool(static_cast<int>(*threads));
  torch::set_num_threads(pool.size());
  const kernels::Isa isa = kernels::BestIsa();
  const double bw = MemoryBandwidthGBs();
  std::printf("bench kernels: %d threads, ternary kernels %s, libtorch %s fp32 (%d threads); "
              "measured memcpy bandwidth %.1f GB/s\n",
              pool.size(), kernels::IsaName(isa), TORCH_VERSION, torch::get_num_threads(), bw);
  std::printf("%-13s %-6s %12s %12s %12s %8s %10s %10s\n", "shape", "op", "ternary_us", "scalar_us",
              "torch_fp32_us", "speedup", "tern_GB/s", "fp32_GB/s");
  std::mt19937 rng(7);
  for (auto [rows, cols] : shapes) {
    const int64_t packed_bytes = rows * kernels::TernaryRowBytes(cols);
    const int64_t dense_bytes = rows * cols * 4;
    const int tcopies = int(std::max<int64_t>(1, kRotateBytes / packed_bytes + 1));
    const int dcopies = int(std::max<int64_t>(2, kRotateBytes / dense_bytes + 1));
    std::vector<std::vector<uint8_t>> packed(tcopies);
    std::vector<int8_t> trits(size_t(rows * cols));
    std::uniform_int_distribution<int> trit(-1, 1);
    for (auto& t : trits) t = int8_t(trit(rng));
    for (auto& p : packed) {
      p.resize(size_t(packed_bytes));
      kernels::PackTernary(trits.data(), rows, cols, p.data());
    }
    std::vector<torch::Tensor> dense;
    for (int i = 0; i < dcopies; ++i) dense.push_back(torch::randn({rows, cols}));
    const float scale = 0.05f;
    for (int64_t mm : {int64_t(1), *m}) {
      torch::Tensor x = torch::randn({mm, cols});
      std::vector<float> y(size_t(mm * rows));
      auto ternary = [&](kernels::Isa which, kernels::ThreadPool* p) {
        return MedianMicros(int(*iters), [&](int i) {
          kernels::TernaryView w{rows, cols, packed[i % tcopies].data(), &scale, 1};
          if (mm == 1) {
            kernels::TernaryGemv(w, x.data_ptr<float>(), y.data(), which, p);
          } else {
            kernels::TernaryGemm(w, x.data_ptr<float>(), mm, y.data(), which, p);
          }
        });
      };
      const double t_ours = ternary(isa, &pool);
      const double t_scalar = ternary(kernels::Isa::kScalar, &pool);
      const double t_torch = MedianMicros(int(*iters), [&](int i) {
        torch::Tensor out = mm == 1 ? torch::mv(dense[i % dcopies], x[0])
                                    : torch::matmul(x, dense[i % dcopies].t());
      });
      std::printf("%-13s %-6s %12.1f %12.1f %12.1f %7.2fx %10.1f %10.1f\n",
                  (std::to_string(rows) + "x" + std::to_string(cols)).c_str(),
                  mm == 1 ? "gemv" : ("M=" + std::to_string(mm)).c_str(), t_ours, t_scalar,
                  t_torch, t_torch / t_ours, packed_bytes / (t_ours * 1e3),
                  dense_bytes / (t_torch * 1e3));
    }
  }
  std::printf("speedup = torch fp32 time / ternary time on the same shape, same run; GB/s counts "
              "weight bytes only (memcpy bandwidth above is read+write).\n\n");
  // The other packed formats against our own fp32 kernel (same rotation of weight copies).
  kernels::PrintLowbitBench(pool, static_cast<int>(*iters));
  return 0;
}

}  // namespace qat::cli
