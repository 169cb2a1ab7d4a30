// GGUF v3 files (the model format of llama.cpp / ggml): a writer, an independent bounds-checked
// reader, and the ggml block formats we export (TQ2_0, TQ1_0, Q4_0, Q4_1, Q8_0, F16, F32).
//
// File layout (every integer little-endian; "string" = u64 byte length + that many bytes, no NUL):
//   bytes [0, 4)     magic "GGUF" (0x47 0x47 0x55 0x46)
//   bytes [4, 8)     u32 version = 3 (the reader also accepts 2, which has the same layout)
//   bytes [8, 16)    u64 tensor_count
//   bytes [16, 24)   u64 kv_count
//   then kv_count key/value pairs, back to back:
//     string key; u32 value_type; the value, encoded by type:
//       UINT8=0 (1 byte)  INT8=1 (1)  UINT16=2 (2)  INT16=3 (2)  UINT32=4 (4)  INT32=5 (4)
//       FLOAT32=6 (4, IEEE binary32)  BOOL=7 (1 byte, 0 or 1)  STRING=8 (string)
//       ARRAY=9 (u32 element type; u64 count; count elements encoded as above, no padding)
//       UINT64=10 (8)  INT64=11 (8)  FLOAT64=12 (8, IEEE binary64)
//     Keys are unique. Arrays of arrays are legal GGUF but ggml rejects them, so we do too.
//     "general.alignment" (UINT32, a power of two) sets the alignment; absent, it is 32.
//   then tensor_count tensor infos, back to back:
//     string name (unique, at most 63 bytes: ggml's GGML_MAX_NAME is 64 with the NUL);
//     u32 n_dims (1..4); n_dims x u64 dims, the row length (innermost, fastest-varying dimension)
//     FIRST, so a row-major torch tensor [out, in] is written as dims {in, out};
//     u32 ggml type; u64 offset of the tensor's bytes relative to the start of the data section,
//     a multiple of the alignment.
//   then zero padding up to the next multiple of the alignment (counted from the file start):
//   the data section starts there. A tensor occupies bytes [offset, offset + nbytes) of it, where
//   nbytes = (dims[0] / block) * block_bytes * dims[1] * ... * dims[n_dims-1].
// The writer lays tensors out in info order, each at the running offset padded to the alignment
// with zeros, and pads the end of the file too: ggml's loader insists on exactly this
// (ggml/src/gguf.cpp: "tensor '%s' has offset %llu, expected %zu"). The reader only insists on
// what the format needs: aligned, in-range, non-overlapping tensors.
//
// Block formats (ggml type id: elements per block, bytes per block). fp16 = IEEE binary16, LE.
//   F32  = 0:  1 element, 4 bytes.
//   F16  = 1:  1 element, 2 bytes.
//   Q4_0 = 2:  32 elements, 18 bytes: bytes [0,2) fp16 d; bytes [2,18) qs[16]. qs[j] (j = 0..15)
//              holds the 4-bit code q of x[j] in bits [3:0] and that of x[j + 16] in bits [7:4];
//              x = (q - 8) * d, q in 0..15 (ggml's block_q4_0 / dequantize_row_q4_0).
//   Q4_1 = 3:  32 elements, 20 bytes: bytes [0,2) fp16 d; bytes [2,4) fp16 m; bytes [4,20)
//              qs[16], nibbles as in Q4_0; x = q * d + m (block_q4_1 / dequantize_row_q4_1).
//              q * d is exact in fp32 (11 x 4 significant bits), so x is one rounding of the
//              exact q * d + m whether or not the compiler fuses the multiply-add.
//   Q8_0 = 8:  32 elements, 34 bytes: bytes [0,2) fp16 d; bytes [2,34) int8 qs[32];
//              x[i] = qs[i] * d. Encoder (ggml's reference): d = absmax / 127, qs[i] =
//              round(x[i]/d) (half away from zero), d stored as fp16 while x/d uses the fp32 d.
//   TQ1_0 = 34: 256 elements, 54 bytes: bytes [0,48) qs; bytes [48,52) qh; bytes [52,54) fp16 d.
//              Each element is a trit t in {-1,0,1} stored as its code c = t + 1 in {0,1,2};
//              x = t * d. Five codes c0..c4 (c0 first) make v = c0*81 + c1*27 + c2*9 + c3*3 + c4
//              (0..242), stored as the byte ceil(v * 256 / 243) = (v * 256 + 242) / 243. Digit n
//              is recovered as ((uint8)(byte * 3^n) * 3) >> 8 (ggml's dequantize_row_tq1_0).
//                qs[m],      m = 0..31: codes of x[m + 32n],       n = 0..4 (elements 0..159)
//                qs[32 + m], m = 0..15: codes of x[160 + m + 16n], n = 0..4 (elements 160..239)
//                qh[j],      j = 0..3:  codes of x[240 + j + 4n],  n = 0..3 as c0..c3, c4 = 0
//                                       (elements 240..255)
//   TQ2_0 = 35: 256 elements, 66 bytes: bytes [0,64) qs; bytes [64,66) fp16 d.
//              Codes c = t + 1 as above, 2 bits each: byte 32h + m (half h = 0,1; m = 0..31)
//              holds the code of x[128h + m + 32n] at bits [2n+1:2n], n = 0..3. x = (c - 1) * d.
//              (Code 3 never comes out of the encoder; ggml would read it as 2d.)
// fp16 conversion rounds to nearest, ties to even, with subnormals, overflow to infinity and
// NaN kept NaN, done by bit manipulation (no hardware or compiler half type needed).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace qat::kernels {

