#include "ptq/gptq.h"

#include <torch/torch.h>

#include <algorithm>
#include <string>

#include "absl/strings/str_cat.h"

namespace qat::ptq {
namespace {

using torch::indexing::Slice;

// The codes of column values w [rows] in group g of the grid.
torch::Tensor ColumnCodes(const torch::Tensor& w, const LayerGrid& grid, int64_t g) {
  if (grid.binary) return w.ge(0).to(torch::kFloat64);
  const torch::Tensor s = grid.scale.select(1, g), z = grid.zero.select(1, g);
  return torch::clamp(torch::round(w / s + z), 0.0, double(grid.levels - 1));
}

}  // namespace

torch::Tensor NearestCodes(const torch::Tensor& weight, const LayerGrid& grid) {
  const torch::Tensor w = weight.to(torch::kFloat64);
  const int64_t rows = w.size(0), cols = w.size(1), groups = cols / grid.group_size;
  const torch::Tensor w3 = w.reshape({rows, groups, grid.group_size});
  if (grid.binary) return w.ge(0).to(torch::kInt64);
  const torch::Tensor s = grid.scale.unsqueeze(-1), z = grid.zero.unsqueeze(-1);
  return torch::clamp(torch::round(w3 / s + z), 0.0, double(grid.levels - 1))
      .reshape({rows, cols})
      .to(torch::kInt64);
}

torch::Tensor GridValues(const torch::Tensor& codes, const LayerGrid& grid) {
  const int64_t rows = codes.size(0), cols = codes.size(1), groups = cols / grid.group_size;
  const torch::Tensor u = codes.to(torch::kFloat64).reshape({rows, groups, grid.group_size});
  return (grid.scale.unsqueeze(-1) * (u - grid.zero.unsqueeze(-1))).reshape({rows, cols});
}

double OutputError(const torch::Tensor& weight, const torch::Tensor& q,
                   const torch::Tensor& hessian) {
  const torch::Tensor d = weight.to(torch::kFloat64) - q.to(torch::kFloat64);
  return (d.mm(hessian.to(torch::kFloat64)) * d).sum().item<double>() / double(d.size(0));
}

absl::StatusOr<torch::Tensor> GptqCodes(const std::string& name, const torch::Tensor& weight,
                                        const torch::Tensor& hessian, LayerGrid* grid,
                                        const GptqOptions& options, const GroupRefit& refit) {
  torch::NoGradGuard no_grad;
  const int64_t rows = weight.size(0), cols = weight.size(1), gs = grid->group_size;
  if (gs < 1 || cols % gs != 0 || hessian.size(0) != cols || hessian.size(1) != cols) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": GPTQ needs H [", cols, ", ", cols,
                                                   "] and groups dividing the columns"));
  }
  torch::Tensor W = weight.to(torch::kFloat64).clone();
  torch::Tensor H = hessian.to(torch::kFloat64).clone();
  // 1. Dead inputs.
  const torch::Tensor dead = H.diagonal().eq(0);
  H.diagonal().masked_fill_(dead, 1.0);
  W.index_put_({Slice(), dead}, 0.0);
  // 2. Visiting order.
  torch::Tensor perm = options.act_order ? torch::argsort(H.diagonal(), /*dim=*/0, true)
                                         : torch::arange(cols, torch::kInt64);
  if (options.act_order) {
    W = W.index_select(1, perm);
    H = H.index_select(0, perm).index_select(1, perm);
  }
  const std::vector<int64_t> order(perm.data_ptr<int64_t>(), perm.data_ptr<int64_t>() + cols);
  // 3. Damping, and the upper Cholesky factor of H^-1.
  H.diagonal().add_(options.damp * H.diagonal().mean().item<double>());
  torch::Tensor U;
  try {
    const torch::Tensor L = torch::linalg::cholesky(H);
    U = torch::linalg::cholesky(torch::cholesky_inverse(L)).t().contiguous();
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": GPTQ's Hessian plus damping ", options.damp,
                     " is not positive definite (raise --damp, or add calibration data): ",
                     e.what_without_backtrace()));
  }
  // 4. Column by column, in lazy blocks.
  const bool lazy_groups = refit && !options.act_order && gs < cols;
  // Per group, a lazy block holds whole groups (a refit reads its group's columns in the block).
  const int64_t block_size = std::max<int64_t>(1, options.block_size);
  const int64_t step = gs < cols ? (block_size + gs - 1) / gs * gs : block_size;
  torch::Tensor codes = torch::zeros({rows, cols}, torch::kFloat64);
  for (int64_t i1 = 0; i1 < cols; i1 += step) {
    const int64_t count = std::min(step, cols - i1);
    torch::Tensor W1 = W.narrow(1, i1, count).clone();
    torch::Tensor err1 = torch::zeros({rows, count}, torch::kFloat64);
    const torch::Tensor U1 = U.narrow(0, i1, count).narrow(1, i1, count);
    for (int64_t i = 0; i < count; ++i) {
      const int64_t column = order[i1 + i];
      const int64_t g = column / gs;
      if (lazy_groups && column % gs == 0) refit(g, W1.narrow(1, i, gs), grid);
      const torch::Tensor w = W1.select(1, i);
      const torch::Tensor u = ColumnCodes(w, *grid, g);
      codes.select(1, i1 + i).copy_(u);
      const torch::Tensor q = grid->scale.select(1, g) * (u - grid->zero.select(1, g));
      const torch::Tensor e = (w - q) / U1[i][i].item<double>();
      W1.narrow(1, i, count - i)
          .sub_(e.unsqueeze(1).mm(U1.narrow(0, i, 1).narrow(1, i, count - i)));
      err1.select(1, i).copy_(e);
    }
    if (i1 + count < cols) {
      W.narrow(1, i1 + count, cols - i1 - count)
          .sub_(err1.mm(U.narrow(0, i1, count).narrow(1, i1 + count, cols - i1 - count)));
    }
  }
  if (options.act_order) codes = codes.index_select(1, torch::argsort(perm));
  return codes.to(torch::kInt64);
}

}  // namespace qat::ptq
