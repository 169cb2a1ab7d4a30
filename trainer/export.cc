#include "trainer/export.h"

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "data/tokens.h"
#include "kernels/safetensors.h"
#include "kernels/ternary.h"
#include "trainer/train.h"

namespace qat::trainer {
namespace {

void AddF32(kernels::SafetensorsWriter& w, const std::string& name, const torch::Tensor& t) {
  torch::Tensor c = t.detach().to(torch::kCPU, torch::kFloat32).contiguous();
  w.Add(name, kernels::DType::kF32, c.sizes().vec(), c.data_ptr<float>(), c.numel() * sizeof(float));
}

}  // namespace

absl::StatusOr<ExportReport> ExportPacked(const std::string& checkpoint, const std::string& out_path) {
  absl::StatusOr<LoadedModel> loaded = LoadModelFromCheckpoint(checkpoint);
  if (!loaded.ok()) return loaded.status();
  CausalLM& model = loaded->model;
  const ModelConfig& c = loaded->recipe.model;
  torch::NoGradGuard no_grad;

  kernels::SafetensorsWriter w;
  w.SetMetadata("format", "qat-packed");
  w.SetMetadata("qat.version", "1");
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
  w.SetMetadata("qat.bos_id", absl::StrCat(data::ByteTokenizer::kBos));
  w.SetMetadata("qat.eos_id", absl::StrCat(data::ByteTokenizer::kEos));
  w.SetMetadata("qat.tokenizer", "byte");
  w.SetMetadata("qat.source_checkpoint", loaded->checkpoint);

  ExportReport report;
  report.checkpoint = loaded->checkpoint;
  // Embedding and LM head as the forward pass sees them (dequantized when fake-quantized).
  AddF32(w, "model.embed_tokens.weight", model->EmbeddingWeight());
  if (!c.tie_embeddings) AddF32(w, "lm_head.weight", model->LmHeadWeight());
  AddF32(w, "model.norm.weight", model->model->norm->weight);
  report.dense_tensors += c.tie_embeddings ? 2 : 3;

  for (int64_t i = 0; i < c.num_layers; ++i) {
    auto layer = model->model->layers[i]->as<DecoderLayer>();
    const std::string prefix = absl::StrCat("model.layers.", i, ".");
    AddF32(w, prefix + "input_layernorm.weight", layer->input_layernorm->weight);
    AddF32(w, prefix + "post_attention_layernorm.weight", layer->post_attention_layernorm->weight);
    report.dense_tensors += 2;
    std::pair<const char*, QLinear> linears[] = {
        {"self_attn.q_proj", layer->self_attn->q_proj}, {"self_attn.k_proj", layer->self_attn->k_proj},
        {"self_attn.v_proj", layer->self_attn->v_proj}, {"self_attn.o_proj", layer->self_attn->o_proj},
        {"mlp.gate_proj", layer->mlp->gate_proj},       {"mlp.up_proj", layer->mlp->up_proj},
        {"mlp.down_proj", layer->mlp->down_proj}};
    for (auto& [suffix, linear] : linears) {
      const std::string name = prefix + suffix + ".weight";
      auto* ternary = dynamic_cast<const quant::TernaryQuantizer*>(linear->quantizer().get());
      if (ternary == nullptr) {
        AddF32(w, name, linear->effective_weight());
        ++report.dense_tensors;
        continue;
      }
      quant::TernaryParts parts = ternary->Decompose(linear->weight);
      torch::Tensor trits = parts.trits.contiguous();
      const int64_t rows = trits.size(0), cols = trits.size(1);
      std::vector<uint8_t> packed(static_cast<size_t>(rows * kernels::TernaryRowBytes(cols)));
      kernels::PackTernary(trits.data_ptr<int8_t>(), rows, cols, packed.data());
      w.Add(name, kernels::DType::kU8, {rows, kernels::TernaryRowBytes(cols)}, packed.data(),
            packed.size());
      AddF32(w, name + ".scale", parts.scale.reshape({-1}));
      w.SetMetadata("qat.quant." + name, "ternary2");
      ++report.packed_tensors;
      report.packed_weights += rows * cols;
    }
  }
  for (const auto& p : model->parameters()) report.fp32_bytes += p.numel() * 4;
  const std::string bytes = w.Serialize();
  report.file_bytes = static_cast<int64_t>(bytes.size());
  absl::Status s = kernels::WriteFileAtomic(out_path, bytes);
  if (!s.ok()) return s;
  return report;
}

}  // namespace qat::trainer
