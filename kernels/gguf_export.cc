// qat-packed -> GGUF conversion (see gguf_export.h for the mapping, the RoPE row permutation and
// the tokenizer metadata).
//
// The packed file is read whole and checked like the runtime checks it (config and per-linear
// keys, every tensor's dtype and shape, packed codes, finite scales and zero points, no leftover
// tensors); each tensor is then encoded straight into its GGUF type and handed to GgufWriter,
// which lays out and writes the file atomically.
#include "kernels/gguf_export.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <set>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "kernels/lowbit.h"
#include "kernels/runtime.h"
#include "kernels/safetensors.h"
#include "kernels/status_macros.h"
#include "kernels/ternary.h"

namespace qat::kernels {
namespace {

constexpr int64_t kByteTokens = 256;

// llama.cpp token types (enum llama_token_type).
constexpr int32_t kTokenNormal = 1;
constexpr int32_t kTokenControl = 3;
constexpr int32_t kTokenUnused = 5;
constexpr int32_t kTokenByte = 6;

// A linear weight of one layer: its HF and GGUF name suffixes and its logical [out, in].
struct LinearSpec {
  const char* hf_suffix;
  const char* gguf_suffix;
  enum Out { kHidden, kKv, kIntermediate } out;
  bool in_is_intermediate;
  enum Rope { kNone, kQuery, kKey } rope;
};
constexpr LinearSpec kLinears[] = {
    {"self_attn.q_proj.weight", "attn_q.weight", LinearSpec::kHidden, false, LinearSpec::kQuery},
    {"self_attn.k_proj.weight", "attn_k.weight", LinearSpec::kKv, false, LinearSpec::kKey},
    {"self_attn.v_proj.weight", "attn_v.weight", LinearSpec::kKv, false, LinearSpec::kNone},
    {"self_attn.o_proj.weight", "attn_output.weight", LinearSpec::kHidden, false,
     LinearSpec::kNone},
    {"mlp.gate_proj.weight", "ffn_gate.weight", LinearSpec::kIntermediate, false,
     LinearSpec::kNone},
    {"mlp.up_proj.weight", "ffn_up.weight", LinearSpec::kIntermediate, false, LinearSpec::kNone},
    {"mlp.down_proj.weight", "ffn_down.weight", LinearSpec::kHidden, true, LinearSpec::kNone},
};

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// The source row of GGUF row `row` after llama.cpp's q/k permutation (gguf_export.h); heads == 0
// means no permutation.
int64_t SourceRow(int64_t row, int64_t heads, int64_t head_dim) {
  if (heads == 0) return row;
  const int64_t head = row / head_dim, within = row % head_dim;
  return head * head_dim + (within % 2) * (head_dim / 2) + within / 2;
}

// Rounds a block constant v (a scale d, or a Q4_1 offset m) to fp16 bits. False when fp16 cannot
// hold it: too large, or nonzero but flushed to zero while `may_vanish` is false. Otherwise raises
// *max_rel_error to its relative rounding error (a value flushed to zero is left out).
bool ToHalf(float v, bool may_vanish, uint16_t* bits, double* max_rel_error) {
  *bits = FloatToHalf(v);
  const float rounded = HalfToFloat(*bits);
  if (!std::isfinite(rounded)) return false;
  if (v != 0.0f && rounded == 0.0f) return may_vanish;
  if (v != 0.0f) {
    *max_rel_error =
        std::max(*max_rel_error, std::fabs(static_cast<double>(rounded) - v) / std::fabs(v));
  }
  return true;
}

class Converter {
 public:
  Converter(const SafetensorsFile& file, const GgufExportOptions& options, GgufWriter* writer,
            GgufExportReport* report)
      : file_(file), options_(options), writer_(*writer), report_(*report) {}

  absl::Status Run(const std::string& name);

 private:
  absl::Status Error(const std::string& what) const {
    return absl::InvalidArgumentError(absl::StrCat(file_.path(), ": ", what));
  }
  // Why ToHalf refused `v`, the value of `what`.
  absl::Status Fp16Error(const std::string& what, float v) const;
  absl::Status ParseConfig();
  int64_t head_dim() const { return c_.hidden_size / c_.num_heads; }
  absl::Status ParseLinearKeys();
  void SetMetadata(const std::string& name);
  void SetFileTypeAndSize();
  void SetTokenizer();
  absl::Status CheckTokenizer(const GgufTokenizer& t) const;
  void SetOtherTokenizer(const GgufTokenizer& t);

