// Tests of the ternary3 and int2/int4 formats, the int8-activation path and their kernels
// (kernels/lowbit.h).
//
// Ground truth for the float kernels is a naive double-precision product of the values the
// test generated; the scalar kernels are checked against it and every SIMD variant against the
// scalar kernels, within a bound far above float reordering error and far below the effect of one
// wrong weight. The int8 kernels are exact: every variant must equal the naive integer product,
// scaled as documented, bit for bit.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <ostream>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/lowbit.h"
#include "kernels/ternary.h"
#include "kernels/thread_pool.h"
#include "tests/kernels_test_util.h"

namespace qat::kernels {

namespace {

using testing_util::AbsSum;
using testing_util::IntK;
using testing_util::kAllIsas;
using testing_util::kSimdIsas;
using testing_util::RandomFloats;
using testing_util::RandomInt8;
using testing_util::RandomIntK;
using testing_util::RandomTernary2;
using testing_util::RandomTernary3;
using testing_util::RandomTrits;
using testing_util::Ternary2;
using testing_util::Ternary3;

std::string ShapeName(int64_t rows, int64_t cols, int64_t m = 1) {
  return std::to_string(rows) + "x" + std::to_string(cols) +
         (m > 1 ? " m=" + std::to_string(m) : "");
}

// Shapes covering one row, columns that are not multiples of the block (160), the unit (32, 64),
// the group (32, 64, 128) or the vector width, several blocks, and columns past the GEMM chunk.
const std::vector<std::pair<int64_t, int64_t>>& Shapes() {
  static const auto* shapes = new std::vector<std::pair<int64_t, int64_t>>{
      {1, 1},     {1, 3},     {1, 160},  {3, 159}, {5, 161},  {7, 320},
      {2, 1000},  {9, 385},   {33, 130}, {4, 4},   {6, 2050}, {65, 511},
      {1, 14336}, {37, 1153}, {5, 64},   {3, 96},  {4, 129}};
  return *shapes;
}

// Float results against a reference: |got - want| <= rel * bound[k] for each output k.
void ExpectClose(const std::vector<float>& got, const std::vector<double>& want,
                 const std::vector<double>& bound, double rel) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t k = 0; k < got.size(); ++k) {
    ASSERT_NEAR(got[k], want[k], rel * bound[k] + 1e-30) << "output " << k;
  }
}

// Bitwise equality of float vectors (NaN-free in these tests).
void ExpectSameBits(const std::vector<float>& got, const std::vector<float>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t k = 0; k < got.size(); ++k) {
    uint32_t a, b;
    std::memcpy(&a, &got[k], 4);
    std::memcpy(&b, &want[k], 4);
    ASSERT_EQ(a, b) << "output " << k << ": " << got[k] << " vs " << want[k];
  }
}

// ================================ ternary3 format ================================

TEST(Ternary3Format, RowBytes) {
  EXPECT_EQ(Ternary3RowBytes(1), 32);
  EXPECT_EQ(Ternary3RowBytes(160), 32);
  EXPECT_EQ(Ternary3RowBytes(161), 64);
  EXPECT_EQ(Ternary3RowBytes(4096), 832);
  EXPECT_EQ(Ternary3RowBytes(14336), 2880);
}

TEST(Ternary3Format, PackUnpackRoundTrip) {
  std::mt19937 rng(1);
  std::vector<std::pair<int64_t, int64_t>> shapes = Shapes();
  std::uniform_int_distribution<int64_t> dim(1, 900);
  for (int k = 0; k < 20; ++k) shapes.emplace_back(dim(rng) % 9 + 1, dim(rng));
  for (const auto& [rows, cols] : shapes) {
    SCOPED_TRACE(ShapeName(rows, cols));
    const Ternary3 t = RandomTernary3(rows, cols, false, rng);
    std::vector<int8_t> back(rows * cols, 7);
    UnpackTernary3(t.packed.data(), rows, cols, back.data());
    EXPECT_EQ(back, t.trits);
    EXPECT_EQ(ValidateTernary3(t.packed.data(), rows, cols), -1);
  }
}

// Every column's byte and digit, as documented in lowbit.h: block c/160, byte (c%160)%32, digit
// n = (c%160)/32 of the base-3 byte; every other weight (padding included) is code 1, so the
// other bytes are 1+3+9+27+81 = 121.
TEST(Ternary3Format, PackFollowsDocumentedLayout) {
  const int64_t cols = 400;  // 3 blocks, the last one partial
  const int64_t row_bytes = Ternary3RowBytes(cols);
  const int pow3[5] = {1, 3, 9, 27, 81};
  for (int64_t c = 0; c < cols; c += 3) {
    for (int8_t trit : {int8_t{-1}, int8_t{1}}) {
      std::vector<int8_t> trits(cols, 0);
      trits[c] = trit;
      std::vector<uint8_t> packed(row_bytes);
      PackTernary3(trits.data(), 1, cols, packed.data());
      const int64_t byte = c / 160 * 32 + (c % 160) % 32;
      const int n = static_cast<int>((c % 160) / 32);
      for (int64_t b = 0; b < row_bytes; ++b) {
        const int expected = b == byte ? 121 + trit * pow3[n] : 121;
        ASSERT_EQ(packed[b], expected) << "column " << c << " byte " << b;
      }
    }
  }
}

