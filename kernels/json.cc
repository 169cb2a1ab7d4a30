#include "kernels/json.h"

#include <charconv>
#include <cmath>
#include <limits>
#include <system_error>
#include <unordered_set>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace qat::kernels::json {

// ---------------------------------------------------------------------------------------------
// Value

bool Value::as_bool() const {
  const bool* b = std::get_if<bool>(&v_);
  return b != nullptr && *b;
}

int64_t Value::as_int() const {
  if (const int64_t* i = std::get_if<int64_t>(&v_)) return *i;
  return 0;
}

double Value::as_double() const {
  if (const double* d = std::get_if<double>(&v_)) return *d;
  if (const int64_t* i = std::get_if<int64_t>(&v_)) return static_cast<double>(*i);
  return 0.0;
}

const std::string& Value::as_string() const {
  static const std::string* const kEmpty = new std::string();
  const std::string* s = std::get_if<std::string>(&v_);
  return s != nullptr ? *s : *kEmpty;
}

const Array& Value::as_array() const {
  static const Array* const kEmpty = new Array();
  const Array* a = std::get_if<Array>(&v_);
  return a != nullptr ? *a : *kEmpty;
}

const Object& Value::as_object() const {
  static const Object* const kEmpty = new Object();
  const Object* o = std::get_if<Object>(&v_);
  return o != nullptr ? *o : *kEmpty;
}

Array& Value::mutable_array() {
  if (is_null()) v_.emplace<Array>();
  if (Array* a = std::get_if<Array>(&v_)) return *a;
  thread_local Array scratch;
  scratch.clear();
  return scratch;
}

Object& Value::mutable_object() {
  if (is_null()) v_.emplace<Object>();
  if (Object* o = std::get_if<Object>(&v_)) return *o;
  thread_local Object scratch;
  scratch.clear();
  return scratch;
}

const Value* Value::Find(std::string_view key) const {
  for (const Member& m : as_object()) {
    if (m.first == key) return &m.second;
  }
  return nullptr;
}

void Value::Set(std::string key, Value value) {
  Object& members = mutable_object();
  for (Member& m : members) {
    if (m.first == key) {
      m.second = std::move(value);
      return;
    }
  }
  members.emplace_back(std::move(key), std::move(value));
}

void Value::Append(Value value) { mutable_array().push_back(std::move(value)); }

// ---------------------------------------------------------------------------------------------
// UTF-8

namespace {

// Length of the valid UTF-8 sequence starting at s[i], or 0 if it is not valid (Unicode table
// 3-7: no overlong forms, no surrogates D800..DFFF, nothing above U+10FFFF).
size_t Utf8SequenceLength(std::string_view s, size_t i) {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char b0 = byte(i);
  if (b0 < 0x80) return 1;
  size_t len;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if (s.size() - i < len) return 0;
  if (byte(i + 1) < lo || byte(i + 1) > hi) return 0;
  for (size_t k = 2; k < len; ++k) {
    if (byte(i + k) < 0x80 || byte(i + k) > 0xBF) return 0;
  }
  return len;
}

}  // namespace

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

bool IsValidUtf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const size_t len = Utf8SequenceLength(s, i);
    if (len == 0) return false;
    i += len;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// Parser: recursive descent over the RFC 8259 grammar; `depth` counts open arrays/objects.

namespace {

class Parser {
 public:
  Parser(std::string_view text, const ParseOptions& options) : text_(text), options_(options) {}

  absl::StatusOr<Value> ParseDocument() {
    Value value;
    if (absl::Status s = ParseValue(0, &value); !s.ok()) return s;
    SkipWhitespace();
    if (pos_ != text_.size()) return Error("unexpected data after the JSON value");
    return value;
  }

 private:
  absl::Status Error(const std::string& what) const { return ErrorAt(pos_, what); }
  absl::Status ErrorAt(size_t offset, const std::string& what) const {
    return absl::InvalidArgumentError(absl::StrCat(
        "byte offset ", options_.offset_base + static_cast<int64_t>(offset), ": ", what));
  }
  // A readable name for the byte at pos_ (or end of input).
  std::string Describe() const {
    if (pos_ >= text_.size()) return "end of input";
    const unsigned char c = static_cast<unsigned char>(text_[pos_]);
    if (c >= 0x21 && c < 0x7F) return absl::StrFormat("'%c'", c);
    return absl::StrFormat("byte 0x%02X", c);
  }

  bool AtEnd() const { return pos_ >= text_.size(); }
  char Peek() const { return text_[pos_]; }

