#include "data/glob.h"

#include <glob.h>

#include "absl/strings/str_cat.h"

namespace qat::data {

bool HasGlobChars(const std::string& path) {
  return path.find_first_of("*?[") != std::string::npos;
}

absl::StatusOr<std::vector<std::string>> GlobSorted(const std::string& pattern,
                                                    const std::string& no_match) {
  glob_t g;
  const int rc = glob(pattern.c_str(), 0, nullptr, &g);  // matches come sorted
  if (rc != 0) {
    globfree(&g);
    if (rc == GLOB_NOMATCH) return absl::NotFoundError(absl::StrCat(no_match, " '", pattern, "'"));
    return absl::InternalError(absl::StrCat("cannot expand '", pattern, "'"));
  }
  std::vector<std::string> matches(g.gl_pathv, g.gl_pathv + g.gl_pathc);
  globfree(&g);
  return matches;
}

}  // namespace qat::data