TEST(Ternary3Format, PackClampsOutOfRangeTrits) {
  const int8_t trits[4] = {5, -9, 0, 1};
  std::vector<uint8_t> packed(32);
  PackTernary3(trits, 1, 4, packed.data());
  int8_t back[4];
  UnpackTernary3(packed.data(), 1, 4, back);
  EXPECT_EQ(std::vector<int8_t>(back, back + 4), (std::vector<int8_t>{1, -1, 0, 1}));
  EXPECT_EQ(ValidateTernary3(packed.data(), 1, 4), -1);
}

TEST(Ternary3Format, UnpackDecodesEveryByteAsDocumented) {
  // One full block per byte value: column m + 32n of row b has trit floor(b/3^n) mod 3 - 1, for
  // invalid bytes (243..255) too.
  std::vector<uint8_t> packed(256 * 32);
  for (int b = 0; b < 256; ++b) std::fill(packed.begin() + 32 * b, packed.begin() + 32 * b + 32, b);
  std::vector<int8_t> trits(256 * 160);
  UnpackTernary3(packed.data(), 256, 160, trits.data());
  for (int b = 0; b < 256; ++b) {
    int rest = b;
    for (int n = 0; n < 5; ++n, rest /= 3) {
      for (int m = 0; m < 32; ++m) {
        ASSERT_EQ(trits[b * 160 + 32 * n + m], rest % 3 - 1) << "byte " << b << " digit " << n;
      }
    }
  }
}

TEST(Ternary3Format, ValidateAcceptsAllValidBytes) {
  std::vector<uint8_t> packed(243 * 32);
  for (int b = 0; b < 243; ++b) std::fill(packed.begin() + 32 * b, packed.begin() + 32 * b + 32, b);
  EXPECT_EQ(ValidateTernary3(packed.data(), 243, 160), -1);
}

TEST(Ternary3Format, ValidateFindsBytesAbove242) {
  std::mt19937 rng(2);
  for (const auto& [rows, cols] : Shapes()) {
    SCOPED_TRACE(ShapeName(rows, cols));
    const Ternary3 t = RandomTernary3(rows, cols, false, rng);
    std::uniform_int_distribution<int64_t> pick(0, rows * cols - 1);
    std::uniform_int_distribution<int> bad_value(243, 255);
    for (int64_t flat : {int64_t{0}, rows * cols - 1, pick(rng), pick(rng)}) {
      const int64_t r = flat / cols, c = flat % cols;
      const int64_t offset = r * Ternary3RowBytes(cols) + c / 160 * 32 + (c % 160) % 32;
      std::vector<uint8_t> bad = t.packed;
      bad[offset] = static_cast<uint8_t>(bad_value(rng));
      EXPECT_EQ(ValidateTernary3(bad.data(), rows, cols), offset) << "r=" << r << " c=" << c;
    }
  }
}

TEST(Ternary3Format, ValidateReportsFirstInvalidByte) {
  std::mt19937 rng(3);
  const Ternary3 t = RandomTernary3(4, 1000, false, rng);  // 224 bytes a row
  std::vector<uint8_t> bad = t.packed;
  bad[700] = 250;  // row 3
  bad[300] = 243;  // row 1: first
  bad[301] = 255;
  EXPECT_EQ(ValidateTernary3(bad.data(), 4, 1000), 300);
}

TEST(Ternary3Format, ValidateFindsBadPadding) {
  std::mt19937 rng(4);
  const int pow3[5] = {1, 3, 9, 27, 81};
  for (int64_t cols : {1, 3, 31, 33, 100, 159, 161, 200, 1000}) {
    SCOPED_TRACE(cols);
    const int64_t rows = 3;
    const Ternary3 t = RandomTernary3(rows, cols, false, rng);
    const int64_t row_bytes = Ternary3RowBytes(cols);
    // Every padding weight of the last row, set to code 0 and then code 2, must be reported.
    for (int64_t c = cols; c < row_bytes / 32 * 160; ++c) {
      const int64_t offset = (rows - 1) * row_bytes + c / 160 * 32 + (c % 160) % 32;
      const int n = static_cast<int>((c % 160) / 32);
      for (int delta : {-1, 1}) {
        std::vector<uint8_t> bad = t.packed;
        bad[offset] = static_cast<uint8_t>(bad[offset] + delta * pow3[n]);  // code 1 -> 0 or 2
        ASSERT_EQ(ValidateTernary3(bad.data(), rows, cols), offset) << "c=" << c;
      }
    }
  }
}

// ================================ int2 / int4 format ================================

const int kBits[] = {2, 4};
const int64_t kGroups[] = {32, 64, 128};

// Byte and shift of column c within a row, as documented in lowbit.h.
void DocumentedPosition(int bits, int64_t c, int64_t* byte, int* shift) {
  if (bits == 4) {
    *byte = c / 32 * 16 + c % 16;
    *shift = c % 32 < 16 ? 0 : 4;
  } else {
    *byte = c / 64 * 16 + c % 16;
    *shift = 2 * static_cast<int>((c % 64) / 16);
  }
}

