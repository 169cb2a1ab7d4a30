// Recipes: defaults, base inheritance, overrides, and a table of bad recipes with their messages.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "torch_test_util.h"
#include "trainer/recipe.h"

namespace qat::trainer {
namespace {

std::string Write(const std::string& dir, const std::string& name, const std::string& text) {
  std::ofstream(dir + "/" + name) << text;
  return dir + "/" + name;
}

TEST(Recipe, DefaultsBaseAndOverrides) {
  const std::string dir = testing_util::FreshDir("recipe_ok");
  Write(dir, "base.yaml", "train:\n  lr: 0.01\n  steps: 50\nmodel:\n  num_layers: 3\n");
  const std::string child =
      Write(dir, "child.yaml", "base: base.yaml\ntrain:\n  steps: 70\ndata:\n  train: [a.bin, b.bin]\n");
  Recipe r = LoadRecipe(child, {"train.warmup_steps=5", "quant.method=none"}).value();
  EXPECT_EQ(r.train.lr, 0.01);          // from the base
  EXPECT_EQ(r.train.steps, 70);         // the child overrides the base
  EXPECT_EQ(r.model.num_layers, 3);
  EXPECT_EQ(r.train.warmup_steps, 5);   // --set
  EXPECT_EQ(r.quant.method, "none");
  EXPECT_EQ(r.model.hidden_size, 256);  // default
  EXPECT_EQ(r.data.train, (std::vector<std::string>{"a.bin", "b.bin"}));
  // The resolved YAML reads back to the same recipe.
  Recipe again = ParseRecipeText(RecipeToYaml(r), "resolved").value();
  EXPECT_EQ(RecipeToYaml(again), RecipeToYaml(r));
}

TEST(Recipe, WeightedMixtureReadsAndWritesBack) {
  Recipe r =
      ParseRecipeText(
          "data:\n  train: [{path: \"web/*.bin\", weight: 0.7}, {path: code.bin, weight: 0.3}]\n",
          "mix.yaml")
          .value();
  EXPECT_EQ(r.data.train, (std::vector<std::string>{"web/*.bin", "code.bin"}));
  EXPECT_EQ(r.data.train_weights, (std::vector<double>{0.7, 0.3}));
  Recipe again = ParseRecipeText(RecipeToYaml(r), "resolved").value();
  EXPECT_EQ(again.data.train, r.data.train);
  EXPECT_EQ(again.data.train_weights, r.data.train_weights);
  // A plain list stays a plain list (one source), also through --set.
  Recipe plain = ParseRecipeText("data:\n  train: [a.bin, b.bin]\n", "plain.yaml").value();
  EXPECT_TRUE(plain.data.train_weights.empty());
  // Mistakes are named.
  for (const auto& [text, want] : std::vector<std::pair<std::string, std::string>>{
           {"data:\n  train: [a.bin, {path: b.bin, weight: 1}]\n", "plain paths and maps mixed"},
           {"data:\n  train: [{path: b.bin, weight: 0}]\n", "must be a number > 0"},
           {"data:\n  train: [{path: b.bin, wieght: 2}]\n", "unknown key 'wieght'"},
           {"data:\n  train: [{weight: 2}]\n", "a map without a path"}}) {
    absl::StatusOr<Recipe> bad = ParseRecipeText(text, "bad.yaml");
    ASSERT_FALSE(bad.ok()) << text;
    EXPECT_NE(std::string(bad.status().message()).find(want), std::string::npos) << bad.status();
    EXPECT_NE(std::string(bad.status().message()).find("data.train"), std::string::npos)
        << bad.status();
  }
}

struct BadRecipe {
  const char* text;
  std::vector<std::string> overrides;
  std::vector<const char*> expected;  // substrings of the message
};

TEST(Recipe, BadRecipesGetClearMessages) {
  const std::string dir = testing_util::FreshDir("recipe_bad");
  Write(dir, "cycle_a.yaml", "base: cycle_b.yaml\n");
  Write(dir, "cycle_b.yaml", "base: cycle_a.yaml\n");
  Write(dir, "huge.yaml", "# " + std::string(2 << 20, 'x') + "\n");
  Write(dir, "binary.yaml", std::string("train:\n  lr: 0.1\0\n", 18));
  std::filesystem::create_directory(dir + "/subdir");
  const std::vector<BadRecipe> cases = {
      {"train:\n  lrr: 0.1\n",
       {},
       {"bad.yaml:2", "unknown key 'train.lrr'", "did you mean 'train.lr'"}},
      {"trian:\n  lr: 0.1\n", {}, {"bad.yaml:1", "unknown key 'trian'", "did you mean 'train'"}},
      {"train:\n  steps: many\n", {}, {"bad.yaml:2", "'train.steps' must be an integer", "many"}},
      {"train:\n  lr: -1\n", {}, {"'train.lr'", "out of range"}},
      {"quant:\n  method: quinary\n", {}, {"'quant.method'", "quinary", "none, ternary"}},
      {"model:\n  tie_embeddings: maybe\n", {}, {"'model.tie_embeddings' must be true or false"}},
      {"train: [1, 2\n", {}, {"bad.yaml", "malformed YAML"}},
      {"model: 3\n", {}, {"'model' is a section"}},
      {"base: cycle_a.yaml\n", {}, {"base cycle"}},
      {"base: missing.yaml\n", {}, {"missing.yaml", "cannot open"}},
      // bases that are not recipe files: each used to hang, exhaust memory or read as empty
      {"base: /dev/zero\n",
       {},
       {"bad.yaml:1: base '/dev/zero'", "/dev/zero", "must be a regular file", "a device"}},
      {"base: /dev/urandom\n", {}, {"/dev/urandom", "must be a regular file"}},
      {"base: subdir\n",
       {},
       {"bad.yaml:1: base 'subdir'", "must be a regular file", "a directory"}},
      {"base: huge.yaml\n", {}, {"bad.yaml:1: base 'huge.yaml'", "too large for a recipe"}},
      {"base: binary.yaml\n", {}, {"binary.yaml", "NUL byte at offset 16"}},
      {"", {"train.nope=1"}, {"--set train.nope=1", "unknown key 'train.nope'"}},
      {"", {"train.lr"}, {"expected KEY=VALUE"}},
      {"model:\n  hidden_size: 100\n  num_heads: 3\n", {}, {"multiple of model.num_heads"}},
  };
  for (const BadRecipe& c : cases) {
    const std::string path = Write(dir, "bad.yaml", c.text);
    absl::StatusOr<Recipe> r = LoadRecipe(path, c.overrides);
    ASSERT_FALSE(r.ok()) << c.text;
    const std::string msg(r.status().message());
    for (const char* e : c.expected) EXPECT_NE(msg.find(e), std::string::npos) << msg << " lacks " << e;
  }
  absl::StatusOr<Recipe> missing = LoadRecipe(dir + "/nope.yaml");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("nope.yaml"), std::string::npos);
}

TEST(Recipe, EveryShippedRecipeIsValid) {
  int n = 0;
  for (const auto& e : std::filesystem::directory_iterator(QAT_SOURCE_DIR "/recipes")) {
    if (e.path().extension() != ".yaml") continue;
    absl::StatusOr<Recipe> r = LoadRecipe(e.path().string());
    EXPECT_TRUE(r.ok()) << e.path() << ": " << r.status().message();
    ++n;
  }
  EXPECT_GT(n, 0);
}

}  // namespace
}  // namespace qat::trainer
