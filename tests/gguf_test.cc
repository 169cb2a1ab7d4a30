// Tests of the GGUF writer/reader, the ggml block codecs (fp16, TQ2_0, TQ1_0, Q4_0, Q4_1, Q8_0)
// and the qat-packed -> GGUF conversion of every packed format, including hostile GGUF inputs.
#include <gtest/gtest.h>
#include <immintrin.h>
#include <stdlib.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kernels/gguf.h"
#include "kernels/gguf_export.h"
#include "kernels/lowbit.h"
#include "kernels/safetensors.h"
#include "kernels/ternary.h"
#include "test_dir.h"

namespace qat::kernels {
namespace {

#define EXPECT_CONTAINS(text, part)                          \
  EXPECT_NE(std::string(text).find(part), std::string::npos) \
      << "\"" << std::string(text) << "\" does not contain \"" << (part) << "\""

float Bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

uint32_t FBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// ---------------------------------------------------------------------------------------------
// fp16

TEST(Fp16Test, KnownValues) {
  EXPECT_EQ(FloatToHalf(0.0f), 0x0000);
  EXPECT_EQ(FloatToHalf(-0.0f), 0x8000);
  EXPECT_EQ(FloatToHalf(1.0f), 0x3c00);
  EXPECT_EQ(FloatToHalf(-2.0f), 0xc000);
  EXPECT_EQ(FloatToHalf(0.5f), 0x3800);
  EXPECT_EQ(FloatToHalf(65504.0f), 0x7bff);
  EXPECT_EQ(FloatToHalf(65519.99f), 0x7bff);
  EXPECT_EQ(FloatToHalf(65520.0f), 0x7c00);  // tie between 65504 (odd) and 65536: up, to inf
  EXPECT_EQ(FloatToHalf(std::nextafter(65520.0f, 0.0f)), 0x7bff);
  EXPECT_EQ(FloatToHalf(1e9f), 0x7c00);
  EXPECT_EQ(FloatToHalf(-std::numeric_limits<float>::infinity()), 0xfc00);
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -14)), 0x0400);  // smallest normal
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -24)), 0x0001);  // smallest subnormal
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -25)), 0x0000);  // tie: to even (zero)
  EXPECT_EQ(FloatToHalf(std::nextafter(std::ldexp(1.0f, -25), 1.0f)), 0x0001);
  EXPECT_EQ(FloatToHalf(std::ldexp(3.0f, -25)), 0x0002);  // 1.5 ulp: tie to even (2)
  EXPECT_EQ(FloatToHalf(1e-10f), 0x0000);
  const uint16_t nan = FloatToHalf(std::numeric_limits<float>::quiet_NaN());
  EXPECT_EQ(nan & 0x7c00, 0x7c00);
  EXPECT_NE(nan & 0x03ff, 0);
  EXPECT_TRUE(std::isnan(HalfToFloat(0x7e00)));
  EXPECT_EQ(HalfToFloat(0x3c00), 1.0f);
  EXPECT_EQ(HalfToFloat(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(HalfToFloat(0x83ff), -std::ldexp(1023.0f, -24));
  EXPECT_EQ(HalfToFloat(0x7bff), 65504.0f);
  EXPECT_EQ(HalfToFloat(0x7c00), std::numeric_limits<float>::infinity());
}

// Every half survives half -> float -> half, and every midpoint between two neighbouring halves
// rounds to the even one while the floats just beside it round to the nearer one.
TEST(Fp16Test, ExhaustiveRoundTripAndTiesToEven) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = HalfToFloat(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    ASSERT_EQ(FloatToHalf(f), h) << "half 0x" << std::hex << h;
  }
  for (uint32_t sign : {0u, 0x8000u}) {
    for (uint32_t h = 0; h < 0x7bff; ++h) {  // each finite half and the next one up
      const uint16_t lo = static_cast<uint16_t>(sign | h),
                     hi = static_cast<uint16_t>(sign | (h + 1));
      const double a = HalfToFloat(lo), b = HalfToFloat(hi);
      const float mid = static_cast<float>((a + b) / 2);  // exact: 12 significant bits at most
      ASSERT_EQ(static_cast<double>(mid), (a + b) / 2);
      const uint16_t even = (h & 1) == 0 ? lo : hi;
      ASSERT_EQ(FloatToHalf(mid), even) << "midpoint above 0x" << std::hex << lo;
      ASSERT_EQ(FloatToHalf(std::nextafter(mid, static_cast<float>(a))), lo);
      ASSERT_EQ(FloatToHalf(std::nextafter(mid, static_cast<float>(b) * 2)), hi);
    }
  }
}

__attribute__((target("f16c"))) uint16_t HardwareHalf(float f) {
  return static_cast<uint16_t>(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

// The F16C instruction rounds to nearest even too: compare on random bit patterns (NaNs included).
TEST(Fp16Test, MatchesF16cOnRandomFloats) {
  if (!__builtin_cpu_supports("f16c")) GTEST_SKIP() << "no F16C on this CPU";
  std::mt19937 rng(7);
  for (int i = 0; i < 2000000; ++i) {
    const float f = Bits(static_cast<uint32_t>(rng()));
    ASSERT_EQ(FloatToHalf(f), HardwareHalf(f)) << "float bits 0x" << std::hex << FBits(f);
  }
}

// ---------------------------------------------------------------------------------------------
// Blocks

std::vector<int8_t> RandomTrits(int64_t n, std::mt19937& rng) {
  std::uniform_int_distribution<int> dist(-1, 1);
  std::vector<int8_t> t(static_cast<size_t>(n));
  for (auto& v : t) v = static_cast<int8_t>(dist(rng));
  return t;
}

TEST(Tq2Test, HandMadeBlockByteByByte) {
  std::vector<int8_t> trits(256, 0);
  trits[0] = 1;    // half 0, byte 0, bits [1:0]
  trits[32] = -1;  // half 0, byte 0, bits [3:2]
  trits[255] = 1;  // half 1, byte 31 (= 128 + 31 + 32*3), bits [7:6]
  uint8_t block[kTq2BlockBytes];
  EncodeTq2Block(trits.data(), FloatToHalf(0.5f), block);
  for (int i = 0; i < 64; ++i) {
    // Code 1 (trit 0) in all four fields is 0b01010101.
    const uint8_t expected = i == 0 ? 0x52 : (i == 63 ? 0x95 : 0x55);
    EXPECT_EQ(block[i], expected) << "byte " << i;
  }
  EXPECT_EQ(block[64], 0x00);  // fp16 0.5 = 0x3800, little-endian
  EXPECT_EQ(block[65], 0x38);
}

TEST(Tq1Test, HandMadeBlockByteByByte) {
  std::vector<int8_t> trits(256, 0);
  trits[0] = 1;     // qs[0], digit 0 (most significant)
  trits[128] = -1;  // qs[0], digit 4 (= 0 + 32*4)
  trits[192] = 1;   // qs[32], digit 2 (= 160 + 0 + 16*2)
  trits[255] = -1;  // qh[3], digit 3 (= 240 + 3 + 4*3)
  uint8_t block[kTq1BlockBytes];
  EncodeTq1Block(trits.data(), FloatToHalf(0.25f), block);
  // All-zero trits: codes 1,1,1,1,1 -> v = 121 -> ceil(121*256/243) = 128; in qh the fifth digit
  // is 0: v = 120 -> 127.
  for (int i = 0; i < 48; ++i) {
    // qs[0]: codes 2,1,1,1,0 -> v = 201 -> 212; qs[32]: codes 1,1,2,1,1 -> v = 130 -> 137.
    const uint8_t expected = i == 0 ? 0xd4 : (i == 32 ? 0x89 : 0x80);
    EXPECT_EQ(block[i], expected) << "qs byte " << i;
  }
  for (int j = 0; j < 4; ++j) {
    // qh[3]: codes 1,1,1,0,(0) -> v = 117 -> 124.
    EXPECT_EQ(block[48 + j], j == 3 ? 0x7c : 0x7f) << "qh byte " << j;
  }
  EXPECT_EQ(block[52], 0x00);  // fp16 0.25 = 0x3400
  EXPECT_EQ(block[53], 0x34);
}

// Decoding every possible TQ1_0 byte that the encoder can produce gives back its five digits.
TEST(Tq1Test, EveryBase3ByteDecodes) {
  std::vector<int8_t> trits(256, 0), back(256);
  for (int v = 0; v < 243; ++v) {
    for (int n = 0; n < 5; ++n) {
      int digit = v;
      for (int k = 0; k < 4 - n; ++k) digit /= 3;
      trits[32 * n] = static_cast<int8_t>(digit % 3 - 1);  // the digits of qs[0]
    }
    uint8_t block[kTq1BlockBytes];
    EncodeTq1Block(trits.data(), 0, block);
    EXPECT_EQ(block[0], (v * 256 + 242) / 243);
    uint16_t d;
    DecodeTq1Block(block, back.data(), &d);
    ASSERT_EQ(back, trits) << "v = " << v;
  }
}

// ggml's dequantizers walk the output sequentially (an output pointer advanced once per
// element) over nested loops, rather than computing indices: re-derived here in that form as an
// independent check of our index formulas.
std::vector<float> GgmlOrderTq2(const uint8_t* block) {
  std::vector<float> y;
  const float d = HalfToFloat(static_cast<uint16_t>(block[64] | (block[65] << 8)));
  for (int j = 0; j < 64; j += 32) {  // 32-byte halves
    for (int l = 0; l < 4; ++l) {     // 2-bit field
      for (int m = 0; m < 32; ++m) y.push_back((((block[j + m] >> (2 * l)) & 3) - 1) * d);
    }
  }
  return y;
}

std::vector<float> GgmlOrderTq1(const uint8_t* block) {
  static const int kPow3[5] = {1, 3, 9, 27, 81};
  auto digit = [](uint8_t byte, int n) {
    return ((static_cast<uint8_t>(byte * kPow3[n])) * 3) >> 8;
  };
  std::vector<float> y;
  const float d = HalfToFloat(static_cast<uint16_t>(block[52] | (block[53] << 8)));
  for (int n = 0; n < 5; ++n) {
    for (int m = 0; m < 32; ++m) y.push_back((digit(block[m], n) - 1) * d);
  }
  for (int n = 0; n < 5; ++n) {
    for (int m = 0; m < 16; ++m) y.push_back((digit(block[32 + m], n) - 1) * d);
  }
  for (int n = 0; n < 4; ++n) {
    for (int j = 0; j < 4; ++j) y.push_back((digit(block[48 + j], n) - 1) * d);
  }
  return y;
}

TEST(TernaryBlockTest, MatchesGgmlDequantizationOrder) {
  std::mt19937 rng(12);
  for (int iter = 0; iter < 100; ++iter) {
    const std::vector<int8_t> trits = RandomTrits(256, rng);
    const float d = HalfToFloat(FloatToHalf(0.0625f + iter * 0.001f));
    uint8_t tq1[kTq1BlockBytes], tq2[kTq2BlockBytes];
    EncodeTq1Block(trits.data(), FloatToHalf(d), tq1);
    EncodeTq2Block(trits.data(), FloatToHalf(d), tq2);
    const std::vector<float> y1 = GgmlOrderTq1(tq1), y2 = GgmlOrderTq2(tq2);
    ASSERT_EQ(y1.size(), 256u);
    ASSERT_EQ(y2.size(), 256u);
    for (int i = 0; i < 256; ++i) {
      ASSERT_EQ(y1[i], trits[i] * d) << "TQ1_0 element " << i;
      ASSERT_EQ(y2[i], trits[i] * d) << "TQ2_0 element " << i;
    }
  }
}

TEST(TernaryBlockTest, RandomRoundTripsAreExact) {
  std::mt19937 rng(1);
  for (GgmlType type : {GgmlType::kTQ2_0, GgmlType::kTQ1_0}) {
    for (int iter = 0; iter < 200; ++iter) {
      const std::vector<int8_t> trits = RandomTrits(1024, rng);
      const float scale = std::uniform_real_distribution<float>(-0.2f, 0.2f)(rng);
      std::vector<uint8_t> row(static_cast<size_t>(4 * GgmlBlockBytes(type)));
      EncodeTernaryRow(type, trits.data(), 1024, scale, row.data());
      std::vector<float> values(1024);
      DequantizeRow(type, row.data(), 1024, values.data());
      const float d = HalfToFloat(FloatToHalf(scale));
      for (int b = 0; b < 4; ++b) {
        std::vector<int8_t> back(256);
        uint16_t dbits = 0;
        if (type == GgmlType::kTQ2_0) {
          DecodeTq2Block(row.data() + b * kTq2BlockBytes, back.data(), &dbits);
        } else {
          DecodeTq1Block(row.data() + b * kTq1BlockBytes, back.data(), &dbits);
        }
        ASSERT_EQ(dbits, FloatToHalf(scale));
        ASSERT_EQ(back,
                  std::vector<int8_t>(trits.begin() + 256 * b, trits.begin() + 256 * (b + 1)));
      }
      for (int i = 0; i < 1024; ++i) ASSERT_EQ(values[i], trits[i] * d) << GgmlTypeName(type);
    }
  }
}

TEST(Q8_0Test, RoundTripWithinHalfAStep) {
  std::mt19937 rng(2);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  for (int iter = 0; iter < 500; ++iter) {
    float x[32], y[32];
    for (float& v : x) v = normal(rng);
    uint8_t block[kQ8_0BlockBytes];
    EncodeQ8_0Block(x, block);
    DecodeQ8_0Block(block, y);
    float absmax = 0;
    for (float v : x) absmax = std::max(absmax, std::fabs(v));
    const float d = absmax / 127;
    const uint16_t dbits = static_cast<uint16_t>(block[0] | (block[1] << 8));
    ASSERT_EQ(dbits, FloatToHalf(d));  // d first, little-endian
    const float dh = HalfToFloat(dbits);
    for (int i = 0; i < 32; ++i) {
      const int q = static_cast<int8_t>(block[2 + i]);
      ASSERT_EQ(q, static_cast<int>(std::round(x[i] / d)));
      ASSERT_EQ(y[i], q * dh);
      ASSERT_LE(std::fabs(y[i] - x[i]), 0.5f * d * 1.001f + 127 * std::fabs(dh - d));
    }
  }
  float zeros[32] = {}, out[32];
  uint8_t block[kQ8_0BlockBytes];
  EncodeQ8_0Block(zeros, block);
  DecodeQ8_0Block(block, out);
  for (float v : out) EXPECT_EQ(v, 0.0f);
}

TEST(Q4Test, HandMadeQ4_0BlockByteByByte) {
  std::vector<uint8_t> codes(32, 8);  // code 8 is the value 0
  codes[0] = 1;                       // qs[0] bits [3:0]
  codes[16] = 2;                      // qs[0] bits [7:4]
  codes[15] = 15;                     // qs[15] bits [3:0]
  codes[31] = 0;                      // qs[15] bits [7:4]
  uint8_t block[kQ4_0BlockBytes];
  EncodeQ4_0Block(codes.data(), FloatToHalf(0.5f), block);
  EXPECT_EQ(block[0], 0x00);  // fp16 0.5 = 0x3800, little-endian
  EXPECT_EQ(block[1], 0x38);
  for (int j = 0; j < 16; ++j) {
    const uint8_t expected = j == 0 ? 0x21 : (j == 15 ? 0x0f : 0x88);
    EXPECT_EQ(block[2 + j], expected) << "qs byte " << j;
  }
  float x[32];
  DecodeQ4_0Block(block, x);
  for (int i = 0; i < 32; ++i) {
    const float expected = i == 0 ? -3.5f : i == 16 ? -3.0f : i == 15 ? 3.5f : i == 31 ? -4.0f : 0;
    EXPECT_EQ(x[i], expected) << "element " << i;  // (q - 8) * d
  }
}

TEST(Q4Test, HandMadeQ4_1BlockByteByByte) {
  std::vector<uint8_t> codes(32);
  for (int j = 0; j < 16; ++j) {
    codes[j] = static_cast<uint8_t>(j);
    codes[j + 16] = static_cast<uint8_t>(15 - j);
  }
  codes[31] = 200;  // clamped to 15
  uint8_t block[kQ4_1BlockBytes];
  EncodeQ4_1Block(codes.data(), FloatToHalf(0.25f), FloatToHalf(-1.5f), block);
  EXPECT_EQ(block[0], 0x00);  // d: fp16 0.25 = 0x3400
  EXPECT_EQ(block[1], 0x34);
  EXPECT_EQ(block[2], 0x00);  // m: fp16 -1.5 = 0xbe00
  EXPECT_EQ(block[3], 0xbe);
  for (int j = 0; j < 16; ++j) {
    const int high = j == 15 ? 15 : 15 - j;
    EXPECT_EQ(block[4 + j], j | (high << 4)) << "qs byte " << j;
  }
  float x[32];
  DecodeQ4_1Block(block, x);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(x[j], j * 0.25f - 1.5f);  // q * d + m
    EXPECT_EQ(x[j + 16], (j == 15 ? 15 : 15 - j) * 0.25f - 1.5f);
  }
}

// ggml's dequantize_row_q4_0 / _q4_1 in their loop form: for j < 16, y[j] from the low nibble of
// qs[j] and y[j + 16] from its high nibble; (x - 8) * d, or x * d + m.
std::vector<float> GgmlOrderQ4(const uint8_t* block, bool q4_1) {
  auto half = [&](int at) {
    return HalfToFloat(static_cast<uint16_t>(block[at] | (block[at + 1] << 8)));
  };
  const float d = half(0), m = q4_1 ? half(2) : 0.0f;
  const uint8_t* qs = block + (q4_1 ? 4 : 2);
  std::vector<float> y(32);
  for (int j = 0; j < 16; ++j) {
    const int x0 = qs[j] & 0x0f, x1 = qs[j] >> 4;
    y[j] = q4_1 ? x0 * d + m : (x0 - 8) * d;
    y[j + 16] = q4_1 ? x1 * d + m : (x1 - 8) * d;
  }
  return y;
}

TEST(Q4Test, RandomRowsMatchGgmlDequantizationOrder) {
  std::mt19937 rng(13);
  std::uniform_int_distribution<int> code(0, 15);
  std::uniform_real_distribution<float> value(-2.0f, 2.0f);
  for (GgmlType type : {GgmlType::kQ4_0, GgmlType::kQ4_1}) {
    const bool q4_1 = type == GgmlType::kQ4_1;
    const int64_t block_bytes = GgmlBlockBytes(type);
    for (int iter = 0; iter < 100; ++iter) {
      std::vector<uint8_t> row(static_cast<size_t>(4 * block_bytes));
      std::vector<uint8_t> codes(128);
      for (auto& c : codes) c = static_cast<uint8_t>(code(rng));
      for (int b = 0; b < 4; ++b) {
        const uint16_t d = FloatToHalf(value(rng)), m = FloatToHalf(value(rng));
        if (q4_1) {
          EncodeQ4_1Block(codes.data() + 32 * b, d, m, row.data() + b * block_bytes);
        } else {
          EncodeQ4_0Block(codes.data() + 32 * b, d, row.data() + b * block_bytes);
        }
      }
      std::vector<float> values(128);
      DequantizeRow(type, row.data(), 128, values.data());
      for (int b = 0; b < 4; ++b) {
        const std::vector<float> y = GgmlOrderQ4(row.data() + b * block_bytes, q4_1);
        for (int i = 0; i < 32; ++i) ASSERT_EQ(values[32 * b + i], y[i]) << GgmlTypeName(type);
        // The nibbles hold the codes as given.
        for (int i = 0; i < 32; ++i) {
          const uint8_t* qs = row.data() + b * block_bytes + (q4_1 ? 4 : 2);
          ASSERT_EQ(i < 16 ? qs[i] & 15 : qs[i - 16] >> 4, codes[32 * b + i]);
        }
      }
    }
  }
}

TEST(F16RowTest, RoundTripWithinHalfAnUlp) {
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 10.0f);
  std::vector<float> x(999), y(999);
  for (float& v : x) v = normal(rng);
  x[0] = 0.375f;  // exactly representable: must come back unchanged
  std::vector<uint8_t> bytes(2 * x.size());
  EncodeFloatRow(GgmlType::kF16, x.data(), 999, bytes.data());
  DequantizeRow(GgmlType::kF16, bytes.data(), 999, y.data());
  EXPECT_EQ(y[0], 0.375f);
  for (size_t i = 0; i < x.size(); ++i) {
    ASSERT_LE(std::fabs(y[i] - x[i]), std::fabs(x[i]) * std::ldexp(1.0f, -11) + 1e-7f);
  }
}

