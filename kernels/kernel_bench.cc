// The CPU half of `qat bench kernels` (kernel_bench.h): every packed format against libtorch's
// fp32 product (passed in) on the same shapes in the same run. The weights are random valid
// packed bytes: the kernels have no data-dependent branches, so their values do not change the
// timing. Each format's copies are made, timed and freed before the next (peak memory stays near
// one format's rotation plus the caller's).
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/intk_int8.h"
#include "kernels/kernel_bench.h"
#include "kernels/lowbit.h"
#include "kernels/ternary.h"
#include "kernels/ternary_x16.h"
#include "kernels/thread_pool.h"

namespace qat::kernels {
namespace {

using Clock = std::chrono::steady_clock;

// A fast deterministic byte and float source (xorshift64*): filling hundreds of MiB with
// <random> distributions would dominate the benchmark's run time.
class FastRandom {
 public:
  explicit FastRandom(uint64_t seed) : state_(seed * 0x9E3779B97F4A7C15ull + 1) {}
  uint64_t Next() {
    state_ ^= state_ >> 12;
    state_ ^= state_ << 25;
    state_ ^= state_ >> 27;
    return state_ * 0x2545F4914F6CDD1Dull;
  }
  float Uniform(float lo, float hi) {  // in [lo, hi)
    return lo + (hi - lo) * static_cast<float>(Next() >> 40) / static_cast<float>(1 << 24);
  }

