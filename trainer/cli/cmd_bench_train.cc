// qat bench train RECIPE: the speed of a recipe's training step, measured by running it.
//
// Runs `--steps` optimizer steps of the recipe in a scratch directory (with --synthetic on random
// tokens, with --random-teacher against a randomly initialised full-precision teacher of the
// same shape), under mpirun for several ranks, and prints: tokens/s of the steady state (every
// step after the first), step time, the share of step time blocked on collectives, model FLOPs
// per token and the model-FLOP utilisation against a dense matmul measured in the same run, then
// the cost of a checkpoint (bytes per rank, save and load time, and save time as steps lost).
// --profile FILE records every libtorch op of rank 0's run (autograd's profiler, a Chrome trace)
// for launch/profile_ops.py, which sets it beside launch/bench_train_ref.py's op by op.
#include <sys/resource.h>
#include <unistd.h>

#include <torch/csrc/autograd/profiler_legacy.h>
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "comm/process_group.h"
#include "data/tokens.h"
#include "trainer/checkpoint.h"
#include "trainer/cli/commands.h"
#include "trainer/cli/flags.h"
#include "trainer/placement.h"
#include "trainer/recipe.h"
#include "trainer/train.h"

namespace qat::cli {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// Matmul FLOPs per token of one forward pass: 2 per weight of every linear (LM head included) plus
// the attention scores and their weighted sum, 4 * seq * hidden per layer (causal: half of it
// is masked, counted anyway as PaLM's MFU does).
double ForwardFlopsPerToken(const trainer::ModelConfig& m, int64_t seq) {
  const double d = double(m.hidden_size), hd = d / double(m.num_heads);
  const double kv = hd * double(m.num_kv_heads);
  const double per_layer = d * d * 2 + d * kv * 2 + 3 * d * double(m.intermediate_size);
  const double linear = double(m.num_layers) * per_layer + d * double(m.vocab_size);
  return 2 * linear + 4 * double(m.num_layers) * double(seq) * d;
}

// Non-embedding parameters (the linears and norms of the blocks), the usual model size.
double NonEmbeddingParams(const trainer::ModelConfig& m) {
  const double d = double(m.hidden_size), hd = d / double(m.num_heads);
  const double kv = hd * double(m.num_kv_heads);
  return double(m.num_layers) *
         (d * d * 2 + d * kv * 2 + 3 * d * double(m.intermediate_size) + 2 * d);
}

// Dense matmul FLOP/s on the training device in the training dtype: the peak MFU is taken against.
double MeasuredMatmulFlops(const torch::Device& device, torch::Dtype dtype) {
  const int64_t n = device.is_cuda() ? 8192 : 1024;
  torch::Tensor a = torch::randn({n, n}, torch::TensorOptions().device(device).dtype(dtype));
  torch::Tensor b = torch::randn({n, n}, a.options());
  torch::Tensor c = torch::matmul(a, b);  // warm-up
  if (device.is_cuda()) torch::cuda::synchronize();
  const int reps = device.is_cuda() ? 20 : 5;
  Clock::time_point t = Clock::now();
  for (int i = 0; i < reps; ++i) c = torch::matmul(a, b);
  if (device.is_cuda()) torch::cuda::synchronize();
  return 2.0 * double(n) * double(n) * double(n) * reps / Since(t);
}

// Writes `tokens` random ids in [0, vocab) (fixed seed) as a token shard.
absl::Status WriteRandomShard(const std::string& path, int64_t vocab, int64_t tokens) {
  std::mt19937_64 rng(20261122);
  std::uniform_int_distribution<int32_t> id(0, int32_t(vocab - 1));
  std::vector<int32_t> ids(static_cast<size_t>(tokens));
  for (int32_t& t : ids) t = id(rng);
  return data::WriteShard(path, ids);
}

// A randomly initialised full-precision checkpoint of `student`'s shape, as a teacher.
absl::Status WriteRandomTeacher(const trainer::Recipe& student, const std::string& run_dir) {
  trainer::Recipe t = student;
  t.quant = trainer::QuantConfig{};
  t.quant.method = "none";
  t.distill = trainer::DistillConfig{};
  // The teacher's saved recipe must stand on its own: grad_match without a teacher is invalid.
  t.smoothness = trainer::SmoothnessConfig{};
  t.model.init_from.clear();
  absl::StatusOr<trainer::CausalLM> model = trainer::BuildModel(t.model, t.quant);
  if (!model.ok()) return model.status();
  trainer::InitWeights(*model, uint64_t(t.run.seed) + 1, t.model.init_std);
  trainer::CheckpointState state;
  state.recipe_yaml = trainer::RecipeToYaml(t);
  state.model = trainer::ParameterMap(**model);
  return trainer::SaveCheckpoint(run_dir, state, 1).status();
}

int64_t DirectoryBytes(const std::string& dir, const std::string& prefix) {
  int64_t bytes = 0;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (e.path().filename().string().rfind(prefix, 0) == 0) bytes += int64_t(e.file_size(ec));
  }
  return bytes;
}

}  // namespace

