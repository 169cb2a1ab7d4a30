// The backend-independent parts of process groups: data types, the blocking and legacy forms of
// the collectives, argument checks and the deadline polling loop.
#include "comm/process_group.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <new>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "comm/internal.h"

namespace qat::comm {

int64_t ElementSize(DataType dtype) {
  switch (dtype) {
    case DataType::kF32:
      return 4;
    case DataType::kF64:
      return 8;
    case DataType::kBF16:
      return 2;
    case DataType::kI32:
      return 4;
    case DataType::kI64:
      return 8;
    case DataType::kU8:
      return 1;
  }
  return 0;
}

const char* DataTypeName(DataType dtype) {
  switch (dtype) {
    case DataType::kF32:
      return "f32";
    case DataType::kF64:
      return "f64";
    case DataType::kBF16:
      return "bf16";
    case DataType::kI32:
      return "i32";
    case DataType::kI64:
      return "i64";
    case DataType::kU8:
      return "u8";
  }
  return "invalid";
}

const char* CollectiveName(Collective collective) {
  switch (collective) {
    case Collective::kAllReduce:
      return "all_reduce";
    case Collective::kReduceScatter:
      return "reduce_scatter";
    case Collective::kAllGather:
      return "all_gather";
    case Collective::kBroadcast:
      return "broadcast";
    case Collective::kBarrier:
      return "barrier";
  }
  return "invalid";
}

namespace {

absl::Status WaitFor(absl::StatusOr<std::unique_ptr<Work>> work) {
  if (!work.ok()) return work.status();
  return (*work)->Wait();
}

absl::Status NotImplemented(const ProcessGroup& g, Collective c) {
  return absl::UnimplementedError(absl::StrCat("comm(", std::string(g.backend()),
                                               "): this process group does not implement ",
                                               CollectiveName(c)));
}

// A collective finished when it was started (the single-process group's).
class FinishedWork : public Work {
 public:
  absl::Status Wait() override { return absl::OkStatus(); }
  bool Done() override { return true; }
};

class SingleProcessGroup : public ProcessGroup {
 public:
  explicit SingleProcessGroup(const ProcessGroupOptions& options) : options_(options) {}
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string_view backend() const override { return "local"; }
  const ProcessGroupOptions& options() const override { return options_; }

  absl::StatusOr<std::unique_ptr<Work>> AllReduceAsync(const void* send, void* recv, int64_t count,
                                                       DataType dtype) override {
    if (absl::Status s = internal::ValidateAllReduce("local", send, recv, count, dtype); !s.ok()) {
      return s;
    }
    return Copy(send, recv, count * ElementSize(dtype));
  }
  absl::StatusOr<std::unique_ptr<Work>> ReduceScatterAsync(const void* send, void* recv,
                                                           int64_t recv_count,
                                                           DataType dtype) override {
    absl::StatusOr<bool> in_place =
        internal::ValidateReduceScatter("local", send, recv, recv_count, dtype, 0, 1);
    if (!in_place.ok()) return in_place.status();
    return Copy(send, recv, recv_count * ElementSize(dtype));
  }
  absl::StatusOr<std::unique_ptr<Work>> AllGatherAsync(const void* send, void* recv,
                                                       int64_t send_count,
                                                       DataType dtype) override {
    absl::StatusOr<bool> in_place =
        internal::ValidateAllGather("local", send, recv, send_count, dtype, 0, 1);
    if (!in_place.ok()) return in_place.status();
    return Copy(send, recv, send_count * ElementSize(dtype));
  }
  absl::StatusOr<std::unique_ptr<Work>> BroadcastAsync(void* data, int64_t count, DataType dtype,
                                                       int root) override {
    if (absl::Status s = internal::ValidateBroadcast("local", data, count, dtype, root, 1);
        !s.ok()) {
      return s;
    }
    return std::unique_ptr<Work>(new FinishedWork);
  }
  absl::StatusOr<std::unique_ptr<Work>> BarrierAsync() override {
    return std::unique_ptr<Work>(new FinishedWork);
  }

 private:
  static std::unique_ptr<Work> Copy(const void* send, void* recv, int64_t bytes) {
    if (send != recv && bytes > 0) std::memcpy(recv, send, size_t(bytes));
    return std::unique_ptr<Work>(new FinishedWork);
  }

