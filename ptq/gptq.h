// GPTQ (Frantar et al., 2023) on one linear layer, for every quantizer of quant/: it picks the
// integer codes of W [rows, cols] on a given grid so as to minimise the layer's output error on
// calibration inputs, tr((W - Q) H (W - Q)^T) with H = mean over tokens of x x^T, instead of
// rounding each weight to its nearest grid point (RTN).
//
// The algorithm (the paper's, with its lazy batch updates):
//   1. Columns whose H diagonal is 0 (inputs that are always 0) are set to 0 with H_cc = 1.
//   2. act_order: columns are visited by decreasing H_cc (the most active inputs first).
//   3. H += damp * mean(diag H) * I; U = the upper Cholesky factor of H^-1 (H^-1 = U^T U).
//   4. Column by column: u_c = the grid code nearest to the current w_c, q_c = its value,
//      e = (w_c - q_c) / U_cc, and every later column j moves by -e U_cj, so that the error is
//      absorbed by the columns not yet quantized. The updates are applied to a block of
//      block_size columns at once and to the rest of the matrix once per block (the same result,
//      fewer memory passes).
// Grids: per tensor or per row, the scale and zero point come before GPTQ runs (from the
// weights, or the stored learned scales). Per group, they are computed when GPTQ reaches the
// group's first column, from the weights as updated so far (as the paper's code does); with
// act_order they come from the original weights instead ("static groups"), since the visiting
// order then crosses groups.
// Ternary and binary: the same algorithm on their 3- or 2-level grids. Ternary's grid is
// {-s, 0, s} with s the absmean of the group (BitNet), fixed before (or, per group, at the start
// of) the group's columns; GPTQ then chooses which weights go to 0 and which to +-s with the
// error feedback. Binary's codes are the signs (w >= 0) of the updated weights.
// Everything is computed in float64.
#pragma once

#include <cstdint>
#include <functional>

#include <torch/types.h>

#include "absl/status/statusor.h"

namespace qat::ptq {

struct GptqOptions {
  double damp = 0.01;        // fraction of mean(diag H) added to the diagonal
  bool act_order = false;    // visit columns by decreasing H_cc
  int64_t block_size = 128;  // columns per lazy batch (rounded up to a multiple of the group)
};

// The grid of a layer: value of code u in group g of row r = scale[r][g] * (u - zero[r][g]).
// Groups are group_size consecutive columns (group_size = cols for per tensor / per row).
struct LayerGrid {
  torch::Tensor scale, zero;  // [rows, cols / group_size], float64
  int64_t group_size = 0;
  int levels = 0;       // codes lie in [0, levels)
  bool binary = false;  // codes are w >= 0 (scale and zero 2s and 1/2)
};

// Recomputes group g's scale and zero (column g of grid->scale / zero) from the group's current
// weights [rows, group_size]; unset: the grid stays as given.
using GroupRefit = std::function<void(int64_t g, const torch::Tensor& weights, LayerGrid* grid)>;

// The codes [rows, cols] (int64) GPTQ gives W on `grid` with Hessian H [cols, cols]. The error
// names `name` when H + damping is not positive definite.
absl::StatusOr<torch::Tensor> GptqCodes(const std::string& name, const torch::Tensor& weight,
                                        const torch::Tensor& hessian, LayerGrid* grid,
                                        const GptqOptions& options, const GroupRefit& refit = {});

// Round to nearest on the grid: the codes of W [rows, cols].
torch::Tensor NearestCodes(const torch::Tensor& weight, const LayerGrid& grid);
// The values of codes on the grid, [rows, cols] float64.
torch::Tensor GridValues(const torch::Tensor& codes, const LayerGrid& grid);
// The layer's output error of Q against W: tr((W - Q) H (W - Q)^T) / rows.
double OutputError(const torch::Tensor& weight, const torch::Tensor& q,
                   const torch::Tensor& hessian);

}  // namespace qat::ptq