TEST(IntKFormat, Sizes) {
  EXPECT_EQ(IntKRowBytes(4, 1), 16);
  EXPECT_EQ(IntKRowBytes(4, 32), 16);
  EXPECT_EQ(IntKRowBytes(4, 33), 32);
  EXPECT_EQ(IntKRowBytes(4, 4096), 2048);
  EXPECT_EQ(IntKRowBytes(2, 64), 16);
  EXPECT_EQ(IntKRowBytes(2, 65), 32);
  EXPECT_EQ(IntKRowBytes(2, 4096), 1024);
  EXPECT_EQ(IntKGroupsPerRow(128, 4096), 32);
  EXPECT_EQ(IntKGroupsPerRow(32, 33), 2);
  EXPECT_TRUE(IntKLayoutSupported(4, 128));
  EXPECT_TRUE(IntKLayoutSupported(2, 32));
  EXPECT_FALSE(IntKLayoutSupported(3, 32));
  EXPECT_FALSE(IntKLayoutSupported(4, 16));
}

TEST(IntKFormat, PackUnpackRoundTrip) {
  std::mt19937 rng(11);
  std::vector<std::pair<int64_t, int64_t>> shapes = Shapes();
  std::uniform_int_distribution<int64_t> dim(1, 900);
  for (int k = 0; k < 20; ++k) shapes.emplace_back(dim(rng) % 9 + 1, dim(rng));
  for (int bits : kBits) {
    for (const auto& [rows, cols] : shapes) {
      SCOPED_TRACE(ShapeName(rows, cols) + " int" + std::to_string(bits));
      const IntK w = RandomIntK(rows, cols, bits, 32, rng);
      std::vector<uint8_t> back(rows * cols, 99);
      UnpackIntK(w.packed.data(), rows, cols, bits, back.data());
      EXPECT_EQ(back, w.q);
      EXPECT_EQ(ValidateIntK(w.packed.data(), rows, cols, bits), -1);
    }
  }
}

TEST(IntKFormat, PackFollowsDocumentedLayout) {
  for (int bits : kBits) {
    const int64_t cols = 200;  // the last unit partial for both
    const int64_t row_bytes = IntKRowBytes(bits, cols);
    for (int64_t c = 0; c < cols; ++c) {
      const uint8_t code = static_cast<uint8_t>((1 << bits) - 1 - c % 2);  // 3/2 or 15/14
      std::vector<uint8_t> q(cols, 0);
      q[c] = code;
      std::vector<uint8_t> packed(row_bytes, 0xAA);
      PackIntK(q.data(), 1, cols, bits, packed.data());
      int64_t byte;
      int shift;
      DocumentedPosition(bits, c, &byte, &shift);
      for (int64_t b = 0; b < row_bytes; ++b) {
        ASSERT_EQ(packed[b], b == byte ? code << shift : 0)
            << "int" << bits << " column " << c << " byte " << b;
      }
    }
  }
}

TEST(IntKFormat, PackClampsCodes) {
  const uint8_t q[3] = {200, 16, 3};
  for (int bits : kBits) {
    std::vector<uint8_t> packed(16);
    PackIntK(q, 1, 3, bits, packed.data());
    uint8_t back[3];
    UnpackIntK(packed.data(), 1, 3, bits, back);
    const uint8_t max = static_cast<uint8_t>((1 << bits) - 1);
    EXPECT_EQ(back[0], max);
    EXPECT_EQ(back[1], max);
    EXPECT_EQ(back[2], 3);
  }
}

TEST(IntKFormat, ValidateFindsNonzeroPadding) {
  std::mt19937 rng(12);
  for (int bits : kBits) {
    for (int64_t cols : {1, 3, 17, 31, 33, 63, 65, 100, 127, 200}) {
      SCOPED_TRACE("int" + std::to_string(bits) + " cols " + std::to_string(cols));
      const int64_t rows = 3;
      const IntK w = RandomIntK(rows, cols, bits, 32, rng);
      const int64_t row_bytes = IntKRowBytes(bits, cols);
      const int64_t unit = IntKUnitWeights(bits);
      for (int64_t c = cols; c < (cols + unit - 1) / unit * unit; ++c) {
        int64_t byte;
        int shift;
        DocumentedPosition(bits, c, &byte, &shift);
        std::vector<uint8_t> bad = w.packed;
        bad[(rows - 1) * row_bytes + byte] |= static_cast<uint8_t>(1 << shift);
        ASSERT_EQ(ValidateIntK(bad.data(), rows, cols, bits), (rows - 1) * row_bytes + byte)
            << "c=" << c;
      }
    }
  }
}

TEST(IntKFormat, ValidateReportsFirstInvalidByteAndRejectsUnknownBits) {
  std::mt19937 rng(13);
  const IntK w = RandomIntK(4, 40, 4, 32, rng);  // 32 bytes a row, columns 40..63 padding
  std::vector<uint8_t> bad = w.packed;
  bad[3 * 32 + 31] = 0xF0;   // row 3
  bad[1 * 32 + 20] ^= 0x0F;  // row 1, column 36: a real weight, any code is valid
  bad[1 * 32 + 28] |= 0x01;  // row 1, column 44: padding, the first invalid byte
  EXPECT_EQ(ValidateIntK(bad.data(), 4, 40, 4), 60);
  // A whole number of units has no padding: every byte is valid.
  std::vector<uint8_t> any(64, 0xFF);
  EXPECT_EQ(ValidateIntK(any.data(), 2, 64, 4), -1);
  EXPECT_EQ(ValidateIntK(any.data(), 4, 64, 2), -1);
  EXPECT_EQ(ValidateIntK(any.data(), 1, 64, 3), 0);
}

