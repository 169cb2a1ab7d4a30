// The MPI backend: non-blocking MPI collectives (MPI_Iallreduce, ...) on host buffers, finished
// by polling MPI_Testall until done or the deadline, plus MPI start-up, shut-down and AbortJob.
//
// A collective that times out cannot be cancelled (MPI forbids cancelling or freeing collective
// requests), so its requests become *orphans* of the group: they keep the user's buffers in use
// until a late peer completes them. The group is broken from then on. When the group goes away it
// gives its orphans a grace period to complete; if they do not, the communicator is leaked rather
// than freed (freeing it, or finalising MPI, with a collective pending crashes OpenMPI), and a
// process that exits with orphans aborts the job instead of finalising.
#include <mpi.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "comm/bf16.h"
#include "comm/internal.h"
#include "comm/process_group.h"

namespace qat::comm {
namespace {

using internal::Clock;

constexpr char kBackend[] = "mpi";
// A group destroyed with orphans is one being given up on (the job ends next): a short grace.
constexpr double kOrphanGraceSeconds = 0.5;
// How long a rank whose collective timed out waits for its peers' answers to the roll call.
constexpr double kRollCallSeconds = 1;
constexpr int kRollCallAskTag = 1, kRollCallAnswerTag = 2;

// Requests of timed-out collectives still pending, over all groups.
std::atomic<int64_t> g_orphaned_requests{0};
MPI_Op g_bf16_sum = MPI_OP_NULL;

bool MpiActive() {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  return initialized && !finalized;
}

std::string MpiErrorText(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(code, text, &len) != MPI_SUCCESS) return absl::StrCat("MPI error ", code);
  return std::string(text, len);
}

// inout[i] = bf16(float(in[i]) + float(inout[i])): MPI has no bfloat16 type.
void Bf16SumOp(void* in, void* inout, int* len, MPI_Datatype*) {
  const uint16_t* a = static_cast<const uint16_t*>(in);
  uint16_t* b = static_cast<uint16_t*>(inout);
  for (int i = 0; i < *len; ++i) b[i] = FloatToBf16(Bf16ToFloat(a[i]) + Bf16ToFloat(b[i]));
}

MPI_Datatype MpiType(DataType dtype) {
  switch (dtype) {
    case DataType::kF32:
      return MPI_FLOAT;
    case DataType::kF64:
      return MPI_DOUBLE;
    case DataType::kBF16:
      return MPI_UINT16_T;
    case DataType::kI32:
      return MPI_INT32_T;
    case DataType::kI64:
      return MPI_INT64_T;
    case DataType::kU8:
      return MPI_UINT8_T;
  }
  return MPI_DATATYPE_NULL;  // unreachable: arguments are validated first
}

MPI_Op SumOp(DataType dtype) { return dtype == DataType::kBF16 ? g_bf16_sum : MPI_SUM; }

void FinalizeAtExit() {
  if (!MpiActive()) return;
  if (const int64_t n = g_orphaned_requests.load(); n > 0) {
    AbortJob(absl::StrCat("exiting with ", n,
                          " MPI collective request(s) still pending after a timeout; finalising "
                          "MPI would hang or crash, aborting the job instead"));
  }
  if (g_bf16_sum != MPI_OP_NULL) MPI_Op_free(&g_bf16_sum);
  MPI_Finalize();
}

// What a group and the Works it started share: the communicator, and whether it still works.
//
// The roll call: a timeout only tells the waiting rank that *some* peer is missing. So a rank whose
// collective timed out asks every peer, on a communicator of its own (roll_comm), how many
// collectives it has started; a rank answers while it waits in any collective (ServiceRollCalls,
// from Work::Wait). Peers that answer with a count at least the asker's have reached its
// collective; the rest are named in the timeout error: those behind, and those that did not
// answer within kRollCallSeconds (dead, hung, or busy outside a collective).
struct MpiState {
  MPI_Comm comm = MPI_COMM_NULL;
  MPI_Comm roll_comm = MPI_COMM_NULL;
  int rank = 0;
  int size = 1;
  ProcessGroupOptions options;
  std::string broken;                // why the group is unusable; empty while it is fine
  std::vector<MPI_Request> orphans;  // requests of timed-out collectives
  int64_t started = 0;               // collectives started on this rank
  std::vector<std::string> hosts;    // every rank's host name, to name the missing ones
  std::vector<std::unique_ptr<int64_t>> answers;  // payloads of answers being sent
  std::vector<MPI_Request> answer_requests;

