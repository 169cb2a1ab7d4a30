// Token shards in the llm.c layout (see tokens.h), little-endian:
//   byte 0     int32 magic    20240520 (uint16 tokens) or 20240801 (uint32 tokens)
//   byte 4     int32 version  1 with 20240520, 7 with 20240801
//   byte 8     int32 count    N, or its low 32 bits (read as uint32) in the uint32 layout
//   byte 12    int32          0, or the high 32 bits of N in the uint32 layout
//   bytes 16..1023            zero (header fields [4..255])
//   byte 1024  N tokens of 2 (uint16) or 4 (uint32) bytes each; nothing after them.
#include <algorithm>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "data/tokens.h"
#include "io/atomic_file.h"
#include "kernels/safetensors.h"

namespace qat::data {
namespace {

constexpr int kHeaderInts = 256;
constexpr uint64_t kHeaderBytes = kHeaderInts * 4;
constexpr int32_t kMagicU16 = 20240520;
constexpr int32_t kVersionU16 = 1;
constexpr int32_t kMagicU32 = 20240801;
constexpr int32_t kVersionU32 = 7;

uint32_t LoadU32Le(const char* p) {
  const auto b = [p](int i) { return static_cast<uint32_t>(static_cast<unsigned char>(p[i])); };
  return b(0) | (b(1) << 8) | (b(2) << 16) | (b(3) << 24);
}

void StoreU32Le(uint32_t v, char* p) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<char>((v >> (8 * i)) & 0xFF);
}

absl::Status Invalid(const std::string& path, uint64_t offset, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": byte offset ", offset, ": ", what));
}

}  // namespace

namespace {
absl::Status WriteShardImpl(const std::string& path, const std::vector<int32_t>& tokens,
                            bool force_wide);
}  // namespace

absl::Status WriteShard(const std::string& path, const std::vector<int32_t>& tokens) {
  return WriteShardImpl(path, tokens, /*force_wide=*/false);
}

absl::Status WriteShard(const std::string& path, const std::vector<int32_t>& tokens,
                        int64_t vocab_size) {
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] >= vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": token ", i, " is ", tokens[i],
                                                     ", outside the vocabulary of ", vocab_size));
    }
  }
  return WriteShardImpl(path, tokens, vocab_size > int64_t{1} << 16);
}

namespace {
absl::Status WriteShardImpl(const std::string& path, const std::vector<int32_t>& tokens,
                            bool force_wide) {
  int32_t max_id = 0;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": token ", i, " is ", tokens[i], "; shard ids must be >= 0"));
    }
    max_id = std::max(max_id, tokens[i]);
  }
  const uint64_t n = tokens.size();
  // uint16 ids when they fit and the count fits header[2] as a non-negative int32.
  const bool wide = force_wide || max_id > std::numeric_limits<uint16_t>::max() ||
                    n > static_cast<uint64_t>(std::numeric_limits<int32_t>::max());
  const uint64_t token_bytes = wide ? 4 : 2;

  std::string contents(kHeaderBytes + n * token_bytes, '\0');
  StoreU32Le(static_cast<uint32_t>(wide ? kMagicU32 : kMagicU16), &contents[0]);
  StoreU32Le(static_cast<uint32_t>(wide ? kVersionU32 : kVersionU16), &contents[4]);
  StoreU32Le(static_cast<uint32_t>(n & 0xFFFFFFFFu), &contents[8]);
  StoreU32Le(static_cast<uint32_t>(n >> 32), &contents[12]);
  char* out = &contents[kHeaderBytes];
  if (wide) {
    for (uint64_t i = 0; i < n; ++i) StoreU32Le(static_cast<uint32_t>(tokens[i]), out + 4 * i);
  } else {
    for (uint64_t i = 0; i < n; ++i) {
      out[2 * i] = static_cast<char>(tokens[i] & 0xFF);
      out[2 * i + 1] = static_cast<char>((tokens[i] >> 8) & 0xFF);
    }
  }
  return kernels::WriteFileAtomic(path, contents);
}
}  // namespace

absl::StatusOr<ShardWriter> ShardWriter::Create(const std::string& path, int64_t vocab_size) {
  absl::StatusOr<io::AtomicFileWriter> file = io::AtomicFileWriter::Create(path);
  if (!file.ok()) return file.status();
  ShardWriter w(path, vocab_size, std::make_unique<io::AtomicFileWriter>(*std::move(file)));
  const std::string header(kHeaderBytes, '\0');  // filled in by Commit
  if (absl::Status s = w.file_->Append(header.data(), header.size()); !s.ok()) return s;
  return w;
}

ShardWriter::ShardWriter(std::string path, int64_t vocab_size,
                         std::unique_ptr<io::AtomicFileWriter> file)
    : path_(std::move(path)),
      vocab_size_(vocab_size),
      wide_(vocab_size > int64_t{1} << 16),
      file_(std::move(file)) {}
ShardWriter::ShardWriter(ShardWriter&&) noexcept = default;
ShardWriter::~ShardWriter() = default;

