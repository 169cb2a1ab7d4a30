// Tests of the ternary2 format and the CPU kernels (kernels/ternary.h, kernels/thread_pool.h).
//
// Ground truth is a naive double-precision product computed from unpacked trits; the scalar
// kernels are checked against it, and every SIMD variant against the scalar kernels. SIMD results
// are not bit-identical to scalar ones because they add in a different order (several vector
// accumulators, lane-wise partial sums, and the GEMV computes sum code*x - sum x), and float
// addition is not associative; the difference is bounded by a few ulps of sum|x| * |scale|.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <ostream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/ternary.h"
#include "kernels/thread_pool.h"
#include "tests/kernels_test_util.h"

namespace qat::kernels {

namespace {

using testing_util::kAllIsas;
using testing_util::kSimdIsas;
using testing_util::RandomFloats;
using Ternary = testing_util::Ternary2;

Ternary RandomTernary(int64_t rows, int64_t cols, bool per_row_scales, std::mt19937& rng) {
  return testing_util::RandomTernary2(rows, cols, per_row_scales, rng);
}

// Y[i][r] = scale(r) * sum_c t[r][c] * X[i][c] in double.
std::vector<double> NaiveTernary(const Ternary& w, const std::vector<float>& x, int64_t m) {
  std::vector<double> y(m * w.rows);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t r = 0; r < w.rows; ++r) {
      double sum = 0;
      for (int64_t c = 0; c < w.cols; ++c)
        sum += w.trits[r * w.cols + c] * double{x[i * w.cols + c]};
      y[i * w.rows + r] = w.scale(r) * sum;
    }
  }
  return y;
}

std::vector<double> NaiveDense(const std::vector<float>& w, int64_t rows, int64_t cols,
                               const std::vector<float>& x, int64_t m) {
  std::vector<double> y(m * rows);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t r = 0; r < rows; ++r) {
      double sum = 0;
      for (int64_t c = 0; c < cols; ++c) sum += double{w[r * cols + c]} * x[i * cols + c];
      y[i * rows + r] = sum;
    }
  }
  return y;
}

// sum |x[i][c]| for activation row i: the scale of the rounding error of any order of summation.
double AbsSum(const std::vector<float>& x, int64_t cols, int64_t i) {
  return testing_util::AbsSum(x.data() + i * cols, cols);
}

// Shapes covering rows = 1, cols not a multiple of 128 or of 4, several blocks, and column counts
// past the GEMM column chunk (1024).
const std::vector<std::pair<int64_t, int64_t>>& Shapes() {
  static const auto* shapes = new std::vector<std::pair<int64_t, int64_t>>{
      {1, 1},   {1, 3},    {1, 128}, {3, 127},  {5, 129},  {7, 256},   {2, 1000},
      {9, 385}, {33, 130}, {4, 4},   {6, 2050}, {65, 511}, {1, 14336}, {37, 1153}};
  return *shapes;
}

// ----- Format -----

TEST(TernaryFormat, RowBytes) {
  EXPECT_EQ(TernaryRowBytes(1), 32);
  EXPECT_EQ(TernaryRowBytes(128), 32);
  EXPECT_EQ(TernaryRowBytes(129), 64);
  EXPECT_EQ(TernaryRowBytes(4096), 1024);
}

TEST(TernaryFormat, PackUnpackRoundTrip) {
  std::mt19937 rng(1);
  std::vector<std::pair<int64_t, int64_t>> shapes = Shapes();
  std::uniform_int_distribution<int64_t> dim(1, 700);
  for (int k = 0; k < 20; ++k) shapes.emplace_back(dim(rng) % 9 + 1, dim(rng));
  for (const auto& [rows, cols] : shapes) {
    SCOPED_TRACE(std::to_string(rows) + "x" + std::to_string(cols));
    const Ternary t = RandomTernary(rows, cols, false, rng);
    std::vector<int8_t> back(rows * cols, 7);
    UnpackTernary(t.packed.data(), rows, cols, back.data());
    EXPECT_EQ(back, t.trits);
    EXPECT_EQ(ValidateTernary(t.packed.data(), rows, cols), -1);
  }
}