  ProcessGroupOptions options_;
};

}  // namespace

const ProcessGroupOptions& ProcessGroup::options() const {
  static const ProcessGroupOptions* defaults = new ProcessGroupOptions();
  return *defaults;
}

absl::StatusOr<std::unique_ptr<Work>> ProcessGroup::AllReduceAsync(const void*, void*, int64_t,
                                                                   DataType) {
  return NotImplemented(*this, Collective::kAllReduce);
}
absl::StatusOr<std::unique_ptr<Work>> ProcessGroup::ReduceScatterAsync(const void*, void*, int64_t,
                                                                       DataType) {
  return NotImplemented(*this, Collective::kReduceScatter);
}
absl::StatusOr<std::unique_ptr<Work>> ProcessGroup::AllGatherAsync(const void*, void*, int64_t,
                                                                   DataType) {
  return NotImplemented(*this, Collective::kAllGather);
}
absl::StatusOr<std::unique_ptr<Work>> ProcessGroup::BroadcastAsync(void*, int64_t, DataType, int) {
  return NotImplemented(*this, Collective::kBroadcast);
}
absl::StatusOr<std::unique_ptr<Work>> ProcessGroup::BarrierAsync() {
  return NotImplemented(*this, Collective::kBarrier);
}

absl::StatusOr<std::shared_ptr<void>> ProcessGroup::AllocateBuffer(int64_t bytes) {
  if (bytes < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "comm(", std::string(backend()), "): cannot allocate a buffer of ", bytes, " bytes"));
  }
  constexpr std::align_val_t kAlign{64};
  void* p = ::operator new(static_cast<size_t>(std::max<int64_t>(bytes, 1)), kAlign, std::nothrow);
  if (p == nullptr) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "comm(", std::string(backend()), "): out of host memory allocating ", bytes, " bytes"));
  }
  return std::shared_ptr<void>(p, [](void* q) { ::operator delete(q, kAlign); });
}

std::shared_ptr<ProcessGroup> NewSingleProcessGroup(const ProcessGroupOptions& options) {
  return std::make_shared<SingleProcessGroup>(options);
}

absl::Status ProcessGroup::AllReduce(const void* send, void* recv, int64_t count, DataType dtype) {
  return WaitFor(AllReduceAsync(send, recv, count, dtype));
}
absl::Status ProcessGroup::ReduceScatter(const void* send, void* recv, int64_t recv_count,
                                         DataType dtype) {
  return WaitFor(ReduceScatterAsync(send, recv, recv_count, dtype));
}
absl::Status ProcessGroup::AllGather(const void* send, void* recv, int64_t send_count,
                                     DataType dtype) {
  return WaitFor(AllGatherAsync(send, recv, send_count, dtype));
}
absl::Status ProcessGroup::Broadcast(void* data, int64_t count, DataType dtype, int root) {
  return WaitFor(BroadcastAsync(data, count, dtype, root));
}
absl::Status ProcessGroup::Barrier() { return WaitFor(BarrierAsync()); }

absl::Status ProcessGroup::AllReduceSum(float* data, int64_t count) {
  return AllReduce(data, data, count, DataType::kF32);
}
absl::Status ProcessGroup::AllReduceSum(double* data, int64_t count) {
  return AllReduce(data, data, count, DataType::kF64);
}
absl::Status ProcessGroup::Broadcast(void* data, int64_t bytes, int root) {
  return Broadcast(data, bytes, DataType::kU8, root);
}

namespace internal {

std::string Describe(Collective collective, int64_t count, DataType dtype) {
  return absl::StrCat(CollectiveName(collective), " of ", count, " x ", DataTypeName(dtype));
}

absl::Status ValidateOptions(const ProcessGroupOptions& options) {
  if (!(options.timeout_s > 0) || !std::isfinite(options.timeout_s)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "comm: ProcessGroupOptions.timeout_s must be a positive number of seconds, got ",
        options.timeout_s));
  }
  if (options.mpi_max_elements_per_call < 1 ||
      options.mpi_max_elements_per_call > std::numeric_limits<int>::max()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "comm: ProcessGroupOptions.mpi_max_elements_per_call must be in [1, ",
        std::numeric_limits<int>::max(), "], got ", options.mpi_max_elements_per_call));
  }
  return absl::OkStatus();
}

namespace {

absl::Status Invalid(const char* backend, Collective c, int64_t count, DataType dtype,
                     const std::string& why) {
  return absl::InvalidArgumentError(
      absl::StrCat("comm(", backend, "): ", Describe(c, count, dtype), ": ", why));
}

// Checks the dtype, the count, and that `elements` elements of the type fit in int64 bytes.
absl::Status CheckCountAndType(const char* backend, Collective c, int64_t count, DataType dtype,
                               int64_t elements_per_count) {
  if (ElementSize(dtype) == 0) {
    return Invalid(backend, c, count, dtype,
                   absl::StrCat("unknown DataType value ", static_cast<int>(dtype)));
  }
  if (count < 0) return Invalid(backend, c, count, dtype, "negative element count");
  const int64_t limit = std::numeric_limits<int64_t>::max() / ElementSize(dtype) /
                        std::max<int64_t>(1, elements_per_count);
  if (count > limit) return Invalid(backend, c, count, dtype, "buffer size overflows int64 bytes");
  return absl::OkStatus();
}

bool Overlap(const void* a, int64_t a_bytes, const void* b, int64_t b_bytes) {
  const uintptr_t x = reinterpret_cast<uintptr_t>(a), y = reinterpret_cast<uintptr_t>(b);
  return a_bytes > 0 && b_bytes > 0 && x < y + uint64_t(b_bytes) && y < x + uint64_t(a_bytes);
}

}  // namespace