IntK Quantized(const std::vector<float>& values, int64_t rows, int64_t cols, int bits,
               int64_t group) {
  IntK w;
  w.rows = rows;
  w.cols = cols;
  w.bits = bits;
  w.group = group;
  w.packed.assign(rows * IntKRowBytes(bits, cols), 0);
  w.scales.assign(rows * w.groups(), 0);
  w.zeros.assign(rows * w.groups(), 0);
  QuantizeIntK(values.data(), rows, cols, bits, group, w.packed.data(), w.scales.data(),
               w.zeros.data());
  w.q.resize(rows * cols);
  UnpackIntK(w.packed.data(), rows, cols, bits, w.q.data());
  return w;
}

std::vector<float> Dequantized(const IntK& w) {
  std::vector<float> out(w.rows * w.cols);
  DequantizeIntK(w.view(), out.data());
  return out;
}

TEST(IntKQuantize, ConstantRowsAreExact) {
  const float constants[] = {0.0f, 1.0f, -1.0f, 0.1f, -3.75e-3f, 1e-30f, -6.5e4f, 3.0e38f};
  for (int bits : kBits) {
    for (int64_t group : kGroups) {
      for (int64_t cols : {int64_t{1}, int64_t{100}, int64_t{300}}) {
        std::vector<float> values;
        for (float v : constants) values.insert(values.end(), cols, v);
        const int64_t rows = std::size(constants);
        const IntK w = Quantized(values, rows, cols, bits, group);
        EXPECT_EQ(ValidateIntK(w.packed.data(), rows, cols, bits), -1);
        EXPECT_EQ(Dequantized(w), values) << "int" << bits << " g" << group << " cols " << cols;
      }
    }
  }
}

TEST(IntKQuantize, RepresentableGridIsExact) {
  // Every group holds scale * (k - zero) for all codes k (so min and max are the grid's ends)
  // with a power-of-two scale and an integer zero point: quantizing reproduces it exactly.
  std::mt19937 rng(14);
  for (int bits : kBits) {
    for (int64_t group : kGroups) {
      const int levels = 1 << bits;
      const int64_t rows = 3, cols = 2 * group;
      std::vector<float> values(rows * cols);
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t g = 0; g < 2; ++g) {
          const float scale = std::ldexp(1.0f, static_cast<int>(rng() % 9) - 6);
          const int zero = static_cast<int>(rng() % levels);
          std::vector<int> codes(group);
          for (int64_t k = 0; k < group; ++k) codes[k] = static_cast<int>(k % levels);
          std::shuffle(codes.begin(), codes.end(), rng);
          for (int64_t k = 0; k < group; ++k) {
            values[r * cols + g * group + k] = scale * static_cast<float>(codes[k] - zero);
          }
        }
      }
      EXPECT_EQ(Dequantized(Quantized(values, rows, cols, bits, group)), values)
          << "int" << bits << " g" << group;
    }
  }
}

TEST(IntKQuantize, ErrorIsAtMostHalfAStep) {
  std::mt19937 rng(15);
  for (int bits : kBits) {
    for (int64_t group : kGroups) {
      for (const auto& [rows, cols] : Shapes()) {
        SCOPED_TRACE(ShapeName(rows, cols) + " int" + std::to_string(bits) + " g" +
                     std::to_string(group));
        std::vector<float> values = RandomFloats(rows * cols, rng);
        for (int64_t k = 0; k < rows * cols; k += 7) values[k] += 3.0f;  // asymmetric groups
        const IntK w = Quantized(values, rows, cols, bits, group);
        const std::vector<float> back = Dequantized(w);
        for (int64_t r = 0; r < rows; ++r) {
          for (int64_t c = 0; c < cols; ++c) {
            const float scale = w.scales[r * w.groups() + c / group];
            ASSERT_LE(std::fabs(back[r * cols + c] - values[r * cols + c]), 0.5f * scale * 1.0001f)
                << "r=" << r << " c=" << c;
            ASSERT_EQ(back[r * cols + c], w.value(r, c));  // Dequantize follows the definition
          }
        }
      }
    }
  }
}

// ================================ int8 activations ================================

// The documented quantization, written independently of the kernels.
void NaiveQuantize(const std::vector<float>& x, int64_t m, int64_t cols, std::vector<int8_t>* q,
                   std::vector<float>* scales) {
  q->assign(m * cols, 0);
  scales->assign(m, 0);
  for (int64_t i = 0; i < m; ++i) {
    float absmax = 0;
    bool finite = true;
    for (int64_t c = 0; c < cols; ++c) {
      finite = finite && std::isfinite(x[i * cols + c]);
      absmax = std::max(absmax, std::fabs(x[i * cols + c]));
    }
    if (!finite) {
      (*scales)[i] = std::numeric_limits<float>::quiet_NaN();
      continue;
    }
    if (absmax == 0) continue;
    (*scales)[i] = absmax / 127.0f;
    for (int64_t c = 0; c < cols; ++c) {
      const float v = std::nearbyint(x[i * cols + c] * (127.0f / absmax));
      (*q)[i * cols + c] = static_cast<int8_t>(std::clamp(v, -127.0f, 127.0f));
    }
  }
}

