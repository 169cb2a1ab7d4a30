// Pieces shared by the backends (not part of the public API): argument checks, the wording of
// errors, and the polling loop that waits for a collective until its deadline.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "comm/process_group.h"

namespace qat::comm::internal {

using Clock = std::chrono::steady_clock;

// "all_reduce of 7 x f32".
std::string Describe(Collective collective, int64_t count, DataType dtype);

absl::Status ValidateOptions(const ProcessGroupOptions& options);

// The checks below fail with InvalidArgument naming `backend` and the collective.
absl::Status ValidateAllReduce(const char* backend, const void* send, const void* recv,
                               int64_t count, DataType dtype);
// Returns whether the call is in place (recv == send + rank * recv_count elements).
absl::StatusOr<bool> ValidateReduceScatter(const char* backend, const void* send, const void* recv,
                                           int64_t recv_count, DataType dtype, int rank, int size);
// Returns whether the call is in place (send == recv + rank * send_count elements).
absl::StatusOr<bool> ValidateAllGather(const char* backend, const void* send, const void* recv,
                                       int64_t send_count, DataType dtype, int rank, int size);
absl::Status ValidateBroadcast(const char* backend, const void* data, int64_t count, DataType dtype,
                               int root, int size);

// The DeadlineExceeded error of a collective that did not finish in time.
absl::Status TimeoutError(const char* backend, const std::string& what, int rank, int size,
                          double timeout_s);
// The FailedPrecondition error of a collective started on a broken group.
absl::Status BrokenGroupError(const char* backend, const std::string& what, int rank, int size,
                              const std::string& why_broken);

Clock::time_point DeadlineAfter(double timeout_s);

// Initialises MPI once per process (MPI_THREAD_FUNNELED or better, errors returned as codes) and
// arranges its finalisation at exit. Defined in mpi_group.cc.
absl::Status EnsureMpiInitialized();

// Paces a polling loop. Non-blocking MPI collectives (OpenMPI's libnbc) advance only inside MPI
// calls, one round of their schedule per MPI_Test at best, so the first second of a wait polls as
// fast as it can, only yielding the core (as MPI_Wait spins); a collective still running after
// that is most likely waiting for a late peer, and polls every 50 us from then on so that a long
// wait for a slow or hung rank does not burn a core.
class PollPacer {
 public:
  void Pause();

 private:
  Clock::time_point start_ = Clock::now();
};

}  // namespace qat::comm::internal
