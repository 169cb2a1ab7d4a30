// GGUF v3: fp16 conversion, the ggml block codecs, the writer and the reader (see gguf.h for the
// byte layouts).
#include "kernels/gguf.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "kernels/safetensors.h"

namespace qat::kernels {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "GGUF data is little-endian; bulk copies assume a little-endian host");

namespace {

uint32_t FloatBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}

float BitsFloat(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// fp16
//
// binary32: sign 1 | exponent 8 (bias 127) | mantissa 23.  binary16: sign 1 | exponent 5 (bias 15)
// | mantissa 10. Normal halves cover [2^-14, 65504]; subnormal halves are multiples of 2^-24.

uint16_t FloatToHalf(float f) {
  const uint32_t x = FloatBits(f);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t abs = x & 0x7fffffffu;
  if (abs >= 0x7f800000u) {  // infinity, or NaN (kept NaN: the quiet bit is forced on)
    if (abs == 0x7f800000u) return sign | 0x7c00u;
    return sign | 0x7e00u | static_cast<uint16_t>((abs >> 13) & 0x3ffu);
  }
  // 65520 = halfway between 65504 (the largest half) and 65536: ties to even go up to infinity.
  if (abs >= 0x477ff000u) return sign | 0x7c00u;
  if (abs < 0x38800000u) {               // below 2^-14: a subnormal half (or zero)
    if (abs < 0x33000000u) return sign;  // below 2^-25 (half of the smallest subnormal): zero
    // value / 2^-24 = mantissa_with_implicit_bit * 2^(exponent - 126); exponent is 102..112 here,
    // so shift right by 14..24 bits and round the dropped bits to nearest even.
    const uint32_t exponent = abs >> 23;
    const uint32_t mantissa = (abs & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126 - exponent;
    uint32_t q = mantissa >> shift;
    const uint32_t rest = mantissa & ((1u << shift) - 1);
    const uint32_t halfway = 1u << (shift - 1);
    if (rest > halfway || (rest == halfway && (q & 1))) ++q;  // may carry into the smallest normal
    return sign | static_cast<uint16_t>(q);
  }
  // Normal: rebias the exponent (127 -> 15) and keep the top 10 mantissa bits, rounding the 13
  // dropped bits to nearest even. A carry out of the mantissa correctly bumps the exponent.
  uint32_t h = (abs >> 13) - ((127 - 15) << 10);
  const uint32_t rest = abs & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1))) ++h;
  return sign | static_cast<uint16_t>(h);
}

float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  const uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24, exact in binary32
    const float magnitude = static_cast<float>(mantissa) * (1.0f / 16777216.0f);
    return sign != 0 ? -magnitude : magnitude;
  }
  if (exponent == 31) return BitsFloat(sign | 0x7f800000u | (mantissa << 13));
  return BitsFloat(sign | ((exponent + 127 - 15) << 23) | (mantissa << 13));
}

// ---------------------------------------------------------------------------------------------
// ggml types

bool IsSupportedGgmlType(uint32_t id) {
  switch (static_cast<GgmlType>(id)) {
    case GgmlType::kF32:
    case GgmlType::kF16:
    case GgmlType::kQ4_0:
    case GgmlType::kQ4_1:
    case GgmlType::kQ8_0:
    case GgmlType::kTQ1_0:
    case GgmlType::kTQ2_0:
      return true;
  }
  return false;
}

const char* GgmlTypeName(GgmlType type) {
  switch (type) {
    case GgmlType::kF32:
      return "F32";
    case GgmlType::kF16:
      return "F16";
    case GgmlType::kQ4_0:
      return "Q4_0";
    case GgmlType::kQ4_1:
      return "Q4_1";
    case GgmlType::kQ8_0:
      return "Q8_0";
    case GgmlType::kTQ1_0:
      return "TQ1_0";
    case GgmlType::kTQ2_0:
      return "TQ2_0";
  }
  return "?";
}

int64_t GgmlBlockElements(GgmlType type) {
  switch (type) {
    case GgmlType::kQ4_0:
    case GgmlType::kQ4_1:
      return kQ4Block;
    case GgmlType::kQ8_0:
      return kQ8_0Block;
    case GgmlType::kTQ1_0:
    case GgmlType::kTQ2_0:
      return kQkK;
    default:
      return 1;
  }
}

int64_t GgmlBlockBytes(GgmlType type) {
  switch (type) {
    case GgmlType::kF32:
      return 4;
    case GgmlType::kF16:
      return 2;
    case GgmlType::kQ4_0:
      return kQ4_0BlockBytes;
    case GgmlType::kQ4_1:
      return kQ4_1BlockBytes;
    case GgmlType::kQ8_0:
      return kQ8_0BlockBytes;
    case GgmlType::kTQ1_0:
      return kTq1BlockBytes;
    case GgmlType::kTQ2_0:
      return kTq2BlockBytes;
  }
  return 0;
}

