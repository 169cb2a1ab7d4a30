// Safetensors reading and writing; the byte layout and the rules are documented in
// safetensors.h. Every length and offset read from a file is checked before use, with
// arithmetic that cannot overflow, so a hostile file gives an error, never a crash.
#include "kernels/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/json.h"
#include "kernels/status_macros.h"

namespace qat::kernels {
namespace {

constexpr uint64_t kMaxHeaderBytes = 100ull << 20;  // 100 MiB, as Hugging Face's reader
constexpr int64_t kAlignment = 8;
constexpr char kMetadataKey[] = "__metadata__";

struct DTypeEntry {
  DType dtype;
  const char* name;
  int64_t size;
};
constexpr DTypeEntry kDTypes[] = {
    {DType::kF64, "F64", 8},   {DType::kF32, "F32", 4}, {DType::kF16, "F16", 2},
    {DType::kBF16, "BF16", 2}, {DType::kI64, "I64", 8}, {DType::kI32, "I32", 4},
    {DType::kI16, "I16", 2},   {DType::kI8, "I8", 1},   {DType::kU8, "U8", 1},
    {DType::kBool, "BOOL", 1},
};

bool DTypeFromName(const std::string& name, DType* out) {
  for (const DTypeEntry& e : kDTypes) {
    if (name == e.name) {
      *out = e.dtype;
      return true;
    }
  }
  return false;
}

// a * b into *out unless it would exceed INT64_MAX (both non-negative).
bool CheckedMul(int64_t a, int64_t b, int64_t* out) {
  if (a != 0 && b > std::numeric_limits<int64_t>::max() / a) return false;
  *out = a * b;
  return true;
}

uint64_t LoadU64Le(const char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

void StoreU64Le(uint64_t v, char* p) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<char>((v >> (8 * i)) & 0xFF);
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// IEEE binary16 -> binary32. Normal numbers rebias the exponent (15 -> 127); subnormal halves
// (exponent 0) are normalized by shifting the mantissa up until its implicit bit appears;
// inf/NaN (exponent 31) keep their mantissa, so NaN stays NaN.
float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  uint32_t exponent = (h >> 10) & 0x1F;
  uint32_t mantissa = h & 0x3FF;
  uint32_t bits;
  if (exponent == 0x1F) {
    bits = sign | 0x7F800000u | (mantissa << 13);
  } else if (exponent != 0) {
    bits = sign | ((exponent + 127 - 15) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {
    bits = sign;
  } else {
    // value = mantissa * 2^-24; find the leading bit.
    exponent = 127 - 15 + 1;
    while ((mantissa & 0x400) == 0) {
      mantissa <<= 1;
      --exponent;
    }
    bits = sign | (exponent << 23) | ((mantissa & 0x3FF) << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

// bfloat16 is the upper half of a binary32, so widening is a shift (exact for all values).
float BFloat16ToFloat(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

uint16_t LoadU16Le(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }

absl::Status Invalid(const std::string& path, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", what));
}

// Parses one tensor entry of the header into *t (name already set).
absl::Status ParseTensorInfo(const std::string& path, const json::Value& entry, int64_t data_size,
                             TensorInfo* t) {
  const std::string where = absl::StrCat("tensor \"", t->name, "\"");
  if (!entry.is_object()) return Invalid(path, absl::StrCat(where, ": entry is not an object"));

  const json::Value* dtype = entry.Find("dtype");
  if (dtype == nullptr || !dtype->is_string()) {
    return Invalid(path, absl::StrCat(where, ": field \"dtype\" missing or not a string"));
  }
  if (!DTypeFromName(dtype->as_string(), &t->dtype)) {
    return Invalid(path, absl::StrCat(where, ": unknown dtype \"", dtype->as_string(),
                                      "\" (expected F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL)"));
  }

  const json::Value* shape = entry.Find("shape");
  if (shape == nullptr || !shape->is_array()) {
    return Invalid(path, absl::StrCat(where, ": field \"shape\" missing or not an array"));
  }
  int64_t numel = 1;
  for (const json::Value& d : shape->as_array()) {
    if (!d.is_int() || d.as_int() < 0) {
      return Invalid(path, absl::StrCat(where, ": field \"shape\" holds ", json::Serialize(d),
                                        ", expected a non-negative integer"));
    }
    t->shape.push_back(d.as_int());
    if (!CheckedMul(numel, d.as_int(), &numel)) {
      return Invalid(path, absl::StrCat(where, ": shape ", json::Serialize(*shape),
                                        " has more elements than fit in int64"));
    }
  }
  int64_t nbytes;
  if (!CheckedMul(numel, DTypeSize(t->dtype), &nbytes)) {
    return Invalid(path, absl::StrCat(where, ": shape ", json::Serialize(*shape),
                                      " has more bytes than fit in int64"));
  }

  const json::Value* offsets = entry.Find("data_offsets");
  if (offsets == nullptr || !offsets->is_array() || offsets->as_array().size() != 2 ||
      !offsets->as_array()[0].is_int() || !offsets->as_array()[1].is_int()) {
    return Invalid(path, absl::StrCat(where, ": field \"data_offsets\" missing or not an array of ",
                                      "two integers"));
  }
  t->begin = offsets->as_array()[0].as_int();
  t->end = offsets->as_array()[1].as_int();
  if (t->begin < 0 || t->begin > t->end || t->end > data_size) {
    return Invalid(path, absl::StrCat(where, ": data_offsets [", t->begin, ", ", t->end,
                                      "] out of range: need 0 <= begin <= end <= ", data_size,
                                      " (the size of the data section)"));
  }
  if (t->end - t->begin != nbytes) {
    return Invalid(path, absl::StrCat(where, ": data_offsets [", t->begin, ", ", t->end, "] hold ",
                                      t->end - t->begin, " bytes but shape ", ShapeString(t->shape),
                                      " of ", dtype->as_string(), " needs ", nbytes));
  }
  return absl::OkStatus();
}

}  // namespace

const char* DTypeName(DType d) {
  for (const DTypeEntry& e : kDTypes) {
    if (e.dtype == d) return e.name;
  }
  return "?";
}

int64_t DTypeSize(DType d) {
  for (const DTypeEntry& e : kDTypes) {
    if (e.dtype == d) return e.size;
  }
  return 0;
}

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;  // validated by the reader / writer not to overflow
  return n;
}

// ---------------------------------------------------------------------------------------------
// Reader

absl::StatusOr<SafetensorsFile> SafetensorsFile::Open(const std::string& path) {
  absl::StatusOr<std::string> bytes = ReadFile(path);
  if (!bytes.ok()) return bytes.status();
  return Parse(*std::move(bytes), path);
}

absl::StatusOr<SafetensorsFile> SafetensorsFile::Parse(std::string bytes, const std::string& path) {
  if (bytes.size() < 8) {
    return Invalid(path, absl::StrCat("file is ", bytes.size(),
                                      " bytes, too short for the 8-byte header length"));
  }
  const uint64_t header_len = LoadU64Le(bytes.data());
  if (header_len > kMaxHeaderBytes) {
    return Invalid(path, absl::StrCat("header length ", header_len, " (bytes [0, 8)) exceeds the ",
                                      kMaxHeaderBytes, "-byte limit"));
  }
  if (header_len > bytes.size() - 8) {
    return Invalid(path, absl::StrCat("header length ", header_len, " (bytes [0, 8)) runs past ",
                                      "the end of the ", bytes.size(), "-byte file"));
  }
  json::ParseOptions options;
  options.offset_base = 8;  // error offsets count from the start of the file
  absl::StatusOr<json::Value> header =
      json::Parse(std::string_view(bytes).substr(8, header_len), options);
  if (!header.ok()) {
    return Invalid(path, absl::StrCat("header is not valid JSON: ", header.status().message()));
  }
  if (!header->is_object()) return Invalid(path, "header JSON is not an object");

  SafetensorsFile file;
  file.path_ = path;
  file.data_start_ = static_cast<int64_t>(8 + header_len);
  const int64_t data_size = static_cast<int64_t>(bytes.size()) - file.data_start_;
  for (const json::Member& member : header->as_object()) {
    if (member.first == kMetadataKey) {
      if (!member.second.is_object()) return Invalid(path, "__metadata__ is not an object");
      for (const json::Member& kv : member.second.as_object()) {
        if (!kv.second.is_string()) {
          return Invalid(
              path, absl::StrCat("__metadata__ value for key \"", kv.first, "\" is not a string"));
        }
        file.metadata_[kv.first] = kv.second.as_string();
      }
      continue;
    }
    TensorInfo t;
    t.name = member.first;
    if (absl::Status s = ParseTensorInfo(path, member.second, data_size, &t); !s.ok()) return s;
    file.tensors_.push_back(std::move(t));
  }

  // No two tensors may share bytes: sort the non-empty ones by start and compare neighbours.
  std::vector<const TensorInfo*> by_start;
  for (const TensorInfo& t : file.tensors_) {
    if (t.end > t.begin) by_start.push_back(&t);
  }
  std::sort(by_start.begin(), by_start.end(),
            [](const TensorInfo* a, const TensorInfo* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < by_start.size(); ++i) {
    const TensorInfo& prev = *by_start[i - 1];
    const TensorInfo& cur = *by_start[i];
    if (cur.begin < prev.end) {
      return Invalid(
          path, absl::StrCat("tensors \"", prev.name, "\" [", prev.begin, ", ", prev.end,
                             ") and \"", cur.name, "\" [", cur.begin, ", ", cur.end, ") overlap"));
    }
  }
  file.bytes_ = std::move(bytes);
  return file;
}

const TensorInfo* SafetensorsFile::Find(const std::string& name) const {
  for (const TensorInfo& t : tensors_) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

const uint8_t* SafetensorsFile::Data(const TensorInfo& t) const {
  return reinterpret_cast<const uint8_t*>(bytes_.data()) + data_start_ + t.begin;
}

absl::StatusOr<std::vector<float>> SafetensorsFile::ReadF32(const std::string& name) const {
  const TensorInfo* t = Find(name);
  if (t == nullptr) return absl::NotFoundError(absl::StrCat(path_, ": no tensor \"", name, "\""));
  std::vector<float> out(static_cast<size_t>(t->numel()));
  if (absl::Status s = ReadF32Into(name, out.data(), t->numel()); !s.ok()) return s;
  return out;
}

absl::Status SafetensorsFile::ReadF32Into(const std::string& name, float* out,
                                          int64_t count) const {
  const TensorInfo* t = Find(name);
  if (t == nullptr) return absl::NotFoundError(absl::StrCat(path_, ": no tensor \"", name, "\""));
  const int64_t n = t->numel();
  if (count != n) {
    return absl::InvalidArgumentError(absl::StrCat(path_, ": tensor \"", name, "\" has ", n,
                                                   " elements, the destination holds ", count));
  }
  const uint8_t* p = Data(*t);
  switch (t->dtype) {
    case DType::kF32:
      if (n > 0) std::memcpy(out, p, static_cast<size_t>(n) * sizeof(float));
      break;
    case DType::kF16:
      for (int64_t i = 0; i < n; ++i) out[i] = HalfToFloat(LoadU16Le(p + 2 * i));
      break;
    case DType::kBF16:
      for (int64_t i = 0; i < n; ++i) out[i] = BFloat16ToFloat(LoadU16Le(p + 2 * i));
      break;
    case DType::kF64:
      for (int64_t i = 0; i < n; ++i) {
        double d;
        std::memcpy(&d, p + 8 * i, sizeof(d));
        out[i] = static_cast<float>(d);
      }
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat(path_, ": tensor \"", name, "\" has dtype ", DTypeName(t->dtype),
                       ", expected a floating-point dtype (F32, F16, BF16 or F64)"));
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// Writer

void SafetensorsWriter::SetMetadata(const std::string& key, const std::string& value) {
  metadata_[key] = value;
}

void SafetensorsWriter::Add(const std::string& name, DType dtype, std::vector<int64_t> shape,
                            const void* data, size_t bytes) {
  // A view of the caller's bytes, then turned into a copy of them.
  AddView(name, dtype, std::move(shape), data, bytes);
  Entry& e = entries_.back();
  if (data != nullptr) e.owned.assign(e.view, bytes);
  e.view = nullptr;
  e.view_bytes = 0;
}

void SafetensorsWriter::AddView(const std::string& name, DType dtype, std::vector<int64_t> shape,
                                const void* data, size_t bytes) {
  Entry e;
  e.name = name;
  e.dtype = dtype;
  e.shape = std::move(shape);
  e.view = data != nullptr ? static_cast<const char*>(data) : "";
  e.view_bytes = data != nullptr ? bytes : 0;
  entries_.push_back(std::move(e));
}

std::string SafetensorsWriter::Header() const {
  // Data offsets: tensors back to back in the order added.
  json::Value header = json::Value::MakeObject();
  if (!metadata_.empty()) {
    json::Value meta = json::Value::MakeObject();
    for (const auto& [key, value] : metadata_) meta.Set(key, json::Value::String(value));
    header.Set(kMetadataKey, std::move(meta));
  }
  int64_t offset = 0;
  for (const Entry& e : entries_) {
    // Tensors follow each other with no gap: Hugging Face's loader rejects holes in the data.
    json::Value shape = json::Value::MakeArray();
    for (int64_t d : e.shape) shape.Append(json::Value::Int(d));
    json::Value info = json::Value::MakeObject();
    info.Set("dtype", json::Value::String(DTypeName(e.dtype)));
    info.Set("shape", std::move(shape));
    const int64_t end = offset + static_cast<int64_t>(e.size());
    info.Set("data_offsets",
             json::Value::MakeArray({json::Value::Int(offset), json::Value::Int(end)}));
    header.Set(e.name, std::move(info));
    offset = end;
  }
  std::string header_text = json::Serialize(header);
  // Pad with spaces so that the data section starts 8-byte aligned in the file.
  header_text.append((kAlignment - header_text.size() % kAlignment) % kAlignment, ' ');
  std::string out(8, '\0');
  StoreU64Le(header_text.size(), out.data());
  return out + header_text;
}

int64_t SafetensorsWriter::FileBytes() const {
  int64_t bytes = static_cast<int64_t>(Header().size());
  for (const Entry& e : entries_) bytes += static_cast<int64_t>(e.size());
  return bytes;
}

std::string SafetensorsWriter::Serialize() const {
  std::string out = Header();
  for (const Entry& e : entries_) out.append(e.data(), e.size());
  return out;
}

absl::Status SafetensorsWriter::Write(
    const std::string& path, const std::function<void(const char*, size_t)>& observe) const {
  // Refuse to write what the reader would reject.
  std::set<std::string> names;
  for (const Entry& e : entries_) {
    const std::string where = absl::StrCat(path, ": tensor \"", e.name, "\"");
    if (e.name == kMetadataKey || !names.insert(e.name).second) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": name is reserved or repeated"));
    }
    if (!json::IsValidUtf8(e.name)) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": name is not valid UTF-8"));
    }
    int64_t numel = 1;
    for (int64_t d : e.shape) {
      if (d < 0 || !CheckedMul(numel, d, &numel)) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": invalid shape ", ShapeString(e.shape)));
      }
    }
    int64_t nbytes;
    if (!CheckedMul(numel, DTypeSize(e.dtype), &nbytes) ||
        nbytes != static_cast<int64_t>(e.size())) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": got ", e.size(), " bytes, which does not match shape ",
                       ShapeString(e.shape), " of ", DTypeName(e.dtype)));
    }
  }
  for (const auto& [key, value] : metadata_) {
    if (!json::IsValidUtf8(key) || !json::IsValidUtf8(value)) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": metadata entry \"", key, "\" is not valid UTF-8"));
    }
  }
  absl::StatusOr<AtomicFileWriter> file = AtomicFileWriter::Create(path);
  if (!file.ok()) return file.status();
  const auto append = [&](const char* data, size_t size) {
    if (observe) observe(data, size);
    return file->Append(data, size);
  };
  const std::string header = Header();
  QAT_RETURN_IF_ERROR(append(header.data(), header.size()));
  for (const Entry& e : entries_) QAT_RETURN_IF_ERROR(append(e.data(), e.size()));
  return file->Commit();
}

}  // namespace qat::kernels
