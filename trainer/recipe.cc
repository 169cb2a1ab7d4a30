#include "trainer/recipe.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <variant>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "quant/spec.h"
#include "trainer/hf_config.h"

namespace qat::trainer {
namespace {

namespace fs = std::filesystem;
using Target = std::variant<int64_t*, double*, bool*, std::string*, std::vector<std::string>*,
                            std::vector<QuantOverride>*, DataConfig*>;

// One schema entry: where the value lives, what it may be, what it means.
struct Field {
  std::string key;
  Target target;
  double min = -std::numeric_limits<double>::infinity();
  double max = std::numeric_limits<double>::infinity();
  std::vector<std::string> choices;  // for strings; empty: any string
  std::string doc;
};

constexpr double kInf = std::numeric_limits<double>::infinity();

std::vector<Field> Schema(Recipe* r) {
  return {
      {"run.dir", &r->run.dir, -kInf, kInf, {}, "run directory: checkpoints, metrics, recipe"},
      {"run.seed", &r->run.seed, 0, 9.2e18, {}, "seed of the model init and the data order"},
      {"run.log_every", &r->run.log_every, 1, 1e9, {}, "log a line every N steps"},
      {"run.save_every",
       &r->run.save_every,
       0,
       1e9,
       {},
       "checkpoint every N steps (0: at the end)"},
      {"run.save_every_minutes",
       &r->run.save_every_minutes,
       0,
       1e7,
       {},
       "also checkpoint once this many minutes have passed since the last save (0: off)"},
      {"run.keep_last", &r->run.keep_last, 1, 1e6, {}, "checkpoints kept"},
      {"run.resume",
       &r->run.resume,
       -kInf,
       kInf,
       {"auto", "none"},
       "auto: continue from the newest valid checkpoint in run.dir"},
      {"run.stop_after",
       &r->run.stop_after,
       0,
       1e12,
       {},
       "end this invocation at this step with a checkpoint (pre-emption, time slices); 0: never"},
      {"model.vocab_size", &r->model.vocab_size, 2, 1e7, {}, "vocabulary size"},
      {"model.hidden_size", &r->model.hidden_size, 2, 1e6, {}, "model width"},
      {"model.intermediate_size", &r->model.intermediate_size, 1, 1e7, {}, "SwiGLU hidden width"},
      {"model.num_layers", &r->model.num_layers, 1, 1e4, {}, "decoder blocks"},
      {"model.num_heads", &r->model.num_heads, 1, 1e4, {}, "query heads"},
      {"model.num_kv_heads", &r->model.num_kv_heads, 1, 1e4, {}, "key/value heads (GQA)"},
      {"model.max_seq_len", &r->model.max_seq_len, 2, 1e7, {}, "longest sequence (RoPE table)"},
      {"model.rope_theta", &r->model.rope_theta, 1, 1e12, {}, "RoPE base"},
      {"model.rms_norm_eps", &r->model.rms_norm_eps, 1e-12, 1, {}, "RMSNorm epsilon"},
      {"model.tie_embeddings", &r->model.tie_embeddings, -kInf, kInf, {}, "LM head = embedding"},
      {"model.init_std", &r->model.init_std, 0, 10, {}, "std of the normal weight init"},
      {"model.init_from",
       &r->model.init_from,
       -kInf,
       kInf,
       {},
       "checkpoint directory whose weights initialise the model"},
      {"model.attention_bias",
       &r->model.attention_bias,
       -kInf,
       kInf,
       {},
       "q/k/v projections carry a bias (Qwen2)"},
      {"model.from_hf",
       &r->model.from_hf,
       -kInf,
       kInf,
       {},
       "Hugging Face model directory (LLaMA, Mistral, Qwen2): its config.json sets the model "
       "keys, its weights initialise the model"},
      {"quant.method",
       &r->quant.method,
       -kInf,
       kInf,
       {"none", "ternary", "binary", "int"},
       "weight quantizer of every linear inside the blocks (quant/quantizer.h)"},
      {"quant.bits", &r->quant.bits, 2, 8, {}, "method int: 2, 3, 4 or 8 bits"},
      {"quant.symmetric",
       &r->quant.symmetric,
       -kInf,
       kInf,
       {},
       "method int: symmetric grid (true) or min/max with a zero point (false)"},
      {"quant.granularity",
       &r->quant.granularity,
       -kInf,
       kInf,
       {"per_tensor", "per_channel", "per_group"},
       "one scale per tensor, per output row, or per group_size input columns of a row"},
      {"quant.group_size",
       &r->quant.group_size,
       1,
       1e9,
       {},
       "per_group: 32, 64 or 128 columns (must divide every quantized layer's input size)"},
      {"quant.scale",
       &r->quant.scale,
       -kInf,
       kInf,
       {"none", "lsq", "seq", "fixed"},
       "none: from the weights each step; lsq (binary, int 3-4 bit) or seq (ternary, int 2-bit): "
       "learned parameters NAME.weight_scale; fixed: scales and zero points stored in "
       "NAME.weight_scale and never trained (written by qat quantize)"},
      {"quant.activations",
       &r->quant.activations,
       -kInf,
       kInf,
       {"none", "int8"},
       "int8: per-token absmax int8 inputs of every quantized block linear (W1.58A8)"},
      {"quant.embeddings", &r->quant.embeddings, -kInf, kInf, {}, "quantize the embedding too"},
      {"quant.lm_head", &r->quant.lm_head, -kInf, kInf, {}, "quantize the LM head too"},
      {"quant.overrides",
       &r->quant.overrides,
       -kInf,
       kInf,
       {},
       "per-layer keys: a list of {pattern: \"*.mlp.down_proj.*\", bits: 8, ...} (glob over the "
       "weight name, quote it; keys: method bits symmetric granularity group_size scale "
       "activations); the first match wins"},
      {"data.train",
       &r->data,
       -kInf,
       kInf,
       {},
       "training token shards (paths or globs); or a weighted mixture, a list of {path: P, "
       "weight: W} maps, each a source drawn with probability W / (sum of weights)"},
      {"data.val", &r->data.val, -kInf, kInf, {}, "validation token shards"},
      {"data.tokenizer",
       &r->data.tokenizer,
       -kInf,
       kInf,
       {},
       "tokenizer of the shards: '' (bytes), a tokenizer.json, a tokenizer.model or a directory "
       "(default with model.from_hf: the model's own)"},
      {"data.seq_len", &r->data.seq_len, 2, 1e7, {}, "tokens per training sequence"},
      {"train.steps", &r->train.steps, 1, 1e12, {}, "optimizer steps"},
      {"train.batch_size", &r->train.batch_size, 1, 1e9, {}, "sequences per step, all ranks"},
      {"train.micro_batch_size",
       &r->train.micro_batch_size,
       1,
       1e9,
       {},
       "sequences per forward/backward; accumulation covers the rest"},
      {"train.lr", &r->train.lr, 0, 10, {}, "peak learning rate"},
      {"train.min_lr", &r->train.min_lr, 0, 10, {}, "learning rate at the end of the cosine"},
      {"train.warmup_steps", &r->train.warmup_steps, 0, 1e12, {}, "linear warmup steps"},
      {"train.weight_decay", &r->train.weight_decay, 0, 10, {}, "AdamW decoupled weight decay"},
      {"train.beta1", &r->train.beta1, 0, 0.999999, {}, "AdamW beta1"},
      {"train.beta2", &r->train.beta2, 0, 0.999999999, {}, "AdamW beta2"},
      {"train.eps", &r->train.eps, 0, 1, {}, "AdamW epsilon"},
      {"train.grad_clip", &r->train.grad_clip, 0, 1e9, {}, "max global grad norm (0: off)"},
      {"train.dtype",
       &r->train.dtype,
       -kInf,
       kInf,
       {"fp32", "bf16"},
       "compute dtype of the linear layers; weights, norms, softmax and losses stay fp32"},
      {"train.device",
       &r->train.device,
       -kInf,
       kInf,
       {"auto", "cpu", "cuda"},
       "where to train: auto picks cuda when libtorch sees a GPU"},
      {"train.threads",
       &r->train.threads,
       0,
       4096,
       {},
       "intra-op threads per rank (0: OMP_NUM_THREADS if set, else the cores of the rank's node "
       "divided by its ranks there)"},
      {"train.sharding",
       &r->train.sharding,
       -kInf,
       kInf,
       {"ddp", "zero1", "zero2", "fsdp"},
       "ddp: replicas, bucketed all-reduce; zero1: + optimizer state sharded; zero2: + gradients "
       "reduce-scattered; fsdp: + parameters sharded, gathered per block"},
      {"comm.backend",
       &r->comm.backend,
       -kInf,
       kInf,
       {"auto", "mpi", "nccl"},
       "collectives: auto = nccl for CUDA tensors, mpi for CPU tensors"},
      {"comm.timeout_s",
       &r->comm.timeout_s,
       0.001,
       1e7,
       {},
       "a collective still running after this many seconds stops the job, naming rank and op"},
      {"comm.overlap",
       &r->comm.overlap,
       -kInf,
       kInf,
       {},
       "start each gradient bucket's reduction during the backward pass"},
      {"distill.teacher",
       &r->distill.teacher,
       -kInf,
       kInf,
       {},
       "checkpoint directory of the frozen teacher (empty: cross entropy only)"},
      {"distill.temperature", &r->distill.temperature, 0.01, 100, {}, "softmax temperature"},
      {"distill.kd_weight", &r->distill.kd_weight, 0, 1, {}, "loss = w*KL + (1-w)*CE"},
      {"distill.hidden_mse_weight",
       &r->distill.hidden_mse_weight,
       0,
       1e9,
       {},
       "+ w * mean over blocks of MSE(student, teacher block outputs); needs equal widths"},
      {"distill.teacher_sharding",
       &r->distill.teacher_sharding,
       -kInf,
       kInf,
       {"replicate", "shard"},
       "replicate: every rank holds the whole teacher; shard: its blocks are split over the "
       "ranks and gathered one at a time"},
      {"smoothness.mode",
       &r->smoothness.mode,
       -kInf,
       kInf,
       {"none", "grad_norm", "grad_match"},
       "input-gradient regularizer: penalise ||dL/dx||^2, or ||dL_S/dx - dL_T/dx||^2"},
      {"smoothness.estimator",
       &r->smoothness.estimator,
       -kInf,
       kInf,
       {"exact", "finite_diff"},
       "exact: double backward; finite_diff: one extra forward/backward"},
      {"smoothness.lambda", &r->smoothness.lambda, 0, 1e9, {}, "weight of the regularizer"},
      {"smoothness.lambda_warmup_steps",
       &r->smoothness.lambda_warmup_steps,
       0,
       1e12,
       {},
       "steps over which lambda ramps up from 0"},
      {"smoothness.every_n_steps",
       &r->smoothness.every_n_steps,
       1,
       1e9,
       {},
       "apply the regularizer on one step in N"},
      {"smoothness.at",
       &r->smoothness.at,
       -kInf,
       kInf,
       {"embeddings", "block_inputs"},
       "where the input gradient is taken: the embeddings fed to the first block, or every "
       "block's input (the penalty averaged over blocks)"},
      {"smoothness.fd_step",
       &r->smoothness.fd_step,
       1e-8,
       1,
       {},
       "finite_diff step h, relative to the norm of x"},
      {"eval.every", &r->eval.every, 0, 1e12, {}, "validation every N steps (0: at the end)"},
      {"eval.max_windows", &r->eval.max_windows, 1, 1e9, {}, "validation windows evaluated"},
      {"eval.prompt", &r->eval.prompt, -kInf, kInf, {}, "prompt for the generated sample"},
      {"eval.max_new_tokens", &r->eval.max_new_tokens, 0, 1e6, {}, "tokens generated"},
      {"eval.temperature", &r->eval.temperature, 0, 100, {}, "sampling temperature (0: greedy)"},
      {"eval.top_k", &r->eval.top_k, 0, 1e7, {}, "top-k sampling (0: off)"},
  };
}

// Where a value came from, for error messages.
struct Origin {
  std::string file;
  int line = 0;  // 1-based; 0 when unknown (command line)
  std::string Describe() const {
    return line > 0 ? absl::StrCat(file, ":", line) : file;
  }
};

struct Leaf {
  YAML::Node value;
  Origin origin;
};

int EditDistance(const std::string& a, const std::string& b) {
  std::vector<int> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = static_cast<int>(j);
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = static_cast<int>(i);
    for (size_t j = 1; j <= b.size(); ++j) {
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1])});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string Suggestion(const std::string& key, const std::vector<std::string>& known) {
  std::string best;
  int best_distance = 4;  // farther than this is no suggestion
  for (const std::string& k : known) {
    int d = EditDistance(key, k);
    if (d < best_distance) best_distance = d, best = k;
  }
  return best.empty() ? "" : absl::StrCat(" (did you mean '", best, "'?)");
}

