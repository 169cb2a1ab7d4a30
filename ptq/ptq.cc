#include "ptq/ptq.h"

#include <torch/torch.h>

#include <chrono>
#include <map>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "quant/distill.h"

namespace qat::ptq {
namespace {

using trainer::CausalLM;
using trainer::QLinearImpl;
using trainer::QuantizedWeight;

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

// The grid of a quantized weight as its quantizer sees it now, [rows, groups] in float64.
LayerGrid GridOf(const QuantizedWeight& q) {
  const quant::QuantParts parts = q.quantizer->Decompose(q.weight, q.scale);
  const int64_t rows = q.weight.size(0), cols = q.weight.size(1), C = parts.scale.size(1);
  LayerGrid g;
  g.scale = parts.scale.to(torch::kFloat64).expand({rows, C}).contiguous();
  g.zero = parts.zero.to(torch::kFloat64).expand({rows, C}).contiguous();
  g.group_size = cols / C;
  g.levels = parts.levels;
  g.binary = q.quantizer->spec().method == quant::Method::kBinary;
  return g;
}

// Writes codes on `grid` into the layer: latent weights = the grid values, computed in the
// weight's float type exactly as the fake quantizer computes them; a fixed quantizer also
// stores the grid's scales and zero points.
void Store(const QuantizedWeight& q, const torch::Tensor& codes, const LayerGrid& grid) {
  torch::NoGradGuard no_grad;
  const quant::QuantSpec& spec = q.quantizer->spec();
  const int64_t rows = codes.size(0), cols = codes.size(1), C = cols / grid.group_size;
  const int64_t R = spec.granularity == quant::Granularity::kPerTensor ? 1 : rows;
  const torch::ScalarType type = q.weight.scalar_type();
  const torch::Tensor scale = grid.scale.narrow(0, 0, R).to(type);
  const torch::Tensor zero = grid.zero.narrow(0, 0, R).to(type);
  const torch::Tensor u = codes.to(type).reshape({rows, C, grid.group_size});
  const torch::Tensor values =
      (scale.unsqueeze(-1) * (u - zero.unsqueeze(-1))).reshape({rows, cols});
  q.weight.copy_(values);
  if (spec.scale == quant::ScaleMode::kFixed) {
    q.scale.copy_(quant::FixedScale(scale, zero).to(q.scale.scalar_type()));
  }
}

// Accumulates H = sum x x^T of the inputs a linear multiplies (or of their gradients).
struct Accumulator {
  torch::Tensor sum;  // [in, in] float64
  int64_t tokens = 0;
  void Add(const torch::Tensor& xtx, int64_t rows) {
    sum = sum.defined() ? sum + xtx : xtx.clone();
    tokens += rows;
  }
  torch::Tensor Mean() const { return sum / double(std::max<int64_t>(1, tokens)); }
};

// x^T x over the rows of x [..., in] in float64, computed once for the linears that are fed the
// same tensor (q/k/v, gate/up, and their shared input gradient). The last tensor is held, so a
// new one cannot reuse its address and be mistaken for it.
struct SharedProduct {
  torch::Tensor source, product;
  const torch::Tensor& Of(const torch::Tensor& x) {
    if (!source.defined() || !x.is_same(source)) {
      const torch::Tensor xd = x.detach().reshape({-1, x.size(-1)}).to(torch::kFloat64);
      source = x;
      product = xd.t().mm(xd);
    }
    return product;
  }
};

int64_t Rows(const torch::Tensor& x) { return x.numel() / x.size(-1); }

struct Linear {
  std::string name;
  QLinearImpl* module = nullptr;
  QuantizedWeight weight;
};

// The quantized linears of block i, in the true-sequential groups: q/k/v (one input), o,
// gate/up (one input), down.
std::vector<std::vector<Linear>> BlockGroups(CausalLM& model, int64_t i,
                                             const std::map<std::string, QuantizedWeight>& qw) {
  const std::vector<std::pair<std::string, trainer::QLinear>> linears =
      trainer::BlockLinears(model, i);
  const std::vector<std::vector<size_t>> order = {{0, 1, 2}, {3}, {4, 5}, {6}};
  std::vector<std::vector<Linear>> groups;
  for (const std::vector<size_t>& group : order) {
    std::vector<Linear> out;
    for (size_t k : group) {
      auto it = qw.find(absl::StrCat("model.layers.", i, ".", linears[k].first, ".weight"));
      if (it != qw.end()) out.push_back({it->first, linears[k].second.ptr().get(), it->second});
    }
    if (!out.empty()) groups.push_back(std::move(out));
  }
  return groups;
}

// Observers on `linears` that add each multiplied input to its accumulator; linears fed the
// same tensor (q/k/v, gate/up) share one product.
void ObserveInputs(std::vector<Linear>& linears, std::map<std::string, Accumulator>* acc) {
  auto shared = std::make_shared<SharedProduct>();
  for (Linear& l : linears) {
    Accumulator* a = &(*acc)[l.name];
    l.module->input_observer = [a, shared](const torch::Tensor&, const torch::Tensor& x) {
      a->Add(shared->Of(x), Rows(x));
    };
  }
}

void StopObserving(std::vector<Linear>& linears) {
  for (Linear& l : linears) l.module->input_observer = nullptr;
}

// H_g of every block linear of the full-precision model: E[g g^T] of the gradients of the
// next-token cross entropy with respect to each linear's input.
std::map<std::string, torch::Tensor> GradientHessians(CausalLM& fp,
                                                      const torch::Tensor& calibration,
                                                      int64_t batch_size) {
  std::map<std::string, Accumulator> acc;
  std::vector<torch::Tensor> frozen;
  for (torch::Tensor& p : fp->parameters()) {
    if (p.requires_grad()) {
      p.set_requires_grad(false);
      frozen.push_back(p);
    }
  }
  std::vector<std::pair<std::string, QLinearImpl*>> linears;
  for (int64_t i = 0; i < fp->config().num_layers; ++i) {
    for (const auto& [suffix, linear] : trainer::BlockLinears(fp, i)) {
      linears.push_back(
          {absl::StrCat("model.layers.", i, ".", suffix, ".weight"), linear.ptr().get()});
    }
  }
  auto shared = std::make_shared<SharedProduct>();
  for (auto& [name, module] : linears) {
    Accumulator* a = &acc[name];
    module->input_observer = [a, shared](const torch::Tensor& input, const torch::Tensor&) {
      if (!input.requires_grad()) return;
      // q/k/v (and gate/up) share their input: each hook sees the whole gradient of it.
      input.register_hook([a, shared](torch::Tensor g) { a->Add(shared->Of(g), Rows(g)); });
    };
  }
  const int64_t N = calibration.size(0), T = calibration.size(1) - 1;
  for (int64_t b = 0; b < N; b += batch_size) {
    const torch::Tensor w = calibration.narrow(0, b, std::min(batch_size, N - b));
    const torch::Tensor x = fp->Embed(w.narrow(1, 0, T)).detach().requires_grad_(true);
    torch::Tensor loss = quant::CrossEntropyLoss(fp->ForwardFromEmbeddings(x), w.narrow(1, 1, T));
    loss.backward();
  }
  for (auto& [name, module] : linears) module->input_observer = nullptr;
  for (torch::Tensor& p : frozen) p.set_requires_grad(true);
  std::map<std::string, torch::Tensor> out;
  for (auto& [name, a] : acc) {
    if (a.sum.defined()) out[name] = a.Mean();
  }
  return out;
}

// Statistic (scale: none) quantizer of the same kind, per group over a [rows, group] slice.
GroupRefit FixedGroupRefit(const quant::QuantSpec& spec) {
  quant::QuantSpec statistic = spec;
  statistic.scale = quant::ScaleMode::kStatistic;
  return [statistic](int64_t g, const torch::Tensor& w, LayerGrid* grid) {
    const quant::QuantParts parts =
        quant::WeightQuantizer(statistic).Decompose(w.to(torch::kFloat32));
    grid->scale.select(1, g).copy_(parts.scale.select(1, 0).to(torch::kFloat64));
    grid->zero.select(1, g).copy_(parts.zero.select(1, 0).to(torch::kFloat64));
  };
}

}  // namespace

trainer::QuantConfig WithStoredScales(trainer::QuantConfig quant) {
  if (quant.scale == "none") quant.scale = "fixed";
  for (trainer::QuantOverride& o : quant.overrides) {
    for (auto& [key, value] : o.values) {
      if (key == "scale" && value == "none") value = "fixed";
    }
  }
  return quant;
}

absl::StatusOr<PtqReport> QuantizeModel(CausalLM& model, CausalLM* full_precision,
                                        const torch::Tensor& calibration,
                                        const PtqOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  auto log = [&options](const std::string& line) {
    if (options.log) options.log(line);
  };
  if (options.method != "rtn" && options.method != "gptq") {
    return absl::InvalidArgumentError(
        absl::StrCat("quantize: method '", options.method, "' (expected rtn or gptq)"));
  }
  const bool gptq = options.method == "gptq";
  if (gptq && (!calibration.defined() || calibration.dim() != 2 || calibration.size(0) < 1 ||
               calibration.size(1) < 2)) {
    return absl::InvalidArgumentError(
        "quantize: gptq needs calibration windows (give token shards with --calib)");
  }
  if (options.smooth > 0 && (full_precision == nullptr || !gptq)) {
    return absl::InvalidArgumentError(
        "quantize: the smoothness-preserving option (--smooth) needs gptq and the "
        "full-precision model");
  }
  std::vector<QuantizedWeight> all = QuantizedWeights(model);
  for (const QuantizedWeight& q : all) {
    if (q.quantizer->spec().scale == quant::ScaleMode::kStatistic) {
      return absl::InvalidArgumentError(
          absl::StrCat("quantize: ", q.name,
                       " computes its scale from the weights (scale: none); PTQ stores "
                       "its grid: build the model from WithStoredScales (scale: fixed)"));
    }
  }
  PtqReport report;
  torch::NoGradGuard no_grad;
  std::map<std::string, QuantizedWeight> by_name;
  for (const QuantizedWeight& q : all) by_name[q.name] = q;

  // Round to nearest: everything (rtn), or what GPTQ does not touch (embedding, LM head).
  for (const QuantizedWeight& q : all) {
    const bool block = q.name.rfind("model.layers.", 0) == 0;
    if (gptq && block) continue;
    // The quantizer's own codes (its float arithmetic decides the ties, as in its forward).
    const LayerGrid grid = GridOf(q);
    Store(q, q.quantizer->Decompose(q.weight, q.scale).codes.to(torch::kInt64), grid);
    LayerReport r;
    r.name = q.name;
    r.quantizer = q.quantizer->name();
    report.layers.push_back(r);
  }
  if (!gptq) {
    report.seconds = Seconds(start);
    log(absl::StrFormat("quantize: rtn, %d tensors, %.1f s", report.layers.size(), report.seconds));
    return report;
  }

  std::map<std::string, torch::Tensor> grad_hessians;
  const int64_t N = calibration.size(0), T = calibration.size(1) - 1;
  report.calibration_tokens = N * T;
  if (options.smooth > 0) {
    torch::AutoGradMode grad_on(true);
    grad_hessians = GradientHessians(*full_precision, calibration, options.batch_size);
    log(absl::StrFormat("quantize: input-gradient statistics of %d linears, %d tokens, %.1f s",
                        grad_hessians.size(), N * T, Seconds(start)));
  }
  // The calibration inputs of block 0, then of each next block (through the quantized blocks).
  std::vector<torch::Tensor> hidden;
  for (int64_t b = 0; b < N; b += options.batch_size) {
    hidden.push_back(model->Embed(
        calibration.narrow(0, b, std::min(options.batch_size, N - b)).narrow(1, 0, T)));
  }
  const int64_t layers = model->config().num_layers;
  for (int64_t i = 0; i < layers; ++i) {
    const auto block_start = std::chrono::steady_clock::now();
    for (std::vector<Linear>& group : BlockGroups(model, i, by_name)) {
      std::map<std::string, Accumulator> acc;
      ObserveInputs(group, &acc);
      for (const torch::Tensor& x : hidden) model->ForwardBlock(i, x);
      StopObserving(group);
      for (Linear& l : group) {
        const auto t0 = std::chrono::steady_clock::now();
        const QuantizedWeight& q = l.weight;
        const torch::Tensor hx = acc[l.name].Mean();
        torch::Tensor h = hx;
        torch::Tensor hg;
        if (options.smooth > 0) {
          auto it = grad_hessians.find(l.name);
          if (it != grad_hessians.end()) {
            hg = it->second;
            const double tg = hg.trace().item<double>(), tx = hx.trace().item<double>();
            if (tg > 0) h = hx + hg * (options.smooth * tx / tg);
          }
        }
        LayerGrid grid = GridOf(q);
        const torch::Tensor w = q.weight.detach().to(torch::kFloat64).clone();
        const torch::Tensor rtn_q = GridValues(NearestCodes(w, grid), grid);
        const quant::QuantSpec& spec = q.quantizer->spec();
        GroupRefit refit;
        if (spec.scale == quant::ScaleMode::kFixed &&
            spec.granularity == quant::Granularity::kPerGroup) {
          refit = FixedGroupRefit(spec);
        }
        absl::StatusOr<torch::Tensor> codes = GptqCodes(l.name, w, h, &grid, options.gptq, refit);
        if (!codes.ok()) return codes.status();
        LayerReport r;
        r.name = l.name;
        r.quantizer = q.quantizer->name();
        const torch::Tensor result = GridValues(*codes, grid);
        r.rtn_error = OutputError(w, rtn_q, hx);
        r.error = OutputError(w, result, hx);
        if (hg.defined()) {
          r.rtn_grad_error = OutputError(w, rtn_q, hg);
          r.grad_error = OutputError(w, result, hg);
        }
        Store(q, *codes, grid);
        r.seconds = Seconds(t0);
        report.layers.push_back(r);
      }
    }
    for (torch::Tensor& x : hidden) x = model->ForwardBlock(i, x);
    log(absl::StrFormat("quantize: layer %d/%d, %d calibration tokens, %.1f s (total %.1f s)",
                        i + 1, layers, N * T, Seconds(block_start), Seconds(start)));
  }
  report.seconds = Seconds(start);
  return report;
}

}  // namespace qat::ptq
