#include "trainer/model.h"

#include <torch/torch.h>

#include <cmath>
#include <map>

#include "absl/strings/str_cat.h"
#include "trainer/rope.h"

namespace qat::trainer {

QLinearImpl::QLinearImpl(int64_t in, int64_t out, std::shared_ptr<quant::WeightQuantizer> quantizer,
                         bool bias) {
  weight = register_parameter("weight", torch::empty({out, in}));
  if (bias) this->bias = register_parameter("bias", torch::zeros({out}));
  SetQuantizer(std::move(quantizer));
}

void QLinearImpl::SetQuantizer(std::shared_ptr<quant::WeightQuantizer> quantizer) {
  TORCH_CHECK(!weight_scale.defined(), "QLinear: the quantizer is set once");
  quantizer_ = std::move(quantizer);
  if (!quantizer_ || !quantizer_->spec().stored_scale()) return;
  weight_scale = register_parameter(
      "weight_scale", torch::ones(quantizer_->ScaleShape(weight.size(0), weight.size(1))));
}

torch::Tensor QLinearImpl::effective_weight() {
  return quantizer_ ? quantizer_->FakeQuant(weight, weight_scale) : weight;
}

torch::Tensor QLinearImpl::forward(const torch::Tensor& input) {
  const torch::Tensor x = quantizer_ && quantizer_->spec().int8_activations
                              ? quant::FakeQuantActivationsInt8(input)
                              : input;
  if (input_observer) input_observer(input, x);
  torch::Tensor y =
      !compute_dtype_ || *compute_dtype_ == x.scalar_type()
          ? torch::matmul(x, effective_weight().t())
          : torch::matmul(x.to(*compute_dtype_), effective_weight().to(*compute_dtype_).t())
                .to(x.scalar_type());
  return bias.defined() ? y + bias.to(y.scalar_type()) : y;
}

RMSNormImpl::RMSNormImpl(int64_t dim, double eps) : eps_(eps) {
  weight = register_parameter("weight", torch::ones({dim}));
}

namespace {
// Half types are computed in fp32; fp32 and fp64 stay as they are (tests run in fp64).
torch::Tensor AtLeastFloat(const torch::Tensor& x) {
  return (x.scalar_type() == torch::kBFloat16 || x.scalar_type() == torch::kHalf)
             ? x.to(torch::kFloat32)
             : x;
}
}  // namespace

torch::Tensor RMSNormImpl::forward(const torch::Tensor& x) {
  torch::Tensor x32 = AtLeastFloat(x);
  torch::Tensor normed = x32 * torch::rsqrt(x32.pow(2).mean(-1, /*keepdim=*/true) + eps_);
  return normed.to(x.scalar_type()) * weight;
}

AttentionImpl::AttentionImpl(const ModelConfig& c, const std::shared_ptr<quant::WeightQuantizer>& q)
    : num_heads_(c.num_heads),
      num_kv_heads_(c.num_kv_heads),
      head_dim_(c.hidden_size / c.num_heads) {
  const int64_t kv_dim = num_kv_heads_ * head_dim_;
  q_proj = register_module("q_proj", QLinear(c.hidden_size, c.hidden_size, q, c.attention_bias));
  k_proj = register_module("k_proj", QLinear(c.hidden_size, kv_dim, q, c.attention_bias));
  v_proj = register_module("v_proj", QLinear(c.hidden_size, kv_dim, q, c.attention_bias));
  o_proj = register_module("o_proj", QLinear(c.hidden_size, c.hidden_size, q));
}

torch::Tensor AttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& cos,
                                     const torch::Tensor& sin) {
  const int64_t B = x.size(0), T = x.size(1);
  // RoPE on [B, T, heads, head_dim], where the projections' rows are contiguous (ApplyRope).
  torch::Tensor q =
      ApplyRope(q_proj(x).view({B, T, num_heads_, head_dim_}), cos, sin).transpose(1, 2);
  torch::Tensor k =
      ApplyRope(k_proj(x).view({B, T, num_kv_heads_, head_dim_}), cos, sin).transpose(1, 2);
  torch::Tensor v = v_proj(x).view({B, T, num_kv_heads_, head_dim_}).transpose(1, 2);
  if (num_kv_heads_ != num_heads_) {
    // Query head j reads key/value head j / (num_heads / num_kv_heads).
    k = k.repeat_interleave(num_heads_ / num_kv_heads_, /*dim=*/1);
    v = v.repeat_interleave(num_heads_ / num_kv_heads_, /*dim=*/1);
  }
  torch::Tensor scores = torch::matmul(q, k.transpose(-2, -1)) / std::sqrt(double(head_dim_));
  torch::Tensor causal =
      torch::ones({T, T}, torch::TensorOptions().dtype(torch::kBool).device(x.device())).triu(1);
  scores = scores.masked_fill(causal, -std::numeric_limits<float>::infinity());
  torch::Tensor probs = torch::softmax(AtLeastFloat(scores), -1).to(q.scalar_type());
  torch::Tensor out = torch::matmul(probs, v).transpose(1, 2).reshape({B, T, num_heads_ * head_dim_});
  return o_proj(out);
}

