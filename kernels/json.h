// A small, strict JSON (RFC 8259) value type, parser and writer: kernels/ (safetensors headers),
// data/ (tokenizer.json) and trainer/ (Hugging Face config.json) share it.
//
// Strict means: no comments, no trailing commas, no NaN/Infinity, no leading zeros, no unescaped
// control characters, strings must be valid UTF-8 (no overlong forms, no encoded surrogates, no
// code points above U+10FFFF), \u escapes must pair surrogates correctly, duplicate keys in one
// object are rejected, and nothing but whitespace may follow the value. Nesting depth is limited
// so that hostile input cannot overflow the stack. Errors name the byte offset.
//
// Numbers written without a fraction or exponent that fit in int64 are kept exactly as int64;
// all other numbers are doubles. Objects keep their members in insertion (file) order.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"

namespace qat::kernels::json {

class Value;
using Array = std::vector<Value>;
using Member = std::pair<std::string, Value>;
using Object = std::vector<Member>;

enum class Type { kNull, kBool, kInt, kDouble, kString, kArray, kObject };

class Value {
 public:
  Value() = default;  // null
  static Value Bool(bool b) { return Value(Storage(std::in_place_index<1>, b)); }
  static Value Int(int64_t i) { return Value(Storage(std::in_place_index<2>, i)); }
  static Value Double(double d) { return Value(Storage(std::in_place_index<3>, d)); }
  static Value String(std::string s) {
    return Value(Storage(std::in_place_index<4>, std::move(s)));
  }
  static Value MakeArray(Array a = {}) {
    return Value(Storage(std::in_place_index<5>, std::move(a)));
  }
  static Value MakeObject(Object o = {}) {
    return Value(Storage(std::in_place_index<6>, std::move(o)));
  }

  Type type() const { return static_cast<Type>(v_.index()); }
  bool is_null() const { return type() == Type::kNull; }
  bool is_bool() const { return type() == Type::kBool; }
  bool is_int() const { return type() == Type::kInt; }
  bool is_double() const { return type() == Type::kDouble; }
  bool is_number() const { return is_int() || is_double(); }
  bool is_string() const { return type() == Type::kString; }
  bool is_array() const { return type() == Type::kArray; }
  bool is_object() const { return type() == Type::kObject; }

  // Accessors never throw: on a value of another type they return false / 0 / an empty
  // string, array or object. Check the type first where it matters.
  bool as_bool() const;
  int64_t as_int() const;
  double as_double() const;  // ints convert
  const std::string& as_string() const;
  const Array& as_array() const;
  const Object& as_object() const;
  // Mutable access; turns a null value into an empty array / object first. Any other type is
  // left alone and a scratch container is returned, so misuse cannot corrupt the value.
  Array& mutable_array();
  Object& mutable_object();

  // The member named `key` of an object, or nullptr (absent, or not an object).
  const Value* Find(std::string_view key) const;
  // Replaces the member `key` or appends it (a null value becomes an object first).
  void Set(std::string key, Value value);
  // Appends to an array (a null value becomes an array first).
  void Append(Value value);

  // Exact comparison: the same type and the same contents (1 and 1.0 differ).
  friend bool operator==(const Value& a, const Value& b) { return a.v_ == b.v_; }
  friend bool operator!=(const Value& a, const Value& b) { return !(a == b); }

 private:
  // The alternatives are in the order of Type.
  using Storage = std::variant<std::monostate, bool, int64_t, double, std::string, Array, Object>;
  explicit Value(Storage v) : v_(std::move(v)) {}
  Storage v_;
};

struct ParseOptions {
  int max_depth = 64;       // arrays and objects nested deeper than this are an error
  int64_t offset_base = 0;  // added to the byte offsets in error messages (e.g. a file offset)
};

// Parses one JSON text; errors are InvalidArgument("byte offset N: what is wrong").
absl::StatusOr<Value> Parse(std::string_view text, const ParseOptions& options = {});

// Compact JSON text (no whitespace). Doubles are written in the shortest form that reads back
// to the same value, with ".0" added where needed so that they read back as doubles; NaN and
// infinities, which JSON cannot express, are written as null. Invalid UTF-8 inside strings is
// written as U+FFFD so that the output is always valid JSON (check with IsValidUtf8 first where
// that matters).
std::string Serialize(const Value& value);

bool IsValidUtf8(std::string_view s);
// Appends code point cp (at most U+10FFFF) as UTF-8.
void AppendUtf8(uint32_t cp, std::string* out);

}  // namespace qat::kernels::json
