// Tests of the int4-x16 / int2-x16 layouts and their products with int8 activations
// (kernels/intk_int8.h).
//
// Ground truth: a naive implementation of the documented arithmetic written here from the
// row-major codes (exact integer group sums, std::fma in the documented order), which every
// variant must equal bit for bit; the scalar kernel against the exact value in double within the
// rigorous bound IntKX16ErrorBound; and the whole path against the fp32 path it replaces
// (QuantizeActivationsInt8, x' = xscale * xq, IntKGemm) within IntKX16Tolerance.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/intk_int8.h"
#include "kernels/lowbit.h"
#include "kernels/ternary.h"
#include "kernels/thread_pool.h"
#include "tests/kernels_test_util.h"

namespace qat::kernels {
namespace {

using testing_util::IntK;
using testing_util::kAllIsas;
using testing_util::RandomFloats;
using testing_util::RandomInt8;
using testing_util::RandomIntK;

const int kBits[] = {2, 4};
const int64_t kGroups[] = {32, 64, 128};

std::string Name(int64_t rows, int64_t cols, int bits, int64_t group, int64_t m = 1) {
  return std::to_string(rows) + "x" + std::to_string(cols) + " int" + std::to_string(bits) + "/g" +
         std::to_string(group) + " m=" + std::to_string(m);
}

// RandomIntK (kernels_test_util.h) with a nonzero padding code, invalid in the format, which the
// repack must ignore: the top bits of a row's last byte hold its last unit's last weight
// (int4: 32u + 31, int2: 64u + 63).
IntK RandomIntKWithBadPadding(int64_t rows, int64_t cols, int bits, int64_t group,
                              std::mt19937& rng) {
  IntK w = RandomIntK(rows, cols, bits, group, rng);
  if (cols % IntKUnitWeights(bits) != 0) {
    const int64_t row_bytes = IntKRowBytes(bits, cols);
    for (int64_t r = 0; r < rows; ++r) w.packed[r * row_bytes + row_bytes - 1] |= 0xC0;
  }
  return w;
}

std::vector<float> RandomScales(int64_t m, std::mt19937& rng) {
  std::vector<float> s(m);
  for (float& v : s) v = std::uniform_real_distribution<float>(1e-3f, 1.0f)(rng);
  return s;
}

// The documented arithmetic, written from the row-major codes.
std::vector<float> Naive(const IntK& w, const std::vector<int8_t>& xq,
                         const std::vector<float>& xscales, int64_t m) {
  std::vector<float> y(m * w.rows);
  const int64_t groups = w.groups();
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t r = 0; r < w.rows; ++r) {
      float acc = 0.0f;
      for (int64_t g = 0; g < groups; ++g) {
        int32_t d = 0, s = 0;
        for (int64_t c = g * w.group; c < std::min(w.cols, (g + 1) * w.group); ++c) {
          d += w.q[r * w.cols + c] * xq[i * w.cols + c];
          s += xq[i * w.cols + c];
        }
        const float u =
            std::fma(-w.zeros[r * groups + g], static_cast<float>(s), static_cast<float>(d));
        acc = std::fma(w.scales[r * groups + g], u, acc);
      }
      y[i * w.rows + r] = xscales[i] * acc;
    }
  }
  return y;
}

// Equal bits, or both NaN.
void ExpectSameBits(const std::vector<float>& got, const std::vector<float>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t k = 0; k < got.size(); ++k) {
    if (std::isnan(want[k])) {
      ASSERT_TRUE(std::isnan(got[k])) << "output " << k << ": " << got[k];
      continue;
    }
    uint32_t a, b;
    std::memcpy(&a, &got[k], 4);
    std::memcpy(&b, &want[k], 4);
    ASSERT_EQ(a, b) << "output " << k << ": " << got[k] << " vs " << want[k];
  }
}

// ================================ layout ================================

