// Where a rank runs: its local rank among the ranks on the same host, found the nccl-tests way
// (each rank hashes its host name, the hashes are all-gathered over MPI, and the local rank is the
// number of lower ranks with the same hash). The NCCL backend gives local rank L the GPU L.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace qat::comm {

// FNV-1a 64 of the host name up to its first '.' (as nccl-tests: "node1" and
// "node1.cluster" are one host).
uint64_t HostHash(std::string_view host_name);

// The number of ranks below `rank` whose hash equals hashes[rank]. -1 if rank is out of range.
int LocalRankFromHostHashes(const std::vector<uint64_t>& hashes, int rank);

struct LocalPlacement {
  int rank = 0;
  int size = 1;
  int local_rank = 0;  // rank among the ranks on this host
  int local_size = 1;  // ranks on this host
  std::string host;
};

// Collective over MPI_COMM_WORLD (initialises MPI if needed).
absl::StatusOr<LocalPlacement> MpiLocalPlacement();

}  // namespace qat::comm
