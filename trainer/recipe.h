// Recipes: the YAML description of a run, checked against a schema before anything runs.
//
// Every key has a type, a default (the member initialisers below), a range or a set of choices,
// and a one-line doc (the schema in recipe.cc). A recipe may name `base: other.yaml` (relative
// to itself); keys it sets override the base's. Command-line `--set a.b=c` overrides come last.
// Errors name the file, the line and the key path, and suggest the closest key when one is
// misspelt.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "quant/spec.h"

namespace qat::trainer {

struct RunConfig {
  std::string dir = "runs/default";  // where checkpoints, metrics and the resolved recipe go
  int64_t seed = 1234;
  int64_t log_every = 10;
  int64_t save_every = 0;  // 0: only at the end
  double save_every_minutes = 0;  // also checkpoint when this long has passed since the last one
  int64_t keep_last = 2;
  std::string resume = "auto";  // auto | none
  int64_t stop_after = 0;  // stop this invocation once this step is reached (0: run to the end)
};

struct ModelConfig {
  int64_t vocab_size = 258;
  int64_t hidden_size = 256;
  int64_t intermediate_size = 768;
  int64_t num_layers = 4;
  int64_t num_heads = 4;
  int64_t num_kv_heads = 2;
  int64_t max_seq_len = 256;
  double rope_theta = 10000.0;
  double rms_norm_eps = 1e-5;
  bool tie_embeddings = false;
  double init_std = 0.02;
  std::string init_from;  // checkpoint whose weights initialise this model (QAT from a teacher)
  bool attention_bias = false;  // q/k/v projections carry a bias (Qwen2)
  // Hugging Face model directory (trainer/hf.h): its config.json sets the dimensions above when
  // the recipe is loaded, and its weights initialise the model (unless init_from is set).
  std::string from_hf;
};

// Per-layer quant keys (mixed precision): for a quantized layer whose weight name (e.g.
// model.layers.3.mlp.down_proj.weight) matches `pattern` (* any run of characters, ? one
// character), these keys replace the section's. `values` hold the keys as written (method, bits,
// symmetric, granularity, group_size, scale, activations), checked when the recipe is loaded.
struct QuantOverride {
  std::string pattern;
  std::vector<std::pair<std::string, std::string>> values;
};

// Weight quantizers (quant/quantizer.h has the math).
struct QuantConfig {
  std::string method = "ternary";  // none | ternary | binary | int
  int64_t bits = 4;                // int: 2, 3, 4 or 8
  bool symmetric = true;           // int: false = min/max with a float zero point
  std::string granularity = "per_tensor";  // per_tensor | per_channel | per_group
  int64_t group_size = 128;        // per_group: 32, 64 or 128 columns
  std::string scale = "none";  // none (from the weights) | lsq | seq (learned) | fixed (stored)
  std::string activations = "none";  // none | int8 (per token, into each quantized block linear)
  bool embeddings = false;  // quantize the token embedding too
  bool lm_head = false;     // quantize the LM head too
  std::vector<QuantOverride> overrides;  // the first match wins
};

// The quant keys in force for the layer whose weight is `weight_name`: the section's, replaced by
// the values of the first override whose pattern matches. `key_prefix` (if not null) receives
// the recipe path those keys are reported under: "quant." or "quant.overrides[I].".
QuantConfig LayerQuantConfig(const QuantConfig& quant, const std::string& weight_name,
                             std::string* key_prefix = nullptr);
// The quantizer words of a quant section (or of LayerQuantConfig's result).
quant::QuantWords ToQuantWords(const QuantConfig& quant);
// Glob match: '*' matches any run of characters (dots included), '?' any one character.
bool GlobMatch(const std::string& pattern, const std::string& text);

struct DataConfig {
  // Token shards (paths or globs). As a list of {path, weight} maps, a weighted mixture: entry i
  // is a source of its own drawn with probability train_weights[i] / their sum (data/mixture.h);
  // train_weights is empty for a plain list (one source).
  std::vector<std::string> train;
  std::vector<double> train_weights;
  std::vector<std::string> val;
  // Tokenizer of the shards (data/tokens.h LoadTokenizer): "" = bytes, a tokenizer.json,
  // tokenizer.model or a directory holding one; eval decodes with it, exports record it.
  std::string tokenizer;
  int64_t seq_len = 128;
};

struct TrainConfig {
  int64_t steps = 100;
  int64_t batch_size = 16;  // sequences per optimizer step, summed over ranks
  int64_t micro_batch_size = 16;
  double lr = 1e-3;
  double min_lr = 1e-4;
  int64_t warmup_steps = 10;
  double weight_decay = 0.1;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double grad_clip = 1.0;  // 0: no clipping
  std::string dtype = "fp32";  // fp32 | bf16: compute dtype of the linears (master weights fp32)
  std::string device = "auto";  // auto (cuda when available) | cpu | cuda
  int64_t threads = 0;     // intra-op threads per rank, 0: libtorch default
  std::string sharding = "ddp";  // ddp | zero1 | zero2 | fsdp (see trainer/sharding.h)
};

// Collectives of multi-rank runs (comm/).
struct CommConfig {
  std::string backend = "auto";  // auto (nccl for CUDA tensors, mpi for CPU) | mpi | nccl
  double timeout_s = 600.0;      // a collective not done after this long stops the job
  bool overlap = true;           // start gradient reductions during the backward pass
};

struct DistillConfig {
  std::string teacher;  // checkpoint directory of the frozen teacher; empty: plain CE
  double temperature = 1.0;
  double kd_weight = 1.0;  // loss = kd_weight * KL + (1 - kd_weight) * CE
  double hidden_mse_weight = 0.0;  // + this * mean over blocks of MSE(student, teacher outputs)
  std::string teacher_sharding = "replicate";  // replicate | shard (blocks gathered per use)
};

// Input-gradient regularizers (MISSION.md, "Smoothness, not only fitting"); see trainer/objective.h.
struct SmoothnessConfig {
  std::string mode = "none";       // none | grad_norm | grad_match
  std::string estimator = "exact";  // exact (double backward) | finite_diff
  double lambda = 0.0;
  int64_t lambda_warmup_steps = 0;  // lambda ramps linearly from 0 over these steps
  int64_t every_n_steps = 1;        // regularize one step in N
  std::string at = "embeddings";    // where x is taken: embeddings | block_inputs (objective.h)
  double fd_step = 1e-4;            // finite_diff: h as a fraction of ||x|| (objective.h)
};

struct EvalConfig {
  int64_t every = 0;       // validation every N steps, 0: only at the end
  int64_t max_windows = 64;
  std::string prompt = "The ";
  int64_t max_new_tokens = 64;
  double temperature = 0.8;
  int64_t top_k = 40;
};

struct Recipe {
  std::string path;  // file it came from
  RunConfig run;
  ModelConfig model;
  QuantConfig quant;
  DataConfig data;
  TrainConfig train;
  CommConfig comm;
  DistillConfig distill;
  SmoothnessConfig smoothness;
  EvalConfig eval;
};

// Loads `path`, following `base:` links, applies `overrides` ("a.b=value"), checks every key and
// value. The errors say which file, line and key.
absl::StatusOr<Recipe> LoadRecipe(const std::string& path,
                                  const std::vector<std::string>& overrides = {});
// Parses recipe text (used for the copy stored in a checkpoint); `origin` names it in errors.
absl::StatusOr<Recipe> ParseRecipeText(const std::string& text, const std::string& origin);
// The fully resolved recipe (every key, defaults included) as YAML.
std::string RecipeToYaml(const Recipe& recipe);
// Markdown-ish listing of every key: type, default, range, doc.
std::string RecipeSchemaDoc();

}  // namespace qat::trainer
