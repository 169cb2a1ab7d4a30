// `qat export`: a checkpoint -> a packed model file for the runtime (format in kernels/runtime.h).
// Linears with a ternary quantizer are written as ternary2 (2 bits per weight) with their scale,
// decomposed by the very quantizer used in training, so the export reproduces the fake-quantized
// model; every other tensor is written as F32 (fake-quantized embeddings/LM head dequantized).
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace qat::trainer {

struct ExportReport {
  std::string checkpoint;
  int64_t packed_tensors = 0;
  int64_t dense_tensors = 0;
  int64_t packed_weights = 0;  // weights stored at 2 bits
  int64_t file_bytes = 0;
  int64_t fp32_bytes = 0;      // what the same model takes as plain fp32
};

absl::StatusOr<ExportReport> ExportPacked(const std::string& checkpoint, const std::string& out_path);

}  // namespace qat::trainer
