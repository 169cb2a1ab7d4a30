// config.json <-> ModelConfig (the keys and rules are listed in hf_config.h).
#include "trainer/hf_config.h"

#include <cmath>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "kernels/json.h"
#include "kernels/safetensors.h"

namespace qat::trainer {
namespace {

namespace fs = std::filesystem;
namespace json = kernels::json;

class Reader {
 public:
  Reader(const json::Value& root, const std::string& origin) : root_(root), origin_(origin) {}

  absl::Status Error(const std::string& key, const std::string& what) const {
    return absl::InvalidArgumentError(absl::StrCat(origin_, ": \"", key, "\" ", what));
  }
  const json::Value* Get(const std::string& key) const {
    const json::Value* v = root_.Find(key);
    return v == nullptr || v->is_null() ? nullptr : v;
  }
  // A positive integer up to `max`; `fallback` < 0 means required.
  absl::Status Int(const std::string& key, int64_t fallback, int64_t max, int64_t* out) const {
    const json::Value* v = Get(key);
    if (v == nullptr) {
      if (fallback < 0) return Error(key, "is missing");
      *out = fallback;
      return absl::OkStatus();
    }
    if (!v->is_int() || v->as_int() < 1 || v->as_int() > max) {
      return Error(
          key, absl::StrCat("= ", json::Serialize(*v), ", expected an integer in [1, ", max, "]"));
    }
    *out = v->as_int();
    return absl::OkStatus();
  }
  absl::Status Positive(const std::string& key, double fallback, double* out) const {
    const json::Value* v = Get(key);
    if (v == nullptr) {
      *out = fallback;
      return absl::OkStatus();
    }
    if (!v->is_number() || !(v->as_double() > 0) || !std::isfinite(v->as_double())) {
      return Error(key, absl::StrCat("= ", json::Serialize(*v), ", expected a positive number"));
    }
    *out = v->as_double();
    return absl::OkStatus();
  }
  bool Flag(const std::string& key) const {
    const json::Value* v = Get(key);
    return v != nullptr && v->as_bool();
  }
  // A token id: integer, list of integers (the first), or absent/null (-1).
  absl::Status TokenId(const std::string& key, int64_t vocab, int64_t* out) const {
    const json::Value* v = Get(key);
    *out = -1;
    if (v == nullptr) return absl::OkStatus();
    if (v->is_array()) v = v->as_array().empty() ? nullptr : &v->as_array()[0];
    if (v == nullptr) return absl::OkStatus();
    if (!v->is_int() || v->as_int() < 0 || v->as_int() >= vocab) {
      return Error(key, absl::StrCat("= ", json::Serialize(*v), ", expected a token id below ",
                                     "vocab_size ", vocab));
    }
    *out = v->as_int();
    return absl::OkStatus();
  }