// ---------------------------------------------------------------------------------------------
// Writer and reader

TEST(GgufWriterTest, TinyFileByteByByte) {
  GgufWriter w;
  w.SetKv("a", GgufValue::Uint8(7));
  const float one = 1.0f;
  ASSERT_TRUE(
      w.AddTensor("t", GgmlType::kF32, {1}, std::string(reinterpret_cast<const char*>(&one), 4))
          .ok());
  absl::StatusOr<std::string> bytes = w.Serialize();
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  std::string expected("GGUF\x03\0\0\0", 8);
  expected += std::string("\x01\0\0\0\0\0\0\0", 8);  // tensor_count
  expected += std::string("\x01\0\0\0\0\0\0\0", 8);  // kv_count
  expected += std::string(
      "\x01\0\0\0\0\0\0\0"
      "a",
      9);                                      // key
  expected += std::string("\0\0\0\0\x07", 5);  // UINT8 7
  expected += std::string(
      "\x01\0\0\0\0\0\0\0"
      "t",
      9);                                            // tensor name
  expected += std::string("\x01\0\0\0", 4);          // n_dims
  expected += std::string("\x01\0\0\0\0\0\0\0", 8);  // dims[0]
  expected += std::string("\0\0\0\0", 4);            // F32
  expected += std::string("\0\0\0\0\0\0\0\0", 8);    // offset 0
  ASSERT_EQ(expected.size(), 71u);
  expected += std::string(96 - 71, '\0');      // pad to 32
  expected += std::string("\0\0\x80\x3f", 4);  // 1.0f
  expected += std::string(28, '\0');           // pad the end to 32
  EXPECT_EQ(*bytes, expected);
}

GgufWriter WriterWithEveryValueType() {
  GgufWriter w;
  w.SetKv("u8", GgufValue::Uint8(250));
  w.SetKv("i8", GgufValue::Int8(-100));
  w.SetKv("u16", GgufValue::Uint16(65000));
  w.SetKv("i16", GgufValue::Int16(-32000));
  w.SetKv("u32", GgufValue::Uint32(4000000000u));
  w.SetKv("i32", GgufValue::Int32(-2000000000));
  w.SetKv("f32", GgufValue::Float32(0.1f));
  w.SetKv("bool", GgufValue::Bool(true));
  w.SetKv("str", GgufValue::String(std::string("h\0llo \xe2\x96\x81", 9)));
  w.SetKv("arr", GgufValue::Int32Array({1, -2, 3}));
  w.SetKv("u64", GgufValue::Uint64(18000000000000000000ull));
  w.SetKv("i64", GgufValue::Int64(-9000000000000000000ll));
  w.SetKv("f64", GgufValue::Float64(0.1));
  w.SetKv("strs", GgufValue::StringArray({"", "x", "<0x0A>"}));
  w.SetKv("empty", GgufValue::Array(GgufType::kFloat64, {}));
  w.SetKv("bools",
          GgufValue::Array(GgufType::kBool, {GgufValue::Bool(false), GgufValue::Bool(true)}));
  return w;
}

