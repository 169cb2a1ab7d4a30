// Tests of the JSON reader/writer and the safetensors reader/writer, including hostile inputs.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "kernels/json.h"
#include "kernels/safetensors.h"
#include "test_dir.h"

namespace qat::kernels {
namespace {

// Checks that `text` contains `part`; prints both when it does not.
#define EXPECT_CONTAINS(text, part)                          \
  EXPECT_NE(std::string(text).find(part), std::string::npos) \
      << "\"" << std::string(text) << "\" does not contain \"" << (part) << "\""

// ---------------------------------------------------------------------------------------------
// JSON

TEST(JsonTest, ParsesEveryTypeAndKeepsIntegersExact) {
  auto v = json::Parse(
      R"( {"n": null, "t": true, "f": false, "i": -12, "big": 9223372036854775807,
          "small": -9223372036854775808, "over": 9223372036854775808, "d": 1.5e2,
          "s": "x", "a": [1, [2]], "o": {}} )");
  ASSERT_TRUE(v.ok()) << v.status();
  ASSERT_TRUE(v->is_object());
  EXPECT_TRUE(v->Find("n")->is_null());
  EXPECT_TRUE(v->Find("t")->as_bool());
  EXPECT_TRUE(v->Find("f")->is_bool());
  EXPECT_FALSE(v->Find("f")->as_bool());
  EXPECT_EQ(v->Find("i")->as_int(), -12);
  EXPECT_TRUE(v->Find("big")->is_int());
  EXPECT_EQ(v->Find("big")->as_int(), std::numeric_limits<int64_t>::max());
  EXPECT_EQ(v->Find("small")->as_int(), std::numeric_limits<int64_t>::min());
  EXPECT_TRUE(v->Find("over")->is_double());  // past int64: kept as a double
  EXPECT_DOUBLE_EQ(v->Find("over")->as_double(), 9223372036854775808.0);
  EXPECT_TRUE(v->Find("d")->is_double());
  EXPECT_DOUBLE_EQ(v->Find("d")->as_double(), 150.0);
  EXPECT_EQ(v->Find("s")->as_string(), "x");
  ASSERT_EQ(v->Find("a")->as_array().size(), 2u);
  EXPECT_EQ(v->Find("a")->as_array()[1].as_array()[0].as_int(), 2);
  EXPECT_TRUE(v->Find("o")->is_object());
  EXPECT_EQ(v->Find("missing"), nullptr);
  // Members stay in file order.
  std::vector<std::string> keys;
  for (const auto& m : v->as_object()) keys.push_back(m.first);
  EXPECT_EQ(keys, (std::vector<std::string>{"n", "t", "f", "i", "big", "small", "over", "d", "s",
                                            "a", "o"}));
}

TEST(JsonTest, DecodesEscapesAndSurrogatePairs) {
  auto v = json::Parse(R"("a\"\\\/\b\f\n\r\t\u00e9\u20AC\ud83d\ude00\u0000z")");
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->as_string(), std::string("a\"\\/\b\f\n\r\t\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80") +
                                std::string(1, '\0') + "z");
  // Raw multi-byte UTF-8 passes through.
  auto raw = json::Parse("\"\xC3\xA9\xF0\x9F\x98\x80\"");
  ASSERT_TRUE(raw.ok()) << raw.status();
  EXPECT_EQ(raw->as_string(), "\xC3\xA9\xF0\x9F\x98\x80");
}

