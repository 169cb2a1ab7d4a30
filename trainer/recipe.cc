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

namespace qat::trainer {
namespace {

namespace fs = std::filesystem;
using Target = std::variant<int64_t*, double*, bool*, std::string*, std::vector<std::string>*>;

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
      {"run.save_every", &r->run.save_every, 0, 1e9, {}, "checkpoint every N steps (0: at the end)"},
      {"run.keep_last", &r->run.keep_last, 1, 1e6, {}, "checkpoints kept"},
      {"run.resume", &r->run.resume, -kInf, kInf, {"auto", "none"},
       "auto: continue from the newest valid checkpoint in run.dir"},
      {"run.stop_after", &r->run.stop_after, 0, 1e12, {},
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
      {"model.init_from", &r->model.init_from, -kInf, kInf, {},
       "checkpoint directory whose weights initialise the model"},
      {"quant.method", &r->quant.method, -kInf, kInf, {"none", "ternary"},
       "weight quantizer of every linear inside the blocks"},
      {"quant.granularity", &r->quant.granularity, -kInf, kInf, {"per_tensor", "per_channel"},
       "one scale per tensor or per output row"},
      {"quant.embeddings", &r->quant.embeddings, -kInf, kInf, {}, "quantize the embedding too"},
      {"quant.lm_head", &r->quant.lm_head, -kInf, kInf, {}, "quantize the LM head too"},
      {"data.train", &r->data.train, -kInf, kInf, {}, "training token shards"},
      {"data.val", &r->data.val, -kInf, kInf, {}, "validation token shards"},
      {"data.seq_len", &r->data.seq_len, 2, 1e7, {}, "tokens per training sequence"},
      {"train.steps", &r->train.steps, 1, 1e12, {}, "optimizer steps"},
      {"train.batch_size", &r->train.batch_size, 1, 1e9, {}, "sequences per step, all ranks"},
      {"train.micro_batch_size", &r->train.micro_batch_size, 1, 1e9, {},
       "sequences per forward/backward; accumulation covers the rest"},
      {"train.lr", &r->train.lr, 0, 10, {}, "peak learning rate"},
      {"train.min_lr", &r->train.min_lr, 0, 10, {}, "learning rate at the end of the cosine"},
      {"train.warmup_steps", &r->train.warmup_steps, 0, 1e12, {}, "linear warmup steps"},
      {"train.weight_decay", &r->train.weight_decay, 0, 10, {}, "AdamW decoupled weight decay"},
      {"train.beta1", &r->train.beta1, 0, 0.999999, {}, "AdamW beta1"},
      {"train.beta2", &r->train.beta2, 0, 0.999999999, {}, "AdamW beta2"},
      {"train.eps", &r->train.eps, 0, 1, {}, "AdamW epsilon"},
      {"train.grad_clip", &r->train.grad_clip, 0, 1e9, {}, "max global grad norm (0: off)"},
      {"train.dtype", &r->train.dtype, -kInf, kInf, {"fp32", "bf16"},
       "compute dtype of the linear layers; weights, norms, softmax and losses stay fp32"},
      {"train.device", &r->train.device, -kInf, kInf, {"auto", "cpu", "cuda"},
       "where to train: auto picks cuda when libtorch sees a GPU"},
      {"train.threads", &r->train.threads, 0, 4096, {}, "intra-op threads (0: default)"},
      {"distill.teacher", &r->distill.teacher, -kInf, kInf, {},
       "checkpoint directory of the frozen teacher (empty: cross entropy only)"},
      {"distill.temperature", &r->distill.temperature, 0.01, 100, {}, "softmax temperature"},
      {"distill.kd_weight", &r->distill.kd_weight, 0, 1, {}, "loss = w*KL + (1-w)*CE"},
      {"smoothness.mode", &r->smoothness.mode, -kInf, kInf, {"none", "grad_norm", "grad_match"},
       "input-gradient regularizer: penalise ||dL/dx||^2, or ||dL_S/dx - dL_T/dx||^2"},
      {"smoothness.estimator", &r->smoothness.estimator, -kInf, kInf, {"exact", "finite_diff"},
       "exact: double backward; finite_diff: one extra forward/backward"},
      {"smoothness.lambda", &r->smoothness.lambda, 0, 1e9, {}, "weight of the regularizer"},
      {"smoothness.lambda_warmup_steps", &r->smoothness.lambda_warmup_steps, 0, 1e12, {},
       "steps over which lambda ramps up from 0"},
      {"smoothness.every_n_steps", &r->smoothness.every_n_steps, 1, 1e9, {},
       "apply the regularizer on one step in N"},
      {"smoothness.at", &r->smoothness.at, -kInf, kInf, {"embeddings"},
       "where the input gradient is taken (the embeddings fed to the first block)"},
      {"smoothness.fd_step", &r->smoothness.fd_step, 1e-8, 1, {},
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

absl::StatusOr<std::string> ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open recipe file"));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
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
    if (!s.ok()) return s;
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
    }
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": ", e.msg));
  }
  return absl::OkStatus();
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
  return absl::OkStatus();
}

absl::StatusOr<Recipe> Build(const std::map<std::string, Leaf>& leaves, const std::string& file) {
  Recipe recipe;
  recipe.path = file;
  std::vector<Field> schema = Schema(&recipe);
  for (const auto& [key, leaf] : leaves) {
    absl::Status s = Assign(*FindField(key, schema), leaf);
    if (!s.ok()) return s;
  }
  absl::Status s = CheckConsistency(recipe, file);
  if (!s.ok()) return s;
  return recipe;
}

}  // namespace

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
  return Build(leaves, path);
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
        },
        f.target);
    if (!f.choices.empty()) os << ", one of " << absl::StrJoin(f.choices, "|");
    if (std::isfinite(f.min) || std::isfinite(f.max)) os << ", range [" << f.min << ", " << f.max << "]";
    os << "): " << f.doc << "\n";
  }
  return os.str();
}

}  // namespace qat::trainer
