// Post-training quantization (PTQ): full-precision weights -> weights on their quantizer's grid,
// with the grid's scales stored, in a model that `qat eval`, `qat export` and `qat train`
// (model.init_from) take like any QAT checkpoint. `qat quantize` is its command line.
//
// Storage: a layer whose quantizer computes its scale from the weights (quant.scale: none) is
// written with scale: fixed (quant/quantizer.h): its latent weights are the quantized values and
// NAME.weight_scale holds the scales and zero points, so the fake quantizer reproduces the PTQ
// result bit for bit. A layer with learned scales (lsq, seq) keeps them: the latent weights are
// on the grid of its learned scale.
//
// Methods (ptq/gptq.h has the algorithm):
//   rtn:  round to nearest: the quantizer's own forward value of every weight.
//   gptq: block linears by GPTQ, one decoder block after the other ("true sequential": q/k/v,
//         then o, then gate/up, then down, each with the calibration inputs of the model
//         quantized so far). The embedding and LM head (when quantized) are rounded to nearest.
//
// Smoothness-preserving GPTQ (options.smooth = mu > 0): our reading of FINE's principle in PTQ
// (their code is unreleased; this definition is ours).
//   FINE: a quantized LLM should keep the teacher's smoothness (its input gradients), not only
//   fit its outputs. For one linear layer y = W x inside the model, GPTQ keeps the output on the
//   calibration inputs: it minimises E_x ||(W - Q) x||^2 = tr(dW H_x dW^T), H_x = E[x x^T].
//   The model's sensitivity flows through the layer along g = dL/dx, the gradient of the
//   teacher's loss with respect to the layer's input (at the embeddings that is the smoothness
//   proxy's vector). The layer's first-order response to an input perturbation eps g is
//   eps W g (its Jacobian-vector product); quantization changes it by eps dW g. Keeping the
//   response along these directions too gives
//       J(Q) = E_x ||dW x||^2 + mu' E_g ||dW g||^2 = tr(dW (H_x + mu' H_g) dW^T),
//       H_g = E[g g^T], mu' = mu * tr(H_x) / tr(H_g)
//   (mu' makes mu a relative weight: mu = 1 weighs both terms equally by trace). It is GPTQ
//   with the Hessian H_x + mu' H_g, so every part of the algorithm stays as it is.
//   g is taken from the full-precision model (the teacher), on the calibration tokens with
//   their next-token cross entropy, once before quantization starts.
//   Where it differs from FINE: FINE's own PTQ objective is unpublished; ours preserves the
//   forward response along the loss's input-gradient directions (a directional Jacobian
//   match), not the input-gradient norm itself, and it weighs directions by their gradient
//   magnitude over the calibration set.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <torch/types.h>

#include "absl/status/statusor.h"
#include "ptq/gptq.h"
#include "trainer/model.h"
#include "trainer/recipe.h"

namespace qat::ptq {

struct PtqOptions {
  std::string method = "gptq";  // rtn | gptq
  GptqOptions gptq;
  double smooth = 0.0;                          // mu above; 0: plain GPTQ
  int64_t batch_size = 8;                       // calibration sequences per forward pass
  std::function<void(const std::string&)> log;  // progress lines (null: silent)
};

struct LayerReport {
  std::string name, quantizer;
  // Output error tr(dW H_x dW^T) / rows on the calibration inputs, of round-to-nearest and of
  // the result; the same with H_g (the input-gradient response; smooth > 0 only, else 0).
  double rtn_error = 0, error = 0, rtn_grad_error = 0, grad_error = 0;
  double seconds = 0;
};

struct PtqReport {
  std::vector<LayerReport> layers;
  int64_t calibration_tokens = 0;
  double seconds = 0;
};

// The quant section a PTQ checkpoint is written with: scale none becomes fixed, in the section
// and in every override.
trainer::QuantConfig WithStoredScales(trainer::QuantConfig quant);

// Quantizes `model` in place. It must be built with WithStoredScales' quantizers and hold the
// full-precision weights, with the stored scales initialised from them (InitQuantizerScales or
// AddInitialQuantizerScales). calibration: token windows [N, T + 1] (inputs, then the next
// token); required by gptq. full_precision: the same weights without quantizers; required
// when smooth > 0.
absl::StatusOr<PtqReport> QuantizeModel(trainer::CausalLM& model, trainer::CausalLM* full_precision,
                                        const torch::Tensor& calibration,
                                        const PtqOptions& options);

}  // namespace qat::ptq
