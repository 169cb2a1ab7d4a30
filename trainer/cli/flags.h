// A small command-line parser for the subcommands: declared flags only, clear errors otherwise.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace qat::cli {

struct FlagSpec {
  std::string name;   // without the leading "--"
  bool takes_value;   // --name VALUE (or --name=VALUE); otherwise a switch
  bool repeatable;    // may be given more than once (values accumulate)
  std::string help;
};

class Args {
 public:
  static absl::StatusOr<Args> Parse(int argc, char** argv, int first,
                                    const std::vector<FlagSpec>& specs);
  bool Has(const std::string& name) const { return values_.count(name) > 0; }
  std::string Get(const std::string& name, const std::string& fallback = "") const;
  std::vector<std::string> GetAll(const std::string& name) const;
  absl::StatusOr<int64_t> GetInt(const std::string& name, int64_t fallback) const;
  absl::StatusOr<double> GetDouble(const std::string& name, double fallback) const;
  const std::vector<std::string>& positional() const { return positional_; }

 private:
  std::map<std::string, std::vector<std::string>> values_;
  std::vector<std::string> positional_;
};

std::string FlagHelp(const std::vector<FlagSpec>& specs);

// Parses argv[2..] for `command`; on --help prints usage + flags and sets *exit_code = 0, on a
// bad flag prints the error and sets *exit_code = 2. Returns true when the command should run.
bool ParseCommand(int argc, char** argv, const char* command, const char* usage,
                  std::vector<FlagSpec> specs, Args* args, int* exit_code);

}  // namespace qat::cli
