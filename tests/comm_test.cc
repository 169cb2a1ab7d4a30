// comm/: every collective of both backends against a single-process computation, under mpirun
// with 1, 2 and 4 ranks (every rank runs every test; a failure on any rank fails the run through
// that rank's exit code). Each rank fills its buffers from a formula of (rank, index), so every
// rank can compute what the collective must give. Values are chosen exact in every type (sums
// too), so the checks are exact.
//
// Each test runs on its own group (its own communicator) with a 30 s timeout: a rank that fails
// an assertion and skips the rest of a test leaves its peers waiting at most that long, and the
// next test starts in step again.
#include <gtest/gtest.h>

#include <sched.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "comm/bench.h"
#include "comm/bf16.h"
#include "comm/bootstrap.h"
#include "comm/process_group.h"

#if defined(QAT_COMM_TEST_CUDA)
#include <cuda_runtime_api.h>
#endif

namespace qat::comm {
namespace {

constexpr DataType kAllTypes[] = {DataType::kF32, DataType::kF64, DataType::kBF16,
                                  DataType::kI32, DataType::kI64, DataType::kU8};

std::shared_ptr<ProcessGroup> World() { return MpiWorld().value(); }

// Element i of rank `rank`'s input. Exact in its type; sums over up to 4 ranks exact too (and
// below 256 for U8, whose overflow is backend-defined).
double Value(DataType t, int rank, int64_t i) {
  switch (t) {
    case DataType::kF32:
    case DataType::kF64:
      return double((rank * 31 + i * 7) % 101) - 50 + 0.25 * double(i % 4);
    case DataType::kBF16:
      return double((rank * 3 + i) % 9) - 4;
    case DataType::kI32:
      return double(rank) * 1000003 + double(i % 100000) * 3 - 12345;
    case DataType::kI64:
      return double(rank) * 1099511627776.0 + double(i);  // beyond 32 bits
    case DataType::kU8:
      return double((rank * 37 + i) % 61);
  }
  return 0;
}

void Store(DataType t, void* p, int64_t i, double v) {
  switch (t) {
    case DataType::kF32:
      static_cast<float*>(p)[i] = float(v);
      return;
    case DataType::kF64:
      static_cast<double*>(p)[i] = v;
      return;
    case DataType::kBF16:
      static_cast<uint16_t*>(p)[i] = FloatToBf16(float(v));
      return;
    case DataType::kI32:
      static_cast<int32_t*>(p)[i] = int32_t(v);
      return;
    case DataType::kI64:
      static_cast<int64_t*>(p)[i] = int64_t(v);
      return;
    case DataType::kU8:
      static_cast<uint8_t*>(p)[i] = uint8_t(v);
      return;
  }
}

double Load(DataType t, const void* p, int64_t i) {
  switch (t) {
    case DataType::kF32:
      return static_cast<const float*>(p)[i];
    case DataType::kF64:
      return static_cast<const double*>(p)[i];
    case DataType::kBF16:
      return Bf16ToFloat(static_cast<const uint16_t*>(p)[i]);
    case DataType::kI32:
      return static_cast<const int32_t*>(p)[i];
    case DataType::kI64:
      return double(static_cast<const int64_t*>(p)[i]);
    case DataType::kU8:
      return static_cast<const uint8_t*>(p)[i];
  }
  return 0;
}

// Host <-> the group's memory (host memory for MPI, GPU memory for NCCL).
void Copy(const ProcessGroup& g, void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
#if defined(QAT_COMM_TEST_CUDA)
  if (g.backend() == "nccl") {
    ASSERT_EQ(cudaMemcpy(dst, src, bytes, cudaMemcpyDefault), cudaSuccess);
    return;
  }
#endif
  ASSERT_TRUE(g.backend() == "mpi" || g.backend() == "local") << g.backend();
  std::memcpy(dst, src, bytes);
}

// A buffer of `count` elements in the group's memory plus its host image.
struct Buffer {
  Buffer(ProcessGroup& g, DataType t, int64_t count)
      : group(g), type(t), host(std::max<int64_t>(1, count * ElementSize(t))) {
    dev = g.AllocateBuffer(int64_t(host.size())).value();
  }
  void* data() { return dev.get(); }
  char* at(int64_t element) { return static_cast<char*>(dev.get()) + element * ElementSize(type); }
  void Upload() { Copy(group, dev.get(), host.data(), host.size()); }
  void Download() { Copy(group, host.data(), dev.get(), host.size()); }
  double Get(int64_t i) const { return Load(type, host.data(), i); }
  void Set(int64_t i, double v) { Store(type, host.data(), i, v); }

