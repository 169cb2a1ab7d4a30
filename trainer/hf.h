// Hugging Face LLaMA-family model directories in and out (config.json in trainer/hf_config.h).
//
// Import: dir/model.safetensors, or the shards named by dir/model.safetensors.index.json
// ({"weight_map": {"<tensor>": "<shard file name>"}}; shard names are plain file names inside
// dir). Tensors are F32, F16, BF16 or F64 (converted exactly to fp32) with the names and shapes
// of HfTensorShapes(). Besides those only RoPE caches (*.rotary_emb.inv_freq) and, with tied
// embeddings, a redundant lm_head.weight may appear (both ignored); anything else, a missing or
// misshapen tensor, a tensor listed for one shard but stored in another, or a malformed
// safetensors file (kernels/safetensors.h checks every offset) is an error naming the file and
// the tensor.
//
// Export (ExportHf): dir/config.json, dir/model.safetensors with the weights the forward pass
// multiplies by (fake-quantized linears as their dequantized values, in bf16, fp16 or fp32), and
// the tokenizer's files. The directory is written as DIR.tmp and renamed into place, replacing
// an existing DIR only once the new one is complete.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "trainer/checkpoint.h"
#include "trainer/hf_config.h"
#include "trainer/model.h"
#include "trainer/train.h"

namespace qat::trainer {

// name -> shape of every tensor a model with this config has, in Hugging Face naming.
std::map<std::string, std::vector<int64_t>> HfTensorShapes(const ModelConfig& c);

// The weights of a Hugging Face directory as fp32 CPU tensors, checked against `c`.
absl::StatusOr<TensorMap> LoadHfTensors(const std::string& dir, const ModelConfig& c);
// The same into preallocated contiguous fp32 CPU tensors (e.g. a model's parameters): every
// tensor of HfTensorShapes(c) must be in `dest`.
absl::Status LoadHfTensorsInto(const std::string& dir, const ModelConfig& c, TensorMap* dest);

// A Hugging Face directory as a full-precision model (quant method none), with a recipe whose
// model section comes from config.json and whose data.tokenizer is `dir` when it holds a
// tokenizer. LoadModelFromCheckpoint (trainer/train.h) takes this path for such directories.
absl::StatusOr<LoadedModel> LoadHfModel(const std::string& dir);

struct HfExportOptions {
  std::string dtype = "bf16";  // bf16 | fp16 | fp32
  std::string tokenizer;       // data.tokenizer of the model ("": bytes, no files to copy)
};
struct HfExportReport {
  int64_t tensors = 0;
  int64_t weights_bytes = 0;        // size of model.safetensors
  std::vector<std::string> copied;  // tokenizer files copied
  std::string note;                 // what the HF model cannot express (e.g. int8 activations)
};
absl::StatusOr<HfExportReport> ExportHf(CausalLM& model, const std::string& out_dir,
                                        const HfExportOptions& options);

}  // namespace qat::trainer