TEST(GgufWriterTest, EveryValueTypeAndTensorTypeRoundTrips) {
  GgufWriter w = WriterWithEveryValueType();
  w.SetKv("u8", GgufValue::Uint8(251));  // replaced in place: stays first
  std::mt19937 rng(4);
  std::normal_distribution<float> normal;
  std::vector<float> values(512);
  for (float& v : values) v = normal(rng);
  const std::vector<int8_t> trits = RandomTrits(512, rng);
  struct Expected {
    std::string name;
    GgmlType type;
    std::vector<int64_t> dims;
    std::string bytes;
  };
  std::vector<Expected> expected;
  for (GgmlType type : {GgmlType::kF32, GgmlType::kF16, GgmlType::kQ4_0, GgmlType::kQ4_1,
                        GgmlType::kQ8_0, GgmlType::kTQ1_0, GgmlType::kTQ2_0}) {
    const std::vector<int64_t> dims = {256, 2};
    std::string bytes(static_cast<size_t>(*GgmlTensorBytes(type, dims)), '\0');
    if (type == GgmlType::kTQ1_0 || type == GgmlType::kTQ2_0) {
      EncodeTernaryRow(type, trits.data(), 512, 0.03f, reinterpret_cast<uint8_t*>(&bytes[0]));
    } else if (type == GgmlType::kQ4_0 || type == GgmlType::kQ4_1) {
      for (char& b : bytes) b = static_cast<char>(rng());  // every byte pattern is a valid block
    } else {
      EncodeFloatRow(type, values.data(), 512, reinterpret_cast<uint8_t*>(&bytes[0]));
    }
    expected.push_back({absl::StrCat("w.", GgmlTypeName(type)), type, dims, bytes});
    ASSERT_TRUE(w.AddTensor(expected.back().name, type, dims, bytes).ok());
  }
  expected.push_back({"bias", GgmlType::kF32, {3}, std::string(12, '\x11')});
  ASSERT_TRUE(w.AddTensor("bias", GgmlType::kF32, {3}, std::string(12, '\x11')).ok());
  expected.push_back({"cube", GgmlType::kF16, {2, 3, 4, 5}, std::string(240, '\x22')});
  ASSERT_TRUE(w.AddTensor("cube", GgmlType::kF16, {2, 3, 4, 5}, std::string(240, '\x22')).ok());

  absl::StatusOr<std::string> bytes = w.Serialize();
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  absl::StatusOr<GgufFile> f = GgufFile::Parse(*bytes, "mem.gguf");
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->version(), 3u);
  EXPECT_EQ(f->alignment(), 32u);
  EXPECT_EQ(f->data_offset() % 32, 0u);
  EXPECT_EQ(bytes->size() % 32, 0u);

  GgufWriter reference = WriterWithEveryValueType();
  reference.SetKv("u8", GgufValue::Uint8(251));
  absl::StatusOr<std::string> ref_bytes = reference.Serialize();
  absl::StatusOr<GgufFile> ref = GgufFile::Parse(*ref_bytes, "ref.gguf");
  ASSERT_TRUE(ref.ok()) << ref.status();
  ASSERT_EQ(f->kvs().size(), 16u);
  EXPECT_EQ(f->kvs()[0].first, "u8");
  EXPECT_EQ(f->kvs()[0].second.as_uint(), 251u);
  for (size_t i = 0; i < f->kvs().size(); ++i) {
    EXPECT_EQ(f->kvs()[i].first, ref->kvs()[i].first);
    EXPECT_TRUE(f->kvs()[i].second == ref->kvs()[i].second) << f->kvs()[i].first;
  }
  EXPECT_EQ(f->FindKv("i8")->as_int(), -100);
  EXPECT_EQ(f->FindKv("i8")->type(), GgufType::kInt8);
  EXPECT_EQ(f->FindKv("u16")->as_uint(), 65000u);
  EXPECT_EQ(f->FindKv("i16")->as_int(), -32000);
  EXPECT_EQ(f->FindKv("u32")->as_uint(), 4000000000u);
  EXPECT_EQ(f->FindKv("i32")->as_int(), -2000000000);
  EXPECT_EQ(f->FindKv("f32")->as_float(), static_cast<double>(0.1f));
  EXPECT_EQ(f->FindKv("f32")->type(), GgufType::kFloat32);
  EXPECT_TRUE(f->FindKv("bool")->as_bool());
  EXPECT_EQ(f->FindKv("str")->as_string(), std::string("h\0llo \xe2\x96\x81", 9));
  ASSERT_EQ(f->FindKv("arr")->as_array().size(), 3u);
  EXPECT_EQ(f->FindKv("arr")->elem_type(), GgufType::kInt32);
  EXPECT_EQ(f->FindKv("arr")->as_array()[1].as_int(), -2);
  EXPECT_EQ(f->FindKv("u64")->as_uint(), 18000000000000000000ull);
  EXPECT_EQ(f->FindKv("i64")->as_int(), -9000000000000000000ll);
  EXPECT_EQ(f->FindKv("f64")->as_float(), 0.1);
  EXPECT_EQ(f->FindKv("strs")->as_array()[2].as_string(), "<0x0A>");
  EXPECT_TRUE(f->FindKv("empty")->as_array().empty());
  EXPECT_EQ(f->FindKv("empty")->elem_type(), GgufType::kFloat64);
  EXPECT_TRUE(f->FindKv("bools")->as_array()[1].as_bool());
  EXPECT_EQ(f->FindKv("nope"), nullptr);

  // Tensors: in order, dense with padding (ggml's rule), bytes intact.
  ASSERT_EQ(f->tensors().size(), expected.size());
  uint64_t running = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    const GgufTensorInfo& t = f->tensors()[i];
    EXPECT_EQ(t.name, expected[i].name);
    EXPECT_EQ(t.type, expected[i].type);
    EXPECT_EQ(t.dims, expected[i].dims);
    EXPECT_EQ(t.offset, running) << t.name;
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(f->Data(t)), t.bytes), expected[i].bytes);
    running = (running + t.bytes + 31) / 32 * 32;
  }
  EXPECT_EQ(f->data_offset() + running, bytes->size());
  absl::StatusOr<std::vector<float>> deq = f->Dequantize("w.F32");
  ASSERT_TRUE(deq.ok());
  EXPECT_EQ(*deq, values);
  deq = f->Dequantize("w.TQ1_0");
  ASSERT_TRUE(deq.ok());
  for (int i = 0; i < 512; ++i) ASSERT_EQ((*deq)[i], trits[i] * HalfToFloat(FloatToHalf(0.03f)));
  EXPECT_FALSE(f->Dequantize("missing").ok());
}

TEST(GgufWriterTest, CustomAlignment) {
  GgufWriter w;
  w.SetKv("general.alignment", GgufValue::Uint32(64));
  ASSERT_TRUE(w.AddTensor("a", GgmlType::kF32, {3}, std::string(12, '\1')).ok());
  ASSERT_TRUE(w.AddTensor("b", GgmlType::kF32, {1}, std::string(4, '\2')).ok());
  absl::StatusOr<std::string> bytes = w.Serialize();
  ASSERT_TRUE(bytes.ok());
  absl::StatusOr<GgufFile> f = GgufFile::Parse(*bytes, "mem");
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->alignment(), 64u);
  EXPECT_EQ(f->data_offset() % 64, 0u);
  EXPECT_EQ(f->tensors()[1].offset, 64u);
  EXPECT_EQ(bytes->size() % 64, 0u);

  w.SetKv("general.alignment", GgufValue::Uint32(48));
  EXPECT_FALSE(w.Serialize().ok());
  w.SetKv("general.alignment", GgufValue::Uint64(64));
  EXPECT_FALSE(w.Serialize().ok());
}

TEST(GgufWriterTest, RejectsBadInput) {
  GgufWriter w;
  EXPECT_FALSE(w.AddTensor("x", GgmlType::kF32, {2}, std::string(4, '\0')).ok());  // 8 expected
  EXPECT_FALSE(w.AddTensor("x", GgmlType::kTQ2_0, {100}, std::string(66, '\0')).ok());
  EXPECT_FALSE(w.AddTensor("x", GgmlType::kF32, {}, "").ok());
  EXPECT_FALSE(w.AddTensor("x", GgmlType::kF32, {1, 1, 1, 1, 1}, std::string(4, '\0')).ok());
  EXPECT_FALSE(w.AddTensor("x", GgmlType::kF32, {-1}, "").ok());
  EXPECT_FALSE(w.AddTensor(std::string(64, 'n'), GgmlType::kF32, {1}, std::string(4, '\0')).ok());
  EXPECT_FALSE(w.AddTensor("", GgmlType::kF32, {1}, std::string(4, '\0')).ok());
  EXPECT_FALSE(w.AddTensor("x", static_cast<GgmlType>(6), {32}, std::string(22, '\0')).ok());
  EXPECT_FALSE(w.AddTensor("x", GgmlType::kQ4_0, {48}, std::string(27, '\0')).ok());
  EXPECT_FALSE(w.AddTensor("x", GgmlType::kQ4_1, {32}, std::string(18, '\0')).ok());  // 20
  ASSERT_TRUE(w.AddTensor("x", GgmlType::kF32, {1}, std::string(4, '\0')).ok());
  EXPECT_FALSE(w.AddTensor("x", GgmlType::kF32, {1}, std::string(4, '\0')).ok());  // duplicate
  ASSERT_TRUE(w.Serialize().ok());

  GgufWriter mixed;
  mixed.SetKv("m", GgufValue::Array(GgufType::kInt32, {GgufValue::Int32(1), GgufValue::Uint8(2)}));
  EXPECT_FALSE(mixed.Serialize().ok());
  GgufWriter nested;
  nested.SetKv("n", GgufValue::Array(GgufType::kArray, {GgufValue::Int32Array({1})}));
  EXPECT_FALSE(nested.Serialize().ok());
}

TEST(GgufWriterTest, WritesAtomicallyToDisk) {
  const testing_util::TestDir tmp;
  const std::string dir = tmp.dir();
  GgufWriter w = WriterWithEveryValueType();
  ASSERT_TRUE(w.AddTensor("x", GgmlType::kF16, {4}, std::string(8, '\3')).ok());
  ASSERT_TRUE(w.Write(dir + "/a.gguf").ok());
  absl::StatusOr<GgufFile> f = GgufFile::Open(dir + "/a.gguf");
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->tensors().size(), 1u);
  EXPECT_FALSE(GgufFile::Open(dir + "/missing.gguf").ok());
  EXPECT_FALSE(w.Write(dir + "/no/such/dir/a.gguf").ok());
}

// ---------------------------------------------------------------------------------------------
// Hostile input: files assembled by hand, independently of the writer.

class Raw {
 public:
  Raw& U32(uint64_t v) { return Le(v, 4); }
  Raw& U64(uint64_t v) { return Le(v, 8); }
  Raw& U8(uint64_t v) { return Le(v, 1); }
  Raw& Str(const std::string& s) {
    U64(s.size());
    bytes_ += s;
    return *this;
  }
  Raw& Pad(size_t alignment) {
    bytes_.resize((bytes_.size() + alignment - 1) / alignment * alignment, '\0');
    return *this;
  }
  Raw& Bytes(size_t n, char c) {
    bytes_.append(n, c);
    return *this;
  }
  size_t size() const { return bytes_.size(); }
  const std::string& str() const { return bytes_; }

 private:
  Raw& Le(uint64_t v, int n) {
    for (int i = 0; i < n; ++i) bytes_.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
    return *this;
  }
  std::string bytes_;
};

// A header: magic, version, counts.
Raw Header(uint64_t tensors, uint64_t kvs, uint64_t version = 3) {
  Raw r;
  r.U32(0x46554747).U32(version).U64(tensors).U64(kvs);  // "GGUF" little-endian
  return r;
}

// A tensor info for an F32 tensor of `n` elements at `offset`.
void F32Info(Raw& r, const std::string& name, uint64_t n, uint64_t offset) {
  r.Str(name).U32(1).U64(n).U32(0).U64(offset);
}

// A valid file: two KVs (a string and an array) and two F32 tensors of 8 elements.
Raw ValidRaw() {
  Raw r = Header(2, 2);
  r.Str("general.name").U32(8).Str("tiny");
  r.Str("list").U32(9).U32(5).U64(3).U32(1).U32(2).U32(3);
  F32Info(r, "a", 8, 0);
  F32Info(r, "b", 8, 32);
  r.Pad(32).Bytes(32, '\x01').Bytes(32, '\x02');
  return r;
}

absl::Status ParseRaw(const std::string& bytes) {
  return GgufFile::Parse(bytes, "bad.gguf").status();
}

TEST(GgufReaderTest, HandMadeFileParses) {
  absl::StatusOr<GgufFile> f = GgufFile::Parse(ValidRaw().str(), "ok.gguf");
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->FindKv("general.name")->as_string(), "tiny");
  EXPECT_EQ(f->FindKv("list")->as_array()[2].as_int(), 3);
  EXPECT_EQ(f->tensors()[1].offset, 32u);
  EXPECT_EQ(f->Data(f->tensors()[1])[0], 0x02);
}

// Q4_0 and Q4_1 tensors assembled by hand: their sizes (18 and 20 bytes per 32 elements) and
// values as ggml reads them.
TEST(GgufReaderTest, HandMadeQ4TensorsDequantize) {
  Raw r = Header(2, 0);
  r.Str("q4_0").U32(2).U64(32).U64(2).U32(2).U64(0);  // 2 rows of one block: 36 bytes
  r.Str("q4_1").U32(1).U64(64).U32(3).U64(64);        // 1 row of two blocks: 40 bytes
  r.Pad(32);
  // Q4_0 row 0: d = 1, every nibble 9 (value 1); row 1: d = -2 (0xc000), low nibbles 0, high 15.
  r.U8(0x00).U8(0x3c).Bytes(16, '\x99');
  r.U8(0x00).U8(0xc0).Bytes(16, '\xf0');
  r.Bytes(64 - 36, '\0');
  // Q4_1 block 0: d = 0.5, m = 1 (0x3c00), nibbles 3; block 1: d = 0, m = -0.25 (0xb400).
  r.U8(0x00).U8(0x38).U8(0x00).U8(0x3c).Bytes(16, '\x33');
  r.U8(0x00).U8(0x00).U8(0x00).U8(0xb4).Bytes(16, '\x7e');
  absl::StatusOr<GgufFile> f = GgufFile::Parse(r.str(), "q4.gguf");
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->tensors()[0].bytes, 36);
  EXPECT_EQ(f->tensors()[1].bytes, 40);
  const std::vector<float> a = *f->Dequantize("q4_0");
  ASSERT_EQ(a.size(), 64u);
  for (int i = 0; i < 32; ++i) {
    EXPECT_EQ(a[i], 1.0f);
    EXPECT_EQ(a[32 + i], i < 16 ? 16.0f : -14.0f);  // (0 - 8) * -2, (15 - 8) * -2
  }
  const std::vector<float> b = *f->Dequantize("q4_1");
  ASSERT_EQ(b.size(), 64u);
  for (int i = 0; i < 32; ++i) {
    EXPECT_EQ(b[i], 2.5f);  // 3 * 0.5 + 1
    EXPECT_EQ(b[32 + i], -0.25f);
  }
  EXPECT_FALSE(GgufFile::Parse(r.str().substr(0, r.size() - 1), "q4.gguf").ok());
}