absl::StatusOr<int64_t> GgmlTensorBytes(GgmlType type, const std::vector<int64_t>& dims) {
  if (dims.empty() || dims.size() > static_cast<size_t>(kGgufMaxDims)) {
    return absl::InvalidArgumentError(
        absl::StrCat(dims.size(), " dimensions; GGUF tensors have 1 to ", kGgufMaxDims));
  }
  for (int64_t d : dims) {
    if (d < 0) return absl::InvalidArgumentError(absl::StrCat("negative dimension ", d));
  }
  const int64_t block = GgmlBlockElements(type);
  if (dims[0] % block != 0) {
    return absl::InvalidArgumentError(absl::StrCat("row length ", dims[0], " is not a multiple of ",
                                                   block, " (the ", GgmlTypeName(type),
                                                   " block size)"));
  }
  // Both the element count and the byte count must fit in int64 (ggml checks the same).
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  int64_t elements = 1;
  for (int64_t d : dims) {
    if (d != 0 && elements > kMax / d) {
      return absl::InvalidArgumentError("tensor element count overflows int64");
    }
    elements *= d;
  }
  const int64_t row_blocks = dims[0] / block;
  if (row_blocks > kMax / GgmlBlockBytes(type)) {
    return absl::InvalidArgumentError("tensor size overflows int64");
  }
  int64_t bytes = row_blocks * GgmlBlockBytes(type);
  for (size_t i = 1; i < dims.size(); ++i) {
    if (dims[i] != 0 && bytes > kMax / dims[i]) {
      return absl::InvalidArgumentError("tensor size overflows int64");
    }
    bytes *= dims[i];
  }
  return bytes;
}

// ---------------------------------------------------------------------------------------------
// Blocks

namespace {

uint8_t TritCode(int8_t t) { return static_cast<uint8_t>(t < 0 ? 0 : (t > 0 ? 2 : 1)); }

void StoreHalf(uint16_t h, uint8_t* out) {
  out[0] = static_cast<uint8_t>(h & 0xff);
  out[1] = static_cast<uint8_t>(h >> 8);
}

uint16_t LoadHalf(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }

// Packs five base-3 digits (c0 most significant) into one byte: ceil(v * 256 / 243).
uint8_t PackBase3(const uint8_t* codes) {
  uint32_t v = 0;
  for (int n = 0; n < 5; ++n) v = v * 3 + codes[n];
  return static_cast<uint8_t>((v * 256 + 242) / 243);
}

// Digit n (0 = most significant) of a byte made by PackBase3: multiplying by 3^n modulo 256 moves
// digit n to the top, and (q * 3) >> 8 reads the top digit.
uint8_t Base3Digit(uint8_t byte, int n) {
  static constexpr uint8_t kPow3[5] = {1, 3, 9, 27, 81};
  const uint8_t q = static_cast<uint8_t>(byte * kPow3[n]);
  return static_cast<uint8_t>((q * 3) >> 8);
}

}  // namespace

void EncodeTq2Block(const int8_t* trits, uint16_t d, uint8_t* out) {
  for (int h = 0; h < 2; ++h) {
    for (int m = 0; m < 32; ++m) {
      uint8_t byte = 0;
      for (int n = 0; n < 4; ++n) byte |= TritCode(trits[128 * h + m + 32 * n]) << (2 * n);
      out[32 * h + m] = byte;
    }
  }
  StoreHalf(d, out + 64);
}

void DecodeTq2Block(const uint8_t* block, int8_t* trits, uint16_t* d) {
  for (int h = 0; h < 2; ++h) {
    for (int m = 0; m < 32; ++m) {
      for (int n = 0; n < 4; ++n) {
        trits[128 * h + m + 32 * n] = static_cast<int8_t>(((block[32 * h + m] >> (2 * n)) & 3) - 1);
      }
    }
  }
  *d = LoadHalf(block + 64);
}

void EncodeTq1Block(const int8_t* trits, uint16_t d, uint8_t* out) {
  uint8_t codes[5];
  for (int m = 0; m < 32; ++m) {  // elements 0..159
    for (int n = 0; n < 5; ++n) codes[n] = TritCode(trits[m + 32 * n]);
    out[m] = PackBase3(codes);
  }
  for (int m = 0; m < 16; ++m) {  // elements 160..239
    for (int n = 0; n < 5; ++n) codes[n] = TritCode(trits[160 + m + 16 * n]);
    out[32 + m] = PackBase3(codes);
  }
  for (int j = 0; j < 4; ++j) {  // elements 240..255: four digits, the fifth is 0
    for (int n = 0; n < 4; ++n) codes[n] = TritCode(trits[240 + j + 4 * n]);
    codes[4] = 0;
    out[48 + j] = PackBase3(codes);
  }
  StoreHalf(d, out + 52);
}

