// Tests of the ternary2-x16 layout and its kernels (kernels/ternary_x16.h).
//
// The layout is checked against its byte-by-byte description and by a round trip; its scalar
// reference must equal the row-major scalar reference (kernels_test.cc checks that one against
// double precision) bit for bit, since both add the same terms in the same order; the AVX-512
// kernels must equal the scalar reference within a few ulps of sum|x| * |scale|.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/ternary.h"
#include "kernels/ternary_x16.h"
#include "kernels/thread_pool.h"
#include "tests/kernels_test_util.h"

namespace qat::kernels {
namespace {

using testing_util::RandomFloats;
using testing_util::RandomTernary2;
using testing_util::Ternary2;

// A ternary2 matrix with its x16 repacking (initialized to garbage that repacking overwrites).
struct X16 {
  Ternary2 t;
  std::vector<uint32_t> words;
  TernaryX16View view() const {
    return TernaryX16View{t.rows, t.cols, words.data(), t.scales.data(),
                          static_cast<int64_t>(t.scales.size())};
  }
};

X16 RandomX16(int64_t rows, int64_t cols, bool per_row, std::mt19937& rng) {
  X16 x{RandomTernary2(rows, cols, per_row, rng), {}};
  x.words.assign(TernaryX16Words(rows, cols), 0xDEADBEEFu);
  RepackTernaryX16(x.t.packed.data(), rows, cols, x.words.data());
  return x;
}

std::string Name(int64_t rows, int64_t cols, int64_t m) {
  return std::to_string(rows) + "x" + std::to_string(cols) + " m=" + std::to_string(m);
}

// Rows around the group size (16) and the GEMV's 4-group pass (64); columns not a multiple of
// 128 or of 16, and past the GEMM's 1024-column chunk.
const std::vector<std::pair<int64_t, int64_t>>& Shapes() {
  static const auto* shapes = new std::vector<std::pair<int64_t, int64_t>>{
      {1, 1},    {1, 130},  {15, 127}, {16, 128},  {17, 129},   {33, 300}, {64, 256},
      {65, 513}, {100, 64}, {3, 1030}, {20, 2100}, {130, 1100}, {2, 14336}};
  return *shapes;
}

TEST(TernaryX16Format, Sizes) {
  EXPECT_EQ(TernaryX16Groups(1), 1);
  EXPECT_EQ(TernaryX16Groups(16), 1);
  EXPECT_EQ(TernaryX16Groups(17), 2);
  EXPECT_EQ(TernaryX16Words(17, 129), 32 * 16);                // 2 groups of 16 rows x 16 words
  EXPECT_EQ(TernaryX16Words(4096, 14336), 4096 * 14336 / 16);  // 2 bits a weight, as ternary2
}

// Every weight's code sits where ternary_x16.h says, in both of its descriptions (byte/bit and
// nibble/column), and padding rows are code 1 throughout.
TEST(TernaryX16Format, RepackFollowsDocumentedLayout) {
  std::mt19937 rng(31);
  for (const auto& [rows, cols] : Shapes()) {
    SCOPED_TRACE(Name(rows, cols, 0));
    const X16 x = RandomX16(rows, cols, false, rng);
    const int64_t words_per_row = TernaryRowBytes(cols) / 4;
    auto word_of = [&](int64_t r, int64_t w) {
      return x.words[(r / 16) * words_per_row * 16 + w * 16 + r % 16];
    };
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t w = 0; w < words_per_row; ++w) {
        for (int i = 0; i < 4; ++i) {
          for (int j = 0; j < 4; ++j) {
            const int64_t c = 128 * (w / 8) + 4 * (w % 8) + i + 32 * j;
            const int code = (word_of(r, w) >> (8 * i + 2 * j)) & 3;
            const int want = c < cols ? x.t.trits[r * cols + c] + 1 : 1;
            ASSERT_EQ(code, want) << "row " << r << " column " << c;
          }
        }
        for (int n = 0; n < 8; ++n) {
          const int64_t c_lo = 128 * (w / 8) + 4 * (w % 8) + n / 2 + 64 * (n % 2);
          const int nibble = (word_of(r, w) >> (4 * n)) & 15;
          for (const auto& [c, code] :
               {std::pair{c_lo, nibble & 3}, std::pair{c_lo + 32, nibble >> 2}}) {
            ASSERT_EQ(code, c < cols ? x.t.trits[r * cols + c] + 1 : 1) << "column " << c;
          }
        }
      }
    }
    for (int64_t r = rows; r < TernaryX16Groups(rows) * 16; ++r) {
      for (int64_t w = 0; w < words_per_row; ++w) ASSERT_EQ(word_of(r, w), 0x55555555u);
    }
  }
}

