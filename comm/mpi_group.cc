#include <mpi.h>

#include <climits>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "comm/process_group.h"

namespace qat::comm {
namespace {

absl::Status MpiError(int code, const char* op) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(code, text, &len);
  return absl::InternalError(absl::StrCat("MPI ", op, " failed: ", std::string(text, len)));
}

// MPI counts are int: large buffers go in chunks.
template <typename Fn>
absl::Status Chunked(int64_t count, const char* op, Fn fn) {
  constexpr int64_t kChunk = INT_MAX / 8;
  for (int64_t off = 0; off < count; off += kChunk) {
    const int n = static_cast<int>(std::min(kChunk, count - off));
    if (int rc = fn(off, n); rc != MPI_SUCCESS) return MpiError(rc, op);
  }
  return absl::OkStatus();
}

class MpiGroup : public ProcessGroup {
 public:
  MpiGroup() {
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  absl::Status AllReduceSum(float* data, int64_t count) override {
    if (size_ == 1) return absl::OkStatus();
    return Chunked(count, "Allreduce", [&](int64_t off, int n) {
      return MPI_Allreduce(MPI_IN_PLACE, data + off, n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    });
  }
  absl::Status AllReduceSum(double* data, int64_t count) override {
    if (size_ == 1) return absl::OkStatus();
    return Chunked(count, "Allreduce", [&](int64_t off, int n) {
      return MPI_Allreduce(MPI_IN_PLACE, data + off, n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    });
  }
  absl::Status Broadcast(void* data, int64_t bytes, int root) override {
    if (size_ == 1) return absl::OkStatus();
    char* p = static_cast<char*>(data);
    return Chunked(bytes, "Bcast", [&](int64_t off, int n) {
      return MPI_Bcast(p + off, n, MPI_BYTE, root, MPI_COMM_WORLD);
    });
  }
  absl::Status Barrier() override {
    if (int rc = MPI_Barrier(MPI_COMM_WORLD); rc != MPI_SUCCESS) return MpiError(rc, "Barrier");
    return absl::OkStatus();
  }

 private:
  int rank_ = 0, size_ = 1;
};

void FinalizeAtExit() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

}  // namespace

absl::StatusOr<std::shared_ptr<ProcessGroup>> MpiWorld() {
  static std::shared_ptr<ProcessGroup> world;
  if (world) return world;
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    int provided = 0;
    if (int rc = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
        rc != MPI_SUCCESS) {
      return MpiError(rc, "Init");
    }
    // Errors come back as codes so they can become a Status naming the operation.
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    std::atexit(FinalizeAtExit);
  }
  world = std::make_shared<MpiGroup>();
  return world;
}

}  // namespace qat::comm