void DecodeTq1Block(const uint8_t* block, int8_t* trits, uint16_t* d) {
  for (int m = 0; m < 32; ++m) {
    for (int n = 0; n < 5; ++n)
      trits[m + 32 * n] = static_cast<int8_t>(Base3Digit(block[m], n) - 1);
  }
  for (int m = 0; m < 16; ++m) {
    for (int n = 0; n < 5; ++n) {
      trits[160 + m + 16 * n] = static_cast<int8_t>(Base3Digit(block[32 + m], n) - 1);
    }
  }
  for (int j = 0; j < 4; ++j) {
    for (int n = 0; n < 4; ++n) {
      trits[240 + j + 4 * n] = static_cast<int8_t>(Base3Digit(block[48 + j], n) - 1);
    }
  }
  *d = LoadHalf(block + 52);
}

void EncodeQ8_0Block(const float* x, uint8_t* out) {
  float absmax = 0.0f;
  for (int i = 0; i < kQ8_0Block; ++i) absmax = std::max(absmax, std::fabs(x[i]));
  const float d = absmax / 127.0f;
  const float inv_d = d != 0.0f ? 1.0f / d : 0.0f;
  StoreHalf(FloatToHalf(d), out);
  for (int i = 0; i < kQ8_0Block; ++i) {
    // |x * inv_d| <= 127 up to rounding; the clamp only guards against non-finite input.
    const float q = std::round(x[i] * inv_d);
    out[2 + i] = static_cast<uint8_t>(
        static_cast<int8_t>(std::isnan(q) ? 0.0f : std::clamp(q, -127.0f, 127.0f)));
  }
}

void DecodeQ8_0Block(const uint8_t* block, float* x) {
  const float d = HalfToFloat(LoadHalf(block));
  for (int i = 0; i < kQ8_0Block; ++i) x[i] = static_cast<int8_t>(block[2 + i]) * d;
}

namespace {

// qs[16] of a Q4_0 / Q4_1 block: element j in the low nibble of byte j, element j + 16 in its
// high nibble.
void PackNibbles(const uint8_t* codes, uint8_t* qs) {
  for (int j = 0; j < 16; ++j) {
    const uint8_t lo = std::min<uint8_t>(codes[j], 15), hi = std::min<uint8_t>(codes[j + 16], 15);
    qs[j] = static_cast<uint8_t>(lo | (hi << 4));
  }
}

int Nibble(const uint8_t* qs, int i) { return i < 16 ? qs[i] & 15 : qs[i - 16] >> 4; }

}  // namespace

void EncodeQ4_0Block(const uint8_t* codes, uint16_t d, uint8_t* out) {
  StoreHalf(d, out);
  PackNibbles(codes, out + 2);
}

void EncodeQ4_1Block(const uint8_t* codes, uint16_t d, uint16_t m, uint8_t* out) {
  StoreHalf(d, out);
  StoreHalf(m, out + 2);
  PackNibbles(codes, out + 4);
}

void DecodeQ4_0Block(const uint8_t* block, float* x) {
  const float d = HalfToFloat(LoadHalf(block));
  for (int i = 0; i < kQ4Block; ++i) x[i] = static_cast<float>(Nibble(block + 2, i) - 8) * d;
}

void DecodeQ4_1Block(const uint8_t* block, float* x) {
  const float d = HalfToFloat(LoadHalf(block)), m = HalfToFloat(LoadHalf(block + 2));
  for (int i = 0; i < kQ4Block; ++i) x[i] = static_cast<float>(Nibble(block + 4, i)) * d + m;
}

void EncodeTernaryRow(GgmlType type, const int8_t* trits, int64_t n, float scale, uint8_t* out) {
  const uint16_t d = FloatToHalf(scale);
  for (int64_t b = 0; b < n / kQkK; ++b) {
    if (type == GgmlType::kTQ1_0) {
      EncodeTq1Block(trits + b * kQkK, d, out + b * kTq1BlockBytes);
    } else {
      EncodeTq2Block(trits + b * kQkK, d, out + b * kTq2BlockBytes);
    }
  }
}

void EncodeFloatRow(GgmlType type, const float* x, int64_t n, uint8_t* out) {
  if (n <= 0) return;
  switch (type) {
    case GgmlType::kF32:
      std::memcpy(out, x, static_cast<size_t>(n) * sizeof(float));
      return;
    case GgmlType::kF16:
      for (int64_t i = 0; i < n; ++i) StoreHalf(FloatToHalf(x[i]), out + 2 * i);
      return;
    case GgmlType::kQ8_0:
      for (int64_t b = 0; b < n / kQ8_0Block; ++b) {
        EncodeQ8_0Block(x + b * kQ8_0Block, out + b * kQ8_0BlockBytes);
      }
      return;
    default:
      return;  // ternary and 4-bit types take codes: EncodeTernaryRow, EncodeQ4_*Block
  }
}

