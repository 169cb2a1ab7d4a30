// What a weight quantizer does, as plain data (no libtorch): the recipe words of one layer's
// quantizer, checked and turned into enums. quant/quantizer.h holds the math.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace qat::quant {

enum class Method { kTernary, kBinary, kInt };
// Which weights share a scale: the whole tensor, one output row, or `group_size` consecutive
// input columns of one row.
enum class Granularity { kPerTensor, kPerChannel, kPerGroup };
// kStatistic: the scale is recomputed from the weights at every forward pass (absmean, absmax or
// min/max); kLsq / kSeq: the scale is a trained parameter (LSQ, ParetoQ's SEQ); kFixed: the scale
// and zero point of every group are stored with the weights and never change (written by
// post-training quantization, ptq/ptq.h; initialised to the statistic's values otherwise).
enum class ScaleMode { kStatistic, kLsq, kSeq, kFixed };

struct QuantSpec {
  Method method = Method::kTernary;
  int bits = 2;           // kInt: 2, 3, 4 or 8 (ternary and binary ignore it)
  bool symmetric = true;  // kInt only; false: min/max with a zero point
  Granularity granularity = Granularity::kPerTensor;
  int64_t group_size = 128;  // kPerGroup: 32, 64 or 128
  ScaleMode scale = ScaleMode::kStatistic;
  bool int8_activations = false;  // quantize the layer's input per token (W*A8)

  // A trained scale parameter (lsq, seq).
  bool learnable() const { return scale == ScaleMode::kLsq || scale == ScaleMode::kSeq; }
  // A scale tensor stored with the weight (NAME.weight_scale): learned or fixed.
  bool stored_scale() const { return scale != ScaleMode::kStatistic; }
  // Short description, e.g. "int4/sym/per_group128/lsq/a8".
  std::string Name() const;
};

// The recipe words of one quantizer (the keys of the recipe's quant section).
struct QuantWords {
  std::string method = "ternary";  // none | ternary | binary | int
  int64_t bits = 4;
  bool symmetric = true;
  std::string granularity = "per_tensor";  // per_tensor | per_channel | per_group
  int64_t group_size = 128;
  std::string scale = "none";        // none | lsq | seq | fixed
  std::string activations = "none";  // none | int8
};

// Checks the words and their combination; errors name the key as `key_prefix` + key (e.g.
// "quant.bits" or "quant.overrides[2].bits"). Method "none" gives an error too: ask
// words.method first.
absl::StatusOr<QuantSpec> MakeQuantSpec(const QuantWords& words, const std::string& key_prefix);

}  // namespace qat::quant