 private:
  const json::Value& root_;
  const std::string& origin_;
};

#define QAT_RETURN_IF_ERROR(expr)                      \
  do {                                                 \
    if (absl::Status s_ = (expr); !s_.ok()) return s_; \
  } while (false)

}  // namespace

bool IsHfModelDir(const std::string& path) {
  std::error_code ec;
  return !path.empty() && fs::is_directory(path, ec) &&
         fs::is_regular_file(fs::path(path) / "config.json", ec);
}

absl::StatusOr<HfConfig> ParseHfConfig(const std::string& text, const std::string& origin) {
  absl::StatusOr<json::Value> root = json::Parse(text);
  if (!root.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(origin, ": not valid JSON: ", root.status().message()));
  }
  if (!root->is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(origin, ": the top level is not an object"));
  }
  Reader r(*root, origin);
  HfConfig hf;
  const json::Value* arch = r.Get("architectures");
  if (arch == nullptr || !arch->is_array() || arch->as_array().size() != 1 ||
      !arch->as_array()[0].is_string()) {
    return r.Error("architectures", "must be a list of one architecture name");
  }
  hf.architecture = arch->as_array()[0].as_string();
  if (hf.architecture == "LlamaForCausalLM") {
    hf.model_type = "llama";
  } else if (hf.architecture == "MistralForCausalLM") {
    hf.model_type = "mistral";
  } else if (hf.architecture == "Qwen2ForCausalLM") {
    hf.model_type = "qwen2";
  } else {
    return r.Error("architectures",
                   absl::StrCat("= \"", hf.architecture, "\": supported are ",
                                "LlamaForCausalLM, MistralForCausalLM and ", "Qwen2ForCausalLM"));
  }
  ModelConfig& m = hf.model;
  constexpr int64_t kMaxDim = int64_t{1} << 24;
  QAT_RETURN_IF_ERROR(r.Int("vocab_size", -1, kMaxDim, &m.vocab_size));
  QAT_RETURN_IF_ERROR(r.Int("hidden_size", -1, kMaxDim, &m.hidden_size));
  QAT_RETURN_IF_ERROR(r.Int("intermediate_size", -1, kMaxDim, &m.intermediate_size));
  QAT_RETURN_IF_ERROR(r.Int("num_hidden_layers", -1, 4096, &m.num_layers));
  QAT_RETURN_IF_ERROR(r.Int("num_attention_heads", -1, kMaxDim, &m.num_heads));
  QAT_RETURN_IF_ERROR(r.Int("num_key_value_heads", m.num_heads, kMaxDim, &m.num_kv_heads));
  QAT_RETURN_IF_ERROR(r.Int("max_position_embeddings", 2048, kMaxDim, &m.max_seq_len));
  QAT_RETURN_IF_ERROR(r.Positive("rope_theta", 10000.0, &m.rope_theta));
  QAT_RETURN_IF_ERROR(r.Positive("rms_norm_eps", 1e-6, &m.rms_norm_eps));
  m.tie_embeddings = r.Flag("tie_word_embeddings");
  m.attention_bias = hf.model_type == "qwen2";
  if (m.hidden_size % m.num_heads != 0 || (m.hidden_size / m.num_heads) % 2 != 0) {
    return r.Error("num_attention_heads",
                   absl::StrCat("= ", m.num_heads, " does not split ", "hidden_size ",
                                m.hidden_size, " into heads of an even size"));
  }
  if (m.num_heads % m.num_kv_heads != 0) {
    return r.Error("num_key_value_heads", absl::StrCat("= ", m.num_kv_heads, " does not divide ",
                                                       "num_attention_heads ", m.num_heads));
  }
  if (const json::Value* act = r.Get("hidden_act");
      act != nullptr && (!act->is_string() || act->as_string() != "silu")) {
    return r.Error("hidden_act", absl::StrCat("= ", json::Serialize(*act), ", only \"silu\" ",
                                              "(SwiGLU) is implemented"));
  }
  if (const json::Value* hd = r.Get("head_dim");
      hd != nullptr && (!hd->is_int() || hd->as_int() != m.hidden_size / m.num_heads)) {
    return r.Error("head_dim", absl::StrCat("= ", json::Serialize(*hd), ", only hidden_size / ",
                                            "num_attention_heads = ", m.hidden_size / m.num_heads,
                                            " is implemented"));
  }
  if (const json::Value* rs = r.Get("rope_scaling"); rs != nullptr) {
    return r.Error("rope_scaling", absl::StrCat("= ", json::Serialize(*rs), ": scaled RoPE is ",
                                                "not implemented"));
  }
  if (hf.model_type != "qwen2") {
    for (const char* key : {"attention_bias", "mlp_bias"}) {
      if (r.Flag(key)) return r.Error(key, "is true: only Qwen2's q/k/v biases are implemented");
    }
  }
  const json::Value* window = r.Get("sliding_window");
  const bool window_used =
      hf.model_type == "mistral" || (hf.model_type == "qwen2" && r.Flag("use_sliding_window"));
  if (window != nullptr && window_used) {
    if (!window->is_int() || window->as_int() < 2) {
      return r.Error("sliding_window", absl::StrCat("= ", json::Serialize(*window),
                                                    ", expected an integer >= 2 or null"));
    }
    m.max_seq_len = std::min(m.max_seq_len, window->as_int());
  }
  QAT_RETURN_IF_ERROR(r.TokenId("bos_token_id", m.vocab_size, &hf.bos_token_id));
  QAT_RETURN_IF_ERROR(r.TokenId("eos_token_id", m.vocab_size, &hf.eos_token_id));
  if (const json::Value* dt = r.Get("torch_dtype"); dt != nullptr && dt->is_string()) {
    hf.torch_dtype = dt->as_string();
  }
  return hf;
}

absl::StatusOr<HfConfig> ReadHfConfig(const std::string& dir) {
  const std::string path = (fs::path(dir) / "config.json").string();
  absl::StatusOr<std::string> text = kernels::ReadFile(path);
  if (!text.ok()) return text.status();
  return ParseHfConfig(*text, path);
}

