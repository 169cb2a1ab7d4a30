// Hugging Face directories: weights in (bounds-checked, sharded or not) and out (see hf.h).
#include "trainer/hf.h"

#include <torch/torch.h>

#include <cstring>
#include <filesystem>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "data/tokens.h"
#include "kernels/json.h"
#include "kernels/safetensors.h"

namespace qat::trainer {
namespace {

namespace fs = std::filesystem;
namespace json = kernels::json;

absl::Status Bad(const std::string& where, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(where, ": ", what));
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) absl::StrAppend(&s, i ? ", " : "", shape[i]);
  return s + "]";
}

// Tensors that HF files may carry and qat does not need.
bool Ignorable(const std::string& name, const ModelConfig& c) {
  return absl::EndsWith(name, ".rotary_emb.inv_freq") ||
         (c.tie_embeddings && name == "lm_head.weight");
}

// Which tensors live in which file: {file -> names}, from the index or the single file.
absl::StatusOr<std::map<std::string, std::set<std::string>>> ShardPlan(const std::string& dir) {
  std::error_code ec;
  const fs::path index_path = fs::path(dir) / "model.safetensors.index.json";
  std::map<std::string, std::set<std::string>> plan;
  if (!fs::is_regular_file(index_path, ec)) {
    if (!fs::is_regular_file(fs::path(dir) / "model.safetensors", ec)) {
      return absl::NotFoundError(absl::StrCat(dir, ": holds neither model.safetensors nor ",
                                              "model.safetensors.index.json"));
    }
    plan["model.safetensors"];  // every tensor of the file
    return plan;
  }
  const std::string where = index_path.string();
  absl::StatusOr<std::string> text = kernels::ReadFile(where);
  if (!text.ok()) return text.status();
  absl::StatusOr<json::Value> index = json::Parse(*text);
  if (!index.ok()) return Bad(where, absl::StrCat("not valid JSON: ", index.status().message()));
  const json::Value* map = index->Find("weight_map");
  if (map == nullptr || !map->is_object() || map->as_object().empty()) {
    return Bad(where, "\"weight_map\" is missing, empty or not an object");
  }
  for (const json::Member& m : map->as_object()) {
    if (!m.second.is_string())
      return Bad(where, absl::StrCat("weight_map[\"", m.first, "\"] is not a string"));
    const std::string& file = m.second.as_string();
    // Shards are plain file names inside dir: nothing may point elsewhere.
    if (file.empty() || file == "." || file == ".." || file.find('/') != std::string::npos ||
        file.find('\\') != std::string::npos) {
      return Bad(where, absl::StrCat("weight_map[\"", m.first, "\"] = \"", file,
                                     "\" is not a file name inside the directory"));
    }
    plan[file].insert(m.first);
  }
  return plan;
}

}  // namespace

std::map<std::string, std::vector<int64_t>> HfTensorShapes(const ModelConfig& c) {
  std::map<std::string, std::vector<int64_t>> shapes;
  const int64_t kv = c.num_kv_heads * (c.hidden_size / c.num_heads);
  shapes["model.embed_tokens.weight"] = {c.vocab_size, c.hidden_size};
  shapes["model.norm.weight"] = {c.hidden_size};
  if (!c.tie_embeddings) shapes["lm_head.weight"] = {c.vocab_size, c.hidden_size};
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    shapes[p + "input_layernorm.weight"] = {c.hidden_size};
    shapes[p + "post_attention_layernorm.weight"] = {c.hidden_size};
    shapes[p + "self_attn.q_proj.weight"] = {c.hidden_size, c.hidden_size};
    shapes[p + "self_attn.k_proj.weight"] = {kv, c.hidden_size};
    shapes[p + "self_attn.v_proj.weight"] = {kv, c.hidden_size};
    shapes[p + "self_attn.o_proj.weight"] = {c.hidden_size, c.hidden_size};
    shapes[p + "mlp.gate_proj.weight"] = {c.intermediate_size, c.hidden_size};
    shapes[p + "mlp.up_proj.weight"] = {c.intermediate_size, c.hidden_size};
    shapes[p + "mlp.down_proj.weight"] = {c.hidden_size, c.intermediate_size};
    if (c.attention_bias) {
      shapes[p + "self_attn.q_proj.bias"] = {c.hidden_size};
      shapes[p + "self_attn.k_proj.bias"] = {kv};
      shapes[p + "self_attn.v_proj.bias"] = {kv};
    }
  }
  return shapes;
}