void DequantizeRow(GgmlType type, const uint8_t* data, int64_t n, float* out) {
  if (n <= 0) return;  // out may be null for an empty tensor
  int8_t trits[kQkK];
  uint16_t d = 0;
  switch (type) {
    case GgmlType::kF32:
      std::memcpy(out, data, static_cast<size_t>(n) * sizeof(float));
      return;
    case GgmlType::kF16:
      for (int64_t i = 0; i < n; ++i) out[i] = HalfToFloat(LoadHalf(data + 2 * i));
      return;
    case GgmlType::kQ8_0:
      for (int64_t b = 0; b < n / kQ8_0Block; ++b) {
        DecodeQ8_0Block(data + b * kQ8_0BlockBytes, out + b * kQ8_0Block);
      }
      return;
    case GgmlType::kQ4_0:
      for (int64_t b = 0; b < n / kQ4Block; ++b) {
        DecodeQ4_0Block(data + b * kQ4_0BlockBytes, out + b * kQ4Block);
      }
      return;
    case GgmlType::kQ4_1:
      for (int64_t b = 0; b < n / kQ4Block; ++b) {
        DecodeQ4_1Block(data + b * kQ4_1BlockBytes, out + b * kQ4Block);
      }
      return;
    case GgmlType::kTQ1_0:
    case GgmlType::kTQ2_0:
      for (int64_t b = 0; b < n / kQkK; ++b) {
        if (type == GgmlType::kTQ1_0) {
          DecodeTq1Block(data + b * kTq1BlockBytes, trits, &d);
        } else {
          DecodeTq2Block(data + b * kTq2BlockBytes, trits, &d);
        }
        const float scale = HalfToFloat(d);
        for (int64_t i = 0; i < kQkK; ++i) out[b * kQkK + i] = trits[i] * scale;
      }
      return;
  }
}

// ---------------------------------------------------------------------------------------------
// Values

const char* GgufTypeName(GgufType type) {
  static constexpr const char* kNames[] = {"UINT8",  "INT8",    "UINT16", "INT16",  "UINT32",
                                           "INT32",  "FLOAT32", "BOOL",   "STRING", "ARRAY",
                                           "UINT64", "INT64",   "FLOAT64"};
  const auto id = static_cast<uint32_t>(type);
  return id < 13 ? kNames[id] : "?";
}

GgufValue GgufValue::Integer(GgufType type, uint64_t bits) {
  GgufValue v;
  v.type_ = type;
  v.bits_ = bits;
  return v;
}

GgufValue GgufValue::Float32(float f) {
  GgufValue v;
  v.type_ = GgufType::kFloat32;
  v.float_ = f;
  return v;
}

GgufValue GgufValue::Float64(double f) {
  GgufValue v;
  v.type_ = GgufType::kFloat64;
  v.float_ = f;
  return v;
}

GgufValue GgufValue::String(std::string s) {
  GgufValue v;
  v.type_ = GgufType::kString;
  v.string_ = std::move(s);
  return v;
}

GgufValue GgufValue::Array(GgufType elem_type, std::vector<GgufValue> elems) {
  GgufValue v;
  v.type_ = GgufType::kArray;
  v.elem_type_ = elem_type;
  v.array_ = std::move(elems);
  return v;
}

GgufValue GgufValue::StringArray(const std::vector<std::string>& v) {
  std::vector<GgufValue> elems;
  elems.reserve(v.size());
  for (const std::string& s : v) elems.push_back(String(s));
  return Array(GgufType::kString, std::move(elems));
}

GgufValue GgufValue::Float32Array(const std::vector<float>& v) {
  std::vector<GgufValue> elems;
  elems.reserve(v.size());
  for (float f : v) elems.push_back(Float32(f));
  return Array(GgufType::kFloat32, std::move(elems));
}

GgufValue GgufValue::Int32Array(const std::vector<int32_t>& v) {
  std::vector<GgufValue> elems;
  elems.reserve(v.size());
  for (int32_t i : v) elems.push_back(Int32(i));
  return Array(GgufType::kInt32, std::move(elems));
}

bool GgufValue::operator==(const GgufValue& o) const {
  if (type_ != o.type_) return false;
  switch (type_) {
    case GgufType::kFloat32:
    case GgufType::kFloat64:
      return std::memcmp(&float_, &o.float_, sizeof(float_)) == 0;
    case GgufType::kString:
      return string_ == o.string_;
    case GgufType::kArray:
      return elem_type_ == o.elem_type_ && array_ == o.array_;
    default:
      return bits_ == o.bits_;
  }
}

// ---------------------------------------------------------------------------------------------
// Writer

