// Files written atomically, and files read whole (io/atomic_file.h).
#include "io/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"

namespace qat::io {

absl::Status ErrnoError(const std::string& what, const std::string& path, int err) {
  const std::string message = absl::StrCat(what, " ", path, ": ", std::strerror(err));
  if (err == ENOENT) return absl::NotFoundError(message);
  if (err == EACCES || err == EPERM) return absl::PermissionDeniedError(message);
  return absl::InternalError(message);
}

absl::StatusOr<AtomicFileWriter> AtomicFileWriter::Create(const std::string& path) {
  std::string tmp = absl::StrCat(path, ".tmp.", getpid());
  const int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoError("cannot create", tmp, errno);
  return AtomicFileWriter(path, std::move(tmp), fd);
}

AtomicFileWriter::AtomicFileWriter(std::string path, std::string tmp, int fd)
    : path_(std::move(path)), tmp_(std::move(tmp)), fd_(fd) {}

AtomicFileWriter::AtomicFileWriter(AtomicFileWriter&& other) noexcept
    : path_(std::move(other.path_)), tmp_(std::move(other.tmp_)), fd_(other.fd_) {
  other.fd_ = -1;
  other.tmp_.clear();
}

AtomicFileWriter::~AtomicFileWriter() {
  if (fd_ >= 0) close(fd_);
  if (!tmp_.empty()) unlink(tmp_.c_str());
}

absl::Status AtomicFileWriter::Append(const char* data, size_t size) {
  if (fd_ < 0) return absl::FailedPreconditionError(absl::StrCat(tmp_, ": not open for writing"));
  size_t written = 0;
  while (written < size) {
    // At most 1 GiB per call: Linux writes no more than about 2 GiB at once.
    const ssize_t n = write(fd_, data + written, std::min<size_t>(size - written, size_t{1} << 30));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError("cannot write", tmp_, errno);
    }
    written += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::Status AtomicFileWriter::WriteAt(uint64_t offset, const char* data, size_t size) {
  if (fd_ < 0) return absl::FailedPreconditionError(absl::StrCat(tmp_, ": not open for writing"));
  size_t written = 0;
  while (written < size) {
    const ssize_t n = pwrite(fd_, data + written, std::min<size_t>(size - written, size_t{1} << 30),
                             static_cast<off_t>(offset + written));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError("cannot write", tmp_, errno);
    }
    written += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::Status AtomicFileWriter::Commit() {
  if (fd_ < 0) return absl::FailedPreconditionError(absl::StrCat(tmp_, ": not open for writing"));
  if (fsync(fd_) != 0) return ErrnoError("cannot fsync", tmp_, errno);
  const int fd = fd_;
  fd_ = -1;
  if (close(fd) != 0) return ErrnoError("cannot close", tmp_, errno);
  if (rename(tmp_.c_str(), path_.c_str()) != 0) {
    return ErrnoError(absl::StrCat("cannot rename ", tmp_, " to"), path_, errno);
  }
  tmp_.clear();  // in place now: nothing to remove
  // Make the rename itself durable.
  const size_t slash = path_.find_last_of('/');
  const std::string dir =
      slash == std::string::npos ? "." : (slash == 0 ? "/" : path_.substr(0, slash));
  const int dir_fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd < 0) return ErrnoError("cannot open directory", dir, errno);
  const int sync_result = fsync(dir_fd);
  const int sync_errno = errno;
  close(dir_fd);
  if (sync_result != 0) return ErrnoError("cannot fsync directory", dir, sync_errno);
  return absl::OkStatus();
}

absl::Status WriteFileAtomic(const std::string& path, const std::string& contents) {
  absl::StatusOr<AtomicFileWriter> file = AtomicFileWriter::Create(path);
  if (!file.ok()) return file.status();
  if (absl::Status s = file->Append(contents.data(), contents.size()); !s.ok()) return s;
  return file->Commit();
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoError("cannot open", path, errno);
  // Read straight into a buffer of the size fstat reports; keep reading in case the file is not
  // a regular file or grew meanwhile.
  std::string contents;
  struct stat st;
  if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0) {
    contents.resize(static_cast<size_t>(st.st_size));
  }
  size_t size = 0;
  char chunk[1 << 16];
  while (true) {
    const bool into_contents = size < contents.size();
    char* dst = into_contents ? contents.data() + size : chunk;
    const size_t room = into_contents ? contents.size() - size : sizeof(chunk);
    const ssize_t n = read(fd, dst, room);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      close(fd);
      return ErrnoError("cannot read", path, err);
    }
    if (n == 0) break;
    if (!into_contents) {
      contents.resize(size);
      contents.append(chunk, static_cast<size_t>(n));
    }
    size += static_cast<size_t>(n);
  }
  close(fd);
  contents.resize(size);
  return contents;
}

}  // namespace qat::io
