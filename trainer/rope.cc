#include "trainer/rope.h"

#include <torch/torch.h>

namespace qat::trainer {

namespace {
// "Rotate half": (x1, x2) -> (-x2, x1) over the two halves of the head dimension.
torch::Tensor RotateHalf(const torch::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return torch::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

// y = x * cos + (-x2, x1) * sin, or with transpose the inverse rotation x * cos + (x2, -x1) * sin
// (the same as negating sin), element by element with the float operations of the torch
// expression: a product, a negation where the torch path negates, one addition.
template <typename T>
void RopeLoop(const T* x, const T* cos, const T* sin, T* y, int64_t rows, int64_t rows_per_t,
              int64_t T_len, int64_t hd, bool transpose) {
  const int64_t half = hd / 2;
  at::parallel_for(0, rows, 64, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      // x is [..., T, H, hd]: rows of hd, rows_per_t (= H) of them per position, positions
      // repeating over the leading dimensions.
      const int64_t t = (row / rows_per_t) % T_len;
      const T* c = cos + t * hd;
      const T* s = sin + t * hd;
      const T* a = x + row * hd;
      T* out = y + row * hd;
      for (int64_t i = 0; i < half; ++i) {
        const T x1 = a[i], x2 = a[i + half];
        if (!transpose) {
          out[i] = x1 * c[i] + (-x2) * s[i];
          out[i + half] = x2 * c[i + half] + x1 * s[i + half];
        } else {  // the backward of the above: g1 c + g2 s, g2 c + (-(g1 s))
          out[i] = x1 * c[i] + x2 * s[i + half];
          out[i + half] = x2 * c[i + half] + (-(x1 * s[i]));
        }
      }
    }
  });
}

class RopeFunction : public torch::autograd::Function<RopeFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& cos, const torch::Tensor& sin, bool transpose) {
    ctx->saved_data["transpose"] = transpose;
    ctx->save_for_backward({cos, sin});
    const bool loop = x.device().is_cpu() && x.dim() >= 3 &&
                      (x.scalar_type() == torch::kFloat32 || x.scalar_type() == torch::kFloat64) &&
                      cos.scalar_type() == x.scalar_type() && sin.scalar_type() == x.scalar_type();
    if (!loop) {
      if (!transpose) return ApplyRopeUnfused(x, cos, sin);
      const int64_t half = x.size(-1) / 2;
      // (x2, -x1) * sin, as the backward of the torch expression computes it
      return x * cos.unsqueeze(-2) +
             torch::cat({x.narrow(-1, half, half) * sin.unsqueeze(-2).narrow(-1, half, half),
                         -(x.narrow(-1, 0, half) * sin.unsqueeze(-2).narrow(-1, 0, half))},
                        -1);
    }
    const torch::Tensor xc = x.contiguous(), c = cos.contiguous(), s = sin.contiguous();
    torch::Tensor y = torch::empty_like(xc);
    const int64_t hd = x.size(-1), H = x.size(-2), T = x.size(-3);
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "rope", [&] {
      RopeLoop<scalar_t>(xc.data_ptr<scalar_t>(), c.data_ptr<scalar_t>(), s.data_ptr<scalar_t>(),
                         y.data_ptr<scalar_t>(), xc.numel() / hd, H, T, hd, transpose);
    });
    return y;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad) {
    const bool transpose = ctx->saved_data["transpose"].toBool();
    const torch::autograd::variable_list saved = ctx->get_saved_variables();
    return {RopeFunction::apply(grad[0], saved[0], saved[1], !transpose), torch::Tensor(),
            torch::Tensor(), torch::Tensor()};
  }
};
}  // namespace

torch::Tensor ApplyRope(const torch::Tensor& x, const torch::Tensor& cos,
                        const torch::Tensor& sin) {
  return RopeFunction::apply(x, cos, sin, false);
}

torch::Tensor ApplyRopeUnfused(const torch::Tensor& x, const torch::Tensor& cos,
                               const torch::Tensor& sin) {
  return x * cos.unsqueeze(-2) + RotateHalf(x) * sin.unsqueeze(-2);
}

}  // namespace qat::trainer