TEST(IntKX16Layout, Sizes) {
  EXPECT_EQ(IntKX16Tiles(1), 1);
  EXPECT_EQ(IntKX16Tiles(16), 1);
  EXPECT_EQ(IntKX16Tiles(17), 2);
  EXPECT_EQ(IntKX16Chunks(4, 8), 1);
  EXPECT_EQ(IntKX16Chunks(4, 9), 2);
  EXPECT_EQ(IntKX16Chunks(2, 16), 1);
  EXPECT_EQ(IntKX16Chunks(2, 17), 2);
  // Same bytes per row as the row-major format when nothing is padded.
  EXPECT_EQ(IntKX16DataBytes(4, 4096, 4096), 4096 * IntKRowBytes(4, 4096));
  EXPECT_EQ(IntKX16DataBytes(2, 4096, 14336), 4096 * IntKRowBytes(2, 14336));
  EXPECT_EQ(IntKX16DataBytes(4, 17, 9), 2 * 2 * 64);
  EXPECT_EQ(IntKX16Params(17, 129, 64), 32 * 3);
}

TEST(IntKX16Layout, RepackFollowsDocumentedLayoutAndRoundTrips) {
  std::mt19937 rng(1);
  for (int bits : kBits) {
    for (int64_t group : kGroups) {
      for (const auto& [rows, cols] : std::vector<std::pair<int64_t, int64_t>>{
               {1, 1}, {15, 7}, {16, 8}, {17, 33}, {33, 200}, {5, 129}}) {
        SCOPED_TRACE(Name(rows, cols, bits, group));
        const IntK w = RandomIntKWithBadPadding(rows, cols, bits, group, rng);
        const IntKX16Matrix x16 = RepackIntKX16(w.view());
        ASSERT_EQ(x16.rows, rows);
        EXPECT_EQ(reinterpret_cast<uintptr_t>(x16.data.data()) % 64, 0u);
        const IntKX16Matrix copy = x16;  // copies stay aligned
        EXPECT_EQ(reinterpret_cast<uintptr_t>(copy.data.data()) % 64, 0u);
        const IntKX16View v = x16.view();
        const int64_t chunks = IntKX16Chunks(bits, cols), cc = IntKX16ChunkCols(bits);
        const int64_t groups = w.groups();
        // Every code where intk_int8.h says, padding rows and columns 0.
        for (int64_t r = 0; r < IntKX16Tiles(rows) * 16; ++r) {
          for (int64_t c = 0; c < chunks * cc; ++c) {
            const int64_t k = c / cc, j = c % 4, field = (c % cc) / 4;
            const uint8_t byte = v.data[(r / 16 * chunks + k) * 64 + 4 * (r % 16) + j];
            const int code = (byte >> (field * bits)) & ((1 << bits) - 1);
            const int want = r < rows && c < cols ? w.q[r * cols + c] : 0;
            ASSERT_EQ(code, want) << "r " << r << " c " << c;
          }
          for (int64_t g = 0; g < groups; ++g) {
            const int64_t p = (r / 16 * groups + g) * 16 + r % 16;
            EXPECT_EQ(v.scales[p], r < rows ? w.scales[r * groups + g] : 0.0f);
            EXPECT_EQ(v.zeros[p], r < rows ? w.zeros[r * groups + g] : 0.0f);
          }
        }
        // The raw-pointer repack writes the same bytes.
        std::vector<uint8_t> data(IntKX16DataBytes(bits, rows, cols), 0x5A);
        std::vector<float> s(IntKX16Params(rows, cols, group), 7), z(s.size(), 7);
        RepackIntKX16(w.view(), data.data(), s.data(), z.data());
        EXPECT_EQ(0, std::memcmp(data.data(), v.data, data.size()));
        EXPECT_EQ(s, x16.scales);
        EXPECT_EQ(z, x16.zeros);
        // Unpack gives the row-major format back (with valid, zero padding).
        std::vector<uint8_t> packed(rows * IntKRowBytes(bits, cols), 0xEE);
        std::vector<float> us(rows * groups), uz(rows * groups);
        UnpackIntKX16(v, packed.data(), us.data(), uz.data());
        EXPECT_EQ(ValidateIntK(packed.data(), rows, cols, bits), -1);
        std::vector<uint8_t> q(rows * cols);
        UnpackIntK(packed.data(), rows, cols, bits, q.data());
        EXPECT_EQ(q, w.q);
        EXPECT_EQ(us, w.scales);
        EXPECT_EQ(uz, w.zeros);
      }
    }
  }
}

