// qat ckpt inspect DIR: what a checkpoint (or each checkpoint of a run) holds, and whether its
// files still match their checksums.
#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "trainer/checkpoint.h"
#include "trainer/cli/commands.h"
#include "trainer/cli/flags.h"

namespace qat::cli {

int CkptMain(int argc, char** argv) {
  constexpr char kUsage[] = "qat ckpt inspect CHECKPOINT_OR_RUN_DIR";
  Args args;
  int code = 0;
  if (!ParseCommand(argc, argv, "ckpt", kUsage, {}, &args, &code)) return code;
  const auto& pos = args.positional();
  if (pos.size() != 2 || pos[0] != "inspect") {
    std::fprintf(stderr, "usage: %s\n", kUsage);
    return 2;
  }
  namespace fs = std::filesystem;
  std::vector<std::string> dirs;
  std::error_code ec;
  if (fs::exists(fs::path(pos[1]) / "manifest.yaml", ec)) {
    dirs.push_back(pos[1]);
  } else {
    for (const auto& e : fs::directory_iterator(fs::path(pos[1]) / "checkpoints", ec)) {
      if (e.is_directory()) dirs.push_back(e.path().string());
    }
    std::sort(dirs.begin(), dirs.end());
    if (dirs.empty()) return Fail("ckpt", pos[1] + ": no checkpoint directory found");
  }
  bool all_valid = true;
  for (const std::string& d : dirs) {
    absl::StatusOr<trainer::CheckpointInfo> info = trainer::InspectCheckpoint(d);
    if (!info.ok()) {
      std::printf("%s: INVALID: %s\n", d.c_str(), std::string(info.status().message()).c_str());
      all_valid = false;
      continue;
    }
    std::printf("%s: step %lld, loss %.5f, %lld rank(s), sharding %s, recipe %s, %s%s\n", d.c_str(),
                (long long)info->step, info->loss, (long long)info->world_size,
                info->sharding.c_str(), info->recipe_hash.c_str(),
                info->valid ? "valid" : "INVALID",
                info->manifest_sealed ? "" : " (manifest unsealed: written by an older qat)");
    for (const auto& f : info->files) {
      std::printf("  %-24s %12lld bytes  %s  %s\n", f.name.c_str(), (long long)f.bytes,
                  f.checksum.c_str(), f.status.c_str());
    }
    all_valid = all_valid && info->valid;
  }
  return all_valid ? 0 : 1;
}

}  // namespace qat::cli
