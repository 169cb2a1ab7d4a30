#include "comm/bootstrap.h"

#include <mpi.h>

#include "absl/strings/str_cat.h"
#include "comm/internal.h"

namespace qat::comm {

uint64_t HostHash(std::string_view host_name) {
  const std::string_view host = host_name.substr(0, host_name.find('.'));
  uint64_t hash = 14695981039346656037ull;
  for (unsigned char c : host) {
    hash ^= c;
    hash *= 1099511628211ull;
  }
  return hash;
}

int LocalRankFromHostHashes(const std::vector<uint64_t>& hashes, int rank) {
  if (rank < 0 || rank >= static_cast<int>(hashes.size())) return -1;
  int local = 0;
  for (int r = 0; r < rank; ++r) local += hashes[r] == hashes[rank];
  return local;
}

absl::StatusOr<LocalPlacement> MpiLocalPlacement() {
  if (absl::Status s = internal::EnsureMpiInitialized(); !s.ok()) return s;
  LocalPlacement p;
  MPI_Comm_rank(MPI_COMM_WORLD, &p.rank);
  MPI_Comm_size(MPI_COMM_WORLD, &p.size);
  char name[MPI_MAX_PROCESSOR_NAME];
  int len = 0;
  if (MPI_Get_processor_name(name, &len) != MPI_SUCCESS) {
    return absl::InternalError("comm: MPI_Get_processor_name failed");
  }
  p.host.assign(name, len);
  std::vector<uint64_t> hashes(p.size);
  hashes[p.rank] = HostHash(p.host);
  if (MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, hashes.data(), 1, MPI_UINT64_T,
                    MPI_COMM_WORLD) != MPI_SUCCESS) {
    return absl::InternalError(
        absl::StrCat("comm: all-gathering host name hashes failed on rank ", p.rank));
  }
  p.local_rank = LocalRankFromHostHashes(hashes, p.rank);
  p.local_size = 0;
  for (uint64_t h : hashes) p.local_size += h == hashes[p.rank];
  return p;
}

}  // namespace qat::comm