TEST(IntKX16Layout, UnsupportedLayoutsRepackToNothing) {
  const uint8_t data[16] = {};
  const float one = 1.0f;
  EXPECT_EQ(RepackIntKX16(IntKView{1, 4, 3, 32, data, &one, &one}).rows, 0);
  EXPECT_EQ(RepackIntKX16(IntKView{1, 4, 4, 16, data, &one, &one}).rows, 0);
  EXPECT_EQ(RepackIntKX16(IntKView{1, 4, 4, 32, data, nullptr, &one}).rows, 0);
}

// ================================ products ================================

class IntKX16Test : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    if (!IsaSupported(GetParam())) GTEST_SKIP() << "this CPU lacks " << IsaName(GetParam());
  }
};

// Rows around the tile (16) and the AVX-512 pass of 4 tiles, columns around the chunk (8, 16)
// and the groups (the last group shorter), one row up to 14336 columns.
const std::vector<std::pair<int64_t, int64_t>>& Shapes() {
  static const auto* shapes = new std::vector<std::pair<int64_t, int64_t>>{
      {1, 1},    {3, 7},    {15, 8},   {16, 16},   {17, 33},    {31, 100}, {33, 128},
      {47, 129}, {64, 200}, {65, 385}, {80, 1000}, {100, 4096}, {2, 14336}};
  return *shapes;
}

TEST_P(IntKX16Test, EqualsDocumentedArithmeticBitForBit) {
  std::mt19937 rng(2);
  for (int bits : kBits) {
    for (int64_t group : kGroups) {
      for (const auto& [rows, cols] : Shapes()) {
        for (int64_t m : {1, 2, 3, 5, 8, 17}) {
          if (rows * cols * m > 2000000) continue;  // keep the naive product quick
          SCOPED_TRACE(Name(rows, cols, bits, group, m));
          const IntK w = RandomIntKWithBadPadding(rows, cols, bits, group, rng);
          const IntKX16Matrix x16 = RepackIntKX16(w.view());
          const std::vector<int8_t> xq = RandomInt8(m * cols, rng);
          const std::vector<float> xscales = RandomScales(m, rng);
          const std::vector<float> want = Naive(w, xq, xscales, m);
          std::vector<float> got(m * rows, -1.0f);
          IntKX16GemmInt8(x16.view(), xq.data(), xscales.data(), m, got.data(), GetParam(),
                          nullptr);
          ExpectSameBits(got, want);
          if (m == 1) {
            std::vector<float> gv(rows, -1.0f);
            IntKX16GemvInt8(x16.view(), xq.data(), xscales[0], gv.data(), GetParam(), nullptr);
            ExpectSameBits(gv, want);
          }
        }
      }
    }
  }
}

TEST_P(IntKX16Test, ZeroAndNaNActivationRows) {
  // Rows of 17 activations: some all zero (scale 0), some with NaN or infinity (scale NaN), as
  // QuantizeActivationsInt8 makes them; the others are unaffected.
  std::mt19937 rng(3);
  const int64_t rows = 37, cols = 300, m = 17;
  for (int bits : kBits) {
    SCOPED_TRACE(bits);
    const IntK w = RandomIntKWithBadPadding(rows, cols, bits, 64, rng);
    const IntKX16Matrix x16 = RepackIntKX16(w.view());
    std::vector<float> x = RandomFloats(m * cols, rng);
    for (int64_t c = 0; c < cols; ++c) {
      x[1 * cols + c] = 0.0f;
      x[8 * cols + c] = -0.0f;
    }
    x[4 * cols + 5] = std::numeric_limits<float>::quiet_NaN();
    x[16 * cols + 299] = std::numeric_limits<float>::infinity();
    std::vector<int8_t> xq(m * cols);
    std::vector<float> xscales(m);
    QuantizeActivationsInt8(x.data(), m, cols, xq.data(), xscales.data(), Isa::kScalar);
    ASSERT_EQ(xscales[1], 0.0f);
    ASSERT_TRUE(std::isnan(xscales[4]) && std::isnan(xscales[16]));
    const std::vector<float> want = Naive(w, xq, xscales, m);
    std::vector<float> got(m * rows, -1.0f);
    IntKX16GemmInt8(x16.view(), xq.data(), xscales.data(), m, got.data(), GetParam(), nullptr);
    ExpectSameBits(got, want);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t i : {1, 8}) {
        uint32_t bits_of;
        std::memcpy(&bits_of, &got[i * rows + r], 4);
        EXPECT_EQ(bits_of, 0u) << "zero row " << i << " gives +0";
      }
      EXPECT_TRUE(std::isnan(got[4 * rows + r]));
      EXPECT_TRUE(std::isnan(got[16 * rows + r]));
      EXPECT_FALSE(std::isnan(got[0 * rows + r]));
    }
  }
}