bool IsSection(const std::string& path, const std::vector<Field>& schema) {
  for (const Field& f : schema) {
    if (f.key.size() > path.size() && f.key.compare(0, path.size(), path) == 0 &&
        f.key[path.size()] == '.') {
      return true;
    }
  }
  return false;
}

const Field* FindField(const std::string& path, const std::vector<Field>& schema) {
  for (const Field& f : schema) {
    if (f.key == path) return &f;
  }
  return nullptr;
}

std::vector<std::string> KnownKeys(const std::vector<Field>& schema) {
  std::vector<std::string> keys;
  std::set<std::string> seen;
  for (const Field& f : schema) {
    keys.push_back(f.key);
    std::string section = f.key.substr(0, f.key.find('.'));
    if (seen.insert(section).second) keys.push_back(section);
  }
  return keys;
}

// Flattens a YAML mapping into leaves keyed by dotted path, rejecting unknown keys on the way.
absl::Status Flatten(const YAML::Node& node, const std::string& prefix, const std::string& file,
                     const std::vector<Field>& schema, std::map<std::string, Leaf>* leaves) {
  for (const auto& kv : node) {
    const int line = kv.first.Mark().line + 1;
    if (!kv.first.IsScalar()) {
      return absl::InvalidArgumentError(
          absl::StrCat(file, ":", line, ": keys must be plain words"));
    }
    const std::string key = kv.first.Scalar();
    const std::string path = prefix.empty() ? key : absl::StrCat(prefix, ".", key);
    if (prefix.empty() && key == "base") continue;  // handled by the loader
    if (IsSection(path, schema)) {
      if (kv.second.IsNull()) continue;  // an empty section keeps the defaults
      if (!kv.second.IsMap()) {
        return absl::InvalidArgumentError(absl::StrCat(file, ":", line, ": '", path,
                                                       "' is a section and must be a mapping"));
      }
      absl::Status s = Flatten(kv.second, path, file, schema, leaves);
      if (!s.ok()) return s;
    } else if (FindField(path, schema) != nullptr) {
      (*leaves)[path] = Leaf{kv.second, Origin{file, line}};
    } else {
      return absl::InvalidArgumentError(absl::StrCat(file, ":", line, ": unknown key '", path, "'",
                                                     Suggestion(path, KnownKeys(schema))));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<YAML::Node> ParseYaml(const std::string& text, const std::string& file) {
  try {
    YAML::Node root = YAML::Load(text);
    if (root.IsNull()) return YAML::Node(YAML::NodeType::Map);
    if (!root.IsMap()) {
      return absl::InvalidArgumentError(
          absl::StrCat(file, ": a recipe must be a YAML mapping of sections"));
    }
    return root;
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(file, ":", e.mark.line + 1, ":",
                                                   e.mark.column + 1, ": malformed YAML: ", e.msg));
  }
}

// A recipe is a few kilobytes of YAML. Only regular files are read, and only up to kMaxRecipeBytes:
// a base of /dev/zero used to grow without bound, /dev/urandom to hang, and a directory to read as
// an empty recipe.
constexpr std::uintmax_t kMaxRecipeBytes = 1 << 20;

absl::StatusOr<std::string> ReadText(const std::string& path) {
  std::error_code ec;
  const fs::file_status status = fs::status(path, ec);
  if (ec || !fs::exists(status)) {
    return absl::NotFoundError(absl::StrCat(path, ": cannot open recipe file (no such file)"));
  }
  if (!fs::is_regular_file(status)) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": a recipe must be a regular file (this is ",
                     fs::is_directory(status) ? "a directory" : "a device, pipe or socket", ")"));
  }
  const std::uintmax_t size = fs::file_size(path, ec);
  if (ec) return absl::NotFoundError(absl::StrCat(path, ": cannot read the recipe's size"));
  if (size > kMaxRecipeBytes) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", size,
                                                   " bytes is too large for a recipe (at most ",
                                                   kMaxRecipeBytes, " bytes of YAML text)"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open recipe file"));
  std::string text(static_cast<size_t>(size), '\0');
  in.read(text.data(), static_cast<std::streamsize>(size));
  text.resize(static_cast<size_t>(in.gcount()));
  if (const size_t nul = text.find('\0'); nul != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": a NUL byte at offset ", nul,
                                                   ": a recipe is YAML text, not binary data"));
  }
  return text;
}

