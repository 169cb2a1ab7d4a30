// Process groups: the collectives the trainer needs, over MPI (CPU buffers, runs anywhere) and,
// later, NCCL (CUDA buffers, bootstrapped by MPI).
#pragma once

#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace qat::comm {

class ProcessGroup {
 public:
  virtual ~ProcessGroup() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // In-place sum over all ranks.
  virtual absl::Status AllReduceSum(float* data, int64_t count) = 0;
  virtual absl::Status AllReduceSum(double* data, int64_t count) = 0;
  // Copies `bytes` bytes from `root` to every rank.
  virtual absl::Status Broadcast(void* data, int64_t bytes, int root) = 0;
  virtual absl::Status Barrier() = 0;
};

// Initialises MPI once per process (also without mpirun: a singleton world of one rank) and
// returns the world group. MPI is finalised at process exit.
absl::StatusOr<std::shared_ptr<ProcessGroup>> MpiWorld();

}  // namespace qat::comm
