#include "data/documents.h"

#include <fcntl.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "data/glob.h"
#include "data/unicode.h"
#include "io/atomic_file.h"
#include "kernels/json.h"

namespace qat::data {
namespace fs = std::filesystem;

// A file as a stream of decompressed bytes, and the lines in it.
struct DocumentSource::Stream {
  virtual ~Stream() = default;
  // Up to n bytes into buf; 0 at the end.
  virtual absl::StatusOr<size_t> Read(char* buf, size_t n) = 0;
  virtual uint64_t disk_bytes_read() const = 0;

  std::string path;
  bool jsonl = false;
  std::string buffer;  // decompressed bytes not yet consumed start at buffer[pos]
  size_t pos = 0;
  bool at_end = false;
  int64_t next_line = 1;  // line number of buffer[pos]
  int64_t offset = 0;     // decompressed offset of buffer[pos]

  // The next line, without its '\n'; false at the end of the file.
  absl::StatusOr<bool> NextLine(std::string* line, int64_t* line_no, int64_t* line_offset) {
    size_t nl;
    while ((nl = buffer.find('\n', pos)) == std::string::npos && !at_end) {
      if (pos > 0) buffer.erase(0, pos), pos = 0;
      const size_t old = buffer.size();
      buffer.resize(old + (1 << 20));
      absl::StatusOr<size_t> n = Read(buffer.data() + old, 1 << 20);
      if (!n.ok()) return n.status();
      buffer.resize(old + *n);
      at_end = *n == 0;
    }
    if (pos == buffer.size()) return false;
    const size_t end = nl == std::string::npos ? buffer.size() : nl;
    line->assign(buffer, pos, end - pos);
    *line_no = next_line++;
    *line_offset = offset;
    const size_t consumed = (nl == std::string::npos ? end : nl + 1) - pos;
    offset += static_cast<int64_t>(consumed);
    pos += consumed;
    return true;
  }
};

namespace {

class PlainStream : public DocumentSource::Stream {
 public:
  explicit PlainStream(int fd) : fd_(fd) {}
  ~PlainStream() override { close(fd_); }
  absl::StatusOr<size_t> Read(char* buf, size_t n) override {
    for (;;) {
      const ssize_t got = read(fd_, buf, n);
      if (got >= 0) return read_ += got, static_cast<size_t>(got);
      if (errno != EINTR) return io::ErrnoError("cannot read", path, errno);
    }
  }
  uint64_t disk_bytes_read() const override { return read_; }

 private:
  int fd_;
  uint64_t read_ = 0;
};

class GzipStream : public DocumentSource::Stream {
 public:
  explicit GzipStream(gzFile gz) : gz_(gz) { gzbuffer(gz_, 1 << 17); }
  ~GzipStream() override { gzclose(gz_); }
  absl::StatusOr<size_t> Read(char* buf, size_t n) override {
    const int got = gzread(gz_, buf, static_cast<unsigned>(std::min<size_t>(n, 1 << 30)));
    int code = Z_OK;
    const char* what = gzerror(gz_, &code);
    if (got < 0 || (code != Z_OK && code != Z_BUF_ERROR)) {
      return absl::DataLossError(absl::StrCat(path, ": gzip: ", what, " (after ",
                                              offset + buffer.size() - pos,
                                              " decompressed bytes)"));
    }
    if (got == 0 && code == Z_BUF_ERROR) {
      return absl::DataLossError(absl::StrCat(path, ": gzip: the file is truncated"));
    }
    return static_cast<size_t>(got);
  }
  uint64_t disk_bytes_read() const override {
    const z_off_t o = gzoffset(gz_);
    return o > 0 ? static_cast<uint64_t>(o) : 0;
  }