  absl::StatusOr<const TensorInfo*> Find(const std::string& name);
  absl::Status AddNorm(const std::string& hf, const std::string& gguf);
  absl::Status AddBias(const std::string& hf, const std::string& gguf, int64_t rows,
                       int64_t rope_heads);
  // A dense [rows, cols] source (any float dtype) as dense_type, rows permuted for q/k.
  absl::Status AddDense(const std::string& hf, const std::string& gguf, int64_t rows, int64_t cols,
                        int64_t rope_heads);
  // A linear weight of logical shape [rows, cols] in the storage its keys select.
  absl::Status AddLinear(const std::string& hf, const std::string& gguf, int64_t rows, int64_t cols,
                         int64_t rope_heads);
  // The packed codes of `hf` (U8 [rows, row_bytes]), checked with the format's validator.
  absl::StatusOr<const uint8_t*> ReadCodes(const std::string& hf, LinearFormat format, int64_t rows,
                                           int64_t cols, int64_t row_bytes);
  // A float tensor of one of `shapes` (described by `expected`) whose values are all finite.
  absl::StatusOr<std::vector<float>> ReadFinite(const std::string& name,
                                                const std::vector<std::vector<int64_t>>& shapes,
                                                const std::string& expected);
  absl::Status AddTernary(const std::string& hf, const std::string& gguf, int64_t rows,
                          int64_t cols, int64_t rope_heads, LinearFormat format);
  absl::Status AddIntK(const std::string& hf, const std::string& gguf, int64_t rows, int64_t cols,
                       int64_t rope_heads, const LinearPacking& packing);
  // Encodes rows x cols floats (already permuted) as dense_type, or F16 when Q8_0 cannot hold
  // the row length; records the tensor in the report.
  absl::Status EncodeDense(const std::vector<float>& values, int64_t rows, int64_t cols,
                           GgufTensorReport entry);
  absl::Status CheckAllTensorsUsed() const;