absl::Status ApplyHfConfig(const std::string& dir, const std::set<std::string>& explicit_keys,
                           ModelConfig* model, DataConfig* data) {
  absl::StatusOr<HfConfig> hf = ReadHfConfig(dir);
  if (!hf.ok()) return hf.status();
  const ModelConfig& c = hf->model;
  const auto conflict = [&](const std::string& key, const std::string& ours,
                            const std::string& theirs) {
    return absl::InvalidArgumentError(absl::StrCat("the recipe sets ", key, " = ", ours, " but ",
                                                   dir, "/config.json says ", theirs,
                                                   " (leave the key out: from_hf sets it)"));
  };
  const struct {
    const char* key;
    int64_t* ours;
    int64_t theirs;
  } ints[] = {{"model.vocab_size", &model->vocab_size, c.vocab_size},
              {"model.hidden_size", &model->hidden_size, c.hidden_size},
              {"model.intermediate_size", &model->intermediate_size, c.intermediate_size},
              {"model.num_layers", &model->num_layers, c.num_layers},
              {"model.num_heads", &model->num_heads, c.num_heads},
              {"model.num_kv_heads", &model->num_kv_heads, c.num_kv_heads}};
  for (const auto& f : ints) {
    if (explicit_keys.count(f.key) && *f.ours != f.theirs) {
      return conflict(f.key, absl::StrCat(*f.ours), absl::StrCat(f.theirs));
    }
    *f.ours = f.theirs;
  }
  const struct {
    const char* key;
    double* ours;
    double theirs;
  } doubles[] = {{"model.rope_theta", &model->rope_theta, c.rope_theta},
                 {"model.rms_norm_eps", &model->rms_norm_eps, c.rms_norm_eps}};
  for (const auto& f : doubles) {
    if (explicit_keys.count(f.key) && *f.ours != f.theirs) {
      return conflict(f.key, absl::StrCat(*f.ours), absl::StrCat(f.theirs));
    }
    *f.ours = f.theirs;
  }
  const struct {
    const char* key;
    bool* ours;
    bool theirs;
  } flags[] = {{"model.tie_embeddings", &model->tie_embeddings, c.tie_embeddings},
               {"model.attention_bias", &model->attention_bias, c.attention_bias}};
  for (const auto& f : flags) {
    if (explicit_keys.count(f.key) && *f.ours != f.theirs) {
      return conflict(f.key, *f.ours ? "true" : "false", f.theirs ? "true" : "false");
    }
    *f.ours = f.theirs;
  }
  if (explicit_keys.count("model.max_seq_len")) {
    if (model->max_seq_len > c.max_seq_len) {
      return conflict("model.max_seq_len", absl::StrCat(model->max_seq_len),
                      absl::StrCat(c.max_seq_len, " at most (max_position_embeddings or the ",
                                   "sliding window)"));
    }
  } else {
    model->max_seq_len = c.max_seq_len;
  }
  std::error_code ec;
  if (data->tokenizer.empty() && (fs::is_regular_file(fs::path(dir) / "tokenizer.json", ec) ||
                                  fs::is_regular_file(fs::path(dir) / "tokenizer.model", ec))) {
    data->tokenizer = dir;
  }
  return absl::OkStatus();
}

std::string HfConfigJson(const ModelConfig& m, const std::string& torch_dtype, int64_t bos_token_id,
                         int64_t eos_token_id) {
  json::Value root = json::Value::MakeObject();
  const bool qwen2 = m.attention_bias;
  root.Set("architectures", json::Value::MakeArray({json::Value::String(
                                qwen2 ? "Qwen2ForCausalLM" : "LlamaForCausalLM")}));
  root.Set("model_type", json::Value::String(qwen2 ? "qwen2" : "llama"));
  root.Set("vocab_size", json::Value::Int(m.vocab_size));
  root.Set("hidden_size", json::Value::Int(m.hidden_size));
  root.Set("intermediate_size", json::Value::Int(m.intermediate_size));
  root.Set("num_hidden_layers", json::Value::Int(m.num_layers));
  root.Set("num_attention_heads", json::Value::Int(m.num_heads));
  root.Set("num_key_value_heads", json::Value::Int(m.num_kv_heads));
  root.Set("max_position_embeddings", json::Value::Int(m.max_seq_len));
  root.Set("rope_theta", json::Value::Double(m.rope_theta));
  root.Set("rms_norm_eps", json::Value::Double(m.rms_norm_eps));
  root.Set("tie_word_embeddings", json::Value::Bool(m.tie_embeddings));
  root.Set("hidden_act", json::Value::String("silu"));
  root.Set("rope_scaling", json::Value());
  if (qwen2) {
    root.Set("use_sliding_window", json::Value::Bool(false));
  } else {
    root.Set("attention_bias", json::Value::Bool(false));
    root.Set("mlp_bias", json::Value::Bool(false));
  }
  root.Set("bos_token_id", bos_token_id >= 0 ? json::Value::Int(bos_token_id) : json::Value());
  root.Set("eos_token_id", eos_token_id >= 0 ? json::Value::Int(eos_token_id) : json::Value());
  root.Set("torch_dtype", json::Value::String(torch_dtype));
  root.Set("use_cache", json::Value::Bool(true));
  return json::Serialize(root) + "\n";
}

}  // namespace qat::trainer