 private:
  gzFile gz_;
};

class ZstdStream : public DocumentSource::Stream {
 public:
  explicit ZstdStream(int fd)
      : fd_(fd), dctx_(ZSTD_createDStream()), in_(ZSTD_DStreamInSize(), '\0') {
    ZSTD_initDStream(dctx_);
  }
  ~ZstdStream() override {
    ZSTD_freeDStream(dctx_);
    close(fd_);
  }
  absl::StatusOr<size_t> Read(char* buf, size_t n) override {
    ZSTD_outBuffer out{buf, n, 0};
    while (out.pos == 0) {
      if (input_.pos == input_.size) {
        if (eof_) {
          if (frame_open_) {
            return absl::DataLossError(absl::StrCat(path, ": zstd: the file is truncated"));
          }
          return size_t{0};
        }
        ssize_t got;
        while ((got = read(fd_, in_.data(), in_.size())) < 0 && errno == EINTR) {
        }
        if (got < 0) return io::ErrnoError("cannot read", path, errno);
        read_ += got;
        eof_ = got == 0;
        input_ = ZSTD_inBuffer{in_.data(), static_cast<size_t>(got), 0};
        if (eof_) continue;
      }
      const size_t rc = ZSTD_decompressStream(dctx_, &out, &input_);
      if (ZSTD_isError(rc)) {
        return absl::DataLossError(absl::StrCat(path, ": zstd: ", ZSTD_getErrorName(rc),
                                                " (compressed byte ",
                                                read_ - (input_.size - input_.pos), ")"));
      }
      frame_open_ = rc != 0;
    }
    return out.pos;
  }
  uint64_t disk_bytes_read() const override { return read_; }