TEST(TernaryX16Format, UnpackRestoresTernary2Bytes) {
  std::mt19937 rng(32);
  for (const auto& [rows, cols] : Shapes()) {
    SCOPED_TRACE(Name(rows, cols, 0));
    const X16 x = RandomX16(rows, cols, false, rng);
    std::vector<uint8_t> back(x.t.packed.size(), 0xEE);
    UnpackTernaryX16(x.words.data(), rows, cols, back.data());
    EXPECT_EQ(back, x.t.packed);
  }
}

TEST(TernaryX16Scalar, BitIdenticalToRowMajorScalar) {
  std::mt19937 rng(33);
  for (bool per_row : {false, true}) {
    for (const auto& [rows, cols] : Shapes()) {
      for (int64_t m : {1, 3}) {
        SCOPED_TRACE(Name(rows, cols, m));
        const X16 x = RandomX16(rows, cols, per_row, rng);
        const std::vector<float> act = RandomFloats(m * cols, rng);
        std::vector<float> want(m * rows), got(m * rows, -7.0f);
        TernaryGemm(x.t.view(), act.data(), m, want.data(), Isa::kScalar, nullptr);
        TernaryX16Gemm(x.view(), act.data(), m, got.data(), Isa::kScalar, nullptr);
        EXPECT_EQ(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)), 0);
      }
    }
  }
}

class TernaryX16Avx512 : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!TernaryX16Fast()) GTEST_SKIP() << "this CPU lacks AVX-512; the x16 kernels are not tested";
  }
};

// Within 1e-5 of sum|x| * |scale| (a single wrong trit moves an output by about sum|x| / cols).
void ExpectNear(const std::vector<float>& got, const std::vector<float>& want,
                const std::vector<float>& act, const X16& x, int64_t m) {
  for (int64_t i = 0; i < m; ++i) {
    const double abs_sum = testing_util::AbsSum(act.data() + i * x.t.cols, x.t.cols);
    for (int64_t r = 0; r < x.t.rows; ++r) {
      const int64_t k = i * x.t.rows + r;
      ASSERT_NEAR(got[k], want[k], 1e-5 * abs_sum * x.t.scale(r) + 1e-30)
          << "row " << r << " of activation " << i;
    }
  }
}

TEST_F(TernaryX16Avx512, MatchesScalar) {
  std::mt19937 rng(34);
  for (bool per_row : {false, true}) {
    for (const auto& [rows, cols] : Shapes()) {
      // 1: table lookups; 2..8: one outer-product pass; 9..20: several, with a partial last one.
      for (int64_t m : {1, 2, 7, 8, 9, 16, 20}) {
        SCOPED_TRACE(Name(rows, cols, m) + (per_row ? " per-row" : " per-tensor"));
        const X16 x = RandomX16(rows, cols, per_row, rng);
        const std::vector<float> act = RandomFloats(m * cols, rng);
        std::vector<float> want(m * rows), got(m * rows, -7.0f);
        TernaryX16Gemm(x.view(), act.data(), m, want.data(), Isa::kScalar, nullptr);
        TernaryX16Gemm(x.view(), act.data(), m, got.data(), Isa::kAvx512, nullptr);
        ExpectNear(got, want, act, x, m);
      }
    }
  }
}