MlpImpl::MlpImpl(const ModelConfig& c, const std::shared_ptr<quant::WeightQuantizer>& q) {
  gate_proj = register_module("gate_proj", QLinear(c.hidden_size, c.intermediate_size, q));
  up_proj = register_module("up_proj", QLinear(c.hidden_size, c.intermediate_size, q));
  down_proj = register_module("down_proj", QLinear(c.intermediate_size, c.hidden_size, q));
}

torch::Tensor MlpImpl::forward(const torch::Tensor& x) {
  return down_proj(torch::silu(gate_proj(x)) * up_proj(x));
}

DecoderLayerImpl::DecoderLayerImpl(const ModelConfig& c,
                                   const std::shared_ptr<quant::WeightQuantizer>& q) {
  self_attn = register_module("self_attn", Attention(c, q));
  mlp = register_module("mlp", Mlp(c, q));
  input_layernorm = register_module("input_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps));
  post_attention_layernorm =
      register_module("post_attention_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps));
}

torch::Tensor DecoderLayerImpl::forward(const torch::Tensor& x, const torch::Tensor& cos,
                                        const torch::Tensor& sin) {
  torch::Tensor h = x + self_attn(input_layernorm(x), cos, sin);
  return h + mlp(post_attention_layernorm(h));
}

LlamaModelImpl::LlamaModelImpl(const ModelConfig& c,
                               const std::shared_ptr<quant::WeightQuantizer>& q) {
  embed_tokens = register_module(
      "embed_tokens", torch::nn::Embedding(torch::nn::EmbeddingOptions(c.vocab_size, c.hidden_size)));
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.num_layers; ++i) layers->push_back(DecoderLayer(c, q));
  norm = register_module("norm", RMSNorm(c.hidden_size, c.rms_norm_eps));
}

namespace {

// The quantizer of every weight the recipe quantizes, by weight name; errors name the key.
using QuantPlan = std::map<std::string, std::shared_ptr<quant::WeightQuantizer>>;
absl::StatusOr<QuantPlan> PlanQuantizers(const ModelConfig& c, const QuantConfig& quant) {
  struct Candidate {
    std::string name;
    int64_t out, in;
    bool block;  // a block linear: int8 activations apply
  };
  std::vector<Candidate> candidates;
  const int64_t kv_dim = c.num_kv_heads * (c.hidden_size / c.num_heads);
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    candidates.push_back({p + "self_attn.q_proj.weight", c.hidden_size, c.hidden_size, true});
    candidates.push_back({p + "self_attn.k_proj.weight", kv_dim, c.hidden_size, true});
    candidates.push_back({p + "self_attn.v_proj.weight", kv_dim, c.hidden_size, true});
    candidates.push_back({p + "self_attn.o_proj.weight", c.hidden_size, c.hidden_size, true});
    candidates.push_back({p + "mlp.gate_proj.weight", c.intermediate_size, c.hidden_size, true});
    candidates.push_back({p + "mlp.up_proj.weight", c.intermediate_size, c.hidden_size, true});
    candidates.push_back({p + "mlp.down_proj.weight", c.hidden_size, c.intermediate_size, true});
  }
  if (quant.lm_head && !c.tie_embeddings) {
    candidates.push_back({"lm_head.weight", c.vocab_size, c.hidden_size, false});
  }
  if (quant.embeddings) {
    candidates.push_back({"model.embed_tokens.weight", c.vocab_size, c.hidden_size, false});
  }
  QuantPlan plan;
  for (const Candidate& cand : candidates) {
    std::string prefix;
    const QuantConfig layer = LayerQuantConfig(quant, cand.name, &prefix);
    if (layer.method == "none") continue;
    absl::StatusOr<quant::QuantSpec> spec = quant::MakeQuantSpec(ToQuantWords(layer), prefix);
    if (!spec.ok()) return spec.status();
    if (!cand.block) spec->int8_activations = false;
    auto q = std::make_shared<quant::WeightQuantizer>(*spec);
    absl::Status s = q->CheckShape(cand.name, prefix + "group_size", cand.out, cand.in);
    if (!s.ok()) return s;
    plan[cand.name] = std::move(q);
  }
  return plan;
}

}  // namespace