TEST(GgufReaderTest, EveryTruncationIsAnError) {
  const std::string full = ValidRaw().str();
  for (size_t len = 0; len < full.size(); ++len) {  // tensor b ends exactly at the end of the file
    absl::Status s = ParseRaw(full.substr(0, len));
    ASSERT_FALSE(s.ok()) << "truncated to " << len << " bytes";
    EXPECT_CONTAINS(s.message(), "bad.gguf");
  }
}

// Random byte changes to a hand-made file and to a writer-made one holding every value type:
// each parse either fails cleanly or yields tensors that can be read whole.
TEST(GgufReaderTest, RandomCorruptionNeverCrashes) {
  GgufWriter w = WriterWithEveryValueType();
  ASSERT_TRUE(w.AddTensor("q", GgmlType::kQ8_0, {32, 2}, std::string(68, '\x05')).ok());
  ASSERT_TRUE(w.AddTensor("t", GgmlType::kTQ1_0, {256}, std::string(54, '\x40')).ok());
  ASSERT_TRUE(w.AddTensor("q4", GgmlType::kQ4_1, {32}, std::string(20, '\x3c')).ok());
  const std::string written = *w.Serialize();
  std::mt19937 rng(5);
  for (const std::string& full : {ValidRaw().str(), written}) {
    int parsed = 0;
    for (size_t len = 0; len < full.size(); ++len) {  // every truncation of the writer's file too
      if (GgufFile::Parse(full.substr(0, len), "cut.gguf").ok()) ++parsed;
    }
    EXPECT_LE(parsed, 31) << "only cuts inside the final padding may parse";
    int failures = 0;
    for (int iter = 0; iter < 10000; ++iter) {
      std::string bytes = full;
      const int flips = 1 + static_cast<int>(rng() % 4);
      for (int k = 0; k < flips; ++k) bytes[rng() % bytes.size()] = static_cast<char>(rng());
      absl::StatusOr<GgufFile> f = GgufFile::Parse(bytes, "fuzz.gguf");
      if (!f.ok()) {
        ++failures;
        continue;
      }
      for (const GgufTensorInfo& t : f->tensors()) ASSERT_TRUE(f->Dequantize(t.name).ok());
    }
    EXPECT_GT(failures, 500);
  }
}

TEST(GgufReaderTest, MalformedFilesGiveClearErrors) {
  struct Case {
    const char* what;
    std::string bytes;
    const char* message;
  };
  std::vector<Case> cases;
  {
    std::string b = ValidRaw().str();
    b[0] = 'X';
    cases.push_back({"bad magic", b, "not a GGUF file"});
  }
  cases.push_back({"version 1", Header(0, 0, 1).str(), "version 1"});
  cases.push_back({"huge kv count", Header(0, uint64_t{1} << 60).str(), "key/value count"});
  cases.push_back({"huge tensor count", Header(uint64_t{1} << 60, 0).str(), "tensor count"});
  {
    Raw r = Header(0, 1);
    r.U64(uint64_t{1} << 62).Bytes(16, 'k');
    cases.push_back({"huge key length", r.str(), "exceeds"});
  }
  {
    Raw r = Header(0, 1);
    r.Str("k").U32(8).U64(~uint64_t{0}).Bytes(8, 's');
    cases.push_back({"huge string length", r.str(), "exceeds"});
  }
  {
    Raw r = Header(0, 1);
    r.Str("k").U32(13).U32(0);
    cases.push_back({"bad value type", r.str(), "unknown value type 13"});
  }
  {
    Raw r = Header(0, 1);
    r.Str("k").U32(9).U32(77).U64(1).U32(0);
    cases.push_back({"bad array element type", r.str(), "unknown array element type 77"});
  }
  {
    Raw r = Header(0, 1);
    r.Str("k").U32(9).U32(6).U64(uint64_t{1} << 61).Bytes(16, '\0');
    cases.push_back({"huge array count", r.str(), "cannot fit"});
  }
  {
    Raw r = Header(0, 1);
    r.Str("k").U32(9).U32(9).U64(1).U32(4).U64(0);
    cases.push_back({"nested array", r.str(), "nested arrays"});
  }
  {
    Raw r = Header(0, 1);
    r.Str("k").U32(7).U8(2);
    cases.push_back({"bool 2", r.str(), "BOOL"});
  }
  {
    Raw r = Header(0, 2);
    r.Str("k").U32(0).U8(1).Str("k").U32(0).U8(2);
    cases.push_back({"duplicate key", r.str(), "duplicate key"});
  }
  {
    Raw r = Header(0, 1);
    r.Str("general.alignment").U32(4).U32(24);
    cases.push_back({"alignment not a power of two", r.str(), "general.alignment"});
  }
  {
    Raw r = Header(0, 1);
    r.Str("general.alignment").U32(5).U32(32);
    cases.push_back({"alignment of the wrong type", r.str(), "general.alignment"});
  }
  {
    Raw r = Header(1, 0);
    F32Info(r, "a", 8, 32);  // the data section holds only 32 bytes
    r.Pad(32).Bytes(32, '\0');
    cases.push_back({"offset out of range", r.str(), "out of range"});
  }
  {
    Raw r = Header(1, 0);
    F32Info(r, "a", 8, 16);
    r.Pad(32).Bytes(64, '\0');
    cases.push_back({"misaligned offset", r.str(), "not a multiple of the alignment"});
  }
  {
    Raw r = Header(2, 0);
    F32Info(r, "a", 16, 0);
    F32Info(r, "b", 8, 32);  // a covers [0, 64)
    r.Pad(32).Bytes(96, '\0');
    cases.push_back({"overlapping tensors", r.str(), "overlap"});
  }
  {
    Raw r = Header(1, 0);
    F32Info(r, "a", ~uint64_t{0} >> 2, 0);  // size overflows
    r.Pad(32).Bytes(32, '\0');
    cases.push_back({"tensor size overflow", r.str(), "overflows"});
  }
  {
    Raw r = Header(1, 0);
    r.Str("a").U32(2).U64(uint64_t{1} << 40).U64(uint64_t{1} << 40).U32(0).U64(0);
    r.Pad(32).Bytes(32, '\0');
    cases.push_back({"element count overflow", r.str(), "overflows"});
  }
  {
    Raw r = Header(1, 0);
    r.Str("a").U32(5).U64(1).U64(1).U64(1).U64(1).U64(1).U32(0).U64(0);
    r.Pad(32).Bytes(32, '\0');
    cases.push_back({"5 dimensions", r.str(), "5 dimensions"});
  }
  {
    Raw r = Header(1, 0);
    r.Str("a").U32(1).U64(32).U32(6).U64(0);  // Q5_0
    r.Pad(32).Bytes(32, '\0');
    cases.push_back({"unsupported ggml type", r.str(), "ggml type 6"});
  }
  {
    Raw r = Header(1, 0);
    r.Str("a").U32(1).U64(48).U32(3).U64(0);  // Q4_1 rows must be multiples of 32
    r.Pad(32).Bytes(64, '\0');
    cases.push_back({"Q4_1 row not a multiple of the block", r.str(), "not a multiple of 32"});
  }
  {
    Raw r = Header(1, 0);
    r.Str("a").U32(1).U64(100).U32(35).U64(0);  // TQ2_0 rows must be multiples of 256
    r.Pad(32).Bytes(96, '\0');
    cases.push_back({"row not a multiple of the block", r.str(), "not a multiple of 256"});
  }
  {
    Raw r = Header(2, 0);
    F32Info(r, "a", 1, 0);
    F32Info(r, "a", 1, 32);
    r.Pad(32).Bytes(64, '\0');
    cases.push_back({"duplicate tensor", r.str(), "duplicate tensor"});
  }
  {
    Raw r = Header(1, 0);
    F32Info(r, std::string(64, 'n'), 1, 0);
    r.Pad(32).Bytes(32, '\0');
    cases.push_back({"tensor name too long", r.str(), "tensor name of 64 bytes"});
  }
  {
    Raw r = Header(1, 0);
    F32Info(r, "a", 1, 0);  // no data section at all
    cases.push_back({"missing data section", r.str(), "data section"});
  }
  for (const Case& c : cases) {
    absl::Status s = ParseRaw(c.bytes);
    EXPECT_FALSE(s.ok()) << c.what;
    EXPECT_CONTAINS(s.message(), c.message);
    EXPECT_CONTAINS(s.message(), "bad.gguf: byte ");
  }
}

// ---------------------------------------------------------------------------------------------
// Conversion

// How WriteTinyPacked stores one linear weight (runtime.h).
struct Storage {
  std::string format = "ternary2";  // "f32", "ternary2", "ternary3", "int2" or "int4"
  int64_t group = 0;                // int2/int4: 32, 64 or 128
  bool symmetric = false;  // int2/int4: every zero point 2^(bits-1), as quant/quantizer.h's
                           // symmetric quantizers write it; otherwise fractional zero points
  bool per_row = false;    // ternary: a scale per row (else per tensor)
};

// The default storage: ternary2 with per-tensor scales in layer 0 and per-row scales in layer 1,
// whose v_proj stays F32.
Storage DefaultStorage(int64_t layer, const std::string& hf) {
  if (layer == 1 && hf == "self_attn.v_proj.weight") return {"f32"};
  Storage s;
  s.per_row = layer == 1;
  return s;
}

struct TinyConfig {
  int64_t vocab = 258, hidden = 256, intermediate = 512, layers = 2, heads = 4, kv_heads = 2;
  bool tie = false;
  std::string tokenizer = "byte";
  float scale_multiplier = 1.0f;
  bool extra_tensor = false;
  // Unset: DefaultStorage in a version 1 file; set: this storage in a version 2 file.
  std::function<Storage(int64_t layer, const std::string& hf)> storage;
  int64_t head_dim() const { return hidden / heads; }
  int64_t kv_dim() const { return kv_heads * head_dim(); }
  Storage StorageOf(int64_t layer, const std::string& hf) const {
    return storage ? storage(layer, hf) : DefaultStorage(layer, hf);
  }
};

struct LinearShape {
  const char* hf;
  const char* gguf;
  int64_t out, in;
  int rope;  // 0 none, 1 query, 2 key
};

std::vector<LinearShape> Linears(const TinyConfig& c) {
  return {{"self_attn.q_proj.weight", "attn_q.weight", c.hidden, c.hidden, 1},
          {"self_attn.k_proj.weight", "attn_k.weight", c.kv_dim(), c.hidden, 2},
          {"self_attn.v_proj.weight", "attn_v.weight", c.kv_dim(), c.hidden, 0},
          {"self_attn.o_proj.weight", "attn_output.weight", c.hidden, c.hidden, 0},
          {"mlp.gate_proj.weight", "ffn_gate.weight", c.intermediate, c.hidden, 0},
          {"mlp.up_proj.weight", "ffn_up.weight", c.intermediate, c.hidden, 0},
          {"mlp.down_proj.weight", "ffn_down.weight", c.hidden, c.intermediate, 0}};
}

void AddF32(SafetensorsWriter& w, const std::string& name, std::vector<int64_t> shape,
            std::mt19937& rng) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  std::vector<float> v(static_cast<size_t>(n));
  std::normal_distribution<float> normal(0.0f, 0.5f);
  for (float& x : v) x = normal(rng);
  w.Add(name, DType::kF32, std::move(shape), v.data(), v.size() * sizeof(float));
}

void AddFloats(SafetensorsWriter& w, const std::string& name, std::vector<int64_t> shape,
               const std::vector<float>& v) {
  w.Add(name, DType::kF32, std::move(shape), v.data(), v.size() * sizeof(float));
}