// The byte and bit of every column, as documented in ternary.h: block c/128, byte (c%128)%32,
// bits [2j+1:2j] with j = (c%128)/32; the other weights of the row and the padding read code 1.
TEST(TernaryFormat, PackFollowsDocumentedLayout) {
  const int64_t cols = 300;  // 3 blocks, the last one partial
  const int64_t row_bytes = TernaryRowBytes(cols);
  for (int64_t c = 0; c < cols; c += 7) {
    for (int8_t trit : {int8_t{-1}, int8_t{1}}) {
      std::vector<int8_t> trits(cols, 0);
      trits[c] = trit;
      std::vector<uint8_t> packed(row_bytes);
      PackTernary(trits.data(), 1, cols, packed.data());
      const int64_t byte = c / 128 * 32 + (c % 128) % 32;
      const int shift = 2 * static_cast<int>((c % 128) / 32);
      for (int64_t b = 0; b < row_bytes; ++b) {
        uint8_t expected = 0x55;
        if (b == byte)
          expected = static_cast<uint8_t>((0x55 & ~(3 << shift)) | ((trit + 1) << shift));
        ASSERT_EQ(packed[b], expected) << "column " << c << " byte " << b;
      }
    }
  }
}

TEST(TernaryFormat, PackClampsOutOfRangeTrits) {
  const int8_t trits[4] = {5, -9, 0, 1};
  std::vector<uint8_t> packed(32);
  PackTernary(trits, 1, 4, packed.data());
  int8_t back[4];
  UnpackTernary(packed.data(), 1, 4, back);
  EXPECT_EQ(back[0], 1);
  EXPECT_EQ(back[1], -1);
  EXPECT_EQ(back[2], 0);
  EXPECT_EQ(back[3], 1);
  EXPECT_EQ(ValidateTernary(packed.data(), 1, 4), -1);
}

TEST(TernaryFormat, UnpackDecodesCode3AsZero) {
  std::vector<uint8_t> packed(32, 0x55);
  packed[0] = 0x57;  // column 0 has code 3
  int8_t trit = 9;
  UnpackTernary(packed.data(), 1, 1, &trit);
  EXPECT_EQ(trit, 0);
}

TEST(TernaryFormat, ValidateFindsCode3) {
  std::mt19937 rng(2);
  for (const auto& [rows, cols] : Shapes()) {
    SCOPED_TRACE(std::to_string(rows) + "x" + std::to_string(cols));
    const Ternary t = RandomTernary(rows, cols, false, rng);
    // Put a code 3 on a few real weights (first, last, random) and expect exactly that byte.
    std::uniform_int_distribution<int64_t> pick(0, rows * cols - 1);
    for (int64_t flat : {int64_t{0}, rows * cols - 1, pick(rng), pick(rng)}) {
      const int64_t r = flat / cols, c = flat % cols;
      const int64_t offset = r * TernaryRowBytes(cols) + c / 128 * 32 + (c % 128) % 32;
      std::vector<uint8_t> bad = t.packed;
      bad[offset] |= static_cast<uint8_t>(3 << (2 * ((c % 128) / 32)));
      EXPECT_EQ(ValidateTernary(bad.data(), rows, cols), offset) << "r=" << r << " c=" << c;
    }
  }
}

TEST(TernaryFormat, ValidateReportsFirstInvalidByte) {
  std::mt19937 rng(3);
  const Ternary t = RandomTernary(4, 1000, false, rng);
  std::vector<uint8_t> bad = t.packed;
  bad[700] |= 0xC0;  // row 2
  bad[300] |= 0x03;  // row 1: first
  bad[301] |= 0x0C;
  EXPECT_EQ(ValidateTernary(bad.data(), 4, 1000), 300);
}

TEST(TernaryFormat, ValidateFindsBadPadding) {
  std::mt19937 rng(4);
  for (int64_t cols : {1, 3, 100, 127, 129, 200, 1000}) {
    SCOPED_TRACE(cols);
    const int64_t rows = 3;
    const Ternary t = RandomTernary(rows, cols, false, rng);
    const int64_t row_bytes = TernaryRowBytes(cols);
    // Every padding weight of the last row, set to code 0, then code 2, must be reported.
    for (int64_t c = cols; c < row_bytes * 4; ++c) {
      const int64_t offset = (rows - 1) * row_bytes + c / 128 * 32 + (c % 128) % 32;
      const int shift = 2 * static_cast<int>((c % 128) / 32);
      for (int code : {0, 2, 3}) {
        std::vector<uint8_t> bad = t.packed;
        bad[offset] = static_cast<uint8_t>((bad[offset] & ~(3 << shift)) | (code << shift));
        ASSERT_EQ(ValidateTernary(bad.data(), rows, cols), offset) << "c=" << c << " code " << code;
      }
    }
  }
}