  void SkipWhitespace() {
    while (!AtEnd() && (Peek() == ' ' || Peek() == '\t' || Peek() == '\n' || Peek() == '\r')) {
      ++pos_;
    }
  }

  absl::Status ParseValue(int depth, Value* out) {
    SkipWhitespace();
    if (AtEnd()) return Error("expected a value, found end of input");
    switch (Peek()) {
      case '{':
        return ParseObject(depth + 1, out);
      case '[':
        return ParseArray(depth + 1, out);
      case '"': {
        std::string s;
        if (absl::Status st = ParseString(&s); !st.ok()) return st;
        *out = Value::String(std::move(s));
        return absl::OkStatus();
      }
      case 't':
        return ParseLiteral("true", Value::Bool(true), out);
      case 'f':
        return ParseLiteral("false", Value::Bool(false), out);
      case 'n':
        return ParseLiteral("null", Value(), out);
      default:
        if (Peek() == '-' || (Peek() >= '0' && Peek() <= '9')) return ParseNumber(out);
        return Error(absl::StrCat("expected a value, found ", Describe()));
    }
  }

  absl::Status ParseLiteral(std::string_view word, Value value, Value* out) {
    if (text_.substr(pos_, word.size()) != word) {
      return Error(absl::StrCat("expected '", std::string(word), "'"));
    }
    pos_ += word.size();
    *out = std::move(value);
    return absl::OkStatus();
  }

  absl::Status CheckDepth(int depth) const {
    if (depth > options_.max_depth) {
      return Error(absl::StrCat("arrays/objects nested deeper than ", options_.max_depth));
    }
    return absl::OkStatus();
  }

  absl::Status ParseArray(int depth, Value* out) {
    if (absl::Status s = CheckDepth(depth); !s.ok()) return s;
    ++pos_;  // '['
    Array items;
    SkipWhitespace();
    if (!AtEnd() && Peek() == ']') {
      ++pos_;
      *out = Value::MakeArray(std::move(items));
      return absl::OkStatus();
    }
    while (true) {
      Value item;
      if (absl::Status s = ParseValue(depth, &item); !s.ok()) return s;
      items.push_back(std::move(item));
      SkipWhitespace();
      if (AtEnd()) return Error("expected ',' or ']' in array, found end of input");
      if (Peek() == ']') {
        ++pos_;
        break;
      }
      if (Peek() != ',')
        return Error(absl::StrCat("expected ',' or ']' in array, found ", Describe()));
      ++pos_;
    }
    *out = Value::MakeArray(std::move(items));
    return absl::OkStatus();
  }

  absl::Status ParseObject(int depth, Value* out) {
    if (absl::Status s = CheckDepth(depth); !s.ok()) return s;
    ++pos_;  // '{'
    Object members;
    std::unordered_set<std::string> keys;  // duplicate detection in O(1) per key
    SkipWhitespace();
    if (!AtEnd() && Peek() == '}') {
      ++pos_;
      *out = Value::MakeObject(std::move(members));
      return absl::OkStatus();
    }
    while (true) {
      SkipWhitespace();
      if (AtEnd() || Peek() != '"') {
        return Error(absl::StrCat("expected a string key in object, found ", Describe()));
      }
      const size_t key_offset = pos_;
      std::string key;
      if (absl::Status s = ParseString(&key); !s.ok()) return s;
      if (!keys.insert(key).second) return ErrorAt(key_offset, "duplicate key in object");
      SkipWhitespace();
      if (AtEnd() || Peek() != ':') {
        return Error(absl::StrCat("expected ':' after object key, found ", Describe()));
      }
      ++pos_;
      Value value;
      if (absl::Status s = ParseValue(depth, &value); !s.ok()) return s;
      members.emplace_back(std::move(key), std::move(value));
      SkipWhitespace();
      if (AtEnd()) return Error("expected ',' or '}' in object, found end of input");
      if (Peek() == '}') {
        ++pos_;
        break;
      }
      if (Peek() != ',') {
        return Error(absl::StrCat("expected ',' or '}' in object, found ", Describe()));
      }
      ++pos_;
    }
    *out = Value::MakeObject(std::move(members));
    return absl::OkStatus();
  }