// Writes one packed linear [out, in] as `s` says, with random codes and scales in [0.01, 0.1)
// (times c.scale_multiplier).
void AddPackedLinear(SafetensorsWriter& w, const std::string& name, const LinearShape& lin,
                     const Storage& s, const TinyConfig& c, std::mt19937& rng) {
  std::uniform_real_distribution<float> scale_dist(0.01f, 0.1f);
  if (s.format == "ternary2" || s.format == "ternary3") {
    const bool three = s.format == "ternary3";
    const std::vector<int8_t> trits = RandomTrits(lin.out * lin.in, rng);
    const int64_t row_bytes = three ? Ternary3RowBytes(lin.in) : TernaryRowBytes(lin.in);
    std::vector<uint8_t> packed(static_cast<size_t>(lin.out * row_bytes));
    if (three) {
      PackTernary3(trits.data(), lin.out, lin.in, packed.data());
    } else {
      PackTernary(trits.data(), lin.out, lin.in, packed.data());
    }
    w.Add(name, DType::kU8, {lin.out, row_bytes}, packed.data(), packed.size());
    std::vector<float> scales(s.per_row ? static_cast<size_t>(lin.out) : 1);
    for (float& v : scales) v = scale_dist(rng) * c.scale_multiplier;
    AddFloats(w, name + ".scale", {static_cast<int64_t>(scales.size())}, scales);
  } else {
    const int bits = s.format == "int2" ? 2 : 4;
    const int max_code = (1 << bits) - 1;
    const int64_t groups = IntKGroupsPerRow(s.group, lin.in);
    std::vector<uint8_t> codes(static_cast<size_t>(lin.out * lin.in));
    std::uniform_int_distribution<int> code_dist(0, max_code);
    for (uint8_t& q : codes) q = static_cast<uint8_t>(code_dist(rng));
    std::vector<float> scales(static_cast<size_t>(lin.out * groups)), zeros(scales.size());
    std::uniform_real_distribution<float> zero_dist(0.0f, static_cast<float>(max_code));
    for (size_t g = 0; g < scales.size(); ++g) {
      scales[g] = scale_dist(rng) * c.scale_multiplier;
      zeros[g] = s.symmetric ? static_cast<float>(1 << (bits - 1)) : zero_dist(rng);
    }
    if (s.symmetric) {
      // An all-zero group, as the symmetric quantizer writes it: scale 1e-8 / 7.5, every code at
      // the zero point. fp16 flushes that scale to 0, which is harmless here.
      scales[3 * groups] = 1e-8f / 7.5f;
      for (int64_t col = 0; col < std::min(s.group, lin.in); ++col) {
        codes[3 * lin.in + col] = static_cast<uint8_t>(1 << (bits - 1));
      }
    }
    std::vector<uint8_t> packed(static_cast<size_t>(lin.out * IntKRowBytes(bits, lin.in)));
    PackIntK(codes.data(), lin.out, lin.in, bits, packed.data());
    w.Add(name, DType::kU8, {lin.out, IntKRowBytes(bits, lin.in)}, packed.data(), packed.size());
    // Both accepted shapes: [out * groups] for group 64, [out, groups] otherwise.
    const std::vector<int64_t> shape = s.group == 64 ? std::vector<int64_t>{lin.out * groups}
                                                     : std::vector<int64_t>{lin.out, groups};
    AddFloats(w, name + ".scale", shape, scales);
    AddFloats(w, name + ".zero", shape, zeros);
    w.SetMetadata("qat.group." + name, absl::StrCat(s.group));
  }
  w.SetMetadata("qat.quant." + name, s.format);
}

std::string WriteTinyPacked(const std::string& dir, const TinyConfig& c, uint32_t seed = 9) {
  std::mt19937 rng(seed);
  SafetensorsWriter w;
  const std::pair<const char*, std::string> meta[] = {
      {"format", "qat-packed"},
      {"qat.version", c.storage ? "2" : "1"},
      {"qat.vocab_size", absl::StrCat(c.vocab)},
      {"qat.hidden_size", absl::StrCat(c.hidden)},
      {"qat.intermediate_size", absl::StrCat(c.intermediate)},
      {"qat.num_layers", absl::StrCat(c.layers)},
      {"qat.num_heads", absl::StrCat(c.heads)},
      {"qat.num_kv_heads", absl::StrCat(c.kv_heads)},
      {"qat.max_seq_len", "128"},
      {"qat.rope_theta", "10000"},
      {"qat.rms_norm_eps", "1e-05"},
      {"qat.tie_embeddings", c.tie ? "1" : "0"},
      {"qat.bos_id", "256"},
      {"qat.eos_id", "257"},
      {"qat.tokenizer", c.tokenizer},
  };
  for (const auto& [k, v] : meta) w.SetMetadata(k, v);
  AddF32(w, "model.embed_tokens.weight", {c.vocab, c.hidden}, rng);
  if (!c.tie) AddF32(w, "lm_head.weight", {c.vocab, c.hidden}, rng);
  AddF32(w, "model.norm.weight", {c.hidden}, rng);
  for (int64_t l = 0; l < c.layers; ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".");
    AddF32(w, p + "input_layernorm.weight", {c.hidden}, rng);
    AddF32(w, p + "post_attention_layernorm.weight", {c.hidden}, rng);
    for (const LinearShape& lin : Linears(c)) {
      const Storage s = c.StorageOf(l, lin.hf);
      if (s.format == "f32") {
        AddF32(w, p + lin.hf, {lin.out, lin.in}, rng);
      } else {
        AddPackedLinear(w, p + lin.hf, lin, s, c, rng);
      }
    }
  }
  if (c.extra_tensor) AddF32(w, "model.extra.weight", {4}, rng);
  const std::string path = dir + "/tiny.qat.safetensors";
  EXPECT_TRUE(w.Write(path).ok());
  return path;
}

// A linear of the packed file in the runtime's terms (runtime.h), [out][in] row-major: weight i
// is code[i] with scale[i] and zero[i]. Ternary: the trit, its row's or tensor's scale, zero 0;
// int2/int4: the code and its group's scale and zero point; F32: the value, scale 1, zero 0.
struct PackedWeights {
  std::string format;
  std::vector<float> code, scale, zero;
  // The runtime's fp32 value, subtraction first (lowbit.h).
  float value(size_t i) const { return scale[i] * (code[i] - zero[i]); }
};

PackedWeights ReadPackedWeights(const SafetensorsFile& f, const std::string& name, int64_t out,
                                int64_t in) {
  PackedWeights p;
  const auto quant = f.metadata().find("qat.quant." + name);
  p.format = quant == f.metadata().end() ? "f32" : quant->second;
  const size_t n = static_cast<size_t>(out * in);
  p.scale.assign(n, 1.0f);
  p.zero.assign(n, 0.0f);
  if (p.format == "f32") {
    p.code = *f.ReadF32(name);
    return p;
  }
  p.code.resize(n);
  const uint8_t* data = f.Data(*f.Find(name));
  const std::vector<float> scales = *f.ReadF32(name + ".scale");
  if (p.format == "ternary2" || p.format == "ternary3") {
    std::vector<int8_t> trits(n);
    if (p.format == "ternary2") {
      UnpackTernary(data, out, in, trits.data());
    } else {
      UnpackTernary3(data, out, in, trits.data());
    }
    for (size_t i = 0; i < n; ++i) {
      p.code[i] = trits[i];
      p.scale[i] = scales[scales.size() == 1 ? 0 : i / in];
    }
    return p;
  }
  const int bits = p.format == "int2" ? 2 : 4;
  const int64_t group = std::stoll(f.metadata().at("qat.group." + name));
  const int64_t groups = IntKGroupsPerRow(group, in);
  const std::vector<float> zeros = *f.ReadF32(name + ".zero");
  std::vector<uint8_t> codes(n);
  UnpackIntK(data, out, in, bits, codes.data());
  for (int64_t r = 0; r < out; ++r) {
    for (int64_t col = 0; col < in; ++col) {
      const size_t i = static_cast<size_t>(r * in + col), g = r * groups + col / group;
      p.code[i] = codes[i];
      p.scale[i] = scales[g];
      p.zero[i] = zeros[g];
    }
  }
  return p;
}

// The values a ternary or F32 linear of the packed file has in GGUF: trit * fp16(scale), or the
// F32 value; [out][in] row-major.
std::vector<float> PackedLinearValues(const SafetensorsFile& f, const std::string& name,
                                      int64_t out, int64_t in) {
  const PackedWeights p = ReadPackedWeights(f, name, out, in);
  if (p.format == "f32") return p.code;
  std::vector<float> v(p.code.size());
  for (size_t i = 0; i < v.size(); ++i) v[i] = p.code[i] * HalfToFloat(FloatToHalf(p.scale[i]));
  return v;
}

// llama.cpp's permute (reshape(heads, 2, hd/2, in).swapaxes(1, 2)) as explicit index loops:
// returns, for each GGUF row, its HF row.
std::vector<int64_t> LlamaCppPermutation(int64_t heads, int64_t head_dim) {
  std::vector<int64_t> hf_row_of(static_cast<size_t>(heads * head_dim));
  for (int64_t h = 0; h < heads; ++h) {
    for (int64_t i = 0; i < head_dim / 2; ++i) {
      for (int64_t j = 0; j < 2; ++j) {
        hf_row_of[h * head_dim + i * 2 + j] = h * head_dim + j * (head_dim / 2) + i;
      }
    }
  }
  return hf_row_of;
}

void ExpectTensor(const GgufFile& f, const std::string& name, GgmlType type,
                  std::vector<int64_t> dims) {
  const GgufTensorInfo* t = f.FindTensor(name);
  ASSERT_NE(t, nullptr) << name;
  EXPECT_EQ(t->type, type) << name << " is " << GgmlTypeName(t->type);
  EXPECT_EQ(t->dims, dims) << name;
}

class ConvertTest : public ::testing::Test {
 protected:
  const testing_util::TestDir tmp_;  // this test's own directory
  const std::string dir_ = tmp_.dir();
};