// Reads `path` and its chain of bases into `leaves`, base first so the file overrides it.
absl::Status CollectFile(const std::string& path, std::vector<std::string>* chain,
                         const std::vector<Field>& schema, std::map<std::string, Leaf>* leaves) {
  const std::string canonical = fs::weakly_canonical(path).string();
  if (std::find(chain->begin(), chain->end(), canonical) != chain->end()) {
    chain->push_back(canonical);
    return absl::InvalidArgumentError(
        absl::StrCat("recipe base cycle: ", absl::StrJoin(*chain, " -> ")));
  }
  chain->push_back(canonical);
  absl::StatusOr<std::string> text = ReadText(path);
  if (!text.ok()) return text.status();
  absl::StatusOr<YAML::Node> root = ParseYaml(*text, path);
  if (!root.ok()) return root.status();
  if (YAML::Node base = (*root)["base"]) {
    if (!base.IsScalar() || base.Scalar().empty()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ":", base.Mark().line + 1,
                                                     ": 'base' must be a recipe file name"));
    }
    fs::path base_path = fs::path(path).parent_path() / base.Scalar();
    absl::Status s = CollectFile(base_path.string(), chain, schema, leaves);
    if (!s.ok()) {  // name the including file and line, as a compiler's include stack does
      return absl::Status(s.code(), absl::StrCat(path, ":", base.Mark().line + 1, ": base '",
                                                 base.Scalar(), "': ", s.message()));
    }
  }
  return Flatten(*root, "", path, schema, leaves);
}