TEST(Int8Activations, QuantizeMatchesDefinitionOnEveryIsa) {
  std::mt19937 rng(21);
  for (Isa isa : kAllIsas) {
    if (!IsaSupported(isa)) continue;
    for (int64_t cols : {1, 5, 8, 15, 16, 17, 31, 32, 33, 100, 1000, 4097}) {
      SCOPED_TRACE(std::string(IsaName(isa)) + " cols " + std::to_string(cols));
      const int64_t m = 6;
      std::vector<float> x = RandomFloats(m * cols, rng);
      std::fill(x.begin() + 1 * cols, x.begin() + 2 * cols, 0.0f);  // row 1: all zero
      x[2 * cols + cols / 2] = std::numeric_limits<float>::quiet_NaN();
      x[3 * cols + cols - 1] = -std::numeric_limits<float>::infinity();
      // Row 4: ties. absmax 127 makes the factor exactly 1, so k + 0.5 must round to even.
      for (int64_t c = 0; c < cols; ++c)
        x[4 * cols + c] = static_cast<float>(c % 254) * 0.5f - 63.5f;
      x[4 * cols] = 127.0f;
      std::vector<int8_t> want_q, got_q(m * cols, 55);
      std::vector<float> want_s, got_s(m, -1);
      NaiveQuantize(x, m, cols, &want_q, &want_s);
      QuantizeActivationsInt8(x.data(), m, cols, got_q.data(), got_s.data(), isa);
      EXPECT_EQ(got_q, want_q);
      for (int64_t i = 0; i < m; ++i) {
        if (std::isnan(want_s[i])) {
          EXPECT_TRUE(std::isnan(got_s[i])) << "row " << i;
        } else {
          EXPECT_EQ(got_s[i], want_s[i]) << "row " << i;
        }
      }
    }
  }
}

TEST(Int8Activations, HalfwayValuesRoundToEven) {
  // x = 127 * (k + 0.5) / 127 with absmax 127: the factor is exactly 1.
  const float x[4] = {127.0f, 2.5f, -3.5f, 0.5f};
  int8_t q[4];
  float scale;
  for (Isa isa : kAllIsas) {
    if (!IsaSupported(isa)) continue;
    QuantizeActivationsInt8(x, 1, 4, q, &scale, isa);
    EXPECT_EQ(scale, 1.0f);
    EXPECT_EQ(std::vector<int>(q, q + 4), (std::vector<int>{127, 2, -4, 0})) << IsaName(isa);
  }
}

// The documented result: (scale(r) * xscale) * float(exact integer sum).
std::vector<float> NaiveInt8(const Ternary2& w, const std::vector<int8_t>& xq,
                             const std::vector<float>& xscales, int64_t m) {
  std::vector<float> y(m * w.rows);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t r = 0; r < w.rows; ++r) {
      int64_t acc = 0;
      for (int64_t c = 0; c < w.cols; ++c) acc += w.trits[r * w.cols + c] * xq[i * w.cols + c];
      y[i * w.rows + r] = (w.scale(r) * xscales[i]) * static_cast<float>(acc);
    }
  }
  return y;
}

// Shapes for the int8 path: odd and even numbers of 128-column blocks (the VNNI kernel pairs
// blocks), partial blocks, row counts around the 4-row group.
const std::vector<std::pair<int64_t, int64_t>>& Int8Shapes() {
  static const auto* shapes = new std::vector<std::pair<int64_t, int64_t>>{
      {1, 1},   {1, 128},  {3, 127},  {5, 129},   {7, 256},  {2, 1000}, {9, 385},
      {4, 384}, {6, 2050}, {65, 511}, {1, 14336}, {13, 640}, {3, 4096}};
  return *shapes;
}

class Int8Test : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    if (!IsaSupported(GetParam())) GTEST_SKIP() << "this CPU lacks " << IsaName(GetParam());
  }
};

TEST_P(Int8Test, GemvAndGemmEqualExactIntegerProduct) {
  std::mt19937 rng(22);
  for (bool per_row : {false, true}) {
    for (const auto& [rows, cols] : Int8Shapes()) {
      for (int64_t m : {1, 2, 5}) {
        SCOPED_TRACE(ShapeName(rows, cols, m));
        const Ternary2 w = RandomTernary2(rows, cols, per_row, rng);
        const std::vector<int8_t> xq = RandomInt8(m * cols, rng);
        std::vector<float> xscales(m);
        for (float& s : xscales) s = std::uniform_real_distribution<float>(1e-3f, 1.0f)(rng);
        const std::vector<float> want = NaiveInt8(w, xq, xscales, m);
        std::vector<float> got(m * rows, -1);
        TernaryGemmInt8(w.view(), xq.data(), xscales.data(), m, got.data(), GetParam(), nullptr);
        ExpectSameBits(got, want);
        if (m == 1) {
          std::vector<float> gv(rows, -1);
          TernaryGemvInt8(w.view(), xq.data(), xscales[0], gv.data(), GetParam(), nullptr);
          ExpectSameBits(gv, want);
        }
      }
    }
  }
}