TEST(JsonTest, RejectsMalformedInputWithByteOffset) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"", "byte offset 0"},
      {"[1,]", "byte offset 3"},
      {"{\"a\":1,}", "byte offset 7"},
      {"{\"a\" 1}", "expected ':'"},
      {"01", "leading zero"},
      {"1.", "digit after '.'"},
      {"-", "digit"},
      {"1e", "exponent"},
      {"NaN", "expected a value"},
      {"tru", "expected 'true'"},
      {"[1] x", "unexpected data"},
      {"\"abc", "unterminated"},
      {"\"a\nb\"", "control character"},
      {"\"\\x\"", "invalid escape"},
      {"\"\\u12G4\"", "hex digit"},
      {"\"\\ud800\"", "surrogate"},
      {"\"\\udc00\"", "low surrogate"},
      {"\"\\ud800\\u0041\"", "surrogate"},
      {"\"\xC0\x80\"", "UTF-8"},          // overlong NUL
      {"\"\xED\xA0\x80\"", "UTF-8"},      // encoded surrogate
      {"\"\xF4\x90\x80\x80\"", "UTF-8"},  // above U+10FFFF
      {"\"\xE2\x82\"", "UTF-8"},          // truncated sequence
      {"\"\x80\"", "UTF-8"},              // lone continuation byte
      {"{\"a\":1,\"a\":2}", "duplicate key"},
      {"1e400", "too large"},
  };
  for (const auto& [text, expected] : cases) {
    auto v = json::Parse(text);
    ASSERT_FALSE(v.ok()) << "accepted: " << text;
    EXPECT_CONTAINS(std::string(v.status().message()), expected) << text;
    EXPECT_CONTAINS(std::string(v.status().message()), "byte offset") << text;
  }
  // A tiny number underflows to zero (as other readers do) instead of failing.
  auto tiny = json::Parse("-1e-400");
  ASSERT_TRUE(tiny.ok()) << tiny.status();
  EXPECT_EQ(tiny->as_double(), 0.0);
  EXPECT_TRUE(std::signbit(tiny->as_double()));
}

TEST(JsonTest, LimitsNestingDepth) {
  const std::string ok_depth = std::string(64, '[') + std::string(64, ']');
  EXPECT_TRUE(json::Parse(ok_depth).ok());
  const std::string too_deep = std::string(65, '[') + std::string(65, ']');
  auto v = json::Parse(too_deep);
  ASSERT_FALSE(v.ok());
  EXPECT_CONTAINS(std::string(v.status().message()), "nested deeper than 64");
  // Hostile depth far beyond any stack: an error, not a crash.
  EXPECT_FALSE(json::Parse(std::string(1000000, '[')).ok());
  EXPECT_FALSE(json::Parse(std::string(1000000, '{')).ok());
}

TEST(JsonTest, SerializeOutputParsesBack) {
  json::Value v = json::Value::MakeObject();
  v.Set("null", json::Value());
  v.Set("bool", json::Value::Bool(true));
  v.Set("int", json::Value::Int(std::numeric_limits<int64_t>::min()));
  v.Set("two", json::Value::Double(2.0));  // must stay a double
  v.Set("third", json::Value::Double(1.0 / 3.0));
  v.Set("huge", json::Value::Double(1e300));
  v.Set("neg_zero", json::Value::Double(-0.0));
  v.Set("quote\"key\\",
        json::Value::String("tab\t nl\n ctrl\x01 del\x7f \xC3\xA9 \xF0\x9F\x98\x80"));
  json::Value arr = json::Value::MakeArray();
  arr.Append(json::Value::Int(1));
  arr.Append(json::Value::MakeObject());
  arr.Append(json::Value::MakeArray());
  v.Set("arr", arr);
  const std::string text = json::Serialize(v);
  auto back = json::Parse(text);
  ASSERT_TRUE(back.ok()) << back.status() << "\n" << text;
  EXPECT_EQ(*back, v) << text;
  EXPECT_TRUE(back->Find("two")->is_double());
  EXPECT_TRUE(std::signbit(back->Find("neg_zero")->as_double()));

  // Set replaces an existing member in place.
  v.Set("null", json::Value::Int(5));
  EXPECT_EQ(v.as_object().front().second.as_int(), 5);

  // What JSON cannot express still gives valid JSON.
  EXPECT_EQ(json::Serialize(json::Value::Double(std::nan(""))), "null");
  EXPECT_EQ(json::Serialize(json::Value::String("\xFF")), "\"\xEF\xBF\xBD\"");
  EXPECT_FALSE(json::IsValidUtf8("\xFF"));
  EXPECT_TRUE(json::IsValidUtf8("\xC3\xA9"));
}

// ---------------------------------------------------------------------------------------------
// Safetensors: round trips

