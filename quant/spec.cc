#include "quant/spec.h"

#include "absl/strings/str_cat.h"

namespace qat::quant {

std::string QuantSpec::Name() const {
  std::string s;
  switch (method) {
    case Method::kTernary:
      s = "ternary";
      break;
    case Method::kBinary:
      s = "binary";
      break;
    case Method::kInt:
      s = absl::StrCat("int", bits, symmetric ? "/sym" : "/asym");
      break;
  }
  switch (granularity) {
    case Granularity::kPerTensor:
      absl::StrAppend(&s, "/per_tensor");
      break;
    case Granularity::kPerChannel:
      absl::StrAppend(&s, "/per_channel");
      break;
    case Granularity::kPerGroup:
      absl::StrAppend(&s, "/per_group", group_size);
      break;
  }
  if (scale == ScaleMode::kLsq) absl::StrAppend(&s, "/lsq");
  if (scale == ScaleMode::kSeq) absl::StrAppend(&s, "/seq");
  if (scale == ScaleMode::kFixed) absl::StrAppend(&s, "/fixed");
  if (int8_activations) absl::StrAppend(&s, "/a8");
  return s;
}

absl::StatusOr<QuantSpec> MakeQuantSpec(const QuantWords& w, const std::string& prefix) {
  auto bad = [&](const std::string& key, const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(prefix, key, ": ", what));
  };
  QuantSpec spec;
  if (w.method == "ternary") {
    spec.method = Method::kTernary;
  } else if (w.method == "binary") {
    spec.method = Method::kBinary;
  } else if (w.method == "int") {
    spec.method = Method::kInt;
  } else {
    return bad("method", absl::StrCat("unknown value '", w.method,
                                      "' (expected ternary, binary or int here)"));
  }
  if (spec.method == Method::kInt) {
    if (w.bits != 2 && w.bits != 3 && w.bits != 4 && w.bits != 8) {
      return bad("bits", absl::StrCat(w.bits,
                                      " is out of range: int quantizers have 2, 3, 4 or 8 "
                                      "bits"));
    }
    spec.bits = static_cast<int>(w.bits);
  }
  spec.symmetric = w.symmetric;
  if (!w.symmetric && spec.method != Method::kInt) {
    return bad("symmetric", absl::StrCat("false needs method int (", w.method,
                                         " weights are symmetric by definition)"));
  }
  if (w.granularity == "per_tensor") {
    spec.granularity = Granularity::kPerTensor;
  } else if (w.granularity == "per_channel") {
    spec.granularity = Granularity::kPerChannel;
  } else if (w.granularity == "per_group") {
    spec.granularity = Granularity::kPerGroup;
    if (w.group_size != 32 && w.group_size != 64 && w.group_size != 128) {
      return bad("group_size", absl::StrCat(w.group_size, " is not one of 32, 64, 128"));
    }
    spec.group_size = w.group_size;
  } else {
    return bad("granularity", absl::StrCat("unknown value '", w.granularity,
                                           "' (expected per_tensor, per_channel or per_group)"));
  }
  if (w.scale == "none") {
    spec.scale = ScaleMode::kStatistic;
  } else if (w.scale == "lsq") {
    spec.scale = ScaleMode::kLsq;
    if (spec.method == Method::kTernary) {
      return bad("scale", "lsq is for binary and int weights; ternary learns its scale with seq");
    }
  } else if (w.scale == "seq") {
    spec.scale = ScaleMode::kSeq;
    if (spec.method == Method::kBinary) {
      return bad("scale", "seq is for ternary and int weights; binary learns its scale with lsq");
    }
  } else if (w.scale == "fixed") {
    spec.scale = ScaleMode::kFixed;
  } else {
    return bad("scale",
               absl::StrCat("unknown value '", w.scale, "' (expected none, lsq, seq or fixed)"));
  }
  if (spec.learnable() && !spec.symmetric) {
    return bad("scale", absl::StrCat(w.scale,
                                     " learns a symmetric scale: it needs "
                                     "symmetric: true (asymmetric weights use scale: none)"));
  }
  if (w.activations == "none") {
    spec.int8_activations = false;
  } else if (w.activations == "int8") {
    spec.int8_activations = true;
  } else {
    return bad("activations",
               absl::StrCat("unknown value '", w.activations, "' (expected none or int8)"));
  }
  return spec;
}

}  // namespace qat::quant