  // Answers the roll calls of peers whose collectives timed out.
  void ServiceRollCalls() {
    if (roll_comm == MPI_COMM_NULL) return;
    if (!answer_requests.empty()) {  // forget the answers that have gone
      int done = 0;
      MPI_Testall(static_cast<int>(answer_requests.size()), answer_requests.data(), &done,
                  MPI_STATUSES_IGNORE);
      if (done) answer_requests.clear();
    }
    for (;;) {
      int pending = 0;
      MPI_Status status;
      if (MPI_Iprobe(MPI_ANY_SOURCE, kRollCallAskTag, roll_comm, &pending, &status) !=
              MPI_SUCCESS ||
          !pending) {
        break;
      }
      int64_t their_count = 0;
      MPI_Recv(&their_count, 1, MPI_INT64_T, status.MPI_SOURCE, kRollCallAskTag, roll_comm,
               MPI_STATUS_IGNORE);
      answers.push_back(std::make_unique<int64_t>(started));
      answer_requests.push_back(MPI_REQUEST_NULL);
      MPI_Isend(answers.back().get(), 1, MPI_INT64_T, status.MPI_SOURCE, kRollCallAnswerTag,
                roll_comm, &answer_requests.back());
    }
  }

  // Asks every peer how many collectives it has started; returns what to add to a timeout error.
  std::string RollCall() {
    if (roll_comm == MPI_COMM_NULL || size < 2) return "";
    std::vector<int64_t> counts(size, -1);
    std::vector<MPI_Request> requests;
    const int64_t mine = started;
    answers.push_back(std::make_unique<int64_t>(mine));  // outlives sends to silent peers
    const int64_t* ask = answers.back().get();
    for (int peer = 0; peer < size; ++peer) {
      if (peer == rank) continue;
      requests.push_back(MPI_REQUEST_NULL);
      MPI_Isend(ask, 1, MPI_INT64_T, peer, kRollCallAskTag, roll_comm, &requests.back());
      requests.push_back(MPI_REQUEST_NULL);
      MPI_Irecv(&counts[peer], 1, MPI_INT64_T, peer, kRollCallAnswerTag, roll_comm,
                &requests.back());
    }
    const Clock::time_point deadline =
        internal::DeadlineAfter(std::min(options.timeout_s, kRollCallSeconds));
    internal::PollPacer pacer;
    for (;;) {
      ServiceRollCalls();  // peers that timed out too ask us meanwhile
      int done = 0;
      MPI_Testall(static_cast<int>(requests.size()), requests.data(), &done, MPI_STATUSES_IGNORE);
      if (done || Clock::now() >= deadline) break;
      pacer.Pause();
    }
    // Unanswered: cancel the receives (counts[] must not be written later) and let the sends go.
    for (size_t i = 0; i < requests.size(); ++i) {
      if (requests[i] == MPI_REQUEST_NULL) continue;
      if (i % 2 == 1) {
        MPI_Cancel(&requests[i]);
        MPI_Wait(&requests[i], MPI_STATUS_IGNORE);
      } else {
        MPI_Request_free(&requests[i]);  // may still complete: `ask` lives as long as the state
      }
    }
    std::vector<std::string> silent, behind;
    for (int peer = 0; peer < size; ++peer) {
      if (peer == rank) continue;
      if (counts[peer] < 0) {
        silent.push_back(static_cast<size_t>(peer) < hosts.size()
                             ? absl::StrCat(peer, " (on ", hosts[peer], ")")
                             : std::to_string(peer));
      } else if (counts[peer] < mine) {
        behind.push_back(absl::StrCat(peer, " (at collective #", counts[peer], ")"));
      }
    }
    std::string out =
        absl::StrCat(". Roll call (this was collective #", mine, " of rank ", rank, "): ");
    if (silent.empty() && behind.empty()) return out + "every peer has reached it.";
    if (!silent.empty()) {
      absl::StrAppend(&out, "rank(s) ", absl::StrJoin(silent, ", "), " did not answer within ",
                      std::min(options.timeout_s, kRollCallSeconds),
                      " s (dead, hung, or busy outside any collective)");
    }
    if (!behind.empty()) {
      absl::StrAppend(&out, silent.empty() ? "" : "; ", "rank(s) ", absl::StrJoin(behind, ", "),
                      " have not reached it");
    }
    return out + ".";
  }