absl::Status ApplyOverride(const std::string& assignment, const std::vector<Field>& schema,
                           std::map<std::string, Leaf>* leaves) {
  const size_t eq = assignment.find('=');
  const Origin origin{absl::StrCat("--set ", assignment), 0};
  if (eq == std::string::npos || eq == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(origin.Describe(), ": expected KEY=VALUE, e.g. train.lr=3e-4"));
  }
  const std::string key = assignment.substr(0, eq);
  if (FindField(key, schema) == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(origin.Describe(), ": unknown key '", key, "'",
                                                   Suggestion(key, KnownKeys(schema))));
  }
  absl::StatusOr<YAML::Node> value = [&]() -> absl::StatusOr<YAML::Node> {
    try {
      return YAML::Load(assignment.substr(eq + 1));
    } catch (const YAML::Exception& e) {
      return absl::InvalidArgumentError(
          absl::StrCat(origin.Describe(), ": malformed value: ", e.msg));
    }
  }();
  if (!value.ok()) return value.status();
  (*leaves)[key] = Leaf{*value, origin};
  return absl::OkStatus();
}

absl::StatusOr<std::vector<QuantOverride>> ParseQuantOverrides(const std::string& key,
                                                               const Leaf& leaf);

absl::Status Assign(const Field& field, const Leaf& leaf) {
  const std::string where = absl::StrCat(leaf.origin.Describe(), ": '", field.key, "'");
  const YAML::Node& v = leaf.value;
  auto range_error = [&](double x) {
    return absl::InvalidArgumentError(absl::StrCat(where, " = ", x, " is out of range [", field.min,
                                                   ", ", field.max, "]"));
  };
  try {
    if (auto* p = std::get_if<int64_t*>(&field.target)) {
      if (!v.IsScalar()) return absl::InvalidArgumentError(absl::StrCat(where, " must be an integer"));
      int64_t x;
      if (!YAML::convert<int64_t>::decode(v, x)) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, " must be an integer, got '", v.Scalar(), "'"));
      }
      if (x < field.min || x > field.max) return range_error(static_cast<double>(x));
      **p = x;
    } else if (auto* p = std::get_if<double*>(&field.target)) {
      double x;
      if (!v.IsScalar() || !YAML::convert<double>::decode(v, x) || !std::isfinite(x)) {
        return absl::InvalidArgumentError(absl::StrCat(
            where, " must be a number, got '", v.IsScalar() ? v.Scalar() : "a non-scalar", "'"));
      }
      if (x < field.min || x > field.max) return range_error(x);
      **p = x;
    } else if (auto* p = std::get_if<bool*>(&field.target)) {
      bool x;
      if (!v.IsScalar() || !YAML::convert<bool>::decode(v, x)) {
        return absl::InvalidArgumentError(absl::StrCat(where, " must be true or false"));
      }
      **p = x;
    } else if (auto* p = std::get_if<std::string*>(&field.target)) {
      if (!(v.IsScalar() || v.IsNull())) {
        return absl::InvalidArgumentError(absl::StrCat(where, " must be a string"));
      }
      std::string x = v.IsNull() ? "" : v.Scalar();
      if (!field.choices.empty() &&
          std::find(field.choices.begin(), field.choices.end(), x) == field.choices.end()) {
        return absl::InvalidArgumentError(absl::StrCat(where, " = '", x, "' is not one of: ",
                                                       absl::StrJoin(field.choices, ", ")));
      }
      **p = x;
    } else if (auto* p = std::get_if<std::vector<std::string>*>(&field.target)) {
      std::vector<std::string> x;
      if (v.IsScalar()) {
        x.push_back(v.Scalar());
      } else if (v.IsSequence()) {
        for (const auto& item : v) {
          if (!item.IsScalar()) {
            return absl::InvalidArgumentError(absl::StrCat(where, " must be a list of strings"));
          }
          x.push_back(item.Scalar());
        }
      } else if (!v.IsNull()) {
        return absl::InvalidArgumentError(absl::StrCat(where, " must be a list of strings"));
      }
      **p = x;
    } else if (auto* p = std::get_if<DataConfig*>(&field.target)) {
      // data.train: a list of paths, or of {path, weight} maps (not both).
      std::vector<std::string> paths;
      std::vector<double> weights;
      const auto bad = [&](const std::string& what) {
        return absl::InvalidArgumentError(absl::StrCat(
            where, " must be a list of shard paths, or of {path: P, weight: W} maps: ", what));
      };
      if (v.IsScalar()) {
        paths.push_back(v.Scalar());
      } else if (v.IsSequence()) {
        for (const auto& item : v) {
          if (item.IsScalar() && weights.empty()) {
            paths.push_back(item.Scalar());
          } else if (item.IsMap() && weights.size() == paths.size()) {
            for (const auto& kv : item) {
              const std::string k = kv.first.as<std::string>();
              if (k != "path" && k != "weight") return bad(absl::StrCat("unknown key '", k, "'"));
            }
            if (!item["path"] || !item["path"].IsScalar()) return bad("a map without a path");
            double w = 1;
            if (item["weight"] &&
                (!item["weight"].IsScalar() || !YAML::convert<double>::decode(item["weight"], w) ||
                 !(w > 0) || !std::isfinite(w))) {
              return bad(
                  absl::StrCat("the weight of '", item["path"].Scalar(), "' must be a number > 0"));
            }
            paths.push_back(item["path"].Scalar());
            weights.push_back(w);
          } else {
            return bad("plain paths and maps mixed, or an entry that is neither");
          }
        }
      } else if (!v.IsNull()) {
        return bad("got a map");
      }
      (*p)->train = std::move(paths);
      (*p)->train_weights = std::move(weights);
    } else if (auto* p = std::get_if<std::vector<QuantOverride>*>(&field.target)) {
      absl::StatusOr<std::vector<QuantOverride>> x = ParseQuantOverrides(field.key, leaf);
      if (!x.ok()) return x.status();
      **p = *std::move(x);
    }
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": ", e.msg));
  }
  return absl::OkStatus();
}

