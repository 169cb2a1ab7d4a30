// Data-parallel training under mpirun: N ranks with the same global batch give the same losses and
// weights as one rank (fp32, relative 1e-5). Run by ctest with 2 and 4 ranks.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>

#include "comm/process_group.h"
#include "torch_test_util.h"
#include "trainer/checkpoint.h"
#include "trainer/train.h"

namespace qat::trainer {
namespace {

// A group of one process, for the single-rank reference inside an MPI job.
class SoloGroup : public comm::ProcessGroup {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  absl::Status AllReduceSum(float*, int64_t) override { return absl::OkStatus(); }
  absl::Status AllReduceSum(double*, int64_t) override { return absl::OkStatus(); }
  absl::Status Broadcast(void*, int64_t, int) override { return absl::OkStatus(); }
  absl::Status Barrier() override { return absl::OkStatus(); }
};

TEST(Ddp, SameLossesAndWeightsAsOneRank) {
  std::shared_ptr<comm::ProcessGroup> world = comm::MpiWorld().value();
  ASSERT_GE(world->size(), 1);
  // Every rank must use rank 0's directory.
  int64_t id = ::getpid();
  ASSERT_TRUE(world->Broadcast(&id, sizeof id, 0).ok());
  const std::string dir = (std::filesystem::path(::testing::TempDir()) / ("qat_ddp_" + std::to_string(id))).string();
  if (world->rank() == 0) {
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    testing_util::WriteTinyCorpus(dir);
  }
  ASSERT_TRUE(world->Barrier().ok());

  Recipe r = testing_util::TinyRecipe(dir);
  r.train.batch_size = 8;
  r.train.micro_batch_size = 2;
  r.train.steps = 5;
  r.run.dir = dir + "/ranks" + std::to_string(world->size());
  TrainResult many = Train(r, *world).value();

  if (world->rank() == 0) {
    Recipe solo = r;
    solo.run.dir = dir + "/solo";
    SoloGroup one;
    TrainResult ref = Train(solo, one).value();
    EXPECT_NEAR(many.final_loss, ref.final_loss, 1e-5 * std::abs(ref.final_loss));
    EXPECT_NEAR(many.val_loss, ref.val_loss, 1e-5 * std::abs(ref.val_loss));
    TensorMap a = LoadTensors(many.checkpoint + "/model.safetensors").value();
    TensorMap b = LoadTensors(ref.checkpoint + "/model.safetensors").value();
    ASSERT_EQ(a.size(), b.size());
    for (const auto& [name, t] : a) {
      const double diff = (t - b.at(name)).abs().max().item<double>();
      const double scale = b.at(name).abs().max().item<double>();
      EXPECT_LE(diff, 1e-5 * scale) << name;
    }
  }
  ASSERT_TRUE(world->Barrier().ok());
}

}  // namespace
}  // namespace qat::trainer