TEST_P(IntKX16Test, ExtremeCodesAndActivations) {
  // The largest sums: every code at its maximum against -128 or 127 everywhere (AVX2's int16
  // partial sums reach their bound), and code 0 (d = 0, only the zero point counts).
  const int64_t rows = 20, cols = 1000;
  for (int bits : kBits) {
    for (int64_t group : kGroups) {
      for (int code : {0, (1 << bits) - 1}) {
        for (int xv : {-128, 127}) {
          SCOPED_TRACE(Name(rows, cols, bits, group) + " code " + std::to_string(code) + " x " +
                       std::to_string(xv));
          IntK w;
          w.rows = rows;
          w.cols = cols;
          w.bits = bits;
          w.group = group;
          w.q.assign(rows * cols, static_cast<uint8_t>(code));
          w.packed.assign(rows * IntKRowBytes(bits, cols), 0);
          PackIntK(w.q.data(), rows, cols, bits, w.packed.data());
          w.scales.assign(rows * w.groups(), 0.5f);
          w.zeros.assign(rows * w.groups(), 1.25f);
          const IntKX16Matrix x16 = RepackIntKX16(w.view());
          const int64_t m = 3;
          const std::vector<int8_t> xq(m * cols, static_cast<int8_t>(xv));
          const std::vector<float> xscales = {1.0f, 0.5f, 0.25f};
          const std::vector<float> want = Naive(w, xq, xscales, m);
          std::vector<float> got(m * rows);
          IntKX16GemmInt8(x16.view(), xq.data(), xscales.data(), m, got.data(), GetParam(),
                          nullptr);
          ExpectSameBits(got, want);
          // Small integers throughout: the result is exact.
          const double exact = 0.5 * (code - 1.25) * xv * cols;
          EXPECT_EQ(got[0], static_cast<float>(exact));
        }
      }
    }
  }
}

TEST_P(IntKX16Test, CloseToFp32PathWithinTolerance) {
  // The path it replaces: QuantizeActivationsInt8, x' = xscale * xq in float, IntKGemm on the
  // row-major matrix. Weights from QuantizeIntK of normal values (fractional zero points), and a
  // one-signed case (positive weights and activations: no cancellation, the fp32 sums' worst
  // case in practice).
  std::mt19937 rng(4);
  double worst = 0;
  for (bool positive : {false, true}) {
    for (int bits : kBits) {
      for (int64_t group : kGroups) {
        for (const auto& [rows, cols] :
             std::vector<std::pair<int64_t, int64_t>>{{33, 4096}, {17, 14336}, {40, 1000}}) {
          const int64_t m = 3;
          SCOPED_TRACE(Name(rows, cols, bits, group, m) + (positive ? " positive" : ""));
          std::vector<float> wf = RandomFloats(rows * cols, rng);
          std::vector<float> x = RandomFloats(m * cols, rng);
          if (positive) {
            for (float& v : wf) v = std::fabs(v);
            for (float& v : x) v = std::fabs(v);
          }
          IntK w;
          w.rows = rows;
          w.cols = cols;
          w.bits = bits;
          w.group = group;
          w.packed.resize(rows * IntKRowBytes(bits, cols));
          w.scales.resize(rows * w.groups());
          w.zeros.resize(rows * w.groups());
          QuantizeIntK(wf.data(), rows, cols, bits, group, w.packed.data(), w.scales.data(),
                       w.zeros.data());
          w.q.resize(rows * cols);
          UnpackIntK(w.packed.data(), rows, cols, bits, w.q.data());
          std::vector<int8_t> xq(m * cols);
          std::vector<float> xscales(m);
          QuantizeActivationsInt8(x.data(), m, cols, xq.data(), xscales.data(), GetParam());
          std::vector<float> xd(m * cols);
          for (int64_t k = 0; k < m * cols; ++k) xd[k] = xscales[k / cols] * xq[k];
          const IntKX16Matrix x16 = RepackIntKX16(w.view());
          std::vector<float> y8(m * rows), y32(m * rows);
          IntKX16GemmInt8(x16.view(), xq.data(), xscales.data(), m, y8.data(), GetParam(), nullptr);
          for (Isa fp32_isa : {Isa::kScalar, BestIsa()}) {
            IntKGemm(w.view(), xd.data(), m, y32.data(), fp32_isa, nullptr);
            for (int64_t i = 0; i < m; ++i) {
              for (int64_t r = 0; r < rows; ++r) {
                double t = 0;
                for (int64_t c = 0; c < cols; ++c) {
                  t += std::fabs(double{w.value(r, c)} * xd[i * cols + c]);
                }
                const double diff = std::fabs(double{y8[i * rows + r]} - y32[i * rows + r]);
                worst = std::max(worst, diff / t / IntKX16Tolerance(cols));
                ASSERT_LE(diff, IntKX16Tolerance(cols) * t) << "row " << r << " i " << i;
              }
            }
          }
        }
      }
    }
  }
  std::printf("largest |y_int8 - y_fp32| / (sum|w x'| * tolerance): %.3g\n", worst);
}