  const SafetensorsFile& file_;
  const GgufExportOptions& options_;
  GgufWriter& writer_;
  GgufExportReport& report_;
  RuntimeConfig c_;  // the packed file's config, as the runtime reads it
  std::map<std::string, LinearPacking> packings_;  // linears with per-linear keys
  std::set<std::string> used_;
};

absl::Status Converter::Fp16Error(const std::string& what, float v) const {
  if (!std::isfinite(HalfToFloat(FloatToHalf(v)))) {
    return Error(
        absl::StrCat(what, " = ", v, " does not fit in fp16 (|value| must be below 65520)"));
  }
  return Error(absl::StrCat(what, " = ", v, " underflows fp16 (|value| must be at least 2^-25)"));
}

absl::Status Converter::ParseConfig() {
  // The same keys and checks as the runtime (runtime.h); GGUF adds its tokenizer rules below.
  absl::StatusOr<RuntimeConfig> config = ParsePackedConfig(file_);
  if (!config.ok()) return config.status();
  c_ = *config;
  const std::string& tokenizer = c_.tokenizer;
  if (options_.tokenizer.has_value()) {
    QAT_RETURN_IF_ERROR(CheckTokenizer(*options_.tokenizer));
  } else if (tokenizer != "byte") {
    return Error(absl::StrCat("metadata \"qat.tokenizer\" = \"", tokenizer,
                              "\": only the \"byte\" tokenizer can be described in GGUF"));
  }
  if (!options_.tokenizer.has_value()) {
    if (c_.vocab_size < kByteTokens) {
      return Error(absl::StrCat("qat.vocab_size = ", c_.vocab_size,
                                " is below the 256 byte tokens of the byte tokenizer"));
    }
    for (const auto& [key, id] :
         {std::pair<const char*, int64_t>{"qat.bos_id", c_.bos_id}, {"qat.eos_id", c_.eos_id}}) {
      if (id >= 0 && id < kByteTokens) {
        return Error(absl::StrCat("metadata \"", key, "\" = ", id, " is a byte token (0..255)"));
      }
    }
    if (c_.bos_id >= 0 && c_.bos_id == c_.eos_id) {
      return Error(absl::StrCat("qat.bos_id and qat.eos_id are both ", c_.bos_id));
    }
  }
  return absl::OkStatus();
}

absl::Status Converter::ParseLinearKeys() {
  // The runtime's parser: every packed format, its group, and "qat.act.NAME" (dropped, see
  // gguf_export.h) are checked as the runtime checks them.
  absl::StatusOr<std::map<std::string, LinearPacking>> packings = ParsePackedLinearKeys(file_, c_);
  if (!packings.ok()) return packings.status();
  packings_ = std::move(*packings);
  return absl::OkStatus();
}

void Converter::SetMetadata(const std::string& name) {
  auto u32 = [](int64_t v) { return GgufValue::Uint32(static_cast<uint32_t>(v)); };
  writer_.SetKv("general.architecture", GgufValue::String("llama"));
  writer_.SetKv("general.name", GgufValue::String(name));
  writer_.SetKv("general.alignment", GgufValue::Uint32(kGgufDefaultAlignment));
  writer_.SetKv("general.quantization_version", GgufValue::Uint32(2));
  writer_.SetKv("llama.context_length", u32(c_.max_seq_len));
  writer_.SetKv("llama.embedding_length", u32(c_.hidden_size));
  writer_.SetKv("llama.block_count", u32(c_.num_layers));
  writer_.SetKv("llama.feed_forward_length", u32(c_.intermediate_size));
  writer_.SetKv("llama.rope.dimension_count", u32(head_dim()));
  writer_.SetKv("llama.attention.head_count", u32(c_.num_heads));
  writer_.SetKv("llama.attention.head_count_kv", u32(c_.num_kv_heads));
  writer_.SetKv("llama.attention.layer_norm_rms_epsilon",
                GgufValue::Float32(static_cast<float>(c_.rms_norm_eps)));
  writer_.SetKv("llama.rope.freq_base", GgufValue::Float32(static_cast<float>(c_.rope_theta)));
  writer_.SetKv("llama.vocab_size", u32(c_.vocab_size));
  SetTokenizer();
}

absl::Status Converter::CheckTokenizer(const GgufTokenizer& t) const {
  const auto bad = [&](const std::string& what) {
    return absl::InvalidArgumentError(
        absl::StrCat("GGUF tokenizer for ", file_.path(), ": ", what));
  };
  if (t.model != "gpt2" && t.model != "llama") {
    return bad(absl::StrCat("model \"", t.model, "\", expected \"gpt2\" or \"llama\""));
  }
  const int64_t n = static_cast<int64_t>(t.tokens.size());
  if (n == 0 || n > c_.vocab_size) {
    return bad(absl::StrCat(n, " tokens for a model vocabulary of ", c_.vocab_size,
                            " (qat.vocab_size); need 1..", c_.vocab_size));
  }
  if (static_cast<int64_t>(t.token_types.size()) != n) {
    return bad(absl::StrCat(t.token_types.size(), " token types for ", n, " tokens"));
  }
  if (t.model == "llama" ? static_cast<int64_t>(t.scores.size()) != n : !t.scores.empty()) {
    return bad(absl::StrCat(t.scores.size(), " scores for ", n, " tokens of model ", t.model));
  }
  if (t.model == "llama" && !t.merges.empty()) return bad("merges given for a llama tokenizer");
  for (const auto& [name, id] :
       {std::pair<const char*, int64_t>{"bos", t.bos}, {"eos", t.eos}, {"unk", t.unk}}) {
    if (id < -1 || id >= c_.vocab_size) {
      return bad(absl::StrCat(name, " id ", id, " is outside [-1, ", c_.vocab_size, ")"));
    }
  }
  return absl::OkStatus();
}

void Converter::SetTokenizer() {
  if (options_.tokenizer.has_value()) {
    SetOtherTokenizer(*options_.tokenizer);
    return;
  }
  std::vector<std::string> tokens;
  std::vector<int32_t> types;
  for (int64_t id = 0; id < c_.vocab_size; ++id) {
    if (id == ' ') {
      tokens.push_back("\xe2\x96\x81");  // U+2581, see gguf_export.h
      types.push_back(kTokenNormal);
    } else if (id < kByteTokens) {
      tokens.push_back(absl::StrFormat("<0x%02X>", id));
      types.push_back(kTokenByte);
    } else if (id == c_.bos_id) {
      tokens.push_back("<s>");
      types.push_back(kTokenControl);
    } else if (id == c_.eos_id) {
      tokens.push_back("</s>");
      types.push_back(kTokenControl);
    } else {
      tokens.push_back(absl::StrCat("<unused_", id, ">"));
      types.push_back(kTokenUnused);
    }
  }
  writer_.SetKv("tokenizer.ggml.model", GgufValue::String("llama"));
  writer_.SetKv("tokenizer.ggml.tokens", GgufValue::StringArray(tokens));
  writer_.SetKv("tokenizer.ggml.scores",
                GgufValue::Float32Array(std::vector<float>(tokens.size(), 0.0f)));
  writer_.SetKv("tokenizer.ggml.token_type", GgufValue::Int32Array(types));
  if (c_.bos_id >= 0) {
    writer_.SetKv("tokenizer.ggml.bos_token_id",
                  GgufValue::Uint32(static_cast<uint32_t>(c_.bos_id)));
  }
  if (c_.eos_id >= 0) {
    writer_.SetKv("tokenizer.ggml.eos_token_id",
                  GgufValue::Uint32(static_cast<uint32_t>(c_.eos_id)));
  }
  writer_.SetKv("tokenizer.ggml.add_bos_token", GgufValue::Bool(c_.bos_id >= 0));
  writer_.SetKv("tokenizer.ggml.add_eos_token", GgufValue::Bool(false));
  writer_.SetKv("tokenizer.ggml.add_space_prefix", GgufValue::Bool(false));
}

void Converter::SetOtherTokenizer(const GgufTokenizer& t) {
  std::vector<std::string> tokens = t.tokens;
  std::vector<int32_t> types = t.token_types;
  std::vector<float> scores = t.scores;
  for (int64_t id = static_cast<int64_t>(tokens.size()); id < c_.vocab_size; ++id) {
    tokens.push_back(absl::StrCat("[PAD", id, "]"));
    types.push_back(kTokenUnused);
    if (!scores.empty()) scores.push_back(0.0f);
  }
  writer_.SetKv("tokenizer.ggml.model", GgufValue::String(t.model));
  if (!t.pre.empty()) writer_.SetKv("tokenizer.ggml.pre", GgufValue::String(t.pre));
  writer_.SetKv("tokenizer.ggml.tokens", GgufValue::StringArray(tokens));
  writer_.SetKv("tokenizer.ggml.token_type", GgufValue::Int32Array(types));
  if (!scores.empty()) writer_.SetKv("tokenizer.ggml.scores", GgufValue::Float32Array(scores));
  if (!t.merges.empty()) writer_.SetKv("tokenizer.ggml.merges", GgufValue::StringArray(t.merges));
  const auto u32 = [](int64_t v) { return GgufValue::Uint32(static_cast<uint32_t>(v)); };
  if (t.bos >= 0) writer_.SetKv("tokenizer.ggml.bos_token_id", u32(t.bos));
  if (t.eos >= 0) writer_.SetKv("tokenizer.ggml.eos_token_id", u32(t.eos));
  if (t.unk >= 0) writer_.SetKv("tokenizer.ggml.unknown_token_id", u32(t.unk));
  writer_.SetKv("tokenizer.ggml.add_bos_token", GgufValue::Bool(t.add_bos && t.bos >= 0));
  writer_.SetKv("tokenizer.ggml.add_eos_token", GgufValue::Bool(false));
  if (t.model == "llama") {
    writer_.SetKv("tokenizer.ggml.add_space_prefix", GgufValue::Bool(t.add_space_prefix));
  }
}

absl::StatusOr<const TensorInfo*> Converter::Find(const std::string& name) {
  const TensorInfo* t = file_.Find(name);
  if (t == nullptr) return Error("missing tensor " + name);
  used_.insert(name);
  return t;
}

bool IsFloatDType(DType d) {
  return d == DType::kF32 || d == DType::kF16 || d == DType::kBF16 || d == DType::kF64;
}

absl::Status Converter::AddNorm(const std::string& hf, const std::string& gguf) {
  absl::StatusOr<const TensorInfo*> t = Find(hf);
  if (!t.ok()) return t.status();
  if (!IsFloatDType((*t)->dtype) || (*t)->shape != std::vector<int64_t>{c_.hidden_size}) {
    return Error(absl::StrCat("tensor ", hf, " is ", DTypeName((*t)->dtype), " ",
                              ShapeString((*t)->shape), ", expected F32 [", c_.hidden_size, "]"));
  }
  absl::StatusOr<std::vector<float>> values = file_.ReadF32(hf);
  if (!values.ok()) return values.status();
  std::string bytes(values->size() * sizeof(float), '\0');
  EncodeFloatRow(GgmlType::kF32, values->data(), c_.hidden_size,
                 reinterpret_cast<uint8_t*>(&bytes[0]));
  QAT_RETURN_IF_ERROR(writer_.AddTensor(gguf, GgmlType::kF32, {c_.hidden_size}, std::move(bytes)));
  GgufTensorReport entry;
  entry.gguf_name = gguf;
  entry.source_name = hf;
  entry.type = GgmlType::kF32;
  entry.dims = {c_.hidden_size};
  report_.tensors.push_back(std::move(entry));
  return absl::OkStatus();
}

absl::Status Converter::AddBias(const std::string& hf, const std::string& gguf, int64_t rows,
                                int64_t rope_heads) {
  absl::StatusOr<const TensorInfo*> t = Find(hf);
  if (!t.ok()) return t.status();
  if (!IsFloatDType((*t)->dtype) || (*t)->shape != std::vector<int64_t>{rows}) {
    return Error(absl::StrCat("tensor ", hf, " is ", DTypeName((*t)->dtype), " ",
                              ShapeString((*t)->shape), ", expected F32 [", rows, "]"));
  }
  absl::StatusOr<std::vector<float>> source = file_.ReadF32(hf);
  if (!source.ok()) return source.status();
  // A bias is added to the projection's output rows, so it follows the q/k row permutation.
  std::vector<float> values(source->size());
  for (int64_t r = 0; r < rows; ++r) values[r] = (*source)[SourceRow(r, rope_heads, head_dim())];
  std::string bytes(values.size() * sizeof(float), '\0');
  EncodeFloatRow(GgmlType::kF32, values.data(), rows, reinterpret_cast<uint8_t*>(&bytes[0]));
  QAT_RETURN_IF_ERROR(writer_.AddTensor(gguf, GgmlType::kF32, {rows}, std::move(bytes)));
  GgufTensorReport entry;
  entry.gguf_name = gguf;
  entry.source_name = hf;
  entry.type = GgmlType::kF32;
  entry.dims = {rows};
  report_.tensors.push_back(std::move(entry));
  return absl::OkStatus();
}

absl::Status Converter::EncodeDense(const std::vector<float>& values, int64_t rows, int64_t cols,
                                    GgufTensorReport entry) {
  GgmlType type = options_.dense_type;
  if (type == GgmlType::kQ8_0 && cols % kQ8_0Block != 0) {
    type = GgmlType::kF16;
    entry.fallback = true;
    entry.note = absl::StrCat(entry.note, entry.note.empty() ? "" : "; ", "row length ", cols,
                              " is not a multiple of 32: F16 instead of Q8_0");
  }
  const int64_t row_bytes = cols / GgmlBlockElements(type) * GgmlBlockBytes(type);
  std::string bytes(static_cast<size_t>(rows * row_bytes), '\0');
  for (int64_t r = 0; r < rows; ++r) {
    EncodeFloatRow(type, values.data() + r * cols, cols,
                   reinterpret_cast<uint8_t*>(&bytes[0]) + r * row_bytes);
  }
  QAT_RETURN_IF_ERROR(writer_.AddTensor(entry.gguf_name, type, {cols, rows}, std::move(bytes)));
  entry.type = type;
  entry.dims = {cols, rows};
  report_.tensors.push_back(std::move(entry));
  return absl::OkStatus();
}

absl::Status Converter::AddDense(const std::string& hf, const std::string& gguf, int64_t rows,
                                 int64_t cols, int64_t rope_heads) {
  absl::StatusOr<const TensorInfo*> t = Find(hf);
  if (!t.ok()) return t.status();
  if (!IsFloatDType((*t)->dtype) || (*t)->shape != std::vector<int64_t>{rows, cols}) {
    return Error(absl::StrCat("tensor ", hf, " is ", DTypeName((*t)->dtype), " ",
                              ShapeString((*t)->shape), ", expected F32 [", rows, ", ", cols, "]"));
  }
  absl::StatusOr<std::vector<float>> source = file_.ReadF32(hf);
  if (!source.ok()) return source.status();
  std::vector<float> values(source->size());
  for (int64_t r = 0; r < rows; ++r) {
    const float* src = source->data() + SourceRow(r, rope_heads, head_dim()) * cols;
    std::copy(src, src + cols, values.begin() + r * cols);
  }
  GgufTensorReport entry;
  entry.gguf_name = gguf;
  entry.source_name = hf;
  return EncodeDense(values, rows, cols, std::move(entry));
}

absl::Status Converter::AddLinear(const std::string& hf, const std::string& gguf, int64_t rows,
                                  int64_t cols, int64_t rope_heads) {
  const auto it = packings_.find(hf);
  const LinearPacking packing = it == packings_.end() ? LinearPacking{} : it->second;
  switch (packing.format) {
    case LinearFormat::kDense:
      return AddDense(hf, gguf, rows, cols, rope_heads);
    case LinearFormat::kTernary2:
    case LinearFormat::kTernary3:
      return AddTernary(hf, gguf, rows, cols, rope_heads, packing.format);
    case LinearFormat::kInt2:
    case LinearFormat::kInt4:
      return AddIntK(hf, gguf, rows, cols, rope_heads, packing);
  }
  return Error(absl::StrCat("tensor ", hf, ": unhandled storage"));
}

absl::StatusOr<const uint8_t*> Converter::ReadCodes(const std::string& hf, LinearFormat format,
                                                    int64_t rows, int64_t cols, int64_t row_bytes) {
  absl::StatusOr<const TensorInfo*> t = Find(hf);
  if (!t.ok()) return t.status();
  const char* name = LinearFormatName(format);
  if ((*t)->dtype != DType::kU8 || (*t)->shape != std::vector<int64_t>{rows, row_bytes}) {
    return Error(absl::StrCat("tensor ", hf, " is ", DTypeName((*t)->dtype), " ",
                              ShapeString((*t)->shape), ", expected U8 (", name, ") [", rows, ", ",
                              row_bytes, "]"));
  }
  const uint8_t* packed = file_.Data(**t);
  const int64_t bad = format == LinearFormat::kTernary2 ? ValidateTernary(packed, rows, cols)
                      : format == LinearFormat::kTernary3
                          ? ValidateTernary3(packed, rows, cols)
                          : ValidateIntK(packed, rows, cols, format == LinearFormat::kInt2 ? 2 : 4);
  if (bad >= 0) {
    return Error(absl::StrCat("tensor ", hf, ": invalid ", name, " byte 0x",
                              absl::Hex(packed[bad], absl::kZeroPad2), " at byte offset ", bad,
                              " (row ", bad / row_bytes, ")"));
  }
  return packed;
}

absl::StatusOr<std::vector<float>> Converter::ReadFinite(
    const std::string& name, const std::vector<std::vector<int64_t>>& shapes,
    const std::string& expected) {
  absl::StatusOr<const TensorInfo*> t = Find(name);
  if (!t.ok()) return t.status();
  if (!IsFloatDType((*t)->dtype) ||
      std::find(shapes.begin(), shapes.end(), (*t)->shape) == shapes.end()) {
    return Error(absl::StrCat("tensor ", name, " is ", DTypeName((*t)->dtype), " ",
                              ShapeString((*t)->shape), ", expected ", expected));
  }
  absl::StatusOr<std::vector<float>> values = file_.ReadF32(name);
  if (!values.ok()) return values.status();
  for (size_t i = 0; i < values->size(); ++i) {
    if (!std::isfinite((*values)[i])) {
      return Error(absl::StrCat("tensor ", name, "[", i, "] = ", (*values)[i], " is not finite"));
    }
  }
  return values;
}

absl::Status Converter::AddTernary(const std::string& hf, const std::string& gguf, int64_t rows,
                                   int64_t cols, int64_t rope_heads, LinearFormat format) {
  const bool three = format == LinearFormat::kTernary3;
  absl::StatusOr<const uint8_t*> packed =
      ReadCodes(hf, format, rows, cols, three ? Ternary3RowBytes(cols) : TernaryRowBytes(cols));
  if (!packed.ok()) return packed.status();
  std::vector<int8_t> trits(static_cast<size_t>(rows * cols));
  if (three) {
    UnpackTernary3(*packed, rows, cols, trits.data());
  } else {
    UnpackTernary(*packed, rows, cols, trits.data());
  }
  const std::string scale_name = hf + ".scale";
  absl::StatusOr<std::vector<float>> scales =
      ReadFinite(scale_name, {{1}, {rows}}, absl::StrCat("F32 [1] or [", rows, "]"));
  if (!scales.ok()) return scales.status();

  GgufTensorReport entry;
  entry.gguf_name = gguf;
  entry.source_name = hf;
  entry.packed_format = LinearFormatName(format);
  entry.ternary = true;
  for (size_t i = 0; i < scales->size(); ++i) {
    uint16_t d = 0;
    if (!ToHalf((*scales)[i], /*may_vanish=*/false, &d, &entry.max_scale_rel_error)) {
      return Fp16Error(absl::StrCat("tensor ", scale_name, "[", i, "]"), (*scales)[i]);
    }
  }
  auto scale_of_row = [&](int64_t source_row) {
    return (*scales)[scales->size() == 1 ? 0 : static_cast<size_t>(source_row)];
  };

  if (cols % kQkK != 0) {
    // ggml's ternary blocks span 256 weights of one row; store the exact values densely instead.
    std::vector<float> values(static_cast<size_t>(rows * cols));
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t src = SourceRow(r, rope_heads, head_dim());
      const float scale = scale_of_row(src);
      for (int64_t col = 0; col < cols; ++col)
        values[r * cols + col] = scale * trits[src * cols + col];
    }
    entry.fallback = true;
    entry.note = absl::StrCat("row length ", cols,
                              " is not a multiple of 256: ", GgmlTypeName(options_.dense_type),
                              " instead of ", GgmlTypeName(options_.ternary_type));
    return EncodeDense(values, rows, cols, std::move(entry));
  }

