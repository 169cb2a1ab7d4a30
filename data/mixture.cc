#include "data/mixture.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "data/glob.h"
#include "data/hash.h"

namespace qat::data {
namespace {

// Salted apart from the window hash of WindowSampler, so the source drawn and the window drawn
// inside it are independent.
constexpr uint64_t kSourceSalt = 0x6d69787475726521ull;  // "mixture!"

}  // namespace

absl::StatusOr<std::vector<std::string>> ExpandShardPaths(
    const std::vector<std::string>& patterns) {
  std::vector<std::string> files;
  for (const std::string& p : patterns) {
    if (!HasGlobChars(p)) {
      files.push_back(p);
      continue;
    }
    absl::StatusOr<std::vector<std::string>> matches = GlobSorted(p, "data: no shard matches");
    if (!matches.ok()) return matches.status();
    files.insert(files.end(), matches->begin(), matches->end());
  }
  return files;
}

absl::StatusOr<MixtureSampler> MixtureSampler::Open(const std::vector<MixtureSource>& sources,
                                                    int64_t seq_len, uint64_t seed,
                                                    int64_t vocab_size) {
  if (sources.empty()) return absl::InvalidArgumentError("data: no training data sources");
  MixtureSampler m;
  m.seed_ = seed;
  double total = 0;
  for (size_t k = 0; k < sources.size(); ++k) {
    if (!(sources[k].weight > 0) || !std::isfinite(sources[k].weight)) {
      return absl::InvalidArgumentError(absl::StrCat("data: source ", k, " has weight ",
                                                     sources[k].weight, "; weights must be > 0"));
    }
    absl::StatusOr<std::vector<std::string>> files = ExpandShardPaths(sources[k].paths);
    if (!files.ok()) return files.status();
    absl::StatusOr<WindowSampler> s = WindowSampler::Open(*files, seq_len, seed, vocab_size);
    if (!s.ok()) return s.status();
    m.samplers_.push_back(*std::move(s));
    m.files_.push_back(*std::move(files));
    total += sources[k].weight;
  }
  double running = 0;
  for (const MixtureSource& s : sources) {
    m.weights_.push_back(s.weight / total);
    running += s.weight / total;
    m.cumulative_.push_back(running);
  }
  m.cumulative_.back() = 1.0;
  return m;
}

int64_t MixtureSampler::total_tokens() const {
  int64_t n = 0;
  for (const WindowSampler& s : samplers_) n += s.total_tokens();
  return n;
}

int MixtureSampler::SourceOf(int64_t step, int64_t sample) const {
  if (samplers_.size() < 2) return 0;
  uint64_t h = SplitMix64(seed_ ^ kSourceSalt);
  h = SplitMix64(h ^ static_cast<uint64_t>(step));
  h = SplitMix64(h ^ static_cast<uint64_t>(sample));
  const double u = static_cast<double>(h >> 11) * 0x1.0p-53;
  return static_cast<int>(std::upper_bound(cumulative_.begin(), cumulative_.end(), u) -
                          cumulative_.begin());
}

void MixtureSampler::Fill(int64_t step, int64_t first, int64_t count, int32_t* out) const {
  if (samplers_.size() == 1) return samplers_[0].Fill(step, first, count, out);
  const int64_t row = samplers_.empty() ? 0 : samplers_[0].seq_len() + 1;
  for (int64_t k = 0; k < count; ++k) {
    const int source = std::min(SourceOf(step, first + k), num_sources() - 1);
    samplers_[source].Fill(step, first + k, 1, out + k * row);
  }
}

}  // namespace qat::data