template <typename T>
void AddVector(SafetensorsWriter* w, const std::string& name, DType dtype,
               std::vector<int64_t> shape, const std::vector<T>& values) {
  w->Add(name, dtype, std::move(shape), values.data(), values.size() * sizeof(T));
}

TEST(SafetensorsTest, WriteReadRoundTrip) {
  const testing_util::TestDir tmp;
  const std::string dir = tmp.dir();
  const std::string path = dir + "/model.safetensors";
  const std::vector<float> f32 = {1.5f, -2.0f, 3.25f, 0.0f, 1e-20f, -7.0f};
  const std::vector<uint16_t> f16 = {0x3C00, 0xC000, 0x7BFF};  // 1, -2, 65504
  const std::vector<double> scalar = {3.5};
  const std::vector<int64_t> empty;
  const std::vector<uint8_t> u8 = {1, 2, 3};  // 3 bytes: the next tensor needs padding
  const std::vector<int32_t> i32 = {-1, 2147483647};
  const std::vector<uint16_t> bf16 = {0x3F80, 0xC0A0};  // 1, -5

  SafetensorsWriter w;
  AddVector(&w, "model.layers.0.weight", DType::kF32, {2, 3}, f32);
  AddVector(&w, "half", DType::kF16, {3}, f16);
  AddVector(&w, "scalar", DType::kF64, {}, scalar);
  AddVector(&w, "empty", DType::kI64, {0, 5}, empty);
  AddVector(&w, "bytes", DType::kU8, {3}, u8);
  AddVector(&w, "ints", DType::kI32, {1, 2}, i32);
  AddVector(&w, "brain", DType::kBF16, {2, 1}, bf16);
  w.SetMetadata("format", "qat-packed");
  w.SetMetadata("k\xC3\xA9y \"quoted\"", "v\nline");
  ASSERT_TRUE(w.Write(path).ok());
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp." + std::to_string(getpid())));

  auto f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->path(), path);
  ASSERT_EQ(f->tensors().size(), 7u);
  const std::vector<std::string> names = {
      "model.layers.0.weight", "half", "scalar", "empty", "bytes", "ints", "brain"};
  for (size_t i = 0; i < names.size(); ++i) {
    EXPECT_EQ(f->tensors()[i].name, names[i]);  // order as added
    // Back to back, no holes (Hugging Face's loader rejects gaps).
    EXPECT_EQ(f->tensors()[i].begin, i == 0 ? 0 : f->tensors()[i - 1].end) << names[i];
  }
  EXPECT_EQ(f->metadata().size(), 2u);
  EXPECT_EQ(f->metadata().at("format"), "qat-packed");
  EXPECT_EQ(f->metadata().at("k\xC3\xA9y \"quoted\""), "v\nline");

  const TensorInfo* t = f->Find("model.layers.0.weight");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->dtype, DType::kF32);
  EXPECT_EQ(t->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(t->numel(), 6);
  EXPECT_EQ(std::memcmp(f->Data(*t), f32.data(), 24), 0);
  auto f32_back = f->ReadF32("model.layers.0.weight");
  ASSERT_TRUE(f32_back.ok());
  EXPECT_EQ(*f32_back, f32);

  auto half = f->ReadF32("half");
  ASSERT_TRUE(half.ok());
  EXPECT_EQ(*half, (std::vector<float>{1.0f, -2.0f, 65504.0f}));

  const TensorInfo* s = f->Find("scalar");
  ASSERT_NE(s, nullptr);
  EXPECT_TRUE(s->shape.empty());
  EXPECT_EQ(s->numel(), 1);
  EXPECT_EQ(*f->ReadF32("scalar"), (std::vector<float>{3.5f}));

  const TensorInfo* e = f->Find("empty");
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->shape, (std::vector<int64_t>{0, 5}));
  EXPECT_EQ(e->numel(), 0);
  EXPECT_EQ(e->end, e->begin);

  const TensorInfo* b = f->Find("bytes");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->dtype, DType::kU8);
  EXPECT_EQ(std::memcmp(f->Data(*b), u8.data(), 3), 0);

  const TensorInfo* ints = f->Find("ints");
  ASSERT_NE(ints, nullptr);
  EXPECT_EQ(ints->dtype, DType::kI32);
  EXPECT_EQ(std::memcmp(f->Data(*ints), i32.data(), 8), 0);
  auto not_float = f->ReadF32("ints");
  ASSERT_FALSE(not_float.ok());
  EXPECT_CONTAINS(std::string(not_float.status().message()), "\"ints\"");
  EXPECT_CONTAINS(std::string(not_float.status().message()), path);

  EXPECT_EQ(*f->ReadF32("brain"), (std::vector<float>{1.0f, -5.0f}));
  EXPECT_EQ(f->Find("nope"), nullptr);
  EXPECT_FALSE(f->ReadF32("nope").ok());

  // The data section starts 8-byte aligned: the header length is a multiple of 8.
  auto raw = ReadFile(path);
  ASSERT_TRUE(raw.ok());
  uint64_t header_len;
  std::memcpy(&header_len, raw->data(), 8);
  EXPECT_EQ(header_len % 8, 0u);
}

