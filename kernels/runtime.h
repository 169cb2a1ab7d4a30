// The packed-model runtime: runs a LLaMA-family model exported by `qat export` on our kernels
// (no libtorch), on the CPU or on a CUDA GPU, with a KV cache for generation.
//
// ===== Export file: format "qat-packed", version 2 (reads version 1 too) =====
// A safetensors file (layout in safetensors.h). All metadata values are strings; integers are
// decimal, floats anything absl::SimpleAtod reads.
//
// Config keys (both versions):
//   "format" = "qat-packed", "qat.version" = "2" (or "1", see below),
//   "qat.vocab_size", "qat.hidden_size", "qat.intermediate_size", "qat.num_layers",
//   "qat.num_heads", "qat.num_kv_heads", "qat.max_seq_len"   integers in [1, 2^24] (layers 4096),
//   "qat.rope_theta" (float > 0), "qat.rms_norm_eps" (float >= 0),
//   "qat.tie_embeddings" ("0"/"1"), "qat.bos_id", "qat.eos_id" (in [-1, vocab); -1 = none),
//   "qat.tokenizer" (non-empty, e.g. "byte").
//   hidden % heads == 0, heads % kv_heads == 0, head dim hidden/heads even.
//   Other keys (e.g. "qat.source_checkpoint") are ignored.
//
// Tensors, Hugging Face LLaMA names (all F32; F16/BF16/F64 are accepted and converted):
//   model.embed_tokens.weight [vocab, hidden]
//   model.layers.N.input_layernorm.weight, model.layers.N.post_attention_layernorm.weight [hidden]
//   model.norm.weight [hidden]
//   lm_head.weight [vocab, hidden]   absent iff qat.tie_embeddings = 1
//   the 7 linear weights of each layer N, NAME = model.layers.N.self_attn.{q,k,v,o}_proj.weight
//   or model.layers.N.mlp.{gate,up,down}_proj.weight, logical shape [out, in]:
//     q, o: [hidden, hidden]; k, v: [kv_heads * head_dim, hidden]; gate, up:
//     [intermediate, hidden]; down: [hidden, intermediate].
//   Every tensor in the file must be one of these (or one of the companions below).
//
// Per linear NAME, metadata "qat.quant.NAME" selects its storage:
//   absent       NAME F32 [out, in], row-major.
//   "ternary2"   NAME U8 [out, TernaryRowBytes(in)] (ceil(in/128)*32 bytes a row; layout in
//                ternary.h) + NAME.scale F32 [1] (per tensor) or [out] (per row).
//                w[r][c] = scale[0 or r] * t[r][c].
//   "ternary3"   NAME U8 [out, Ternary3RowBytes(in)] (ceil(in/160)*32 bytes a row; layout in
//                lowbit.h) + NAME.scale F32 [1] or [out], as ternary2.
//   "int2"/"int4"  NAME U8 [out, IntKRowBytes(bits, in)] (ceil(in/64)*16 bytes a row for int2,
//                ceil(in/32)*16 for int4; layout in lowbit.h) + NAME.scale F32 [out * G] and
//                NAME.zero F32 [out * G] (or either as [out, G]), G = ceil(in / group), index
//                r * G + c / group; metadata "qat.group.NAME" = "32", "64" or "128" (required).
//                w[r][c] = scale[g] * (float(q[r][c]) - zero[g]).
//   Packed data must pass the format's Validate* (no code 3 in ternary2, no byte above 242 in
//   ternary3, padding codes as documented); scales and zeros must be finite.
// Metadata "qat.act.NAME" = "int8" (any storage): the activations entering this linear are
//   quantized per token (row) as in lowbit.h: xscale = absmax/127, q = round_half_even(x * (127 /
//   absmax)) in [-127, 127] (an all-zero row gives xscale 0, a non-finite one NaN). Then
//     ternary2:        y[r] = (scale(r) * xscale) * float(sum_c t[r][c] * q[c]), the sum exact;
//     other storages:  x'[c] = xscale * float(q[c]) (one fp32 multiplication), then the fp32
//                      product with x'.
//   Mathematically both are sum_c w[r][c] * xscale * q[c], the W1.58A8 fake-quantized layer.
//   Absent: fp32 activations.
// Optional tensor NAME.bias F32 [out]: added to y after the product and its scaling (Qwen2-style
//   attention biases); must be finite.
// Keys "qat.quant.*", "qat.group.*" and "qat.act.*" must name a linear weight of this model;
// "qat.group.NAME" is only allowed (and required) for int2/int4.
//
// Version 1 files (written before int formats existed) are read unchanged: their only per-linear
// key is "qat.quant.NAME" = "ternary2" and they have no bias tensors; a version 1 file using any
// other format, "qat.group.*", "qat.act.*" or a bias is refused (it would need version 2).
//
// ===== The model math (trainer/model.cc computes the same in libtorch) =====
//   h = embed[token]
//   per layer: a = rmsnorm(h) * input_layernorm; q,k,v = lin_q(a), lin_k(a), lin_v(a) split in
//     heads of size hd = hidden/num_heads; RoPE on q and k ("rotate half": for i < hd/2,
//     f = theta^(-2i/hd), (x_i, x_{i+hd/2}) -> (x_i cos(p f) - x_{i+hd/2} sin(p f),
//     x_{i+hd/2} cos(p f) + x_i sin(p f)) at position p); causal softmax(q.k / sqrt(hd)) v,
//     query head j reads kv head j / (num_heads/num_kv_heads); h += lin_o(attn);
//     m = rmsnorm(h) * post_attention_layernorm; h += lin_down(silu(lin_gate(m)) * lin_up(m))
//   logits = (rmsnorm(h) * norm) Wlm^T (Wlm = embed when tied)
//   rmsnorm(x) = x / sqrt(mean(x^2) + eps); lin(x) = the per-linear product above (+ bias).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/ternary.h"