// The quant keys a per-layer override may set.
const std::vector<std::string>& OverrideKeys() {
  static const std::vector<std::string> keys = {"method",     "bits",  "symmetric",  "granularity",
                                                "group_size", "scale", "activations"};
  return keys;
}

// quant.overrides: a list of maps {pattern, KEY: value, ...}; every value is checked as the
// section's own key would be, and reported as quant.overrides[I].KEY.
absl::StatusOr<std::vector<QuantOverride>> ParseQuantOverrides(const std::string& key,
                                                               const Leaf& leaf) {
  const YAML::Node& v = leaf.value;
  std::vector<QuantOverride> out;
  if (v.IsNull()) return out;
  auto at = [&](const YAML::Node& n) {
    Origin o = leaf.origin;
    if (o.line > 0 && n.Mark().line >= 0) o.line = n.Mark().line + 1;  // a file: the item's line
    return o;
  };
  auto error = [&](const YAML::Node& n, const std::string& path, const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(at(n).Describe(), ": '", path, "' ", what));
  };
  if (!v.IsSequence()) {
    return error(v, key, "must be a list of maps {pattern: GLOB, KEY: value, ...}");
  }
  Recipe scratch;
  const std::vector<Field> schema = Schema(&scratch);
  std::vector<std::string> known = OverrideKeys();
  known.push_back("pattern");
  for (size_t i = 0; i < v.size(); ++i) {
    const YAML::Node item = v[i];
    const std::string path = absl::StrCat(key, "[", i, "]");
    if (!item.IsMap()) return error(item, path, "must be a map {pattern: GLOB, KEY: value, ...}");
    QuantOverride o;
    for (const auto& kv : item) {
      const std::string k = kv.first.IsScalar() ? kv.first.Scalar() : "";
      const std::string kpath = absl::StrCat(path, ".", k);
      if (k == "pattern") {
        if (!kv.second.IsScalar() || kv.second.Scalar().empty()) {
          return error(kv.first, kpath, "must be a non-empty glob over weight names");
        }
        o.pattern = kv.second.Scalar();
        continue;
      }
      if (std::find(known.begin(), known.end(), k) == known.end()) {
        return absl::InvalidArgumentError(absl::StrCat(at(kv.first).Describe(), ": unknown key '",
                                                       kpath, "'", Suggestion(k, known)));
      }
      Field f = *FindField("quant." + k, schema);
      f.key = kpath;
      absl::Status s = Assign(f, Leaf{kv.second, at(kv.first)});
      if (!s.ok()) return s;
      o.values.emplace_back(k, kv.second.IsNull() ? "" : kv.second.Scalar());
    }
    if (o.pattern.empty()) return error(item, path, "needs a 'pattern' (a glob over weight names)");
    out.push_back(std::move(o));
  }
  return out;
}

