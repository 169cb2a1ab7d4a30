// `qat bench comm`: bandwidth of each collective per message size, with the nccl-tests
// definitions (github.com/NVIDIA/nccl-tests, doc/PERFORMANCE.md):
//   bytes  = the message size: the whole buffer of all_reduce and broadcast, the larger (size() x
//            per-rank) buffer of reduce_scatter (its input) and all_gather (its output);
//   algbw  = bytes / time;
//   busbw  = algbw * 2(n-1)/n for all_reduce, (n-1)/n for reduce_scatter and all_gather, 1 for
//            broadcast (n = ranks): the bandwidth each link sustains in the optimal algorithm,
//            comparable across collectives and rank counts, and with the hardware's peak.
// time is the mean over the timed iterations of one collective, started and waited for in turn,
// and the maximum over ranks (the slowest rank is what a training step waits for).
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "comm/process_group.h"

namespace qat::comm {

struct CommBenchOptions {
  std::vector<Collective> collectives = {Collective::kAllReduce, Collective::kReduceScatter,
                                         Collective::kAllGather, Collective::kBroadcast};
  int64_t min_bytes = 1024;
  int64_t max_bytes = int64_t{64} << 20;
  int64_t step_factor = 4;  // sizes min_bytes, min_bytes * step_factor, ... up to max_bytes
  int warmup_iters = 3;
  int iters = 10;
  DataType dtype = DataType::kF32;
};

struct CommBenchRow {
  Collective collective = Collective::kAllReduce;
  int64_t bytes = 0;  // the message size as defined above (a multiple of the element size)
  int64_t count = 0;  // elements in that message
  double time_us = 0;
  double algbw_gbs = 0;  // GB/s, 1 GB = 1e9 bytes
  double busbw_gbs = 0;
};

// busbw / algbw for a collective over `ranks` ranks (0 for a barrier, which moves no data).
double BusBandwidthFactor(Collective collective, int ranks);

// Runs the bench on `group` (collective: every rank calls it with the same options). The buffers
// come from group.AllocateBuffer (host memory for MPI, GPU memory for NCCL). Sizes too small to
// give every rank one element of a reduce_scatter/all_gather are skipped.
absl::StatusOr<std::vector<CommBenchRow>> RunCommBench(ProcessGroup& group,
                                                       const CommBenchOptions& options);

// The table nccl-tests style: a header naming the backend, ranks, type and iterations, then one
// line per row: collective, bytes, count, time (us), algbw and busbw (GB/s).
std::string FormatCommBenchTable(const std::vector<CommBenchRow>& rows, std::string_view backend,
                                 int ranks, const CommBenchOptions& options);

// RunCommBench, then rank 0 prints the table to `out`.
absl::Status RunCommBenchAndPrint(ProcessGroup& group, const CommBenchOptions& options,
                                  std::FILE* out);

}  // namespace qat::comm