TEST(SafetensorsTest, SerializeParsesBack) {
  SafetensorsWriter w;
  const std::vector<float> v = {1, 2, 3};
  AddVector(&w, "a", DType::kF32, {3}, v);
  const std::string bytes = w.Serialize();
  auto f = SafetensorsFile::Parse(bytes, "in-memory");
  ASSERT_TRUE(f.ok()) << f.status();
  ASSERT_EQ(f->tensors().size(), 1u);
  EXPECT_TRUE(f->metadata().empty());
  EXPECT_EQ(*f->ReadF32("a"), v);
  // Serialize is deterministic.
  EXPECT_EQ(w.Serialize(), bytes);
}

TEST(SafetensorsTest, WriterRefusesInconsistentTensors) {
  const testing_util::TestDir tmp;
  const std::string dir = tmp.dir();
  const std::vector<float> v = {1, 2, 3};
  {
    SafetensorsWriter w;
    AddVector(&w, "a", DType::kF32, {2, 2}, v);  // 12 bytes for 16
    auto s = w.Write(dir + "/x.safetensors");
    ASSERT_FALSE(s.ok());
    EXPECT_CONTAINS(std::string(s.message()), "\"a\"");
  }
  {
    SafetensorsWriter w;
    AddVector(&w, "a", DType::kF32, {3}, v);
    AddVector(&w, "a", DType::kF32, {3}, v);
    EXPECT_FALSE(w.Write(dir + "/x.safetensors").ok());
  }
  EXPECT_FALSE(std::filesystem::exists(dir + "/x.safetensors"));
}

// A file as Python's safetensors writes it: u64 length, JSON with __metadata__ first, padding
// spaces, tensors packed back to back.
std::string PythonStyleFile() {
  std::string header =
      R"({"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
      R"("b":{"dtype":"BF16","shape":[1,3],"data_offsets":[8,14]}})";
  while (header.size() % 8 != 0) header.push_back(' ');
  std::string file(8, '\0');
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) file[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
  file += header;
  const float a[2] = {0.5f, -4.0f};
  file.append(reinterpret_cast<const char*>(a), 8);
  const uint8_t b[6] = {0x80, 0x3F, 0x00, 0x40, 0x80, 0xBF};  // 1, 2, -1 in bf16, little-endian
  file.append(reinterpret_cast<const char*>(b), 6);
  return file;
}

TEST(SafetensorsTest, ParsesPythonWrittenFile) {
  auto f = SafetensorsFile::Parse(PythonStyleFile(), "python.safetensors");
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->metadata().at("format"), "pt");
  ASSERT_EQ(f->tensors().size(), 2u);
  EXPECT_EQ(f->tensors()[1].shape, (std::vector<int64_t>{1, 3}));
  EXPECT_EQ(*f->ReadF32("a"), (std::vector<float>{0.5f, -4.0f}));
  EXPECT_EQ(*f->ReadF32("b"), (std::vector<float>{1.0f, 2.0f, -1.0f}));
}

