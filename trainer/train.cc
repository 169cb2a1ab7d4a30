#include "trainer/train.h"

#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "data/mixture.h"
#include "data/tokens.h"
#include "kernels/safetensors.h"
#include "quant/distill.h"
#include "trainer/checkpoint.h"
#include "trainer/evaluate.h"
#include "trainer/hf.h"
#include "trainer/objective.h"
#include "trainer/sharding.h"

namespace qat::trainer {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// Keeps the metrics lines of steps <= `step` (a resumed run rewrites what came after).
absl::Status TruncateMetrics(const std::string& path, int64_t step) {
  std::ifstream in(path);
  if (!in) return absl::OkStatus();
  std::string line, kept;
  while (std::getline(in, line)) {
    long long s = -1;
    if (std::sscanf(line.c_str(), "{\"step\": %lld", &s) == 1 && s <= step) kept += line + "\n";
  }
  return kernels::WriteFileAtomic(path, kept);
}

std::string JsonNumber(double x) {
  return std::isfinite(x) ? absl::StrFormat("%.9g", x) : std::string("null");
}

}  // namespace

absl::StatusOr<torch::Device> ResolveDevice(const std::string& name) {
  const bool have_cuda = torch::cuda::is_available();
  if (name == "cpu" || (name == "auto" && !have_cuda)) return torch::Device(torch::kCPU);
  if (!have_cuda) {
    return absl::FailedPreconditionError(
        "train.device is cuda but libtorch sees no GPU (or was built without CUDA)");
  }
  return torch::Device(torch::kCUDA, 0);
}

double LearningRate(const TrainConfig& t, int64_t step) {
  if (t.warmup_steps > 0 && step < t.warmup_steps) {
    return t.lr * double(step + 1) / double(t.warmup_steps);
  }
  const int64_t decay_steps = std::max<int64_t>(1, t.steps - t.warmup_steps);
  const double progress = std::min(1.0, double(step - t.warmup_steps) / double(decay_steps));
  return t.min_lr + 0.5 * (t.lr - t.min_lr) * (1.0 + std::cos(M_PI * progress));
}

absl::StatusOr<LoadedModel> LoadModelFromCheckpoint(const std::string& path) {
  if (IsHfModelDir(path)) return LoadHfModel(path);  // a Hugging Face directory (trainer/hf.h)
  absl::StatusOr<std::string> dir = ResolveCheckpoint(path);
  if (!dir.ok()) return dir.status();
  absl::StatusOr<CheckpointState> state = LoadCheckpoint(*dir, /*load_optimizer=*/false);
  if (!state.ok()) return state.status();
  absl::StatusOr<Recipe> recipe = ParseRecipeText(state->recipe_yaml, *dir + "/recipe.yaml");
  if (!recipe.ok()) return recipe.status();
  absl::StatusOr<CausalLM> model = BuildModel(recipe->model, recipe->quant);
  if (!model.ok()) return model.status();
  absl::Status s = LoadParameters(**model, state->model, *dir);
  if (!s.ok()) return s;
  (*model)->eval();
  return LoadedModel{*model, *recipe, *dir, state->step};
}

