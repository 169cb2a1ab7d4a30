#include "trainer/placement.h"

#include <ATen/Parallel.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <random>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "kernels/safetensors.h"

namespace qat::trainer {
namespace {

constexpr const char* kSources[] = {"train.threads", "OMP_NUM_THREADS", "cores / ranks"};

std::string NodeName(const comm::LocalPlacement& p, int node) {
  for (int r = 0; r < p.size; ++r) {
    if (p.rank_node[r] == node) return absl::StrCat("node ", node, " (", p.rank_host[r], ")");
  }
  return absl::StrCat("node ", node);
}

std::string RankName(const comm::LocalPlacement& p, int rank) {
  return absl::StrCat("rank ", rank, " (node ", p.rank_node[rank], ", host ", p.rank_host[rank],
                      ")");
}

}  // namespace

ThreadChoice ChooseThreads(int64_t recipe_threads, const char* omp_num_threads, int node_cores,
                           int ranks_on_node) {
  if (recipe_threads > 0) return {static_cast<int>(recipe_threads), kSources[0]};
  int env = 0;
  if (omp_num_threads != nullptr && absl::SimpleAtoi(omp_num_threads, &env) && env > 0) {
    return {env, kSources[1]};
  }
  return {std::max(1, node_cores / std::max(1, ranks_on_node)), kSources[2]};
}

int SetProcessThreads(int64_t flag_threads) {
  const ThreadChoice choice =
      ChooseThreads(flag_threads, std::getenv("OMP_NUM_THREADS"), comm::ProcessCores(), 1);
  at::set_num_threads(choice.threads);
  return choice.threads;
}

absl::StatusOr<std::string> SetThreadsPerRank(int64_t recipe_threads,
                                              const comm::LocalPlacement& placement,
                                              comm::ProcessGroup& g) {
  const ThreadChoice choice = ChooseThreads(recipe_threads, std::getenv("OMP_NUM_THREADS"),
                                            placement.node_cores, placement.local_size);
  at::set_num_threads(choice.threads);
  // Every rank's choice, so that the log line says what each node chose.
  int64_t source = 0;
  while (choice.source != kSources[source]) ++source;
  const int64_t mine[3] = {choice.threads, source, placement.node_cores};
  std::vector<int64_t> all(3 * static_cast<size_t>(g.size()));
  if (absl::Status s = g.AllGather(mine, all.data(), 3, comm::DataType::kI64); !s.ok()) return s;
  // One description per node (ranks of a node that chose alike are one entry).
  std::map<int, std::vector<std::string>> per_node;
  std::vector<int> ranks_on(placement.nodes, 0);
  for (int node : placement.rank_node) ++ranks_on[node];
  for (int r = 0; r < g.size(); ++r) {
    const int node = placement.rank_node[r];
    const int local_size = ranks_on[node];
    const int64_t threads = all[3 * r], cores = all[3 * r + 2];
    const std::string d =
        absl::StrCat(local_size, local_size == 1 ? " rank, " : " ranks, ", cores,
                     cores == 1 ? " core" : " cores", " -> ", threads,
                     threads == 1 ? " thread" : " threads", " (", kSources[all[3 * r + 1]], ")");
    std::vector<std::string>& v = per_node[node];
    if (std::find(v.begin(), v.end(), d) == v.end()) v.push_back(d);
  }
  std::vector<std::string> parts;
  for (const auto& [node, descriptions] : per_node) {
    parts.push_back(
        absl::StrCat(NodeName(placement, node), ": ", absl::StrJoin(descriptions, ", ")));
  }
  // How idle OpenMP threads wait (trainer/cli/main.cc bounds their spinning), rank 0's view.
  const char* spin = std::getenv("GOMP_SPINCOUNT");
  const char* policy = std::getenv("OMP_WAIT_POLICY");
  const std::string waits = spin != nullptr && *spin != '\0' ? absl::StrCat("GOMP_SPINCOUNT=", spin)
                            : policy != nullptr && *policy != '\0'
                                ? absl::StrCat("OMP_WAIT_POLICY=", policy)
                                : "libgomp's default spin";
  return absl::StrCat("threads per rank, decided on each node (", placement.nodes,
                      placement.nodes == 1 ? " node" : " nodes", "): ", absl::StrJoin(parts, "; "),
                      "; idle OpenMP threads: ", waits);
}

absl::Status CheckSharedRunDir(const std::string& dir, const comm::LocalPlacement& placement,
                               comm::ProcessGroup& g) {
  if (g.size() < 2) return absl::OkStatus();
  // Rank 0: the nonce and the file; broadcast with whether writing it worked.
  char message[96] = {};
  std::string written_path;
  if (g.rank() == 0) {
    std::random_device device;
    const uint64_t nonce = (uint64_t(device()) << 32 ^ device()) ^
                           uint64_t(std::chrono::steady_clock::now().time_since_epoch().count()) ^
                           uint64_t(getpid());
    const std::string text = absl::StrFormat("%016x", nonce);
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    written_path = dir + "/.qat-shared-check-" + text;
    const absl::Status s =
        ec ? absl::InternalError(ec.message()) : kernels::WriteFileAtomic(written_path, text);
    std::snprintf(message, sizeof(message), "%c%s", s.ok() ? '1' : '0', text.c_str());
    if (!s.ok()) {
      std::fprintf(stderr, "qat train: rank 0 cannot write in run.dir '%s': %s\n", dir.c_str(),
                   std::string(s.message()).c_str());
    }
  }
  if (absl::Status s = g.Broadcast(message, sizeof(message), 0); !s.ok()) return s;
  const std::string nonce(message + 1);
  if (message[0] != '1') {
    return absl::FailedPreconditionError(absl::StrCat("run.dir '", dir, "': rank 0 (",
                                                      placement.rank_host[0],
                                                      ") could not create it or write in it"));
  }
  absl::StatusOr<std::string> seen = kernels::ReadFile(dir + "/.qat-shared-check-" + nonce);
  std::vector<double> missing(g.size(), 0.0);
  missing[g.rank()] = seen.ok() && *seen == nonce ? 0.0 : 1.0;
  const absl::Status sum = g.AllReduceSum(missing.data(), g.size());
  if (g.rank() == 0) std::filesystem::remove(written_path);
  if (!sum.ok()) return sum;
  std::vector<std::string> blind;
  for (int r = 0; r < g.size(); ++r) {
    if (missing[r] > 0) blind.push_back(RankName(placement, r));
  }
  if (blind.empty()) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "run.dir '", dir, "' is not one directory for every rank: ", absl::StrJoin(blind, ", "),
      blind.size() == 1 ? " does" : " do", " not see the file ", RankName(placement, 0),
      " wrote there. Every rank writes its part of each checkpoint into run.dir, and every rank "
      "reads them on resume: on several nodes, run.dir must be on a filesystem they all share "
      "(NFS, Lustre, ...) at the same path."));
}

}  // namespace qat::trainer
