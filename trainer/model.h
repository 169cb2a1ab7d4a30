// The LLaMA-family decoder in libtorch, with fake-quantized linears.
//
// Parameter names are those of Hugging Face LLaMA (model.layers.N.self_attn.q_proj.weight, ...),
// so checkpoints, exports and imports share one naming. The math is written out in
// kernels/runtime.h; the packed runtime computes the same function.
// Attention is written with plain matmul + softmax (not a fused kernel) because the smoothness
// regularizer needs double backward through it.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/types.h>

#include "quant/quantizer.h"
#include "trainer/recipe.h"

namespace qat::trainer {

// A linear layer whose weight goes through a fake quantizer (when one is set), and whose input
// goes through int8 per-token fake quantization when the quantizer asks for it.
class QLinearImpl : public torch::nn::Module {
 public:
  // bias: add a learned [out] bias (never quantized; Qwen2's q/k/v projections have one).
  QLinearImpl(int64_t in, int64_t out, std::shared_ptr<quant::WeightQuantizer> quantizer,
              bool bias = false);
  torch::Tensor forward(const torch::Tensor& x);
  // The weight the forward pass multiplies by (fake-quantized or latent).
  torch::Tensor effective_weight();
  const std::shared_ptr<quant::WeightQuantizer>& quantizer() const { return quantizer_; }
  // Sets the quantizer (while the model is built). One with a learned scale registers the
  // parameter "weight_scale" (1-D, quantizer->ScaleShape), 1 until InitWeights,
  // InitQuantizerScales or a checkpoint gives it its value.
  void SetQuantizer(std::shared_ptr<quant::WeightQuantizer> quantizer);
  // Multiplies in this dtype (e.g. bf16) and returns the input's dtype: mixed precision that
  // works the same on libtorch 1.13 and 2.x, without depending on the autocast API.
  // Unset: the input's own dtype.
  void set_compute_dtype(std::optional<torch::Dtype> dtype) { compute_dtype_ = dtype; }
  torch::Tensor weight;
  torch::Tensor bias;  // [out]; undefined when the layer has none
  torch::Tensor weight_scale;  // the stored quantizer scale; undefined unless there is one
  // When set, forward calls it with the layer's input and with the input it multiplies (the
  // same tensor unless int8 activations): post-training quantization (ptq/) collects its
  // calibration statistics through it.
  std::function<void(const torch::Tensor& input, const torch::Tensor& multiplied)> input_observer;

 private:
  std::shared_ptr<quant::WeightQuantizer> quantizer_;
  std::optional<torch::Dtype> compute_dtype_;
};
TORCH_MODULE(QLinear);

class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t dim, double eps);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor weight;

 private:
  double eps_;
};
TORCH_MODULE(RMSNorm);

class AttentionImpl : public torch::nn::Module {
 public:
  AttentionImpl(const ModelConfig& c, const std::shared_ptr<quant::WeightQuantizer>& q);
  // x: [B, T, hidden]; cos/sin: [T, head_dim]
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin);
  QLinear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};

 private:
  int64_t num_heads_, num_kv_heads_, head_dim_;
};
TORCH_MODULE(Attention);

class MlpImpl : public torch::nn::Module {
 public:
  MlpImpl(const ModelConfig& c, const std::shared_ptr<quant::WeightQuantizer>& q);
  torch::Tensor forward(const torch::Tensor& x);
  QLinear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
};
TORCH_MODULE(Mlp);

class DecoderLayerImpl : public torch::nn::Module {
 public:
  DecoderLayerImpl(const ModelConfig& c, const std::shared_ptr<quant::WeightQuantizer>& q);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin);
  Attention self_attn{nullptr};
  Mlp mlp{nullptr};
  RMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
};
TORCH_MODULE(DecoderLayer);

// The decoder stack: embed_tokens, layers, norm (HF's LlamaModel).
class LlamaModelImpl : public torch::nn::Module {
 public:
  LlamaModelImpl(const ModelConfig& c, const std::shared_ptr<quant::WeightQuantizer>& q);
  torch::nn::Embedding embed_tokens{nullptr};
  torch::nn::ModuleList layers{nullptr};
  RMSNorm norm{nullptr};
};
TORCH_MODULE(LlamaModel);

// What a forward pass records (distillation, the smoothness regularizer at block inputs).
struct BlockTrace {
  std::vector<torch::Tensor> inputs;   // the input of each block (inputs[0]: the embeddings)
  std::vector<torch::Tensor> outputs;  // the output of each block (before the final norm)
};