int BenchTrainMain(int argc, char** argv) {
  constexpr char kUsage[] =
      "[mpirun -np N] qat bench train RECIPE.yaml [--steps N] [--synthetic] [--random-teacher] "
      "[--profile TRACE.json] [--set key=value]...";
  Args args;
  int code = 0;
  if (!ParseCommand(
          argc, argv, "bench train", kUsage,
          {{"steps", true, false, "optimizer steps to run (default 6; the first is warm-up)"},
           {"synthetic", false, false, "train on random tokens instead of data.train"},
           {"random-teacher", false, false,
            "distil from a random full-precision teacher of the student's shape"},
           {"profile", true, false,
            "write rank 0's libtorch ops as a Chrome trace to this file (launch/profile_ops.py)"},
           {"set", true, true, "override a recipe key"}},
          &args, &code)) {
    return code;
  }
  if (args.positional().size() != 1) return Fail("bench train", "expected exactly one recipe file");
  absl::StatusOr<int64_t> steps = args.GetInt("steps", 6);
  if (!steps.ok() || *steps < 2) return Fail("bench train", "--steps must be an integer >= 2");
  std::vector<std::string> sets = args.GetAll("set");
  // The teacher is written below, once the scratch directory exists; naming one now lets the
  // recipe checks that need a teacher (grad_match, hidden-state MSE) pass.
  if (args.Has("random-teacher")) sets.push_back("distill.teacher=(random teacher)");
  absl::StatusOr<trainer::Recipe> loaded = trainer::LoadRecipe(args.positional()[0], sets);
  if (!loaded.ok()) return Fail("bench train", std::string(loaded.status().message()));
  absl::StatusOr<std::shared_ptr<comm::ProcessGroup>> world_or = comm::MpiWorld();
  if (!world_or.ok()) return Fail("bench train", std::string(world_or.status().message()));
  comm::ProcessGroup& world = **world_or;
  const bool main_rank = world.rank() == 0;
  // Threads per rank exactly as qat train chooses them (train.threads, OMP_NUM_THREADS, or the
  // node's cores over its ranks): libtorch's own default can be 1 thread where cpuinfo sees one
  // core, and the step measured would not be the one qat train runs.
  absl::StatusOr<comm::LocalPlacement> placement = comm::MpiLocalPlacement();
  if (!placement.ok()) return Fail("bench train", std::string(placement.status().message()));
  absl::StatusOr<std::string> threads =
      trainer::SetThreadsPerRank(loaded->train.threads, *placement, world);
  if (!threads.ok()) return Fail("bench train", std::string(threads.status().message()));
  if (main_rank) std::printf("%s\n", threads->c_str()), std::fflush(stdout);

  // A scratch directory shared by the ranks (rank 0's name).
  int64_t id = ::getpid();
  absl::Status s = world.Broadcast(&id, sizeof id, 0);
  if (!s.ok()) return Fail("bench train", std::string(s.message()));
  const std::string scratch =
      (fs::temp_directory_path() / ("qat_bench_train_" + std::to_string(id))).string();
  trainer::Recipe r = *loaded;
  r.run.dir = scratch + "/run";
  r.run.resume = "none";
  r.run.save_every = 0;
  r.run.stop_after = 0;
  r.run.log_every = 1;
  r.train.steps = *steps;
  r.eval.every = 0;
  r.data.val.clear();
  if (main_rank) {
    std::error_code ec;
    fs::remove_all(scratch, ec);
    fs::create_directories(scratch, ec);
    if (args.Has("synthetic")) {
      const int64_t tokens =
          std::max<int64_t>(1 << 20, 4 * r.train.batch_size * (r.data.seq_len + 1));
      s = WriteRandomShard(scratch + "/synthetic.bin", r.model.vocab_size, tokens);
    }
    if (s.ok() && args.Has("random-teacher")) s = WriteRandomTeacher(r, scratch + "/teacher");
    if (!s.ok()) return Fail("bench train", std::string(s.message()));
  }
  if (args.Has("synthetic")) r.data.train = {scratch + "/synthetic.bin"};
  if (args.Has("random-teacher")) {
    r.distill.teacher = scratch + "/teacher";
    if (!r.model.init_from.empty()) r.model.init_from = r.distill.teacher;  // same shape
  }
  s = world.Barrier();
  if (!s.ok()) return Fail("bench train", std::string(s.message()));

  absl::StatusOr<trainer::TrainResult> result;
  if (args.Has("profile") && main_rank) {
    // Written when the guard goes out of scope. Profiling slows each op down: the timings printed
    // below are then not the step's speed.
    torch::autograd::profiler::RecordProfile guard(args.Get("profile"));
    result = trainer::Train(r, world);
  } else {
    result = trainer::Train(r, world);
  }
  if (!result.ok()) {
    const std::string message = "qat bench train: error (rank " + std::to_string(world.rank()) +
                                "): " + std::string(result.status().message());
    if (world.size() > 1) comm::AbortJob(message);
    std::fprintf(stderr, "%s\n", message.c_str());
    return 1;
  }

  // The checkpoint the run ended with: its size per rank, and how long a save and a load take.
  const std::string ckpt = result->checkpoint;
  double save_s = 0, load_s = 0;
  {
    trainer::CheckpointState state = trainer::LoadCheckpoint(ckpt, true).value();
    Clock::time_point t = Clock::now();
    absl::StatusOr<trainer::CheckpointState> again = trainer::LoadCheckpoint(ckpt, true);
    load_s = Since(t);
    if (!again.ok()) return Fail("bench train", std::string(again.status().message()));
    trainer::CheckpointShard shard;
    // Every rank writes 1/N of every tensor, as the trainer does.
    const int64_t N = world.size(), rank = world.rank();
    auto take = [&](const trainer::TensorMap& m, std::vector<trainer::TensorSlice>* out) {
      for (const auto& [name, tensor] : m) {
        const int64_t n = tensor.numel(), lo = n * rank / N, hi = n * (rank + 1) / N;
        out->push_back(
            {name, tensor.sizes().vec(), lo, tensor.reshape({-1}).narrow(0, lo, hi - lo)});
      }
    };
    take(state.model, &shard.model);
    take(state.optimizer, &shard.optimizer);
    state.step += 1;  // a new directory beside it
    t = Clock::now();
    absl::StatusOr<std::string> saved =
        trainer::SaveShardedCheckpoint(r.run.dir, state, shard, world, /*keep_last=*/2);
    save_s = Since(t);
    if (!saved.ok()) return Fail("bench train", std::string(saved.status().message()));
  }

  if (main_rank) {
    const torch::Device device = trainer::ResolveDevice(r.train.device).value();
    const torch::Dtype dtype = r.train.dtype == "bf16" ? torch::kBFloat16 : torch::kFloat32;
    const double peak = MeasuredMatmulFlops(device, dtype);
    const double student = 3 * ForwardFlopsPerToken(r.model, r.data.seq_len);
    double teacher = 0;
    if (!r.distill.teacher.empty()) {
      absl::StatusOr<trainer::LoadedModel> t = trainer::LoadModelFromCheckpoint(r.distill.teacher);
      if (t.ok()) teacher = ForwardFlopsPerToken(t->recipe.model, r.data.seq_len);
    }
    const double tps = result->tokens_per_s;
    const double per_rank_flops = (student + teacher) * tps / double(world.size());
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    std::printf(
        "\nqat bench train: %s, %d rank(s) on %s (%s), %s, quant %s, distill %s, smoothness "
        "%s/%s\n",
        args.positional()[0].c_str(), world.size(), device.str().c_str(), r.train.dtype.c_str(),
        r.train.sharding.c_str(), r.quant.method.c_str(), r.distill.teacher.empty() ? "off" : "on",
        r.smoothness.mode.c_str(), r.smoothness.estimator.c_str());
    std::printf("  model: %.1fM non-embedding parameters, batch %lld x %lld tokens\n",
                NonEmbeddingParams(r.model) / 1e6, (long long)r.train.batch_size,
                (long long)r.data.seq_len);
    std::printf(
        "  steady state over %lld steps: %.0f tokens/s, %.3f s/step, comm wait %.1f%% of "
        "step time\n",
        (long long)result->timed_steps, tps,
        result->timed_seconds / double(std::max<int64_t>(1, result->timed_steps)),
        100 * result->comm_wait_fraction);
    std::printf(
        "  model FLOPs/token: %.3g (student fwd+bwd %.3g, teacher fwd %.3g); per rank "
        "%.3g FLOP/s = MFU %.1f%% of the measured dense %s matmul (%.3g FLOP/s)\n",
        student + teacher, student, teacher, per_rank_flops, 100 * per_rank_flops / peak,
        r.train.dtype.c_str(), peak);
    const double step_s = result->timed_seconds / double(std::max<int64_t>(1, result->timed_steps));
    std::printf(
        "  checkpoint: %.1f MB on rank 0 (model %.1f MB + optimizer %.1f MB), save %.3f s "
        "(= %.2f steps), load %.3f s (page cache warm)\n",
        (DirectoryBytes(ckpt, "model-00000") + DirectoryBytes(ckpt, "optimizer-00000")) / 1e6,
        DirectoryBytes(ckpt, "model-00000") / 1e6, DirectoryBytes(ckpt, "optimizer-00000") / 1e6,
        save_s, save_s / step_s, load_s);
    std::printf("  peak resident memory of rank 0: %.2f GB\n", usage.ru_maxrss / 1e6);
    std::error_code ec;
    fs::remove_all(scratch, ec);
  }
  return 0;
}

}  // namespace qat::cli