TEST_P(IntKX16Test, WithinRigorousBoundOfExactValue) {
  // The documented float order against the exact formula (in double; the double evaluation's
  // own error, ~G * 2^-53 relative, is covered by the small slack).
  std::mt19937 rng(5);
  double worst = 0;
  for (int bits : kBits) {
    for (int64_t group : kGroups) {
      for (const auto& [rows, cols] :
           std::vector<std::pair<int64_t, int64_t>>{{9, 4096}, {5, 14336}, {20, 1000}, {7, 129}}) {
        const int64_t m = 2;
        SCOPED_TRACE(Name(rows, cols, bits, group, m));
        const IntK w = RandomIntKWithBadPadding(rows, cols, bits, group, rng);
        const IntKX16Matrix x16 = RepackIntKX16(w.view());
        const std::vector<int8_t> xq = RandomInt8(m * cols, rng);
        const std::vector<float> xscales = RandomScales(m, rng);
        std::vector<float> y(m * rows);
        IntKX16GemmInt8(x16.view(), xq.data(), xscales.data(), m, y.data(), GetParam(), nullptr);
        const int64_t groups = w.groups();
        for (int64_t i = 0; i < m; ++i) {
          for (int64_t r = 0; r < rows; ++r) {
            double exact = 0, mag = 0;
            for (int64_t g = 0; g < groups; ++g) {
              int64_t d = 0, s = 0;
              for (int64_t c = g * group; c < std::min(cols, (g + 1) * group); ++c) {
                d += w.q[r * cols + c] * xq[i * cols + c];
                s += xq[i * cols + c];
              }
              const double term = double{w.scales[r * groups + g]} *
                                  (static_cast<double>(d) - double{w.zeros[r * groups + g]} * s);
              exact += term;
              mag += std::fabs(term);
            }
            exact *= xscales[i];
            mag *= xscales[i];
            const double err = std::fabs(y[i * rows + r] - exact);
            worst = std::max(worst, err / mag);
            ASSERT_LE(err, (IntKX16ErrorBound(groups) + 1e-14) * mag) << "row " << r;
          }
        }
      }
    }
  }
  std::printf("largest |y - exact| / sum_g|term|: %.3g (bound at G = 448: %.3g)\n", worst,
              IntKX16ErrorBound(448));
}

INSTANTIATE_TEST_SUITE_P(AllIsas, IntKX16Test, ::testing::ValuesIn(kAllIsas),
                         [](const ::testing::TestParamInfo<Isa>& info) {
                           return std::string(IsaName(info.param));
                         });

