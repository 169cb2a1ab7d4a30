// Internal to the packed runtime (runtime.cc, runtime_load.cc and the CUDA runtime): the weights
// of a loaded model in host memory, as the loader checked them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/intk_int8.h"
#include "kernels/runtime.h"
#include "kernels/safetensors.h"

namespace qat::kernels {

class ThreadPool;

// A linear layer y = x W^T (+ bias) with W of logical shape [out, in], stored as `packing` says
// (runtime.h); only the vectors of its storage are filled.
struct Linear {
  int64_t out = 0, in = 0;
  LinearPacking packing;
  std::vector<float> dense;    // out x in, kDense
  std::vector<uint8_t> codes;  // out x row bytes of the format, packed formats
  // ternary2 regrouped for the AVX-512 kernels (ternary_x16.h), which then replaces `codes`:
  // built at load on CPUs with AVX-512 for ternary2 linears with fp32 activations.
  std::vector<uint32_t> x16;
  // int2/int4 with int8 activations in 16-row tiles (intk_int8.h: integer dot products), which
  // then replaces `codes`, `scales` and `zeros`: built at load for the CPU.
  IntKX16Matrix intk_x16;
  std::vector<float> scales;  // ternary: 1 or out; int2/int4: out x groups
  std::vector<float> zeros;   // int2/int4: out x groups
  std::vector<float> bias;    // empty or out

  bool packed() const { return packing.format != LinearFormat::kDense; }
  int bits() const { return packing.format == LinearFormat::kInt2 ? 2 : 4; }  // int2/int4 only
  int64_t bytes() const;
  // x is m x in, y is m x out (row-major). Runs the CPU kernels of `isa` on `pool`.
  void Apply(const float* x, int64_t m, float* y, Isa isa, ThreadPool* pool) const;
};

struct Layer {
  std::vector<float> input_norm, post_attention_norm;
  Linear q, k, v, o, gate, up, down;
};

// The 7 linears of a layer: HF name suffix, member, and which config sizes give [out, in].
struct LinearSpec {
  const char* suffix;
  Linear Layer::*member;
  bool out_is_kv, in_is_intermediate, out_is_intermediate;
};
inline constexpr LinearSpec kLinearSpecs[] = {
    {"self_attn.q_proj.weight", &Layer::q, false, false, false},
    {"self_attn.k_proj.weight", &Layer::k, true, false, false},
    {"self_attn.v_proj.weight", &Layer::v, true, false, false},
    {"self_attn.o_proj.weight", &Layer::o, false, false, false},
    {"mlp.gate_proj.weight", &Layer::gate, false, false, true},
    {"mlp.up_proj.weight", &Layer::up, false, false, true},
    {"mlp.down_proj.weight", &Layer::down, false, true, false},
};
std::string LayerPrefix(int64_t layer);  // "model.layers.N."

struct ModelWeights {
  RuntimeConfig config;
  Linear embed;    // vocab x hidden, dense; also the output projection when tied
  Linear lm_head;  // empty when tied
  std::vector<Layer> layers;
  std::vector<float> final_norm;
  const Linear& output() const { return config.tie_embeddings ? embed : lm_head; }
};

// Reads every tensor of a packed export and checks it against the config (runtime.h).
absl::StatusOr<ModelWeights> LoadModelWeights(const SafetensorsFile& file);

// The RoPE angles of the n positions pos .. pos+n-1: cos and sin [n x head_dim/2] of
// p * theta^(-2j/head_dim), in double, then rounded (fp32 angles lose precision at large p).
// Every forward call computes the rows it rotates, for the CPU and the CUDA runtime alike: a table
// of qat.max_seq_len rows, sized by the file, let a 12 KB model claiming 2^24 positions allocate
// 128 GiB at load. The cost is n * head_dim/2 sin/cos pairs per call, shared by all layers.
void RopeRows(double theta, int64_t head_dim, int64_t pos, int64_t n, std::vector<float>* cos,
              std::vector<float>* sin);

}  // namespace qat::kernels