  // Four hex digits at pos_ (after "\u").
  absl::Status ParseHex4(uint32_t* out) {
    if (text_.size() - pos_ < 4) return Error("truncated \\u escape");
    uint32_t v = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = text_[pos_ + k];
      uint32_t digit;
      if (c >= '0' && c <= '9') {
        digit = c - '0';
      } else if (c >= 'a' && c <= 'f') {
        digit = c - 'a' + 10;
      } else if (c >= 'A' && c <= 'F') {
        digit = c - 'A' + 10;
      } else {
        return ErrorAt(pos_ + k, "expected a hex digit in \\u escape");
      }
      v = v * 16 + digit;
    }
    pos_ += 4;
    *out = v;
    return absl::OkStatus();
  }

  absl::Status ParseString(std::string* out) {
    ++pos_;  // opening quote
    while (true) {
      if (AtEnd()) return Error("unterminated string");
      const unsigned char c = static_cast<unsigned char>(Peek());
      if (c == '"') {
        ++pos_;
        return absl::OkStatus();
      }
      if (c < 0x20) {
        return Error(absl::StrFormat("control character 0x%02X in string (must be escaped)", c));
      }
      if (c == '\\') {
        if (absl::Status s = ParseEscape(out); !s.ok()) return s;
        continue;
      }
      const size_t len = Utf8SequenceLength(text_, pos_);
      if (len == 0) return Error("invalid UTF-8 in string");
      out->append(text_.data() + pos_, len);
      pos_ += len;
    }
  }

  absl::Status ParseEscape(std::string* out) {
    const size_t escape_offset = pos_;
    ++pos_;  // backslash
    if (AtEnd()) return Error("unterminated escape");
    const char e = Peek();
    ++pos_;
    switch (e) {
      case '"':
        out->push_back('"');
        return absl::OkStatus();
      case '\\':
        out->push_back('\\');
        return absl::OkStatus();
      case '/':
        out->push_back('/');
        return absl::OkStatus();
      case 'b':
        out->push_back('\b');
        return absl::OkStatus();
      case 'f':
        out->push_back('\f');
        return absl::OkStatus();
      case 'n':
        out->push_back('\n');
        return absl::OkStatus();
      case 'r':
        out->push_back('\r');
        return absl::OkStatus();
      case 't':
        out->push_back('\t');
        return absl::OkStatus();
      case 'u':
        break;
      default:
        return ErrorAt(escape_offset, "invalid escape in string");
    }
    uint32_t cp = 0;
    if (absl::Status s = ParseHex4(&cp); !s.ok()) return s;
    if (cp >= 0xDC00 && cp <= 0xDFFF) {
      return ErrorAt(escape_offset, "unpaired low surrogate in \\u escape");
    }
    if (cp >= 0xD800 && cp <= 0xDBFF) {
      // A high surrogate must be followed by an escaped low surrogate.
      if (text_.substr(pos_, 2) != "\\u") {
        return ErrorAt(escape_offset, "high surrogate in \\u escape not followed by a low one");
      }
      pos_ += 2;
      uint32_t low = 0;
      if (absl::Status s = ParseHex4(&low); !s.ok()) return s;
      if (low < 0xDC00 || low > 0xDFFF) {
        return ErrorAt(escape_offset, "high surrogate in \\u escape not followed by a low one");
      }
      cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
    }
    AppendUtf8(cp, out);
    return absl::OkStatus();
  }

