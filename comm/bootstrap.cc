#include "comm/bootstrap.h"

#include <mpi.h>
#include <sched.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "comm/internal.h"

namespace qat::comm {
namespace {

bool ReadFirstLine(const std::string& path, std::string* line) {
  std::ifstream in(path);
  return in && std::getline(in, *line);
}

// The CPUs this process may run on, as a bitmask (one bit per CPU number).
std::vector<unsigned char> AffinityMask() {
  std::vector<unsigned char> mask(CPU_SETSIZE / 8, 0);
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return mask;
  for (int c = 0; c < CPU_SETSIZE; ++c) {
    if (CPU_ISSET(c, &set)) mask[c / 8] |= static_cast<unsigned char>(1u << (c % 8));
  }
  return mask;
}

// The quota of one cgroup directory in CPUs (0: none). v2: cpu.max "QUOTA PERIOD" or "max PERIOD";
// v1: cpu.cfs_quota_us (-1: none) and cpu.cfs_period_us.
double QuotaOf(const std::string& dir) {
  std::string line;
  if (ReadFirstLine(dir + "/cpu.max", &line)) {
    std::istringstream in(line);
    std::string quota;
    double period = 0;
    if (in >> quota >> period && quota != "max" && period > 0) {
      return std::strtod(quota.c_str(), nullptr) / period;
    }
    return 0;
  }
  std::string period_line;
  if (ReadFirstLine(dir + "/cpu.cfs_quota_us", &line) &&
      ReadFirstLine(dir + "/cpu.cfs_period_us", &period_line)) {
    const double quota = std::strtod(line.c_str(), nullptr);
    const double period = std::strtod(period_line.c_str(), nullptr);
    if (quota > 0 && period > 0) return quota / period;
  }
  return 0;
}

}  // namespace

int PhysicalCores(const std::vector<int>& cpus) {
  std::set<std::pair<std::string, std::string>> cores;  // (package, core) of each CPU
  for (int c : cpus) {
    const std::string topo = absl::StrCat("/sys/devices/system/cpu/cpu", c, "/topology/");
    std::string package, core;
    if (!ReadFirstLine(topo + "physical_package_id", &package) ||
        !ReadFirstLine(topo + "core_id", &core)) {
      return static_cast<int>(cpus.size());  // no topology (a container may hide it): CPUs
    }
    cores.emplace(package, core);
  }
  return static_cast<int>(cores.size());
}

int CgroupCpuLimit() {
  // /proc/self/cgroup: "0::/path" (v2) or "N:cpu,cpuacct:/path" (v1). The limit of a cgroup is
  // the tightest quota on its path up to the root.
  std::ifstream in("/proc/self/cgroup");
  std::string line;
  double limit = 0;
  while (std::getline(in, line)) {
    const size_t a = line.find(':'), b = line.find(':', a + 1);
    if (a == std::string::npos || b == std::string::npos) continue;
    const std::string controllers = line.substr(a + 1, b - a - 1);
    std::string root;
    if (controllers.empty()) {
      root = "/sys/fs/cgroup";
    } else if (("," + controllers + ",").find(",cpu,") != std::string::npos) {
      root = "/sys/fs/cgroup/" + controllers;
    } else {
      continue;
    }
    std::string path = line.substr(b + 1);
    while (true) {
      const double q = QuotaOf(root + path);
      if (q > 0 && (limit == 0 || q < limit)) limit = q;
      if (path.empty() || path == "/") break;
      path = path.substr(0, path.rfind('/'));
    }
  }
  return limit > 0 ? static_cast<int>(std::ceil(limit - 1e-9)) : 0;
}

namespace {
std::vector<int> MaskCpus(const std::vector<unsigned char>& mask) {
  std::vector<int> cpus;
  for (int c = 0; c < static_cast<int>(mask.size()) * 8; ++c) {
    if (mask[c / 8] >> (c % 8) & 1) cpus.push_back(c);
  }
  return cpus;
}
}  // namespace

int ProcessCores() {
  const int quota = CgroupCpuLimit();
  const int cores = PhysicalCores(MaskCpus(AffinityMask()));
  return std::max(1, quota > 0 ? std::min(cores, quota) : cores);
}

absl::StatusOr<LocalPlacement> MpiLocalPlacement() {
  if (absl::Status s = internal::EnsureMpiInitialized(); !s.ok()) return s;
  LocalPlacement p;
  MPI_Comm_rank(MPI_COMM_WORLD, &p.rank);
  MPI_Comm_size(MPI_COMM_WORLD, &p.size);
  char name[MPI_MAX_PROCESSOR_NAME] = {};
  int len = 0;
  if (MPI_Get_processor_name(name, &len) != MPI_SUCCESS) {
    return absl::InternalError("comm: MPI_Get_processor_name failed");
  }
  p.host.assign(name, len);
  auto failed = [&](const char* what) {
    return absl::InternalError(absl::StrCat("comm: ", what, " failed on rank ", p.rank));
  };

  // The node: the ranks that can share memory with this one.
  MPI_Comm node_comm = MPI_COMM_NULL;
  if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, p.rank, MPI_INFO_NULL,
                          &node_comm) != MPI_SUCCESS) {
    return failed("MPI_Comm_split_type(MPI_COMM_TYPE_SHARED)");
  }
  MPI_Comm_rank(node_comm, &p.local_rank);
  MPI_Comm_size(node_comm, &p.local_size);
  // The node's lowest world rank names it; the CPUs of the node's ranks together, and the
  // tightest cgroup quota among them.
  int leader = p.rank;
  std::vector<unsigned char> mask = AffinityMask();
  int quota = CgroupCpuLimit();
  quota = quota > 0 ? quota : INT32_MAX;
  const bool ok =
      MPI_Allreduce(MPI_IN_PLACE, &leader, 1, MPI_INT, MPI_MIN, node_comm) == MPI_SUCCESS &&
      MPI_Allreduce(MPI_IN_PLACE, mask.data(), static_cast<int>(mask.size()), MPI_UNSIGNED_CHAR,
                    MPI_BOR, node_comm) == MPI_SUCCESS &&
      MPI_Allreduce(MPI_IN_PLACE, &quota, 1, MPI_INT, MPI_MIN, node_comm) == MPI_SUCCESS;
  MPI_Comm_free(&node_comm);
  if (!ok) return failed("combining the CPU masks of a node");
  p.node_cores = std::max(1, std::min(PhysicalCores(MaskCpus(mask)), quota));

  // Every rank's node leader and host name, so that every rank can name the others' hosts.
  struct Record {
    int32_t leader;
    char host[MPI_MAX_PROCESSOR_NAME];
  };
  std::vector<Record> all(p.size);
  Record mine{};
  mine.leader = leader;
  std::memcpy(mine.host, name, std::min<size_t>(len, sizeof(mine.host) - 1));
  if (MPI_Allgather(&mine, sizeof(Record), MPI_BYTE, all.data(), sizeof(Record), MPI_BYTE,
                    MPI_COMM_WORLD) != MPI_SUCCESS) {
    return failed("all-gathering the placements");
  }
  std::vector<int> leaders;
  for (const Record& r : all) leaders.push_back(r.leader);
  std::sort(leaders.begin(), leaders.end());
  leaders.erase(std::unique(leaders.begin(), leaders.end()), leaders.end());
  p.nodes = static_cast<int>(leaders.size());
  for (const Record& r : all) {
    p.rank_node.push_back(static_cast<int>(
        std::lower_bound(leaders.begin(), leaders.end(), r.leader) - leaders.begin()));
    p.rank_host.emplace_back(r.host, strnlen(r.host, sizeof(r.host)));
  }
  p.node = p.rank_node[p.rank];
  return p;
}

}  // namespace qat::comm
