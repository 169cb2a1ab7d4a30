// NewNcclGroup of a build without CUDA/NCCL: the NCCL backend lives in nccl_group.cc, which is
// compiled only when CMake finds CUDA and NCCL.
#include "comm/process_group.h"

namespace qat::comm {

absl::StatusOr<std::shared_ptr<ProcessGroup>> NewNcclGroup(const ProcessGroupOptions&) {
  return absl::UnimplementedError(
      "comm: this build of qat has no NCCL backend (it was configured without CUDA/NCCL); "
      "rebuild with -DQAT_CUDA=ON on a machine with the CUDA toolkit and NCCL, or use the MPI "
      "backend for host buffers");
}

bool NcclBuilt() { return false; }

}  // namespace qat::comm