TEST(TernaryFormat, ValidateAcceptsAllValidCodes) {
  // Every byte made of codes 0..2 is valid in a full block.
  std::vector<uint8_t> packed(32 * 81);
  int64_t n = 0;
  for (int a = 0; a < 3; ++a)
    for (int b = 0; b < 3; ++b)
      for (int c = 0; c < 3; ++c)
        for (int d = 0; d < 3; ++d)
          for (int k = 0; k < 32; ++k)
            packed[n++] = static_cast<uint8_t>(a | b << 2 | c << 4 | d << 6);
  EXPECT_EQ(ValidateTernary(packed.data(), 81, 128), -1);
}

// ----- Instruction sets -----

TEST(TernaryIsa, BestIsSupported) {
  EXPECT_TRUE(IsaSupported(Isa::kScalar));
  EXPECT_TRUE(IsaSupported(BestIsa()));
  if (IsaSupported(Isa::kAvx512)) {
    EXPECT_EQ(BestIsa(), Isa::kAvx512);
  }
  EXPECT_STREQ(IsaName(Isa::kScalar), "scalar");
  EXPECT_STREQ(IsaName(Isa::kAvx2), "avx2");
  EXPECT_STREQ(IsaName(Isa::kAvx512), "avx512");
}

// ----- Scalar reference against naive double precision -----

// |float result - exact| <= n * eps * sum|terms| bounds recursive summation; the terms here are
// |scale * t * x| <= |scale| * |x|.
void ExpectNearNaive(const std::vector<float>& got, const std::vector<double>& want,
                     const std::vector<float>& x, int64_t cols, int64_t rows,
                     const std::vector<float>& row_scales) {
  for (size_t k = 0; k < got.size(); ++k) {
    const int64_t i = k / rows, r = k % rows;
    const double bound = (cols + 2) * 1.2e-7 * AbsSum(x, cols, i) * row_scales[r] + 1e-30;
    ASSERT_NEAR(got[k], want[k], bound) << "row " << r << " of activation " << i;
  }
}

std::vector<float> RowScales(const Ternary& t) {
  std::vector<float> s(t.rows);
  for (int64_t r = 0; r < t.rows; ++r) s[r] = t.scale(r);
  return s;
}

TEST(TernaryScalar, GemvMatchesNaive) {
  std::mt19937 rng(5);
  for (bool per_row : {false, true}) {
    for (const auto& [rows, cols] : Shapes()) {
      SCOPED_TRACE(std::to_string(rows) + "x" + std::to_string(cols));
      const Ternary t = RandomTernary(rows, cols, per_row, rng);
      const std::vector<float> x = RandomFloats(cols, rng);
      std::vector<float> y(rows);
      TernaryGemv(t.view(), x.data(), y.data(), Isa::kScalar, nullptr);
      ExpectNearNaive(y, NaiveTernary(t, x, 1), x, cols, rows, RowScales(t));
    }
  }
}

TEST(TernaryScalar, GemmMatchesNaive) {
  std::mt19937 rng(6);
  for (bool per_row : {false, true}) {
    for (const auto& [rows, cols] : Shapes()) {
      for (int64_t m : {1, 2, 5}) {
        SCOPED_TRACE(std::to_string(rows) + "x" + std::to_string(cols) + " m=" + std::to_string(m));
        const Ternary t = RandomTernary(rows, cols, per_row, rng);
        const std::vector<float> x = RandomFloats(m * cols, rng);
        std::vector<float> y(m * rows);
        TernaryGemm(t.view(), x.data(), m, y.data(), Isa::kScalar, nullptr);
        ExpectNearNaive(y, NaiveTernary(t, x, m), x, cols, rows, RowScales(t));
      }
    }
  }
}

TEST(DenseScalar, GemvAndGemmMatchNaive) {
  std::mt19937 rng(7);
  for (const auto& [rows, cols] : Shapes()) {
    for (int64_t m : {1, 4}) {
      SCOPED_TRACE(std::to_string(rows) + "x" + std::to_string(cols) + " m=" + std::to_string(m));
      const std::vector<float> w = RandomFloats(rows * cols, rng);
      const std::vector<float> x = RandomFloats(m * cols, rng);
      const std::vector<double> want = NaiveDense(w, rows, cols, x, m);
      // |w| of a standard normal is below 6 here; the bound uses sum|x| * 6.
      const std::vector<float> six(rows, 6.0f);
      std::vector<float> y(m * rows);
      DenseGemm(w.data(), rows, cols, x.data(), m, y.data(), Isa::kScalar, nullptr);
      ExpectNearNaive(y, want, x, cols, rows, six);
      if (m == 1) {
        std::vector<float> yv(rows);
        DenseGemv(w.data(), rows, cols, x.data(), yv.data(), Isa::kScalar, nullptr);
        ExpectNearNaive(yv, want, x, cols, rows, six);
      }
    }
  }
}