CausalLMImpl::CausalLMImpl(const ModelConfig& c, const QuantConfig& quant)
    : config_(c), quant_(quant) {
  absl::StatusOr<QuantPlan> plan = PlanQuantizers(c, quant);
  TORCH_CHECK(plan.ok(), std::string(plan.status().message()));
  model = register_module("model", LlamaModel(c, nullptr));
  if (!c.tie_embeddings) {
    lm_head = register_module("lm_head", QLinear(c.hidden_size, c.vocab_size, nullptr));
  }
  for (const auto& item : named_modules(/*name_prefix=*/"", /*include_self=*/false)) {
    auto* linear = item.value()->as<QLinearImpl>();
    auto it = plan->find(item.key() + ".weight");
    if (linear != nullptr && it != plan->end()) linear->SetQuantizer(it->second);
  }
  if (auto it = plan->find("model.embed_tokens.weight"); it != plan->end()) {
    embed_quantizer_ = it->second;
    if (embed_quantizer_->spec().stored_scale()) {
      embed_scale_ = model->embed_tokens->register_parameter(
          "weight_scale", torch::ones(embed_quantizer_->ScaleShape(c.vocab_size, c.hidden_size)));
    }
  }
  // RoPE tables: angle(p, i) = p * theta^(-2i/hd), duplicated over the two halves.
  const int64_t hd = c.hidden_size / c.num_heads;
  torch::Tensor inv_freq =
      torch::pow(c.rope_theta, -torch::arange(0, hd, 2, torch::kFloat64) / double(hd));
  torch::Tensor angles = torch::outer(torch::arange(c.max_seq_len, torch::kFloat64), inv_freq);
  angles = torch::cat({angles, angles}, -1);
  rope_cos_ = register_buffer("rope_cos", angles.cos().to(torch::kFloat32));
  rope_sin_ = register_buffer("rope_sin", angles.sin().to(torch::kFloat32));
}

void CausalLMImpl::SetComputeDtype(std::optional<torch::Dtype> dtype) {
  for (const auto& m : modules(/*include_self=*/false)) {
    if (auto* linear = m->as<QLinearImpl>()) linear->set_compute_dtype(dtype);
  }
  compute_dtype_ = dtype;
}

torch::Tensor CausalLMImpl::EmbeddingWeight() {
  torch::Tensor w = model->embed_tokens->weight;
  return embed_quantizer_ ? embed_quantizer_->FakeQuant(w, embed_scale_) : w;
}

torch::Tensor CausalLMImpl::LmHeadWeight() {
  return lm_head ? lm_head->effective_weight() : EmbeddingWeight();
}

torch::Tensor CausalLMImpl::Embed(const torch::Tensor& tokens) {
  return torch::nn::functional::embedding(tokens, EmbeddingWeight());
}

torch::Tensor CausalLMImpl::ForwardFromEmbeddings(const torch::Tensor& embeddings,
                                                  BlockTrace* trace,
                                                  const std::vector<torch::Tensor>* input_offsets) {
  const int64_t T = embeddings.size(1);
  torch::Tensor cos = rope_cos_.narrow(0, 0, T).to(embeddings.scalar_type());
  torch::Tensor sin = rope_sin_.narrow(0, 0, T).to(embeddings.scalar_type());
  torch::Tensor h = embeddings;
  for (size_t i = 0; i < model->layers->size(); ++i) {
    DecoderLayerImpl& layer = *model->layers[i]->as<DecoderLayer>();
    if (input_offsets != nullptr) h = h + (*input_offsets)[i];
    if (trace != nullptr) trace->inputs.push_back(h);
    h = layer_runner_ ? layer_runner_(int64_t(i), layer, h, cos, sin) : layer.forward(h, cos, sin);
    if (trace != nullptr) trace->outputs.push_back(h);
  }
  h = model->norm(h);
  if (!compute_dtype_ || *compute_dtype_ == h.scalar_type()) {
    return torch::matmul(h, LmHeadWeight().t());
  }
  return torch::matmul(h.to(*compute_dtype_), LmHeadWeight().to(*compute_dtype_).t())
      .to(h.scalar_type());
}

torch::Tensor CausalLMImpl::ForwardBlock(int64_t layer, const torch::Tensor& x) {
  const int64_t T = x.size(1);
  torch::Tensor cos = rope_cos_.narrow(0, 0, T).to(x.scalar_type());
  torch::Tensor sin = rope_sin_.narrow(0, 0, T).to(x.scalar_type());
  return model->layers[layer]->as<DecoderLayer>()->forward(x, cos, sin);
}