// ---------------------------------------------------------------------------------------------
// fp16

uint16_t FloatToHalf(float f);
float HalfToFloat(uint16_t h);

// ---------------------------------------------------------------------------------------------
// ggml tensor types and blocks

enum class GgmlType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ8_0 = 8,
  kTQ1_0 = 34,
  kTQ2_0 = 35,
};

// False for ids we do not implement (ggml has many more).
bool IsSupportedGgmlType(uint32_t id);
const char* GgmlTypeName(GgmlType type);  // "F32", "F16", "Q4_0", "Q4_1", "Q8_0", "TQ1_0", "TQ2_0"
int64_t GgmlBlockElements(GgmlType type);
int64_t GgmlBlockBytes(GgmlType type);
// Bytes of a tensor with GGUF-order dims; an error if dims[0] is not a multiple of the block,
// a dimension is negative, or the size overflows int64.
absl::StatusOr<int64_t> GgmlTensorBytes(GgmlType type, const std::vector<int64_t>& dims);

inline constexpr int64_t kQkK = 256;  // elements per TQ1_0 / TQ2_0 block
inline constexpr int64_t kTq1BlockBytes = 54;
inline constexpr int64_t kTq2BlockBytes = 66;
inline constexpr int64_t kQ8_0Block = 32;
inline constexpr int64_t kQ8_0BlockBytes = 34;
inline constexpr int64_t kQ4Block = 32;  // elements per Q4_0 / Q4_1 block
inline constexpr int64_t kQ4_0BlockBytes = 18;
inline constexpr int64_t kQ4_1BlockBytes = 20;

// One block from 256 trits (values in {-1,0,1}; anything else is clamped into that range) and
// the fp16 bits of d.
void EncodeTq2Block(const int8_t* trits, uint16_t d, uint8_t* out);
void EncodeTq1Block(const int8_t* trits, uint16_t d, uint8_t* out);
// The 256 values c - 1 of a block and its fp16 d. TQ2_0 code 3 decodes to 2 (as in ggml); TQ1_0
// digits are always 0..2.
void DecodeTq2Block(const uint8_t* block, int8_t* trits, uint16_t* d);
void DecodeTq1Block(const uint8_t* block, int8_t* trits, uint16_t* d);
// 32 floats <-> one Q8_0 block.
void EncodeQ8_0Block(const float* x, uint8_t* out);
void DecodeQ8_0Block(const uint8_t* block, float* x);
// One block from 32 codes (values above 15 are clamped to 15) and the fp16 bits of d (and m).
// No rounding happens here: the caller chooses codes, d and m (see gguf_export.h).
void EncodeQ4_0Block(const uint8_t* codes, uint16_t d, uint8_t* out);
void EncodeQ4_1Block(const uint8_t* codes, uint16_t d, uint16_t m, uint8_t* out);
// The 32 values of a block, computed as ggml does: (q - 8) * d and q * d + m.
void DecodeQ4_0Block(const uint8_t* block, float* x);
void DecodeQ4_1Block(const uint8_t* block, float* x);

// A row of n trits (n a multiple of 256) with one scale for every block: d = fp16(scale).
void EncodeTernaryRow(GgmlType type, const int8_t* trits, int64_t n, float scale, uint8_t* out);
// n floats (n a multiple of the block size of `type`, which is F32, F16 or Q8_0) into `out`.
void EncodeFloatRow(GgmlType type, const float* x, int64_t n, uint8_t* out);
// n elements of any supported type to floats (n a multiple of the block size).
void DequantizeRow(GgmlType type, const uint8_t* data, int64_t n, float* out);

// ---------------------------------------------------------------------------------------------
// Metadata values

enum class GgufType : uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};
const char* GgufTypeName(GgufType type);  // "UINT8", ..., "FLOAT64"; "?" for unknown ids

