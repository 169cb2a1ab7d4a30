// The NCCL backend: collectives on CUDA buffers, one GPU per rank, bootstrapped over MPI the
// nccl-tests way (see NewNcclGroup in process_group.h). Compiled only when CMake finds CUDA and
// NCCL; nccl_unavailable.cc stands in otherwise.
//
// Stream ordering: each collective runs on the group's own stream, after an event recorded on the
// compute stream when it is started (so it sees the inputs the compute stream produced), and
// records an event when it ends. Work::Wait() polls that event until it fires or the deadline
// passes, then makes the compute stream wait for it (so later compute work sees the outputs).
//
// Timeouts: a collective whose event has not fired by its deadline (a peer hung or died, NCCL
// kernels spin forever) aborts the communicator (ncclCommAbort ends its kernels), breaking the
// group; an asynchronous NCCL error (ncclCommGetAsyncError) does the same without waiting.
#include <cuda_runtime_api.h>
#include <mpi.h>
#include <nccl.h>

#include <cstdio>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "comm/bootstrap.h"
#include "comm/internal.h"
#include "comm/process_group.h"

namespace qat::comm {
namespace {

using internal::Clock;

constexpr char kBackend[] = "nccl";

std::string CudaText(cudaError_t e) {
  return absl::StrCat(cudaGetErrorName(e), " (", cudaGetErrorString(e), ")");
}

ncclDataType_t NcclType(DataType dtype) {
  switch (dtype) {
    case DataType::kF32:
      return ncclFloat32;
    case DataType::kF64:
      return ncclFloat64;
    case DataType::kBF16:
      return ncclBfloat16;
    case DataType::kI32:
      return ncclInt32;
    case DataType::kI64:
      return ncclInt64;
    case DataType::kU8:
      return ncclUint8;
  }
  return ncclFloat32;  // unreachable: arguments are validated first
}

// Makes `device` current for a scope (the caller's thread may be using another GPU).
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) : device_(device) {
    if (cudaGetDevice(&previous_) != cudaSuccess) previous_ = -1;
    if (previous_ != device_) cudaSetDevice(device_);
  }
  ~DeviceGuard() {
    if (previous_ >= 0 && previous_ != device_) cudaSetDevice(previous_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int device_;
  int previous_ = -1;
};

// What a group and its Works share.
struct NcclState {
  ncclComm_t comm = nullptr;  // null once aborted
  int rank = 0;
  int size = 1;
  int device = 0;
  ProcessGroupOptions options;
  cudaStream_t stream = nullptr;   // the group's own stream
  cudaStream_t compute = nullptr;  // the caller's compute stream (nullptr: legacy default)
  cudaEvent_t ready = nullptr;     // recorded on `compute` as each collective starts
  void* barrier_word = nullptr;    // one device int32 all-reduced by Barrier()
  std::string broken;              // why the group is unusable; empty while it is fine

  void Abort(const std::string& why) {
    if (comm != nullptr) {
      ncclCommAbort(comm);
      comm = nullptr;
    }
    if (broken.empty()) broken = why;
  }

  ~NcclState() {
    DeviceGuard guard(device);
    if (comm != nullptr) ncclCommDestroy(comm);
    if (barrier_word != nullptr) cudaFree(barrier_word);
    if (ready != nullptr) cudaEventDestroy(ready);
    if (stream != nullptr) cudaStreamDestroy(stream);
  }
};

class NcclWork : public Work {
 public:
  NcclWork(std::shared_ptr<NcclState> state, std::string what, Clock::time_point deadline,
           cudaEvent_t done)
      : state_(std::move(state)), what_(std::move(what)), deadline_(deadline), done_(done) {}

  ~NcclWork() override {
    if (!result_.has_value()) {
      if (absl::Status s = Wait(); !s.ok()) {
        std::fprintf(stderr, "qat comm: a collective dropped without Wait() failed: %s\n",
                     std::string(s.message()).c_str());
      }
    }
    // Safe while the event is pending too: its resources go once the device has passed it.
    cudaEventDestroy(done_);
  }

  bool Done() override {
    if (result_.has_value()) return true;
    DeviceGuard guard(state_->device);
    const cudaError_t e = cudaEventQuery(done_);
    if (e == cudaSuccess) {
      if (const cudaError_t w = cudaStreamWaitEvent(state_->compute, done_, 0); w != cudaSuccess) {
        Fail(absl::InternalError(
            Prefix("ordering the compute stream after it failed: " + CudaText(w))));
      } else {
        result_ = absl::OkStatus();
      }
      return true;
    }
    if (e != cudaErrorNotReady) {
      Fail(absl::InternalError(Prefix("CUDA error while it ran: " + CudaText(e))));
      return true;
    }
    if (state_->comm == nullptr) {
      Fail(absl::AbortedError(Prefix("the communicator was aborted (" + state_->broken + ")")));
      return true;
    }
    ncclResult_t async = ncclSuccess;
    if (ncclCommGetAsyncError(state_->comm, &async) != ncclSuccess ||
        (async != ncclSuccess && async != ncclInProgress)) {
      Fail(absl::InternalError(
          Prefix(absl::StrCat("NCCL reported an error: ", ncclGetErrorString(async)))));
      return true;
    }
    return false;
  }

  absl::Status Wait() override {
    internal::PollPacer pacer;
    while (!Done()) {
      if (Clock::now() >= deadline_) {
        Fail(internal::TimeoutError(kBackend, what_, state_->rank, state_->size,
                                    state_->options.timeout_s));
        break;
      }
      pacer.Pause();
    }
    return *result_;
  }

 private:
  std::string Prefix(const std::string& why) const {
    return absl::StrCat("comm(nccl): ", what_, " on rank ", state_->rank, " of ", state_->size,
                        ": ", why);
  }

  void Fail(absl::Status error) {
    state_->Abort(std::string(error.message()));
    result_ = std::move(error);
  }

  std::shared_ptr<NcclState> state_;
  std::string what_;
  Clock::time_point deadline_;
  cudaEvent_t done_;
  std::optional<absl::Status> result_;
};

class NcclGroup : public ProcessGroup {
 public:
  explicit NcclGroup(std::shared_ptr<NcclState> state) : state_(std::move(state)) {}

  int rank() const override { return state_->rank; }
  int size() const override { return state_->size; }
  std::string_view backend() const override { return kBackend; }
  const ProcessGroupOptions& options() const override { return state_->options; }

  absl::StatusOr<std::unique_ptr<Work>> AllReduceAsync(const void* send, void* recv, int64_t count,
                                                       DataType dtype) override {
    if (absl::Status s = internal::ValidateAllReduce(kBackend, send, recv, count, dtype); !s.ok()) {
      return s;
    }
    const std::string what = internal::Describe(Collective::kAllReduce, count, dtype);
    const int64_t bytes = count * ElementSize(dtype);
    if (absl::Status s = CheckDeviceMemory(what, {send, recv}, bytes); !s.ok()) return s;
    return Start(what, [&] {
      return ncclAllReduce(send, recv, size_t(count), NcclType(dtype), ncclSum, state_->comm,
                           state_->stream);
    });
  }

  absl::StatusOr<std::unique_ptr<Work>> ReduceScatterAsync(const void* send, void* recv,
                                                           int64_t recv_count,
                                                           DataType dtype) override {
    absl::StatusOr<bool> in_place = internal::ValidateReduceScatter(
        kBackend, send, recv, recv_count, dtype, state_->rank, state_->size);
    if (!in_place.ok()) return in_place.status();
    const std::string what = internal::Describe(Collective::kReduceScatter, recv_count, dtype);
    const int64_t bytes = recv_count * ElementSize(dtype);
    if (absl::Status s = CheckDeviceMemory(what, {send, recv}, bytes); !s.ok()) return s;
    // NCCL's in-place convention (recv = send + rank * recv_count) is ours: nothing to adapt.
    return Start(what, [&] {
      return ncclReduceScatter(send, recv, size_t(recv_count), NcclType(dtype), ncclSum,
                               state_->comm, state_->stream);
    });
  }

  absl::StatusOr<std::unique_ptr<Work>> AllGatherAsync(const void* send, void* recv,
                                                       int64_t send_count,
                                                       DataType dtype) override {
    absl::StatusOr<bool> in_place = internal::ValidateAllGather(kBackend, send, recv, send_count,
                                                                dtype, state_->rank, state_->size);
    if (!in_place.ok()) return in_place.status();
    const std::string what = internal::Describe(Collective::kAllGather, send_count, dtype);
    const int64_t bytes = send_count * ElementSize(dtype);
    if (absl::Status s = CheckDeviceMemory(what, {send, recv}, bytes); !s.ok()) return s;
    return Start(what, [&] {
      return ncclAllGather(send, recv, size_t(send_count), NcclType(dtype), state_->comm,
                           state_->stream);
    });
  }

  absl::StatusOr<std::unique_ptr<Work>> BroadcastAsync(void* data, int64_t count, DataType dtype,
                                                       int root) override {
    if (absl::Status s =
            internal::ValidateBroadcast(kBackend, data, count, dtype, root, state_->size);
        !s.ok()) {
      return s;
    }
    const std::string what = internal::Describe(Collective::kBroadcast, count, dtype);
    if (absl::Status s = CheckDeviceMemory(what, {data}, count * ElementSize(dtype)); !s.ok()) {
      return s;
    }
    return Start(what, [&] {
      return ncclBroadcast(data, data, size_t(count), NcclType(dtype), root, state_->comm,
                           state_->stream);
    });
  }

  absl::StatusOr<std::unique_ptr<Work>> BarrierAsync() override {
    return Start("barrier", [&] {
      return ncclAllReduce(state_->barrier_word, state_->barrier_word, 1, ncclInt32, ncclSum,
                           state_->comm, state_->stream);
    });
  }

  absl::StatusOr<std::shared_ptr<void>> AllocateBuffer(int64_t bytes) override {
    if (bytes < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("comm(nccl): cannot allocate a buffer of ", bytes, " bytes"));
    }
    DeviceGuard guard(state_->device);
    void* p = nullptr;
    if (const cudaError_t e = cudaMalloc(&p, size_t(std::max<int64_t>(bytes, 1)));
        e != cudaSuccess) {
      return absl::ResourceExhaustedError(absl::StrCat("comm(nccl): cudaMalloc of ", bytes,
                                                       " bytes on GPU ", state_->device,
                                                       " failed: ", CudaText(e)));
    }
    return std::shared_ptr<void>(p, [](void* q) { cudaFree(q); });
  }

 private:
  // NCCL reads and writes device memory of this rank's GPU: anything else would fail inside a
  // kernel (or silently read the wrong GPU), so it is refused up front.
  absl::Status CheckDeviceMemory(const std::string& what, std::initializer_list<const void*> ptrs,
                                 int64_t bytes) const {
    if (bytes == 0) return absl::OkStatus();
    for (const void* p : ptrs) {
      const std::string buffer = absl::StrFormat("%s: buffer %p", what, p);
      cudaPointerAttributes attr{};
      const cudaError_t e = cudaPointerGetAttributes(&attr, p);
      if (e != cudaSuccess) {
        cudaGetLastError();  // clear the error so it does not surface elsewhere
        return absl::InvalidArgumentError(
            absl::StrCat("comm(nccl): ", buffer, " is not CUDA memory: ", CudaText(e)));
      }
      if (attr.type == cudaMemoryTypeManaged) continue;
      if (attr.type != cudaMemoryTypeDevice) {
        return absl::InvalidArgumentError(
            absl::StrCat("comm(nccl): ", buffer,
                         " is host memory; the NCCL backend works on CUDA device memory"));
      }
      if (attr.device != state_->device) {
        return absl::InvalidArgumentError(absl::StrCat("comm(nccl): ", buffer, " is on GPU ",
                                                       attr.device, " but this rank uses GPU ",
                                                       state_->device));
      }
    }
    return absl::OkStatus();
  }

  template <typename Launch>
  absl::StatusOr<std::unique_ptr<Work>> Start(const std::string& what, Launch launch) {
    if (!state_->broken.empty()) {
      return internal::BrokenGroupError(kBackend, what, state_->rank, state_->size, state_->broken);
    }
    DeviceGuard guard(state_->device);
    const Clock::time_point deadline = internal::DeadlineAfter(state_->options.timeout_s);
    auto fail = [&](const std::string& why) -> absl::Status {
      const std::string message =
          absl::StrCat("comm(nccl): starting ", what, " on rank ", state_->rank, " of ",
                       state_->size, " failed: ", why);
      state_->Abort(message);
      return absl::InternalError(message);
    };
    if (cudaError_t e = cudaEventRecord(state_->ready, state_->compute); e != cudaSuccess) {
      return fail("cudaEventRecord on the compute stream: " + CudaText(e));
    }
    if (cudaError_t e = cudaStreamWaitEvent(state_->stream, state_->ready, 0); e != cudaSuccess) {
      return fail("cudaStreamWaitEvent: " + CudaText(e));
    }
    if (const ncclResult_t r = launch(); r != ncclSuccess) {
      return fail(absl::StrCat(ncclGetErrorString(r), " (", ncclGetLastError(state_->comm), ")"));
    }
    cudaEvent_t done = nullptr;
    if (cudaError_t e = cudaEventCreateWithFlags(&done, cudaEventDisableTiming); e != cudaSuccess) {
      return fail("cudaEventCreate: " + CudaText(e));
    }
    if (cudaError_t e = cudaEventRecord(done, state_->stream); e != cudaSuccess) {
      cudaEventDestroy(done);
      return fail("cudaEventRecord on the NCCL stream: " + CudaText(e));
    }
    return std::unique_ptr<Work>(new NcclWork(state_, what, deadline, done));
  }

  std::shared_ptr<NcclState> state_;
};

// True on every rank when `ok` is true on every rank (a blocking MPI all-reduce): each step of
// the set-up ends with one, so that no rank goes on into ncclCommInitRank (which would wait for
// ever) while another has given up.
absl::StatusOr<bool> AllRanksOk(bool ok) {
  int mine = ok ? 1 : 0, all = 0;
  if (MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD) != MPI_SUCCESS) {
    return absl::InternalError("comm(nccl): MPI_Allreduce during the NCCL set-up failed");
  }
  return all == 1;
}