// `quant` with the values of one override (already checked) in place of its own.
QuantConfig ApplyQuantOverride(const QuantConfig& quant, const QuantOverride& o) {
  Recipe scratch;
  scratch.quant = quant;
  const std::vector<Field> schema = Schema(&scratch);
  for (const auto& [k, text] : o.values) {
    const Field* f = FindField("quant." + k, schema);
    if (f == nullptr) continue;
    Assign(*f, Leaf{YAML::Node(text), Origin{"quant.overrides", 0}}).IgnoreError();
  }
  return scratch.quant;
}

// Checks that involve more than one key.
absl::Status CheckConsistency(const Recipe& r, const std::string& file) {
  auto err = [&](const std::string& msg) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": ", msg));
  };
  if (r.model.hidden_size % r.model.num_heads != 0) {
    return err("model.hidden_size must be a multiple of model.num_heads");
  }
  if ((r.model.hidden_size / r.model.num_heads) % 2 != 0) {
    return err("model.hidden_size / model.num_heads (the head size) must be even for RoPE");
  }
  if (r.model.num_heads % r.model.num_kv_heads != 0) {
    return err("model.num_heads must be a multiple of model.num_kv_heads");
  }
  if (r.data.seq_len > r.model.max_seq_len) {
    return err(absl::StrCat("data.seq_len (", r.data.seq_len, ") exceeds model.max_seq_len (",
                            r.model.max_seq_len, ")"));
  }
  if (r.train.batch_size % r.train.micro_batch_size != 0) {
    return err("train.batch_size must be a multiple of train.micro_batch_size");
  }
  if (r.train.min_lr > r.train.lr) return err("train.min_lr must not exceed train.lr");
  if (r.smoothness.mode == "grad_match" && r.distill.teacher.empty()) {
    return err("smoothness.mode grad_match needs a teacher (distill.teacher)");
  }
  if (r.distill.hidden_mse_weight > 0 && r.distill.teacher.empty()) {
    return err("distill.hidden_mse_weight needs a teacher (distill.teacher)");
  }
  // The quantizer of the section, and that of every override (merged into the section).
  for (size_t i = 0; i <= r.quant.overrides.size(); ++i) {
    const bool base = i == r.quant.overrides.size();
    const QuantConfig q = base ? r.quant : ApplyQuantOverride(r.quant, r.quant.overrides[i]);
    if (q.method == "none") continue;
    absl::StatusOr<quant::QuantSpec> spec = quant::MakeQuantSpec(
        ToQuantWords(q), base ? "quant." : absl::StrCat("quant.overrides[", i, "]."));
    if (!spec.ok()) return err(std::string(spec.status().message()));
  }
  return absl::OkStatus();
}