  const GgmlType type = options_.ternary_type;
  const int64_t out_row_bytes = cols / kQkK * GgmlBlockBytes(type);
  std::string bytes(static_cast<size_t>(rows * out_row_bytes), '\0');
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t src = SourceRow(r, rope_heads, head_dim());
    EncodeTernaryRow(type, trits.data() + src * cols, cols, scale_of_row(src),
                     reinterpret_cast<uint8_t*>(&bytes[0]) + r * out_row_bytes);
  }
  QAT_RETURN_IF_ERROR(writer_.AddTensor(gguf, type, {cols, rows}, std::move(bytes)));
  entry.type = type;
  entry.dims = {cols, rows};
  report_.tensors.push_back(std::move(entry));
  return absl::OkStatus();
}

absl::Status Converter::AddIntK(const std::string& hf, const std::string& gguf, int64_t rows,
                                int64_t cols, int64_t rope_heads, const LinearPacking& packing) {
  const int bits = packing.format == LinearFormat::kInt2 ? 2 : 4;
  const int64_t group = packing.group;
  absl::StatusOr<const uint8_t*> packed =
      ReadCodes(hf, packing.format, rows, cols, IntKRowBytes(bits, cols));
  if (!packed.ok()) return packed.status();
  std::vector<uint8_t> codes(static_cast<size_t>(rows * cols));
  UnpackIntK(*packed, rows, cols, bits, codes.data());
  const int64_t groups = IntKGroupsPerRow(group, cols);
  const std::string expected =
      absl::StrCat("F32 [", rows * groups, "] or [", rows, ", ", groups, "] (group ", group, ")");
  absl::StatusOr<std::vector<float>> scales =
      ReadFinite(hf + ".scale", {{rows * groups}, {rows, groups}}, expected);
  if (!scales.ok()) return scales.status();
  absl::StatusOr<std::vector<float>> zeros =
      ReadFinite(hf + ".zero", {{rows * groups}, {rows, groups}}, expected);
  if (!zeros.ok()) return zeros.status();
  // The scale and zero point of weight (source row, col): they travel with the row when q/k rows
  // are permuted.
  auto group_of = [&](int64_t src, int64_t col) {
    return static_cast<size_t>(src * groups + col / group);
  };

  // Q4_0 holds d * (q' - 8): exactly scale * (q - zero) for q' = q + 8 - zero when every zero
  // point is an integer that keeps q' in 0..15 for all 2^bits codes. Otherwise Q4_1 (d * q + m).
  const float max_code = static_cast<float>((1 << bits) - 1);
  const bool q4_0 = std::all_of(zeros->begin(), zeros->end(), [&](float z) {
    return z == std::round(z) && z <= 8.0f && z >= max_code - 7.0f;
  });
  const GgmlType type = q4_0 ? GgmlType::kQ4_0 : GgmlType::kQ4_1;

  GgufTensorReport entry;
  entry.gguf_name = gguf;
  entry.source_name = hf;
  entry.packed_format = LinearFormatName(packing.format);
  if (cols % kQ4Block != 0) {
    // ggml's 4-bit blocks span 32 weights of one row; store the runtime's values densely instead
    // (its own dequantization, rows then permuted like every q/k tensor).
    std::vector<float> plain(static_cast<size_t>(rows * cols)), values(plain.size());
    DequantizeIntK(IntKView{rows, cols, bits, group, *packed, scales->data(), zeros->data()},
                   plain.data());
    for (int64_t r = 0; r < rows; ++r) {
      const float* src = plain.data() + SourceRow(r, rope_heads, head_dim()) * cols;
      std::copy(src, src + cols, values.begin() + r * cols);
    }
    entry.fallback = true;
    entry.note = absl::StrCat("row length ", cols,
                              " is not a multiple of 32: ", GgmlTypeName(options_.dense_type),
                              " instead of ", GgmlTypeName(type));
    return EncodeDense(values, rows, cols, std::move(entry));
  }

  const int64_t block_bytes = GgmlBlockBytes(type);
  const int64_t out_row_bytes = cols / kQ4Block * block_bytes;
  std::string bytes(static_cast<size_t>(rows * out_row_bytes), '\0');
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t src = SourceRow(r, rope_heads, head_dim());
    for (int64_t b = 0; b < cols / kQ4Block; ++b) {
      const size_t g = group_of(src, b * kQ4Block);  // a block lies in one group (32 | group)
      const float scale = (*scales)[g], zero = (*zeros)[g];
      const uint8_t* q = codes.data() + src * cols + b * kQ4Block;
      // The scale of a block whose weights are all 0 (q = zero) is never used: fp16 may flush it.
      const bool all_zero = std::all_of(
          q, q + kQ4Block, [&](uint8_t code) { return static_cast<float>(code) == zero; });
      uint16_t d = 0;
      if (!ToHalf(scale, all_zero, &d, &entry.max_scale_rel_error)) {
        return Fp16Error(absl::StrCat("tensor ", hf, ".scale[", g, "]"), scale);
      }
      uint8_t* block = reinterpret_cast<uint8_t*>(&bytes[0]) + r * out_row_bytes + b * block_bytes;
      if (q4_0) {
        const int shift = 8 - static_cast<int>(zero);
        uint8_t shifted[kQ4Block];
        for (int i = 0; i < kQ4Block; ++i) shifted[i] = static_cast<uint8_t>(q[i] + shift);
        EncodeQ4_0Block(shifted, d, block);
      } else {
        const float offset = -scale * zero;
        uint16_t m = 0;
        if (!ToHalf(offset, /*may_vanish=*/true, &m, &entry.max_offset_rel_error)) {
          return Fp16Error(
              absl::StrCat("the Q4_1 offset -", hf, ".scale[", g, "] * ", hf, ".zero[", g, "]"),
              offset);
        }
        EncodeQ4_1Block(q, d, m, block);
      }
    }
  }
  QAT_RETURN_IF_ERROR(writer_.AddTensor(gguf, type, {cols, rows}, std::move(bytes)));
  entry.type = type;
  entry.dims = {cols, rows};
  report_.tensors.push_back(std::move(entry));
  return absl::OkStatus();
}

