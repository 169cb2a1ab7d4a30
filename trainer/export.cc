#include "trainer/export.h"

#include <torch/torch.h>

#include <vector>

#include "absl/strings/str_cat.h"
#include "data/tokens.h"
#include "kernels/lowbit.h"
#include "kernels/safetensors.h"
#include "kernels/ternary.h"
#include "trainer/model.h"
#include "trainer/train.h"

namespace qat::trainer {
namespace {

// Per-tensor and per-channel scales of int2/int4 are written once per this many columns.
constexpr int64_t kReplicatedGroup = 128;

// Returns the bytes of data written.
int64_t AddF32(kernels::SafetensorsWriter& w, const std::string& name, const torch::Tensor& t) {
  torch::Tensor c = t.detach().to(torch::kCPU, torch::kFloat32).contiguous();
  const int64_t bytes = c.numel() * static_cast<int64_t>(sizeof(float));
  w.Add(name, kernels::DType::kF32, c.sizes().vec(), c.data_ptr<float>(), bytes);
  return bytes;
}

// The storage of one linear weight: its format ("f32" when its values are stored dense) and the
// bytes of data written for NAME, NAME.scale and NAME.zero.
struct LinearStorage {
  std::string format;
  int64_t bytes = 0;
};

// Writes the storage of one fake-quantized linear `name` (see export.h).
LinearStorage AddQuantizedLinear(kernels::SafetensorsWriter& w, const std::string& name,
                                 const QuantizedWeight& q, const ExportOptions& options) {
  const quant::QuantSpec& spec = q.quantizer->spec();
  if (spec.int8_activations) w.SetMetadata("qat.act." + name, "int8");
  const torch::Tensor weight = q.weight.detach().to(torch::kCPU, torch::kFloat32);
  const torch::Tensor scale =
      q.scale.defined() ? q.scale.detach().to(torch::kCPU, torch::kFloat32) : torch::Tensor();
  const quant::QuantParts parts = q.quantizer->Decompose(weight, scale);
  const int64_t rows = weight.size(0), cols = weight.size(1);
  const int64_t scale_groups = parts.scale.size(1);  // 1 unless per_group

  if (parts.levels <= 3 && scale_groups == 1) {
    // Ternary t = u - 1 with scale s; binary b = 2u - 1 with s = scale / 2 (both exact).
    const bool binary = parts.levels == 2;
    torch::Tensor trits =
        (binary ? parts.codes.to(torch::kInt8) * 2 - 1 : parts.codes.to(torch::kInt8) - 1)
            .contiguous();
    torch::Tensor s = (binary ? parts.scale * 0.5 : parts.scale).reshape({-1}).contiguous();
    const bool three = options.ternary_format == "ternary3";
    const int64_t row_bytes =
        three ? kernels::Ternary3RowBytes(cols) : kernels::TernaryRowBytes(cols);
    std::vector<uint8_t> packed(static_cast<size_t>(rows * row_bytes));
    if (three) {
      kernels::PackTernary3(trits.data_ptr<int8_t>(), rows, cols, packed.data());
    } else {
      kernels::PackTernary(trits.data_ptr<int8_t>(), rows, cols, packed.data());
    }
    w.Add(name, kernels::DType::kU8, {rows, row_bytes}, packed.data(), packed.size());
    const int64_t scale_bytes = AddF32(w, name + ".scale", s);
    const std::string format = three ? "ternary3" : "ternary2";
    w.SetMetadata("qat.quant." + name, format);
    return {format, static_cast<int64_t>(packed.size()) + scale_bytes};
  }
  if (parts.levels > 16) {
    return {"f32", AddF32(w, name, parts.Dequantize())};  // int8: the quantized values, dense
  }
  const int bits = parts.levels <= 4 ? 2 : 4;
  const int64_t group = scale_groups > 1 ? cols / scale_groups : kReplicatedGroup;
  const int64_t groups = kernels::IntKGroupsPerRow(group, cols);
  // [R, C] -> [rows, groups]: per_group has C == groups already; otherwise C == 1 and the row's
  // (or the tensor's) scale and zero point are repeated over the groups.
  const torch::Tensor s = parts.scale.expand({rows, groups}).contiguous();
  const torch::Tensor z = parts.zero.expand({rows, groups}).contiguous();
  torch::Tensor codes = parts.codes.contiguous();
  std::vector<uint8_t> packed(static_cast<size_t>(rows * kernels::IntKRowBytes(bits, cols)));
  kernels::PackIntK(codes.data_ptr<uint8_t>(), rows, cols, bits, packed.data());
  w.Add(name, kernels::DType::kU8, {rows, kernels::IntKRowBytes(bits, cols)}, packed.data(),
        packed.size());
  int64_t bytes = static_cast<int64_t>(packed.size());
  bytes += AddF32(w, name + ".scale", s.reshape({-1}));
  bytes += AddF32(w, name + ".zero", z.reshape({-1}));
  const std::string format = bits == 2 ? "int2" : "int4";
  w.SetMetadata("qat.quant." + name, format);
  w.SetMetadata("qat.group." + name, absl::StrCat(group));
  return {format, bytes};
}

}  // namespace

absl::StatusOr<ExportReport> ExportPacked(const std::string& checkpoint,
                                          const std::string& out_path,
                                          const ExportOptions& options) {
  if (options.ternary_format != "ternary2" && options.ternary_format != "ternary3") {
    return absl::InvalidArgumentError(absl::StrCat(
        "export: ternary format '", options.ternary_format, "' (expected ternary2 or ternary3)"));
  }
  absl::StatusOr<LoadedModel> loaded = LoadModelFromCheckpoint(checkpoint);
  if (!loaded.ok()) return loaded.status();
  CausalLM& model = loaded->model;
  model->to(torch::kCPU, torch::kFloat32);
  const ModelConfig& c = loaded->recipe.model;
  torch::NoGradGuard no_grad;

  kernels::SafetensorsWriter w;
  w.SetMetadata("format", "qat-packed");
  w.SetMetadata("qat.vocab_size", absl::StrCat(c.vocab_size));
  w.SetMetadata("qat.hidden_size", absl::StrCat(c.hidden_size));
  w.SetMetadata("qat.intermediate_size", absl::StrCat(c.intermediate_size));
  w.SetMetadata("qat.num_layers", absl::StrCat(c.num_layers));
  w.SetMetadata("qat.num_heads", absl::StrCat(c.num_heads));
  w.SetMetadata("qat.num_kv_heads", absl::StrCat(c.num_kv_heads));
  w.SetMetadata("qat.max_seq_len", absl::StrCat(c.max_seq_len));
  w.SetMetadata("qat.rope_theta", absl::StrCat(c.rope_theta));
  w.SetMetadata("qat.rms_norm_eps", absl::StrCat(c.rms_norm_eps));
  w.SetMetadata("qat.tie_embeddings", c.tie_embeddings ? "1" : "0");
  // The training data's tokenizer travels with the model, so that eval decodes with it.
  absl::StatusOr<std::unique_ptr<data::Tokenizer>> tokenizer =
      data::LoadTokenizer(loaded->recipe.data.tokenizer);
  if (!tokenizer.ok()) return tokenizer.status();
  for (const auto& [key, value] : (*tokenizer)->Metadata()) w.SetMetadata(key, value);
  w.SetMetadata("qat.source_checkpoint", loaded->checkpoint);

  ExportReport report;
  report.checkpoint = loaded->checkpoint;
  // Embedding and LM head as the forward pass sees them (dequantized when fake-quantized).
  AddF32(w, "model.embed_tokens.weight", model->EmbeddingWeight());
  if (!c.tie_embeddings) AddF32(w, "lm_head.weight", model->LmHeadWeight());
  AddF32(w, "model.norm.weight", model->model->norm->weight);
  report.dense_tensors += c.tie_embeddings ? 2 : 3;

  std::map<std::string, QuantizedWeight> quantized;
  for (QuantizedWeight& q : QuantizedWeights(model)) quantized[q.name] = q;
  bool version2 = false;  // anything beyond version 1 (ternary2 linears only) in the file
  for (int64_t i = 0; i < c.num_layers; ++i) {
    auto layer = model->model->layers[i]->as<DecoderLayer>();
    const std::string prefix = absl::StrCat("model.layers.", i, ".");
    AddF32(w, prefix + "input_layernorm.weight", layer->input_layernorm->weight);
    AddF32(w, prefix + "post_attention_layernorm.weight", layer->post_attention_layernorm->weight);
    report.dense_tensors += 2;
    for (auto& [suffix, linear] : BlockLinears(model, i)) {
      const std::string name = prefix + suffix + ".weight";
      if (linear->bias.defined()) {
        AddF32(w, name + ".bias", linear->bias);
        version2 = true;
      }
      auto q = quantized.find(name);
      LinearStorage stored;
      if (q == quantized.end()) {
        stored = {"f32", AddF32(w, name, linear->weight)};
      } else {
        stored = AddQuantizedLinear(w, name, q->second, options);
        version2 |= stored.format != "ternary2" || q->second.quantizer->spec().int8_activations;
        report.quantized_linear_weights += linear->weight.numel();
        report.quantized_linear_bits += 8 * stored.bytes;
      }
      report.linear_weights += linear->weight.numel();
      report.linear_bits += 8 * stored.bytes;
      const std::string& format = stored.format;
      ++report.linears_by_format[format];
      if (format == "f32") {
        ++report.dense_tensors;
        if (q != quantized.end()) ++report.dense_quantized;
      } else {
        ++report.packed_tensors;
        report.packed_weights += linear->weight.numel();
      }
    }
  }
  w.SetMetadata("qat.version", version2 ? "2" : "1");
  for (const auto& p : model->parameters()) report.fp32_bytes += p.numel() * 4;
  const std::string bytes = w.Serialize();
  report.file_bytes = static_cast<int64_t>(bytes.size());
  absl::Status s = kernels::WriteFileAtomic(out_path, bytes);
  if (!s.ok()) return s;
  return report;
}

}  // namespace qat::trainer
