// Process groups: the collectives of data-parallel training on raw buffers, over two backends:
//   - MPI for CPU buffers (runs anywhere, also without mpirun as a world of one rank), and
//   - NCCL for CUDA buffers (bootstrapped by MPI; see NewNcclGroup).
// No libtorch here: a buffer is a pointer, an element count and a DataType.
//
// Every collective is asynchronous underneath: the *Async methods start it and return a Work
// handle whose Wait() finishes it; the plain methods start and wait. All ranks of a group must
// start the same collectives, with the same counts and types, in the same order.
//
// Every collective has a deadline, options().timeout_s after it was started. A collective still
// running at its deadline fails with DeadlineExceeded (naming the operation, the rank, the group
// size and the element count) and leaves its group *broken*: the ranks disagree on how far they
// got, so every later collective on that group fails with FailedPrecondition. The only sound way
// on from a comm error in a multi-rank job is AbortJob(), which stops the peers too.
#pragma once

#include <cstdint>
#include <memory>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace qat::comm {

// Element types of the collectives; reductions are sums. BF16 buffers hold the raw bits as
// uint16 (the upper half of an IEEE float32); their sums round to nearest even. U8 is for raw
// bytes; integer sums that overflow are backend-defined (OpenMPI 4.1 saturates u8 sums).
enum class DataType : int { kF32 = 0, kF64 = 1, kBF16 = 2, kI32 = 3, kI64 = 4, kU8 = 5 };
inline constexpr int kNumDataTypes = 6;

// Bytes per element (0 for a value outside the enum).
int64_t ElementSize(DataType dtype);
// "f32", "f64", "bf16", "i32", "i64", "u8" ("invalid" outside the enum).
const char* DataTypeName(DataType dtype);

enum class Collective : int { kAllReduce, kReduceScatter, kAllGather, kBroadcast, kBarrier };
// "all_reduce", "reduce_scatter", "all_gather", "broadcast", "barrier".
const char* CollectiveName(Collective collective);

struct ProcessGroupOptions {
  // Deadline of every collective, counted from the moment it is started. Must be > 0.
  double timeout_s = 600.0;
  // NCCL only: the CUDA stream (a cudaStream_t) that produces the inputs and consumes the
  // outputs. Collectives run on the group's own stream, after the work queued on this stream when
  // they were started; Wait() makes this stream wait for the result. nullptr = the legacy default
  // stream. The MPI backend ignores it.
  void* cuda_compute_stream = nullptr;
  // MPI only: the largest element count of one MPI call (MPI counts are int); larger buffers are
  // split into several calls. All ranks must use the same value. Lowered by tests.
  int64_t mpi_max_elements_per_call = int64_t{1} << 30;
};

// The handle of a started collective.
class Work {
 public:
  // A Work destroyed before Wait() waits first (so the library never touches a buffer the
  // caller has freed), and prints the error, if any, to stderr.
  virtual ~Work() = default;
  // Blocks until the collective has finished on this rank (its output is then ready to read; for
  // NCCL: on the compute stream) or its deadline has passed. Repeated calls return the same status.
  virtual absl::Status Wait() = 0;
  // Makes progress without blocking; true once Wait() would return at once.
  virtual bool Done() = 0;
};

// A group of ranks. The backends implement every virtual method; the defaults exist so that
// small stand-ins (a test's group of one) need only rank(), size() and what they use: the async
// collectives default to Unimplemented, and the four trainer methods to the new collectives.
class ProcessGroup {
 public:
  virtual ~ProcessGroup() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // "mpi", "nccl" or "local" (the single-process group); "custom" by default.
  virtual std::string_view backend() const { return "custom"; }
  // Default: ProcessGroupOptions{}.
  virtual const ProcessGroupOptions& options() const;