// The y buffer past the real rows is never written (the last group's padding lanes are masked).
TEST_F(TernaryX16Avx512, WritesOnlyRealOutputs) {
  std::mt19937 rng(35);
  const X16 x = RandomX16(17, 200, true, rng);
  for (int64_t m : {1, 3}) {
    const std::vector<float> act = RandomFloats(m * 200, rng);
    std::vector<float> y(m * 17 + 40, 123.0f);
    TernaryX16Gemm(x.view(), act.data(), m, y.data(), Isa::kAvx512, nullptr);
    for (size_t k = m * 17; k < y.size(); ++k) EXPECT_EQ(y[k], 123.0f) << k;
  }
}

// Zero trits give exactly 0, and the invalid code 3 counts as 0 as in every ternary2 kernel.
TEST_F(TernaryX16Avx512, ZeroTritsAndCode3GiveExactZero) {
  std::mt19937 rng(36);
  for (int64_t cols : {1, 5, 127, 128, 300}) {
    for (uint8_t byte : {uint8_t{0x55}, uint8_t{0xFF}, uint8_t{0xD7}}) {  // codes 1; 3; 3,1,1,3
      std::vector<uint8_t> packed(3 * TernaryRowBytes(cols), byte);
      std::vector<uint32_t> words(TernaryX16Words(3, cols));
      RepackTernaryX16(packed.data(), 3, cols, words.data());
      const float scale = 1.0f;
      const TernaryX16View view{3, cols, words.data(), &scale, 1};
      const std::vector<float> act = RandomFloats(2 * cols, rng);
      std::vector<float> y(6, 1.0f);
      TernaryX16Gemm(view, act.data(), 1, y.data(), Isa::kAvx512, nullptr);
      for (int r = 0; r < 3; ++r) EXPECT_EQ(y[r], 0.0f) << "cols " << cols;
      TernaryX16Gemm(view, act.data(), 2, y.data(), Isa::kAvx512, nullptr);
      for (int k = 0; k < 6; ++k) EXPECT_EQ(y[k], 0.0f) << "cols " << cols;
    }
  }
}

// Each output row is one lane of one group, computed in a fixed order: any thread count gives the
// same bits, for the lookup GEMV and for the outer-product GEMM.
TEST(TernaryX16Threads, ResultsIndependentOfThreadCount) {
  std::mt19937 rng(37);
  const int64_t rows = 1030, cols = 2000;
  const X16 x = RandomX16(rows, cols, true, rng);
  ThreadPool pool2(2), pool3(3);
  for (Isa isa : {Isa::kScalar, Isa::kAvx512}) {
    if (!IsaSupported(isa)) continue;
    for (int64_t m : {1, 11}) {
      SCOPED_TRACE(std::string(IsaName(isa)) + " m=" + std::to_string(m));
      const std::vector<float> act = RandomFloats(m * cols, rng);
      std::vector<float> one(m * rows), two(m * rows, -1.0f), three(m * rows, -2.0f);
      TernaryX16Gemm(x.view(), act.data(), m, one.data(), isa, nullptr);
      TernaryX16Gemm(x.view(), act.data(), m, two.data(), isa, &pool2);
      TernaryX16Gemm(x.view(), act.data(), m, three.data(), isa, &pool3);
      EXPECT_EQ(std::memcmp(one.data(), two.data(), one.size() * sizeof(float)), 0);
      EXPECT_EQ(std::memcmp(one.data(), three.data(), one.size() * sizeof(float)), 0);
    }
  }
}

TEST(TernaryX16Kernels, UnusableScalesGiveNaNAndNoColumnsZeros) {
  std::mt19937 rng(38);
  X16 x = RandomX16(4, 64, true, rng);
  TernaryX16View view = x.view();
  view.n_scales = 2;  // neither 1 nor rows
  const std::vector<float> act = RandomFloats(64, rng);
  std::vector<float> y(4, 0.0f);
  TernaryX16Gemm(view, act.data(), 1, y.data(), BestIsa(), nullptr);
  for (float v : y) EXPECT_TRUE(std::isnan(v));
  const float scale = 1.0f;
  std::vector<float> z(6, 5.0f);
  TernaryX16Gemm(TernaryX16View{3, 0, nullptr, &scale, 1}, nullptr, 2, z.data(), BestIsa(),
                 nullptr);
  for (float v : z) EXPECT_EQ(v, 0.0f);
}

}  // namespace
}  // namespace qat::kernels