absl::Status Converter::CheckAllTensorsUsed() const {
  for (const TensorInfo& t : file_.tensors()) {
    if (used_.count(t.name) == 0) {
      return Error(absl::StrCat("unexpected tensor ", t.name, " (not part of this config)"));
    }
  }
  return absl::OkStatus();
}

absl::Status Converter::Run(const std::string& name) {
  QAT_RETURN_IF_ERROR(ParseConfig());
  QAT_RETURN_IF_ERROR(ParseLinearKeys());
  SetMetadata(name);

  QAT_RETURN_IF_ERROR(
      AddDense("model.embed_tokens.weight", "token_embd.weight", c_.vocab_size, c_.hidden_size, 0));
  const int64_t kv_dim = c_.num_kv_heads * head_dim();
  for (int64_t l = 0; l < c_.num_layers; ++l) {
    const std::string hf = absl::StrCat("model.layers.", l, ".");
    const std::string gguf = absl::StrCat("blk.", l, ".");
    QAT_RETURN_IF_ERROR(AddNorm(hf + "input_layernorm.weight", gguf + "attn_norm.weight"));
    for (const LinearSpec& spec : kLinears) {
      const int64_t out = spec.out == LinearSpec::kHidden ? c_.hidden_size
                          : spec.out == LinearSpec::kKv   ? kv_dim
                                                          : c_.intermediate_size;
      const int64_t in = spec.in_is_intermediate ? c_.intermediate_size : c_.hidden_size;
      const int64_t rope_heads = spec.rope == LinearSpec::kQuery ? c_.num_heads
                                 : spec.rope == LinearSpec::kKey ? c_.num_kv_heads
                                                                 : 0;
      const std::string hf_name = hf + spec.hf_suffix;
      const std::string gguf_name = gguf + spec.gguf_suffix;
      QAT_RETURN_IF_ERROR(AddLinear(hf_name, gguf_name, out, in, rope_heads));
      // Optional bias (Qwen2's q/k/v): packed NAME.bias ("...q_proj.weight.bias", runtime.h)
      // -> "blk.N.attn_q.bias"; llama.cpp's llama architecture loads these when present.
      const std::string hf_bias = hf_name + ".bias";
      if (file_.Find(hf_bias) != nullptr) {
        QAT_RETURN_IF_ERROR(
            AddBias(hf_bias, gguf_name.substr(0, gguf_name.size() - 6) + "bias", out, rope_heads));
      }
    }
    QAT_RETURN_IF_ERROR(AddNorm(hf + "post_attention_layernorm.weight", gguf + "ffn_norm.weight"));
  }
  QAT_RETURN_IF_ERROR(AddNorm("model.norm.weight", "output_norm.weight"));
  if (!c_.tie_embeddings) {
    QAT_RETURN_IF_ERROR(
        AddDense("lm_head.weight", "output.weight", c_.vocab_size, c_.hidden_size, 0));
  }
  SetFileTypeAndSize();
  return CheckAllTensorsUsed();
}