TEST_P(Int8Test, UnvalidatedDataAgreesWithScalar) {
  // Random bytes hold the invalid code 3 (trit 0 everywhere) and nonzero padding codes (which
  // meet zero activations): every variant still equals the scalar reference.
  std::mt19937 rng(23);
  for (const auto& [rows, cols] : Int8Shapes()) {
    SCOPED_TRACE(ShapeName(rows, cols));
    std::vector<uint8_t> bytes(rows * TernaryRowBytes(cols));
    for (uint8_t& b : bytes) b = static_cast<uint8_t>(rng());
    const float scale = 0.5f, xscale = 0.25f;
    const TernaryView w{rows, cols, bytes.data(), &scale, 1};
    const std::vector<int8_t> xq = RandomInt8(cols, rng);
    std::vector<float> want(rows), got(rows);
    TernaryGemvInt8(w, xq.data(), xscale, want.data(), Isa::kScalar, nullptr);
    TernaryGemvInt8(w, xq.data(), xscale, got.data(), GetParam(), nullptr);
    ExpectSameBits(got, want);
  }
}

TEST_P(Int8Test, QuantizedPathApproximatesFloatPath) {
  // W1.58A8 end to end: rounding each activation moves it by at most xscale / 2, so the result
  // differs from the fp32 ternary GEMV by at most scale * xscale / 2 * (number of nonzero trits).
  std::mt19937 rng(24);
  for (const auto& [rows, cols] : Int8Shapes()) {
    SCOPED_TRACE(ShapeName(rows, cols));
    const Ternary2 w = RandomTernary2(rows, cols, true, rng);
    const std::vector<float> x = RandomFloats(cols, rng);
    std::vector<int8_t> xq(cols);
    float xscale;
    QuantizeActivationsInt8(x.data(), 1, cols, xq.data(), &xscale, GetParam());
    std::vector<float> y8(rows), y32(rows);
    TernaryGemvInt8(w.view(), xq.data(), xscale, y8.data(), GetParam(), nullptr);
    TernaryGemv(w.view(), x.data(), y32.data(), Isa::kScalar, nullptr);
    for (int64_t r = 0; r < rows; ++r) {
      int64_t nonzero = 0;
      for (int64_t c = 0; c < cols; ++c) nonzero += w.trits[r * cols + c] != 0;
      const double bound =
          w.scale(r) * (xscale * 0.5 * nonzero * 1.001 + 1e-5 * AbsSum(x.data(), cols));
      ASSERT_NEAR(y8[r], y32[r], bound) << "row " << r;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllIsas, Int8Test, ::testing::ValuesIn(kAllIsas),
                         [](const ::testing::TestParamInfo<Isa>& info) {
                           return std::string(IsaName(info.param));
                         });

TEST(Int8Activations, VnniImpliesAvx512) {
  if (CpuHasAvx512Vnni()) {
    EXPECT_TRUE(IsaSupported(Isa::kAvx512));
  }
}

TEST(Int8Activations, BadViewsGiveNaN) {
  const uint8_t data[32] = {};
  const int8_t xq[4] = {1, 2, 3, 4};
  float y[2] = {0, 0};
  // Null scales.
  TernaryGemvInt8(TernaryView{2, 4, data, nullptr, 1}, xq, 1.0f, y, BestIsa(), nullptr);
  EXPECT_TRUE(std::isnan(y[0]) && std::isnan(y[1]));
  // More columns than the int32 sums allow: rejected before anything is read.
  const float scale = 1.0f;
  y[0] = y[1] = 0;
  TernaryGemvInt8(TernaryView{2, kInt8MaxCols + 1, data, &scale, 1}, xq, 1.0f, y, BestIsa(),
                  nullptr);
  EXPECT_TRUE(std::isnan(y[0]) && std::isnan(y[1]));
  // No columns: empty sums.
  y[0] = y[1] = 5;
  TernaryGemvInt8(TernaryView{2, 0, data, &scale, 1}, xq, 1.0f, y, BestIsa(), nullptr);
  EXPECT_EQ(y[0], 0.0f);
  EXPECT_EQ(y[1], 0.0f);
}

// ================================ float kernels ================================

// Naive double products and per-output error bounds (sum |w * x| over the row).
std::vector<double> NaiveTernary3(const Ternary3& w, const std::vector<float>& x, int64_t m,
                                  std::vector<double>* bound) {
  std::vector<double> y(m * w.rows);
  bound->assign(m * w.rows, 0);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t r = 0; r < w.rows; ++r) {
      double sum = 0, abs = 0;
      for (int64_t c = 0; c < w.cols; ++c) {
        sum += w.trits[r * w.cols + c] * double{x[i * w.cols + c]};
        abs += std::fabs(x[i * w.cols + c]);
      }
      y[i * w.rows + r] = w.scale(r) * sum;
      (*bound)[i * w.rows + r] = w.scale(r) * abs;
    }
  }
  return y;
}

std::vector<double> NaiveIntK(const IntK& w, const std::vector<float>& x, int64_t m,
                              std::vector<double>* bound) {
  std::vector<double> y(m * w.rows);
  bound->assign(m * w.rows, 0);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t r = 0; r < w.rows; ++r) {
      double sum = 0, abs = 0;
      for (int64_t c = 0; c < w.cols; ++c) {
        const double v = w.value(r, c);
        sum += v * x[i * w.cols + c];
        abs += std::fabs(v * x[i * w.cols + c]);
      }
      y[i * w.rows + r] = sum;
      (*bound)[i * w.rows + r] = abs;
    }
  }
  return y;
}

