// Helpers shared by the libtorch tests: temp directories, tiny recipes and corpora.
#pragma once

#include <algorithm>
#include <filesystem>
#include <string>

#include "data/tokens.h"
#include "test_dir.h"
#include "trainer/checkpoint.h"
#include "trainer/model.h"
#include "trainer/recipe.h"

namespace qat::testing_util {

// A fresh empty directory `name` inside the running test's own directory (test_dir.h), which
// is removed when the test ends.
inline std::string FreshDir(const std::string& name) {
  const std::string p = CurrentTestDir().path(name);
  std::filesystem::remove_all(p);
  std::filesystem::create_directories(p);
  return p;
}

inline trainer::ModelConfig TinyModel() {
  trainer::ModelConfig m;
  m.vocab_size = 258;
  m.hidden_size = 32;
  m.intermediate_size = 48;
  m.num_layers = 2;
  m.num_heads = 4;
  m.num_kv_heads = 2;
  m.max_seq_len = 32;
  return m;
}

// Writes a small, very learnable corpus as train.bin / val.bin in dir.
inline void WriteTinyCorpus(const std::string& dir) {
  data::ByteTokenizer tok;
  std::string text;
  for (int i = 0; i < 200; ++i) text += "the cat sat on the mat. the dog sat on the log. ";
  std::vector<int32_t> ids = tok.Encode(text);
  ASSERT_TRUE(data::WriteShard(dir + "/train.bin", ids).ok());
  std::vector<int32_t> val(ids.begin(), ids.begin() + 600);
  ASSERT_TRUE(data::WriteShard(dir + "/val.bin", val).ok());
}

inline trainer::Recipe TinyRecipe(const std::string& dir) {
  trainer::Recipe r;
  r.path = dir + "/recipe.yaml";
  r.run.dir = dir + "/run";
  r.run.log_every = 1;
  r.model = TinyModel();
  r.quant.method = "ternary";
  r.data.train = {dir + "/train.bin"};
  r.data.val = {dir + "/val.bin"};
  r.data.seq_len = 16;
  r.train.steps = 8;
  r.train.batch_size = 4;
  r.train.micro_batch_size = 2;
  r.train.lr = 3e-3;
  r.train.min_lr = 3e-4;
  r.train.warmup_steps = 2;
  r.eval.max_windows = 4;
  return r;
}

// Saves `model` as a checkpoint with a recipe that describes it; returns the checkpoint dir.
inline std::string SaveModel(trainer::CausalLM& model, const std::string& dir) {
  trainer::Recipe r;
  r.model = model->config();
  r.quant = model->quant();
  r.data.seq_len = std::min<int64_t>(r.data.seq_len, r.model.max_seq_len);
  trainer::CheckpointState state;
  state.step = 1;
  state.recipe_yaml = trainer::RecipeToYaml(r);
  state.model = trainer::ParameterMap(*model);
  return trainer::SaveCheckpoint(dir, state, 1).value();
}

}  // namespace qat::testing_util