TEST_F(ConvertTest, TinyModelConvertsExactly) {
  TinyConfig c;
  const std::string packed_path = WriteTinyPacked(dir_, c);
  const std::string out = dir_ + "/tiny.gguf";
  absl::StatusOr<GgufExportReport> report = ConvertPackedToGguf(packed_path, out);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->fallbacks(), 0);
  // token_embd, output_norm, output, and 9 per layer.
  ASSERT_EQ(report->tensors.size(), 3u + 9 * c.layers);

  absl::StatusOr<GgufFile> f = GgufFile::Open(out);
  ASSERT_TRUE(f.ok()) << f.status();
  absl::StatusOr<SafetensorsFile> packed = SafetensorsFile::Open(packed_path);
  ASSERT_TRUE(packed.ok());
  absl::StatusOr<std::string> raw = ReadFile(out);
  ASSERT_TRUE(raw.ok());
  EXPECT_EQ(report->file_bytes, static_cast<int64_t>(raw->size()));

  // Metadata.
  static const GgufValue kMissing;
  auto kv = [&](const std::string& key) -> const GgufValue& {
    const GgufValue* v = f->FindKv(key);
    EXPECT_NE(v, nullptr) << key;
    return v != nullptr ? *v : kMissing;
  };
  EXPECT_EQ(kv("general.architecture").as_string(), "llama");
  EXPECT_EQ(kv("general.name").as_string(), "tiny.qat");
  EXPECT_EQ(kv("general.alignment"), GgufValue::Uint32(32));
  // Mostly TQ2_0 (llama.h LLAMA_FTYPE_MOSTLY_TQ2_0 = 37): the linears outnumber the F16
  // embeddings; 1.45M parameters.
  EXPECT_EQ(kv("general.file_type"), GgufValue::Uint32(37));
  EXPECT_EQ(kv("general.type").as_string(), "model");
  int64_t params = 0;
  for (const GgufTensorReport& t : report->tensors) {
    int64_t n = 1;
    for (int64_t d : t.dims) n *= d;
    params += n;
  }
  EXPECT_EQ(kv("general.size_label").as_string(), absl::StrFormat("%.1fM", params / 1e6));
  EXPECT_EQ(kv("llama.context_length"), GgufValue::Uint32(128));
  EXPECT_EQ(kv("llama.embedding_length"), GgufValue::Uint32(256));
  EXPECT_EQ(kv("llama.block_count"), GgufValue::Uint32(2));
  EXPECT_EQ(kv("llama.feed_forward_length"), GgufValue::Uint32(512));
  EXPECT_EQ(kv("llama.rope.dimension_count"), GgufValue::Uint32(64));
  EXPECT_EQ(kv("llama.attention.head_count"), GgufValue::Uint32(4));
  EXPECT_EQ(kv("llama.attention.head_count_kv"), GgufValue::Uint32(2));
  EXPECT_EQ(kv("llama.attention.layer_norm_rms_epsilon"), GgufValue::Float32(1e-5f));
  EXPECT_EQ(kv("llama.rope.freq_base"), GgufValue::Float32(10000.0f));
  EXPECT_EQ(kv("llama.vocab_size"), GgufValue::Uint32(258));
  EXPECT_EQ(kv("tokenizer.ggml.model").as_string(), "llama");
  EXPECT_EQ(kv("tokenizer.ggml.bos_token_id"), GgufValue::Uint32(256));
  EXPECT_EQ(kv("tokenizer.ggml.eos_token_id"), GgufValue::Uint32(257));
  EXPECT_EQ(kv("tokenizer.ggml.add_bos_token"), GgufValue::Bool(true));
  EXPECT_EQ(kv("tokenizer.ggml.add_eos_token"), GgufValue::Bool(false));
  EXPECT_EQ(kv("tokenizer.ggml.add_space_prefix"), GgufValue::Bool(false));
  const std::vector<GgufValue>& tokens = kv("tokenizer.ggml.tokens").as_array();
  const std::vector<GgufValue>& types = kv("tokenizer.ggml.token_type").as_array();
  const std::vector<GgufValue>& scores = kv("tokenizer.ggml.scores").as_array();
  ASSERT_EQ(tokens.size(), 258u);
  ASSERT_EQ(types.size(), 258u);
  ASSERT_EQ(scores.size(), 258u);
  EXPECT_EQ(kv("tokenizer.ggml.token_type").elem_type(), GgufType::kInt32);
  EXPECT_EQ(kv("tokenizer.ggml.scores").elem_type(), GgufType::kFloat32);
  EXPECT_EQ(tokens[0].as_string(), "<0x00>");
  EXPECT_EQ(tokens[10].as_string(), "<0x0A>");
  EXPECT_EQ(tokens[65].as_string(), "<0x41>");
  EXPECT_EQ(tokens[255].as_string(), "<0xFF>");
  EXPECT_EQ(tokens[32].as_string(), "\xe2\x96\x81");
  EXPECT_EQ(tokens[256].as_string(), "<s>");
  EXPECT_EQ(tokens[257].as_string(), "</s>");
  EXPECT_EQ(types[65].as_int(), 6);   // BYTE
  EXPECT_EQ(types[32].as_int(), 1);   // NORMAL
  EXPECT_EQ(types[256].as_int(), 3);  // CONTROL
  EXPECT_EQ(types[257].as_int(), 3);
  for (const GgufValue& s : scores) EXPECT_EQ(s.as_float(), 0.0);

  // Tensors: types, dims, values.
  ExpectTensor(*f, "token_embd.weight", GgmlType::kF16, {256, 258});
  ExpectTensor(*f, "output.weight", GgmlType::kF16, {256, 258});
  ExpectTensor(*f, "output_norm.weight", GgmlType::kF32, {256});
  const std::vector<float> embed = *packed->ReadF32("model.embed_tokens.weight");
  const std::vector<float> embed_gguf = *f->Dequantize("token_embd.weight");
  for (size_t i = 0; i < embed.size(); ++i) {
    ASSERT_EQ(embed_gguf[i], HalfToFloat(FloatToHalf(embed[i])));
  }
  EXPECT_EQ(*f->Dequantize("output_norm.weight"), *packed->ReadF32("model.norm.weight"));
  for (int64_t l = 0; l < c.layers; ++l) {
    const std::string blk = absl::StrCat("blk.", l, ".");
    const std::string hf = absl::StrCat("model.layers.", l, ".");
    ExpectTensor(*f, blk + "attn_norm.weight", GgmlType::kF32, {256});
    EXPECT_EQ(*f->Dequantize(blk + "ffn_norm.weight"),
              *packed->ReadF32(hf + "post_attention_layernorm.weight"));
    for (const LinearShape& lin : Linears(c)) {
      const bool dense = l == 1 && std::string(lin.hf) == "self_attn.v_proj.weight";
      ExpectTensor(*f, blk + lin.gguf, dense ? GgmlType::kF16 : GgmlType::kTQ2_0,
                   {lin.in, lin.out});
      const std::vector<float> source = PackedLinearValues(*packed, hf + lin.hf, lin.out, lin.in);
      const std::vector<float> gguf = *f->Dequantize(blk + lin.gguf);
      const std::vector<int64_t> perm =
          LlamaCppPermutation(lin.rope == 1 ? c.heads : c.kv_heads, c.head_dim());
      for (int64_t r = 0; r < lin.out; ++r) {
        const int64_t src = lin.rope == 0 ? r : perm[r];
        for (int64_t col = 0; col < lin.in; ++col) {
          const float expected = dense ? HalfToFloat(FloatToHalf(source[src * lin.in + col]))
                                       : source[src * lin.in + col];
          ASSERT_EQ(gguf[r * lin.in + col], expected) << blk << lin.gguf << " row " << r;
        }
      }
    }
  }
  // The report lists every tensor with the type written.
  for (const GgufTensorReport& t : report->tensors) {
    const GgufTensorInfo* info = f->FindTensor(t.gguf_name);
    ASSERT_NE(info, nullptr) << t.gguf_name;
    EXPECT_EQ(info->type, t.type);
    EXPECT_EQ(info->dims, t.dims);
    if (t.ternary) {
      EXPECT_LE(t.max_scale_rel_error, std::ldexp(1.0, -11));
    }
  }
  const std::string text = FormatGgufExportReport(*report);
  EXPECT_CONTAINS(text, "blk.1.attn_q.weight");
  EXPECT_CONTAINS(text, "TQ2_0");
  EXPECT_CONTAINS(text, "0 fallback(s)");
}

// The point of the q/k permutation: llama.cpp's adjacent-pair RoPE on the GGUF weights gives the
// same attention scores as qat's rotate-half RoPE on the HF weights.
TEST_F(ConvertTest, PermutedQkGiveTheSameAttentionScores) {
  TinyConfig c;
  const std::string packed_path = WriteTinyPacked(dir_, c);
  ASSERT_TRUE(ConvertPackedToGguf(packed_path, dir_ + "/t.gguf").ok());
  absl::StatusOr<GgufFile> f = GgufFile::Open(dir_ + "/t.gguf");
  absl::StatusOr<SafetensorsFile> packed = SafetensorsFile::Open(packed_path);
  ASSERT_TRUE(f.ok() && packed.ok());
  const int64_t hd = c.head_dim(), half = hd / 2;
  std::mt19937 rng(11);
  std::normal_distribution<float> normal;
  std::vector<float> x1(c.hidden), x2(c.hidden);
  for (float& v : x1) v = normal(rng);
  for (float& v : x2) v = normal(rng);
  auto matvec = [](const std::vector<float>& w, int64_t out, const std::vector<float>& x) {
    std::vector<double> y(static_cast<size_t>(out), 0.0);
    for (int64_t r = 0; r < out; ++r) {
      for (size_t col = 0; col < x.size(); ++col) y[r] += double{w[r * x.size() + col]} * x[col];
    }
    return y;
  };
  auto freq = [&](int64_t i) { return std::pow(10000.0, -2.0 * i / hd); };
  // In place, per head: HF pairs (i, i + hd/2); llama.cpp pairs (2i, 2i + 1).
  auto rope_hf = [&](std::vector<double>& v, int64_t pos) {
    for (size_t h = 0; h < v.size() / hd; ++h) {
      for (int64_t i = 0; i < half; ++i) {
        double& a = v[h * hd + i];
        double& b = v[h * hd + i + half];
        const double cs = std::cos(pos * freq(i)), sn = std::sin(pos * freq(i));
        const double na = a * cs - b * sn, nb = b * cs + a * sn;
        a = na;
        b = nb;
      }
    }
  };
  auto rope_llama = [&](std::vector<double>& v, int64_t pos) {
    for (size_t h = 0; h < v.size() / hd; ++h) {
      for (int64_t i = 0; i < half; ++i) {
        double& a = v[h * hd + 2 * i];
        double& b = v[h * hd + 2 * i + 1];
        const double cs = std::cos(pos * freq(i)), sn = std::sin(pos * freq(i));
        const double na = a * cs - b * sn, nb = a * sn + b * cs;
        a = na;
        b = nb;
      }
    }
  };
  for (int64_t l = 0; l < c.layers; ++l) {
    const std::string hf = absl::StrCat("model.layers.", l, ".");
    const std::string blk = absl::StrCat("blk.", l, ".");
    std::vector<double> q_hf =
        matvec(PackedLinearValues(*packed, hf + "self_attn.q_proj.weight", c.hidden, c.hidden),
               c.hidden, x1);
    std::vector<double> k_hf =
        matvec(PackedLinearValues(*packed, hf + "self_attn.k_proj.weight", c.kv_dim(), c.hidden),
               c.kv_dim(), x2);
    std::vector<double> q_gg = matvec(*f->Dequantize(blk + "attn_q.weight"), c.hidden, x1);
    std::vector<double> k_gg = matvec(*f->Dequantize(blk + "attn_k.weight"), c.kv_dim(), x2);
    rope_hf(q_hf, 7);
    rope_hf(k_hf, 3);
    rope_llama(q_gg, 7);
    rope_llama(k_gg, 3);
    for (int64_t h = 0; h < c.heads; ++h) {
      const int64_t g = h / (c.heads / c.kv_heads);
      double s_hf = 0, s_gg = 0, norm = 0;
      for (int64_t d = 0; d < hd; ++d) {
        s_hf += q_hf[h * hd + d] * k_hf[g * hd + d];
        s_gg += q_gg[h * hd + d] * k_gg[g * hd + d];
        norm += std::fabs(q_hf[h * hd + d] * k_hf[g * hd + d]);
      }
      EXPECT_NEAR(s_gg, s_hf, 1e-9 * norm) << "layer " << l << " head " << h;
    }
    // Without the permutation the scores would differ: guard against a vacuous test.
    std::vector<double> q_raw = matvec(*f->Dequantize(blk + "attn_q.weight"), c.hidden, x1);
    std::vector<double> k_raw = matvec(*f->Dequantize(blk + "attn_k.weight"), c.kv_dim(), x2);
    rope_hf(q_raw, 7);
    rope_hf(k_raw, 3);
    double s_raw = 0, s_hf = 0;
    for (int64_t d = 0; d < hd; ++d) {
      s_raw += q_raw[d] * k_raw[d];
      s_hf += q_hf[d] * k_hf[d];
    }
    EXPECT_GT(std::fabs(s_raw - s_hf), 1e-3);
  }
}

TEST_F(ConvertTest, Tq1AndQ8_0Options) {
  TinyConfig c;
  const std::string packed_path = WriteTinyPacked(dir_, c);
  GgufExportOptions options;
  options.ternary_type = GgmlType::kTQ1_0;
  options.dense_type = GgmlType::kQ8_0;
  options.name = "tiny-tq1";
  absl::StatusOr<GgufExportReport> report =
      ConvertPackedToGguf(packed_path, dir_ + "/t.gguf", options);
  ASSERT_TRUE(report.ok()) << report.status();
  absl::StatusOr<GgufFile> f = GgufFile::Open(dir_ + "/t.gguf");
  absl::StatusOr<SafetensorsFile> packed = SafetensorsFile::Open(packed_path);
  ASSERT_TRUE(f.ok() && packed.ok());
  EXPECT_EQ(f->FindKv("general.name")->as_string(), "tiny-tq1");
  EXPECT_EQ(*f->FindKv("general.file_type"), GgufValue::Uint32(36));  // MOSTLY_TQ1_0
  ExpectTensor(*f, "token_embd.weight", GgmlType::kQ8_0, {256, 258});
  ExpectTensor(*f, "output_norm.weight", GgmlType::kF32, {256});
  ExpectTensor(*f, "blk.1.attn_v.weight", GgmlType::kQ8_0, {256, 128});
  ExpectTensor(*f, "blk.0.ffn_down.weight", GgmlType::kTQ1_0, {512, 256});
  // Ternary values stay exact in TQ1_0 (check one per-tensor and one per-row tensor).
  for (const char* name : {"blk.0.ffn_down.weight", "blk.1.ffn_up.weight"}) {
    const bool down = std::string(name).find("down") != std::string::npos;
    const int64_t out = down ? 256 : 512, in = down ? 512 : 256;
    const std::string hf = absl::StrCat("model.layers.", std::string(1, name[4]),
                                        down ? ".mlp.down_proj.weight" : ".mlp.up_proj.weight");
    EXPECT_EQ(*f->Dequantize(name), PackedLinearValues(*packed, hf, out, in)) << name;
  }
  const std::vector<float> embed = *packed->ReadF32("model.embed_tokens.weight");
  const std::vector<float> q8 = *f->Dequantize("token_embd.weight");
  for (size_t i = 0; i < embed.size(); ++i) ASSERT_NEAR(q8[i], embed[i], 0.02);
}

