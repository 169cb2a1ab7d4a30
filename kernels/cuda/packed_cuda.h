// CUDA matrix-vector and small-batch products with packed low-bit weights: ternary2
// (kernels/ternary.h) and int2/int4 with per-group scales and zero points (kernels/lowbit.h), the
// same bytes the CPU kernels read.
//
// A plain C++ header: it names no CUDA type (a stream is an opaque void*, errors are cudaError_t
// values as int), so code built without nvcc calls these. Built into qat_kernels_cuda.
//
// Common rules:
//   - All pointers are device pointers. Weight data (rows * row bytes) must be 16-byte aligned
//     (cudaMalloc gives 256); activations X are m x cols row-major, fp32 or bf16 (the raw 16-bit
//     values); Y gets m x rows fp32, Y[i * rows + r].
//   - Work is queued on `stream` (a cudaStream_t; nullptr = the legacy default stream); the call
//     returns once it is queued.
//   - Each kernel reads every weight byte once per 16 activation rows (m <= 16 is one pass; larger
//     m runs in passes of 16), with 16-byte loads that a warp issues over 512 contiguous bytes
//     of a row. Activation rows are read with 16-byte loads when they are 16-byte aligned.
//   - Every output is summed in a fixed order (per thread, then a fixed butterfly in the warp,
//     then warps in order), so results repeat run to run; they differ from the CPU kernels only
//     by float summation order.
//   - Returns 0 (cudaSuccess) or a cudaError_t: cudaErrorInvalidValue (1) for bad arguments (null
//     or misaligned pointers, scales that cannot be indexed, an unsupported layout, m < 0), else
//     the launch error.
#pragma once

#include <cstdint>

#include "kernels/lowbit.h"
#include "kernels/ternary.h"

#ifndef __CUDACC__
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#endif

namespace qat::kernels::cuda {

enum class Activation { kFloat32 = 0, kBFloat16 = 1 };

// Activation rows handled by one pass of the small-batch kernels.
inline constexpr int64_t kMaxBatchRows = 16;

// Y[i][r] = scale(r) * sum_c t[r][c] * X[i][c]   (xscales == nullptr), or
// Y[i][r] = (scale(r) * xscales[i]) * sum_c t[r][c] * X[i][c]   (xscales: m device floats).
// With X holding int8 codes as exact floats (|X| <= 127, cols <= 2^17) the sum is exact, and the
// second form gives the bits of the CPU's TernaryGemmInt8 (runtime.h, "qat.act" = "int8").
// A code of 3 (rejected by ValidateTernary) counts as trit 2 here; validate packed data first.
int TernaryGemm(const TernaryView& w, const void* x, int64_t m, Activation x_type,
                const float* xscales, float* y, void* stream);
// m == 1, no activation scale.
inline int TernaryGemv(const TernaryView& w, const void* x, Activation x_type, float* y,
                       void* stream) {
  return TernaryGemm(w, x, 1, x_type, nullptr, y, stream);
}

// Y[i][r] = sum over the groups g of row r of scale[g] * (sum_{c in g} q[r][c] * X[i][c] -
// zero[g] * sum_{c in g} X[i][c]), i.e. sum_c scale * (q - zero) * x with the group's factors
// taken out of the inner sum. w.bits 2 or 4, w.group 32, 64 or 128.
int IntKGemm(const IntKView& w, const void* x, int64_t m, Activation x_type, float* y,
             void* stream);
inline int IntKGemv(const IntKView& w, const void* x, Activation x_type, float* y, void* stream) {
  return IntKGemm(w, x, 1, x_type, y, stream);
}

// cudaGetErrorName and cudaGetErrorString of an error returned above.
const char* ErrorName(int error);
const char* ErrorString(int error);

#ifndef __CUDACC__
// An error code returned above as an absl::Status naming `what` (e.g. the kernel and shape).
inline absl::Status CudaStatus(int error, const std::string& what) {
  if (error == 0) return absl::OkStatus();
  constexpr int kCudaErrorInvalidValue = 1;  // cudaErrorInvalidValue: our argument checks
  const auto make =
      error == kCudaErrorInvalidValue ? absl::InvalidArgumentError : absl::InternalError;
  return make(absl::StrCat(what, " failed: ", ErrorName(error), " (", ErrorString(error), ")"));
}
#endif

}  // namespace qat::kernels::cuda
