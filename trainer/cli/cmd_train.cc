// qat train RECIPE [--set key=value]...   and   qat recipe check|show|schema RECIPE
#include <cstdio>

#include "comm/bootstrap.h"
#include "comm/process_group.h"
#include "trainer/cli/commands.h"
#include "trainer/cli/flags.h"
#include "trainer/placement.h"
#include "trainer/recipe.h"
#include "trainer/train.h"

namespace qat::cli {

int TrainMain(int argc, char** argv) {
  constexpr char kUsage[] = "[mpirun -np N] qat train RECIPE.yaml [--set key=value]...";
  Args args;
  int code = 0;
  if (!ParseCommand(argc, argv, "train", kUsage,
                    {{"set", true, true, "override a recipe key, e.g. --set train.lr=3e-4"}}, &args,
                    &code)) {
    return code;
  }
  if (args.positional().size() != 1) return Fail("train", "expected exactly one recipe file");
  absl::StatusOr<trainer::Recipe> recipe =
      trainer::LoadRecipe(args.positional()[0], args.GetAll("set"));
  if (!recipe.ok()) return Fail("train", std::string(recipe.status().message()));
  absl::StatusOr<std::shared_ptr<comm::ProcessGroup>> world = comm::MpiWorld();
  if (!world.ok()) return Fail("train", std::string(world.status().message()));
  auto failed = [&](const absl::Status& status) {
    const std::string message = "qat train: error (rank " + std::to_string((*world)->rank()) +
                                "): " + std::string(status.message());
    // With peers, a failing rank stops the whole job instead of leaving them in a collective.
    if ((*world)->size() > 1) comm::AbortJob(message);
    std::fprintf(stderr, "%s\n", message.c_str());
    return 1;
  };
  // Where the ranks run: threads per rank from each node's own cores, and one run directory.
  absl::StatusOr<comm::LocalPlacement> placement = comm::MpiLocalPlacement();
  if (!placement.ok()) return failed(placement.status());
  absl::StatusOr<std::string> threads =
      trainer::SetThreadsPerRank(recipe->train.threads, *placement, **world);
  if (!threads.ok()) return failed(threads.status());
  if ((*world)->rank() == 0) std::printf("%s\n", threads->c_str()), std::fflush(stdout);
  if (absl::Status s = trainer::CheckSharedRunDir(recipe->run.dir, *placement, **world); !s.ok()) {
    return failed(s);
  }
  absl::StatusOr<trainer::TrainResult> result = trainer::Train(*recipe, **world);
  if (!result.ok()) return failed(result.status());
  if ((*world)->rank() == 0) {
    std::printf("train: done at step %lld, loss %.4f, val_loss %.4f, checkpoint %s\n",
                (long long)result->final_step, result->final_loss, result->val_loss,
                result->checkpoint.c_str());
  }
  return 0;
}

int RecipeMain(int argc, char** argv) {
  constexpr char kUsage[] = "qat recipe check|show RECIPE.yaml [--set key=value]... | qat recipe schema";
  Args args;
  int code = 0;
  if (!ParseCommand(argc, argv, "recipe", kUsage,
                    {{"set", true, true, "override a recipe key"}}, &args, &code)) {
    return code;
  }
  const auto& pos = args.positional();
  if (pos.size() == 1 && pos[0] == "schema") {
    std::fputs(trainer::RecipeSchemaDoc().c_str(), stdout);
    return 0;
  }
  if (pos.size() != 2 || (pos[0] != "check" && pos[0] != "show")) {
    std::fprintf(stderr, "usage: %s\n", kUsage);
    return 2;
  }
  absl::StatusOr<trainer::Recipe> recipe = trainer::LoadRecipe(pos[1], args.GetAll("set"));
  if (!recipe.ok()) return Fail("recipe", std::string(recipe.status().message()));
  if (pos[0] == "check") {
    std::printf("%s: ok\n", pos[1].c_str());
  } else {
    std::fputs(trainer::RecipeToYaml(*recipe).c_str(), stdout);
  }
  return 0;
}

}  // namespace qat::cli
