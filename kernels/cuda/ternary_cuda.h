// CUDA ternary GEMV reading the ternary2 layout of kernels/ternary.h.
//
// A plain C++ header: it names no CUDA type (the stream is an opaque void*), so code built
// without nvcc can call the kernel. Build with QAT_HAVE_CUDA (the qat_kernels_cuda target).
#pragma once

#include <cstdint>

#include "kernels/ternary.h"

#ifndef __CUDACC__
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#endif

namespace qat::kernels::cuda {

enum class Activation { kFloat32 = 0, kBFloat16 = 1 };

// y[r] = scale(r) * sum_c t[r][c] * x[c] for r in [0, rows), computed on the GPU and queued on
// `stream` (a cudaStream_t; nullptr is the default stream); returns once the kernel is queued.
// w.data, w.scales, x and y are device pointers: w.data holds rows * TernaryRowBytes(cols) bytes
// and must be 16-byte aligned, x holds cols values of x_type and must be 16-byte aligned, y gets
// rows floats. Every row's sum is computed in a fixed order, so results repeat run to run.
// A code of 3 (rejected by ValidateTernary) counts as trit 2 here; validate packed data first.
// Returns 0 (cudaSuccess) or a cudaError_t value: cudaErrorInvalidValue for bad arguments
// (n_scales neither 1 nor rows, null or misaligned pointers), else the launch error.
int TernaryGemv(const TernaryView& w, const void* x, Activation x_type, float* y, void* stream);

// cudaGetErrorName and cudaGetErrorString of an error returned above.
const char* ErrorName(int error);
const char* ErrorString(int error);

#ifndef __CUDACC__
// TernaryGemv with its error as an absl::Status naming the shape.
inline absl::Status TernaryGemvStatus(const TernaryView& w, const void* x, Activation x_type,
                                      float* y, void* stream) {
  const int error = TernaryGemv(w, x, x_type, y, stream);
  if (error == 0) return absl::OkStatus();
  constexpr int kCudaErrorInvalidValue = 1;  // cudaErrorInvalidValue: our argument checks
  const auto make =
      error == kCudaErrorInvalidValue ? absl::InvalidArgumentError : absl::InternalError;
  return make(absl::StrCat("CUDA ternary GEMV ", w.rows, "x", w.cols, " failed: ", ErrorName(error),
                           " (", ErrorString(error), ")"));
}
#endif

}  // namespace qat::kernels::cuda