absl::Status ValidateAllReduce(const char* backend, const void* send, const void* recv,
                               int64_t count, DataType dtype) {
  const Collective c = Collective::kAllReduce;
  if (absl::Status s = CheckCountAndType(backend, c, count, dtype, 1); !s.ok()) return s;
  if (count > 0 && (send == nullptr || recv == nullptr)) {
    return Invalid(backend, c, count, dtype, "null buffer");
  }
  const int64_t bytes = count * ElementSize(dtype);
  if (send != recv && Overlap(send, bytes, recv, bytes)) {
    return Invalid(backend, c, count, dtype,
                   "send and recv overlap without being the same buffer (in place)");
  }
  return absl::OkStatus();
}

absl::StatusOr<bool> ValidateReduceScatter(const char* backend, const void* send, const void* recv,
                                           int64_t recv_count, DataType dtype, int rank, int size) {
  const Collective c = Collective::kReduceScatter;
  if (absl::Status s = CheckCountAndType(backend, c, recv_count, dtype, size); !s.ok()) return s;
  if (recv_count > 0 && (send == nullptr || recv == nullptr)) {
    return Invalid(backend, c, recv_count, dtype, "null buffer");
  }
  const int64_t block = recv_count * ElementSize(dtype);
  const bool in_place = recv_count > 0 && static_cast<const char*>(send) + rank * block == recv;
  if (!in_place && Overlap(send, block * size, recv, block)) {
    return Invalid(backend, c, recv_count, dtype,
                   "recv overlaps send without being this rank's block of it (in place)");
  }
  return in_place;
}

absl::StatusOr<bool> ValidateAllGather(const char* backend, const void* send, const void* recv,
                                       int64_t send_count, DataType dtype, int rank, int size) {
  const Collective c = Collective::kAllGather;
  if (absl::Status s = CheckCountAndType(backend, c, send_count, dtype, size); !s.ok()) return s;
  if (send_count > 0 && (send == nullptr || recv == nullptr)) {
    return Invalid(backend, c, send_count, dtype, "null buffer");
  }
  const int64_t block = send_count * ElementSize(dtype);
  const bool in_place = send_count > 0 && static_cast<const char*>(recv) + rank * block == send;
  if (!in_place && Overlap(send, block, recv, block * size)) {
    return Invalid(backend, c, send_count, dtype,
                   "send overlaps recv without being this rank's block of it (in place)");
  }
  return in_place;
}

absl::Status ValidateBroadcast(const char* backend, const void* data, int64_t count, DataType dtype,
                               int root, int size) {
  const Collective c = Collective::kBroadcast;
  if (absl::Status s = CheckCountAndType(backend, c, count, dtype, 1); !s.ok()) return s;
  if (count > 0 && data == nullptr) return Invalid(backend, c, count, dtype, "null buffer");
  if (root < 0 || root >= size) {
    return Invalid(backend, c, count, dtype,
                   absl::StrCat("root ", root, " is not a rank of this group of ", size));
  }
  return absl::OkStatus();
}

absl::Status TimeoutError(const char* backend, const std::string& what, int rank, int size,
                          double timeout_s) {
  return absl::DeadlineExceededError(absl::StrFormat(
      "comm(%s): %s on rank %d of %d did not finish within its timeout of %g s: a peer is slow, "
      "hung or dead. The group is unusable now; end the job (comm::AbortJob)",
      backend, what, rank, size, timeout_s));
}

absl::Status BrokenGroupError(const char* backend, const std::string& what, int rank, int size,
                              const std::string& why_broken) {
  return absl::FailedPreconditionError(
      absl::StrCat("comm(", backend, "): cannot start ", what, " on rank ", rank, " of ", size,
                   ": the group is broken since an earlier collective failed (", why_broken, ")"));
}

Clock::time_point DeadlineAfter(double timeout_s) {
  // Clamped to a century so that huge settings cannot overflow the clock arithmetic.
  const double seconds = std::min(timeout_s, 100.0 * 365 * 24 * 3600);
  return Clock::now() +
         std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

void PollPacer::Pause() {
  constexpr std::chrono::seconds kSpinning{1};
  constexpr std::chrono::microseconds kSleep{50};
  if (Clock::now() - start_ < kSpinning) {
    std::this_thread::yield();
  } else {
    std::this_thread::sleep_for(kSleep);
  }
}

}  // namespace internal
}  // namespace qat::comm
