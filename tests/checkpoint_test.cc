// Checkpoints: a truncated, bit-flipped or missing file is detected by its manifest and skipped;
// resume picks the newest valid checkpoint.
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>

#include "comm/process_group.h"
#include "torch_test_util.h"
#include "trainer/checkpoint.h"
#include "trainer/train.h"

namespace qat::trainer {
namespace {

namespace fs = std::filesystem;

class CorruptCheckpoint : public ::testing::TestWithParam<const char*> {};

TEST_P(CorruptCheckpoint, IsSkippedWithAReason) {
  const std::string how = GetParam();
  const std::string dir = testing_util::FreshDir(std::string("ckpt_") + how);
  testing_util::WriteTinyCorpus(dir);
  Recipe r = testing_util::TinyRecipe(dir);
  r.train.steps = 4;
  r.run.save_every = 2;
  r.run.keep_last = 3;
  TrainResult res = Train(r, *comm::MpiWorld().value()).value();
  const std::string newest = r.run.dir + "/checkpoints/step-00000004";
  const std::string older = r.run.dir + "/checkpoints/step-00000002";
  ASSERT_EQ(res.checkpoint, newest);
  const std::string victim = newest + "/model-00000-of-00001.safetensors";
  std::string expected;
  if (how == std::string("truncated")) {
    fs::resize_file(victim, fs::file_size(victim) - 5);
    expected = "size";
  } else if (how == std::string("bitflip")) {
    std::fstream f(victim, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(-100, std::ios::end);
    char c;
    f.get(c);
    f.seekp(-100, std::ios::end);
    f.put(static_cast<char>(c ^ 0x10));
    expected = "checksum";
  } else {
    fs::remove(victim);
    expected = "model-00000-of-00001.safetensors";
  }
  std::vector<std::string> skipped;
  EXPECT_EQ(FindLatestCheckpoint(r.run.dir, &skipped), older);
  ASSERT_EQ(skipped.size(), 1u);
  EXPECT_NE(skipped[0].find(expected), std::string::npos) << skipped[0];
  EXPECT_NE(skipped[0].find("step-00000004"), std::string::npos) << skipped[0];
  CheckpointInfo info = InspectCheckpoint(newest).value();
  EXPECT_FALSE(info.valid);
  EXPECT_TRUE(InspectCheckpoint(older).value().valid);
  // A resumed run starts from the older checkpoint and completes.
  TrainResult again = Train(r, *comm::MpiWorld().value()).value();
  EXPECT_EQ(again.steps_run, 2);
  EXPECT_EQ(again.final_step, 4);
}

INSTANTIATE_TEST_SUITE_P(Ways, CorruptCheckpoint, ::testing::Values("truncated", "bitflip", "missing"));

// run.save_every_minutes: a timed save on top of the step-based ones (here: due every step).
TEST(Checkpoint, TimedSavesAndTheManifestIndex) {
  const std::string dir = testing_util::FreshDir("ckpt_timed");
  testing_util::WriteTinyCorpus(dir);
  Recipe r = testing_util::TinyRecipe(dir);
  r.train.steps = 3;
  r.run.keep_last = 10;
  r.run.save_every_minutes = 1e-9;
  Train(r, *comm::MpiWorld().value()).value();
  for (const char* step : {"step-00000001", "step-00000002", "step-00000003"}) {
    EXPECT_TRUE(fs::exists(r.run.dir + "/checkpoints/" + step + "/manifest.yaml")) << step;
  }
  // The manifest indexes every tensor: whole shape and its slices.
  YAML::Node m = YAML::LoadFile(r.run.dir + "/checkpoints/step-00000003/manifest.yaml");
  YAML::Node norm = m["tensors"]["model.norm.weight"];
  ASSERT_TRUE(norm.IsMap());
  EXPECT_EQ(norm["shape"].as<std::string>(), "32");
  ASSERT_EQ(norm["slices"].size(), 1u);
  EXPECT_EQ(norm["slices"][0][0].as<std::string>(), "model-00000-of-00001.safetensors");
  EXPECT_EQ(norm["slices"][0][2].as<int64_t>(), 32);
  EXPECT_TRUE(m["tensors"]["model.norm.weight.exp_avg"].IsMap());
}

}  // namespace
}  // namespace qat::trainer
