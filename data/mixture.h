// Weighted mixtures of training data (Megatron's blend, torchtitan's dataset weights): several
// sources, each a set of token shards, drawn in proportion to their weights.
//
// Which source sample i of step s comes from depends only on (seed, s, i), through a hash
// independent of the one that picks the window inside the source (data/tokens.h WindowSampler):
// a run resumed or resharded sees the same windows, and the realised proportions converge to the
// weights. One source is exactly the plain WindowSampler over its shards (the same windows).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "data/tokens.h"

namespace qat::data {

struct MixtureSource {
  std::vector<std::string> paths;  // shard files or globs (matches in path order)
  double weight = 1;               // > 0; normalised over the sources
};

// The files of `patterns`: each glob expanded (sorted), plain paths as they are. A glob that
// matches nothing is an error naming it.
absl::StatusOr<std::vector<std::string>> ExpandShardPaths(const std::vector<std::string>& patterns);

class MixtureSampler {
 public:
  static absl::StatusOr<MixtureSampler> Open(const std::vector<MixtureSource>& sources,
                                             int64_t seq_len, uint64_t seed,
                                             int64_t vocab_size = 0);
  int num_sources() const { return static_cast<int>(samplers_.size()); }
  double weight(int source) const { return weights_[source]; }  // normalised
  const std::vector<std::string>& files(int source) const { return files_[source]; }
  int64_t total_tokens() const;
  int64_t tokens(int source) const { return samplers_[source].total_tokens(); }
  // The source of sample i of step s.
  int SourceOf(int64_t step, int64_t sample) const;
  // As WindowSampler::Fill, each window from its sample's source.
  void Fill(int64_t step, int64_t first, int64_t count, int32_t* out) const;

 private:
  std::vector<WindowSampler> samplers_;
  std::vector<double> weights_, cumulative_;
  std::vector<std::vector<std::string>> files_;
  uint64_t seed_ = 0;
};

}  // namespace qat::data