namespace {

// Fixed byte size of a scalar type; 0 for STRING and ARRAY (variable) and unknown ids.
size_t ScalarBytes(GgufType type) {
  switch (type) {
    case GgufType::kUint8:
    case GgufType::kInt8:
    case GgufType::kBool:
      return 1;
    case GgufType::kUint16:
    case GgufType::kInt16:
      return 2;
    case GgufType::kUint32:
    case GgufType::kInt32:
    case GgufType::kFloat32:
      return 4;
    case GgufType::kUint64:
    case GgufType::kInt64:
    case GgufType::kFloat64:
      return 8;
    default:
      return 0;
  }
}

bool IsValidValueType(uint32_t id) { return id <= 12; }

void PutLe(std::string* out, uint64_t v, size_t bytes) {
  for (size_t i = 0; i < bytes; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

void PutString(std::string* out, const std::string& s) {
  PutLe(out, s.size(), 8);
  out->append(s);
}

// Appends a value's encoding (without its type tag); `where` names it in errors.
absl::Status PutValue(std::string* out, const GgufValue& v, const std::string& where) {
  switch (v.type()) {
    case GgufType::kFloat32: {
      PutLe(out, FloatBits(static_cast<float>(v.as_float())), 4);
      return absl::OkStatus();
    }
    case GgufType::kFloat64: {
      const double f = v.as_float();
      uint64_t bits;
      std::memcpy(&bits, &f, sizeof(bits));
      PutLe(out, bits, 8);
      return absl::OkStatus();
    }
    case GgufType::kString:
      PutString(out, v.as_string());
      return absl::OkStatus();
    case GgufType::kArray: {
      if (v.elem_type() == GgufType::kArray ||
          !IsValidValueType(static_cast<uint32_t>(v.elem_type()))) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": array element type ", GgufTypeName(v.elem_type()),
                         " is not allowed (ggml rejects nested arrays)"));
      }
      PutLe(out, static_cast<uint32_t>(v.elem_type()), 4);
      PutLe(out, v.as_array().size(), 8);
      for (size_t i = 0; i < v.as_array().size(); ++i) {
        const GgufValue& e = v.as_array()[i];
        if (e.type() != v.elem_type()) {
          return absl::InvalidArgumentError(absl::StrCat(where, "[", i, "] is ",
                                                         GgufTypeName(e.type()), " in an array of ",
                                                         GgufTypeName(v.elem_type())));
        }
        if (absl::Status s = PutValue(out, e, where); !s.ok()) return s;
      }
      return absl::OkStatus();
    }
    default: {
      const size_t bytes = ScalarBytes(v.type());
      if (bytes == 0) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": unknown value type ", static_cast<uint32_t>(v.type())));
      }
      PutLe(out, v.as_uint(), bytes);
      return absl::OkStatus();
    }
  }
}

uint64_t AlignUp(uint64_t x, uint64_t alignment) {
  return (x + alignment - 1) / alignment * alignment;
}

bool IsPowerOfTwo(uint64_t x) { return x != 0 && (x & (x - 1)) == 0; }

}  // namespace

void GgufWriter::SetKv(const std::string& key, GgufValue value) {
  for (auto& [k, v] : kvs_) {
    if (k == key) {
      v = std::move(value);
      return;
    }
  }
  kvs_.emplace_back(key, std::move(value));
}

absl::Status GgufWriter::AddTensor(const std::string& name, GgmlType type,
                                   std::vector<int64_t> dims, std::string bytes) {
  if (name.empty() || name.size() > kGgufMaxNameBytes) {
    return absl::InvalidArgumentError(absl::StrCat("tensor name \"", name, "\" has ", name.size(),
                                                   " bytes; ggml allows 1 to ", kGgufMaxNameBytes));
  }
  for (const Tensor& t : tensors_) {
    if (t.name == name) return absl::InvalidArgumentError("duplicate tensor " + name);
  }
  if (!IsSupportedGgmlType(static_cast<uint32_t>(type))) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor ", name, ": unsupported ggml type ", static_cast<uint32_t>(type)));
  }
  absl::StatusOr<int64_t> expected = GgmlTensorBytes(type, dims);
  if (!expected.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor ", name, ": ", expected.status().message()));
  }
  if (static_cast<int64_t>(bytes.size()) != *expected) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", name, ": ", bytes.size(),
                                                   " bytes of data, expected ", *expected, " for ",
                                                   GgmlTypeName(type)));
  }
  tensors_.push_back({name, type, std::move(dims), std::move(bytes)});
  return absl::OkStatus();
}

absl::StatusOr<std::string> GgufWriter::Serialize() const {
  uint64_t alignment = kGgufDefaultAlignment;
  for (const auto& [key, value] : kvs_) {
    if (key != "general.alignment") continue;
    if (value.type() != GgufType::kUint32 || !IsPowerOfTwo(value.as_uint())) {
      return absl::InvalidArgumentError(
          "general.alignment must be a UINT32 power of two (ggml rejects anything else)");
    }
    alignment = value.as_uint();
  }

  std::string out = "GGUF";
  PutLe(&out, 3, 4);
  PutLe(&out, tensors_.size(), 8);
  PutLe(&out, kvs_.size(), 8);
  for (const auto& [key, value] : kvs_) {
    PutString(&out, key);
    PutLe(&out, static_cast<uint32_t>(value.type()), 4);
    if (absl::Status s = PutValue(&out, value, "key " + key); !s.ok()) return s;
  }
  uint64_t offset = 0;
  for (const Tensor& t : tensors_) {
    PutString(&out, t.name);
    PutLe(&out, t.dims.size(), 4);
    for (int64_t d : t.dims) PutLe(&out, static_cast<uint64_t>(d), 8);
    PutLe(&out, static_cast<uint32_t>(t.type), 4);
    PutLe(&out, offset, 8);
    offset = AlignUp(offset + t.bytes.size(), alignment);
  }
  out.resize(AlignUp(out.size(), alignment), '\0');
  const size_t data_start = out.size();
  out.reserve(data_start + offset);
  for (const Tensor& t : tensors_) {
    out.append(t.bytes);
    out.resize(data_start + AlignUp(out.size() - data_start, alignment), '\0');
  }
  return out;
}

