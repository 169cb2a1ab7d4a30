// Tests of the CUDA kernels (kernels/cuda/packed_cuda.h, ops_cuda.h) against the CPU scalar
// reference on random shapes, including row lengths that are not multiples of any block or vector
// width and activation row counts that are not powers of two or exceed one pass (16). Built only
// when CUDA is on; every test skips with a message when no GPU is visible.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/cuda/ops_cuda.h"
#include "kernels/cuda/packed_cuda.h"
#include "kernels/lowbit.h"
#include "kernels/ternary.h"

namespace qat::kernels::cuda {
namespace {

class CudaTest : public testing::Test {
 protected:
  void SetUp() override {
    int count = 0;
    const cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0) {
      cudaGetLastError();
      GTEST_SKIP() << "no CUDA GPU visible (cudaGetDeviceCount: "
                   << (e == cudaSuccess ? "0 devices" : cudaGetErrorName(e))
                   << "): CUDA kernels are compiled but not run here";
    }
  }
};

// A device copy of a host vector; freed at scope exit.
template <typename T>
class Device {
 public:
  explicit Device(const std::vector<T>& host) : n_(host.size()) {
    EXPECT_EQ(cudaMalloc(&ptr_, std::max<size_t>(1, n_) * sizeof(T)), cudaSuccess);
    if (n_ > 0) {
      EXPECT_EQ(cudaMemcpy(ptr_, host.data(), n_ * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
    }
  }
  explicit Device(size_t n) : Device(std::vector<T>(n)) {}
  ~Device() { cudaFree(ptr_); }
  Device(const Device&) = delete;
  Device& operator=(const Device&) = delete;
  T* get() const { return static_cast<T*>(ptr_); }
  std::vector<T> Read() const {
    std::vector<T> host(n_);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    if (n_ > 0) {
      EXPECT_EQ(cudaMemcpy(host.data(), ptr_, n_ * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    }
    return host;
  }

 private:
  void* ptr_ = nullptr;
  size_t n_;
};

// bf16 of x (round to nearest even), as raw bits, and back.
uint16_t ToBf16(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, 4);
  bits += 0x7FFF + ((bits >> 16) & 1);
  return static_cast<uint16_t>(bits >> 16);
}
float FromBf16(uint16_t b) {
  const uint32_t bits = static_cast<uint32_t>(b) << 16;
  float x;
  std::memcpy(&x, &bits, 4);
  return x;
}

// Activations in [-1, 1]; with bf16, rounded so that both sides multiply the same values.
struct Activations {
  std::vector<float> values;   // what the reference reads
  std::vector<uint16_t> bf16;  // what the GPU reads when bf16
};
Activations RandomActivations(int64_t n, bool bf16, std::mt19937_64& rng) {
  Activations a;
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (int64_t i = 0; i < n; ++i) {
    float v = u(rng);
    if (bf16) {
      a.bf16.push_back(ToBf16(v));
      v = FromBf16(a.bf16.back());
    }
    a.values.push_back(v);
  }
  return a;
}

// |got - want| <= 1e-5 * sum_c |w x| + 1e-6 per output, given the bound per output.
void ExpectClose(const std::vector<float>& got, const std::vector<float>& want,
                 const std::vector<double>& magnitude, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  int reported = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double tol = 1e-5 * magnitude[i] + 1e-6;
    if (!(std::abs(double{got[i]} - want[i]) <= tol) && reported++ < 5) {
      ADD_FAILURE() << what << ": output " << i << " is " << got[i] << ", want " << want[i]
                    << " (tolerance " << tol << ")";
    }
  }
}

struct Shape {
  int64_t rows, cols, m;
};
// Row lengths around the ternary block (128), the int units (32, 64), groups and float4 loads.
const Shape kShapes[] = {{1, 1, 1},     {3, 100, 1},  {37, 128, 2},   {5, 129, 3},
                         {64, 300, 5},  {130, 64, 8}, {17, 1000, 13}, {9, 4096, 16},
                         {33, 257, 17}, {7, 96, 33},  {300, 512, 1},  {2, 2050, 4}};

TEST_F(CudaTest, TernaryGemmMatchesScalarReference) {
  std::mt19937_64 rng(1);
  for (const Shape& s : kShapes) {
    for (bool per_row : {false, true}) {
      for (bool bf16 : {false, true}) {
        const std::string what = testing::PrintToString(std::vector<int64_t>{s.rows, s.cols, s.m}) +
                                 (per_row ? " per-row" : " per-tensor") +
                                 (bf16 ? " bf16" : " fp32");
        std::vector<int8_t> trits(s.rows * s.cols);
        for (int8_t& t : trits) t = static_cast<int8_t>(static_cast<int>(rng() % 3) - 1);
        std::vector<uint8_t> packed(s.rows * TernaryRowBytes(s.cols));
        PackTernary(trits.data(), s.rows, s.cols, packed.data());
        std::vector<float> scales(per_row ? s.rows : 1);
        for (float& v : scales) v = 0.5f + static_cast<float>(rng() % 1000) / 1000.0f;
        const Activations x = RandomActivations(s.m * s.cols, bf16, rng);
        std::vector<float> want(s.m * s.rows);
        const TernaryView host_view{s.rows, s.cols, packed.data(), scales.data(),
                                    static_cast<int64_t>(scales.size())};
        TernaryGemm(host_view, x.values.data(), s.m, want.data(), Isa::kScalar, nullptr);
        std::vector<double> magnitude(want.size());
        for (int64_t i = 0; i < s.m; ++i) {
          for (int64_t r = 0; r < s.rows; ++r) {
            double sum = 0;
            for (int64_t c = 0; c < s.cols; ++c) {
              sum += std::abs(trits[r * s.cols + c] * x.values[i * s.cols + c]);
            }
            magnitude[i * s.rows + r] = sum * scales[per_row ? r : 0];
          }
        }

        Device<uint8_t> d_packed(packed);
        Device<float> d_scales(scales), d_y(want.size());
        Device<float> d_x(x.values);
        Device<uint16_t> d_xb(bf16 ? x.bf16 : std::vector<uint16_t>(1));
        const TernaryView view{s.rows, s.cols, d_packed.get(), d_scales.get(),
                               static_cast<int64_t>(scales.size())};
        const void* xp = bf16 ? static_cast<const void*>(d_xb.get()) : d_x.get();
        ASSERT_EQ(TernaryGemm(view, xp, s.m, bf16 ? Activation::kBFloat16 : Activation::kFloat32,
                              nullptr, d_y.get(), nullptr),
                  0)
            << what;
        ExpectClose(d_y.Read(), want, magnitude, what);
      }
    }
  }
}

// With int8 codes as float activations and the activation scales, the GPU gives the bits of the
// CPU's TernaryGemmInt8 (the sums are exact integers in fp32).
TEST_F(CudaTest, TernaryWithActivationScalesEqualsInt8KernelBitForBit) {
  std::mt19937_64 rng(2);
  for (const Shape& s : kShapes) {
    std::vector<int8_t> trits(s.rows * s.cols);
    for (int8_t& t : trits) t = static_cast<int8_t>(static_cast<int>(rng() % 3) - 1);
    std::vector<uint8_t> packed(s.rows * TernaryRowBytes(s.cols));
    PackTernary(trits.data(), s.rows, s.cols, packed.data());
    std::vector<float> scales(s.rows);
    for (float& v : scales) v = 0.01f + static_cast<float>(rng() % 1000) / 3000.0f;
    const Activations x = RandomActivations(s.m * s.cols, false, rng);
    std::vector<int8_t> xq(s.m * s.cols);
    std::vector<float> xscales(s.m);
    QuantizeActivationsInt8(x.values.data(), s.m, s.cols, xq.data(), xscales.data(), Isa::kScalar);
    std::vector<float> want(s.m * s.rows);
    const TernaryView host_view{s.rows, s.cols, packed.data(), scales.data(), s.rows};
    TernaryGemmInt8(host_view, xq.data(), xscales.data(), s.m, want.data(), Isa::kScalar, nullptr);

    // The GPU quantizes too: codes and scales must be the CPU's bits.
    Device<float> d_x(x.values), d_q(x.values.size()), d_xscales(s.m);
    ASSERT_EQ(QuantizeInt8(d_x.get(), s.m, s.cols, d_q.get(), d_xscales.get(), nullptr), 0);
    const std::vector<float> q = d_q.Read();
    const std::vector<float> got_scales = d_xscales.Read();
    for (int64_t i = 0; i < s.m * s.cols; ++i) ASSERT_EQ(q[i], static_cast<float>(xq[i])) << i;
    for (int64_t i = 0; i < s.m; ++i) {
      ASSERT_EQ(std::memcmp(&got_scales[i], &xscales[i], 4), 0) << i;
    }
    Device<uint8_t> d_packed(packed);
    Device<float> d_scales(scales), d_y(want.size());
    const TernaryView view{s.rows, s.cols, d_packed.get(), d_scales.get(), s.rows};
    ASSERT_EQ(TernaryGemm(view, d_q.get(), s.m, Activation::kFloat32, d_xscales.get(), d_y.get(),
                          nullptr),
              0);
    const std::vector<float> got = d_y.Read();
    for (size_t i = 0; i < got.size(); ++i) {
      ASSERT_EQ(std::memcmp(&got[i], &want[i], 4), 0)
          << "output " << i << ": " << got[i] << " vs " << want[i];
    }
  }
}

TEST_F(CudaTest, IntKGemmMatchesScalarReference) {
  std::mt19937_64 rng(3);
  for (int bits : {2, 4}) {
    for (int64_t group : {32, 64, 128}) {
      for (const Shape& s : kShapes) {
        for (bool bf16 : {false, true}) {
          const std::string what =
              "int" + std::to_string(bits) + "/g" + std::to_string(group) + " " +
              testing::PrintToString(std::vector<int64_t>{s.rows, s.cols, s.m}) +
              (bf16 ? " bf16" : " fp32");
          const int64_t groups = IntKGroupsPerRow(group, s.cols);
          std::vector<uint8_t> q(s.rows * s.cols);
          for (uint8_t& v : q) v = static_cast<uint8_t>(rng() % (1u << bits));
          std::vector<uint8_t> packed(s.rows * IntKRowBytes(bits, s.cols));
          PackIntK(q.data(), s.rows, s.cols, bits, packed.data());
          std::vector<float> scales(s.rows * groups), zeros(s.rows * groups);
          for (int64_t g = 0; g < s.rows * groups; ++g) {
            scales[g] = 0.01f + static_cast<float>(rng() % 1000) / 10000.0f;
            zeros[g] = static_cast<float>(rng() % 1000) / 1000.0f * ((1 << bits) - 1);
          }
          const Activations x = RandomActivations(s.m * s.cols, bf16, rng);
          const IntKView host_view{s.rows,        s.cols,        bits,        group,
                                   packed.data(), scales.data(), zeros.data()};
          std::vector<float> want(s.m * s.rows);
          IntKGemm(host_view, x.values.data(), s.m, want.data(), Isa::kScalar, nullptr);
          std::vector<double> magnitude(want.size());
          for (int64_t i = 0; i < s.m; ++i) {
            for (int64_t r = 0; r < s.rows; ++r) {
              double sum = 0;
              for (int64_t c = 0; c < s.cols; ++c) {
                const int64_t g = r * groups + c / group;
                // |scale| (|q| + |zero|) |x|: the two partial sums the kernel subtracts.
                sum += scales[g] * (q[r * s.cols + c] + std::abs(zeros[g])) *
                       std::abs(x.values[i * s.cols + c]);
              }
              magnitude[i * s.rows + r] = sum;
            }
          }
          Device<uint8_t> d_packed(packed);
          Device<float> d_scales(scales), d_zeros(zeros), d_y(want.size()), d_x(x.values);
          Device<uint16_t> d_xb(bf16 ? x.bf16 : std::vector<uint16_t>(1));
          const IntKView view{s.rows,         s.cols,         bits,         group,
                              d_packed.get(), d_scales.get(), d_zeros.get()};
          const void* xp = bf16 ? static_cast<const void*>(d_xb.get()) : d_x.get();
          ASSERT_EQ(IntKGemm(view, xp, s.m, bf16 ? Activation::kBFloat16 : Activation::kFloat32,
                             d_y.get(), nullptr),
                    0)
              << what;
          ExpectClose(d_y.Read(), want, magnitude, what);
        }
      }
    }
  }
}

TEST_F(CudaTest, BadArgumentsAreInvalidValueAndLaunchNothing) {
  constexpr int kInvalidValue = 1;  // cudaErrorInvalidValue
  std::vector<uint8_t> packed(4 * TernaryRowBytes(200) + 16, 0x55);
  Device<uint8_t> d_packed(packed);
  Device<float> d_scales(std::vector<float>(4, 1.0f)), d_x(200 * 2 + 4), d_y(8);
  const TernaryView good{4, 200, d_packed.get(), d_scales.get(), 4};
  EXPECT_EQ(TernaryGemm(good, d_x.get(), 2, Activation::kFloat32, nullptr, d_y.get(), nullptr), 0);
  TernaryView bad = good;
  bad.n_scales = 3;
  EXPECT_EQ(TernaryGemm(bad, d_x.get(), 1, Activation::kFloat32, nullptr, d_y.get(), nullptr),
            kInvalidValue);
  bad = good;
  bad.data = d_packed.get() + 1;  // misaligned weights
  EXPECT_EQ(TernaryGemv(bad, d_x.get(), Activation::kFloat32, d_y.get(), nullptr), kInvalidValue);
  EXPECT_EQ(TernaryGemm(good, d_x.get(), -1, Activation::kFloat32, nullptr, d_y.get(), nullptr),
            kInvalidValue);
  EXPECT_EQ(TernaryGemm(good, nullptr, 1, Activation::kFloat32, nullptr, d_y.get(), nullptr),
            kInvalidValue);
  const IntKView int_bad_group{4, 200, 4, 48, d_packed.get(), d_scales.get(), d_scales.get()};
  EXPECT_EQ(IntKGemv(int_bad_group, d_x.get(), Activation::kFloat32, d_y.get(), nullptr),
            kInvalidValue);
  const IntKView int_no_zeros{4, 200, 2, 64, d_packed.get(), d_scales.get(), nullptr};
  EXPECT_EQ(IntKGemv(int_no_zeros, d_x.get(), Activation::kFloat32, d_y.get(), nullptr),
            kInvalidValue);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_STREQ(ErrorName(kInvalidValue), "cudaErrorInvalidValue");
}

}  // namespace
}  // namespace qat::kernels::cuda
