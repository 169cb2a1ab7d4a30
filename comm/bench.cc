#include "comm/bench.h"

#include <algorithm>
#include <chrono>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace qat::comm {
namespace {

using Clock = std::chrono::steady_clock;

absl::Status ValidateBenchOptions(const CommBenchOptions& o) {
  auto bad = [](std::string why) {
    return absl::InvalidArgumentError(absl::StrCat("comm bench: ", why));
  };
  if (ElementSize(o.dtype) == 0) return bad("unknown data type");
  if (o.collectives.empty()) return bad("no collectives to measure");
  if (o.min_bytes < 1 || o.max_bytes < o.min_bytes) {
    return bad(
        absl::StrCat("need 1 <= min_bytes <= max_bytes, got ", o.min_bytes, " and ", o.max_bytes));
  }
  if (o.step_factor < 2) return bad(absl::StrCat("step_factor must be >= 2, got ", o.step_factor));
  if (o.iters < 1 || o.warmup_iters < 0) {
    return bad(absl::StrCat("need iters >= 1 and warmup_iters >= 0, got ", o.iters, " and ",
                            o.warmup_iters));
  }
  return absl::OkStatus();
}

// Starts one collective of the bench: out of place (as nccl-tests by default) from `in` to `out`.
absl::StatusOr<std::unique_ptr<Work>> StartOne(ProcessGroup& g, Collective c, void* in, void* out,
                                               int64_t count_per_rank, DataType dtype) {
  switch (c) {
    case Collective::kAllReduce:
      return g.AllReduceAsync(in, out, count_per_rank, dtype);
    case Collective::kReduceScatter:
      return g.ReduceScatterAsync(in, out, count_per_rank, dtype);
    case Collective::kAllGather:
      return g.AllGatherAsync(in, out, count_per_rank, dtype);
    case Collective::kBroadcast:
      return g.BroadcastAsync(in, count_per_rank, dtype, /*root=*/0);
    case Collective::kBarrier:
      return g.BarrierAsync();
  }
  return absl::InvalidArgumentError("comm bench: unknown collective");
}

// Mean microseconds per collective on this rank.
absl::StatusOr<double> TimeOne(ProcessGroup& g, const CommBenchOptions& o, Collective c, void* in,
                               void* out, int64_t count_per_rank) {
  auto run = [&]() -> absl::Status {
    absl::StatusOr<std::unique_ptr<Work>> work = StartOne(g, c, in, out, count_per_rank, o.dtype);
    if (!work.ok()) return work.status();
    return (*work)->Wait();
  };
  for (int i = 0; i < o.warmup_iters; ++i) {
    if (absl::Status s = run(); !s.ok()) return s;
  }
  if (absl::Status s = g.Barrier(); !s.ok()) return s;
  const Clock::time_point start = Clock::now();
  for (int i = 0; i < o.iters; ++i) {
    if (absl::Status s = run(); !s.ok()) return s;
  }
  return std::chrono::duration<double, std::micro>(Clock::now() - start).count() / o.iters;
}

}  // namespace

double BusBandwidthFactor(Collective collective, int ranks) {
  const double n = std::max(ranks, 1);
  switch (collective) {
    case Collective::kAllReduce:
      return 2.0 * (n - 1) / n;
    case Collective::kReduceScatter:
    case Collective::kAllGather:
      return (n - 1) / n;
    case Collective::kBroadcast:
      return 1.0;
    case Collective::kBarrier:
      return 0.0;
  }
  return 0.0;
}

absl::StatusOr<std::vector<CommBenchRow>> RunCommBench(ProcessGroup& group,
                                                       const CommBenchOptions& options) {
  if (absl::Status s = ValidateBenchOptions(options); !s.ok()) return s;
  // The times are compared over MPI on the host, whatever the backend under test.
  absl::StatusOr<std::shared_ptr<ProcessGroup>> world = MpiWorld();
  if (!world.ok()) return world.status();
  const int ranks = group.size();
  const int64_t elem = ElementSize(options.dtype);
  absl::StatusOr<std::shared_ptr<void>> in = group.AllocateBuffer(options.max_bytes);
  if (!in.ok()) return in.status();
  absl::StatusOr<std::shared_ptr<void>> out = group.AllocateBuffer(options.max_bytes);
  if (!out.ok()) return out.status();
  if (group.backend() == "mpi") {
    // Zeros: no NaNs or denormals to slow the host sums down.
    std::memset(in->get(), 0, options.max_bytes);
    std::memset(out->get(), 0, options.max_bytes);
  }

  std::vector<CommBenchRow> rows;
  for (Collective c : options.collectives) {
    std::vector<int64_t> sizes;
    if (c == Collective::kBarrier) {
      sizes.push_back(0);
    } else {
      for (int64_t b = options.min_bytes; b <= options.max_bytes; b *= options.step_factor) {
        sizes.push_back(b);
        if (b > options.max_bytes / options.step_factor) break;
      }
    }
    for (int64_t requested : sizes) {
      int64_t count = requested / elem;
      const bool split = c == Collective::kReduceScatter || c == Collective::kAllGather;
      if (split) count -= count % ranks;
      if (c != Collective::kBarrier && count == 0) continue;
      const int64_t count_per_rank = split ? count / ranks : count;
      absl::StatusOr<double> us = TimeOne(group, options, c, in->get(), out->get(), count_per_rank);
      if (!us.ok()) return us.status();
      std::vector<double> all(ranks);
      if (absl::Status s = (*world)->AllGather(&*us, all.data(), 1, DataType::kF64); !s.ok()) {
        return s;
      }
      CommBenchRow row;
      row.collective = c;
      row.count = count;
      row.bytes = count * elem;
      row.time_us = *std::max_element(all.begin(), all.end());
      row.algbw_gbs = row.time_us > 0 ? row.bytes / (row.time_us * 1e3) : 0.0;
      row.busbw_gbs = row.algbw_gbs * BusBandwidthFactor(c, ranks);
      rows.push_back(row);
    }
  }
  return rows;
}

std::string FormatCommBenchTable(const std::vector<CommBenchRow>& rows, std::string_view backend,
                                 int ranks, const CommBenchOptions& options) {
  std::string table = absl::StrFormat(
      "# qat comm bench: backend %s, %d ranks, %s, %d timed iterations after %d warm-up; time = "
      "max over ranks; busbw = algbw x (2(n-1)/n all_reduce, (n-1)/n reduce_scatter and "
      "all_gather, 1 broadcast)\n",
      std::string(backend), ranks, DataTypeName(options.dtype), options.iters,
      options.warmup_iters);
  absl::StrAppendFormat(&table, "# %14s %14s %12s %12s %12s %12s\n", "collective", "bytes", "count",
                        "time(us)", "algbw(GB/s)", "busbw(GB/s)");
  for (const CommBenchRow& r : rows) {
    absl::StrAppendFormat(&table, "  %14s %14d %12d %12.2f %12.3f %12.3f\n",
                          CollectiveName(r.collective), r.bytes, r.count, r.time_us, r.algbw_gbs,
                          r.busbw_gbs);
  }
  return table;
}

absl::Status RunCommBenchAndPrint(ProcessGroup& group, const CommBenchOptions& options,
                                  std::FILE* out) {
  absl::StatusOr<std::vector<CommBenchRow>> rows = RunCommBench(group, options);
  if (!rows.ok()) return rows.status();
  if (group.rank() == 0) {
    const std::string table = FormatCommBenchTable(*rows, group.backend(), group.size(), options);
    std::fputs(table.c_str(), out);
    std::fflush(out);
  }
  return absl::OkStatus();
}

}  // namespace qat::comm