// Writes one tensor per bit pattern and reads it back through ReadF32.
std::vector<float> ConvertHalves(DType dtype, const std::vector<uint16_t>& bits) {
  SafetensorsWriter w;
  AddVector(&w, "t", dtype, {static_cast<int64_t>(bits.size())}, bits);
  auto f = SafetensorsFile::Parse(w.Serialize(), "halves");
  EXPECT_TRUE(f.ok()) << f.status();
  auto v = f->ReadF32("t");
  EXPECT_TRUE(v.ok()) << v.status();
  return *v;
}

TEST(SafetensorsTest, ConvertsF16ToF32) {
  const std::vector<float> v =
      ConvertHalves(DType::kF16, {0x3C00, 0xC000, 0x7BFF, 0x3555, 0x0400, 0x03FF, 0x0001, 0x8001,
                                  0x0000, 0x8000, 0x7C00, 0xFC00, 0x7E00, 0x7C01});
  EXPECT_EQ(v[0], 1.0f);
  EXPECT_EQ(v[1], -2.0f);
  EXPECT_EQ(v[2], 65504.0f);                  // largest finite half
  EXPECT_EQ(v[3], 0.333251953125f);           // nearest half to 1/3
  EXPECT_EQ(v[4], std::ldexp(1.0f, -14));     // smallest normal
  EXPECT_EQ(v[5], std::ldexp(1023.0f, -24));  // largest subnormal
  EXPECT_EQ(v[6], std::ldexp(1.0f, -24));     // smallest subnormal
  EXPECT_EQ(v[7], -std::ldexp(1.0f, -24));
  EXPECT_EQ(v[8], 0.0f);
  EXPECT_FALSE(std::signbit(v[8]));
  EXPECT_EQ(v[9], 0.0f);
  EXPECT_TRUE(std::signbit(v[9]));
  EXPECT_EQ(v[10], std::numeric_limits<float>::infinity());
  EXPECT_EQ(v[11], -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(v[12]));
  EXPECT_TRUE(std::isnan(v[13]));  // signalling NaN with the lowest payload bit stays NaN
}

TEST(SafetensorsTest, ConvertsBF16ToF32) {
  const std::vector<float> v = ConvertHalves(
      DType::kBF16,
      {0x3F80, 0xC0A0, 0x3EAB, 0x7F7F, 0x0080, 0x0001, 0x8000, 0x7F80, 0xFF80, 0x7FC0});
  EXPECT_EQ(v[0], 1.0f);
  EXPECT_EQ(v[1], -5.0f);
  EXPECT_EQ(v[2], 0.333984375f);
  EXPECT_EQ(v[3], std::ldexp(255.0f, 120));            // largest finite bf16
  EXPECT_EQ(v[4], std::numeric_limits<float>::min());  // smallest normal
  EXPECT_EQ(v[5], std::ldexp(1.0f, -133));             // smallest subnormal
  EXPECT_TRUE(std::signbit(v[6]));
  EXPECT_EQ(v[7], std::numeric_limits<float>::infinity());
  EXPECT_EQ(v[8], -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(v[9]));
}

TEST(SafetensorsTest, ConvertsF64ToF32) {
  SafetensorsWriter w;
  const std::vector<double> d = {0.1, -1e300, 1e-50};
  AddVector(&w, "d", DType::kF64, {3}, d);
  auto f = SafetensorsFile::Parse(w.Serialize(), "f64");
  ASSERT_TRUE(f.ok());
  const std::vector<float> v = *f->ReadF32("d");
  EXPECT_EQ(v[0], 0.1f);
  EXPECT_EQ(v[1], -std::numeric_limits<float>::infinity());
  EXPECT_EQ(v[2], 0.0f);
}

// ---------------------------------------------------------------------------------------------
// Safetensors: hostile input

// A file image with the given header text and `data_bytes` zero bytes of data.
std::string FileWithHeader(const std::string& header, size_t data_bytes) {
  std::string file(8, '\0');
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) file[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
  return file + header + std::string(data_bytes, '\0');
}