  void Orphan(std::vector<MPI_Request>& requests) {
    for (MPI_Request r : requests) {
      if (r != MPI_REQUEST_NULL) {
        orphans.push_back(r);
        ++g_orphaned_requests;
      }
    }
    requests.clear();
  }

  ~MpiState() {
    if (!MpiActive() || comm == MPI_COMM_NULL) return;
    if (!orphans.empty()) {
      // A late peer may still complete them (each MPI_Testall makes progress): a grace of the
      // timeout, at most kOrphanGraceSeconds.
      const Clock::time_point deadline =
          internal::DeadlineAfter(std::min(options.timeout_s, kOrphanGraceSeconds));
      internal::PollPacer pacer;
      for (;;) {
        int done = 0;
        if (MPI_Testall(static_cast<int>(orphans.size()), orphans.data(), &done,
                        MPI_STATUSES_IGNORE) != MPI_SUCCESS) {
          break;
        }
        if (done) {
          g_orphaned_requests -= static_cast<int64_t>(orphans.size());
          orphans.clear();
          break;
        }
        if (Clock::now() >= deadline) break;
        pacer.Pause();
      }
    }
    if (orphans.empty()) {
      MPI_Comm_free(&comm);
      if (roll_comm != MPI_COMM_NULL) MPI_Comm_free(&roll_comm);
    }
  }
};

class MpiWork : public Work {
 public:
  MpiWork(std::shared_ptr<MpiState> state, std::string what, Clock::time_point deadline,
          std::vector<MPI_Request> requests)
      : state_(std::move(state)),
        what_(std::move(what)),
        deadline_(deadline),
        requests_(std::move(requests)) {}

  ~MpiWork() override {
    if (result_.has_value() || !MpiActive()) return;
    if (absl::Status s = Wait(); !s.ok()) {
      std::fprintf(stderr, "qat comm: a collective dropped without Wait() failed: %s\n",
                   std::string(s.message()).c_str());
    }
  }

  bool Done() override {
    if (result_.has_value()) return true;
    int done = 1;
    const int rc = requests_.empty() ? MPI_SUCCESS
                                     : MPI_Testall(static_cast<int>(requests_.size()),
                                                   requests_.data(), &done, MPI_STATUSES_IGNORE);
    if (rc != MPI_SUCCESS) {
      const std::string why = absl::StrCat(what_, " failed on rank ", state_->rank, " of ",
                                           state_->size, ": ", MpiErrorText(rc));
      Fail(absl::InternalError(absl::StrCat("comm(mpi): ", why)), why);
      return true;
    }
    if (done) {
      requests_.clear();
      result_ = absl::OkStatus();
    }
    return done != 0;
  }

  absl::Status Wait() override {
    internal::PollPacer pacer;
    while (!Done()) {
      if (Clock::now() >= deadline_) {
        const absl::Status timeout = internal::TimeoutError(
            kBackend, what_, state_->rank, state_->size, state_->options.timeout_s);
        Fail(absl::Status(timeout.code(), absl::StrCat(timeout.message(), state_->RollCall())),
             absl::StrCat(what_, " timed out on rank ", state_->rank));
        break;
      }
      state_->ServiceRollCalls();
      pacer.Pause();
    }
    return *result_;
  }

 private:
  void Fail(absl::Status error, const std::string& why) {
    state_->Orphan(requests_);
    if (state_->broken.empty()) state_->broken = why;
    result_ = std::move(error);
  }

  std::shared_ptr<MpiState> state_;
  std::string what_;
  Clock::time_point deadline_;
  std::vector<MPI_Request> requests_;
  std::optional<absl::Status> result_;
};

class MpiGroup : public ProcessGroup {
 public:
  explicit MpiGroup(std::shared_ptr<MpiState> state) : state_(std::move(state)) {}

