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
#include <vector>

#include "absl/status/statusor.h"

namespace qat::trainer {

struct RunConfig {
  std::string dir = "runs/default";  // where checkpoints, metrics and the resolved recipe go
  int64_t seed = 1234;
  int64_t log_every = 10;
  int64_t save_every = 0;  // 0: only at the end
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
};

struct QuantConfig {
  std::string method = "ternary";  // none | ternary
  std::string granularity = "per_tensor";
  bool embeddings = false;  // quantize the token embedding too
  bool lm_head = false;     // quantize the LM head too
};

struct DataConfig {
  std::vector<std::string> train;  // token shards
  std::vector<std::string> val;
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
};

struct DistillConfig {
  std::string teacher;  // checkpoint directory of the frozen teacher; empty: plain CE
  double temperature = 1.0;
  double kd_weight = 1.0;  // loss = kd_weight * KL + (1 - kd_weight) * CE
};

// Input-gradient regularizers (MISSION.md, "Smoothness, not only fitting"); see trainer/objective.h.
struct SmoothnessConfig {
  std::string mode = "none";       // none | grad_norm | grad_match
  std::string estimator = "exact";  // exact (double backward) | finite_diff
  double lambda = 0.0;
  int64_t lambda_warmup_steps = 0;  // lambda ramps linearly from 0 over these steps
  int64_t every_n_steps = 1;        // regularize one step in N
  std::string at = "embeddings";    // where x is taken: the token embeddings fed to block 0
  double fd_step = 1e-3;            // finite_diff: h as a fraction of ||x||
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
