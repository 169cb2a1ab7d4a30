// Rotary position embedding as one fused autograd node (trainer/model.cc's attention uses it).
#pragma once

#include <torch/types.h>

namespace qat::trainer {

// Rotary position embedding, "rotate half": for x [..., T, H, head_dim] and tables cos, sin
// [T, head_dim] (each angle twice, once per half), with x = (x1, x2) split in halves,
//     y = x * cos + (-x2, x1) * sin.
// ApplyRope is one autograd node whose forward is one pass over x (a loop on the CPU, the torch
// ops elsewhere) and whose backward is the transposed rotation by the same node (so double
// backward works): dx = g * cos + (g2, -g1) * sin. Every element is computed with the same float
// operations as ApplyRopeUnfused (the plain torch expression, kept for the test), so values and
// gradients are bit-identical; it saves the unfused path's four temporaries per call and their
// backward nodes.
torch::Tensor ApplyRope(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin);
torch::Tensor ApplyRopeUnfused(const torch::Tensor& x, const torch::Tensor& cos,
                               const torch::Tensor& sin);

}  // namespace qat::trainer