absl::StatusOr<TrainResult> Train(const Recipe& r, comm::ProcessGroup& g) {
  const bool is_main = g.rank() == 0;
  auto say = [&](const std::string& line) {
    if (is_main) std::printf("%s\n", line.c_str()), std::fflush(stdout);
  };
  if (r.train.threads > 0) torch::set_num_threads(static_cast<int>(r.train.threads));

  // Each rank takes a contiguous slice of every global batch, in micro batches.
  const int64_t world = g.size();
  if (r.train.batch_size % world != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(r.path, ": train.batch_size (", r.train.batch_size,
                     ") must be a multiple of the ", world, " ranks"));
  }
  const int64_t per_rank = r.train.batch_size / world;
  const int64_t micro = std::min(r.train.micro_batch_size, per_rank);
  if (per_rank % micro != 0) {
    return absl::InvalidArgumentError(absl::StrCat(r.path, ": the ", per_rank,
                                                   " sequences per rank must be a multiple of "
                                                   "train.micro_batch_size (",
                                                   micro, ")"));
  }

  // A plain list is one source (all its shards); {path, weight} maps are a weighted mixture.
  std::vector<data::MixtureSource> sources;
  if (r.data.train_weights.empty()) {
    sources.push_back({r.data.train, 1.0});
  } else {
    for (size_t i = 0; i < r.data.train.size(); ++i) {
      sources.push_back({{r.data.train[i]}, r.data.train_weights[i]});
    }
  }
  absl::StatusOr<data::MixtureSampler> train_data = data::MixtureSampler::Open(
      sources, r.data.seq_len, static_cast<uint64_t>(r.run.seed), r.model.vocab_size);
  if (!train_data.ok()) return train_data.status();
  std::optional<data::WindowSampler> val_data;
  if (!r.data.val.empty()) {
    absl::StatusOr<data::WindowSampler> v =
        data::WindowSampler::Open(r.data.val, r.data.seq_len, 0, r.model.vocab_size);
    if (!v.ok()) return v.status();
    val_data = std::move(*v);
  }

  absl::StatusOr<ShardingMode> mode = ParseShardingMode(r.train.sharding);
  if (!mode.ok()) return mode.status();
  absl::StatusOr<torch::Device> device = ResolveDevice(r.train.device);
  if (!device.ok()) return device.status();
  const bool cuda = device->is_cuda();

  // Groups: `control` for scalar sums and barriers (MPI, with the recipe's timeout), `tensors`
  // for the gradient and parameter collectives (NCCL for CUDA tensors when it is there).
  std::string backend = r.comm.backend;
  if (backend == "auto") backend = cuda && comm::NcclBuilt() ? "nccl" : "mpi";
  if (backend == "nccl" && !cuda) {
    return absl::InvalidArgumentError(
        absl::StrCat(r.path, ": comm.backend nccl needs CUDA tensors (train.device cuda)"));
  }
  std::shared_ptr<comm::ProcessGroup> control_owned, tensors_owned;
  comm::ProcessGroup* control = &g;
  comm::ProcessGroup* tensors = &g;
  if (world > 1) {
    comm::ProcessGroupOptions options;
    options.timeout_s = r.comm.timeout_s;
    if (g.backend() == "mpi") {
      absl::StatusOr<std::shared_ptr<comm::ProcessGroup>> c = comm::NewMpiGroup(options);
      if (!c.ok()) return c.status();
      control_owned = *c;
      control = tensors = control_owned.get();
    }
    if (backend == "nccl") {
      absl::StatusOr<std::shared_ptr<comm::ProcessGroup>> n = comm::NewNcclGroup(options);
      if (!n.ok()) return n.status();
      tensors_owned = *n;
      tensors = tensors_owned.get();
    }
  }
  if (*mode == ShardingMode::kFsdp) {
    if (r.smoothness.mode != "none" && r.smoothness.estimator == "exact" &&
        r.smoothness.lambda > 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          r.path,
          ": smoothness.estimator exact needs double backward through every block, which "
          "train.sharding fsdp (blocks recomputed in the backward pass) does not have; use "
          "finite_diff, or zero2"));
    }
    if (cuda && world > 1 && backend != "nccl") {
      return absl::InvalidArgumentError(
          absl::StrCat(r.path, ": train.sharding fsdp on CUDA needs comm.backend nccl"));
    }
  }

  absl::StatusOr<CausalLM> built = BuildModel(r.model, r.quant);
  if (!built.ok()) return built.status();
  CausalLM model = *built;
  InitWeights(model, static_cast<uint64_t>(r.run.seed), r.model.init_std);
  const std::optional<torch::Dtype> compute_dtype =
      r.train.dtype == "bf16" ? std::optional<torch::Dtype>(torch::kBFloat16) : std::nullopt;
  model->to(*device);
  model->SetComputeDtype(compute_dtype);
  ShardedModel::Options shard_options;
  shard_options.mode = *mode;
  // Reductions started from the autograd engine's thread: MPI only from the main thread (CPU).
  shard_options.overlap = r.comm.overlap && (cuda ? tensors->backend() == "nccl" : true);
  shard_options.adam = {r.train.beta1, r.train.beta2, r.train.eps, r.train.weight_decay};
  absl::StatusOr<std::unique_ptr<ShardedModel>> sharded_or =
      ShardedModel::Create(model, *tensors, *control, shard_options);
  if (!sharded_or.ok()) return sharded_or.status();
  ShardedModel& sharded = **sharded_or;

  // Where to start: a checkpoint of this run, else the init_from weights, else the init above.
  int64_t start_step = 0;
  std::vector<std::string> skipped;
  const std::string resume_dir =
      r.run.resume == "auto" ? FindLatestCheckpoint(r.run.dir, &skipped) : "";
  for (const std::string& s : skipped) say("warning: skipping invalid checkpoint: " + s);
  if (!resume_dir.empty()) {
    absl::StatusOr<CheckpointState> state = LoadCheckpoint(resume_dir, /*load_optimizer=*/true);
    if (!state.ok()) return state.status();
    absl::Status s = sharded.LoadFull(state->model, &state->optimizer, state->step, resume_dir);
    if (!s.ok()) return s;
    start_step = state->step;
    say(absl::StrCat("resuming from ", resume_dir, " (step ", start_step, ", written by ",
                     state->world_size, " rank(s), ", state->sharding, ")"));
  } else if (!r.model.init_from.empty()) {
    absl::StatusOr<std::string> dir = ResolveCheckpoint(r.model.init_from);
    if (!dir.ok()) return dir.status();
    absl::StatusOr<CheckpointState> state = LoadCheckpoint(*dir, /*load_optimizer=*/false);
    if (!state.ok()) return state.status();
    // A full-precision checkpoint has no learnable quantizer scales: they start from the weights.
    AddInitialQuantizerScales(model, &state->model);
    absl::Status s = sharded.LoadFull(state->model, nullptr, 0, *dir);
    if (!s.ok()) return s;
    say(absl::StrCat("initialised from ", *dir));
  } else if (!r.model.from_hf.empty()) {
    absl::StatusOr<TensorMap> hf = LoadHfTensors(r.model.from_hf, r.model);
    if (!hf.ok()) return hf.status();
    AddInitialQuantizerScales(model, &*hf);
    absl::Status s = sharded.LoadFull(*hf, nullptr, 0, r.model.from_hf);
    if (!s.ok()) return s;
    say(absl::StrCat("initialised from Hugging Face ", r.model.from_hf));
  }

  CausalLM teacher{nullptr};
  std::unique_ptr<ShardedModel> sharded_teacher;
  if (!r.distill.teacher.empty()) {
    absl::StatusOr<LoadedModel> t = LoadModelFromCheckpoint(r.distill.teacher);
    if (!t.ok()) return t.status();
    if (t->recipe.model.vocab_size != r.model.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(r.path, ": distill.teacher ", t->checkpoint,
                                                     " has vocab_size ", t->recipe.model.vocab_size,
                                                     ", the student ", r.model.vocab_size));
    }
    absl::Status fits = CheckTeacher(r, r.model, t->recipe.model);
    if (!fits.ok()) return fits;
    teacher = t->model;
    teacher->to(*device);
    teacher->SetComputeDtype(compute_dtype);
    for (auto& p : teacher->parameters()) p.set_requires_grad(false);
    if (r.distill.teacher_sharding == "shard" && world > 1) {
      ShardedModel::Options o;
      o.mode = ShardingMode::kFsdp;
      o.frozen = true;
      absl::StatusOr<std::unique_ptr<ShardedModel>> st =
          ShardedModel::Create(teacher, *tensors, *control, o);
      if (!st.ok()) return st.status();
      sharded_teacher = std::move(*st);
    }
    say(absl::StrCat("teacher: ", t->checkpoint, " (step ", t->step, ", ",
                     sharded_teacher ? "blocks sharded" : "replicated", ")"));
  }

  const std::string recipe_yaml = RecipeToYaml(r);
  const std::string metrics_path = (fs::path(r.run.dir) / "metrics.jsonl").string();
  if (is_main) {
    std::error_code ec;
    fs::create_directories(r.run.dir, ec);
    if (ec) return absl::InternalError(absl::StrCat(r.run.dir, ": ", ec.message()));
    absl::Status s =
        kernels::WriteFileAtomic((fs::path(r.run.dir) / "recipe.yaml").string(), recipe_yaml);
    if (s.ok()) s = TruncateMetrics(metrics_path, start_step);
    if (!s.ok()) return s;
  }
  std::ofstream metrics;
  if (is_main) metrics.open(metrics_path, std::ios::app);

  const ShardedModel::Footprint owned = sharded.Owned();
  say(
      absl::StrFormat("model: %d parameters, quant %s/%s, %d rank(s) on %s (%s), %s over %s, %d "
                      "sequences x %d tokens per step (micro batch %d); rank 0 holds %.1f MB of "
                      "parameters, gradients and optimizer state",
                      sharded.parameter_count(), r.quant.method, r.quant.granularity, world,
                      device->str(), r.train.dtype, r.train.sharding, tensors->backend(),
                      r.train.batch_size, r.data.seq_len, micro, owned.total() / 1e6));

  // A mixture's realised proportions, over every global batch since step 0 (the source of each
  // sample is a function of (seed, step, sample), so rank 0 counts them without communication).
  std::vector<int64_t> source_draws(train_data->num_sources(), 0);
  const auto count_draws = [&](int64_t step) {
    for (int64_t i = 0; i < r.train.batch_size; ++i) ++source_draws[train_data->SourceOf(step, i)];
  };
  if (train_data->num_sources() > 1) {
    for (int64_t step = 0; step < start_step; ++step) count_draws(step);
    std::string line = "data: a mixture of";
    for (int k = 0; k < train_data->num_sources(); ++k) {
      absl::StrAppendFormat(&line, "%s %s (%d shard(s), %d tokens, weight %.4g)", k ? ";" : "",
                            r.data.train[k], train_data->files(k).size(), train_data->tokens(k),
                            train_data->weight(k));
    }
    say(line);
  }

  TrainResult result;
  result.final_step = start_step;
  result.val_loss = std::nan("");
  const int64_t T = r.data.seq_len;
  std::vector<int32_t> window(static_cast<size_t>(micro * (T + 1)));
  Clock::time_point interval_start = Clock::now();
  double interval_comm = ShardedModel::CommWaitSeconds();
  int64_t interval_tokens = 0;
  double timed_comm = 0.0;
  Clock::time_point last_save = Clock::now();
  std::string last_checkpoint;

  for (int64_t step = start_step; step < r.train.steps; ++step) {
    const Clock::time_point step_start = Clock::now();
    // The step's ops under one "qat_step" range for a profiler (qat bench train --profile); it
    // ends where the step's time is taken, before logging and checkpoints. Free when none runs.
    std::optional<at::RecordFunction> step_scope;
    step_scope.emplace(at::RecordScope::USER_SCOPE);
    if (step_scope->isActive()) step_scope->before("qat_step");
    const double comm_at_start = ShardedModel::CommWaitSeconds();
    const double lr = LearningRate(r.train, step);
    const double lambda = SmoothnessLambda(r.smoothness, step);
    // loss, penalty, input-gradient norm (global-batch means), and rank 0's "a timed save is
    // due" (so that every rank decides the same).
    double sums[4] = {0.0, 0.0, 0.0, 0.0};
    if (is_main && r.run.save_every_minutes > 0 &&
        Seconds(last_save, Clock::now()) >= 60.0 * r.run.save_every_minutes) {
      sums[3] = 1.0;
    }
    absl::Status s = sharded.BeginStep();
    if (!s.ok()) return s;
    try {
      for (int64_t first = 0; first < per_rank; first += micro) {
        train_data->Fill(step, g.rank() * per_rank + first, micro, window.data());
        torch::Tensor batch = torch::from_blob(window.data(), {micro, T + 1}, torch::kInt32)
                                  .to(*device, torch::kInt64);
        torch::Tensor inputs = batch.narrow(1, 0, T), targets = batch.narrow(1, 1, T);
        const double weight = double(micro) / double(r.train.batch_size);
        MicroBatchResult mb =
            BackwardMicroBatch(model, teacher ? &teacher : nullptr, inputs, targets, r, lambda,
                               weight, sharded.Hooks(first + micro == per_rank));
        sums[0] += mb.loss * weight;
        sums[1] += mb.penalty * weight;
        sums[2] += mb.input_grad_norm * weight;
      }
    } catch (const c10::Error& e) {
      return absl::InternalError(absl::StrCat("step ", step + 1, ": ", e.what_without_backtrace()));
    }
    s = sharded.FinishGradients();
    if (s.ok()) s = control->AllReduceSum(sums, 4);
    if (!s.ok()) return s;
    const double step_loss = sums[0];
    absl::StatusOr<double> clipped = sharded.ClipGradients(r.train.grad_clip);
    if (!clipped.ok()) return clipped.status();
    const double grad_norm = *clipped;
    s = sharded.Step(lr);
    if (!s.ok()) return s;
    step_scope.reset();
    if (step > start_step) {
      result.timed_steps += 1;
      result.timed_seconds += Seconds(step_start, Clock::now());
      timed_comm += ShardedModel::CommWaitSeconds() - comm_at_start;
    }
    interval_tokens += r.train.batch_size * T;
    result.final_step = step + 1;
    result.final_loss = step_loss;
    ++result.steps_run;
    if (!std::isfinite(step_loss)) {
      return absl::InternalError(absl::StrCat("step ", step + 1, ": the loss is not finite (",
                                              step_loss, "); lower train.lr?"));
    }

    const bool last = step + 1 == r.train.steps;
    const bool stopping = r.run.stop_after > 0 && step + 1 == r.run.stop_after;
    double val_loss = std::nan("");
    if (val_data && ((r.eval.every > 0 && (step + 1) % r.eval.every == 0) || last)) {
      // fsdp: every rank takes part (blocks are gathered per use); else rank 0 alone.
      const bool fsdp = *mode == ShardingMode::kFsdp;
      if (is_main || fsdp) {
        s = sharded.GatherForForward();
        if (!s.ok()) return s;
        absl::StatusOr<LmEval> ev;
        try {
          ev = EvaluateTorch(model, *val_data, r.eval.max_windows, micro);
        } catch (const c10::Error& e) {
          ev = absl::InternalError(absl::StrCat("validation: ", e.what_without_backtrace()));
        }
        sharded.ReleaseForward();
        if (!ev.ok()) return ev.status();
        val_loss = ev->nll;
        result.val_loss = val_loss;
      }
      s = control->Barrier();
      if (!s.ok()) return s;
    }
    if (train_data->num_sources() > 1) count_draws(step);
    if ((step + 1) % r.run.log_every == 0 || last || step == start_step) {
      const double secs = Seconds(interval_start, Clock::now());
      const double tps = secs > 0 ? interval_tokens / secs : 0.0;
      std::string line =
          absl::StrFormat("step %d/%d | loss %.4f | lr %.3e | grad_norm %.3f | %.0f tok/s",
                          step + 1, r.train.steps, step_loss, lr, grad_norm, tps);
      const double comm_share =
          secs > 0 ? (ShardedModel::CommWaitSeconds() - interval_comm) / secs : 0.0;
      if (world > 1) absl::StrAppendFormat(&line, " | comm wait %.0f%%", 100 * comm_share);
      if (lambda > 0) {
        absl::StrAppendFormat(&line, " | %s %.4g (|dL/dx| %.4g)", r.smoothness.mode, sums[1],
                              sums[2]);
      }
      if (std::isfinite(val_loss)) absl::StrAppendFormat(&line, " | val_loss %.4f", val_loss);
      if (train_data->num_sources() > 1) {
        int64_t all = 0;
        for (int64_t n : source_draws) all += n;
        line += " | mixture realised";
        for (int k = 0; k < train_data->num_sources(); ++k) {
          absl::StrAppendFormat(&line, " %.3f", double(source_draws[k]) / double(all));
        }
      }
      say(line);
      if (is_main) {
        metrics << "{\"step\": " << step + 1 << ", \"loss\": " << JsonNumber(step_loss)
                << ", \"lr\": " << JsonNumber(lr) << ", \"grad_norm\": " << JsonNumber(grad_norm)
                << ", \"tokens_per_s\": " << JsonNumber(tps)
                << ", \"comm_wait_fraction\": " << JsonNumber(comm_share)
                << ", \"val_loss\": " << JsonNumber(val_loss)
                << ", \"smooth_lambda\": " << JsonNumber(lambda)
                << ", \"smooth_penalty\": " << JsonNumber(lambda > 0 ? sums[1] : std::nan(""))
                << ", \"input_grad_norm\": " << JsonNumber(lambda > 0 ? sums[2] : std::nan(""))
                << "}\n";
        metrics.flush();
      }
      interval_start = Clock::now();
      interval_comm = ShardedModel::CommWaitSeconds();
      interval_tokens = 0;
    }
    FaultPoint("step", step + 1, g.rank());
    if ((r.run.save_every > 0 && (step + 1) % r.run.save_every == 0) || last || stopping ||
        sums[3] > 0) {
      CheckpointState state;
      state.step = step + 1;
      state.world_size = world;
      state.sharding = r.train.sharding;
      state.loss = step_loss;
      state.recipe_yaml = recipe_yaml;
      absl::StatusOr<std::string> dir =
          SaveShardedCheckpoint(r.run.dir, state, sharded.OwnedShard(), *control, r.run.keep_last);
      if (!dir.ok()) return dir.status();
      last_checkpoint = *dir;
      last_save = Clock::now();
      say("saved " + *dir);
    }
    if (stopping) {
      say(absl::StrCat("stopping at step ", step + 1, " (run.stop_after)"));
      break;
    }
  }
  if (last_checkpoint.empty()) last_checkpoint = resume_dir;
  if (is_main && result.final_step == r.train.steps) {
    // The done marker tells launch wrappers that a rerun has nothing left to do.
    absl::Status s = kernels::WriteFileAtomic((fs::path(r.run.dir) / "DONE").string(),
                                              absl::StrCat(result.final_step, "\n"));
    if (!s.ok()) return s;
  }
  result.checkpoint = last_checkpoint;
  if (result.timed_seconds > 0) {
    result.tokens_per_s =
        double(result.timed_steps * r.train.batch_size * T) / result.timed_seconds;
    result.comm_wait_fraction = timed_comm / result.timed_seconds;
  }
  if (result.steps_run == 0) say(absl::StrCat("run already complete at step ", start_step));
  return result;
}

}  // namespace qat::trainer