absl::Status PeerFailed(const LocalPlacement& p, const std::string& step) {
  return absl::FailedPreconditionError(
      absl::StrCat("comm(nccl): rank ", p.rank, " of ", p.size, " on ", p.host, ": ", step,
                   " failed on another rank (see its error); no NCCL group"));
}

}  // namespace

absl::StatusOr<std::shared_ptr<ProcessGroup>> NewNcclGroup(const ProcessGroupOptions& options) {
  if (absl::Status s = internal::ValidateOptions(options); !s.ok()) return s;
  absl::StatusOr<LocalPlacement> placement = MpiLocalPlacement();
  if (!placement.ok()) return placement.status();
  const LocalPlacement& p = *placement;
  const std::string where =
      absl::StrCat("comm(nccl): rank ", p.rank, " of ", p.size, " (local rank ", p.local_rank,
                   " of ", p.local_size, " on ", p.host, "): ");

  // 1. One GPU per rank: local rank L takes GPU L.
  absl::Status local = absl::OkStatus();
  int devices = 0;
  if (const cudaError_t e = cudaGetDeviceCount(&devices); e != cudaSuccess) {
    cudaGetLastError();
    local =
        absl::FailedPreconditionError(absl::StrCat(where, "no usable CUDA device: ", CudaText(e)));
  } else if (p.local_rank >= devices) {
    local = absl::FailedPreconditionError(absl::StrCat(where, "the host has ", devices,
                                                       " CUDA device(s) for ", p.local_size,
                                                       " ranks; start at most one rank per GPU"));
  } else if (const cudaError_t e = cudaSetDevice(p.local_rank); e != cudaSuccess) {
    local = absl::FailedPreconditionError(
        absl::StrCat(where, "cudaSetDevice(", p.local_rank, ") failed: ", CudaText(e)));
  }
  absl::StatusOr<bool> all_ok = AllRanksOk(local.ok());
  if (!all_ok.ok()) return all_ok.status();
  if (!local.ok()) return local;
  if (!*all_ok) return PeerFailed(p, "choosing a GPU");

  // 2. Rank 0 makes the unique id, MPI broadcasts it (with whether that worked).
  struct {
    ncclUniqueId id;
    int ok;
  } hello{};
  if (p.rank == 0) hello.ok = ncclGetUniqueId(&hello.id) == ncclSuccess ? 1 : 0;
  if (MPI_Bcast(&hello, sizeof(hello), MPI_BYTE, 0, MPI_COMM_WORLD) != MPI_SUCCESS) {
    return absl::InternalError(absl::StrCat(where, "broadcasting the ncclUniqueId failed"));
  }
  if (!hello.ok)
    return absl::InternalError(absl::StrCat(where, "ncclGetUniqueId failed on rank 0"));

  // 3. The group's stream, events and barrier word, then the communicator.
  auto state = std::make_shared<NcclState>();
  state->rank = p.rank;
  state->size = p.size;
  state->device = p.local_rank;
  state->options = options;
  state->compute = static_cast<cudaStream_t>(options.cuda_compute_stream);
  cudaError_t e = cudaStreamCreateWithFlags(&state->stream, cudaStreamNonBlocking);
  if (e == cudaSuccess) e = cudaEventCreateWithFlags(&state->ready, cudaEventDisableTiming);
  if (e == cudaSuccess) e = cudaMalloc(&state->barrier_word, sizeof(int32_t));
  if (e == cudaSuccess) e = cudaMemset(state->barrier_word, 0, sizeof(int32_t));
  local = e == cudaSuccess ? absl::OkStatus()
                           : absl::InternalError(absl::StrCat(
                                 where, "creating the NCCL stream and events: ", CudaText(e)));
  all_ok = AllRanksOk(local.ok());
  if (!all_ok.ok()) return all_ok.status();
  if (!local.ok()) return local;
  if (!*all_ok) return PeerFailed(p, "creating the CUDA stream");

  if (const ncclResult_t r = ncclCommInitRank(&state->comm, p.size, hello.id, p.rank);
      r != ncclSuccess) {
    state->comm = nullptr;
    local =
        absl::InternalError(absl::StrCat(where, "ncclCommInitRank failed: ", ncclGetErrorString(r),
                                         " (", ncclGetLastError(nullptr), ")"));
  }
  all_ok = AllRanksOk(local.ok());
  if (!all_ok.ok()) return all_ok.status();
  if (!local.ok()) return local;
  if (!*all_ok) {
    state->Abort("ncclCommInitRank failed on another rank");
    return PeerFailed(p, "ncclCommInitRank");
  }
  return std::shared_ptr<ProcessGroup>(std::make_shared<NcclGroup>(std::move(state)));
}

bool NcclBuilt() { return true; }

}  // namespace qat::comm
