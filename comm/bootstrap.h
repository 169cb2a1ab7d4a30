// Where a rank runs: its node, its local rank among the ranks of that node, and the cores the
// node's ranks may use. The node is MPI's, not a host name's: the ranks that share memory
// (MPI_Comm_split_type with MPI_COMM_TYPE_SHARED), so hosts that share a name (containers,
// network namespaces) are still told apart. The NCCL backend gives local rank L the GPU L; the
// trainer divides the node's cores between its ranks.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace qat::comm {

struct LocalPlacement {
  int rank = 0;
  int size = 1;
  int local_rank = 0;  // rank among the ranks on this node (in world-rank order)
  int local_size = 1;  // ranks on this node
  int node = 0;        // this rank's node; nodes are numbered in the order of their lowest rank
  int nodes = 1;       // nodes in the job
  // Physical cores the ranks of this node may run on together: the union of their CPU affinity
  // masks, one per core (hyperthreads of a core count once, as libtorch's default thread count),
  // capped by the CPU quota of their cgroup. At least 1.
  int node_cores = 1;
  std::string host;                    // this rank's host name (MPI_Get_processor_name)
  std::vector<int> rank_node;          // every rank's node
  std::vector<std::string> rank_host;  // every rank's host name
};

// Collective over MPI_COMM_WORLD (initialises MPI if needed).
absl::StatusOr<LocalPlacement> MpiLocalPlacement();

// node_cores for this process alone, without MPI: the physical cores of its affinity mask, capped
// by its cgroup's quota, at least 1. The default thread count of single-process commands (eval,
// quantize, plan): libtorch's own default is hardware_concurrency / 2 on x86-64, which assumes
// two hyperthreads per core and gives 1 thread on a 2-vCPU machine without them.
int ProcessCores();

// The pieces of node_cores, for one process (exposed for tests):
// the physical cores among `cpus` (CPU numbers) per /sys/devices/system/cpu/cpuN/topology (the
// count of `cpus` when the topology cannot be read) ...
int PhysicalCores(const std::vector<int>& cpus);
// ... and the CPU quota of this process's cgroup (v2 cpu.max, v1 cfs_quota_us, the tightest of
// its ancestors), rounded up to whole CPUs; 0 when there is none.
int CgroupCpuLimit();

}  // namespace qat::comm
