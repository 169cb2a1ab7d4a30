// Checkpoints: a truncated, bit-flipped or missing file is detected by its manifest and skipped;
// resume picks the newest valid checkpoint.
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <yaml-cpp/yaml.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "comm/process_group.h"
#include "process_memory.h"
#include "torch_test_util.h"
#include "trainer/checkpoint.h"
#include "trainer/train.h"

namespace qat::trainer {
namespace {

namespace fs = std::filesystem;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

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
  } else if (how == std::string("missing")) {
    fs::remove(victim);
    expected = "model-00000-of-00001.safetensors";
  } else {
    // The manifest edited: its step 4 -> 90 (issue 15: resume then took the run for finished).
    const std::string manifest_path = newest + "/manifest.yaml";
    std::string text = ReadAll(manifest_path);
    const size_t at = text.find("step: 4\n");
    ASSERT_NE(at, std::string::npos) << text;
    text.replace(at, 8, "step: 90\n");
    expected = "it was edited or damaged";
    if (how == std::string("manifest_resealed")) {  // and its seal recomputed to match
      const size_t seal = text.rfind("manifest_checksum: ");
      ASSERT_NE(seal, std::string::npos);
      text.resize(seal);
      char hex[17];
      std::snprintf(hex, sizeof hex, "%016llx",
                    static_cast<unsigned long long>(Checksum64(text.data(), text.size())));
      text += std::string("manifest_checksum: ") + hex + "\n";
      expected = "step 90 does not match the directory's name, step-00000004";
    }
    std::ofstream(manifest_path, std::ios::binary | std::ios::trunc) << text;
  }
  std::vector<std::string> skipped;
  EXPECT_EQ(FindLatestCheckpoint(r.run.dir, &skipped), older);
  ASSERT_EQ(skipped.size(), 1u);
  EXPECT_NE(skipped[0].find(expected), std::string::npos) << skipped[0];
  EXPECT_NE(skipped[0].find("step-00000004"), std::string::npos) << skipped[0];
  absl::StatusOr<CheckpointInfo> info = InspectCheckpoint(newest);
  EXPECT_TRUE(!info.ok() || !info->valid);
  EXPECT_TRUE(InspectCheckpoint(older).value().valid);
  EXPECT_TRUE(InspectCheckpoint(older).value().manifest_sealed);
  // A resumed run starts from the older checkpoint and completes.
  TrainResult again = Train(r, *comm::MpiWorld().value()).value();
  EXPECT_EQ(again.steps_run, 2);
  EXPECT_EQ(again.final_step, 4);
}

INSTANTIATE_TEST_SUITE_P(Ways, CorruptCheckpoint,
                         ::testing::Values("truncated", "bitflip", "missing", "manifest_edited",
                                           "manifest_resealed"));

// The streamed checksum equals the one-shot one however the bytes are split, and both equal the
// values of the checksum every existing manifest was written with (pinned).
TEST(Checkpoint, StreamedChecksumMatchesTheOneShotOne) {
  std::string bytes;
  for (int i = 0; i < 1000; ++i) bytes.push_back(static_cast<char>((i * 37 + 11) & 0xFF));
  EXPECT_EQ(Checksum64("", 0), 0x877e2011d918dd23ull);
  EXPECT_EQ(Checksum64(bytes.data(), 13), 0xf2358aa412b1ef4eull);
  EXPECT_EQ(Checksum64(bytes.data(), 1000), 0xec99424ce2c71048ull);
  for (const std::vector<size_t>& pieces :
       {std::vector<size_t>{1000}, {1, 999}, {7, 1, 8, 984}, {3, 3, 3, 3, 988}, {999, 1}}) {
    Checksum64Stream sum(bytes.size());
    size_t at = 0;
    for (size_t n : pieces) {
      sum.Update(bytes.data() + at, n);
      at += n;
    }
    EXPECT_EQ(sum.Finish(), Checksum64(bytes.data(), bytes.size())) << pieces.size() << " pieces";
  }
}