absl::Status GgufWriter::Write(const std::string& path) const {
  absl::StatusOr<std::string> bytes = Serialize();
  if (!bytes.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", bytes.status().message()));
  }
  return WriteFileAtomic(path, *bytes);
}

// ---------------------------------------------------------------------------------------------
// Reader

int64_t GgufTensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  return n;
}

namespace {

// Reads little-endian fields from a byte string, never past its end.
class Cursor {
 public:
  Cursor(const std::string& bytes, const std::string& path) : bytes_(bytes), path_(path) {}

  uint64_t pos() const { return pos_; }
  uint64_t left() const { return bytes_.size() - pos_; }

  absl::Status Error(uint64_t at, const std::string& what) const {
    return absl::InvalidArgumentError(absl::StrCat(path_, ": byte ", at, ": ", what));
  }

  absl::Status Read(size_t bytes, const char* what, uint64_t* out) {
    if (left() < bytes) {
      return Error(pos_, absl::StrCat("truncated: ", what, " needs ", bytes, " bytes, ", left(),
                                      " left in the file"));
    }
    uint64_t v = 0;
    for (size_t i = 0; i < bytes; ++i) {
      v |= static_cast<uint64_t>(static_cast<uint8_t>(bytes_[pos_ + i])) << (8 * i);
    }
    pos_ += bytes;
    *out = v;
    return absl::OkStatus();
  }

  absl::Status ReadString(const char* what, std::string* out) {
    const uint64_t at = pos_;
    uint64_t len = 0;
    if (absl::Status s = Read(8, what, &len); !s.ok()) return s;
    if (len > left()) {
      return Error(at, absl::StrCat(what, " length ", len, " exceeds the ", left(),
                                    " bytes left in the file"));
    }
    out->assign(bytes_, pos_, len);
    pos_ += len;
    return absl::OkStatus();
  }