  // -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
  absl::Status ParseNumber(Value* out) {
    const size_t start = pos_;
    const auto digit_at = [&](size_t i) {
      return i < text_.size() && text_[i] >= '0' && text_[i] <= '9';
    };
    size_t i = pos_;
    if (text_[i] == '-') ++i;
    if (!digit_at(i)) return ErrorAt(i, "expected a digit in number");
    const size_t int_begin = i;
    if (text_[i] == '0') {
      ++i;
      if (digit_at(i)) return ErrorAt(i, "leading zero in number");
    } else {
      while (digit_at(i)) ++i;
    }
    const size_t int_end = i;
    bool integral = true;
    size_t frac_begin = i, frac_end = i;
    if (i < text_.size() && text_[i] == '.') {
      integral = false;
      ++i;
      if (!digit_at(i)) return ErrorAt(i, "expected a digit after '.' in number");
      frac_begin = i;
      while (digit_at(i)) ++i;
      frac_end = i;
    }
    int64_t exponent = 0;  // saturated, only used to tell overflow from underflow
    if (i < text_.size() && (text_[i] == 'e' || text_[i] == 'E')) {
      integral = false;
      ++i;
      bool negative = false;
      if (i < text_.size() && (text_[i] == '+' || text_[i] == '-')) negative = text_[i++] == '-';
      if (!digit_at(i)) return ErrorAt(i, "expected a digit in number exponent");
      while (digit_at(i)) {
        if (exponent < 1000000) exponent = exponent * 10 + (text_[i] - '0');
        ++i;
      }
      if (negative) exponent = -exponent;
    }
    pos_ = i;
    const char* first = text_.data() + start;
    const char* last = text_.data() + i;
    if (integral) {
      int64_t v;
      const auto [ptr, ec] = std::from_chars(first, last, v);
      if (ec == std::errc() && ptr == last) {
        *out = Value::Int(v);
        return absl::OkStatus();
      }
      // Too large for int64: falls through to double, like most JSON readers.
    }
    double d;
    const auto [ptr, ec] = std::from_chars(first, last, d, std::chars_format::general);
    if (ec == std::errc() && ptr == last && std::isfinite(d)) {
      *out = Value::Double(d);
      return absl::OkStatus();
    }
    if (ec != std::errc::result_out_of_range) return ErrorAt(start, "malformed number");
    // Out of range: underflow reads as zero, overflow is an error. The decimal exponent of the
    // first significant digit tells which.
    int64_t magnitude = exponent;
    size_t k = int_begin;
    while (k < int_end && text_[k] == '0') ++k;
    if (k < int_end) {
      magnitude += static_cast<int64_t>(int_end - k) - 1;
    } else {
      size_t z = frac_begin;
      while (z < frac_end && text_[z] == '0') ++z;
      magnitude -= static_cast<int64_t>(z - frac_begin) + 1;
    }
    if (magnitude >= 0) return ErrorAt(start, "number too large for a double");
    *out = Value::Double(text_[start] == '-' ? -0.0 : 0.0);
    return absl::OkStatus();
  }

  std::string_view text_;
  ParseOptions options_;
  size_t pos_ = 0;
};

}  // namespace

absl::StatusOr<Value> Parse(std::string_view text, const ParseOptions& options) {
  return Parser(text, options).ParseDocument();
}

// ---------------------------------------------------------------------------------------------
// Writer

namespace {

void SerializeString(std::string_view s, std::string* out) {
  out->push_back('"');
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x80) {
      const size_t len = Utf8SequenceLength(s, i);
      if (len == 0) {
        out->append("\xEF\xBF\xBD");  // U+FFFD for a byte that starts no valid sequence
        ++i;
      } else {
        out->append(s.data() + i, len);
        i += len;
      }
      continue;
    }
    switch (c) {
      case '"':
        out->append("\\\"");
        break;
      case '\\':
        out->append("\\\\");
        break;
      case '\b':
        out->append("\\b");
        break;
      case '\f':
        out->append("\\f");
        break;
      case '\n':
        out->append("\\n");
        break;
      case '\r':
        out->append("\\r");
        break;
      case '\t':
        out->append("\\t");
        break;
      default:
        if (c < 0x20) {
          absl::StrAppendFormat(out, "\\u%04X", c);
        } else {
          out->push_back(static_cast<char>(c));
        }
    }
    ++i;
  }
  out->push_back('"');
}

void SerializeDouble(double d, std::string* out) {
  if (!std::isfinite(d)) {
    out->append("null");
    return;
  }
  char buf[64];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), d);  // shortest round trip
  std::string_view text(buf, ec == std::errc() ? end - buf : 0);
  out->append(text);
  // "2" would read back as an int; keep the type.
  if (text.find_first_of(".eE") == std::string_view::npos) out->append(".0");
}

void SerializeTo(const Value& v, std::string* out) {
  switch (v.type()) {
    case Type::kNull:
      out->append("null");
      break;
    case Type::kBool:
      out->append(v.as_bool() ? "true" : "false");
      break;
    case Type::kInt:
      absl::StrAppend(out, v.as_int());
      break;
    case Type::kDouble:
      SerializeDouble(v.as_double(), out);
      break;
    case Type::kString:
      SerializeString(v.as_string(), out);
      break;
    case Type::kArray: {
      out->push_back('[');
      bool first = true;
      for (const Value& item : v.as_array()) {
        if (!first) out->push_back(',');
        first = false;
        SerializeTo(item, out);
      }
      out->push_back(']');
      break;
    }
    case Type::kObject: {
      out->push_back('{');
      bool first = true;
      for (const Member& m : v.as_object()) {
        if (!first) out->push_back(',');
        first = false;
        SerializeString(m.first, out);
        out->push_back(':');
        SerializeTo(m.second, out);
      }
      out->push_back('}');
      break;
    }
  }
}

}  // namespace

std::string Serialize(const Value& value) {
  std::string out;
  SerializeTo(value, &out);
  return out;
}

}  // namespace qat::kernels::json