// One metadata value of any of the 13 types. Arrays hold elements of one non-array type.
class GgufValue {
 public:
  GgufValue() = default;  // UINT8 0
  static GgufValue Uint8(uint8_t v) { return Integer(GgufType::kUint8, v); }
  static GgufValue Int8(int8_t v) { return Integer(GgufType::kInt8, static_cast<uint64_t>(v)); }
  static GgufValue Uint16(uint16_t v) { return Integer(GgufType::kUint16, v); }
  static GgufValue Int16(int16_t v) { return Integer(GgufType::kInt16, static_cast<uint64_t>(v)); }
  static GgufValue Uint32(uint32_t v) { return Integer(GgufType::kUint32, v); }
  static GgufValue Int32(int32_t v) { return Integer(GgufType::kInt32, static_cast<uint64_t>(v)); }
  static GgufValue Uint64(uint64_t v) { return Integer(GgufType::kUint64, v); }
  static GgufValue Int64(int64_t v) { return Integer(GgufType::kInt64, static_cast<uint64_t>(v)); }
  static GgufValue Bool(bool v) { return Integer(GgufType::kBool, v ? 1 : 0); }
  static GgufValue Float32(float v);
  static GgufValue Float64(double v);
  static GgufValue String(std::string v);
  // Every element must have type `elem_type`, which must not be ARRAY (the writer checks).
  static GgufValue Array(GgufType elem_type, std::vector<GgufValue> elems);
  static GgufValue StringArray(const std::vector<std::string>& v);
  static GgufValue Float32Array(const std::vector<float>& v);
  static GgufValue Int32Array(const std::vector<int32_t>& v);

  GgufType type() const { return type_; }
  GgufType elem_type() const { return elem_type_; }  // meaningful for arrays only
  // Integer types and BOOL: the value (signed types sign-extended); 0 for other types.
  int64_t as_int() const { return static_cast<int64_t>(bits_); }
  uint64_t as_uint() const { return bits_; }
  bool as_bool() const { return bits_ != 0; }
  // FLOAT32 / FLOAT64 (a FLOAT32 converts exactly); 0 for other types.
  double as_float() const { return float_; }
  const std::string& as_string() const { return string_; }
  const std::vector<GgufValue>& as_array() const { return array_; }

  bool operator==(const GgufValue& o) const;
  bool operator!=(const GgufValue& o) const { return !(*this == o); }

 private:
  static GgufValue Integer(GgufType type, uint64_t bits);

  GgufType type_ = GgufType::kUint8;
  GgufType elem_type_ = GgufType::kUint8;
  uint64_t bits_ = 0;
  double float_ = 0;
  std::string string_;
  std::vector<GgufValue> array_;
};

inline constexpr uint32_t kGgufDefaultAlignment = 32;
inline constexpr size_t kGgufMaxNameBytes = 63;
inline constexpr int kGgufMaxDims = 4;

// ---------------------------------------------------------------------------------------------
// Writer

class GgufWriter {
 public:
  // Adds a key, or replaces its value in place (keys keep the order in which they were first set).
  void SetKv(const std::string& key, GgufValue value);
  // dims in GGUF order (dims[0] = row length); `bytes` is the encoded data and must be exactly
  // GgmlTensorBytes(type, dims) long. Names must be unique and 1..63 bytes.
  absl::Status AddTensor(const std::string& name, GgmlType type, std::vector<int64_t> dims,
                         std::string bytes);
  // The whole file; an error for a malformed value (mixed array, nested array, bad
  // general.alignment).
  absl::StatusOr<std::string> Serialize() const;
  // Serialize + WriteFileAtomic (temp file, fsync, rename).
  absl::Status Write(const std::string& path) const;

 private:
  struct Tensor {
    std::string name;
    GgmlType type;
    std::vector<int64_t> dims;
    std::string bytes;
  };
  std::vector<std::pair<std::string, GgufValue>> kvs_;
  std::vector<Tensor> tensors_;
};

// ---------------------------------------------------------------------------------------------
// Reader

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> dims;  // GGUF order: dims[0] = row length
  GgmlType type = GgmlType::kF32;
  uint64_t offset = 0;  // relative to the data section
  int64_t bytes = 0;
  int64_t numel() const;
};

// A whole GGUF file held in memory, every field checked (see the layout above): reading a
// truncated, oversized or inconsistent file is an error naming the byte offset, never a crash.
class GgufFile {
 public:
  static absl::StatusOr<GgufFile> Open(const std::string& path);
  // Parses an in-memory image; `path` is only used in error messages.
  static absl::StatusOr<GgufFile> Parse(std::string bytes, const std::string& path);

  uint32_t version() const { return version_; }
  uint32_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }  // file offset of the data section
  const std::vector<std::pair<std::string, GgufValue>>& kvs() const { return kvs_; }
  const GgufValue* FindKv(const std::string& key) const;
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* FindTensor(const std::string& name) const;
  // The tensor's bytes (valid while this object lives).
  const uint8_t* Data(const GgufTensorInfo& t) const;
  // The tensor decoded to floats, row-major in GGUF order (dims[0] fastest).
  absl::StatusOr<std::vector<float>> Dequantize(const std::string& name) const;

 private:
  std::string path_;
  std::string bytes_;
  uint32_t version_ = 0;
  uint32_t alignment_ = kGgufDefaultAlignment;
  uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string, GgufValue>> kvs_;
  std::vector<GgufTensorInfo> tensors_;
};

}  // namespace qat::kernels
