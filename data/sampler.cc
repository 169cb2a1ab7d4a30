// The deterministic window sampler: sample i of step s reads the window starting at
// hash(seed, s, i) mod (total - seq_len), so batches depend on nothing but (seed, s, i).
#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "data/hash.h"
#include "data/tokens.h"

namespace qat::data {
namespace {

uint64_t WindowHash(uint64_t seed, int64_t step, int64_t sample) {
  uint64_t h = SplitMix64(seed);
  h = SplitMix64(h ^ static_cast<uint64_t>(step));
  return SplitMix64(h ^ static_cast<uint64_t>(sample));
}

}  // namespace

absl::StatusOr<WindowSampler> WindowSampler::Open(const std::vector<std::string>& shard_paths,
                                                  int64_t seq_len, uint64_t seed,
                                                  int64_t vocab_size) {
  if (seq_len < 1) {
    return absl::InvalidArgumentError(absl::StrCat("sampler: seq_len ", seq_len, " is below 1"));
  }
  WindowSampler sampler;
  sampler.seq_len_ = seq_len;
  sampler.seed_ = seed;
  for (const std::string& path : shard_paths) {
    absl::StatusOr<std::vector<int32_t>> tokens = ReadShard(path, vocab_size);
    if (!tokens.ok()) return tokens.status();
    sampler.tokens_.insert(sampler.tokens_.end(), tokens->begin(), tokens->end());
  }
  if (static_cast<int64_t>(sampler.tokens_.size()) < seq_len + 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "sampler: shards [", absl::StrJoin(shard_paths, ", "), "] hold ", sampler.tokens_.size(),
        " tokens in total, fewer than seq_len + 1 = ", seq_len + 1));
  }
  return sampler;
}

void WindowSampler::Fill(int64_t step, int64_t first, int64_t count, int32_t* out) const {
  const int64_t row = seq_len_ + 1;
  const int64_t total = total_tokens();
  for (int64_t k = 0; k < count; ++k) {
    int32_t* dst = out + k * row;
    if (seq_len_ < 1 || total < row) {  // a default-constructed sampler: nothing to serve
      std::fill(dst, dst + row, 0);
      continue;
    }
    // Starts range over [0, total - seq_len - 1], so the window always ends inside the stream.
    const uint64_t start =
        WindowHash(seed_, step, first + k) % static_cast<uint64_t>(total - seq_len_);
    std::memcpy(dst, tokens_.data() + start, static_cast<size_t>(row) * sizeof(int32_t));
  }
}

int64_t WindowSampler::num_eval_windows() const {
  if (seq_len_ < 1 || total_tokens() < 1) return 0;
  return (total_tokens() - 1) / seq_len_;
}

void WindowSampler::FillEval(int64_t window, int32_t* out) const {
  const int64_t row = seq_len_ + 1;
  if (window < 0 || window >= num_eval_windows()) {  // outside the contract: zeros, not a crash
    std::fill(out, out + std::max<int64_t>(row, 0), 0);
    return;
  }
  std::memcpy(out, tokens_.data() + window * seq_len_, static_cast<size_t>(row) * sizeof(int32_t));
}

}  // namespace qat::data