// llama.h's llama_ftype "mostly TYPE" for a GGML type.
uint32_t LlamaFileType(GgmlType mostly) {
  switch (mostly) {
    case GgmlType::kF32:
      return 0;  // LLAMA_FTYPE_ALL_F32
    case GgmlType::kF16:
      return 1;
    case GgmlType::kQ4_0:
      return 2;
    case GgmlType::kQ4_1:
      return 3;
    case GgmlType::kQ8_0:
      return 7;
    case GgmlType::kTQ1_0:
      return 36;
    case GgmlType::kTQ2_0:
      return 37;
  }
  return 0;
}

// general.file_type, as llama.cpp's converter writes it (llama.h's llama_ftype: ALL_F32 0,
// MOSTLY_F16 1, MOSTLY_Q4_0 2, MOSTLY_Q4_1 3, MOSTLY_Q8_0 7, MOSTLY_TQ1_0 36, MOSTLY_TQ2_0 37):
// "mostly" is the type that holds the most elements of the 2-D weights (norms and biases, 1-D,
// stay F32 in every file type). general.type and general.size_label (parameters, e.g. "5.2M")
// are the converter's too; without them llama.cpp prints "(guessed)" and no size.
void Converter::SetFileTypeAndSize() {
  std::map<GgmlType, int64_t> elements;
  int64_t parameters = 0;
  for (const GgufTensorReport& t : report_.tensors) {
    int64_t n = 1;
    for (int64_t d : t.dims) n *= d;
    parameters += n;
    if (t.dims.size() == 2) elements[t.type] += n;
  }
  GgmlType mostly = GgmlType::kF32;
  int64_t most = -1;
  for (const auto& [type, n] : elements) {
    if (n > most) mostly = type, most = n;
  }
  writer_.SetKv("general.file_type", GgufValue::Uint32(LlamaFileType(mostly)));
  writer_.SetKv("general.type", GgufValue::String("model"));
  const char* units[] = {"", "K", "M", "B", "T"};
  double scaled = static_cast<double>(parameters);
  int unit = 0;
  while (scaled >= 1000 && unit < 4) scaled /= 1000, ++unit;
  // One decimal below 10 ("5.2M"), none above ("135M"). (StrFormat needs a constant format.)
  const std::string label = scaled < 10 ? absl::StrFormat("%.1f%s", scaled, units[unit])
                                        : absl::StrFormat("%.0f%s", scaled, units[unit]);
  writer_.SetKv("general.size_label", GgufValue::String(label));
}

}  // namespace

