// Conversion of a "qat-packed" export (kernels/runtime.h) to a GGUF v3 file that llama.cpp can
// load as a "llama" model (kernels/gguf.h has the byte layout).
//
// What goes where:
//   HF name (packed file)                          GGUF name                 GGUF type
//   model.embed_tokens.weight [vocab, hidden]      token_embd.weight         dense_type
//   model.norm.weight [hidden]                     output_norm.weight        F32
//   lm_head.weight [vocab, hidden] (if untied)     output.weight             dense_type
//   model.layers.N.input_layernorm.weight          blk.N.attn_norm.weight    F32
//   model.layers.N.post_attention_layernorm.weight blk.N.ffn_norm.weight     F32
//   model.layers.N.self_attn.{q,k,v,o}_proj.weight blk.N.attn_{q,k,v,output}.weight
//   model.layers.N.mlp.{gate,up,down}_proj.weight  blk.N.ffn_{gate,up,down}.weight
// Linear weights, by their packed storage (runtime.h); every packed format converts, and each
// GGUF weight equals the runtime's weight up to the fp16 rounding of the block constants:
//   ternary2, ternary3 -> ternary_type (TQ2_0 or TQ1_0): trits stored exactly, every block's
//     d = fp16(scale) of its tensor (per-tensor scale) or row (per-row scale).
//   int4, int2 (w = scale[g] * (q - zero[g]), groups of 32, 64 or 128 along the row) -> blocks of
//     32 weights, each inside one group since groups are multiples of 32, d = fp16(scale[g]):
//     Q4_0 (w = d * (q' - 8)) with q' = q + 8 - zero[g] when every zero point of the tensor is
//     an integer that keeps q' in 0..15 for every code q (int4: zero = 8, as the symmetric
//     quantizers of quant/quantizer.h write it; int2: -4..8, e.g. the symmetric zero = 2), so
//     the weight is exactly d * (q - zero); otherwise Q4_1 (w = d * q + m) with q as it is and
//     m = fp16(-scale[g] * zero[g]) (asymmetric groups, fractional zero points as seq's 7.5).
//     Q4_0 takes 4.5 bits per weight, Q4_1 5. int2 gets 4-bit codes too: ggml's 2-bit Q2_K
//     quantizes its per-16 scales and mins to 4 bits, which cannot hold fp32-trained ones.
//   f32 (no "qat.quant.NAME") -> dense_type.
// A ternary weight whose row length is not a multiple of 256, or an int weight whose row length
// is not a multiple of 32, falls back to dense_type (F16 unless asked otherwise), holding the
// runtime's values; the report says so. A Q8_0 tensor whose row length is not a multiple of 32
// falls back to F16 (also reported). A scale or m too large for fp16 (65520 and up) is an error,
// as is a scale that fp16 flushes to zero (below 2^-25), except in an int block whose weights are
// all 0 (q = zero): the symmetric quantizers give an all-zero group a scale of about 1e-9.
// Packed versions 1 and 2 are read, their per-linear keys checked as the runtime checks them.
// "qat.act.NAME" = "int8" keys are accepted and dropped: llama.cpp quantizes the activations of
// these products to 8 bits itself, per block (256 weights for TQ1_0/TQ2_0, 32 for Q4_0/Q4_1,
// as Q8_0/Q8_1), not per token.
// With tied embeddings no output.weight is written: llama.cpp then uses token_embd for the output.
// Optional biases NAME.bias F32 [out] of a linear NAME (runtime.h; e.g.
// model.layers.N.self_attn.q_proj.weight.bias, Qwen2 has q/k/v) become
// blk.N.attn_{q,k,v,output}.bias F32, q/k rows permuted like their weights.
//
// RoPE: qat (like Hugging Face) rotates the pairs (x_i, x_{i+hd/2}) of each head ("rotate half"),
// while llama.cpp's "llama" architecture rotates adjacent pairs (x_{2i}, x_{2i+1}) with the same
// frequency theta^(-2i/hd). llama.cpp's convert_hf_to_gguf.py (LlamaModel.permute) therefore
// reorders the rows of q_proj (with num_heads) and k_proj (with num_kv_heads) inside each head:
//   gguf_row[h*hd + 2i + j] = hf_row[h*hd + j*hd/2 + i],  i < hd/2, j in {0, 1}
// (reshape(heads, 2, hd/2, in).swapaxes(1, 2)). We apply the same permutation, to per-row scales
// and to the per-group scales and zero points of a row too (they travel with their row).
// Attention scores are unchanged: q and k are permuted alike within each head.
//
// Tokenizer (qat's byte tokenizer: ids 0..255 are bytes, then BOS and EOS), as a SentencePiece
// ("llama") vocabulary with byte fallback only. What llama.cpp does with it (src/llama-vocab.cpp):
//   - tokens "<0x00>".."<0xFF>" have type BYTE (6): when no vocabulary piece matches a character,
//     the SPM tokenizer emits byte_to_token() of each of its UTF-8 bytes, i.e. exactly our ids, and
//     token_to_piece() turns a BYTE token back into its raw byte. There are no merges (all scores
//     are 0 and no multi-character piece exists), so every character falls back to its bytes.
//   - exception, id 0x20 (space): the SPM tokenizer always replaces ' ' by U+2581 "▁" before it
//     tokenizes (llama_escape_whitespace), so a "<0x20>" token would never be produced and a space
//     would arrive as the three bytes E2 96 81. Token 0x20 is therefore the NORMAL (1) piece "▁":
//     text spaces map to id 32, and token_to_piece() unescapes it back to ' '. (A literal U+2581
//     in a prompt also becomes id 32.)
//   - BOS "<s>" and EOS "</s>" are CONTROL (3); tokenizer.ggml.bos_token_id/eos_token_id are
//   UINT32;
//     EOS ends generation. add_bos_token = true (qat prepends BOS to every document),
//     add_eos_token = false, add_space_prefix = false (qat never adds a leading space; llama.cpp's
//     SPM default would).
//   - ids past the special tokens (a padded vocabulary) are "<unused_N>" of type UNUSED (5).
//   - there is no unknown token: byte fallback covers every input; llama.cpp's SPM default
//     unknown id (0) is left alone, it is never emitted.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/gguf.h"