  ProcessGroup& group;
  DataType type;
  std::vector<unsigned char> host;
  std::shared_ptr<void> dev;
};

// Compares buffer elements [begin, begin + n) with want(i), reporting the first mismatch.
template <typename Want>
::testing::AssertionResult Matches(const Buffer& b, int64_t begin, int64_t n, Want want,
                                   const std::string& what) {
  for (int64_t i = 0; i < n; ++i) {
    const double got = b.Get(begin + i), expected = want(i);
    if (got != expected) {
      return ::testing::AssertionFailure() << what << " (" << DataTypeName(b.type) << "): element "
                                           << i << " is " << got << ", expected " << expected;
    }
  }
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult CheckAllReduce(ProcessGroup& g, DataType t, int64_t count,
                                          bool in_place) {
  const int n = g.size(), me = g.rank();
  Buffer in(g, t, count), out(g, t, count);
  for (int64_t i = 0; i < count; ++i) {
    in.Set(i, Value(t, me, i));
    out.Set(i, -1);
  }
  in.Upload();
  out.Upload();
  Buffer& result = in_place ? in : out;
  if (absl::Status s = g.AllReduce(in.data(), result.data(), count, t); !s.ok()) {
    return ::testing::AssertionFailure() << s;
  }
  result.Download();
  return Matches(
      result, 0, count,
      [&](int64_t i) {
        double sum = 0;
        for (int r = 0; r < n; ++r) sum += Value(t, r, i);
        return sum;
      },
      "all_reduce of " + std::to_string(count) + (in_place ? " in place" : ""));
}

::testing::AssertionResult CheckReduceScatter(ProcessGroup& g, DataType t, int64_t per_rank,
                                              bool in_place) {
  const int n = g.size(), me = g.rank();
  Buffer in(g, t, per_rank * n), out(g, t, per_rank);
  for (int64_t i = 0; i < per_rank * n; ++i) in.Set(i, Value(t, me, i));
  for (int64_t i = 0; i < per_rank; ++i) out.Set(i, -1);
  in.Upload();
  out.Upload();
  void* recv = in_place ? in.at(me * per_rank) : out.data();
  if (absl::Status s = g.ReduceScatter(in.data(), recv, per_rank, t); !s.ok()) {
    return ::testing::AssertionFailure() << s;
  }
  Buffer& result = in_place ? in : out;
  result.Download();
  return Matches(
      result, in_place ? me * per_rank : 0, per_rank,
      [&](int64_t i) {
        double sum = 0;
        for (int r = 0; r < n; ++r) sum += Value(t, r, me * per_rank + i);
        return sum;
      },
      "reduce_scatter of " + std::to_string(per_rank) + (in_place ? " in place" : ""));
}

::testing::AssertionResult CheckAllGather(ProcessGroup& g, DataType t, int64_t per_rank,
                                          bool in_place) {
  const int n = g.size(), me = g.rank();
  Buffer in(g, t, per_rank), out(g, t, per_rank * n);
  for (int64_t i = 0; i < per_rank; ++i) in.Set(i, Value(t, me, i));
  for (int64_t i = 0; i < per_rank * n; ++i) out.Set(i, -1);
  if (in_place) {
    for (int64_t i = 0; i < per_rank; ++i) out.Set(me * per_rank + i, Value(t, me, i));
  }
  in.Upload();
  out.Upload();
  const void* send = in_place ? out.at(me * per_rank) : in.data();
  if (absl::Status s = g.AllGather(send, out.data(), per_rank, t); !s.ok()) {
    return ::testing::AssertionFailure() << s;
  }
  out.Download();
  return Matches(
      out, 0, per_rank * n, [&](int64_t i) { return Value(t, int(i / per_rank), i % per_rank); },
      "all_gather of " + std::to_string(per_rank) + (in_place ? " in place" : ""));
}

::testing::AssertionResult CheckBroadcast(ProcessGroup& g, DataType t, int64_t count, int root) {
  Buffer b(g, t, count);
  for (int64_t i = 0; i < count; ++i) b.Set(i, g.rank() == root ? Value(t, root, i) : -1);
  b.Upload();
  if (absl::Status s = g.Broadcast(b.data(), count, t, root); !s.ok()) {
    return ::testing::AssertionFailure() << s;
  }
  b.Download();
  return Matches(
      b, 0, count, [&](int64_t i) { return Value(t, root, i); },
      "broadcast of " + std::to_string(count) + " from " + std::to_string(root));
}

// Every collective, every type, odd sizes, in and out of place. The large size (the checks of
// which take most of the time) goes to f32 and to bf16, whose sum is our own MPI operation.
void CheckEverything(ProcessGroup& g, int64_t large) {
  for (DataType t : kAllTypes) {
    SCOPED_TRACE(std::string(DataTypeName(t)));
    const bool big = t == DataType::kF32 || t == DataType::kBF16;
    for (int64_t count : {int64_t{0}, int64_t{1}, int64_t{7}, big ? large : int64_t{10007}}) {
      for (bool in_place : {false, true}) {
        EXPECT_TRUE(CheckAllReduce(g, t, count, in_place));
        EXPECT_TRUE(CheckReduceScatter(g, t, count / g.size() + (count > 0), in_place));
        EXPECT_TRUE(CheckAllGather(g, t, count / g.size() + (count > 0), in_place));
      }
      EXPECT_TRUE(CheckBroadcast(g, t, count, 0));
      EXPECT_TRUE(CheckBroadcast(g, t, count, g.size() - 1));
    }
  }
  EXPECT_TRUE(g.Barrier().ok());
}

std::shared_ptr<ProcessGroup> NewTestGroup(ProcessGroupOptions options = {}) {
  options.timeout_s = 30;
  return NewMpiGroup(options).value();
}

TEST(DataTypeTest, SizesAndNames) {
  EXPECT_EQ(ElementSize(DataType::kF32), 4);
  EXPECT_EQ(ElementSize(DataType::kF64), 8);
  EXPECT_EQ(ElementSize(DataType::kBF16), 2);
  EXPECT_EQ(ElementSize(DataType::kI32), 4);
  EXPECT_EQ(ElementSize(DataType::kI64), 8);
  EXPECT_EQ(ElementSize(DataType::kU8), 1);
  EXPECT_EQ(ElementSize(static_cast<DataType>(99)), 0);
  EXPECT_EQ(DataTypeName(DataType::kBF16), "bf16");
  EXPECT_EQ(DataTypeName(static_cast<DataType>(99)), "invalid");
  EXPECT_EQ(CollectiveName(Collective::kReduceScatter), "reduce_scatter");
}

TEST(Bf16Test, ConvertsWithRoundToNearestEven) {
  EXPECT_EQ(FloatToBf16(1.0f), 0x3F80);
  EXPECT_EQ(FloatToBf16(-4.0f), 0xC080);
  EXPECT_EQ(Bf16ToFloat(0x3F80), 1.0f);
  EXPECT_EQ(Bf16ToFloat(0xC080), -4.0f);
  // 1 + 2^-8 lies half way between 1 and 1 + 2^-7: ties go to the even mantissa (1.0) ...
  EXPECT_EQ(FloatToBf16(1.00390625f), 0x3F80);
  // ... and 1 + 3 * 2^-8 half way between 1 + 2^-7 (odd) and 1 + 2^-6 (even) goes up.
  EXPECT_EQ(FloatToBf16(1.01171875f), 0x3F82);
  EXPECT_EQ(FloatToBf16(1.0f + 1.0f / 128 + 1.0f / 4096), 0x3F81);  // above half: rounds up
  EXPECT_EQ(FloatToBf16(INFINITY), 0x7F80);
  EXPECT_TRUE(std::isnan(Bf16ToFloat(FloatToBf16(NAN))));
}

TEST(BootstrapTest, MpiLocalPlacementFindsOneNodeHere) {
  // Every rank of the ctest jobs runs on this machine: one node, local ranks in world order.
  std::shared_ptr<ProcessGroup> world = World();
  const LocalPlacement p = MpiLocalPlacement().value();
  EXPECT_EQ(p.rank, world->rank());
  EXPECT_EQ(p.size, world->size());
  EXPECT_EQ(p.nodes, 1);
  EXPECT_EQ(p.node, 0);
  EXPECT_EQ(p.local_rank, p.rank);
  EXPECT_EQ(p.local_size, p.size);
  ASSERT_EQ(p.rank_node.size(), static_cast<size_t>(p.size));
  ASSERT_EQ(p.rank_host.size(), static_cast<size_t>(p.size));
  EXPECT_EQ(p.rank_host[p.rank], p.host);
  for (int r = 0; r < p.size; ++r) EXPECT_EQ(p.rank_host[r], p.host) << r;
  // The node's cores: at least this process's own physical cores (the union of the ranks' masks
  // holds its own), at most the machine's CPUs, within any cgroup quota.
  cpu_set_t set;
  CPU_ZERO(&set);
  ASSERT_EQ(sched_getaffinity(0, sizeof(set), &set), 0);
  std::vector<int> own;
  for (int c = 0; c < CPU_SETSIZE; ++c) {
    if (CPU_ISSET(c, &set)) own.push_back(c);
  }
  const int limit = CgroupCpuLimit();
  EXPECT_GE(p.node_cores, 1);
  EXPECT_GE(p.node_cores, limit > 0 ? std::min(limit, PhysicalCores(own)) : PhysicalCores(own));
  EXPECT_LE(p.node_cores, static_cast<int>(std::thread::hardware_concurrency()));
  if (limit > 0) {
    EXPECT_LE(p.node_cores, limit);
  }
  EXPECT_EQ(PhysicalCores({}), 0);
  EXPECT_LE(PhysicalCores(own), static_cast<int>(own.size()));
}

TEST(MpiGroupTest, EveryCollectiveMatchesTheSingleProcessComputation) {
  std::shared_ptr<ProcessGroup> g = NewTestGroup();
  EXPECT_EQ(g->backend(), "mpi");
  EXPECT_EQ(g->rank(), World()->rank());
  EXPECT_EQ(g->size(), World()->size());
  CheckEverything(*g, 1000003);
}

TEST(MpiGroupTest, LargeBuffersAreSplitIntoSeveralMpiCalls) {
  ProcessGroupOptions o;
  o.mpi_max_elements_per_call = 1000;
  std::shared_ptr<ProcessGroup> g = NewTestGroup(o);
  for (DataType t : {DataType::kF32, DataType::kBF16}) {
    SCOPED_TRACE(std::string(DataTypeName(t)));
    for (bool in_place : {false, true}) {
      EXPECT_TRUE(CheckAllReduce(*g, t, 10007, in_place));
      EXPECT_TRUE(CheckReduceScatter(*g, t, 2503, in_place));
      EXPECT_TRUE(CheckAllGather(*g, t, 2503, in_place));  // one broadcast per block and chunk
      EXPECT_TRUE(CheckAllGather(*g, t, 1000, in_place));  // exactly the limit: one all-gather
    }
    EXPECT_TRUE(CheckBroadcast(*g, t, 10007, g->size() - 1));
  }
}

TEST(MpiGroupTest, AsyncCollectivesOverlapAndFinishInAnyWaitOrder) {
  std::shared_ptr<ProcessGroup> g = NewTestGroup();
  const int n = g->size(), me = g->rank();
  constexpr int kCount = 100003;
  std::vector<std::vector<float>> sums(3, std::vector<float>(kCount));
  std::vector<int64_t> gathered(3 * n), mine = {me, 10 * me, 100 * me};
  std::vector<double> from_root(11, me == 0 ? 2.5 : -1.0);
  for (int k = 0; k < 3; ++k) {
    for (int i = 0; i < kCount; ++i) sums[k][i] = float(k + me + i % 5);
  }
  std::vector<std::unique_ptr<Work>> works;
  for (int k = 0; k < 3; ++k) {
    works.push_back(
        g->AllReduceAsync(sums[k].data(), sums[k].data(), kCount, DataType::kF32).value());
  }
  works.push_back(g->AllGatherAsync(mine.data(), gathered.data(), 3, DataType::kI64).value());
  works.push_back(g->BroadcastAsync(from_root.data(), 11, DataType::kF64, 0).value());
  works.push_back(g->BarrierAsync().value());
  // Done() polls without blocking; the last-started one finishes eventually.
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (!works.back()->Done() && std::chrono::steady_clock::now() < give_up) {
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  EXPECT_TRUE(works.back()->Done());
  for (int k = int(works.size()) - 1; k >= 0; --k) EXPECT_TRUE(works[k]->Wait().ok()) << k;
  EXPECT_TRUE(works[0]->Wait().ok());  // repeated Wait: same answer
  for (int k = 0; k < 3; ++k) {
    for (int i = 0; i < kCount; ++i) {
      float want = 0;
      for (int r = 0; r < n; ++r) want += float(k + r + i % 5);
      ASSERT_EQ(sums[k][i], want) << "all_reduce " << k << " element " << i;
    }
  }
  for (int r = 0; r < n; ++r) {
    EXPECT_EQ(gathered[3 * r], r);
    EXPECT_EQ(gathered[3 * r + 1], 10 * r);
    EXPECT_EQ(gathered[3 * r + 2], 100 * r);
  }
  for (double v : from_root) EXPECT_EQ(v, 2.5);
}

TEST(MpiGroupTest, AWorkDroppedWithoutWaitIsWaitedFor) {
  std::shared_ptr<ProcessGroup> g = NewTestGroup();
  std::vector<int32_t> v(1001, g->rank() + 1);
  g->AllReduceAsync(v.data(), v.data(), 1001, DataType::kI32).value().reset();
  const int want = g->size() * (g->size() + 1) / 2;
  for (int32_t x : v) ASSERT_EQ(x, want);
}

TEST(MpiGroupTest, TheTrainerInterfaceStillWorks) {
  std::shared_ptr<ProcessGroup> world = World();
  const int n = world->size(), me = world->rank();
  std::vector<float> f(5, 0.5f * (me + 1));
  std::vector<double> d(3, me + 0.25);
  ASSERT_TRUE(world->AllReduceSum(f.data(), 5).ok());
  ASSERT_TRUE(world->AllReduceSum(d.data(), 3).ok());
  for (float x : f) EXPECT_EQ(x, 0.5f * n * (n + 1) / 2);
  for (double x : d) EXPECT_EQ(x, n * (n - 1) / 2.0 + 0.25 * n);
  std::string text = me == n - 1 ? "thirteen byte" : "-------------";
  ASSERT_TRUE(world->Broadcast(text.data(), int64_t(text.size()), n - 1).ok());
  EXPECT_EQ(text, "thirteen byte");
  EXPECT_TRUE(world->Barrier().ok());
}

TEST(MpiGroupTest, InvalidArgumentsAreRefusedBeforeAnythingStarts) {
  std::shared_ptr<ProcessGroup> g = NewTestGroup();
  const int n = g->size(), me = g->rank();
  std::vector<float> a(8 * n), b(8 * n);
  auto invalid = [](const absl::Status& s, std::string_view words) {
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_NE(std::string(s.message()).find(words), std::string::npos) << s << " lacks " << words;
  };
  invalid(g->AllReduce(a.data(), b.data(), -1, DataType::kF32), "all_reduce of -1 x f32");
  invalid(g->AllReduce(nullptr, b.data(), 4, DataType::kF32), "null buffer");
  invalid(g->AllReduce(a.data(), a.data() + 1, 4, DataType::kF32), "overlap");
  invalid(g->AllReduce(a.data(), b.data(), 4, static_cast<DataType>(42)), "unknown DataType");
  invalid(g->AllReduce(a.data(), b.data(), int64_t{1} << 62, DataType::kF64), "overflows");
  invalid(g->Broadcast(a.data(), 4, DataType::kF32, n), "root");
  invalid(g->Broadcast(a.data(), 4, DataType::kF32, -1), "root");
  invalid(g->Broadcast(a.data(), -3, 0), "negative");
  // ReduceScatter: recv inside send but not at this rank's block.
  invalid(g->ReduceScatter(a.data(), a.data() + 4 * ((me + 1) % n) + (n == 1), 4, DataType::kF32),
          "this rank's block");
  invalid(g->AllGather(b.data() + 4 * ((me + 1) % n) + (n == 1), b.data(), 4, DataType::kF32),
          "this rank's block");
  // Nothing was started: the group is in step and usable.
  EXPECT_TRUE(CheckAllReduce(*g, DataType::kF32, 7, false));
}

TEST(MpiGroupTest, BadOptionsAreRefused) {
  ProcessGroupOptions o;
  o.timeout_s = 0;
  EXPECT_EQ(NewMpiGroup(o).status().code(), absl::StatusCode::kInvalidArgument);
  o.timeout_s = NAN;
  EXPECT_EQ(NewMpiGroup(o).status().code(), absl::StatusCode::kInvalidArgument);
  o.timeout_s = 1;
  o.mpi_max_elements_per_call = 0;
  EXPECT_EQ(NewMpiGroup(o).status().code(), absl::StatusCode::kInvalidArgument);
}

// Rank 0 skips a collective: the others must get DeadlineExceeded after the 2 s timeout, and the
// group must refuse further work. Then rank 0 joins late, which completes the abandoned
// collective, so every rank ends clean (no pending request at MPI_Finalize).
TEST(TimeoutTest, PeersOfAnAbsentRankGetDeadlineExceeded) {
  std::shared_ptr<ProcessGroup> world = World();
  const int n = world->size(), me = world->rank();
  if (n < 2) GTEST_SKIP() << "needs 2 ranks";
  // Declared before the group: the abandoned collective may write into it until the group is gone.
  std::vector<float> data(7, float(me + 1));
  const float total = float(n * (n + 1) / 2);
  ProcessGroupOptions o;
  o.timeout_s = 2;
  std::shared_ptr<ProcessGroup> g = NewMpiGroup(o).value();
  if (me == 0) {
    ASSERT_TRUE(world->Barrier().ok());  // the others have timed out
    ASSERT_TRUE(g->AllReduce(data.data(), data.data(), 7, DataType::kF32).ok());
  } else {
    const auto start = std::chrono::steady_clock::now();
    std::unique_ptr<Work> work =
        g->AllReduceAsync(data.data(), data.data(), 7, DataType::kF32).value();
    const absl::Status s = work->Wait();
    const double waited =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
    for (const std::string& part :
         {std::string("all_reduce of 7 x f32"),
          "on rank " + std::to_string(me) + " of " + std::to_string(n), std::string("2 s")}) {
      EXPECT_NE(std::string(s.message()).find(part), std::string::npos) << s << " lacks " << part;
    }
    EXPECT_GE(waited, 1.9);
    EXPECT_LT(waited, 10.0);
    EXPECT_EQ(work->Wait().code(), absl::StatusCode::kDeadlineExceeded);
    const absl::Status next = g->Barrier();
    EXPECT_EQ(next.code(), absl::StatusCode::kFailedPrecondition) << next;
    EXPECT_NE(std::string(next.message()).find("broken"), std::string::npos) << next;
    ASSERT_TRUE(world->Barrier().ok());
  }
  g.reset();  // the others complete their abandoned collective here, with rank 0's late one
  for (float x : data) EXPECT_EQ(x, total);
}

TEST(SingleProcessGroupTest, EveryCollectiveIsALocalCopy) {
  std::shared_ptr<ProcessGroup> g = NewSingleProcessGroup();
  EXPECT_EQ(g->backend(), "local");
  EXPECT_EQ(g->size(), 1);
  EXPECT_EQ(g->rank(), 0);
  CheckEverything(*g, 1001);
  std::vector<float> a(4, 1.5f);
  EXPECT_TRUE(g->AllReduceSum(a.data(), 4).ok());
  EXPECT_EQ(a[3], 1.5f);
  EXPECT_EQ(g->Broadcast(a.data(), 4, DataType::kF32, 1).code(),
            absl::StatusCode::kInvalidArgument);
}

// A stand-in group implementing only the trainer's interface (as tests do for a rank-local
// reference) still compiles and works; what it lacks says so.
class TrainerOnlyGroup : public ProcessGroup {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  absl::Status AllReduceSum(float*, int64_t) override { return absl::OkStatus(); }
  absl::Status AllReduceSum(double*, int64_t) override { return absl::OkStatus(); }
  absl::Status Broadcast(void*, int64_t, int) override { return absl::OkStatus(); }
  absl::Status Barrier() override { return absl::OkStatus(); }
};

TEST(ProcessGroupTest, AStandInNeedsOnlyWhatItUses) {
  TrainerOnlyGroup solo;
  ProcessGroup& g = solo;
  float x = 1;
  EXPECT_TRUE(g.AllReduceSum(&x, 1).ok());
  EXPECT_TRUE(g.Barrier().ok());
  EXPECT_EQ(g.backend(), "custom");
  EXPECT_EQ(g.options().timeout_s, 600.0);
  const absl::Status s = g.AllReduce(&x, &x, 1, DataType::kF32);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented) << s;
  EXPECT_NE(std::string(s.message()).find("all_reduce"), std::string::npos) << s;
  EXPECT_TRUE(g.AllocateBuffer(16).ok());
}

TEST(NcclTest, FactoryWorksOrSaysWhyNot) {
  std::shared_ptr<ProcessGroup> world = World();
  ProcessGroupOptions o;
  o.timeout_s = 60;
  absl::StatusOr<std::shared_ptr<ProcessGroup>> g = NewNcclGroup(o);
  if (!NcclBuilt()) {
    EXPECT_EQ(g.status().code(), absl::StatusCode::kUnimplemented) << g.status();
    EXPECT_NE(std::string(g.status().message()).find("NCCL"), std::string::npos);
    return;
  }
#if defined(QAT_COMM_TEST_CUDA)
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess) devices = 0;
  const LocalPlacement p = MpiLocalPlacement().value();
  // Every rank decides alike: the factory agrees on failure over all ranks.
  std::vector<int32_t> enough = {devices >= p.local_size ? 1 : 0};
  ASSERT_TRUE(world->AllReduce(enough.data(), enough.data(), 1, DataType::kI32).ok());
  if (enough[0] != world->size()) {
    EXPECT_EQ(g.status().code(), absl::StatusCode::kFailedPrecondition) << g.status();
    GTEST_SKIP() << "not one GPU per rank here (" << devices << " GPUs): " << g.status();
  }
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ((*g)->backend(), "nccl");
  EXPECT_EQ((*g)->rank(), world->rank());
  CheckEverything(**g, 1000003);
#else
  FAIL() << "NCCL is built but the test was compiled without CUDA";
#endif
}

TEST(BenchTest, RowsFollowTheNcclTestsDefinitions) {
  std::shared_ptr<ProcessGroup> g = NewTestGroup();
  const int n = g->size();
  CommBenchOptions o;
  o.min_bytes = 64;
  o.max_bytes = 4096;
  o.step_factor = 4;
  o.iters = 2;
  o.warmup_iters = 1;
  o.collectives.push_back(Collective::kBarrier);
  const std::vector<CommBenchRow> rows = RunCommBench(*g, o).value();
  ASSERT_EQ(rows.size(), 4u * 4u + 1u);  // 64, 256, 1024, 4096 bytes for each, one barrier
  for (const CommBenchRow& r : rows) {
    SCOPED_TRACE(std::string(CollectiveName(r.collective)) + " " + std::to_string(r.bytes));
    EXPECT_GT(r.time_us, 0);
    EXPECT_EQ(r.bytes, r.count * 4);
    if (r.collective == Collective::kBarrier) continue;
    EXPECT_GT(r.algbw_gbs, 0);
    EXPECT_NEAR(r.algbw_gbs, r.bytes / (r.time_us * 1e3), 1e-9 * r.algbw_gbs);
    const bool split =
        r.collective == Collective::kReduceScatter || r.collective == Collective::kAllGather;
    if (split) {
      EXPECT_EQ(r.count % n, 0);
    }
    const double factor = r.collective == Collective::kAllReduce ? 2.0 * (n - 1) / n
                          : split                                ? double(n - 1) / n
                                                                 : 1.0;
    EXPECT_NEAR(r.busbw_gbs, r.algbw_gbs * factor, 1e-9 * r.algbw_gbs);
  }
  const std::string table = FormatCommBenchTable(rows, g->backend(), n, o);
  for (const char* word :
       {"busbw(GB/s)", "algbw(GB/s)", "all_reduce", "reduce_scatter", "all_gather", "broadcast"}) {
    EXPECT_NE(table.find(word), std::string::npos) << word << "\n" << table;
  }
  o.step_factor = 1;
  EXPECT_EQ(RunCommBench(*g, o).status().code(), absl::StatusCode::kInvalidArgument);
}

// Ranks other than 0 print only their failures, each line tagged with the rank.
class RankFailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit RankFailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& r) override {
    if (!r.failed()) return;
    std::fprintf(stderr, "[rank %d] %s:%d: Failure\n%s\n", rank_,
                 r.file_name() ? r.file_name() : "?", r.line_number(), r.message());
  }
  void OnTestEnd(const ::testing::TestInfo& info) override {
    if (info.result()->Failed()) {
      std::fprintf(stderr, "[rank %d] FAILED %s.%s\n", rank_, info.test_suite_name(), info.name());
    }
  }

 private:
  int rank_;
};

}  // namespace
}  // namespace qat::comm

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  absl::StatusOr<std::shared_ptr<qat::comm::ProcessGroup>> world = qat::comm::MpiWorld();
  if (!world.ok()) {
    std::fprintf(stderr, "comm_test: %s\n", std::string(world.status().message()).c_str());
    return 1;
  }
  if ((*world)->rank() != 0) {
    ::testing::TestEventListeners& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new qat::comm::RankFailurePrinter((*world)->rank()));
  }
  return RUN_ALL_TESTS();
}