  int rank() const override { return state_->rank; }
  int size() const override { return state_->size; }
  std::string_view backend() const override { return kBackend; }
  const ProcessGroupOptions& options() const override { return state_->options; }

  absl::StatusOr<std::unique_ptr<Work>> AllReduceAsync(const void* send, void* recv, int64_t count,
                                                       DataType dtype) override {
    if (absl::Status s = internal::ValidateAllReduce(kBackend, send, recv, count, dtype); !s.ok()) {
      return s;
    }
    const int64_t elem = ElementSize(dtype);
    return Start(internal::Describe(Collective::kAllReduce, count, dtype), [&](Requests& out) {
      return ForEachChunk(count, [&](int64_t offset, int n) {
        const void* in =
            send == recv ? MPI_IN_PLACE : static_cast<const char*>(send) + offset * elem;
        return MPI_Iallreduce(in, static_cast<char*>(recv) + offset * elem, n, MpiType(dtype),
                              SumOp(dtype), state_->comm, Add(out));
      });
    });
  }

  // One MPI_Ireduce_scatter_block when the per-rank count fits one call and the buffers are
  // apart. Otherwise one reduce per block (and chunk), rooted at the rank that keeps it: this form
  // takes any count, and NCCL's in-place convention directly (the root's input is its block of
  // recv: MPI_IN_PLACE), where MPI's in-place reduce-scatter would leave the result at the start.
  absl::StatusOr<std::unique_ptr<Work>> ReduceScatterAsync(const void* send, void* recv,
                                                           int64_t recv_count,
                                                           DataType dtype) override {
    absl::StatusOr<bool> in_place = internal::ValidateReduceScatter(
        kBackend, send, recv, recv_count, dtype, state_->rank, state_->size);
    if (!in_place.ok()) return in_place.status();
    const int64_t elem = ElementSize(dtype);
    const MPI_Datatype type = MpiType(dtype);
    const MPI_Op sum = SumOp(dtype);
    return Start(internal::Describe(Collective::kReduceScatter, recv_count, dtype),
                 [&](Requests& out) {
                   if (recv_count == 0) return MPI_SUCCESS;
                   if (!*in_place && recv_count <= state_->options.mpi_max_elements_per_call) {
                     return MPI_Ireduce_scatter_block(send, recv, static_cast<int>(recv_count),
                                                      type, sum, state_->comm, Add(out));
                   }
                   for (int root = 0; root < state_->size; ++root) {
                     const char* block = static_cast<const char*>(send) + root * recv_count * elem;
                     const bool mine = root == state_->rank;
                     const int rc = ForEachChunk(recv_count, [&](int64_t offset, int n) {
                       const void* in = mine && *in_place ? MPI_IN_PLACE : block + offset * elem;
                       void* result = mine ? static_cast<char*>(recv) + offset * elem : nullptr;
                       return MPI_Ireduce(in, result, n, type, sum, root, state_->comm, Add(out));
                     });
                     if (rc != MPI_SUCCESS) return rc;
                   }
                   return MPI_SUCCESS;
                 });
  }

  // One MPI_Iallgather when the per-rank count fits one call, else one broadcast per block and
  // chunk (after copying this rank's block into place).
  absl::StatusOr<std::unique_ptr<Work>> AllGatherAsync(const void* send, void* recv,
                                                       int64_t send_count,
                                                       DataType dtype) override {
    absl::StatusOr<bool> in_place = internal::ValidateAllGather(kBackend, send, recv, send_count,
                                                                dtype, state_->rank, state_->size);
    if (!in_place.ok()) return in_place.status();
    const int64_t elem = ElementSize(dtype);
    const MPI_Datatype type = MpiType(dtype);
    return Start(internal::Describe(Collective::kAllGather, send_count, dtype), [&](Requests& out) {
      if (send_count == 0) return MPI_SUCCESS;
      if (send_count <= state_->options.mpi_max_elements_per_call) {
        // MPI's in-place all-gather takes this rank's block from its place in recv, as NCCL's.
        const int n = static_cast<int>(send_count);
        return *in_place ? MPI_Iallgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, recv, n, type,
                                          state_->comm, Add(out))
                         : MPI_Iallgather(send, n, type, recv, n, type, state_->comm, Add(out));
      }
      char* base = static_cast<char*>(recv);
      if (!*in_place) std::memcpy(base + state_->rank * send_count * elem, send, send_count * elem);
      for (int root = 0; root < state_->size; ++root) {
        char* block = base + root * send_count * elem;
        const int rc = ForEachChunk(send_count, [&](int64_t offset, int n) {
          return MPI_Ibcast(block + offset * elem, n, type, root, state_->comm, Add(out));
        });
        if (rc != MPI_SUCCESS) return rc;
      }
      return MPI_SUCCESS;
    });
  }

