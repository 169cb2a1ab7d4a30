// Hugging Face config.json of LLaMA-family models <-> qat's ModelConfig (no libtorch here).
//
// Architectures read: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM ("architectures"
// holds exactly one of them). Keys read (others are ignored):
//   vocab_size, hidden_size, intermediate_size, num_hidden_layers, num_attention_heads:
//     positive integers (required)
//   num_key_value_heads (default num_attention_heads), max_position_embeddings (default 2048),
//   rope_theta (default 10000), rms_norm_eps (default 1e-6), tie_word_embeddings (default
//   false), bos_token_id / eos_token_id (integer, a list (first element taken) or null)
//   hidden_act must be "silu"; head_dim, when given, must equal hidden_size/num_attention_heads;
//   rope_scaling must be null or absent (scaled RoPE is not implemented);
//   attention_bias and mlp_bias must be false or absent for LLaMA (o_proj/MLP biases are not
//   implemented); Qwen2 always has q/k/v biases (ModelConfig::attention_bias = true);
//   sliding_window (Mistral; Qwen2 only with use_sliding_window true): qat attends to the whole
//   causal prefix, which is the same function while sequences are no longer than the window, so
//   max_seq_len is capped at the window.
// Errors name the file and the key.
#pragma once

#include <cstdint>
#include <set>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "trainer/recipe.h"

namespace qat::trainer {

struct HfConfig {
  std::string architecture;  // e.g. "Qwen2ForCausalLM"
  std::string model_type;    // "llama", "mistral" or "qwen2"
  ModelConfig model;         // dimensions and flags filled; init fields left at their defaults
  int64_t bos_token_id = -1, eos_token_id = -1;
  std::string torch_dtype;  // as written ("bfloat16", ...), "" when absent
};

// Whether `path` is a directory holding config.json (a Hugging Face model directory).
bool IsHfModelDir(const std::string& path);
absl::StatusOr<HfConfig> ReadHfConfig(const std::string& dir);
// Parses config.json text; `origin` names it in errors.
absl::StatusOr<HfConfig> ParseHfConfig(const std::string& text, const std::string& origin);

// Fills `model` from dir/config.json for a recipe with model.from_hf = dir. Keys the recipe set
// itself (`explicit_keys`, e.g. "model.hidden_size") must agree with config.json, except
// model.max_seq_len, which may be lower (shorter sequences, smaller RoPE table). An empty
// data.tokenizer becomes `dir` when it holds tokenizer.json or tokenizer.model.
absl::Status ApplyHfConfig(const std::string& dir, const std::set<std::string>& explicit_keys,
                           ModelConfig* model, DataConfig* data);

// config.json text for a model with this config (LlamaForCausalLM, or Qwen2ForCausalLM when
// attention_bias is set), weights stored as `torch_dtype` ("bfloat16", "float16", "float32").
std::string HfConfigJson(const ModelConfig& model, const std::string& torch_dtype,
                         int64_t bos_token_id, int64_t eos_token_id);

}  // namespace qat::trainer