torch::Tensor CausalLMImpl::forward(const torch::Tensor& tokens) {
  return ForwardFromEmbeddings(Embed(tokens));
}

absl::StatusOr<CausalLM> BuildModel(const ModelConfig& model, const QuantConfig& quant) {
  if (model.max_seq_len < 1 || model.hidden_size % model.num_heads != 0 ||
      model.num_heads % model.num_kv_heads != 0) {
    return absl::InvalidArgumentError("model: inconsistent head counts");
  }
  absl::StatusOr<QuantPlan> plan = PlanQuantizers(model, quant);
  if (!plan.ok()) return plan.status();
  return CausalLM(model, quant);
}

std::vector<std::pair<std::string, QLinear>> BlockLinears(CausalLM& model, int64_t layer) {
  auto block = model->model->layers[layer]->as<DecoderLayer>();
  return {{"self_attn.q_proj", block->self_attn->q_proj},
          {"self_attn.k_proj", block->self_attn->k_proj},
          {"self_attn.v_proj", block->self_attn->v_proj},
          {"self_attn.o_proj", block->self_attn->o_proj},
          {"mlp.gate_proj", block->mlp->gate_proj},
          {"mlp.up_proj", block->mlp->up_proj},
          {"mlp.down_proj", block->mlp->down_proj}};
}

std::vector<QuantizedWeight> QuantizedWeights(CausalLM& model) {
  std::vector<QuantizedWeight> out;
  if (model->embedding_quantizer()) {
    torch::nn::EmbeddingImpl& embed = *model->model->embed_tokens;
    torch::Tensor* scale = embed.named_parameters(/*recurse=*/false).find("weight_scale");
    out.push_back({"model.embed_tokens.weight", embed.weight,
                   scale != nullptr ? *scale : torch::Tensor(), model->embedding_quantizer()});
  }
  for (const auto& item : model->named_modules(/*name_prefix=*/"", /*include_self=*/false)) {
    auto* linear = item.value()->as<QLinearImpl>();
    if (linear == nullptr || !linear->quantizer()) continue;
    out.push_back({item.key() + ".weight", linear->weight, linear->weight_scale,
                   linear->quantizer()});
  }
  return out;
}

void InitQuantizerScales(CausalLM& model) {
  torch::NoGradGuard no_grad;
  for (QuantizedWeight& q : QuantizedWeights(model)) {
    if (q.scale.defined()) q.scale.copy_(q.quantizer->InitScale(q.weight));
  }
}

void AddInitialQuantizerScales(CausalLM& model, std::map<std::string, torch::Tensor>* tensors) {
  torch::NoGradGuard no_grad;
  for (const QuantizedWeight& q : QuantizedWeights(model)) {
    if (!q.scale.defined()) continue;
    const std::string scale_name = q.name + "_scale";  // NAME.weight -> NAME.weight_scale
    auto weight = tensors->find(q.name);
    if (tensors->count(scale_name) > 0 || weight == tensors->end() || weight->second.dim() != 2 ||
        !weight->second.sizes().equals(q.weight.sizes())) {
      continue;  // present already, or the weight is missing: loading will say so
    }
    (*tensors)[scale_name] =
        q.quantizer->InitScale(weight->second).to(torch::kCPU, torch::kFloat32).contiguous();
  }
}

void InitWeights(CausalLM& model, uint64_t seed, double std) {
  torch::NoGradGuard no_grad;
  auto gen = at::detail::createCPUGenerator(seed);
  // Residual output projections are scaled down by sqrt(2 * layers) (GPT-2), so the residual
  // stream's variance does not grow with depth.
  const double residual_std = std / std::sqrt(2.0 * model->config().num_layers);
  for (auto& item : model->named_parameters()) {
    const std::string& name = item.key();
    torch::Tensor& p = item.value();
    if (name.size() > 5 && name.compare(name.size() - 5, 5, ".bias") == 0) {
      p.zero_();  // attention biases start at zero
    } else if (name.size() > 13 && name.compare(name.size() - 13, 13, ".weight_scale") == 0) {
      continue;  // learned quantizer scales: from the weights, below
    } else if (p.dim() == 1) {
      p.fill_(1.0);  // RMSNorm gains
    } else {
      const bool residual =
          name.find("o_proj") != std::string::npos || name.find("down_proj") != std::string::npos;
      p.normal_(0.0, residual ? residual_std : std, gen);
    }
  }
  InitQuantizerScales(model);
}

}  // namespace qat::trainer