  absl::StatusOr<std::unique_ptr<Work>> BroadcastAsync(void* data, int64_t count, DataType dtype,
                                                       int root) override {
    if (absl::Status s =
            internal::ValidateBroadcast(kBackend, data, count, dtype, root, state_->size);
        !s.ok()) {
      return s;
    }
    const int64_t elem = ElementSize(dtype);
    return Start(internal::Describe(Collective::kBroadcast, count, dtype), [&](Requests& out) {
      return ForEachChunk(count, [&](int64_t offset, int n) {
        return MPI_Ibcast(static_cast<char*>(data) + offset * elem, n, MpiType(dtype), root,
                          state_->comm, Add(out));
      });
    });
  }

  absl::StatusOr<std::unique_ptr<Work>> BarrierAsync() override {
    return Start("barrier", [&](Requests& out) { return MPI_Ibarrier(state_->comm, Add(out)); });
  }

  // AllocateBuffer: the default, host memory.

 private:
  using Requests = std::vector<MPI_Request>;

  // A new slot at the end of `requests` for an MPI_I* call to fill.
  static MPI_Request* Add(Requests& requests) {
    requests.push_back(MPI_REQUEST_NULL);
    return &requests.back();
  }

  // Calls post(offset, n) for consecutive chunks of [0, count) of at most
  // mpi_max_elements_per_call elements (MPI counts are int); stops at the first MPI error.
  template <typename Post>
  int ForEachChunk(int64_t count, Post post) const {
    const int64_t chunk = state_->options.mpi_max_elements_per_call;
    for (int64_t offset = 0; offset < count; offset += chunk) {
      if (const int rc = post(offset, static_cast<int>(std::min(chunk, count - offset)));
          rc != MPI_SUCCESS) {
        return rc;
      }
    }
    return MPI_SUCCESS;
  }

  // Runs post_all(requests), which posts the MPI calls of one collective (the same calls in the
  // same order on every rank), and wraps the requests into a Work.
  template <typename PostAll>
  absl::StatusOr<std::unique_ptr<Work>> Start(std::string what, PostAll post_all) {
    if (!state_->broken.empty()) {
      return internal::BrokenGroupError(kBackend, what, state_->rank, state_->size, state_->broken);
    }
    const Clock::time_point deadline = internal::DeadlineAfter(state_->options.timeout_s);
    ++state_->started;
    Requests requests;
    if (const int rc = post_all(requests); rc != MPI_SUCCESS) {
      // Earlier calls are in flight and the peers may have posted this one: the group cannot be
      // trusted any more.
      state_->Orphan(requests);
      state_->broken = absl::StrCat(what, " could not be started on rank ", state_->rank);
      return absl::InternalError(absl::StrCat("comm(mpi): starting ", what, " on rank ",
                                              state_->rank, " of ", state_->size,
                                              " failed: ", MpiErrorText(rc)));
    }
    return std::unique_ptr<Work>(
        new MpiWork(state_, std::move(what), deadline, std::move(requests)));
  }

  std::shared_ptr<MpiState> state_;
};

absl::StatusOr<double> TimeoutFromEnvironment(double fallback) {
  const char* text = std::getenv("QAT_COMM_TIMEOUT_S");
  if (text == nullptr || *text == '\0') return fallback;
  double seconds = 0;
  if (!absl::SimpleAtod(text, &seconds) || !(seconds > 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "comm: environment variable QAT_COMM_TIMEOUT_S must be a positive number of seconds, "
        "got \"",
        text, "\""));
  }
  return seconds;
}

}  // namespace