absl::StatusOr<TensorMap> LoadHfTensors(const std::string& dir, const ModelConfig& c) {
  TensorMap out;
  for (const auto& [name, shape] : HfTensorShapes(c))
    out[name] = torch::empty(shape, torch::kFloat32);
  if (absl::Status s = LoadHfTensorsInto(dir, c, &out); !s.ok()) return s;
  return out;
}

absl::Status LoadHfTensorsInto(const std::string& dir, const ModelConfig& c, TensorMap* dest) {
  absl::StatusOr<std::map<std::string, std::set<std::string>>> plan = ShardPlan(dir);
  if (!plan.ok()) return plan.status();
  const std::map<std::string, std::vector<int64_t>> expected = HfTensorShapes(c);
  std::set<std::string> loaded;
  for (const auto& [file, listed] : *plan) {
    const std::string path = (fs::path(dir) / file).string();
    // One shard in memory at a time: its bytes are released before the next is read.
    absl::StatusOr<kernels::SafetensorsFile> st = kernels::SafetensorsFile::Open(path);
    if (!st.ok()) return st.status();
    for (const std::string& name : listed) {
      if (st->Find(name) == nullptr) {
        return Bad(path, absl::StrCat("tensor \"", name, "\" is listed for this shard in ",
                                      "model.safetensors.index.json but not stored in it"));
      }
    }
    for (const kernels::TensorInfo& t : st->tensors()) {
      if (!listed.empty() && listed.count(t.name) == 0) {
        return Bad(path, absl::StrCat("tensor \"", t.name, "\" is stored here but the index ",
                                      "does not list it for this shard"));
      }
      auto want = expected.find(t.name);
      if (want == expected.end()) {
        if (Ignorable(t.name, c)) continue;
        return Bad(path, absl::StrCat("unexpected tensor \"", t.name, "\" (not part of this ",
                                      "LLaMA-family config)"));
      }
      if (loaded.count(t.name) != 0) {
        return Bad(path, absl::StrCat("tensor \"", t.name, "\" appears in more than one shard"));
      }
      if (t.shape != want->second) {
        return Bad(path, absl::StrCat("tensor \"", t.name, "\" has shape ", ShapeString(t.shape),
                                      ", config.json implies ", ShapeString(want->second)));
      }
      auto target = dest->find(t.name);
      if (target == dest->end() || target->second.scalar_type() != torch::kFloat32 ||
          !target->second.is_contiguous() || !target->second.device().is_cpu() ||
          target->second.sizes().vec() != t.shape) {
        return absl::InternalError(absl::StrCat("no fp32 CPU destination for ", t.name));
      }
      // Converted straight into the destination: no intermediate copy of the weights.
      absl::Status s = st->ReadF32Into(t.name, target->second.data_ptr<float>(), t.numel());
      if (!s.ok()) return s;
      loaded.insert(t.name);
    }
  }
  for (const auto& [name, shape] : expected) {
    if (loaded.count(name) == 0) {
      return absl::NotFoundError(
          absl::StrCat(dir, ": missing tensor \"", name, "\" ", ShapeString(shape)));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<LoadedModel> LoadHfModel(const std::string& dir) {
  absl::StatusOr<HfConfig> hf = ReadHfConfig(dir);
  if (!hf.ok()) return hf.status();
  Recipe recipe;
  recipe.path = (fs::path(dir) / "config.json").string();
  recipe.model = hf->model;
  recipe.model.from_hf = dir;
  recipe.quant.method = "none";
  recipe.data.seq_len = std::min<int64_t>(recipe.data.seq_len, recipe.model.max_seq_len);
  std::error_code ec;
  if (fs::is_regular_file(fs::path(dir) / "tokenizer.json", ec) ||
      fs::is_regular_file(fs::path(dir) / "tokenizer.model", ec)) {
    recipe.data.tokenizer = dir;
  }
  absl::StatusOr<CausalLM> model = BuildModel(recipe.model, recipe.quant);
  if (!model.ok()) return model.status();
  // Straight into the model's parameters (one fp32 copy of the weights in memory, not two).
  TensorMap params = ParameterMap(**model);
  {
    torch::NoGradGuard no_grad;
    if (absl::Status s = LoadHfTensorsInto(dir, recipe.model, &params); !s.ok()) return s;
  }
  const std::map<std::string, std::vector<int64_t>> shapes = HfTensorShapes(recipe.model);
  for (const auto& item : (*model)->named_parameters()) {
    if (shapes.count(item.key()) == 0) {
      return absl::InternalError(absl::StrCat("model parameter ", item.key(), " has no HF tensor"));
    }
  }
  (*model)->eval();
  return LoadedModel{*model, recipe, dir, 0};
}

absl::StatusOr<HfExportReport> ExportHf(CausalLM& model, const std::string& out_dir,
                                        const HfExportOptions& options) {
  torch::ScalarType dtype;
  kernels::DType st_dtype;
  std::string torch_dtype;
  if (options.dtype == "bf16") {
    dtype = torch::kBFloat16, st_dtype = kernels::DType::kBF16, torch_dtype = "bfloat16";
  } else if (options.dtype == "fp16") {
    dtype = torch::kFloat16, st_dtype = kernels::DType::kF16, torch_dtype = "float16";
  } else if (options.dtype == "fp32") {
    dtype = torch::kFloat32, st_dtype = kernels::DType::kF32, torch_dtype = "float32";
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("HF export: dtype '", options.dtype, "', expected bf16, fp16 or fp32"));
  }
  absl::StatusOr<std::unique_ptr<data::Tokenizer>> tokenizer =
      data::LoadTokenizer(options.tokenizer);
  if (!tokenizer.ok()) return tokenizer.status();
  const ModelConfig& c = model->config();
  if ((*tokenizer)->vocab_size() > c.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "HF export: the tokenizer ", options.tokenizer, " has ", (*tokenizer)->vocab_size(),
        " tokens, more than the model's vocab_size ", c.vocab_size));
  }
  torch::NoGradGuard no_grad;

  // Every tensor as the forward pass uses it.
  std::map<std::string, torch::Tensor> effective;
  for (const auto& item : model->named_modules()) {
    if (auto* linear = item.value()->as<QLinearImpl>()) {
      effective[item.key() + ".weight"] = linear->effective_weight();
      if (linear->bias.defined()) effective[item.key() + ".bias"] = linear->bias;
    }
  }
  effective["model.embed_tokens.weight"] = model->EmbeddingWeight();
  if (!c.tie_embeddings) effective["lm_head.weight"] = model->LmHeadWeight();
  for (const auto& item : model->named_parameters()) {
    if (effective.count(item.key()) == 0) effective[item.key()] = item.value();
  }
  kernels::SafetensorsWriter writer;
  writer.SetMetadata("format", "pt");
  HfExportReport report;
  for (const auto& [name, shape] : HfTensorShapes(c)) {
    auto it = effective.find(name);
    if (it == effective.end()) return absl::InternalError("HF export: no tensor for " + name);
    torch::Tensor t = it->second.detach().to(torch::kCPU, dtype).contiguous();
    if (t.sizes().vec() != shape) {
      return absl::InternalError(absl::StrCat("HF export: ", name, " has shape ",
                                              ShapeString(t.sizes().vec()), ", expected ",
                                              ShapeString(shape)));
    }
    writer.Add(name, st_dtype, shape, t.data_ptr(), t.numel() * t.element_size());
    ++report.tensors;
  }
  if (model->quant().activations != "none") {
    report.note = absl::StrCat("activation quantization (", model->quant().activations,
                               ") is not part of a Hugging Face model: weights only");
  }

  // Write everything into DIR.tmp, then move it into place.
  const fs::path final_dir = out_dir;
  const fs::path tmp = out_dir + ".tmp";
  std::error_code ec;
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp, ec);
  if (ec) return absl::InternalError(absl::StrCat(tmp.string(), ": ", ec.message()));
  const std::string weights = writer.Serialize();
  report.weights_bytes = static_cast<int64_t>(weights.size());
  absl::Status s = kernels::WriteFileAtomic((tmp / "model.safetensors").string(), weights);
  if (s.ok()) {
    s = kernels::WriteFileAtomic(
        (tmp / "config.json").string(),
        HfConfigJson(c, torch_dtype, (*tokenizer)->bos_id(), (*tokenizer)->eos_id()));
  }
  for (const std::string& file : (*tokenizer)->files()) {
    if (!s.ok()) break;
    absl::StatusOr<std::string> bytes = kernels::ReadFile(file);
    if (!bytes.ok()) {
      s = bytes.status();
      break;
    }
    s = kernels::WriteFileAtomic((tmp / fs::path(file).filename()).string(), *bytes);
    report.copied.push_back(file);
  }
  if (!s.ok()) {
    fs::remove_all(tmp, ec);
    return s;
  }
  const fs::path old = out_dir + ".old";
  fs::remove_all(old, ec);
  if (fs::exists(final_dir, ec)) {
    fs::rename(final_dir, old, ec);
    if (ec)
      return absl::InternalError(absl::StrCat("cannot move ", out_dir, " aside: ", ec.message()));
  }
  fs::rename(tmp, final_dir, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("cannot rename ", tmp.string(), " to ", out_dir, ": ", ec.message()));
  }
  fs::remove_all(old, ec);
  return report;
}

}  // namespace qat::trainer