std::string ParseError(const std::string& bytes) {
  auto f = SafetensorsFile::Parse(bytes, "some/dir/bad.safetensors");
  if (f.ok()) return "(parsed without error)";
  std::string message(f.status().message());
  EXPECT_CONTAINS(message, "some/dir/bad.safetensors");
  return message;
}

std::string Tensor(const std::string& name, const std::string& dtype, const std::string& shape,
                   const std::string& offsets) {
  return "\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape +
         ",\"data_offsets\":" + offsets + "}";
}

TEST(SafetensorsTest, RejectsMalformedFiles) {
  EXPECT_CONTAINS(ParseError(""), "too short");
  EXPECT_CONTAINS(ParseError("abcdefg"), "too short");
  {
    std::string f = FileWithHeader("{}", 0);
    f[0] = 100;  // header length 100 in a 10-byte file
    EXPECT_CONTAINS(ParseError(f), "runs past the end");
    f[0] = 0;
    f[7] = static_cast<char>(0xFF);  // about 2^64: must not wrap around
    EXPECT_CONTAINS(ParseError(f), "limit");
    f[7] = 0;
    f[3] = 0x10;  // 256 MiB
    EXPECT_CONTAINS(ParseError(f), "limit");
  }
  EXPECT_CONTAINS(ParseError(FileWithHeader("{not json", 0)), "not valid JSON");
  EXPECT_CONTAINS(ParseError(FileWithHeader("{\"a\":1} x", 0)), "byte offset 16");
  EXPECT_CONTAINS(ParseError(FileWithHeader("[1,2]", 0)), "not an object");
  EXPECT_CONTAINS(ParseError(FileWithHeader("{\"a\":[]}", 0)), "\"a\"");
  EXPECT_CONTAINS(ParseError(FileWithHeader("{\"a\":{\"dtype\":\"F32\",\"shape\":[]}}", 4)),
                  "data_offsets");
  EXPECT_CONTAINS(ParseError(FileWithHeader("{" + Tensor("w", "F8", "[1]", "[0,1]") + "}", 1)),
                  "unknown dtype \"F8\"");
  EXPECT_CONTAINS(ParseError(FileWithHeader("{" + Tensor("w", "F32", "[-1]", "[0,4]") + "}", 4)),
                  "non-negative");
  EXPECT_CONTAINS(ParseError(FileWithHeader("{" + Tensor("w", "F32", "[2.0]", "[0,8]") + "}", 8)),
                  "non-negative integer");
  EXPECT_CONTAINS(ParseError(FileWithHeader(
                      "{" + Tensor("w", "U8", "[99999999999999999999]", "[0,1]") + "}", 1)),
                  "\"w\"");
  // 2^62 * 2^2 elements overflow int64; so do 2^62 elements of 4 bytes.
  EXPECT_CONTAINS(ParseError(FileWithHeader(
                      "{" + Tensor("w", "U8", "[4611686018427387904,4]", "[0,0]") + "}", 0)),
                  "int64");
  EXPECT_CONTAINS(ParseError(FileWithHeader(
                      "{" + Tensor("w", "F32", "[4611686018427387904]", "[0,0]") + "}", 0)),
                  "int64");
  EXPECT_CONTAINS(ParseError(FileWithHeader("{" + Tensor("w", "F32", "[2]", "[0,8]") + "}", 4)),
                  "out of range");
  EXPECT_CONTAINS(ParseError(FileWithHeader("{" + Tensor("w", "F32", "[0]", "[-4,-4]") + "}", 4)),
                  "out of range");
  EXPECT_CONTAINS(ParseError(FileWithHeader("{" + Tensor("w", "F32", "[0]", "[4,0]") + "}", 4)),
                  "out of range");
  EXPECT_CONTAINS(ParseError(FileWithHeader("{" + Tensor("w", "F32", "[1]", "[0]") + "}", 4)),
                  "data_offsets");
  EXPECT_CONTAINS(ParseError(FileWithHeader("{" + Tensor("w", "F32", "[3]", "[0,8]") + "}", 8)),
                  "needs 12");
  EXPECT_CONTAINS(ParseError(FileWithHeader("{" + Tensor("a", "F32", "[2]", "[0,8]") + "," +
                                                Tensor("b", "F32", "[2]", "[4,12]") + "}",
                                            12)),
                  "overlap");
  EXPECT_CONTAINS(ParseError(FileWithHeader("{\"__metadata__\":{\"k\":1}}", 0)),
                  "\"k\" is not a string");
  EXPECT_CONTAINS(ParseError(FileWithHeader("{\"__metadata__\":[]}", 0)), "__metadata__");
  EXPECT_CONTAINS(ParseError(FileWithHeader("{" + Tensor("w\xFF", "U8", "[1]", "[0,1]") + "}", 1)),
                  "UTF-8");
  EXPECT_CONTAINS(
      ParseError(FileWithHeader(std::string(100000, '[') + std::string(100000, ']'), 0)), "nested");
  // Empty tensors may sit anywhere, even inside another tensor's bytes.
  auto ok = SafetensorsFile::Parse(FileWithHeader("{" + Tensor("a", "F32", "[2]", "[0,8]") + "," +
                                                      Tensor("e", "F32", "[0,3]", "[4,4]") + "}",
                                                  8),
                                   "ok");
  EXPECT_TRUE(ok.ok()) << ok.status();
}