 private:
  uint64_t state_;
};

// Copies of one packed tensor, enough of them to exceed kBenchRotateBytes in all (at least 2).
// With `align64`, `first` ends with 63 spare bytes and each copy's bytes are moved to its first
// 64-byte boundary (at() returns that address), as a runtime would allocate the x16 layouts.
struct Rotation {
  std::vector<std::vector<uint8_t>> copies;
  std::vector<int64_t> offsets;
  int64_t bytes = 0;  // of the tensor in each copy
  explicit Rotation(const std::vector<uint8_t>& first, bool align64 = false)
      : bytes(static_cast<int64_t>(first.size()) - (align64 ? 63 : 0)) {
    const int64_t n =
        std::max<int64_t>(2, kBenchRotateBytes / std::max<int64_t>(1, first.size()) + 1);
    copies.assign(n, first);
    offsets.assign(n, 0);
    if (!align64) return;
    for (int64_t k = 0; k < n; ++k) {
      std::vector<uint8_t>& c = copies[k];
      offsets[k] = static_cast<int64_t>((64 - reinterpret_cast<uintptr_t>(c.data()) % 64) % 64);
      std::memmove(c.data() + offsets[k], c.data(), bytes);
    }
  }
  const uint8_t* at(int i) const {
    return copies[i % copies.size()].data() + offsets[i % copies.size()];
  }
};

std::vector<uint8_t> RandomBytes(int64_t n, FastRandom& rng,
                                 const std::function<uint8_t(uint64_t)>& map) {
  std::vector<uint8_t> bytes(n);
  for (uint8_t& b : bytes) b = map(rng.Next() >> 32);
  return bytes;
}

std::vector<float> RandomFloats(int64_t n, FastRandom& rng, float lo, float hi) {
  std::vector<float> v(n);
  for (float& f : v) f = rng.Uniform(lo, hi);
  return v;
}

// Sum of n bytes as 64-bit words in 8 independent lanes: as many loads in flight as the core
// allows and no dependency chain, so the read, not the adds, is what limits it (one accumulator
// made the old probe slower than the kernels it was meant to bound).
uint64_t SumWords(const uint8_t* p, int64_t n) {
  uint64_t lane[8] = {};
  int64_t i = 0;
  for (; i + 64 <= n; i += 64) {
    for (int k = 0; k < 8; ++k) {
      uint64_t w;
      std::memcpy(&w, p + i + 8 * k, 8);
      lane[k] += w;
    }
  }
  uint64_t s = 0;
  for (; i < n; ++i) s += p[i];
  for (uint64_t v : lane) s += v;
  return s;
}

// Reads n bytes at p with the pool's threads, split into contiguous slabs as the kernels split
// their rows, keeping the sum observable so the reads are not optimized away.
void ReadAll(ThreadPool& pool, const uint8_t* p, int64_t n) {
  constexpr int64_t kSlab = int64_t{64} << 10;
  const int64_t slabs = (n + kSlab - 1) / kSlab;
  std::vector<uint64_t> sums(static_cast<size_t>(slabs), 0);  // by each chunk's first slab
  pool.ParallelFor(slabs, 1, [&](int64_t s0, int64_t s1) {
    const int64_t begin = s0 * kSlab, end = std::min(n, s1 * kSlab);
    sums[static_cast<size_t>(s0)] = SumWords(p + begin, end - begin);
  });
  static volatile uint64_t sink;
  for (uint64_t s : sums) sink = sink + s;
}

// Streaming read bandwidth of the machine with the pool's threads, in GB/s (median of 5) over
// 256 MiB: the headline figure. The %bw column uses a read of each format's own weight copies
// instead, timed alternately with the kernel (RunCpuKernelBench).
double ReadBandwidthGBs(ThreadPool& pool) {
  std::vector<uint8_t> a(static_cast<size_t>(kBenchRotateBytes));
  for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<uint8_t>(i * 0x9Du);
  const double us =
      MedianMicros(5, 1, [&](int) { ReadAll(pool, a.data(), static_cast<int64_t>(a.size())); });
  return static_cast<double>(kBenchRotateBytes) / (us * 1e3);
}

// One format on one shape: `call(i, x, m, y)` runs the product with weight copy i.
struct FormatRun {
  std::string name;
  int64_t weight_bytes = 0;  // packed bytes + scales (+ zeros) of one copy
  std::function<void(int, const float*, int64_t, float*)> call;
};

}  // namespace

double MedianMicros(int iters, int warmups, const std::function<void(int)>& fn) {
  std::vector<double> times;
  for (int i = 0; i < warmups; ++i) fn(i);
  for (int i = 0; i < iters; ++i) {
    const Clock::time_point start = Clock::now();
    fn(warmups + i);
    times.push_back(std::chrono::duration<double, std::micro>(Clock::now() - start).count());
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

void RunCpuKernelBench(const KernelBenchOptions& options, ThreadPool& pool,
                       const DenseTimer& dense_fp32, std::FILE* out) {
  const Isa isa = BestIsa();
  const double bandwidth = ReadBandwidthGBs(pool);
  std::fprintf(out,
               "bench kernels (CPU): %d threads, kernels %s%s; measured read bandwidth %.1f GB/s "
               "(%d threads streaming 256 MiB); weights rotated over >= %lld MiB per format\n",
               pool.size(), IsaName(isa),
               isa == Isa::kAvx512 && CpuHasAvx512Vnni() ? " (+VNNI for int8)" : "", bandwidth,
               pool.size(), static_cast<long long>(kBenchRotateBytes >> 20));
  std::fprintf(out, "%-12s %-5s %-14s %11s %11s %8s %8s %6s\n", "shape", "op", "format", "ours_us",
               "fp32_us", "speedup", "GB/s", "%bw");
  FastRandom rng(7);
  for (const auto& shape_pair : options.shapes) {
    // Plain locals, not structured bindings: the lambdas below capture them (C++17 forbids
    // capturing a binding, which clang enforces).
    const int64_t rows = shape_pair.first, cols = shape_pair.second;
    const int64_t weights = rows * cols;
    // Fewer calls where one fp32 call streams about a GB (2 cores take seconds per call).
    int iters = options.quick ? 3 : std::max(options.iters, 1);
    if (weights >= (int64_t{1} << 27)) iters = std::min(iters, 7);
    const std::string shape = absl::StrCat(rows, "x", cols);
    const int64_t max_m = std::max<int64_t>(1, options.m);
    const std::vector<float> x = RandomFloats(max_m * cols, rng, -1.0f, 1.0f);
    std::vector<float> y(max_m * rows);
    double dense_us[2] = {dense_fp32(rows, cols, 1, iters), dense_fp32(rows, cols, max_m, iters)};

    // The formats, each built (and its copies freed) in turn: 0 ternary2, 1 ternary2 in the
    // x16 layout (what the runtime runs on AVX-512 CPUs), 2 ternary2 with int8 activations,
    // 3 ternary3, 4 int2/g64, 5 int2/g64 in the x16 layout with int8 activations, 6 int4/gG,
    // 7 int4/gG in the x16 layout with int8 activations (G = options.int4_group).
    const int n_formats = 8;
    for (int f = 0; f < n_formats; ++f) {
      if (f == 1 && !TernaryX16Fast()) continue;
      std::vector<uint8_t> packed;
      std::vector<float> scales, zeros;
      FormatRun run;
      int bits = 0;
      int64_t group = 0;
      const bool intk_a8 = f == 5 || f == 7;
      if (f <= 2) {  // ternary2, every byte made of codes 0..2 (code 3 -> 1)
        packed = RandomBytes(rows * TernaryRowBytes(cols), rng, [](uint64_t v) {
          const uint8_t b = static_cast<uint8_t>(v);
          const uint8_t code3 = b & (b >> 1) & 0x55;  // low bit of every code 3
          return static_cast<uint8_t>(b & ~(code3 << 1));
        });
        scales = RandomFloats(rows, rng, 0.01f, 0.1f);
        if (f == 1) {  // the same bytes regrouped (uint8_t storage: new[] aligns it for words)
          std::vector<uint8_t> words(TernaryX16Words(rows, cols) * sizeof(uint32_t));
          RepackTernaryX16(packed.data(), rows, cols, reinterpret_cast<uint32_t*>(words.data()));
          packed.swap(words);
        }
      } else if (f == 3) {
        packed = RandomBytes(rows * Ternary3RowBytes(cols), rng,
                             [](uint64_t v) { return static_cast<uint8_t>(v % 243); });
        scales = RandomFloats(rows, rng, 0.01f, 0.1f);
      } else {
        bits = f <= 5 ? 2 : 4;
        group = f <= 5 ? 64 : options.int4_group;
        const int64_t params = rows * IntKGroupsPerRow(group, cols);
        packed = RandomBytes(rows * IntKRowBytes(bits, cols), rng,
                             [](uint64_t v) { return static_cast<uint8_t>(v); });
        scales = RandomFloats(params, rng, 0.001f, 0.01f);
        zeros = RandomFloats(params, rng, 0.0f, (1 << bits) - 1.0f);
        if (intk_a8) {  // the same codes repacked (63 spare bytes: see Rotation)
          IntKView rowmajor{rows, cols, bits, group};
          rowmajor.data = packed.data();
          rowmajor.scales = scales.data();
          rowmajor.zeros = zeros.data();
          std::vector<uint8_t> data(IntKX16DataBytes(bits, rows, cols) + 63);
          std::vector<float> x16_scales(IntKX16Params(rows, cols, group)),
              x16_zeros(x16_scales.size());
          RepackIntKX16(rowmajor, data.data(), x16_scales.data(), x16_zeros.data());
          packed.swap(data);
          scales.swap(x16_scales);
          zeros.swap(x16_zeros);
        }
      }
      const Rotation rot(packed, intk_a8);
      std::vector<uint8_t>().swap(packed);
      run.weight_bytes = rot.bytes + static_cast<int64_t>(4 * (scales.size() + zeros.size()));
      std::vector<int8_t> xq(max_m * cols);
      std::vector<float> xscales(max_m);
      switch (f) {
        case 0:
          run.name = "ternary2";
          run.call = [&](int i, const float* xp, int64_t m, float* yp) {
            TernaryGemm(TernaryView{rows, cols, rot.at(i), scales.data(), rows}, xp, m, yp, isa,
                        &pool);
          };
          break;
        case 1:
          run.name = "ternary2-x16";
          run.call = [&](int i, const float* xp, int64_t m, float* yp) {
            const auto* words = reinterpret_cast<const uint32_t*>(rot.at(i));
            TernaryX16Gemm(TernaryX16View{rows, cols, words, scales.data(), rows}, xp, m, yp, isa,
                           &pool);
          };
          break;
        case 2:
          run.name = "ternary2-a8";  // includes quantizing x, as the runtime does
          run.call = [&](int i, const float* xp, int64_t m, float* yp) {
            QuantizeActivationsInt8(xp, m, cols, xq.data(), xscales.data(), isa);
            TernaryGemmInt8(TernaryView{rows, cols, rot.at(i), scales.data(), rows}, xq.data(),
                            xscales.data(), m, yp, isa, &pool);
          };
          break;
        case 3:
          run.name = "ternary3";
          run.call = [&](int i, const float* xp, int64_t m, float* yp) {
            Ternary3Gemm(Ternary3View{rows, cols, rot.at(i), scales.data(), rows}, xp, m, yp, isa,
                         &pool);
          };
          break;
        case 5:
        case 7:
          run.name = absl::StrCat("int", bits, "/g", group, "-a8");  // includes quantizing x
          run.call = [&](int i, const float* xp, int64_t m, float* yp) {
            QuantizeActivationsInt8(xp, m, cols, xq.data(), xscales.data(), isa);
            IntKX16GemmInt8(
                IntKX16View{rows, cols, bits, group, rot.at(i), scales.data(), zeros.data()},
                xq.data(), xscales.data(), m, yp, isa, &pool);
          };
          break;
        default:
          run.name = absl::StrCat("int", bits, "/g", group);
          run.call = [&](int i, const float* xp, int64_t m, float* yp) {
            IntKGemm(IntKView{rows, cols, bits, group, rot.at(i), scales.data(), zeros.data()}, xp,
                     m, yp, isa, &pool);
          };
          break;
      }
      for (int k = 0; k < 2; ++k) {
        const int64_t m = k == 0 ? 1 : max_m;
        if (k == 1 && max_m == 1) break;
        // One untimed pass over every copy first: on this project's VM the first read of freshly
        // written memory ran up to 10x slow for ~100 ms, which dominated the median of a pass.
        // Then the kernel and a plain read of the same bytes (another copy, all threads, the
        // same slabs) alternate, so that both see the same machine: %bw = read time / kernel
        // time on the same bytes, a bound the kernel reaches only by reading at full speed.
        const int n_copies = static_cast<int>(rot.copies.size());
        const int64_t packed_bytes = rot.bytes;
        for (int i = 0; i < n_copies; ++i) run.call(i, x.data(), m, y.data());
        std::vector<double> kernel_us, read_us;
        for (int i = 0; i < iters; ++i) {
          const Clock::time_point t0 = Clock::now();
          run.call(2 * i, x.data(), m, y.data());
          const Clock::time_point t1 = Clock::now();
          ReadAll(pool, rot.at(2 * i + 1), packed_bytes);
          const Clock::time_point t2 = Clock::now();
          kernel_us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
          read_us.push_back(std::chrono::duration<double, std::micro>(t2 - t1).count());
        }
        std::sort(kernel_us.begin(), kernel_us.end());
        std::sort(read_us.begin(), read_us.end());
        const double us = kernel_us[kernel_us.size() / 2], read = read_us[read_us.size() / 2];
        const double gbs = static_cast<double>(run.weight_bytes) / (us * 1e3);
        std::fprintf(out, "%-12s %-5s %-14s %11.1f %11.1f %7.2fx %8.1f %5.1f%%\n", shape.c_str(),
                     m == 1 ? "gemv" : absl::StrCat("M=", m).c_str(), run.name.c_str(), us,
                     dense_us[k], dense_us[k] / us, gbs, 100.0 * read / us);
      }
    }
  }
  std::fprintf(
      out,
      "speedup = libtorch fp32 time / ours, same shape, same run; GB/s counts the packed "
      "weights with their scales and zero points; %%bw = time of a plain read of the same packed "
      "bytes (all threads, same slabs, timed alternately with the kernel) / the kernel's time; "
      "ternary2-x16 is ternary2 regrouped 16 rows at a time (the runtime's layout on "
      "AVX-512 CPUs); ternary2-a8 includes quantizing x to int8; intN/gG-a8 is intN/gG in the "
      "int4-x16/int2-x16 layout with int8 activations (x quantized per token, included).\n");
}

}  // namespace qat::kernels
