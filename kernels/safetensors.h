// Reading and writing Hugging Face safetensors files, bounds-checked.
//
// File layout (all integers little-endian):
//   bytes [0, 8)        u64 N, the length of the JSON header
//   bytes [8, 8+N)      UTF-8 JSON object: {"<tensor name>": {"dtype": "F32", "shape": [d0, d1, ...],
//                       "data_offsets": [begin, end]}, ..., "__metadata__": {"<key>": "<string>"}}
//                       possibly padded with trailing spaces (0x20)
//   bytes [8+N, EOF)    the data section; a tensor's bytes are [8+N+begin, 8+N+end)
// Rules the reader enforces (each violation is an error naming the file and what is wrong):
// N <= 100 MiB and 8+N <= file size; the header is a JSON object of objects; dtype is one of
// F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL; every dimension is >= 0; end - begin equals the
// element count times the dtype size (with overflow checks); 0 <= begin <= end <= data size;
// tensors do not overlap; __metadata__ values are strings. The writer emits tensors in the order
// given, back to back with no gaps (Hugging Face's loader rejects holes), and pads the header
// with spaces to a multiple of 8. Tensor data may therefore be unaligned: read it with memcpy.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "io/atomic_file.h"

namespace qat::kernels {

enum class DType { kF64, kF32, kF16, kBF16, kI64, kI32, kI16, kI8, kU8, kBool };
const char* DTypeName(DType d);
int64_t DTypeSize(DType d);

struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  int64_t begin = 0;  // offset into the data section
  int64_t end = 0;
  int64_t numel() const;
};

// A whole safetensors file held in memory (read once; files we load are at most a few GB).
class SafetensorsFile {
 public:
  static absl::StatusOr<SafetensorsFile> Open(const std::string& path);
  // Parses an in-memory image; `path` is only used in error messages.
  static absl::StatusOr<SafetensorsFile> Parse(std::string bytes, const std::string& path);

  const std::string& path() const { return path_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const TensorInfo* Find(const std::string& name) const;
  // Pointer to the tensor's bytes (valid while this object lives).
  const uint8_t* Data(const TensorInfo& t) const;
  // The tensor converted to fp32 (F32, F16, BF16, F64 accepted), or an error naming the tensor.
  absl::StatusOr<std::vector<float>> ReadF32(const std::string& name) const;
  // The same conversion straight into `out`, which must hold exactly `count` = numel floats
  // (saves a copy when loading large models).
  absl::Status ReadF32Into(const std::string& name, float* out, int64_t count) const;

 private:
  std::string path_;
  std::string bytes_;
  int64_t data_start_ = 0;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

// Collects tensors and writes them as one safetensors file, atomically (temp file, fsync, rename).
class SafetensorsWriter {
 public:
  void SetMetadata(const std::string& key, const std::string& value);
  // Copies `bytes` (must equal numel * DTypeSize(dtype)).
  void Add(const std::string& name, DType dtype, std::vector<int64_t> shape, const void* data,
           size_t bytes);
  // Like Add, without the copy: `data` must stay valid and unchanged until Write returns. Write
  // streams such tensors to the file, so that saving a model or a checkpoint needs no second copy
  // of it in memory.
  void AddView(const std::string& name, DType dtype, std::vector<int64_t> shape, const void* data,
               size_t bytes);
  // `observe`, when given, sees every byte of the file in order (e.g. to checksum it without
  // reading the file back).
  absl::Status Write(const std::string& path,
                     const std::function<void(const char*, size_t)>& observe = nullptr) const;
  // The size of the file Write makes (its header and data).
  int64_t FileBytes() const;
  std::string Serialize() const;

 private:
  struct Entry {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    std::string owned;           // Add: the copy
    const char* view = nullptr;  // AddView: the caller's bytes
    size_t view_bytes = 0;
    const char* data() const { return view != nullptr ? view : owned.data(); }
    size_t size() const { return view != nullptr ? view_bytes : owned.size(); }
  };
  std::string Header() const;  // u64 length + JSON header, padded
  std::vector<Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

// The file helpers moved to io/atomic_file.h; these names stay for the code that uses them here.
using io::AtomicFileWriter;
using io::ReadFile;
using io::WriteFileAtomic;

}  // namespace qat::kernels