// ----- SIMD variants against the scalar reference -----

class SimdTest : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    if (!IsaSupported(GetParam())) {
      GTEST_SKIP() << "this CPU lacks " << IsaName(GetParam()) << "; its kernels are not tested";
    }
  }
};

// 1e-5 relative to sum|x| * |scale|: far above the reordering error (~sqrt(cols) ulps) and far
// below the effect of a single wrong trit (|x_c| * scale, about sum|x| / cols).
void ExpectNearScalar(const std::vector<float>& got, const std::vector<float>& want,
                      const std::vector<float>& x, int64_t cols, int64_t rows,
                      const std::vector<float>& row_scales) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t k = 0; k < got.size(); ++k) {
    const int64_t i = k / rows, r = k % rows;
    const double tol = 1e-5 * AbsSum(x, cols, i) * row_scales[r] + 1e-30;
    ASSERT_NEAR(got[k], want[k], tol) << "row " << r << " of activation " << i;
  }
}

TEST_P(SimdTest, TernaryGemvMatchesScalar) {
  std::mt19937 rng(8);
  for (bool per_row : {false, true}) {
    for (const auto& [rows, cols] : Shapes()) {
      SCOPED_TRACE(std::to_string(rows) + "x" + std::to_string(cols));
      const Ternary t = RandomTernary(rows, cols, per_row, rng);
      const std::vector<float> x = RandomFloats(cols, rng);
      std::vector<float> want(rows), got(rows);
      TernaryGemv(t.view(), x.data(), want.data(), Isa::kScalar, nullptr);
      TernaryGemv(t.view(), x.data(), got.data(), GetParam(), nullptr);
      ExpectNearScalar(got, want, x, cols, rows, RowScales(t));
    }
  }
}

TEST_P(SimdTest, TernaryGemmMatchesScalar) {
  std::mt19937 rng(9);
  for (bool per_row : {false, true}) {
    for (const auto& [rows, cols] : Shapes()) {
      // m up to kGemmSmallBatch (16) runs the small-batch path in passes of 4; 17 the tiled one.
      for (int64_t m : {1, 2, 3, 4, 7, 8, 13, 17}) {
        SCOPED_TRACE(std::to_string(rows) + "x" + std::to_string(cols) + " m=" + std::to_string(m));
        const Ternary t = RandomTernary(rows, cols, per_row, rng);
        const std::vector<float> x = RandomFloats(m * cols, rng);
        std::vector<float> want(m * rows), got(m * rows);
        TernaryGemm(t.view(), x.data(), m, want.data(), Isa::kScalar, nullptr);
        TernaryGemm(t.view(), x.data(), m, got.data(), GetParam(), nullptr);
        ExpectNearScalar(got, want, x, cols, rows, RowScales(t));
      }
    }
  }
}

TEST_P(SimdTest, DenseMatchesScalar) {
  std::mt19937 rng(10);
  for (const auto& [rows, cols] : Shapes()) {
    for (int64_t m : {1, 2, 3, 5}) {
      SCOPED_TRACE(std::to_string(rows) + "x" + std::to_string(cols) + " m=" + std::to_string(m));
      const std::vector<float> w = RandomFloats(rows * cols, rng);
      const std::vector<float> x = RandomFloats(m * cols, rng);
      const std::vector<float> six(rows, 6.0f);  // |w| < 6
      std::vector<float> want(m * rows), got(m * rows);
      DenseGemm(w.data(), rows, cols, x.data(), m, want.data(), Isa::kScalar, nullptr);
      DenseGemm(w.data(), rows, cols, x.data(), m, got.data(), GetParam(), nullptr);
      ExpectNearScalar(got, want, x, cols, rows, six);
      if (m == 1) {
        DenseGemv(w.data(), rows, cols, x.data(), got.data(), GetParam(), nullptr);
        ExpectNearScalar(got, want, x, cols, rows, six);
      }
    }
  }
}