absl::Status ShardWriter::Append(const int32_t* ids, size_t n) {
  std::string& out = scratch_;
  out.resize(n * (wide_ ? 4 : 2));
  for (size_t i = 0; i < n; ++i) {
    if (ids[i] < 0 || ids[i] >= vocab_size_) {
      return absl::InvalidArgumentError(absl::StrCat(path_, ": token ", tokens_ + int64_t(i),
                                                     " is ", ids[i], ", outside the vocabulary of ",
                                                     vocab_size_));
    }
    if (wide_) {
      StoreU32Le(static_cast<uint32_t>(ids[i]), &out[4 * i]);
    } else {
      out[2 * i] = static_cast<char>(ids[i] & 0xFF);
      out[2 * i + 1] = static_cast<char>((ids[i] >> 8) & 0xFF);
    }
  }
  if (!wide_ && tokens_ + int64_t(n) > std::numeric_limits<int32_t>::max()) {
    return absl::InvalidArgumentError(absl::StrCat(
        path_,
        ": more than 2^31-1 tokens in one uint16 shard; write several (qat prep --shard-tokens)"));
  }
  tokens_ += static_cast<int64_t>(n);
  return file_->Append(out.data(), out.size());
}

absl::Status ShardWriter::Commit() {
  char header[16] = {};
  const uint64_t n = static_cast<uint64_t>(tokens_);
  StoreU32Le(static_cast<uint32_t>(wide_ ? kMagicU32 : kMagicU16), &header[0]);
  StoreU32Le(static_cast<uint32_t>(wide_ ? kVersionU32 : kVersionU16), &header[4]);
  StoreU32Le(static_cast<uint32_t>(n & 0xFFFFFFFFu), &header[8]);
  StoreU32Le(static_cast<uint32_t>(n >> 32), &header[12]);
  if (absl::Status s = file_->WriteAt(0, header, sizeof(header)); !s.ok()) return s;
  return file_->Commit();
}

absl::StatusOr<std::vector<int32_t>> ReadShard(const std::string& path, int64_t vocab_size) {
  absl::StatusOr<std::string> file = kernels::ReadFile(path);
  if (!file.ok()) return file.status();
  const std::string& bytes = *file;
  if (bytes.size() < kHeaderBytes) {
    return Invalid(
        path, bytes.size(),
        absl::StrCat("file ends after ", bytes.size(), " bytes, inside the 1024-byte header"));
  }
  int32_t header[kHeaderInts];
  for (int i = 0; i < kHeaderInts; ++i) {
    header[i] = static_cast<int32_t>(LoadU32Le(bytes.data() + 4 * i));
  }

  const bool wide = header[0] == kMagicU32;
  if (header[0] != kMagicU16 && !wide) {
    return Invalid(path, 0,
                   absl::StrCat("bad magic ", header[0], " in header field [0], expected ",
                                kMagicU16, " (uint16 tokens) or ", kMagicU32, " (uint32 tokens)"));
  }
  const int32_t version = wide ? kVersionU32 : kVersionU16;
  if (header[1] != version) {
    return Invalid(path, 4,
                   absl::StrCat("version ", header[1], " in header field [1], expected ", version,
                                " for magic ", header[0]));
  }
  uint64_t n;
  if (wide) {
    n = static_cast<uint64_t>(static_cast<uint32_t>(header[2])) |
        (static_cast<uint64_t>(static_cast<uint32_t>(header[3])) << 32);
  } else {
    if (header[2] < 0) {
      return Invalid(path, 8,
                     absl::StrCat("token count ", header[2], " in header field [2] is negative"));
    }
    n = static_cast<uint64_t>(header[2]);
  }
  for (int i = wide ? 4 : 3; i < kHeaderInts; ++i) {
    if (header[i] != 0) {
      return Invalid(path, 4 * i,
                     absl::StrCat("header field [", i, "] is ", header[i], ", expected 0"));
    }
  }
  const uint64_t token_bytes = wide ? 4 : 2;
  const uint64_t payload = bytes.size() - kHeaderBytes;
  // Compare by division so that a huge count cannot overflow.
  if (payload % token_bytes != 0 || payload / token_bytes != n) {
    return Invalid(
        path, 8,
        absl::StrCat("header says ", n, " tokens of ", token_bytes, " bytes, but the file holds ",
                     payload, " bytes after the 1024-byte header"));
  }

  // Ids at or above the model's vocabulary would fail deep inside the embedding lookup, naming
  // neither this file nor the offset; so they fail here.
  const uint64_t id_limit = vocab_size > 0 ? static_cast<uint64_t>(vocab_size)
                                           : uint64_t{std::numeric_limits<int32_t>::max()} + 1;
  const auto out_of_range = [&](uint64_t i, uint64_t id) {
    return Invalid(path, kHeaderBytes + token_bytes * i,
                   vocab_size > 0
                       ? absl::StrCat("token ", i, " has id ", id,
                                      ", outside the model's vocabulary [0, ", vocab_size, ")")
                       : absl::StrCat("token id ", id, " does not fit in int32"));
  };
  std::vector<int32_t> tokens(n);
  const char* in = bytes.data() + kHeaderBytes;
  if (wide) {
    for (uint64_t i = 0; i < n; ++i) {
      const uint32_t id = LoadU32Le(in + 4 * i);
      if (id >= id_limit) return out_of_range(i, id);
      tokens[i] = static_cast<int32_t>(id);
    }
  } else {
    for (uint64_t i = 0; i < n; ++i) {
      tokens[i] =
          static_cast<unsigned char>(in[2 * i]) | (static_cast<unsigned char>(in[2 * i + 1]) << 8);
      if (static_cast<uint64_t>(tokens[i]) >= id_limit) return out_of_range(i, tokens[i]);
    }
  }
  return tokens;
}

}  // namespace qat::data
