// The packed-model runtime: runs a LLaMA-family model exported by `qat export` on our kernels
// (no libtorch), with a KV cache for generation.
//
// Export file (a safetensors file, see safetensors.h), format "qat-packed" version 1:
//   __metadata__ (all values are decimal strings unless noted):
//     "format" = "qat-packed", "qat.version" = "1",
//     "qat.vocab_size", "qat.hidden_size", "qat.intermediate_size", "qat.num_layers",
//     "qat.num_heads", "qat.num_kv_heads", "qat.max_seq_len", "qat.rope_theta" (float),
//     "qat.rms_norm_eps" (float), "qat.tie_embeddings" ("0"/"1"), "qat.bos_id", "qat.eos_id",
//     "qat.tokenizer" ("byte"), and for each packed tensor NAME: "qat.quant.NAME" = "ternary2".
//   Tensors, Hugging Face LLaMA names:
//     model.embed_tokens.weight [vocab, hidden] F32
//     model.layers.N.input_layernorm.weight, model.layers.N.post_attention_layernorm.weight [hidden] F32
//     model.layers.N.self_attn.{q,k,v,o}_proj.weight, model.layers.N.mlp.{gate,up,down}_proj.weight
//     model.norm.weight [hidden] F32
//     lm_head.weight [vocab, hidden] F32 (absent when tie_embeddings = 1)
//   A linear weight of logical shape [out, in] is either F32 [out, in], or, when
//   "qat.quant.NAME" = "ternary2", U8 [out, TernaryRowBytes(in)] in the ternary2 layout of
//   ternary.h plus the tensor NAME + ".scale", F32 [1] (per tensor) or [out] (per row).
//   The logical `in` of a packed tensor is implied by the config (hidden or intermediate size).
//
// The model math, which trainer/model.cc computes identically in libtorch:
//   h = embed[token]
//   per layer: a = rmsnorm(h) * input_layernorm; q,k,v = a Wq^T, a Wk^T, a Wv^T split in heads of
//     size hd = hidden/num_heads; RoPE on q and k ("rotate half": for i < hd/2, f = theta^(-2i/hd),
//     (x_i, x_{i+hd/2}) -> (x_i cos(p f) - x_{i+hd/2} sin(p f), x_{i+hd/2} cos(p f) + x_i sin(p f))
//     at position p); causal softmax(q.k / sqrt(hd)) v, query head j reads kv head
//     j / (num_heads/num_kv_heads); h += attn Wo^T;
//     m = rmsnorm(h) * post_attention_layernorm; h += (silu(m Wg^T) * (m Wu^T)) Wd^T
//   logits = (rmsnorm(h) * norm) Wlm^T (Wlm = embed when tied)
//   rmsnorm(x) = x / sqrt(mean(x^2) + eps)
#pragma once

#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/ternary.h"

namespace qat::kernels {

struct RuntimeConfig {
  int64_t vocab_size = 0, hidden_size = 0, intermediate_size = 0, num_layers = 0;
  int64_t num_heads = 0, num_kv_heads = 0, max_seq_len = 0;
  double rope_theta = 10000.0, rms_norm_eps = 1e-5;
  bool tie_embeddings = false;
  int64_t bos_id = -1, eos_id = -1;
  std::string tokenizer;
};

class PackedModel;

// One decoding stream: a KV cache and the position of the next token.
class Session {
 public:
  // Appends n tokens at positions pos()..pos()+n-1 and returns their logits, n x vocab, row-major.
  // Fails (without changing the cache) if the cache would exceed max_seq_len or a token id is out
  // of range.
  absl::StatusOr<std::vector<float>> Forward(const int32_t* tokens, int64_t n);
  int64_t pos() const { return pos_; }
  void Reset() { pos_ = 0; }

 private:
  friend class PackedModel;
  const PackedModel* model_ = nullptr;
  int64_t pos_ = 0;
  std::vector<std::vector<float>> k_cache_, v_cache_;  // per layer, max_seq_len x kv_dim
};

class PackedModel {
 public:
  // threads: worker threads for the kernels (<= 0: all cores). isa: kernels to use.
  static absl::StatusOr<std::unique_ptr<PackedModel>> Load(const std::string& path, int threads,
                                                           Isa isa);
  ~PackedModel();
  const RuntimeConfig& config() const;
  Session NewSession() const;
  // Bytes of weights held (packed + full precision) and how many linears are packed.
  int64_t weight_bytes() const;
  int64_t packed_linears() const;
  int64_t dense_linears() const;

 private:
  friend class Session;
  PackedModel();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Samples a token from logits: temperature <= 0 means greedy (argmax, lowest id on ties);
// top_k > 0 keeps the k most likely tokens.
int32_t SampleToken(const float* logits, int64_t vocab, float temperature, int top_k,
                    std::mt19937_64& rng);

}  // namespace qat::kernels