namespace qat::kernels {

class SafetensorsFile;

// The newest "qat.version" the runtime writes and reads; it also reads every older one.
inline constexpr int kPackedFormatVersion = 2;

struct RuntimeConfig {
  int64_t vocab_size = 0, hidden_size = 0, intermediate_size = 0, num_layers = 0;
  int64_t num_heads = 0, num_kv_heads = 0, max_seq_len = 0;
  double rope_theta = 10000.0, rms_norm_eps = 1e-5;
  bool tie_embeddings = false;
  int64_t bos_id = -1, eos_id = -1;
  std::string tokenizer;
  int version = kPackedFormatVersion;  // "qat.version" of the file
};

// How one linear weight is stored ("qat.quant.NAME", "qat.group.NAME", "qat.act.NAME").
enum class LinearFormat { kDense, kTernary2, kTernary3, kInt2, kInt4 };
const char* LinearFormatName(LinearFormat f);  // "f32", "ternary2", "ternary3", "int2", "int4"
struct LinearPacking {
  LinearFormat format = LinearFormat::kDense;
  int64_t group = 0;      // int2/int4 only: 32, 64 or 128
  bool act_int8 = false;  // "qat.act.NAME" = "int8"
};

// Reads and checks the config keys of a packed export (see above). Errors name the file and key.
absl::StatusOr<RuntimeConfig> ParsePackedConfig(const SafetensorsFile& file);
// Reads and checks the per-linear keys of a packed export: the packing of every linear weight
// name that has one (names without an entry are dense fp32 with fp32 activations).
absl::StatusOr<std::map<std::string, LinearPacking>> ParsePackedLinearKeys(
    const SafetensorsFile& file, const RuntimeConfig& config);

// Where a model runs: the CPU kernels, or the CUDA kernels (kernels/cuda/) on GPU 0.
enum class Device { kCpu, kCuda };
const char* DeviceName(Device d);  // "cpu", "cuda"
// Whether this build has the CUDA runtime and a GPU is visible (false without either).
bool CudaDeviceAvailable();

class PackedModel;
namespace cuda {
class GpuSession;
}

// One decoding stream: a KV cache and the position of the next token. Move-only.
class Session {
 public:
  Session();
  ~Session();
  Session(Session&&) noexcept;
  Session& operator=(Session&&) noexcept;
  // Appends n tokens at positions pos()..pos()+n-1 and returns the logits of rows
  // logits_from..n-1, (n - logits_from) x vocab, row-major. The rows before logits_from only
  // extend the cache: the last layer computes their keys and values and nothing else, and the LM
  // head skips them (a prompt before sampling needs its last row; a scored continuation, its own).
  // Fails (without changing the cache) if the cache would exceed max_seq_len, a token id is out of
  // range or logits_from is outside [0, n).
  absl::StatusOr<std::vector<float>> Forward(const int32_t* tokens, int64_t n,
                                             int64_t logits_from = 0);
  int64_t pos() const { return pos_; }
  void Reset() { pos_ = 0; }

 private:
  friend class PackedModel;
  const PackedModel* model_ = nullptr;
  int64_t pos_ = 0;
  std::vector<std::vector<float>> k_cache_, v_cache_;  // CPU: per layer, max_seq_len x kv_dim
  std::unique_ptr<cuda::GpuSession> gpu_;              // GPU: the device-side cache
};

class PackedModel {
 public:
  // threads: worker threads for the CPU kernels (<= 0: all cores). isa: CPU kernels to use.
  // device: where Session::Forward runs; kCuda copies the weights to GPU 0 (ternary3 is repacked
  // losslessly as ternary2 there) and fails when the build has no CUDA or no GPU is visible.
  static absl::StatusOr<std::unique_ptr<PackedModel>> Load(const std::string& path, int threads,
                                                           Isa isa, Device device = Device::kCpu);
  ~PackedModel();
  const RuntimeConfig& config() const;
  Device device() const;
  Session NewSession() const;
  // Bytes of weights held (packed + full precision, as in the file) and how many linears are
  // packed (any low-bit format) or dense.
  int64_t weight_bytes() const;
  int64_t packed_linears() const;
  int64_t dense_linears() const;
  // Linears per storage, e.g. "14 ternary2 + 2 int4 + 0 f32" order: ternary2, ternary3, int2,
  // int4, f32; and how many use int8 activations.
  std::string LinearSummary() const;

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