// A fake-quantized weight of a model, with its name and learned scale (undefined if none).
struct QuantizedWeight {
  std::string name;  // e.g. "model.layers.0.mlp.up_proj.weight"
  torch::Tensor weight, scale;
  std::shared_ptr<quant::WeightQuantizer> quantizer;
};

// LlamaModel plus the LM head (HF's LlamaForCausalLM).
class CausalLMImpl : public torch::nn::Module {
 public:
  // quant: the recipe's quant section; method none gives the full-precision model. Each block
  // linear gets the quantizer of LayerQuantConfig(quant, its weight name); so do the LM head
  // (quant.lm_head) and the embedding (quant.embeddings), never with int8 activations.
  // BuildModel checks the recipe first; constructing directly with a bad one throws.
  CausalLMImpl(const ModelConfig& c, const QuantConfig& quant);
  // tokens: [B, T] int64 -> logits [B, T, vocab]
  torch::Tensor forward(const torch::Tensor& tokens);
  // The embedding lookup, and the rest of the model from given input embeddings (so that the
  // gradient with respect to the embeddings can be taken).
  torch::Tensor Embed(const torch::Tensor& tokens);
  // trace (optional) records each block's input and output; input_offsets (optional, one per
  // block) are added to each block's input, offsets[0] to the embeddings (finite differences of
  // the smoothness regularizer at block inputs).
  torch::Tensor ForwardFromEmbeddings(const torch::Tensor& embeddings, BlockTrace* trace = nullptr,
                                      const std::vector<torch::Tensor>* input_offsets = nullptr);
  // Block `layer` alone, on its input x [B, T, hidden] (post-training quantization runs the
  // model one block at a time).
  torch::Tensor ForwardBlock(int64_t layer, const torch::Tensor& x);
  // The embedding / LM-head weights as the forward pass uses them.
  torch::Tensor EmbeddingWeight();
  torch::Tensor LmHeadWeight();

  const ModelConfig& config() const { return config_; }
  // Compute dtype of every linear layer (the LM head included); unset: the activations' dtype.
  void SetComputeDtype(std::optional<torch::Dtype> dtype);
  const QuantConfig& quant() const { return quant_; }
  // The embedding's fake quantizer (null unless quant.embeddings).
  const std::shared_ptr<quant::WeightQuantizer>& embedding_quantizer() const {
    return embed_quantizer_;
  }
  // How a decoder block is applied: (layer index, the block, x, cos, sin) -> block output.
  // Unset: a plain call. Sharded training (FSDP) sets it to gather the block's parameters
  // around the call; see trainer/sharding.h.
  using LayerRunner = std::function<torch::Tensor(int64_t, DecoderLayerImpl&, const torch::Tensor&,
                                                  const torch::Tensor&, const torch::Tensor&)>;
  void SetLayerRunner(LayerRunner runner) { layer_runner_ = std::move(runner); }
  LlamaModel model{nullptr};
  QLinear lm_head{nullptr};  // null when tied

 private:
  ModelConfig config_;
  QuantConfig quant_;
  std::shared_ptr<quant::WeightQuantizer> embed_quantizer_;
  torch::Tensor embed_scale_;  // model.embed_tokens.weight_scale, when learned
  std::optional<torch::Dtype> compute_dtype_;
  LayerRunner layer_runner_;
  torch::Tensor rope_cos_, rope_sin_;  // [max_seq_len, head_dim], buffers (not saved)
};
TORCH_MODULE(CausalLM);

// Builds the model from a recipe; errors name the bad quant key.
absl::StatusOr<CausalLM> BuildModel(const ModelConfig& model, const QuantConfig& quant);
// The seven linears of decoder block `layer`, in forward order (q, k, v, o, gate, up, down), with
// their names within the block ("self_attn.q_proj", ...).
std::vector<std::pair<std::string, QLinear>> BlockLinears(CausalLM& model, int64_t layer);
// Every fake-quantized weight of the model (block linears, LM head, embedding), in model order.
std::vector<QuantizedWeight> QuantizedWeights(CausalLM& model);
// Sets every learned quantizer scale to the papers' initial value for the current weights.
void InitQuantizerScales(CausalLM& model);
// For weights from a checkpoint without learned scales (QAT initialised from a full-precision
// model, model.init_from): adds NAME.weight_scale = the initial scale of tensors[NAME.weight]
// for every learned scale of `model` that `tensors` lacks.
void AddInitialQuantizerScales(CausalLM& model, std::map<std::string, torch::Tensor>* tensors);
// Initialises every weight deterministically from `seed` (normal(0, std), norms = 1), then the
// learned quantizer scales from those weights.
void InitWeights(CausalLM& model, uint64_t seed, double std);

}  // namespace qat::trainer
