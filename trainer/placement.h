// Where the ranks of a training job run, checked and used before training starts:
// - threads per rank, decided on each node by its own ranks (not by the machine that ran mpirun);
// - the run directory, which every rank must see as the same directory.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "comm/bootstrap.h"
#include "comm/process_group.h"

namespace qat::trainer {

// The intra-op threads of one rank and what decided them, in this order:
//   train.threads when > 0 ("train.threads");
//   else OMP_NUM_THREADS when it is a positive integer ("OMP_NUM_THREADS");
//   else the node's cores divided between the node's ranks, at least 1 ("cores / ranks").
// Results are bit-exact across runs only at equal threads per rank (README): the split of a
// reduction over threads changes the order of its floating-point sums.
struct ThreadChoice {
  int threads = 1;
  std::string source;
};
ThreadChoice ChooseThreads(int64_t recipe_threads, const char* omp_num_threads, int node_cores,
                           int ranks_on_node);

// A single-process command's intra-op threads (eval, quantize, plan): ChooseThreads with its
// --threads flag, OMP_NUM_THREADS, or comm::ProcessCores(); applied with at::set_num_threads.
// Returns the count.
int SetProcessThreads(int64_t flag_threads);

// Applies this rank's choice (at::set_num_threads). Collective over `g`: returns, on every rank,
// the log line of what each node chose ("threads per rank, decided on each node (2 nodes): node 0
// (host-a): 2 ranks, 4 cores -> 2 threads (cores / ranks); node 1 (host-b): ...").
absl::StatusOr<std::string> SetThreadsPerRank(int64_t recipe_threads,
                                              const comm::LocalPlacement& placement,
                                              comm::ProcessGroup& g);

// Collective over `g`: rank 0 creates `dir` and writes a file with a random nonce there, and every
// rank reads it back. FailedPrecondition naming the ranks (and their hosts) that do not see it:
// checkpoints are written by every rank and read by every rank on resume, so all must share one
// directory (a shared filesystem across nodes).
absl::Status CheckSharedRunDir(const std::string& dir, const comm::LocalPlacement& placement,
                               comm::ProcessGroup& g);

}  // namespace qat::trainer