// Rows whose trits are all 0 give exactly 0 whatever x is: the padding columns and the
// sum code*x - sum x rearrangement must cancel exactly, not approximately.
TEST_P(SimdTest, ZeroRowsGiveExactZero) {
  std::mt19937 rng(11);
  for (int64_t cols : {1, 5, 127, 128, 300}) {
    std::vector<int8_t> zeros(3 * cols, 0);
    std::vector<uint8_t> packed(3 * TernaryRowBytes(cols));
    PackTernary(zeros.data(), 3, cols, packed.data());
    const float scale = 1.0f;
    const TernaryView view{3, cols, packed.data(), &scale, 1};
    const std::vector<float> x = RandomFloats(2 * cols, rng);
    std::vector<float> y(6, 1.0f);
    TernaryGemv(view, x.data(), y.data(), GetParam(), nullptr);
    for (int r = 0; r < 3; ++r) EXPECT_EQ(y[r], 0.0f) << "cols " << cols;
    TernaryGemm(view, x.data(), 2, y.data(), GetParam(), nullptr);
    for (int k = 0; k < 6; ++k) EXPECT_EQ(y[k], 0.0f) << "cols " << cols;
  }
}

INSTANTIATE_TEST_SUITE_P(Isas, SimdTest, ::testing::ValuesIn(kSimdIsas),
                         [](const ::testing::TestParamInfo<Isa>& info) {
                           return std::string(IsaName(info.param));
                         });

// ----- Threads -----

// Each output row is computed by one thread in a fixed order, so any thread count gives the same
// bits. The shapes are large enough to be split into many work units.
TEST(TernaryThreads, ResultsIndependentOfThreadCount) {
  std::mt19937 rng(12);
  const int64_t rows = 1030, cols = 2000;
  const Ternary t = RandomTernary(rows, cols, true, rng);
  const std::vector<float> w = RandomFloats(rows * cols, rng);
  const int64_t m = 3;
  const std::vector<float> x = RandomFloats(m * cols, rng);
  ThreadPool pool2(2), pool3(3);
  for (Isa isa : kAllIsas) {
    if (!IsaSupported(isa)) continue;
    SCOPED_TRACE(IsaName(isa));
    std::vector<float> one(m * rows), two(m * rows, -1.0f), three(m * rows, -2.0f);
    // Compares the first `count` outputs, then poisons the threaded buffers for the next product.
    auto expect_same = [&](int64_t count) {
      EXPECT_EQ(std::memcmp(one.data(), two.data(), count * sizeof(float)), 0);
      EXPECT_EQ(std::memcmp(one.data(), three.data(), count * sizeof(float)), 0);
      std::fill(two.begin(), two.end(), -1.0f);
      std::fill(three.begin(), three.end(), -2.0f);
    };
    TernaryGemv(t.view(), x.data(), one.data(), isa, nullptr);
    TernaryGemv(t.view(), x.data(), two.data(), isa, &pool2);
    TernaryGemv(t.view(), x.data(), three.data(), isa, &pool3);
    expect_same(rows);
    TernaryGemm(t.view(), x.data(), m, one.data(), isa, nullptr);
    TernaryGemm(t.view(), x.data(), m, two.data(), isa, &pool2);
    TernaryGemm(t.view(), x.data(), m, three.data(), isa, &pool3);
    expect_same(m * rows);
    DenseGemm(w.data(), rows, cols, x.data(), m, one.data(), isa, nullptr);
    DenseGemm(w.data(), rows, cols, x.data(), m, two.data(), isa, &pool2);
    DenseGemm(w.data(), rows, cols, x.data(), m, three.data(), isa, &pool3);
    expect_same(m * rows);
    DenseGemv(w.data(), rows, cols, x.data(), one.data(), isa, nullptr);
    DenseGemv(w.data(), rows, cols, x.data(), two.data(), isa, &pool2);
    DenseGemv(w.data(), rows, cols, x.data(), three.data(), isa, &pool3);
    expect_same(rows);
  }
}

TEST(TernaryKernels, UnusableScaleCountGivesNaN) {
  std::mt19937 rng(13);
  Ternary t = RandomTernary(4, 64, true, rng);
  TernaryView view = t.view();
  view.n_scales = 2;  // neither 1 nor rows
  const std::vector<float> x = RandomFloats(64, rng);
  std::vector<float> y(4, 0.0f);
  TernaryGemv(view, x.data(), y.data(), BestIsa(), nullptr);
  for (float v : y) EXPECT_TRUE(std::isnan(v));
}