// Recursive float summation of n terms is within about n * eps * sum|terms| of the exact sum.
double ScalarRel(int64_t cols) { return (cols + 2) * 1.2e-7; }
// SIMD against scalar: 1e-5 of sum|terms|, far above the reordering error (a few ulps times
// sqrt(cols)) and below the typical effect of one wrong weight, about sum|terms| / cols, which
// is 7e-5 of it even at 14336 columns.
constexpr double kSimdRel = 1e-5;

TEST(Ternary3Scalar, GemvAndGemmMatchNaive) {
  std::mt19937 rng(31);
  for (bool per_row : {false, true}) {
    for (const auto& [rows, cols] : Shapes()) {
      for (int64_t m : {1, 3}) {
        SCOPED_TRACE(ShapeName(rows, cols, m));
        const Ternary3 t = RandomTernary3(rows, cols, per_row, rng);
        const std::vector<float> x = RandomFloats(m * cols, rng);
        std::vector<double> bound;
        const std::vector<double> want = NaiveTernary3(t, x, m, &bound);
        std::vector<float> y(m * rows);
        Ternary3Gemm(t.view(), x.data(), m, y.data(), Isa::kScalar, nullptr);
        ExpectClose(y, want, bound, ScalarRel(cols));
      }
    }
  }
}

TEST(IntKScalar, GemvAndGemmMatchNaive) {
  std::mt19937 rng(32);
  for (int bits : kBits) {
    for (int64_t group : kGroups) {
      for (const auto& [rows, cols] : Shapes()) {
        for (int64_t m : {1, 3}) {
          SCOPED_TRACE(ShapeName(rows, cols, m) + " int" + std::to_string(bits) + " g" +
                       std::to_string(group));
          const IntK w = RandomIntK(rows, cols, bits, group, rng);
          const std::vector<float> x = RandomFloats(m * cols, rng);
          std::vector<double> bound;
          const std::vector<double> want = NaiveIntK(w, x, m, &bound);
          std::vector<float> y(m * rows);
          IntKGemm(w.view(), x.data(), m, y.data(), Isa::kScalar, nullptr);
          ExpectClose(y, want, bound, ScalarRel(cols));
        }
      }
    }
  }
}

class SimdTest : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    if (!IsaSupported(GetParam())) {
      GTEST_SKIP() << "this CPU lacks " << IsaName(GetParam()) << "; its kernels are not tested";
    }
  }
};

TEST_P(SimdTest, Ternary3MatchesScalar) {
  std::mt19937 rng(33);
  for (bool per_row : {false, true}) {
    for (const auto& [rows, cols] : Shapes()) {
      for (int64_t m : {1, 2, 7}) {
        SCOPED_TRACE(ShapeName(rows, cols, m));
        const Ternary3 t = RandomTernary3(rows, cols, per_row, rng);
        const std::vector<float> x = RandomFloats(m * cols, rng);
        std::vector<double> bound;
        NaiveTernary3(t, x, m, &bound);
        std::vector<float> want(m * rows), got(m * rows);
        Ternary3Gemm(t.view(), x.data(), m, want.data(), Isa::kScalar, nullptr);
        Ternary3Gemm(t.view(), x.data(), m, got.data(), GetParam(), nullptr);
        ExpectClose(got, std::vector<double>(want.begin(), want.end()), bound, kSimdRel);
      }
    }
  }
}

TEST_P(SimdTest, Ternary3UnvalidatedBytesAgreeWithScalar) {
  // Bytes 0..255, invalid ones and nonzero padding included, decode the same way everywhere.
  std::mt19937 rng(34);
  for (const auto& [rows, cols] : Shapes()) {
    for (int64_t m : {1, 3}) {
      SCOPED_TRACE(ShapeName(rows, cols, m));
      Ternary3 t;
      t.rows = rows;
      t.cols = cols;
      t.packed.resize(rows * Ternary3RowBytes(cols));
      for (uint8_t& b : t.packed) b = static_cast<uint8_t>(rng() % 16 + 240);  // mostly invalid
      t.scales = {0.5f};
      const std::vector<float> x = RandomFloats(m * cols, rng);
      std::vector<double> bound(m * rows);
      for (int64_t k = 0; k < m * rows; ++k) bound[k] = AbsSum(x.data() + k / rows * cols, cols);
      std::vector<float> want(m * rows), got(m * rows);
      Ternary3Gemm(t.view(), x.data(), m, want.data(), Isa::kScalar, nullptr);
      Ternary3Gemm(t.view(), x.data(), m, got.data(), GetParam(), nullptr);
      ExpectClose(got, std::vector<double>(want.begin(), want.end()), bound, kSimdRel);
    }
  }
}

TEST_P(SimdTest, IntKMatchesScalar) {
  std::mt19937 rng(35);
  for (int bits : kBits) {
    for (int64_t group : kGroups) {
      for (const auto& [rows, cols] : Shapes()) {
        for (int64_t m : {1, 2, 7}) {
          SCOPED_TRACE(ShapeName(rows, cols, m) + " int" + std::to_string(bits) + " g" +
                       std::to_string(group));
          IntK w = RandomIntK(rows, cols, bits, group, rng);
          // Garbage in the padding: no kernel may let it reach a result.
          const int64_t row_bytes = IntKRowBytes(bits, cols);
          if (cols % IntKUnitWeights(bits) != 0) {
            for (int64_t r = 0; r < rows; ++r) w.packed[(r + 1) * row_bytes - 1] |= 0xC0;
          }
          const std::vector<float> x = RandomFloats(m * cols, rng);
          std::vector<double> bound;
          NaiveIntK(w, x, m, &bound);
          std::vector<float> want(m * rows), got(m * rows);
          IntKGemm(w.view(), x.data(), m, want.data(), Isa::kScalar, nullptr);
          IntKGemm(w.view(), x.data(), m, got.data(), GetParam(), nullptr);
          ExpectClose(got, std::vector<double>(want.begin(), want.end()), bound, kSimdRel);
        }
      }
    }
  }
}