// Every truncation and every single-bit flip of a valid file must give an error or a consistent
// file, never a crash or an out-of-bounds read (run under a sanitizer to see the latter).
TEST(SafetensorsTest, SurvivesTruncationAndBitFlips) {
  const std::string good = PythonStyleFile();
  const auto check = [](const std::string& bytes) {
    auto f = SafetensorsFile::Parse(bytes, "mutant");
    if (!f.ok()) return;
    for (const TensorInfo& t : f->tensors()) {
      ASSERT_LE(t.begin, t.end);
      ASSERT_LE(static_cast<size_t>(t.end), bytes.size());
      (void)f->ReadF32(t.name);
    }
  };
  for (size_t len = 0; len < good.size(); ++len) check(good.substr(0, len));
  for (size_t i = 0; i < good.size(); ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      std::string mutant = good;
      mutant[i] = static_cast<char>(mutant[i] ^ (1 << bit));
      check(mutant);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Files

TEST(FileTest, WriteFileAtomicReplacesAndReadFileReadsBack) {
  const testing_util::TestDir tmp;
  const std::string dir = tmp.dir();
  const std::string path = dir + "/f.bin";
  ASSERT_TRUE(WriteFileAtomic(path, "first").ok());
  std::string big(300000, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 7);
  ASSERT_TRUE(WriteFileAtomic(path, big).ok());
  auto back = ReadFile(path);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, big);
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir),
                          std::filesystem::directory_iterator()),
            1);  // no temp file left
  ASSERT_TRUE(WriteFileAtomic(path, "").ok());
  EXPECT_EQ(*ReadFile(path), "");
}

TEST(FileTest, ErrorsNameThePathAndReason) {
  const testing_util::TestDir tmp;
  const std::string dir = tmp.dir();
  auto missing = ReadFile(dir + "/missing.bin");
  ASSERT_FALSE(missing.ok());
  EXPECT_CONTAINS(std::string(missing.status().message()), dir + "/missing.bin");
  EXPECT_CONTAINS(std::string(missing.status().message()), "No such file");
  auto opened = SafetensorsFile::Open(dir + "/missing.safetensors");
  ASSERT_FALSE(opened.ok());
  EXPECT_CONTAINS(std::string(opened.status().message()), "missing.safetensors");
  auto not_dir = WriteFileAtomic(dir + "/no/such/dir/f.bin", "x");
  ASSERT_FALSE(not_dir.ok());
  EXPECT_CONTAINS(std::string(not_dir.message()), dir + "/no/such/dir/f.bin");
  auto is_dir = ReadFile(dir);
  ASSERT_FALSE(is_dir.ok());
  EXPECT_CONTAINS(std::string(is_dir.status().message()), dir);
}

}  // namespace
}  // namespace qat::kernels