  // The collectives. Buffers must stay valid, and inputs unchanged, until Wait() has returned.
  // A count of 0 is a valid (empty) collective. Invalid arguments (negative counts, null buffers,
  // an unknown DataType, a root outside [0, size), overlapping buffers other than the in-place
  // forms named below) fail with InvalidArgument before anything is started.
  // MPI: a started collective advances inside MPI calls only (Done(), Wait(), later collectives);
  // call Done() now and then to overlap it with other work. All calls from one thread.
  //
  // recv[i] = sum over ranks of send[i], i < count. In place when send == recv.
  virtual absl::StatusOr<std::unique_ptr<Work>> AllReduceAsync(const void* send, void* recv,
                                                               int64_t count, DataType dtype);
  // send holds size() * recv_count elements; recv[i] = sum over ranks of
  // send[rank() * recv_count + i]. In place when recv == send + rank() * recv_count (elements).
  virtual absl::StatusOr<std::unique_ptr<Work>> ReduceScatterAsync(const void* send, void* recv,
                                                                   int64_t recv_count,
                                                                   DataType dtype);
  // recv holds size() * send_count elements; recv[r * send_count + i] = send of rank r [i].
  // In place when send == recv + rank() * send_count (elements).
  virtual absl::StatusOr<std::unique_ptr<Work>> AllGatherAsync(const void* send, void* recv,
                                                               int64_t send_count, DataType dtype);
  // Copies count elements of data from rank `root` into data of every rank.
  virtual absl::StatusOr<std::unique_ptr<Work>> BroadcastAsync(void* data, int64_t count,
                                                               DataType dtype, int root);
  virtual absl::StatusOr<std::unique_ptr<Work>> BarrierAsync();

  // Memory the collectives of this backend work on (host memory for MPI and by default, CUDA
  // device memory of this rank's GPU for NCCL), freed when the last copy of the pointer goes.
  virtual absl::StatusOr<std::shared_ptr<void>> AllocateBuffer(int64_t bytes);

  // Blocking forms: start, then Wait().
  absl::Status AllReduce(const void* send, void* recv, int64_t count, DataType dtype);
  absl::Status ReduceScatter(const void* send, void* recv, int64_t recv_count, DataType dtype);
  absl::Status AllGather(const void* send, void* recv, int64_t send_count, DataType dtype);
  absl::Status Broadcast(void* data, int64_t count, DataType dtype, int root);

  // The trainer's interface (virtual, as before the async collectives came): in-place sums over
  // all ranks, a byte broadcast from `root`, and a barrier.
  virtual absl::Status AllReduceSum(float* data, int64_t count);
  virtual absl::Status AllReduceSum(double* data, int64_t count);
  virtual absl::Status Broadcast(void* data, int64_t bytes, int root);
  virtual absl::Status Barrier();
};

// A group of one process (rank 0 of 1) on host memory, without MPI: every collective is a local
// copy (or nothing, in place). For single-rank references and tools that take a group.
std::shared_ptr<ProcessGroup> NewSingleProcessGroup(const ProcessGroupOptions& options = {});

// Initialises MPI once per process (MPI_THREAD_FUNNELED: all comm calls from the thread that
// made the first one; also without mpirun: a singleton world of one rank) and returns the world
// group over a duplicate of MPI_COMM_WORLD. MPI is finalised at process exit; a process that
// exits with collectives still pending after a timeout aborts the job instead (finalising would
// hang or crash). The timeout is ProcessGroupOptions' default unless the environment variable
// QAT_COMM_TIMEOUT_S holds a positive number of seconds.
absl::StatusOr<std::shared_ptr<ProcessGroup>> MpiWorld();

// A new MPI group of all ranks (its own communicator, so its collectives never match those of
// other groups). Collective: every rank must call it, in the same order as other group creations.
absl::StatusOr<std::shared_ptr<ProcessGroup>> NewMpiGroup(const ProcessGroupOptions& options);

// A new NCCL group of all MPI ranks, the nccl-tests way: rank and size from MPI, the local rank
// from MPI's shared-memory split (comm/bootstrap.h: ranks on one node in rank order), one GPU per
// rank (cudaSetDevice(local rank)), rank 0 makes the ncclUniqueId and MPI broadcasts it.
// Collective. Unimplemented when this build has no NCCL (built without CUDA); FailedPrecondition on
// every rank when some rank has no GPU of its own.
absl::StatusOr<std::shared_ptr<ProcessGroup>> NewNcclGroup(const ProcessGroupOptions& options);
// Whether this build has the NCCL backend.
bool NcclBuilt();

// Prints "qat: rank R of N: fatal: <message>" to stderr and ends the whole job (MPI_Abort), so
// that no peer waits for this rank forever. Call it when a rank cannot go on in a multi-rank job.
[[noreturn]] void AbortJob(std::string_view message);

}  // namespace qat::comm