TEST_F(ConvertTest, RowLengthNotAMultipleOf256FallsBack) {
  TinyConfig c;
  c.hidden = 320;  // head dim 80; every linear reading the hidden state has rows of 320
  c.tie = true;
  const std::string packed_path = WriteTinyPacked(dir_, c);
  absl::StatusOr<GgufExportReport> report = ConvertPackedToGguf(packed_path, dir_ + "/f.gguf");
  ASSERT_TRUE(report.ok()) << report.status();
  absl::StatusOr<GgufFile> f = GgufFile::Open(dir_ + "/f.gguf");
  absl::StatusOr<SafetensorsFile> packed = SafetensorsFile::Open(packed_path);
  ASSERT_TRUE(f.ok() && packed.ok());
  EXPECT_EQ(f->FindTensor("output.weight"), nullptr);  // tied: llama.cpp reuses token_embd
  // 6 ternary linears per layer read rows of 320 (layer 1's v_proj is dense, not a fallback).
  EXPECT_EQ(report->fallbacks(), 11);
  EXPECT_EQ(*f->FindKv("general.file_type"), GgufValue::Uint32(1));  // every matrix F16
  for (const GgufTensorReport& t : report->tensors) {
    if (!t.fallback) continue;
    EXPECT_TRUE(t.ternary);
    EXPECT_EQ(t.type, GgmlType::kF16);
    EXPECT_CONTAINS(t.note, "row length 320 is not a multiple of 256");
  }
  ExpectTensor(*f, "blk.0.ffn_down.weight", GgmlType::kTQ2_0, {512, 320});
  ExpectTensor(*f, "blk.0.attn_q.weight", GgmlType::kF16, {320, 320});
  // Fallback values are exactly trit * fp16(scale), permutation included.
  const std::vector<float> source =
      PackedLinearValues(*packed, "model.layers.1.self_attn.k_proj.weight", c.kv_dim(), c.hidden);
  const std::vector<float> gguf = *f->Dequantize("blk.1.attn_k.weight");
  const std::vector<int64_t> perm = LlamaCppPermutation(c.kv_heads, c.head_dim());
  for (int64_t r = 0; r < c.kv_dim(); ++r) {
    for (int64_t col = 0; col < c.hidden; ++col) {
      ASSERT_EQ(gguf[r * c.hidden + col], source[perm[r] * c.hidden + col]);
    }
  }
  const std::string text = FormatGgufExportReport(*report);
  EXPECT_CONTAINS(text, "FALLBACK: row length 320 is not a multiple of 256: F16 instead of TQ2_0");
  EXPECT_CONTAINS(text, "11 fallback(s)");

  // Asked for Q8_0: the fallbacks become Q8_0 (320 is a multiple of 32).
  GgufExportOptions q8;
  q8.dense_type = GgmlType::kQ8_0;
  report = ConvertPackedToGguf(packed_path, dir_ + "/q.gguf", q8);
  ASSERT_TRUE(report.ok()) << report.status();
  f = GgufFile::Open(dir_ + "/q.gguf");
  ASSERT_TRUE(f.ok());
  ExpectTensor(*f, "blk.0.attn_q.weight", GgmlType::kQ8_0, {320, 320});
}

TEST_F(ConvertTest, Q8_0FallsBackToF16WhenRowsAreNotMultiplesOf32) {
  TinyConfig c;
  c.hidden = 264;  // head dim 66; 264 % 32 = 8
  const std::string packed_path = WriteTinyPacked(dir_, c);
  GgufExportOptions q8;
  q8.dense_type = GgmlType::kQ8_0;
  absl::StatusOr<GgufExportReport> report = ConvertPackedToGguf(packed_path, dir_ + "/q.gguf", q8);
  ASSERT_TRUE(report.ok()) << report.status();
  absl::StatusOr<GgufFile> f = GgufFile::Open(dir_ + "/q.gguf");
  ASSERT_TRUE(f.ok());
  ExpectTensor(*f, "token_embd.weight", GgmlType::kF16, {264, 258});
  ExpectTensor(*f, "blk.0.attn_q.weight", GgmlType::kF16, {264, 264});
  ExpectTensor(*f, "blk.0.ffn_down.weight", GgmlType::kTQ2_0, {512, 264});
  bool saw_note = false;
  for (const GgufTensorReport& t : report->tensors) {
    if (t.gguf_name == "token_embd.weight") {
      EXPECT_TRUE(t.fallback);
      EXPECT_CONTAINS(t.note, "not a multiple of 32: F16 instead of Q8_0");
      saw_note = true;
    }
  }
  EXPECT_TRUE(saw_note);
}

TEST_F(ConvertTest, BadInputsAreErrors) {
  {
    TinyConfig c;
    c.tokenizer = "gpt2";
    absl::StatusOr<GgufExportReport> r =
        ConvertPackedToGguf(WriteTinyPacked(dir_, c), dir_ + "/x.gguf");
    ASSERT_FALSE(r.ok());
    EXPECT_CONTAINS(r.status().message(), "qat.tokenizer");
  }
  {
    TinyConfig c;
    c.scale_multiplier = 1e6f;  // scales up to 1e5: past fp16's range
    absl::StatusOr<GgufExportReport> r =
        ConvertPackedToGguf(WriteTinyPacked(dir_, c), dir_ + "/x.gguf");
    ASSERT_FALSE(r.ok());
    EXPECT_CONTAINS(r.status().message(), "does not fit in fp16");
  }
  {
    TinyConfig c;
    c.extra_tensor = true;
    absl::StatusOr<GgufExportReport> r =
        ConvertPackedToGguf(WriteTinyPacked(dir_, c), dir_ + "/x.gguf");
    ASSERT_FALSE(r.ok());
    EXPECT_CONTAINS(r.status().message(), "unexpected tensor model.extra.weight");
  }
  const std::string good = WriteTinyPacked(dir_, TinyConfig());
  GgufExportOptions bad;
  bad.ternary_type = GgmlType::kF16;
  EXPECT_FALSE(ConvertPackedToGguf(good, dir_ + "/x.gguf", bad).ok());
  bad = GgufExportOptions();
  bad.dense_type = GgmlType::kTQ2_0;
  EXPECT_FALSE(ConvertPackedToGguf(good, dir_ + "/x.gguf", bad).ok());
  EXPECT_FALSE(ConvertPackedToGguf(dir_ + "/missing.safetensors", dir_ + "/x.gguf").ok());
  EXPECT_FALSE(std::ifstream(dir_ + "/x.gguf").good());  // nothing half-written
}

// Every packed format in one model: ternary3 (per-tensor and per-row scales), int4 asymmetric at
// groups 32, 64 and 128 and symmetric, int2 asymmetric and symmetric, on q/k (permuted) and the
// other linears. down_proj reads rows of 352 = 2.75 x 128, so its last group of 64 or 128 is short.
Storage MixedStorage(int64_t layer, const std::string& hf) {
  const bool l0 = layer == 0;
  if (hf == "self_attn.q_proj.weight") return l0 ? Storage{"int4", 32} : Storage{"int4", 64, true};
  if (hf == "self_attn.k_proj.weight") return l0 ? Storage{"int4", 64} : Storage{"int2", 128};
  if (hf == "self_attn.v_proj.weight") {
    return l0 ? Storage{"int4", 128, true} : Storage{"ternary3", 0, false, true};
  }
  if (hf == "self_attn.o_proj.weight") return l0 ? Storage{"int2", 64} : Storage{"int4", 32, true};
  if (hf == "mlp.gate_proj.weight") return l0 ? Storage{"ternary3"} : Storage{"int2", 64, true};
  if (hf == "mlp.up_proj.weight") return l0 ? Storage{"int2", 32, true} : Storage{"ternary2"};
  return l0 ? Storage{"int4", 128} : Storage{"f32"};  // down_proj
}

// The GGUF type an int linear becomes: Q4_0 for symmetric zero points, else Q4_1.
GgmlType IntGgufType(const Storage& s) { return s.symmetric ? GgmlType::kQ4_0 : GgmlType::kQ4_1; }

// How far a Q4_0/Q4_1 value y may be from the runtime's value w of the same weight (code c,
// scale s, zero z), and why. The runtime computes w = fl(s * fl(c - z)) (lowbit.h); ggml computes
// y = (c - z) * d for Q4_0 (exact: c - z is a small integer, d has 11 significant bits) and
// y = fl(c * d + m) for Q4_1 (c * d exact), with d = fp16(s), m = fp16(fl(-s * z)). Against the
// exact s * (c - z):
//   Q4_0: y - s(c - z) = (c - z)(d - s)
//   Q4_1: y - s(c - z) = c (d - s) + (m + s z) + (the rounding of y, at most 2^-24 |y|)
//   w - s(c - z) = s (fl(c - z) - (c - z)) + (the rounding of w, at most 2^-24 |w|)
// So |y - w| is bounded by the fp16 rounding of d and m (each at most 2^-11 relative), half an
// fp32 ulp of y and of w, and the fp32 rounding of c - z for a fractional z; nothing else. The
// terms are evaluated in double, exactly up to 2^-50 relative (the final factor covers that).
double Q4Bound(GgmlType type, double c, double s, double z, double d, double m, double y,
               double w) {
  const double w_rounding =
      std::fabs(s) * std::fabs(static_cast<double>(static_cast<float>(c - z)) - (c - z)) +
      std::ldexp(std::fabs(w), -24);
  const double fp16 =
      type == GgmlType::kQ4_0
          ? std::fabs(c - z) * std::fabs(d - s)
          : std::fabs(c) * std::fabs(d - s) + std::fabs(m + s * z) + std::ldexp(std::fabs(y), -24);
  return (fp16 + w_rounding) * (1 + std::ldexp(1.0, -40));
}

struct RawTensor {
  DType dtype;
  std::vector<int64_t> shape;
  std::string bytes;
};

// Copies packed file `path` onto itself with `edit` applied to its metadata and tensors (an
// empty metadata value drops the key).
void EditPacked(const std::string& path,
                const std::function<void(std::map<std::string, std::string>& meta,
                                         std::map<std::string, RawTensor>& tensors)>& edit) {
  absl::StatusOr<SafetensorsFile> f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  std::map<std::string, std::string> meta = f->metadata();
  std::map<std::string, RawTensor> tensors;
  for (const TensorInfo& t : f->tensors()) {
    tensors[t.name] = {t.dtype, t.shape,
                       std::string(reinterpret_cast<const char*>(f->Data(t)),
                                   static_cast<size_t>(t.end - t.begin))};
  }
  edit(meta, tensors);
  SafetensorsWriter w;
  for (const auto& [k, v] : meta) {
    if (!v.empty()) w.SetMetadata(k, v);
  }
  for (const auto& [name, t] : tensors)
    w.Add(name, t.dtype, t.shape, t.bytes.data(), t.bytes.size());
  ASSERT_TRUE(w.Write(path).ok());
}

void SetFloat(RawTensor& t, size_t i, float v) { std::memcpy(&t.bytes[4 * i], &v, 4); }