// resolve_hf: fill the model keys from model.from_hf's config.json (a recipe file being loaded;
// not a resolved copy read back from a checkpoint, which holds them already).
absl::StatusOr<Recipe> Build(const std::map<std::string, Leaf>& leaves, const std::string& file,
                             bool resolve_hf = false) {
  Recipe recipe;
  recipe.path = file;
  std::vector<Field> schema = Schema(&recipe);
  for (const auto& [key, leaf] : leaves) {
    absl::Status s = Assign(*FindField(key, schema), leaf);
    if (!s.ok()) return s;
  }
  if (resolve_hf && !recipe.model.from_hf.empty()) {
    std::set<std::string> explicit_keys;
    for (const auto& [key, leaf] : leaves) explicit_keys.insert(key);
    absl::Status s = ApplyHfConfig(recipe.model.from_hf, explicit_keys, &recipe.model, &recipe.data);
    if (!s.ok()) return absl::Status(s.code(), absl::StrCat(file, ": model.from_hf: ", s.message()));
  }
  absl::Status s = CheckConsistency(recipe, file);
  if (!s.ok()) return s;
  return recipe;
}

}  // namespace

bool GlobMatch(const std::string& pattern, const std::string& text) {
  // Greedy matching with one backtrack point (the last '*'): linear in practice.
  size_t p = 0, t = 0, star = std::string::npos, star_t = 0;
  while (t < text.size()) {
    if (p < pattern.size() && (pattern[p] == '?' || pattern[p] == text[t])) {
      ++p, ++t;
    } else if (p < pattern.size() && pattern[p] == '*') {
      star = p++, star_t = t;
    } else if (star != std::string::npos) {
      p = star + 1, t = ++star_t;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

quant::QuantWords ToQuantWords(const QuantConfig& q) {
  quant::QuantWords w;
  w.method = q.method;
  w.bits = q.bits;
  w.symmetric = q.symmetric;
  w.granularity = q.granularity;
  w.group_size = q.group_size;
  w.scale = q.scale;
  w.activations = q.activations;
  return w;
}

QuantConfig LayerQuantConfig(const QuantConfig& quant, const std::string& weight_name,
                             std::string* key_prefix) {
  for (size_t i = 0; i < quant.overrides.size(); ++i) {
    if (!GlobMatch(quant.overrides[i].pattern, weight_name)) continue;
    if (key_prefix != nullptr) *key_prefix = absl::StrCat("quant.overrides[", i, "].");
    return ApplyQuantOverride(quant, quant.overrides[i]);
  }
  if (key_prefix != nullptr) *key_prefix = "quant.";
  return quant;
}

absl::StatusOr<Recipe> LoadRecipe(const std::string& path, const std::vector<std::string>& overrides) {
  Recipe scratch;
  const std::vector<Field> schema = Schema(&scratch);
  std::map<std::string, Leaf> leaves;
  std::vector<std::string> chain;
  absl::Status s = CollectFile(path, &chain, schema, &leaves);
  if (!s.ok()) return s;
  for (const std::string& o : overrides) {
    s = ApplyOverride(o, schema, &leaves);
    if (!s.ok()) return s;
  }
  return Build(leaves, path, /*resolve_hf=*/true);
}

absl::StatusOr<Recipe> ParseRecipeText(const std::string& text, const std::string& origin) {
  Recipe scratch;
  const std::vector<Field> schema = Schema(&scratch);
  absl::StatusOr<YAML::Node> root = ParseYaml(text, origin);
  if (!root.ok()) return root.status();
  std::map<std::string, Leaf> leaves;
  absl::Status s = Flatten(*root, "", origin, schema, &leaves);
  if (!s.ok()) return s;
  return Build(leaves, origin);
}

std::string RecipeToYaml(const Recipe& recipe) {
  Recipe copy = recipe;
  YAML::Emitter out;
  out << YAML::BeginMap;
  std::string section;
  for (const Field& f : Schema(&copy)) {
    const std::string s = f.key.substr(0, f.key.find('.'));
    if (s != section) {
      if (!section.empty()) out << YAML::EndMap;
      out << YAML::Key << s << YAML::Value << YAML::BeginMap;
      section = s;
    }
    out << YAML::Key << f.key.substr(f.key.find('.') + 1) << YAML::Value;
    std::visit(
        [&](auto* p) {
          using T = std::decay_t<decltype(*p)>;
          if constexpr (std::is_same_v<T, std::vector<std::string>>) {
            out << YAML::Flow << YAML::BeginSeq;
            for (const auto& x : *p) out << x;
            out << YAML::EndSeq;
          } else if constexpr (std::is_same_v<T, DataConfig>) {
            out << YAML::Flow << YAML::BeginSeq;
            for (size_t i = 0; i < p->train.size(); ++i) {
              if (p->train_weights.empty()) {
                out << p->train[i];
              } else {
                out << YAML::BeginMap << YAML::Key << "path" << YAML::Value << YAML::DoubleQuoted
                    << p->train[i] << YAML::Key << "weight" << YAML::Value << YAML::Precision(17)
                    << p->train_weights[i] << YAML::EndMap;
              }
            }
            out << YAML::EndSeq;
          } else if constexpr (std::is_same_v<T, std::vector<QuantOverride>>) {
            out << YAML::Flow << YAML::BeginSeq;
            for (const QuantOverride& o : *p) {
              out << YAML::BeginMap << YAML::Key << "pattern" << YAML::Value << YAML::DoubleQuoted
                  << o.pattern;
              for (const auto& [k, text] : o.values) out << YAML::Key << k << YAML::Value << text;
              out << YAML::EndMap;
            }
            out << YAML::EndSeq;
          } else if constexpr (std::is_same_v<T, std::string>) {
            out << YAML::DoubleQuoted << *p;
          } else if constexpr (std::is_same_v<T, double>) {
            out << YAML::Precision(17) << *p;
          } else {
            out << *p;
          }
        },
        f.target);
  }
  if (!section.empty()) out << YAML::EndMap;
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

std::string RecipeSchemaDoc() {
  Recipe defaults;
  std::vector<Field> schema = Schema(&defaults);
  std::ostringstream os;
  for (const Field& f : schema) {
    os << f.key << " (";
    std::visit(
        [&](auto* p) {
          using T = std::decay_t<decltype(*p)>;
          if constexpr (std::is_same_v<T, int64_t>) os << "int, default " << *p;
          if constexpr (std::is_same_v<T, double>) os << "float, default " << *p;
          if constexpr (std::is_same_v<T, bool>) os << "bool, default " << (*p ? "true" : "false");
          if constexpr (std::is_same_v<T, std::string>) os << "string, default '" << *p << "'";
          if constexpr (std::is_same_v<T, std::vector<std::string>>) os << "list of strings";
          if constexpr (std::is_same_v<T, std::vector<QuantOverride>>) os << "list of maps";
          if constexpr (std::is_same_v<T, DataConfig>)
            os << "list of strings or {path, weight} maps";
        },
        f.target);
    if (!f.choices.empty()) os << ", one of " << absl::StrJoin(f.choices, "|");
    if (std::isfinite(f.min) || std::isfinite(f.max)) os << ", range [" << f.min << ", " << f.max << "]";
    os << "): " << f.doc << "\n";
  }
  return os.str();
}

}  // namespace qat::trainer
