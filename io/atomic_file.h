// Files: written atomically (a temporary file, fsync, rename, fsync of the directory) so that a
// crash or an error never leaves a half-written file under the final name, and read whole.
// Every file qat writes goes through here.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace qat::io {

// A file written in pieces and put in place atomically: the pieces go to `path`.tmp.<pid>; Commit
// fsyncs it, renames it to `path` and fsyncs the directory. Destroyed uncommitted (an error on the
// way), it removes the temporary file: a failed write leaves nothing behind.
class AtomicFileWriter {
 public:
  static absl::StatusOr<AtomicFileWriter> Create(const std::string& path);
  AtomicFileWriter(AtomicFileWriter&& other) noexcept;
  AtomicFileWriter& operator=(AtomicFileWriter&&) = delete;
  ~AtomicFileWriter();
  absl::Status Append(const char* data, size_t size);
  // Overwrites bytes already appended (a header whose fields are known only at the end).
  absl::Status WriteAt(uint64_t offset, const char* data, size_t size);
  absl::Status Commit();

 private:
  AtomicFileWriter(std::string path, std::string tmp, int fd);
  std::string path_, tmp_;
  int fd_ = -1;
};

// Writes `contents` to `path` atomically (AtomicFileWriter).
absl::Status WriteFileAtomic(const std::string& path, const std::string& contents);
absl::StatusOr<std::string> ReadFile(const std::string& path);

// The error of a failed system call on `path`: NotFound, PermissionDenied or Internal, with
// strerror's text.
absl::Status ErrnoError(const std::string& what, const std::string& path, int err);

}  // namespace qat::io