namespace internal {

absl::Status EnsureMpiInitialized() {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    int provided = 0;
    if (const int rc = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
        rc != MPI_SUCCESS) {
      return absl::InternalError(absl::StrCat("comm: MPI_Init_thread failed: ", MpiErrorText(rc)));
    }
    std::atexit(FinalizeAtExit);
  }
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return absl::FailedPreconditionError("comm: MPI has already been finalised");
  int provided = MPI_THREAD_SINGLE;
  MPI_Query_thread(&provided);
  if (provided < MPI_THREAD_FUNNELED) {
    return absl::FailedPreconditionError(
        "comm: MPI was initialised with MPI_THREAD_SINGLE; qat needs MPI_THREAD_FUNNELED or "
        "better");
  }
  // Errors come back as codes so they can become a Status naming the operation.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  if (g_bf16_sum == MPI_OP_NULL) {
    if (const int rc = MPI_Op_create(&Bf16SumOp, /*commute=*/1, &g_bf16_sum); rc != MPI_SUCCESS) {
      return absl::InternalError(
          absl::StrCat("comm: creating the MPI bf16 sum failed: ", MpiErrorText(rc)));
    }
  }
  return absl::OkStatus();
}

}  // namespace internal

absl::StatusOr<std::shared_ptr<ProcessGroup>> NewMpiGroup(const ProcessGroupOptions& options) {
  if (absl::Status s = internal::ValidateOptions(options); !s.ok()) return s;
  if (absl::Status s = internal::EnsureMpiInitialized(); !s.ok()) return s;
  auto state = std::make_shared<MpiState>();
  state->options = options;
  if (const int rc = MPI_Comm_dup(MPI_COMM_WORLD, &state->comm); rc != MPI_SUCCESS) {
    return absl::InternalError(absl::StrCat("comm: MPI_Comm_dup failed: ", MpiErrorText(rc)));
  }
  MPI_Comm_rank(state->comm, &state->rank);
  MPI_Comm_size(state->comm, &state->size);
  if (const int rc = MPI_Comm_dup(MPI_COMM_WORLD, &state->roll_comm); rc != MPI_SUCCESS) {
    return absl::InternalError(absl::StrCat("comm: MPI_Comm_dup failed: ", MpiErrorText(rc)));
  }
  // Host names, so that a roll call can say where a silent peer runs.
  char name[MPI_MAX_PROCESSOR_NAME] = {};
  int len = 0;
  MPI_Get_processor_name(name, &len);
  std::vector<char> all(static_cast<size_t>(state->size) * MPI_MAX_PROCESSOR_NAME);
  if (const int rc = MPI_Allgather(name, MPI_MAX_PROCESSOR_NAME, MPI_CHAR, all.data(),
                                   MPI_MAX_PROCESSOR_NAME, MPI_CHAR, state->comm);
      rc != MPI_SUCCESS) {
    return absl::InternalError(
        absl::StrCat("comm: all-gathering host names failed: ", MpiErrorText(rc)));
  }
  for (int r = 0; r < state->size; ++r) {
    const char* h = &all[static_cast<size_t>(r) * MPI_MAX_PROCESSOR_NAME];
    state->hosts.emplace_back(h, strnlen(h, MPI_MAX_PROCESSOR_NAME - 1));
  }
  return std::shared_ptr<ProcessGroup>(std::make_shared<MpiGroup>(std::move(state)));
}

absl::StatusOr<std::shared_ptr<ProcessGroup>> MpiWorld() {
  static std::shared_ptr<ProcessGroup> world;
  if (world) return world;
  ProcessGroupOptions options;
  absl::StatusOr<double> timeout = TimeoutFromEnvironment(options.timeout_s);
  if (!timeout.ok()) return timeout.status();
  options.timeout_s = *timeout;
  absl::StatusOr<std::shared_ptr<ProcessGroup>> group = NewMpiGroup(options);
  if (!group.ok()) return group.status();
  world = *group;
  return world;
}

void AbortJob(std::string_view message) {
  const bool active = MpiActive();
  int rank = 0, size = 1;
  if (active) {
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
  }
  std::fflush(stdout);
  std::fprintf(stderr, "qat: rank %d of %d: fatal: %.*s\n", rank, size,
               static_cast<int>(message.size()), message.data());
  std::fflush(stderr);
  if (active) MPI_Abort(MPI_COMM_WORLD, 1);
  std::_Exit(1);
}

}  // namespace qat::comm