namespace qat::kernels {

// Another tokenizer than qat's byte tokenizer, as llama.cpp reads it (tokenizer.ggml.*):
//   model "gpt2" (byte-level BPE, Hugging Face tokenizer.json): tokens are the vocabulary strings
//     as they are (bytes mapped to printable characters, GPT-2's byte-to-unicode map), merges are
//     "left right" in rank order, pre names the pre-tokenizer regex ("gpt-2", "llama-bpe",
//     "qwen2"); token types: NORMAL (1), CONTROL (3) for special added tokens, USER_DEFINED (4)
//     for other added tokens.
//   model "llama" (SentencePiece): tokens are the pieces with their scores; types NORMAL (1),
//     UNKNOWN (2), CONTROL (3), USER_DEFINED (4), UNUSED (5), BYTE (6).
// Ids past the end of `tokens` up to the model's vocab_size (padded embeddings) are written as
// "[PAD<id>]" of type UNUSED; more tokens than vocab_size is an error.
struct GgufTokenizer {
  std::string model;  // "gpt2" or "llama"
  std::string pre;    // gpt2 only
  std::vector<std::string> tokens;
  std::vector<int32_t> token_types;  // one per token
  std::vector<float> scores;         // llama: one per token; gpt2: empty
  std::vector<std::string> merges;   // gpt2 only
  int64_t bos = -1, eos = -1, unk = -1;
  bool add_bos = false;
  bool add_space_prefix = false;  // llama: SentencePiece's add_dummy_prefix
};

struct GgufExportOptions {
  GgmlType ternary_type = GgmlType::kTQ2_0;  // kTQ2_0 or kTQ1_0
  // Embeddings, output, full-precision linears and ternary fallbacks: kF16, kQ8_0 or kF32.
  GgmlType dense_type = GgmlType::kF16;
  std::string name;  // general.name; empty: the packed file's name without directory and extension
  // Set: the vocabulary to describe (its bos/eos win over the packed file's qat.bos_id/eos_id).
  // Unset: the packed file must use the byte tokenizer ("qat.tokenizer" = "byte").
  std::optional<GgufTokenizer> tokenizer;
};

struct GgufTensorReport {
  std::string gguf_name;
  std::string source_name;  // the tensor's name in the packed file
  GgmlType type = GgmlType::kF32;
  std::vector<int64_t> dims;  // GGUF order: dims[0] = row length
  // The packed storage of the source ("ternary2", "ternary3", "int2", "int4"); empty for F32.
  std::string packed_format;
  bool ternary = false;   // the source was a packed ternary tensor (ternary2 or ternary3)
  bool fallback = false;  // stored in another type than the one asked for (see note)
  std::string note;       // why it fell back; empty otherwise
  // Packed sources stored in blocks: the largest relative fp16 rounding error |fp16(v) - v| / |v|
  // of the d values (v = scale) and of the Q4_1 m values (v = -scale * zero, in fp32) written,
  // over nonzero v. At most 2^-11 unless some |v| is below fp16's normal range (6.1e-5); a v
  // that fp16 flushes to zero is left out (an m below 2^-25, or the scale of an all-zero block).
  double max_scale_rel_error = 0;
  double max_offset_rel_error = 0;
};

struct GgufExportReport {
  std::vector<GgufTensorReport> tensors;
  int64_t file_bytes = 0;
  int64_t fallbacks() const;
};

// Reads the packed file, converts it, and writes `out_path` atomically. Errors name the file and
// the tensor or key at fault (a malformed packed file, a non-byte tokenizer, a scale or offset
// that does not fit in fp16, bad options).
absl::StatusOr<GgufExportReport> ConvertPackedToGguf(const std::string& packed_path,
                                                     const std::string& out_path,
                                                     const GgufExportOptions& options = {});

// One line per tensor ("blk.0.attn_q.weight  TQ2_0  [256, 256]" plus any fallback note) and a
// summary line, for the command line to print.
std::string FormatGgufExportReport(const GgufExportReport& report);

}  // namespace qat::kernels
