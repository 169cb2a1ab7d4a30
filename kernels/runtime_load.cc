// Loading a packed export (format "qat-packed", versions 1 and 2; the contract is in runtime.h):
// the config keys, the per-linear keys, and every tensor checked against what they imply.
#include <cmath>
#include <set>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/lowbit.h"
#include "kernels/runtime_internal.h"
#include "kernels/status_macros.h"

namespace qat::kernels {
namespace {

// Sanity bounds for config values: far above any real model, low enough that sizes computed
// from them cannot overflow int64.
constexpr int64_t kMaxDim = int64_t{1} << 24;
constexpr int64_t kMaxLayers = 4096;
constexpr char kQuantPrefix[] = "qat.quant.";
constexpr char kGroupPrefix[] = "qat.group.";
constexpr char kActPrefix[] = "qat.act.";

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

bool IsFloatDType(DType d) {
  return d == DType::kF32 || d == DType::kF16 || d == DType::kBF16 || d == DType::kF64;
}

// Metadata access with errors that name the file and the key.
class MetaReader {
 public:
  explicit MetaReader(const SafetensorsFile& file) : file_(file) {}

  absl::Status Error(const std::string& what) const {
    return absl::InvalidArgumentError(absl::StrCat(file_.path(), ": ", what));
  }
  absl::StatusOr<std::string> Get(const std::string& key) const {
    auto it = file_.metadata().find(key);
    if (it == file_.metadata().end()) {
      return Error(absl::StrCat("missing metadata key \"", key, "\""));
    }
    return it->second;
  }
  absl::Status Int(const std::string& key, int64_t lo, int64_t hi, int64_t* out) const {
    absl::StatusOr<std::string> s = Get(key);
    if (!s.ok()) return s.status();
    if (!absl::SimpleAtoi(*s, out)) {
      return Error(absl::StrCat("metadata \"", key, "\" = \"", *s, "\" is not an integer"));
    }
    if (*out < lo || *out > hi) {
      return Error(
          absl::StrCat("metadata \"", key, "\" = ", *out, " is outside [", lo, ", ", hi, "]"));
    }
    return absl::OkStatus();
  }
  absl::Status Double(const std::string& key, double lo, double* out) const {
    absl::StatusOr<std::string> s = Get(key);
    if (!s.ok()) return s.status();
    if (!absl::SimpleAtod(*s, out) || !std::isfinite(*out)) {
      return Error(absl::StrCat("metadata \"", key, "\" = \"", *s, "\" is not a finite number"));
    }
    if (*out < lo) return Error(absl::StrCat("metadata \"", key, "\" = ", *s, " is below ", lo));
    return absl::OkStatus();
  }

 private:
  const SafetensorsFile& file_;
};

bool ParseFormat(const std::string& value, LinearFormat* f) {
  for (LinearFormat candidate : {LinearFormat::kTernary2, LinearFormat::kTernary3,
                                 LinearFormat::kInt2, LinearFormat::kInt4}) {
    if (value == LinearFormatName(candidate)) {
      *f = candidate;
      return true;
    }
  }
  return false;
}

bool IsIntK(LinearFormat f) { return f == LinearFormat::kInt2 || f == LinearFormat::kInt4; }

// Reads the tensors of one file, remembering which ones it consumed so that leftovers (a typo'd
// name, an lm_head next to tied embeddings) are reported, not ignored.
class Loader {
 public:
  Loader(const SafetensorsFile& file, std::map<std::string, LinearPacking> packings)
      : file_(file), meta_(file), packings_(std::move(packings)) {}

  absl::Status ReadFloat(const std::string& name, const std::vector<int64_t>& shape,
                         std::vector<float>* out);
  absl::Status ReadLinear(const std::string& name, int64_t out, int64_t in, int version,
                          Linear* lin);
  absl::Status CheckAllTensorsUsed() const;