 private:
  int fd_;
  ZSTD_DStream* dctx_;
  std::string in_;
  ZSTD_inBuffer input_{nullptr, 0, 0};
  bool eof_ = false, frame_open_ = false;
  uint64_t read_ = 0;
};

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool IsJsonlName(const std::string& path) {
  std::string name = Lower(fs::path(path).filename().string());
  for (const char* suffix : {".gz", ".zst"}) {
    if (absl::EndsWith(name, suffix)) name.resize(name.size() - std::strlen(suffix));
  }
  return absl::EndsWith(name, ".jsonl") || absl::EndsWith(name, ".ndjson") ||
         absl::EndsWith(name, ".json");
}

// Regular files at `path` (itself, or every one below a directory, in path order).
absl::Status AddPath(const std::string& path, const std::string& input,
                     std::vector<std::string>* files) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (ec || !fs::exists(st)) {
    return absl::NotFoundError(absl::StrCat("prep: input '", input, "' does not exist"));
  }
  if (fs::is_regular_file(st)) {
    files->push_back(path);
    return absl::OkStatus();
  }
  if (!fs::is_directory(st)) {
    return absl::InvalidArgumentError(
        absl::StrCat("prep: input '", path, "' is neither a file nor a directory"));
  }
  std::vector<std::string> found;
  for (fs::recursive_directory_iterator
           it(path, fs::directory_options::follow_directory_symlink, ec),
       end;
       !ec && it != end; it.increment(ec)) {
    if (it->is_regular_file(ec)) found.push_back(it->path().string());
  }
  if (ec)
    return absl::InternalError(absl::StrCat("prep: cannot list '", path, "': ", ec.message()));
  if (found.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("prep: directory '", path, "' holds no files"));
  }
  std::sort(found.begin(), found.end());
  files->insert(files->end(), found.begin(), found.end());
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<DocumentSource> DocumentSource::Open(const DocumentSourceOptions& options) {
  if (options.format != "auto" && options.format != "text" && options.format != "jsonl") {
    return absl::InvalidArgumentError(
        absl::StrCat("prep: unknown input format '", options.format, "' (auto, text or jsonl)"));
  }
  DocumentSource source;
  source.fortune_ = options.fortune;
  for (const std::string& input : options.inputs) {
    if (HasGlobChars(input) && !fs::exists(input)) {
      absl::StatusOr<std::vector<std::string>> matches = GlobSorted(input, "prep: no file matches");
      if (!matches.ok()) return matches.status();
      for (const std::string& m : *matches) {
        if (absl::Status s = AddPath(m, input, &source.files_); !s.ok()) return s;
      }
    } else if (absl::Status s = AddPath(input, input, &source.files_); !s.ok()) {
      return s;
    }
  }
  if (source.files_.empty()) return absl::InvalidArgumentError("prep: no input files given");
  for (const std::string& f : source.files_) {
    source.jsonl_.push_back(options.format == "jsonl" ||
                            (options.format == "auto" && IsJsonlName(f)));
    std::error_code ec;
    source.total_file_bytes_ += fs::file_size(f, ec);
  }
  return source;
}

DocumentSource::DocumentSource(DocumentSource&&) noexcept = default;
DocumentSource& DocumentSource::operator=(DocumentSource&&) noexcept = default;
DocumentSource::~DocumentSource() = default;

uint64_t DocumentSource::file_bytes_read() const {
  return finished_file_bytes_ + (stream_ ? stream_->disk_bytes_read() : 0);
}

absl::Status DocumentSource::OpenNext() {
  const std::string& path = files_[next_file_];
  const std::string lower = Lower(path);
  std::unique_ptr<Stream> s;
  if (absl::EndsWith(lower, ".gz")) {
    gzFile gz = gzopen(path.c_str(), "rb");
    if (gz == nullptr) return io::ErrnoError("cannot open", path, errno ? errno : ENOMEM);
    s = std::make_unique<GzipStream>(gz);
  } else {
    const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return io::ErrnoError("cannot open", path, errno);
    if (absl::EndsWith(lower, ".zst")) {
      s = std::make_unique<ZstdStream>(fd);
    } else {
      s = std::make_unique<PlainStream>(fd);
    }
  }
  s->path = path;
  s->jsonl = jsonl_[next_file_];
  stream_ = std::move(s);
  ++next_file_;
  return absl::OkStatus();
}

absl::StatusOr<bool> DocumentSource::ReadBatch(size_t max_bytes, std::vector<RawRecord>* out) {
  size_t bytes = 0;
  bool any = false;
  std::string line;
  int64_t line_no = 0, line_offset = 0;
  while (bytes < max_bytes) {
    if (!stream_) {
      if (next_file_ == files_.size()) break;
      if (absl::Status s = OpenNext(); !s.ok()) return s;
    }
    Stream& st = *stream_;
    const int32_t file = static_cast<int32_t>(next_file_ - 1);
    RawRecord r;
    r.file = file;
    r.jsonl = st.jsonl;
    bool have = false;
    if (st.jsonl) {
      // One record per non-blank line.
      for (;;) {
        absl::StatusOr<bool> got = st.NextLine(&line, &line_no, &line_offset);
        if (!got.ok()) return got.status();
        if (!*got) break;
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (line.find_first_not_of(" \t") == std::string::npos) continue;
        r.bytes = std::move(line);
        r.line = line_no;
        r.offset = line_offset;
        have = true;
        break;
      }
    } else {
      // Text: lines up to one holding only "%" (fortune), or the whole file.
      for (;;) {
        absl::StatusOr<bool> got = st.NextLine(&line, &line_no, &line_offset);
        if (!got.ok()) return got.status();
        if (!*got) break;
        if (!have) r.line = line_no, r.offset = line_offset, have = true;
        if (fortune_) {
          std::string_view content = line;
          if (!content.empty() && content.back() == '\r') content.remove_suffix(1);
          if (content == "%") break;
        }
        r.bytes.append(line);
        if (st.offset > line_offset + static_cast<int64_t>(line.size())) r.bytes.push_back('\n');
      }
    }
    if (!have) {  // this file is done
      finished_file_bytes_ += stream_->disk_bytes_read();
      bytes_read_ += static_cast<uint64_t>(stream_->offset);
      stream_.reset();
      continue;
    }
    bytes += r.bytes.size() + 1;
    out->push_back(std::move(r));
    any = true;
  }
  return any;
}

absl::StatusOr<std::string> RecordText(const RawRecord& record, const std::string& file,
                                       const std::vector<std::string>& json_keys) {
  const std::string where = absl::StrCat(file, ":", record.line);
  if (!record.jsonl) {
    const size_t bad = unicode::FindInvalidUtf8(record.bytes);
    if (bad != std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": byte offset ", record.offset + static_cast<int64_t>(bad), ": invalid UTF-8"));
    }
    return record.bytes;
  }
  kernels::json::ParseOptions po;
  po.offset_base = record.offset;
  absl::StatusOr<kernels::json::Value> v = kernels::json::Parse(record.bytes, po);
  if (!v.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": malformed JSON: ", v.status().message()));
  }
  const std::string at = absl::StrCat(where, " (byte offset ", record.offset, "): ");
  if (!v->is_object())
    return absl::InvalidArgumentError(absl::StrCat(at, "the line is not a JSON object"));
  std::string text;
  for (size_t k = 0; k < json_keys.size(); ++k) {
    const kernels::json::Value* value = v->Find(json_keys[k]);
    if (value == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(at, "no key \"", json_keys[k], "\""));
    }
    if (!value->is_string()) {
      static const char* kNames[] = {"null",     "a boolean", "a number", "a number",
                                     "a string", "an array",  "an object"};
      return absl::InvalidArgumentError(absl::StrCat(at, "\"", json_keys[k], "\" is ",
                                                     kNames[static_cast<int>(value->type())],
                                                     ", expected a string"));
    }
    if (k > 0) text += kJsonKeySeparator;
    text += value->as_string();
  }
  return text;
}

}  // namespace qat::data
