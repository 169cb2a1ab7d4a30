// The GPU entry points of a build without CUDA (QAT_CUDA=OFF or no nvcc): they say so.
#include "absl/status/status.h"
#include "kernels/kernel_bench.h"

namespace qat::kernels {

absl::Status RunGpuKernelBench(const KernelBenchOptions&, const DenseTimer&, std::FILE*) {
  return absl::FailedPreconditionError(
      "this build has no CUDA kernels (configure with -DQAT_CUDA=ON where nvcc is installed)");
}

}  // namespace qat::kernels
