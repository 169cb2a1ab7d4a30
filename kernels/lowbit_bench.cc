// PrintLowbitBench (lowbit.h): GEMV time of every low-bit format against the fp32 DenseGemv on
// the same shapes in one run. Weights are rotated over enough copies (>= 256 MiB per format) that
// every call streams them from memory rather than from the last-level cache. The weights are
// random valid packed bytes: the kernels have no data-dependent branches, so their values do not
// change the timing.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "kernels/lowbit.h"
#include "kernels/ternary.h"
#include "kernels/thread_pool.h"

namespace qat::kernels {
namespace {

using Clock = std::chrono::steady_clock;
constexpr int64_t kRotateBytes = int64_t{256} << 20;  // beyond any last-level cache here

// Median of `iters` timed calls of fn(call index), after one untimed warm-up call.
double MedianMicros(int iters, const std::function<void(int)>& fn) {
  std::vector<double> times;
  fn(0);
  for (int i = 0; i < iters; ++i) {
    const Clock::time_point start = Clock::now();
    fn(i + 1);
    times.push_back(std::chrono::duration<double, std::micro>(Clock::now() - start).count());
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

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

// Copies of one packed tensor, enough of them to exceed kRotateBytes in all (at least 2).
struct Rotation {
  std::vector<std::vector<uint8_t>> copies;
  explicit Rotation(const std::vector<uint8_t>& first) {
    const int64_t n = std::max<int64_t>(2, kRotateBytes / std::max<int64_t>(1, first.size()) + 1);
    copies.assign(n, first);
  }
  const uint8_t* at(int i) const { return copies[i % copies.size()].data(); }
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

void PrintRow(const std::string& shape, const char* format, double us, double dense_us,
              int64_t weight_bytes, int64_t weights) {
  std::printf("%-12s %-22s %10.1f %8.2fx %9.1f %8.3f\n", shape.c_str(), format, us, dense_us / us,
              static_cast<double>(weight_bytes) / (us * 1e3),
              8.0 * static_cast<double>(weight_bytes) / static_cast<double>(weights));
}

}  // namespace

void PrintLowbitBench(ThreadPool& pool, int iters) {
  iters = std::max(iters, 1);
  const Isa isa = BestIsa();
  std::printf(
      "low-bit GEMV: %d threads, kernels %s%s; median of %d calls, weights rotated over "
      ">= %lld MiB per format\n",
      pool.size(), IsaName(isa),
      isa == Isa::kAvx512 && CpuHasAvx512Vnni() ? " (+VNNI for int8)" : "", iters,
      static_cast<long long>(kRotateBytes >> 20));
  std::printf("%-12s %-22s %10s %9s %9s %8s\n", "shape", "format", "us", "vs_fp32", "GB/s",
              "bits/w");
  const std::pair<int64_t, int64_t> shapes[] = {{4096, 4096}, {4096, 14336}, {14336, 4096}};
  FastRandom rng(7);
  for (const auto& [rows, cols] : shapes) {
    const std::string shape = std::to_string(rows) + "x" + std::to_string(cols);
    const int64_t weights = rows * cols;
    const std::vector<float> x = RandomFloats(cols, rng, -1.0f, 1.0f);
    std::vector<float> y(rows);

    // fp32 dense, the baseline.
    double dense_us = 0;
    {
      std::vector<float> w = RandomFloats(weights, rng, -0.05f, 0.05f);
      std::vector<uint8_t> bytes(weights * 4);
      std::memcpy(bytes.data(), w.data(), bytes.size());
      std::vector<float>().swap(w);
      const Rotation rot(bytes);
      dense_us = MedianMicros(iters, [&](int i) {
        DenseGemv(reinterpret_cast<const float*>(rot.at(i)), rows, cols, x.data(), y.data(), isa,
                  &pool);
      });
      PrintRow(shape, "fp32 DenseGemv", dense_us, dense_us, weights * 4, weights);
    }

    // ternary2 with fp32 activations (the existing kernel) and with int8 activations.
    {
      // Every byte made of codes 0..2 (code 3 -> 1).
      const std::vector<uint8_t> packed =
          RandomBytes(rows * TernaryRowBytes(cols), rng, [](uint64_t v) {
            uint8_t b = static_cast<uint8_t>(v);
            const uint8_t code3 = b & (b >> 1) & 0x55;  // low bit of every code 3
            return static_cast<uint8_t>(b & ~(code3 << 1));
          });
      const Rotation rot(packed);
      const float scale = 0.05f;
      const int64_t bytes = static_cast<int64_t>(packed.size()) + 4;
      const double t2 = MedianMicros(iters, [&](int i) {
        TernaryGemv(TernaryView{rows, cols, rot.at(i), &scale, 1}, x.data(), y.data(), isa, &pool);
      });
      PrintRow(shape, "ternary2 fp32-act", t2, dense_us, bytes, weights);
      std::vector<int8_t> xq(cols);
      float xscale = 0;
      const double t8 = MedianMicros(iters, [&](int i) {
        QuantizeActivationsInt8(x.data(), 1, cols, xq.data(), &xscale, isa);
        TernaryGemvInt8(TernaryView{rows, cols, rot.at(i), &scale, 1}, xq.data(), xscale, y.data(),
                        isa, &pool);
      });
      PrintRow(shape, "ternary2 int8-act (+q)", t8, dense_us, bytes, weights);
    }

    // ternary3, per-row scales.
    {
      const std::vector<uint8_t> packed =
          RandomBytes(rows * Ternary3RowBytes(cols), rng,
                      [](uint64_t v) { return static_cast<uint8_t>(v % 243); });
      const Rotation rot(packed);
      const std::vector<float> scales = RandomFloats(rows, rng, 0.01f, 0.1f);
      const double t = MedianMicros(iters, [&](int i) {
        Ternary3Gemv(Ternary3View{rows, cols, rot.at(i), scales.data(), rows}, x.data(), y.data(),
                     isa, &pool);
      });
      PrintRow(shape, "ternary3", t, dense_us,
               static_cast<int64_t>(packed.size() + 4 * scales.size()), weights);
    }

    // int2 / int4 at groups 32 and 128. The scales and zero points rotate with the codes: they
    // are one more stream the kernel reads.
    for (int bits : {2, 4}) {
      for (int64_t group : {32, 128}) {
        const int64_t data_bytes = rows * IntKRowBytes(bits, cols);
        const int64_t params = rows * IntKGroupsPerRow(group, cols);
        std::vector<uint8_t> blob = RandomBytes(data_bytes + 8 * params, rng,
                                                [](uint64_t v) { return static_cast<uint8_t>(v); });
        const std::vector<float> scales = RandomFloats(params, rng, 0.001f, 0.01f);
        const std::vector<float> zeros = RandomFloats(params, rng, 0.0f, (1 << bits) - 1.0f);
        std::memcpy(blob.data() + data_bytes, scales.data(), 4 * params);
        std::memcpy(blob.data() + data_bytes + 4 * params, zeros.data(), 4 * params);
        const Rotation rot(blob);
        const double t = MedianMicros(iters, [&](int i) {
          const uint8_t* base = rot.at(i);
          IntKView w;
          w.rows = rows;
          w.cols = cols;
          w.bits = bits;
          w.group = group;
          w.data = base;
          w.scales = reinterpret_cast<const float*>(base + data_bytes);
          w.zeros = reinterpret_cast<const float*>(base + data_bytes + 4 * params);
          IntKGemv(w, x.data(), y.data(), isa, &pool);
        });
        const std::string name = "int" + std::to_string(bits) + " g" + std::to_string(group);
        PrintRow(shape, name.c_str(), t, dense_us, data_bytes + 8 * params, weights);
      }
    }
  }
  std::printf(
      "vs_fp32 = DenseGemv time / format time in the same run; GB/s and bits/w count the "
      "weight bytes including scales and zero points; int8-act includes quantizing x.\n");
}

}  // namespace qat::kernels