TEST(IntKX16Products, BadViewsGiveNaNAndEmptyColumnsZero) {
  const uint8_t data[128] = {};
  const float params[16] = {};
  const int8_t xq[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  const float xscale = 1.0f;
  for (Isa isa : kAllIsas) {
    if (!IsaSupported(isa)) continue;
    SCOPED_TRACE(IsaName(isa));
    float y[2] = {0, 0};
    IntKX16GemvInt8(IntKX16View{2, 8, 4, 32, data, nullptr, params}, xq, xscale, y, isa, nullptr);
    EXPECT_TRUE(std::isnan(y[0]) && std::isnan(y[1]));
    y[0] = y[1] = 0;
    IntKX16GemvInt8(IntKX16View{2, 8, 3, 32, data, params, params}, xq, xscale, y, isa, nullptr);
    EXPECT_TRUE(std::isnan(y[0]) && std::isnan(y[1]));
    y[0] = y[1] = 0;
    IntKX16GemvInt8(IntKX16View{2, 8, 4, 48, data, params, params}, xq, xscale, y, isa, nullptr);
    EXPECT_TRUE(std::isnan(y[0]) && std::isnan(y[1]));
    y[0] = y[1] = 5;
    IntKX16GemvInt8(IntKX16View{2, 0, 4, 32, data, params, params}, xq, xscale, y, isa, nullptr);
    EXPECT_EQ(y[0], 0.0f);
    EXPECT_EQ(y[1], 0.0f);
    y[0] = y[1] = 5;
    IntKX16GemmInt8(IntKX16View{2, 8, 4, 32, data, params, params}, xq, &xscale, 0, y, isa,
                    nullptr);
    EXPECT_EQ(y[0], 5.0f);  // m = 0: nothing written
  }
}

TEST(IntKX16Products, AvxVariantsAgreeWithoutVnni) {
  // Isa::kAvx2 runs the vpmaddubsw kernel even where VNNI exists; both kernels must equal the
  // scalar reference (EqualsDocumentedArithmeticBitForBit), so here only a large case is checked
  // across the two directly.
  if (!IsaSupported(Isa::kAvx512)) GTEST_SKIP() << "no AVX-512";
  std::mt19937 rng(6);
  const IntK w = RandomIntKWithBadPadding(300, 4096, 4, 128, rng);
  const IntKX16Matrix x16 = RepackIntKX16(w.view());
  const int64_t m = 9;
  const std::vector<int8_t> xq = RandomInt8(m * 4096, rng);
  const std::vector<float> xscales = RandomScales(m, rng);
  std::vector<float> a(m * 300), b(m * 300);
  IntKX16GemmInt8(x16.view(), xq.data(), xscales.data(), m, a.data(), Isa::kAvx2, nullptr);
  IntKX16GemmInt8(x16.view(), xq.data(), xscales.data(), m, b.data(), Isa::kAvx512, nullptr);
  ExpectSameBits(a, b);
}

TEST(IntKX16Threads, ResultsDoNotDependOnThreadCount) {
  std::mt19937 rng(7);
  const int64_t rows = 1100, cols = 1000;
  const IntK i4 = RandomIntKWithBadPadding(rows, cols, 4, 128, rng);
  const IntK i2 = RandomIntKWithBadPadding(rows, cols, 2, 32, rng);
  const IntKX16Matrix x4 = RepackIntKX16(i4.view()), x2 = RepackIntKX16(i2.view());
  const std::vector<int8_t> xq = RandomInt8(9 * cols, rng);
  const std::vector<float> xscales = RandomScales(9, rng);
  auto run_all = [&](Isa isa, ThreadPool* pool) {
    std::vector<float> all;
    for (const IntKX16Matrix* w : {&x4, &x2}) {
      for (int64_t m : {1, 3, 9}) {
        std::vector<float> y(m * rows);
        IntKX16GemmInt8(w->view(), xq.data(), xscales.data(), m, y.data(), isa, pool);
        all.insert(all.end(), y.begin(), y.end());
      }
    }
    return all;
  };
  for (Isa isa : kAllIsas) {
    if (!IsaSupported(isa)) continue;
    SCOPED_TRACE(IsaName(isa));
    const std::vector<float> single = run_all(isa, nullptr);
    for (int threads : {1, 2, 3, 5}) {
      ThreadPool pool(threads);
      SCOPED_TRACE(threads);
      ExpectSameBits(run_all(isa, &pool), single);
    }
  }
}

}  // namespace
}  // namespace qat::kernels
