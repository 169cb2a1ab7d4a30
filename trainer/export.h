// `qat export`: a checkpoint -> a packed model file for the runtime (format in kernels/runtime.h).
//
// Every block linear with a fake quantizer is stored in the packed format that reproduces its
// trained values exactly: the export decomposes the latent weight with the very quantizer (and
// learned scale) used in training, and every quantizer already writes its values as
// scale * (code - zero) per group (quant/quantizer.h), so no value is re-rounded:
//   ternary, binary, per tensor / per channel   -> ternary2 (or ternary3, ExportOptions), trits
//                                                  and the scale [1] or [out] (binary: +-1 trits)
//   ternary, binary per group; int 2-bit        -> int2, codes + fp32 scale and zero per group
//   int 3-bit, int 4-bit                        -> int4 (3-bit codes 0..7 in 4-bit cells)
//   int 8-bit                                   -> dense F32 of the quantized values (no packed
//                                                  8-bit weight format; counted in the report)
// Per-tensor and per-channel scales of int2/int4 are replicated over groups of 128 columns; a
// per_group quantizer keeps its group size (32, 64 or 128). Linears trained with int8
// activations get "qat.act.NAME" = "int8". Every other tensor is written as F32 (fake-quantized
// embeddings / LM head as their dequantized values; biases as NAME.bias). The file is version 1
// when it uses nothing but ternary2, version 2 otherwise.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "absl/status/statusor.h"

namespace qat::trainer {

struct ExportOptions {
  std::string ternary_format = "ternary2";  // ternary2 | ternary3 (per tensor / per channel)
};

struct ExportReport {
  std::string checkpoint;
  int64_t packed_tensors = 0;   // linears stored packed
  int64_t dense_tensors = 0;    // tensors stored as F32
  int64_t packed_weights = 0;   // weights stored packed
  int64_t dense_quantized = 0;  // quantized linears stored as F32 values (int8 weights)
  std::map<std::string, int64_t> linears_by_format;  // "ternary2", "int4", "f32", ...
  int64_t file_bytes = 0;
  int64_t fp32_bytes = 0;  // what the same model takes as plain fp32
  // Storage of the block linears' weights, counted from the bytes written for them: the tensors
  // NAME, NAME.scale and NAME.zero (packed codes + fp32 scales and zero points, or dense F32;
  // biases are not counted). `qat plan` (ptq/plan.h) predicts exactly these numbers.
  int64_t linear_weights = 0;            // weights of every block linear
  int64_t linear_bits = 0;               // their storage, in bits
  int64_t quantized_linear_weights = 0;  // the same over the block linears with a quantizer
  int64_t quantized_linear_bits = 0;
  // Bits per weight of the block linears (all of them / the quantized ones); 0 when none.
  double LinearBitsPerWeight() const {
    return linear_weights > 0 ? double(linear_bits) / double(linear_weights) : 0.0;
  }
  double QuantizedBitsPerWeight() const {
    return quantized_linear_weights > 0
               ? double(quantized_linear_bits) / double(quantized_linear_weights)
               : 0.0;
  }
};

absl::StatusOr<ExportReport> ExportPacked(const std::string& checkpoint,
                                          const std::string& out_path,
                                          const ExportOptions& options = {});

}  // namespace qat::trainer