TEST(TernaryKernels, NoColumnsGiveZeros) {
  const float scale = 1.0f;
  const TernaryView view{3, 0, nullptr, &scale, 1};
  for (Isa isa : kAllIsas) {
    if (!IsaSupported(isa)) continue;
    SCOPED_TRACE(IsaName(isa));
    auto expect_zeros = [](const std::vector<float>& y, int64_t n) {
      for (int64_t k = 0; k < n; ++k) EXPECT_EQ(y[k], 0.0f) << k;
    };
    std::vector<float> y(6, 5.0f);
    TernaryGemv(view, nullptr, y.data(), isa, nullptr);
    expect_zeros(y, 3);
    std::fill(y.begin(), y.end(), 5.0f);
    TernaryGemm(view, nullptr, 2, y.data(), isa, nullptr);
    expect_zeros(y, 6);
    std::fill(y.begin(), y.end(), 5.0f);
    DenseGemv(nullptr, 3, 0, nullptr, y.data(), isa, nullptr);
    expect_zeros(y, 3);
    std::fill(y.begin(), y.end(), 5.0f);
    DenseGemm(nullptr, 3, 0, nullptr, 2, y.data(), isa, nullptr);
    expect_zeros(y, 6);
  }
}

TEST(ThreadPool, SizeAndDefault) {
  EXPECT_EQ(ThreadPool(3).size(), 3);
  EXPECT_GE(ThreadPool(0).size(), 1);
}

// Every index is visited exactly once, and every chunk but the last is a multiple of grain.
TEST(ThreadPool, ChunksCoverRangeOnce) {
  ThreadPool pool(3);
  for (int64_t n : {1, 2, 7, 64, 1000, 4097}) {
    for (int64_t grain : {1, 3, 16, 5000}) {
      std::vector<std::atomic<int>> seen(n);
      std::atomic<int> bad_chunks{0};
      pool.ParallelFor(n, grain, [&](int64_t begin, int64_t end) {
        if (begin % grain != 0 || (end != n && (end - begin) % grain != 0) || begin >= end) {
          ++bad_chunks;
        }
        for (int64_t i = begin; i < end; ++i) ++seen[i];
      });
      EXPECT_EQ(bad_chunks.load(), 0) << "n=" << n << " grain=" << grain;
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(seen[i].load(), 1) << "n=" << n << " i=" << i;
    }
  }
  pool.ParallelFor(0, 1, [](int64_t, int64_t) { FAIL() << "called for n = 0"; });
}

TEST(ThreadPool, UsesSeveralThreads) {
  ThreadPool pool(2);
  std::atomic<int> waiting{0};
  std::atomic<bool> both_ran{false};
  // Two chunks that each wait for the other: only finishes if two threads run them together.
  pool.ParallelFor(2, 1, [&](int64_t, int64_t) {
    ++waiting;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (waiting.load() < 2 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::yield();
    }
    if (waiting.load() == 2) both_ran = true;
  });
  EXPECT_TRUE(both_ran.load());
}

// Many small jobs back to back (a decode loop), with pauses long enough for workers to sleep.
TEST(ThreadPool, ManyRepeatedCalls) {
  ThreadPool pool(3);
  std::vector<int64_t> out(64);
  int64_t total = 0;
  for (int call = 0; call < 20000; ++call) {
    pool.ParallelFor(64, 4, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) out[i] = i + call;
    });
    for (int64_t v : out) total += v;
    if (call % 5000 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  int64_t want = 0;
  for (int call = 0; call < 20000; ++call) want += 64 * 63 / 2 + 64 * call;
  EXPECT_EQ(total, want);
}

TEST(ThreadPool, NestedCallRunsInline) {
  ThreadPool pool(2);
  std::atomic<int64_t> sum{0};
  pool.ParallelFor(8, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      pool.ParallelFor(10, 1, [&](int64_t b, int64_t e) { sum += e - b; });
    }
  });
  EXPECT_EQ(sum.load(), 80);
}

TEST(ThreadPool, ConcurrentCallersAndCleanDestruction) {
  for (int round = 0; round < 20; ++round) {
    auto pool = std::make_unique<ThreadPool>(3);
    std::atomic<int64_t> sum{0};
    std::vector<std::thread> callers;
    for (int k = 0; k < 2; ++k) {
      callers.emplace_back([&] {
        for (int call = 0; call < 200; ++call) {
          pool->ParallelFor(100, 7, [&](int64_t b, int64_t e) { sum += e - b; });
        }
      });
    }
    for (std::thread& c : callers) c.join();
    EXPECT_EQ(sum.load(), 2 * 200 * 100);
    if (round % 2 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    pool.reset();  // joins workers whether they spin or sleep
  }
}

}  // namespace
}  // namespace qat::kernels