 private:
  const std::string& bytes_;
  const std::string& path_;
  uint64_t pos_ = 0;
};

// Reads one value of `type` (not its tag). `what` names it in errors.
absl::Status ReadValue(Cursor& c, uint32_t type, bool in_array, const std::string& what,
                       GgufValue* out) {
  const uint64_t at = c.pos();
  if (!IsValidValueType(type)) {
    return c.Error(at, absl::StrCat(what, ": unknown value type ", type, " (valid: 0..12)"));
  }
  const auto t = static_cast<GgufType>(type);
  uint64_t bits = 0;
  switch (t) {
    case GgufType::kString: {
      std::string s;
      if (absl::Status st = c.ReadString(what.c_str(), &s); !st.ok()) return st;
      *out = GgufValue::String(std::move(s));
      return absl::OkStatus();
    }
    case GgufType::kArray: {
      if (in_array) return c.Error(at, what + ": nested arrays are not supported");
      uint64_t elem_type = 0, count = 0;
      if (absl::Status s = c.Read(4, "array element type", &elem_type); !s.ok()) return s;
      if (!IsValidValueType(static_cast<uint32_t>(elem_type))) {
        return c.Error(at, absl::StrCat(what, ": unknown array element type ", elem_type));
      }
      if (elem_type == static_cast<uint32_t>(GgufType::kArray)) {
        return c.Error(at, what + ": nested arrays are not supported");
      }
      if (absl::Status s = c.Read(8, "array count", &count); !s.ok()) return s;
      // Every element takes at least its fixed size (8 bytes for a string's length), so a count
      // the rest of the file cannot hold is rejected before anything is allocated.
      const uint64_t min_bytes = elem_type == static_cast<uint32_t>(GgufType::kString)
                                     ? 8
                                     : ScalarBytes(static_cast<GgufType>(elem_type));
      if (count > c.left() / min_bytes) {
        return c.Error(at, absl::StrCat(what, ": array of ", count, " ",
                                        GgufTypeName(static_cast<GgufType>(elem_type)),
                                        " cannot fit in the ", c.left(), " bytes left"));
      }
      std::vector<GgufValue> elems(count);
      for (uint64_t i = 0; i < count; ++i) {
        if (absl::Status s = ReadValue(c, static_cast<uint32_t>(elem_type), true,
                                       absl::StrCat(what, "[", i, "]"), &elems[i]);
            !s.ok()) {
          return s;
        }
      }
      *out = GgufValue::Array(static_cast<GgufType>(elem_type), std::move(elems));
      return absl::OkStatus();
    }
    case GgufType::kFloat32: {
      if (absl::Status s = c.Read(4, what.c_str(), &bits); !s.ok()) return s;
      *out = GgufValue::Float32(BitsFloat(static_cast<uint32_t>(bits)));
      return absl::OkStatus();
    }
    case GgufType::kFloat64: {
      if (absl::Status s = c.Read(8, what.c_str(), &bits); !s.ok()) return s;
      double f;
      std::memcpy(&f, &bits, sizeof(f));
      *out = GgufValue::Float64(f);
      return absl::OkStatus();
    }
    default:
      break;
  }
  if (absl::Status s = c.Read(ScalarBytes(t), what.c_str(), &bits); !s.ok()) return s;
  switch (t) {
    case GgufType::kUint8:
      *out = GgufValue::Uint8(static_cast<uint8_t>(bits));
      break;
    case GgufType::kInt8:
      *out = GgufValue::Int8(static_cast<int8_t>(bits));
      break;
    case GgufType::kUint16:
      *out = GgufValue::Uint16(static_cast<uint16_t>(bits));
      break;
    case GgufType::kInt16:
      *out = GgufValue::Int16(static_cast<int16_t>(bits));
      break;
    case GgufType::kUint32:
      *out = GgufValue::Uint32(static_cast<uint32_t>(bits));
      break;
    case GgufType::kInt32:
      *out = GgufValue::Int32(static_cast<int32_t>(bits));
      break;
    case GgufType::kUint64:
      *out = GgufValue::Uint64(bits);
      break;
    case GgufType::kInt64:
      *out = GgufValue::Int64(static_cast<int64_t>(bits));
      break;
    case GgufType::kBool:
      if (bits > 1) return c.Error(at, absl::StrCat(what, ": BOOL byte is ", bits, ", not 0 or 1"));
      *out = GgufValue::Bool(bits == 1);
      break;
    default:
      break;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<GgufFile> GgufFile::Open(const std::string& path) {
  absl::StatusOr<std::string> bytes = ReadFile(path);
  if (!bytes.ok()) return bytes.status();
  return Parse(std::move(*bytes), path);
}

absl::StatusOr<GgufFile> GgufFile::Parse(std::string bytes, const std::string& path) {
  GgufFile f;
  f.path_ = path;
  f.bytes_ = std::move(bytes);
  Cursor c(f.bytes_, f.path_);

  if (f.bytes_.size() < 4 || f.bytes_.compare(0, 4, "GGUF") != 0) {
    return c.Error(0, "not a GGUF file (the first 4 bytes are not \"GGUF\")");
  }
  uint64_t magic = 0, version = 0, tensor_count = 0, kv_count = 0;
  if (absl::Status s = c.Read(4, "magic", &magic); !s.ok()) return s;
  if (absl::Status s = c.Read(4, "version", &version); !s.ok()) return s;
  if (version != 2 && version != 3) {
    return c.Error(4, absl::StrCat("GGUF version ", version, " is not supported (expected 3)"));
  }
  f.version_ = static_cast<uint32_t>(version);
  if (absl::Status s = c.Read(8, "tensor count", &tensor_count); !s.ok()) return s;
  if (absl::Status s = c.Read(8, "key/value count", &kv_count); !s.ok()) return s;
  // The smallest key/value pair is 13 bytes (empty key, tag, one byte); the smallest tensor info
  // is 32 bytes (empty name, n_dims, one dim, type, offset).
  if (kv_count > c.left() / 13) {
    return c.Error(16, absl::StrCat("key/value count ", kv_count, " cannot fit in the ", c.left(),
                                    " bytes left"));
  }
  if (tensor_count > c.left() / 32) {
    return c.Error(8, absl::StrCat("tensor count ", tensor_count, " cannot fit in the ", c.left(),
                                   " bytes left"));
  }

  std::set<std::string> keys;
  f.kvs_.reserve(kv_count);
  for (uint64_t i = 0; i < kv_count; ++i) {
    const uint64_t at = c.pos();
    std::string key;
    uint64_t type = 0;
    if (absl::Status s = c.ReadString("key", &key); !s.ok()) return s;
    if (!keys.insert(key).second) return c.Error(at, "duplicate key \"" + key + "\"");
    if (absl::Status s = c.Read(4, "value type", &type); !s.ok()) return s;
    GgufValue value;
    if (absl::Status s = ReadValue(c, static_cast<uint32_t>(type), false, "key " + key, &value);
        !s.ok()) {
      return s;
    }
    if (key == "general.alignment") {
      if (value.type() != GgufType::kUint32 || !IsPowerOfTwo(value.as_uint())) {
        return c.Error(at, "general.alignment must be a UINT32 power of two");
      }
      f.alignment_ = static_cast<uint32_t>(value.as_uint());
    }
    f.kvs_.emplace_back(std::move(key), std::move(value));
  }

  std::set<std::string> names;
  f.tensors_.reserve(tensor_count);
  for (uint64_t i = 0; i < tensor_count; ++i) {
    const uint64_t at = c.pos();
    GgufTensorInfo t;
    uint64_t n_dims = 0, type = 0;
    if (absl::Status s = c.ReadString("tensor name", &t.name); !s.ok()) return s;
    if (t.name.size() > kGgufMaxNameBytes) {
      return c.Error(at, absl::StrCat("tensor name of ", t.name.size(), " bytes (ggml allows ",
                                      kGgufMaxNameBytes, ")"));
    }
    if (!names.insert(t.name).second) return c.Error(at, "duplicate tensor \"" + t.name + "\"");
    if (absl::Status s = c.Read(4, "n_dims", &n_dims); !s.ok()) return s;
    if (n_dims < 1 || n_dims > static_cast<uint64_t>(kGgufMaxDims)) {
      return c.Error(at, absl::StrCat("tensor ", t.name, " has ", n_dims, " dimensions (1 to ",
                                      kGgufMaxDims, " allowed)"));
    }
    for (uint64_t d = 0; d < n_dims; ++d) {
      uint64_t dim = 0;
      if (absl::Status s = c.Read(8, "dimension", &dim); !s.ok()) return s;
      if (dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return c.Error(at, absl::StrCat("tensor ", t.name, ": dimension ", dim, " is too large"));
      }
      t.dims.push_back(static_cast<int64_t>(dim));
    }
    if (absl::Status s = c.Read(4, "ggml type", &type); !s.ok()) return s;
    if (!IsSupportedGgmlType(static_cast<uint32_t>(type))) {
      return c.Error(at,
                     absl::StrCat("tensor ", t.name, ": ggml type ", type,
                                  " is not supported (F32, F16, Q4_0, Q4_1, Q8_0, TQ1_0, TQ2_0)"));
    }
    t.type = static_cast<GgmlType>(type);
    absl::StatusOr<int64_t> nbytes = GgmlTensorBytes(t.type, t.dims);
    if (!nbytes.ok())
      return c.Error(at, absl::StrCat("tensor ", t.name, ": ", nbytes.status().message()));
    t.bytes = *nbytes;
    if (absl::Status s = c.Read(8, "tensor offset", &t.offset); !s.ok()) return s;
    if (t.offset % f.alignment_ != 0) {
      return c.Error(at, absl::StrCat("tensor ", t.name, ": offset ", t.offset,
                                      " is not a multiple of the alignment ", f.alignment_));
    }
    f.tensors_.push_back(std::move(t));
  }

  f.data_offset_ = AlignUp(c.pos(), f.alignment_);
  if (f.tensors_.empty()) return f;
  if (f.data_offset_ > f.bytes_.size()) {
    return c.Error(c.pos(), absl::StrCat("the data section would start at ", f.data_offset_,
                                         ", past the end of the file (", f.bytes_.size(), ")"));
  }
  const uint64_t data_size = f.bytes_.size() - f.data_offset_;
  std::vector<const GgufTensorInfo*> by_offset;
  for (const GgufTensorInfo& t : f.tensors_) {
    if (t.offset > data_size || static_cast<uint64_t>(t.bytes) > data_size - t.offset) {
      return c.Error(f.data_offset_, absl::StrCat("tensor ", t.name, ": bytes [", t.offset, ", ",
                                                  t.offset + static_cast<uint64_t>(t.bytes),
                                                  ") of the data section are out of range (it has ",
                                                  data_size, " bytes)"));
    }
    if (t.bytes > 0) by_offset.push_back(&t);
  }
  std::sort(by_offset.begin(), by_offset.end(),
            [](const GgufTensorInfo* a, const GgufTensorInfo* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const GgufTensorInfo& prev = *by_offset[i - 1];
    if (prev.offset + static_cast<uint64_t>(prev.bytes) > by_offset[i]->offset) {
      return c.Error(f.data_offset_,
                     absl::StrCat("tensors ", prev.name, " and ", by_offset[i]->name,
                                  " overlap in the data section"));
    }
  }
  return f;
}

const GgufValue* GgufFile::FindKv(const std::string& key) const {
  for (const auto& [k, v] : kvs_) {
    if (k == key) return &v;
  }
  return nullptr;
}

const GgufTensorInfo* GgufFile::FindTensor(const std::string& name) const {
  for (const GgufTensorInfo& t : tensors_) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

const uint8_t* GgufFile::Data(const GgufTensorInfo& t) const {
  return reinterpret_cast<const uint8_t*>(bytes_.data()) + data_offset_ + t.offset;
}

absl::StatusOr<std::vector<float>> GgufFile::Dequantize(const std::string& name) const {
  const GgufTensorInfo* t = FindTensor(name);
  if (t == nullptr) return absl::NotFoundError(absl::StrCat(path_, ": no tensor ", name));
  std::vector<float> out(static_cast<size_t>(t->numel()));
  DequantizeRow(t->type, Data(*t), t->numel(), out.data());
  return out;
}

}  // namespace qat::kernels
