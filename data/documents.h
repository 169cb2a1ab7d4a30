// Documents from files, for `qat prep`: what a user's corpus dump looks like on disk.
//
// Inputs are files, directories (every regular file below, in path order) and globs (matches in
// path order). Each file is read as a stream, decompressed when its name ends in .gz (zlib) or
// .zst (libzstd). Its format comes from the name without that suffix, unless forced:
//   .jsonl, .ndjson, .json  JSON Lines: one JSON object per line (blank lines are ignored); the
//                           document is the string value of `json_keys`, several keys joined by
//                           kJsonKeySeparator (a key missing from one line or not a string makes
//                           that line bad);
//   anything else           text: the whole file is one document, or with `fortune` every run of
//                           lines up to a line holding only "%" is one.
// A record is one JSONL line or one text document, with the file, line and byte offset (in the
// decompressed stream) it starts at, so that errors can point at it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace qat::data {

inline constexpr char kJsonKeySeparator[] = "\n\n";

struct DocumentSourceOptions {
  std::vector<std::string> inputs;
  std::string format = "auto";  // auto (by file name), text or jsonl
  bool fortune = false;         // text: documents separated by lines holding only "%"
};

struct RawRecord {
  std::string bytes;   // the JSONL line (without its newline) or the text document
  int32_t file = 0;    // index into DocumentSource::files()
  int64_t line = 0;    // 1-based line of the file where the record starts
  int64_t offset = 0;  // byte offset in the (decompressed) file where it starts
  bool jsonl = false;
};

class DocumentSource {
 public:
  // Expands the inputs; an input that does not exist, a glob that matches nothing and a directory
  // with no files are errors naming it.
  static absl::StatusOr<DocumentSource> Open(const DocumentSourceOptions& options);
  DocumentSource(DocumentSource&&) noexcept;
  DocumentSource& operator=(DocumentSource&&) noexcept;
  ~DocumentSource();

  const std::vector<std::string>& files() const { return files_; }
  uint64_t total_file_bytes() const { return total_file_bytes_; }  // on disk (compressed)
  uint64_t file_bytes_read() const;  // on disk, so far: progress against total_file_bytes()
  uint64_t bytes_read() const { return bytes_read_; }  // decompressed, so far

  // Appends records to *out until they hold at least `max_bytes` or the input ends; returns
  // false when there was nothing left. Read and decompression errors name the file.
  absl::StatusOr<bool> ReadBatch(size_t max_bytes, std::vector<RawRecord>* out);

  struct Stream;  // one open file (documents.cc)

 private:
  DocumentSource() = default;
  absl::Status OpenNext();

  std::vector<std::string> files_;
  std::vector<bool> jsonl_;
  bool fortune_ = false;
  uint64_t total_file_bytes_ = 0, finished_file_bytes_ = 0, bytes_read_ = 0;
  size_t next_file_ = 0;
  std::unique_ptr<Stream> stream_;  // the open file, or null
};

// The document text of a record: a text record as it is; a JSONL line parsed, its keys' strings
// joined. Errors name the file, line and byte offset, and what is wrong (malformed JSON, not an
// object, a missing key, a value that is not a string, invalid UTF-8 in the text).
absl::StatusOr<std::string> RecordText(const RawRecord& record, const std::string& file,
                                       const std::vector<std::string>& json_keys);

}  // namespace qat::data