int64_t GgufExportReport::fallbacks() const {
  int64_t n = 0;
  for (const GgufTensorReport& t : tensors) n += t.fallback ? 1 : 0;
  return n;
}

absl::StatusOr<GgufExportReport> ConvertPackedToGguf(const std::string& packed_path,
                                                     const std::string& out_path,
                                                     const GgufExportOptions& options) {
  if (options.ternary_type != GgmlType::kTQ2_0 && options.ternary_type != GgmlType::kTQ1_0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ternary type ", GgmlTypeName(options.ternary_type), " is not TQ2_0 or TQ1_0"));
  }
  if (options.dense_type != GgmlType::kF16 && options.dense_type != GgmlType::kQ8_0 &&
      options.dense_type != GgmlType::kF32) {
    return absl::InvalidArgumentError(
        absl::StrCat("dense type ", GgmlTypeName(options.dense_type), " is not F16, Q8_0 or F32"));
  }
  absl::StatusOr<SafetensorsFile> file = SafetensorsFile::Open(packed_path);
  if (!file.ok()) return file.status();

  GgufWriter writer;
  GgufExportReport report;
  Converter converter(*file, options, &writer, &report);
  const std::string name =
      options.name.empty() ? std::filesystem::path(packed_path).stem().string() : options.name;
  QAT_RETURN_IF_ERROR(converter.Run(name));

  absl::StatusOr<std::string> bytes = writer.Serialize();
  if (!bytes.ok()) {
    return absl::InternalError(absl::StrCat(out_path, ": ", bytes.status().message()));
  }
  QAT_RETURN_IF_ERROR(WriteFileAtomic(out_path, *bytes));
  report.file_bytes = static_cast<int64_t>(bytes->size());
  return report;
}

std::string FormatGgufExportReport(const GgufExportReport& report) {
  std::string out;
  for (const GgufTensorReport& t : report.tensors) {
    absl::StrAppend(&out, absl::StrFormat("%-28s %-6s %-14s", t.gguf_name, GgmlTypeName(t.type),
                                          ShapeString(t.dims)));
    if (!t.packed_format.empty() && !t.fallback) {
      absl::StrAppend(&out, absl::StrFormat("  from %s, fp16 rel. error d <= %.2g", t.packed_format,
                                            t.max_scale_rel_error));
      if (t.type == GgmlType::kQ4_1) {
        absl::StrAppend(&out, absl::StrFormat(", m <= %.2g", t.max_offset_rel_error));
      }
    }
    if (t.fallback) absl::StrAppend(&out, "  FALLBACK: ", t.note);
    out += "\n";
  }
  absl::StrAppend(&out, report.tensors.size(), " tensors, ", report.file_bytes, " bytes, ",
                  report.fallbacks(), " fallback(s)\n");
  return out;
}

}  // namespace qat::kernels