// A save streams every tensor into its file: it needs no copy of the state (issue 15: a save
// held each shard file twice, ~1.7x the state at its peak; a 24 GB machine nearly ran out).
TEST(Checkpoint, SaveStreamsTheStateWithoutCopyingIt) {
  const std::string run = testing_util::FreshDir("ckpt_streamed");
  CheckpointState state;
  state.step = 1;
  state.recipe_yaml = "run: {}\n";
  state.model["w"] = torch::randn({16, 1024, 1024});  // 64 MiB each, 192 MiB in all
  state.optimizer["w.exp_avg"] = torch::randn({16, 1024, 1024});
  state.optimizer["w.exp_avg_sq"] = torch::rand({16, 1024, 1024});
  const int64_t state_bytes = 3 * (int64_t{64} << 20);
  const int64_t before = testing_util::ResidentBytes();
  absl::StatusOr<std::string> saved = SaveCheckpoint(run, state, 1);
  ASSERT_TRUE(saved.ok()) << saved.status();
  const int64_t extra = testing_util::PeakResidentBytes() - before;
  EXPECT_LT(extra, state_bytes / 10)
      << "a save's peak memory beyond the state, of " << state_bytes << " bytes";
  CheckpointState loaded = LoadCheckpoint(*saved, true).value();
  EXPECT_TRUE(torch::equal(loaded.model["w"], state.model["w"]));
  EXPECT_TRUE(torch::equal(loaded.optimizer["w.exp_avg_sq"], state.optimizer["w.exp_avg_sq"]));
}

// A save that fails part way removes its step-N.tmp, and a save removes what killed ones left.
TEST(Checkpoint, FailedSavesLeaveNoTemporaryDirectory) {
  const std::string run = testing_util::FreshDir("ckpt_failed_save");
  const fs::path root = fs::path(run) / "checkpoints";
  fs::create_directories(root / "step-00000001.tmp");  // as a SIGKILL during a save leaves it
  std::ofstream(root / "step-00000001.tmp" / "model-00000-of-00001.safetensors") << "partial";
  CheckpointState state;
  state.step = 2;
  state.recipe_yaml = "run: {}\n";
  state.model["__metadata__"] = torch::zeros({4});  // a name safetensors reserves: Write fails
  absl::StatusOr<std::string> saved = SaveCheckpoint(run, state, 2);
  ASSERT_FALSE(saved.ok());
  EXPECT_NE(saved.status().message().find("reserved"), std::string::npos) << saved.status();
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(root)) left.push_back(e.path().filename().string());
  EXPECT_TRUE(left.empty()) << left.size() << " entries, the first " << left[0];
}

// Manifests written before the seal line existed still load; inspect says they are unsealed.
TEST(Checkpoint, UnsealedManifestOfAnOlderQatLoads) {
  const std::string dir = testing_util::FreshDir("ckpt_unsealed");
  testing_util::WriteTinyCorpus(dir);
  Recipe r = testing_util::TinyRecipe(dir);
  r.train.steps = 2;
  r.run.save_every = 2;
  const std::string ckpt = Train(r, *comm::MpiWorld().value()).value().checkpoint;
  const std::string manifest_path = ckpt + "/manifest.yaml";
  std::string text = ReadAll(manifest_path);
  const size_t seal = text.rfind("manifest_checksum: ");
  ASSERT_NE(seal, std::string::npos);
  EXPECT_EQ(text.find('\n', seal), text.size() - 1);  // the last line
  text.resize(seal);
  std::ofstream(manifest_path, std::ios::binary | std::ios::trunc) << text;
  CheckpointInfo info = InspectCheckpoint(ckpt).value();
  EXPECT_TRUE(info.valid);
  EXPECT_FALSE(info.manifest_sealed);
  EXPECT_EQ(LoadCheckpoint(ckpt, true).value().step, 2);
}

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
