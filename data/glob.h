// Globs in the paths users give (qat prep inputs, data.train shards).
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace qat::data {

// Whether `path` holds a glob metacharacter (*, ? or [).
bool HasGlobChars(const std::string& path);

// The paths matching `pattern`, in path order (glob(3)). None: NotFound "<no_match> '<pattern>'";
// a directory that cannot be read: Internal "cannot expand '<pattern>'".
absl::StatusOr<std::vector<std::string>> GlobSorted(const std::string& pattern,
                                                    const std::string& no_match);

}  // namespace qat::data