TEST_P(SimdTest, IntKConstantRowsGiveExactProducts) {
  // A constant row c times x = e_k (one-hot) is exactly c on every variant: the dequantized
  // value enters the sum unchanged.
  for (int bits : kBits) {
    for (int64_t group : kGroups) {
      const int64_t rows = 5, cols = 300;
      const float constants[rows] = {0.75f, -2.0f, 1e-3f, 0.0f, 123.25f};
      std::vector<float> values;
      for (float v : constants) values.insert(values.end(), cols, v);
      const IntK w = Quantized(values, rows, cols, bits, group);
      for (int64_t k : {int64_t{0}, int64_t{65}, cols - 1}) {
        std::vector<float> x(cols, 0.0f), y(rows);
        x[k] = 1.0f;
        IntKGemv(w.view(), x.data(), y.data(), GetParam(), nullptr);
        EXPECT_EQ(y, std::vector<float>(constants, constants + rows))
            << "int" << bits << " g" << group << " column " << k;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Isas, SimdTest, ::testing::ValuesIn(kSimdIsas),
                         [](const ::testing::TestParamInfo<Isa>& info) {
                           return std::string(IsaName(info.param));
                         });

TEST(LowbitViews, BadViewsGiveNaNAndEmptyRowsGiveZero) {
  const uint8_t data[64] = {};
  const float one = 1.0f;
  const float x[4] = {1, 2, 3, 4};
  for (Isa isa : kAllIsas) {
    if (!IsaSupported(isa)) continue;
    float y[4] = {0, 0, 0, 0};
    Ternary3Gemm(Ternary3View{2, 4, data, nullptr, 1}, x, 2, y, isa, nullptr);
    for (float v : y) EXPECT_TRUE(std::isnan(v)) << IsaName(isa);
    Ternary3Gemv(Ternary3View{2, 4, data, &one, 3}, x, y, isa, nullptr);  // n_scales 3 of 2 rows
    EXPECT_TRUE(std::isnan(y[0]) && std::isnan(y[1]));
    IntKView bad;
    bad.rows = 2;
    bad.cols = 4;
    bad.bits = 3;
    bad.group = 32;
    bad.data = data;
    bad.scales = bad.zeros = &one;
    std::fill(y, y + 4, 0.0f);
    IntKGemv(bad, x, y, isa, nullptr);
    EXPECT_TRUE(std::isnan(y[0]) && std::isnan(y[1]));
    bad.bits = 4;
    bad.zeros = nullptr;
    IntKGemm(bad, x, 2, y, isa, nullptr);
    for (float v : y) EXPECT_TRUE(std::isnan(v));
    std::fill(y, y + 4, 9.0f);
    Ternary3Gemv(Ternary3View{2, 0, data, &one, 1}, x, y, isa, nullptr);
    EXPECT_EQ(y[0], 0.0f);
    EXPECT_EQ(y[1], 0.0f);
  }
}

// ================================ threads ================================

// Every kernel, on every instruction set, gives the same bits with 1, 2, 3 or 5 threads as with
// no pool. The shapes are large enough to be split into several chunks.
TEST(LowbitThreads, ResultsDoNotDependOnThreadCount) {
  std::mt19937 rng(41);
  const int64_t rows = 1100, cols = 1000, m = 3;
  const Ternary3 t3 = RandomTernary3(rows, cols, true, rng);
  const IntK i4 = RandomIntK(rows, cols, 4, 64, rng);
  const IntK i2 = RandomIntK(rows, cols, 2, 32, rng);
  const Ternary2 t2 = RandomTernary2(rows, cols, true, rng);
  const std::vector<float> x = RandomFloats(m * cols, rng);
  const std::vector<int8_t> xq = RandomInt8(m * cols, rng);
  const std::vector<float> xscales = {0.5f, 0.25f, 0.125f};
  // Runs every kernel with `pool` and concatenates the outputs.
  auto run_all = [&](Isa isa, ThreadPool* pool) {
    std::vector<float> all;
    std::vector<float> y(m * rows);
    Ternary3Gemv(t3.view(), x.data(), y.data(), isa, pool);
    all.insert(all.end(), y.begin(), y.begin() + rows);
    Ternary3Gemm(t3.view(), x.data(), m, y.data(), isa, pool);
    all.insert(all.end(), y.begin(), y.end());
    for (const IntK* w : {&i4, &i2}) {
      IntKGemv(w->view(), x.data(), y.data(), isa, pool);
      all.insert(all.end(), y.begin(), y.begin() + rows);
      IntKGemm(w->view(), x.data(), m, y.data(), isa, pool);
      all.insert(all.end(), y.begin(), y.end());
    }
    TernaryGemmInt8(t2.view(), xq.data(), xscales.data(), m, y.data(), isa, pool);
    all.insert(all.end(), y.begin(), y.end());
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