TEST_F(ConvertTest, EveryPackedFormatConverts) {
  TinyConfig c;
  c.intermediate = 352;
  c.storage = MixedStorage;
  const std::string packed_path = WriteTinyPacked(dir_, c);
  absl::StatusOr<GgufExportReport> report = ConvertPackedToGguf(packed_path, dir_ + "/m.gguf");
  ASSERT_TRUE(report.ok()) << report.status();
  // Layer 1's up_proj (ternary2) and layer 0's gate_proj (ternary3) read rows of 256: no fallback.
  EXPECT_EQ(report->fallbacks(), 0);
  absl::StatusOr<GgufFile> f = GgufFile::Open(dir_ + "/m.gguf");
  absl::StatusOr<SafetensorsFile> packed = SafetensorsFile::Open(packed_path);
  ASSERT_TRUE(f.ok() && packed.ok()) << f.status();
  int q4_0 = 0, q4_1 = 0;
  for (int64_t l = 0; l < c.layers; ++l) {
    const std::string blk = absl::StrCat("blk.", l, ".");
    const std::string hf = absl::StrCat("model.layers.", l, ".");
    for (const LinearShape& lin : Linears(c)) {
      const Storage s = MixedStorage(l, lin.hf);
      const bool ternary = s.format == "ternary2" || s.format == "ternary3";
      const GgmlType type = s.format == "f32" ? GgmlType::kF16
                            : ternary         ? GgmlType::kTQ2_0
                                              : IntGgufType(s);
      const std::string name = blk + lin.gguf;
      ExpectTensor(*f, name, type, {lin.in, lin.out});
      q4_0 += type == GgmlType::kQ4_0;
      q4_1 += type == GgmlType::kQ4_1;
      const PackedWeights p = ReadPackedWeights(*packed, hf + lin.hf, lin.out, lin.in);
      const std::vector<float> gguf = *f->Dequantize(name);
      const std::vector<int64_t> perm =
          LlamaCppPermutation(lin.rope == 1 ? c.heads : c.kv_heads, c.head_dim());
      for (int64_t r = 0; r < lin.out; ++r) {
        const int64_t src = lin.rope == 0 ? r : perm[r];
        for (int64_t col = 0; col < lin.in; ++col) {
          const size_t i = static_cast<size_t>(src * lin.in + col);
          const float y = gguf[r * lin.in + col], w = p.value(i);
          const float code = p.code[i], scale = p.scale[i], zero = p.zero[i];
          const float d = HalfToFloat(FloatToHalf(scale));
          const float m = HalfToFloat(FloatToHalf(-scale * zero));
          // Exactly ggml's value for d = fp16(scale) and m = fp16(-scale * zero)...
          switch (type) {
            case GgmlType::kF16:
              ASSERT_EQ(y, HalfToFloat(FloatToHalf(w))) << name;
              continue;
            case GgmlType::kTQ2_0:
              ASSERT_EQ(y, code * d) << name << " row " << r;
              continue;
            case GgmlType::kQ4_0:
              ASSERT_EQ(y, (code - zero) * d) << name << " row " << r << " col " << col;
              break;
            default:
              ASSERT_EQ(y, code * d + m) << name << " row " << r << " col " << col;
              break;
          }
          // ... hence the runtime's value up to the fp16 rounding of d and m.
          ASSERT_LE(std::fabs(double{y} - w), Q4Bound(type, code, scale, zero, d, m, y, w))
              << name << " row " << r << " col " << col << ": " << y << " vs " << w;
        }
      }
    }
  }
  EXPECT_EQ(q4_0, 5);
  EXPECT_EQ(q4_1, 5);
  for (const GgufTensorReport& t : report->tensors) {
    if (!absl::StartsWith(t.gguf_name, "blk.") || t.type == GgmlType::kF32) continue;
    const int64_t layer = t.gguf_name[4] - '0';
    const std::string hf_suffix =
        t.source_name.substr(absl::StrCat("model.layers.", layer, ".").size());
    const Storage s = MixedStorage(layer, hf_suffix);
    EXPECT_EQ(t.packed_format, s.format == "f32" ? "" : s.format) << t.gguf_name;
    EXPECT_EQ(t.ternary, s.format == "ternary2" || s.format == "ternary3") << t.gguf_name;
    EXPECT_LE(t.max_scale_rel_error, std::ldexp(1.0, -11)) << t.gguf_name;
    EXPECT_LE(t.max_offset_rel_error, std::ldexp(1.0, -11)) << t.gguf_name;
    if (!s.symmetric && (s.format == "int2" || s.format == "int4")) {
      EXPECT_GT(t.max_offset_rel_error, 0) << t.gguf_name;  // m is rounded, and reported
    }
    if (s.format != "f32") {
      EXPECT_GT(t.max_scale_rel_error, 0) << t.gguf_name;
    }
  }
  const std::string text = FormatGgufExportReport(*report);
  EXPECT_CONTAINS(text, "blk.0.attn_q.weight");
  EXPECT_CONTAINS(text, "from int4, fp16 rel. error d <= ");
  EXPECT_CONTAINS(text, ", m <= ");
  EXPECT_CONTAINS(text, "from ternary3");
  EXPECT_CONTAINS(text, "0 fallback(s)");
}

// Q4_0 versus Q4_1 follows the zero points: int4 weights with zero 8 everywhere but in one group
// (7) need Q4_1. Its other groups keep their Q4_0 values: fp16(-8 scale) = -8 fp16(scale).
TEST_F(ConvertTest, Q4_0OnlyWhenEveryZeroPointAllowsIt) {
  TinyConfig c;
  c.storage = [](int64_t, const std::string&) { return Storage{"int4", 32, true}; };
  const std::string path = WriteTinyPacked(dir_, c);
  ASSERT_TRUE(ConvertPackedToGguf(path, dir_ + "/a.gguf").ok());
  absl::StatusOr<GgufFile> f = GgufFile::Open(dir_ + "/a.gguf");
  ASSERT_TRUE(f.ok());
  ExpectTensor(*f, "blk.0.ffn_up.weight", GgmlType::kQ4_0, {256, 512});
  ExpectTensor(*f, "blk.1.attn_k.weight", GgmlType::kQ4_0, {256, 128});
  const std::vector<float> y_q4_0 = *f->Dequantize("blk.0.ffn_up.weight");
  // Move one zero point of up_proj to 7: its codes no longer fit Q4_0's fixed offset of 8.
  EditPacked(path, [](std::map<std::string, std::string>&, std::map<std::string, RawTensor>& t) {
    SetFloat(t["model.layers.0.mlp.up_proj.weight.zero"], 5, 7.0f);
  });
  ASSERT_TRUE(ConvertPackedToGguf(path, dir_ + "/b.gguf").ok());
  f = GgufFile::Open(dir_ + "/b.gguf");
  absl::StatusOr<SafetensorsFile> packed = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok() && packed.ok());
  ExpectTensor(*f, "blk.0.ffn_up.weight", GgmlType::kQ4_1, {256, 512});
  ExpectTensor(*f, "blk.0.ffn_gate.weight", GgmlType::kQ4_0, {256, 512});
  const PackedWeights p = ReadPackedWeights(*packed, "model.layers.0.mlp.up_proj.weight", 512, 256);
  const std::vector<float> y = *f->Dequantize("blk.0.ffn_up.weight");
  for (size_t i = 0; i < y.size(); ++i) {
    const float d = HalfToFloat(FloatToHalf(p.scale[i]));
    ASSERT_EQ(y[i], p.code[i] * d + HalfToFloat(FloatToHalf(-p.scale[i] * p.zero[i]))) << i;
    if (p.zero[i] == 8.0f) {
      ASSERT_EQ(y[i], y_q4_0[i]) << i;
    }
  }
}

// Int rows whose length is not a multiple of 32 (hidden 264) are stored as dense_type holding
// the runtime's values, q/k permuted; down_proj (rows of 512) stays Q4.
TEST_F(ConvertTest, IntRowsNotAMultipleOf32FallBack) {
  TinyConfig c;
  c.hidden = 264;  // head dim 66; int2 rows of 264 also end with 56 padding codes
  c.storage = [](int64_t layer, const std::string&) {
    return layer == 0 ? Storage{"int4", 128} : Storage{"int2", 32, true};
  };
  const std::string packed_path = WriteTinyPacked(dir_, c);
  absl::StatusOr<SafetensorsFile> packed = SafetensorsFile::Open(packed_path);
  ASSERT_TRUE(packed.ok());
  for (GgmlType dense : {GgmlType::kF16, GgmlType::kF32}) {
    GgufExportOptions options;
    options.dense_type = dense;
    absl::StatusOr<GgufExportReport> report =
        ConvertPackedToGguf(packed_path, dir_ + "/f.gguf", options);
    ASSERT_TRUE(report.ok()) << report.status();
    EXPECT_EQ(report->fallbacks(), 12);  // 6 linears per layer read rows of 264
    for (const GgufTensorReport& t : report->tensors) {
      if (!t.fallback) continue;
      EXPECT_EQ(t.type, dense);
      EXPECT_CONTAINS(t.note, absl::StrCat("row length 264 is not a multiple of 32: ",
                                           GgmlTypeName(dense), " instead of Q4_"));
    }
    absl::StatusOr<GgufFile> f = GgufFile::Open(dir_ + "/f.gguf");
    ASSERT_TRUE(f.ok());
    ExpectTensor(*f, "blk.0.ffn_down.weight", GgmlType::kQ4_1, {512, 264});
    ExpectTensor(*f, "blk.1.ffn_down.weight", GgmlType::kQ4_0, {512, 264});
    for (int64_t l = 0; l < c.layers; ++l) {
      const std::string name = absl::StrCat("model.layers.", l, ".self_attn.k_proj.weight");
      const PackedWeights p = ReadPackedWeights(*packed, name, c.kv_dim(), c.hidden);
      const std::vector<float> gguf = *f->Dequantize(absl::StrCat("blk.", l, ".attn_k.weight"));
      const std::vector<int64_t> perm = LlamaCppPermutation(c.kv_heads, c.head_dim());
      for (int64_t r = 0; r < c.kv_dim(); ++r) {
        for (int64_t col = 0; col < c.hidden; ++col) {
          const float w = p.value(static_cast<size_t>(perm[r] * c.hidden + col));
          const float expected = dense == GgmlType::kF32 ? w : HalfToFloat(FloatToHalf(w));
          ASSERT_EQ(gguf[r * c.hidden + col], expected) << name << " row " << r;
        }
      }
    }
    EXPECT_CONTAINS(FormatGgufExportReport(*report), "FALLBACK: row length 264");
  }
  // Asked for Q8_0, which cannot hold rows of 264 either: F16, and the note says both.
  GgufExportOptions q8;
  q8.dense_type = GgmlType::kQ8_0;
  absl::StatusOr<GgufExportReport> report = ConvertPackedToGguf(packed_path, dir_ + "/q.gguf", q8);
  ASSERT_TRUE(report.ok()) << report.status();
  for (const GgufTensorReport& t : report->tensors) {
    if (t.gguf_name != "blk.1.attn_q.weight") continue;
    EXPECT_EQ(t.type, GgmlType::kF16);
    EXPECT_CONTAINS(t.note, "Q8_0 instead of Q4_0");
    EXPECT_CONTAINS(t.note, "F16 instead of Q8_0");
  }
}

TEST_F(ConvertTest, BadPackedIntAndTernary3InputsAreErrors) {
  const std::string q = "model.layers.0.self_attn.q_proj.weight";
  const std::string gate = "model.layers.0.mlp.gate_proj.weight";
  struct Case {
    const char* what;
    std::function<void(std::map<std::string, std::string>&, std::map<std::string, RawTensor>&)>
        edit;
    std::string message;
  };
  using Meta = std::map<std::string, std::string>;
  using Tensors = std::map<std::string, RawTensor>;
  const std::vector<Case> cases = {
      {"scale too large for fp16", [&](Meta&, Tensors& t) { SetFloat(t[q + ".scale"], 5, 1e5f); },
       "tensor " + q + ".scale[5] = 100000 does not fit in fp16"},
      {"scale that fp16 flushes, weights not all 0",
       [&](Meta&, Tensors& t) { SetFloat(t[q + ".scale"], 0, 1e-9f); },
       "tensor " + q + ".scale[0] = 1e-09 underflows fp16"},
      {"offset m too large for fp16",
       [&](Meta&, Tensors& t) {
         SetFloat(t[q + ".scale"], 0, 100.0f);
         SetFloat(t[q + ".zero"], 0, -1000.0f);
       },
       "the Q4_1 offset -" + q + ".scale[0] * " + q + ".zero[0] = 100000 does not fit in fp16"},
      {"zero point not finite",
       [&](Meta&, Tensors& t) {
         SetFloat(t[q + ".zero"], 7, std::numeric_limits<float>::quiet_NaN());
       },
       "tensor " + q + ".zero[7] = nan is not finite"},
      {"zero points of the wrong shape",
       [&](Meta&, Tensors& t) {
         t[q + ".zero"].shape = {8, 256};
       },
       "tensor " + q + ".zero is F32 [8, 256], expected F32 [2048] or [256, 8] (group 32)"},
      {"missing zero points", [&](Meta&, Tensors& t) { t.erase(q + ".zero"); },
       "missing tensor " + q + ".zero"},
      {"missing group", [&](Meta& m, Tensors&) { m["qat.group." + q] = ""; }, "qat.group." + q},
      {"unknown format", [&](Meta& m, Tensors&) { m["qat.quant." + q] = "int3"; },
       "is not a known format"},
      {"int4 in a version 1 file", [&](Meta& m, Tensors&) { m["qat.version"] = "1"; },
       "needs qat.version 2"},
      {"packed int4 of the wrong shape",
       [&](Meta&, Tensors& t) {
         t[q].shape = {128, 256};
       },
       "tensor " + q + " is U8 [128, 256], expected U8 (int4) [256, 128]"},
      {"invalid ternary3 byte", [&](Meta&, Tensors& t) { t[gate].bytes[33] = '\xf3'; },
       "tensor " + gate + ": invalid ternary3 byte 0xf3 at byte offset 33 (row 0)"},
  };
  for (const Case& k : cases) {
    TinyConfig c;
    c.storage = [](int64_t, const std::string& hf) {
      return hf == "mlp.gate_proj.weight" ? Storage{"ternary3"} : Storage{"int4", 32};
    };
    const std::string path = WriteTinyPacked(dir_, c);
    EditPacked(path, k.edit);
    absl::StatusOr<GgufExportReport> r = ConvertPackedToGguf(path, dir_ + "/x.gguf");
    ASSERT_FALSE(r.ok()) << k.what;
    EXPECT_CONTAINS(r.status().message(), path);
    EXPECT_CONTAINS(r.status().message(), k.message);
    EXPECT_FALSE(std::ifstream(dir_ + "/x.gguf").good()) << k.what;
  }
}

}  // namespace
}  // namespace qat::kernels