 private:
  absl::Status Error(const std::string& what) const { return meta_.Error(what); }
  // Finds a tensor and checks its dtype (`dtype_ok`, described by `expected_dtype`) and shape.
  absl::StatusOr<const TensorInfo*> Expect(const std::string& name, bool (*dtype_ok)(DType),
                                           const char* expected_dtype,
                                           const std::vector<int64_t>& shape);
  // Reads a float tensor whose shape is one of `shapes` (described by `expected`), all finite.
  absl::Status ReadFinite(const std::string& name, const std::vector<std::vector<int64_t>>& shapes,
                          const std::string& expected, std::vector<float>* out);
  absl::Status ReadPackedCodes(const std::string& name, const Linear& lin, int64_t row_bytes,
                               std::vector<uint8_t>* codes);

  const SafetensorsFile& file_;
  MetaReader meta_;
  std::map<std::string, LinearPacking> packings_;
  std::set<std::string> used_;
};

absl::StatusOr<const TensorInfo*> Loader::Expect(const std::string& name, bool (*dtype_ok)(DType),
                                                 const char* expected_dtype,
                                                 const std::vector<int64_t>& shape) {
  const TensorInfo* t = file_.Find(name);
  if (t == nullptr) {
    return Error(absl::StrCat("missing tensor ", name, " (expected ", expected_dtype, " ",
                              ShapeString(shape), ")"));
  }
  used_.insert(name);
  if (!dtype_ok(t->dtype) || t->shape != shape) {
    return Error(absl::StrCat("tensor ", name, " is ", DTypeName(t->dtype), " ",
                              ShapeString(t->shape), ", expected ", expected_dtype, " ",
                              ShapeString(shape)));
  }
  return t;
}

absl::Status Loader::ReadFloat(const std::string& name, const std::vector<int64_t>& shape,
                               std::vector<float>* out) {
  absl::StatusOr<const TensorInfo*> t = Expect(name, IsFloatDType, "F32", shape);
  if (!t.ok()) return t.status();
  absl::StatusOr<std::vector<float>> values = file_.ReadF32(name);
  if (!values.ok()) return values.status();
  *out = std::move(*values);
  return absl::OkStatus();
}

absl::Status Loader::ReadFinite(const std::string& name,
                                const std::vector<std::vector<int64_t>>& shapes,
                                const std::string& expected, std::vector<float>* out) {
  const TensorInfo* t = file_.Find(name);
  if (t == nullptr) return Error(absl::StrCat("missing tensor ", name, " (", expected, ")"));
  used_.insert(name);
  bool shape_ok = false;
  for (const std::vector<int64_t>& s : shapes) shape_ok = shape_ok || t->shape == s;
  if (!IsFloatDType(t->dtype) || !shape_ok) {
    return Error(absl::StrCat("tensor ", name, " is ", DTypeName(t->dtype), " ",
                              ShapeString(t->shape), ", expected ", expected));
  }
  absl::StatusOr<std::vector<float>> values = file_.ReadF32(name);
  if (!values.ok()) return values.status();
  for (size_t i = 0; i < values->size(); ++i) {
    if (!std::isfinite((*values)[i])) {
      return Error(absl::StrCat("tensor ", name, "[", i, "] is not finite"));
    }
  }
  *out = std::move(*values);
  return absl::OkStatus();
}

absl::Status Loader::ReadPackedCodes(const std::string& name, const Linear& lin, int64_t row_bytes,
                                     std::vector<uint8_t>* codes) {
  const char* format = LinearFormatName(lin.packing.format);
  const std::string expected = absl::StrCat("U8 (", format, ")");
  absl::StatusOr<const TensorInfo*> t =
      Expect(name, [](DType d) { return d == DType::kU8; }, expected.c_str(), {lin.out, row_bytes});
  if (!t.ok()) return t.status();
  const uint8_t* data = file_.Data(**t);
  int64_t bad = -1;
  const char* why = "";
  switch (lin.packing.format) {
    case LinearFormat::kTernary2:
      bad = ValidateTernary(data, lin.out, lin.in);
      why = "a code 3, or padding that is not code 1";
      break;
    case LinearFormat::kTernary3:
      bad = ValidateTernary3(data, lin.out, lin.in);
      why = "a byte above 242, or padding that is not code 1";
      break;
    case LinearFormat::kInt2:
    case LinearFormat::kInt4:
      bad = ValidateIntK(data, lin.out, lin.in, lin.bits());
      why = "padding past the last column that is not code 0";
      break;
    case LinearFormat::kDense:
      break;
  }
  if (bad >= 0) {
    return Error(absl::StrCat("tensor ", name, ": invalid ", format, " byte 0x",
                              absl::Hex(data[bad], absl::kZeroPad2), " at byte offset ", bad,
                              " (row ", bad / row_bytes, ", ", lin.in, " columns): ", why));
  }
  codes->assign(data, data + lin.out * row_bytes);
  return absl::OkStatus();
}

absl::Status Loader::ReadLinear(const std::string& name, int64_t out, int64_t in, int version,
                                Linear* lin) {
  lin->out = out;
  lin->in = in;
  auto it = packings_.find(name);
  lin->packing = it == packings_.end() ? LinearPacking{} : it->second;
  if (const TensorInfo* bias = file_.Find(name + ".bias"); bias != nullptr) {
    if (version < 2) {
      return Error(absl::StrCat("tensor ", bias->name, ": biases need qat.version 2"));
    }
    QAT_RETURN_IF_ERROR(
        ReadFinite(bias->name, {{out}}, absl::StrCat("F32 [", out, "]"), &lin->bias));
  }
  switch (lin->packing.format) {
    case LinearFormat::kDense:
      return ReadFloat(name, {out, in}, &lin->dense);
    case LinearFormat::kTernary2:
    case LinearFormat::kTernary3: {
      const bool two = lin->packing.format == LinearFormat::kTernary2;
      QAT_RETURN_IF_ERROR(ReadPackedCodes(
          name, *lin, two ? TernaryRowBytes(in) : Ternary3RowBytes(in), &lin->codes));
      return ReadFinite(name + ".scale", {{1}, {out}}, absl::StrCat("F32 [1] or [", out, "]"),
                        &lin->scales);
    }
    case LinearFormat::kInt2:
    case LinearFormat::kInt4: {
      QAT_RETURN_IF_ERROR(ReadPackedCodes(name, *lin, IntKRowBytes(lin->bits(), in), &lin->codes));
      const int64_t groups = IntKGroupsPerRow(lin->packing.group, in);
      const std::string expected = absl::StrCat("F32 [", out * groups, "] or [", out, ", ", groups,
                                                "] (group ", lin->packing.group, ")");
      QAT_RETURN_IF_ERROR(
          ReadFinite(name + ".scale", {{out * groups}, {out, groups}}, expected, &lin->scales));
      return ReadFinite(name + ".zero", {{out * groups}, {out, groups}}, expected, &lin->zeros);
    }
  }
  return Error(absl::StrCat("tensor ", name, ": unhandled storage"));
}

absl::Status Loader::CheckAllTensorsUsed() const {
  for (const TensorInfo& t : file_.tensors()) {
    if (used_.count(t.name) == 0) {
      return Error(absl::StrCat("unexpected tensor ", t.name, " (not part of this config)"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

std::string LayerPrefix(int64_t layer) { return absl::StrCat("model.layers.", layer, "."); }

const char* LinearFormatName(LinearFormat f) {
  switch (f) {
    case LinearFormat::kDense:
      return "f32";
    case LinearFormat::kTernary2:
      return "ternary2";
    case LinearFormat::kTernary3:
      return "ternary3";
    case LinearFormat::kInt2:
      return "int2";
    case LinearFormat::kInt4:
      return "int4";
  }
  return "unknown";
}

absl::StatusOr<RuntimeConfig> ParsePackedConfig(const SafetensorsFile& file) {
  const MetaReader meta(file);
  RuntimeConfig c;
  absl::StatusOr<std::string> format = meta.Get("format");
  if (!format.ok()) return format.status();
  if (*format != "qat-packed") {
    return meta.Error(
        absl::StrCat("metadata \"format\" = \"", *format, "\", expected \"qat-packed\""));
  }
  absl::StatusOr<std::string> version = meta.Get("qat.version");
  if (!version.ok()) return version.status();
  int64_t v = 0;
  if (!absl::SimpleAtoi(*version, &v) || v < 1 || v > kPackedFormatVersion) {
    return meta.Error(absl::StrCat("metadata \"qat.version\" = \"", *version,
                                   "\", expected \"1\" to \"", kPackedFormatVersion, "\""));
  }
  c.version = static_cast<int>(v);
  const struct {
    const char* key;
    int64_t* field;
    int64_t hi;
  } sizes[] = {
      {"qat.vocab_size", &c.vocab_size, kMaxDim},
      {"qat.hidden_size", &c.hidden_size, kMaxDim},
      {"qat.intermediate_size", &c.intermediate_size, kMaxDim},
      {"qat.num_layers", &c.num_layers, kMaxLayers},
      {"qat.num_heads", &c.num_heads, kMaxDim},
      {"qat.num_kv_heads", &c.num_kv_heads, kMaxDim},
      {"qat.max_seq_len", &c.max_seq_len, kMaxDim},
  };
  for (const auto& s : sizes) QAT_RETURN_IF_ERROR(meta.Int(s.key, 1, s.hi, s.field));
  QAT_RETURN_IF_ERROR(meta.Double("qat.rope_theta", 1e-300, &c.rope_theta));
  QAT_RETURN_IF_ERROR(meta.Double("qat.rms_norm_eps", 0.0, &c.rms_norm_eps));
  int64_t tie = 0;
  QAT_RETURN_IF_ERROR(meta.Int("qat.tie_embeddings", 0, 1, &tie));
  c.tie_embeddings = tie == 1;
  // -1: the model has no such token.
  QAT_RETURN_IF_ERROR(meta.Int("qat.bos_id", -1, c.vocab_size - 1, &c.bos_id));
  QAT_RETURN_IF_ERROR(meta.Int("qat.eos_id", -1, c.vocab_size - 1, &c.eos_id));
  absl::StatusOr<std::string> tokenizer = meta.Get("qat.tokenizer");
  if (!tokenizer.ok()) return tokenizer.status();
  if (tokenizer->empty()) return meta.Error("metadata \"qat.tokenizer\" is empty");
  c.tokenizer = *tokenizer;

  if (c.hidden_size % c.num_heads != 0) {
    return meta.Error(absl::StrCat("qat.hidden_size (", c.hidden_size,
                                   ") is not a multiple of qat.num_heads (", c.num_heads, ")"));
  }
  if (c.num_heads % c.num_kv_heads != 0) {
    return meta.Error(absl::StrCat("qat.num_heads (", c.num_heads,
                                   ") is not a multiple of qat.num_kv_heads (", c.num_kv_heads,
                                   ")"));
  }
  if ((c.hidden_size / c.num_heads) % 2 != 0) {
    return meta.Error(absl::StrCat("head dim qat.hidden_size / qat.num_heads = ",
                                   c.hidden_size / c.num_heads, " is odd (RoPE rotates pairs)"));
  }
  return c;
}

absl::StatusOr<std::map<std::string, LinearPacking>> ParsePackedLinearKeys(
    const SafetensorsFile& file, const RuntimeConfig& c) {
  const MetaReader meta(file);
  std::set<std::string> linear_names;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    for (const LinearSpec& spec : kLinearSpecs) linear_names.insert(LayerPrefix(l) + spec.suffix);
  }
  std::map<std::string, LinearPacking> packings;
  // Pass 1: formats and activations; pass 2: groups (they depend on the format).
  for (const auto& [key, value] : file.metadata()) {
    const bool quant = absl::StartsWith(key, kQuantPrefix);
    const bool act = absl::StartsWith(key, kActPrefix);
    const bool group = absl::StartsWith(key, kGroupPrefix);
    if (!quant && !act && !group) continue;
    const std::string name = key.substr(quant ? sizeof(kQuantPrefix) - 1
                                        : act ? sizeof(kActPrefix) - 1
                                              : sizeof(kGroupPrefix) - 1);
    if (linear_names.count(name) == 0) {
      return meta.Error(absl::StrCat("metadata \"", key, "\": \"", name,
                                     "\" is not a linear weight of this model"));
    }
    if (group) continue;
    LinearPacking& p = packings[name];
    if (quant) {
      if (!ParseFormat(value, &p.format)) {
        return meta.Error(
            absl::StrCat("metadata \"", key, "\" = \"", value,
                         "\" is not a known format (expected ternary2, ternary3, int2 or int4)"));
      }
      if (c.version < 2 && p.format != LinearFormat::kTernary2) {
        return meta.Error(absl::StrCat("metadata \"", key, "\" = \"", value,
                                       "\" needs qat.version 2 (version 1 has only ternary2)"));
      }
    } else if (value != "int8") {
      return meta.Error(absl::StrCat("metadata \"", key, "\" = \"", value,
                                     "\" is not a known activation format (expected int8)"));
    } else if (c.version < 2) {
      return meta.Error(absl::StrCat("metadata \"", key, "\" needs qat.version 2"));
    } else {
      p.act_int8 = true;
    }
  }
  for (auto& [name, p] : packings) {
    const std::string key = kGroupPrefix + name;
    const bool has_group = file.metadata().count(key) > 0;
    if (!IsIntK(p.format)) {
      if (has_group) {
        return meta.Error(absl::StrCat("metadata \"", key, "\" given, but ", name, " is ",
                                       LinearFormatName(p.format), " (groups are for int2/int4)"));
      }
      continue;
    }
    int64_t g = 0;
    absl::Status s = meta.Int(key, 32, 128, &g);
    if (!s.ok()) return s;
    if (!IntKLayoutSupported(p.format == LinearFormat::kInt2 ? 2 : 4, g)) {
      return meta.Error(absl::StrCat("metadata \"", key, "\" = ", g, " is not 32, 64 or 128"));
    }
    p.group = g;
  }
  for (const auto& [key, value] : file.metadata()) {  // groups of linears without a format
    if (!absl::StartsWith(key, kGroupPrefix)) continue;
    auto it = packings.find(key.substr(sizeof(kGroupPrefix) - 1));
    if (it == packings.end() || !IsIntK(it->second.format)) {
      return meta.Error(absl::StrCat("metadata \"", key,
                                     "\" given, but that linear is not "
                                     "int2/int4 (groups are for int2/int4)"));
    }
  }
  return packings;
}

absl::StatusOr<ModelWeights> LoadModelWeights(const SafetensorsFile& file) {
  absl::StatusOr<RuntimeConfig> config = ParsePackedConfig(file);
  if (!config.ok()) return config.status();
  absl::StatusOr<std::map<std::string, LinearPacking>> packings =
      ParsePackedLinearKeys(file, *config);
  if (!packings.ok()) return packings.status();
  Loader loader(file, std::move(*packings));
  ModelWeights m;
  m.config = *config;
  const RuntimeConfig& c = m.config;
  const int64_t kv_dim = c.num_kv_heads * (c.hidden_size / c.num_heads);

  m.embed.out = m.lm_head.out = c.vocab_size;
  m.embed.in = m.lm_head.in = c.hidden_size;
  QAT_RETURN_IF_ERROR(
      loader.ReadFloat("model.embed_tokens.weight", {c.vocab_size, c.hidden_size}, &m.embed.dense));
  m.layers.resize(c.num_layers);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    Layer& layer = m.layers[l];
    const std::string prefix = LayerPrefix(l);
    QAT_RETURN_IF_ERROR(
        loader.ReadFloat(prefix + "input_layernorm.weight", {c.hidden_size}, &layer.input_norm));
    QAT_RETURN_IF_ERROR(loader.ReadFloat(prefix + "post_attention_layernorm.weight",
                                         {c.hidden_size}, &layer.post_attention_norm));
    for (const LinearSpec& spec : kLinearSpecs) {
      const int64_t out = spec.out_is_kv             ? kv_dim
                          : spec.out_is_intermediate ? c.intermediate_size
                                                     : c.hidden_size;
      const int64_t in = spec.in_is_intermediate ? c.intermediate_size : c.hidden_size;
      QAT_RETURN_IF_ERROR(
          loader.ReadLinear(prefix + spec.suffix, out, in, c.version, &(layer.*spec.member)));
    }
  }
  QAT_RETURN_IF_ERROR(loader.ReadFloat("model.norm.weight", {c.hidden_size}, &m.final_norm));
  if (!c.tie_embeddings) {
    QAT_RETURN_IF_ERROR(
        loader.ReadFloat("lm_head.weight", {c.vocab_size, c.hidden_size}, &m.lm_head.dense));
  }
  QAT_RETURN_IF_ERROR(loader.CheckAllTensorsUsed());
  return m;
}

}  // namespace qat::kernels
