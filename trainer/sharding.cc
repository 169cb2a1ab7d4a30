#include "trainer/sharding.h"

#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/torch.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <deque>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"

namespace qat::trainer {
namespace sharding_internal {

// One parameter's place in its unit's flat vector.
struct FlatParam {
  std::string name;
  torch::Tensor tensor;  // the module's parameter
  std::vector<int64_t> shape;
  int64_t offset = 0, numel = 0;
  bool decay = false;
};

// A contiguous run of one parameter that an optimizer updates: views of equal length.
struct Segment {
  torch::Tensor param, grad, exp_avg, exp_avg_sq;
  bool decay = false;
};

struct Unit {
  std::string name;
  DecoderLayerImpl* layer = nullptr;  // null for the root unit
  std::vector<FlatParam> params;
  std::vector<torch::Tensor> tensors;  // the parameters, in order (autograd inputs of a block)
  int64_t numel = 0, padded = 0, shard = 0, begin = 0;
  bool trainable = true;
  bool params_sharded = false;  // fsdp: the parameters live in param_shard between uses

  torch::Tensor flat_param;   // [padded] (fsdp: only while gathered)
  torch::Tensor param_shard;  // fsdp: [shard], elements [begin, begin + shard)
  torch::Tensor flat_grad;    // [padded] (zero2 / fsdp: only while gradients accumulate)
  torch::Tensor grad_shard;   // zero2 / fsdp: [shard]
  torch::Tensor exp_avg, exp_avg_sq;
  int64_t opt_begin = 0;  // flat index of exp_avg[0]
  std::vector<Segment> segments;

  // Gradient bucket of the step.
  int64_t ready = 0;
  bool bucket_ready = false, launched = false;
  std::unique_ptr<comm::Work> work;

  // fsdp gathering.
  enum class State { kReleased, kGathering, kGathered } state = State::kGathered;
  std::unique_ptr<comm::Work> gather_work;
};

namespace {

bool Direct(const torch::Tensor& t, const comm::ProcessGroup& g) {
  return t.is_cuda() == (g.backend() == "nccl");
}

}  // namespace

// Nanoseconds this process spent blocked on collectives (waits and staged copies).
std::atomic<int64_t> comm_wait_ns{0};

class WaitTimer {
 public:
  WaitTimer() : start_(std::chrono::steady_clock::now()) {}
  ~WaitTimer() {
    comm_wait_ns += std::chrono::duration_cast<std::chrono::nanoseconds>(
                        std::chrono::steady_clock::now() - start_)
                        .count();
  }

 private:
  std::chrono::steady_clock::time_point start_;
};

// Tensor collectives: asynchronous when the tensor's memory suits the backend, else staged
// through host memory (finished on return: the Work is null). A world of one copies locally.
absl::StatusOr<std::unique_ptr<comm::Work>> AllReduce(comm::ProcessGroup& g, torch::Tensor& t) {
  if (g.size() == 1) return std::unique_ptr<comm::Work>();
  if (Direct(t, g))
    return g.AllReduceAsync(t.data_ptr<float>(), t.data_ptr<float>(), t.numel(),
                            comm::DataType::kF32);
  WaitTimer timer;
  torch::Tensor host = t.to(torch::kCPU).contiguous();
  absl::Status s = g.AllReduce(host.data_ptr<float>(), host.data_ptr<float>(), host.numel(),
                               comm::DataType::kF32);
  if (!s.ok()) return s;
  t.copy_(host);
  return std::unique_ptr<comm::Work>();
}

// shard = the rank's part of the sum over ranks of full.
absl::StatusOr<std::unique_ptr<comm::Work>> ReduceScatter(comm::ProcessGroup& g,
                                                          const torch::Tensor& full,
                                                          torch::Tensor& shard) {
  if (g.size() == 1) {
    shard.copy_(full.narrow(0, 0, shard.numel()));
    return std::unique_ptr<comm::Work>();
  }
  if (Direct(full, g)) {
    return g.ReduceScatterAsync(full.data_ptr<float>(), shard.data_ptr<float>(), shard.numel(),
                                comm::DataType::kF32);
  }
  WaitTimer timer;
  torch::Tensor host_full = full.to(torch::kCPU).contiguous();
  torch::Tensor host_shard = torch::empty({shard.numel()}, host_full.options());
  absl::Status s = g.ReduceScatter(host_full.data_ptr<float>(), host_shard.data_ptr<float>(),
                                   shard.numel(), comm::DataType::kF32);
  if (!s.ok()) return s;
  shard.copy_(host_shard);
  return std::unique_ptr<comm::Work>();
}

// full[r * S, (r+1) * S) = rank r's full[r * S, (r+1) * S): in place, S = full.numel() / size.
absl::StatusOr<std::unique_ptr<comm::Work>> AllGatherInPlace(comm::ProcessGroup& g,
                                                             torch::Tensor& full) {
  if (g.size() == 1) return std::unique_ptr<comm::Work>();
  const int64_t S = full.numel() / g.size();
  if (Direct(full, g)) {
    float* base = full.data_ptr<float>();
    return g.AllGatherAsync(base + g.rank() * S, base, S, comm::DataType::kF32);
  }
  WaitTimer timer;
  torch::Tensor host = full.to(torch::kCPU).contiguous();
  float* base = host.data_ptr<float>();
  absl::Status s = g.AllGather(base + g.rank() * S, base, S, comm::DataType::kF32);
  if (!s.ok()) return s;
  full.copy_(host);
  return std::unique_ptr<comm::Work>();
}

absl::Status Finish(std::unique_ptr<comm::Work>& w) {
  if (!w) return absl::OkStatus();
  WaitTimer timer;
  absl::Status s = w->Wait();
  w.reset();
  return s;
}

// What a released parameter points to: one element expanded to the full shape, so that autograd
// still sees the parameter's shape (and its gradient-layout checks pass) while no memory is held.
torch::Tensor Placeholder(const FlatParam& p, const torch::TensorOptions& options) {
  return torch::zeros({1}, options).expand(p.shape);
}

// Throws (through the autograd engine, caught by the trainer) when a collective fails inside a
// forward or backward pass, where no Status can be returned.
void ThrowIfError(const absl::Status& s) {
  TORCH_CHECK(s.ok(), "fsdp: ", std::string(s.message()));
}

// The FSDP schedule of the decoder blocks: gather before use (prefetching the next block),
// release after, reduce-scatter each backward pass's gradients.
class FsdpScheduler {
 public:
  FsdpScheduler(std::vector<std::unique_ptr<Unit>>& units, comm::ProcessGroup& g)
      : units_(units), group_(g) {}
  Unit& unit(int64_t i) { return *units_[size_t(i)]; }
  int64_t blocks() const { return int64_t(units_.size()) - 1; }

  void StartGather(Unit& u) {
    if (u.state != Unit::State::kReleased) return;
    u.flat_param = torch::empty({u.padded}, u.param_shard.options());
    u.flat_param.narrow(0, u.begin, u.shard).copy_(u.param_shard);
    absl::StatusOr<std::unique_ptr<comm::Work>> w = AllGatherInPlace(group_, u.flat_param);
    ThrowIfError(w.status());
    u.gather_work = std::move(*w);
    u.state = Unit::State::kGathering;
  }
  void Ensure(Unit& u) {
    StartGather(u);
    if (u.state == Unit::State::kGathered) return;
    ThrowIfError(Finish(u.gather_work));
    torch::NoGradGuard no_grad;
    for (FlatParam& p : u.params) {
      p.tensor.set_data(u.flat_param.narrow(0, p.offset, p.numel).view(p.shape));
    }
    u.state = Unit::State::kGathered;
    ThrowIfError(Progress());
  }
  void Prefetch(int64_t i) {
    if (i >= 0 && i < blocks()) StartGather(unit(i));
  }
  void Release(Unit& u) {
    if (u.state == Unit::State::kReleased) return;
    if (u.state == Unit::State::kGathering) ThrowIfError(Finish(u.gather_work));
    torch::NoGradGuard no_grad;
    for (FlatParam& p : u.params) p.tensor.set_data(Placeholder(p, u.param_shard.options()));
    u.flat_param = torch::Tensor();
    u.state = Unit::State::kReleased;
  }

  // The block's gradients of this backward pass go into views of a fresh flat buffer (autograd
  // accumulates into them in place).
  void PrepareGradients(Unit& u) {
    if (u.flat_grad.defined()) return;
    u.flat_grad = torch::zeros({u.padded}, u.param_shard.options());
    for (FlatParam& p : u.params) {
      p.tensor.mutable_grad() = u.flat_grad.narrow(0, p.offset, p.numel).view(p.shape);
    }
  }
  // All of the block's gradients of this pass are in: reduce-scatter them, added to grad_shard
  // when the collective is done (in launch order, so sums are deterministic).
  void ReduceGradients(Unit& u) {
    Pending p{&u, u.flat_grad, torch::empty({u.shard}, u.flat_grad.options()), nullptr};
    absl::StatusOr<std::unique_ptr<comm::Work>> w = ReduceScatter(group_, p.full, p.part);
    ThrowIfError(w.status());
    p.work = std::move(*w);
    for (FlatParam& fp : u.params) fp.tensor.mutable_grad() = torch::Tensor();
    u.flat_grad = torch::Tensor();
    pending_.push_back(std::move(p));
    ThrowIfError(Progress());
  }
  // Completes the finished reductions at the front of the queue (all of them when wait).
  absl::Status Progress(bool wait = false) {
    while (!pending_.empty()) {
      Pending& p = pending_.front();
      if (p.work && !wait && !p.work->Done()) break;
      absl::Status s = Finish(p.work);
      if (!s.ok()) return s;
      p.unit->grad_shard.add_(p.part);
      pending_.pop_front();
    }
    return absl::OkStatus();
  }

 private:
  struct Pending {
    Unit* unit;
    torch::Tensor full, part;
    std::unique_ptr<comm::Work> work;
  };
  std::vector<std::unique_ptr<Unit>>& units_;
  comm::ProcessGroup& group_;
  std::deque<Pending> pending_;
};

// A decoder block under FSDP: forward with the gathered parameters (then released), backward by
// recomputing the forward with the parameters gathered again. The parameters are inputs of the
// function so that autograd hands their gradients to their accumulators (and the engine skips
// them when only input gradients are asked for, e.g. by torch::autograd::grad w.r.t. x).
struct FsdpBlock : public torch::autograd::Function<FsdpBlock> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, torch::Tensor x,
                               torch::Tensor cos, torch::Tensor sin, torch::TensorList params,
                               FsdpScheduler* scheduler, int64_t index) {
    ctx->save_for_backward({x, cos, sin});
    ctx->saved_data["scheduler"] = reinterpret_cast<int64_t>(scheduler);
    ctx->saved_data["index"] = index;
    ctx->saved_data["params"] = int64_t(params.size());
    Unit& u = scheduler->unit(index);
    torch::Tensor y = u.layer->forward(x, cos, sin);
    scheduler->Release(u);
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    auto* scheduler = reinterpret_cast<FsdpScheduler*>(ctx->saved_data["scheduler"].toInt());
    const int64_t index = ctx->saved_data["index"].toInt();
    const size_t n_params = size_t(ctx->saved_data["params"].toInt());
    std::vector<torch::Tensor> saved = ctx->get_saved_variables();
    Unit& u = scheduler->unit(index);
    const bool want_x = ctx->needs_input_grad(0);
    bool want_params = false;
    for (size_t k = 0; k < n_params; ++k) want_params = want_params || ctx->needs_input_grad(3 + k);

    scheduler->Ensure(u);
    scheduler->Prefetch(index - 1);
    std::vector<torch::Tensor> inputs, grads;
    {
      torch::AutoGradMode enable(true);
      torch::Tensor x = saved[0].detach().requires_grad_(want_x);
      torch::Tensor y = u.layer->forward(x, saved[1], saved[2]);
      if (want_x) inputs.push_back(x);
      if (want_params) inputs.insert(inputs.end(), u.tensors.begin(), u.tensors.end());
      if (!inputs.empty()) {
        grads = torch::autograd::grad({y}, inputs, {grad_out[0]}, /*retain_graph=*/false,
                                      /*create_graph=*/false, /*allow_unused=*/true);
      }
    }
    if (want_params) scheduler->PrepareGradients(u);
    scheduler->Release(u);

    torch::autograd::variable_list out(3 + n_params + 2);
    size_t k = 0;
    if (want_x) out[0] = grads[k++];
    if (want_params) {
      for (size_t i = 0; i < n_params; ++i) out[3 + i] = grads[k++];
    }
    return out;
  }
};

}  // namespace sharding_internal

using sharding_internal::AllGatherInPlace;
using sharding_internal::AllReduce;
using sharding_internal::Finish;
using sharding_internal::FlatParam;
using sharding_internal::FsdpBlock;
using sharding_internal::FsdpScheduler;
using sharding_internal::ReduceScatter;
using sharding_internal::Segment;

absl::StatusOr<ShardingMode> ParseShardingMode(const std::string& name) {
  if (name == "ddp") return ShardingMode::kDdp;
  if (name == "zero1") return ShardingMode::kZero1;
  if (name == "zero2") return ShardingMode::kZero2;
  if (name == "fsdp") return ShardingMode::kFsdp;
  return absl::InvalidArgumentError(
      absl::StrCat("train.sharding: '", name, "' is not one of ddp, zero1, zero2, fsdp"));
}

const char* ShardingModeName(ShardingMode mode) {
  switch (mode) {
    case ShardingMode::kDdp:
      return "ddp";
    case ShardingMode::kZero1:
      return "zero1";
    case ShardingMode::kZero2:
      return "zero2";
    case ShardingMode::kFsdp:
      return "fsdp";
  }
  return "?";
}

ShardedModel::ShardedModel(CausalLM model, comm::ProcessGroup& group, comm::ProcessGroup& control,
                           Options options)
    : model_(std::move(model)), group_(group), control_(control), options_(options) {}

ShardedModel::~ShardedModel() {
  model_->SetLayerRunner(nullptr);
  // Unhook before the units go: the accumulators may outlive this object inside the parameters.
  accumulators_.clear();
}

absl::StatusOr<std::unique_ptr<ShardedModel>> ShardedModel::Create(CausalLM model,
                                                                   comm::ProcessGroup& group,
                                                                   comm::ProcessGroup& control,
                                                                   Options options) {
  if (options.frozen &&
      (options.mode == ShardingMode::kZero1 || options.mode == ShardingMode::kZero2)) {
    options.mode = ShardingMode::kDdp;  // without gradients or optimizer these are replication
  }
  std::unique_ptr<ShardedModel> m(new ShardedModel(std::move(model), group, control, options));
  absl::Status s = m->Build();
  if (!s.ok()) return s;
  return m;
}

bool ShardedModel::PerStepBucket(const Unit& u) const {
  return u.trainable && !(options_.mode == ShardingMode::kFsdp && u.layer != nullptr);
}

absl::Status ShardedModel::Build() {
  const int64_t N = group_.size(), rank = group_.rank();
  const ShardingMode mode = options_.mode;
  // Units: every decoder block, then the rest ("root").
  std::map<std::string, torch::Tensor> all;
  for (auto& item : model_->named_parameters()) all[item.key()] = item.value();
  const int64_t L = int64_t(model_->model->layers->size());
  std::set<std::string> taken;
  for (int64_t i = 0; i <= L; ++i) {
    auto u = std::make_unique<Unit>();
    std::vector<std::pair<std::string, torch::Tensor>> params;
    if (i < L) {
      u->name = absl::StrCat("model.layers.", i);
      u->layer = model_->model->layers[size_t(i)]->as<DecoderLayer>();
      for (auto& item : u->layer->named_parameters()) {
        params.emplace_back(absl::StrCat(u->name, ".", item.key()), item.value());
      }
    } else {
      u->name = "root";
      for (auto& item : model_->named_parameters()) {
        if (!taken.count(item.key())) params.emplace_back(item.key(), item.value());
      }
    }
    for (auto& [name, t] : params) {
      if (!all.count(name)) {
        return absl::InternalError(absl::StrCat("sharding: parameter ", name, " not found"));
      }
      taken.insert(name);
      FlatParam fp{name, t, t.sizes().vec(), u->numel, t.numel(), t.dim() >= 2};
      u->numel += t.numel();
      u->params.push_back(fp);
      u->tensors.push_back(t);
      if (!t.requires_grad()) u->trainable = false;
    }
    if (options_.frozen) u->trainable = false;
    u->padded = (u->numel + N - 1) / N * N;
    u->shard = u->padded / N;
    u->begin = rank * u->shard;
    units_.push_back(std::move(u));
  }

  torch::NoGradGuard no_grad;
  const torch::TensorOptions f32 =
      torch::TensorOptions()
          .dtype(torch::kFloat32)
          .device(units_.back()->params.empty() ? torch::Device(torch::kCPU)
                                                : units_.back()->params[0].tensor.device());
  for (size_t ui = 0; ui < units_.size(); ++ui) {
    Unit& u = *units_[ui];
    // Flat parameters, initialised from the module (identical on every rank).
    torch::Tensor flat = torch::zeros({u.padded}, f32);
    for (FlatParam& p : u.params) {
      if (p.tensor.scalar_type() != torch::kFloat32) {
        return absl::InvalidArgumentError(absl::StrCat("sharding: ", p.name, " is not float32"));
      }
      flat.narrow(0, p.offset, p.numel).copy_(p.tensor.reshape({-1}));
    }
    // A frozen (teacher) model keeps its root unit gathered: only its blocks are sharded.
    u.params_sharded = mode == ShardingMode::kFsdp && (u.layer != nullptr || !options_.frozen);
    if (u.trainable) {
      // Keep each accumulator alive with its metadata taken while the parameter has its full
      // shape; its post hook tells us when the parameter's gradient of a pass is complete.
      for (FlatParam& p : u.params) {
        std::shared_ptr<torch::autograd::Node> acc =
            torch::autograd::impl::grad_accumulator(p.tensor);
        acc->add_post_hook(std::make_unique<torch::autograd::utils::LambdaPostHook>(
            [this, ui](const torch::autograd::variable_list& outputs,
                       const torch::autograd::variable_list&) {
              OnGradientAccumulated(ui);
              return outputs;
            }));
        accumulators_.push_back(acc);
      }
    }
    if (u.params_sharded) {
      u.param_shard = flat.narrow(0, u.begin, u.shard).clone();
      u.state = Unit::State::kReleased;
      for (FlatParam& p : u.params) p.tensor.set_data(Placeholder(p, f32));
    } else {
      u.flat_param = flat;
      for (FlatParam& p : u.params)
        p.tensor.set_data(flat.narrow(0, p.offset, p.numel).view(p.shape));
      u.state = Unit::State::kGathered;
    }
    if (!u.trainable) continue;

    // Gradients and optimizer state.
    const bool full_grads = mode == ShardingMode::kDdp || mode == ShardingMode::kZero1;
    if (full_grads) {
      u.flat_grad = torch::zeros({u.padded}, f32);
    } else {
      u.grad_shard = torch::zeros({u.shard}, f32);
    }
    const bool full_optimizer = mode == ShardingMode::kDdp;
    u.opt_begin = full_optimizer ? 0 : u.begin;
    const int64_t opt_len = full_optimizer ? u.padded : u.shard;
    u.exp_avg = torch::zeros({opt_len}, f32);
    u.exp_avg_sq = torch::zeros({opt_len}, f32);
    const torch::Tensor& param_store = u.params_sharded ? u.param_shard : u.flat_param;
    const int64_t param_base = u.params_sharded ? u.begin : 0;
    const torch::Tensor& grad_store = full_grads ? u.flat_grad : u.grad_shard;
    const int64_t grad_base = full_grads ? 0 : u.begin;
    for (FlatParam& p : u.params) {
      const int64_t lo = std::max(p.offset, u.opt_begin);
      const int64_t hi = std::min(p.offset + p.numel, u.opt_begin + opt_len);
      if (lo >= hi) continue;
      Segment seg;
      seg.param = param_store.narrow(0, lo - param_base, hi - lo);
      seg.grad = grad_store.narrow(0, lo - grad_base, hi - lo);
      seg.exp_avg = u.exp_avg.narrow(0, lo - u.opt_begin, hi - lo);
      seg.exp_avg_sq = u.exp_avg_sq.narrow(0, lo - u.opt_begin, hi - lo);
      seg.decay = p.decay;
      u.segments.push_back(seg);
    }
  }
  // Buckets are reduced from the last block down, the root last: the order gradients arrive in.
  for (size_t ui = units_.size() - 1; ui-- > 0;) {
    if (PerStepBucket(*units_[ui])) bucket_order_.push_back(ui);
  }
  if (PerStepBucket(*units_.back())) bucket_order_.push_back(units_.size() - 1);

  if (mode == ShardingMode::kFsdp) {
    fsdp_ = std::make_unique<FsdpScheduler>(units_, group_);
    FsdpScheduler* scheduler = fsdp_.get();
    model_->SetLayerRunner([scheduler](int64_t i, DecoderLayerImpl&, const torch::Tensor& x,
                                       const torch::Tensor& cos, const torch::Tensor& sin) {
      Unit& u = scheduler->unit(i);
      // Gathered before the call so that autograd records the parameters' full shapes.
      scheduler->Ensure(u);
      scheduler->Prefetch(i + 1);
      return FsdpBlock::apply(x, cos, sin, torch::TensorList(u.tensors), scheduler, i);
    });
  }
  return absl::OkStatus();
}

void ShardedModel::OnGradientAccumulated(size_t index) {
  Unit& u = *units_[index];
  if (!PerStepBucket(u)) {  // an fsdp block: reduce after every pass
    if (++u.ready < int64_t(u.params.size())) return;
    u.ready = 0;
    fsdp_->ReduceGradients(u);
    return;
  }
  if (!armed_) return;
  if (++u.ready < int64_t(u.params.size())) return;
  u.bucket_ready = true;
  LaunchReadyBuckets();
}

void ShardedModel::LaunchReadyBuckets() {
  while (next_bucket_ < bucket_order_.size() && units_[bucket_order_[next_bucket_]]->bucket_ready) {
    absl::Status s = LaunchBucket(*units_[bucket_order_[next_bucket_]]);
    if (!s.ok() && deferred_error_.ok()) deferred_error_ = s;
    ++next_bucket_;
  }
  // MPI progresses inside MPI calls: poke the running reductions.
  for (size_t i = 0; i < next_bucket_; ++i) {
    Unit& u = *units_[bucket_order_[i]];
    if (u.work) u.work->Done();
  }
}

absl::Status ShardedModel::LaunchBucket(Unit& u) {
  u.launched = true;
  absl::StatusOr<std::unique_ptr<comm::Work>> w =
      u.grad_shard.defined() ? ReduceScatter(group_, u.flat_grad, u.grad_shard)
                             : AllReduce(group_, u.flat_grad);
  if (!w.ok()) return w.status();
  u.work = std::move(*w);
  return absl::OkStatus();
}

absl::Status ShardedModel::BeginStep() {
  torch::NoGradGuard no_grad;
  armed_ = false;
  next_bucket_ = 0;
  deferred_error_ = absl::OkStatus();
  for (auto& up : units_) {
    Unit& u = *up;
    if (!u.trainable) continue;
    u.ready = 0;
    u.bucket_ready = u.launched = false;
    if (u.grad_shard.defined()) u.grad_shard.zero_();
    if (!PerStepBucket(u)) continue;  // fsdp blocks: buffers per pass
    if (u.flat_grad.defined()) {
      u.flat_grad.zero_();
    } else {
      u.flat_grad = torch::zeros({u.padded}, u.grad_shard.options());
    }
    for (FlatParam& p : u.params) {
      p.tensor.mutable_grad() = u.flat_grad.narrow(0, p.offset, p.numel).view(p.shape);
    }
  }
  if (fsdp_) {
    try {
      fsdp_->Ensure(*units_.back());  // the root unit stays gathered for the step
    } catch (const c10::Error& e) {
      return absl::InternalError(e.what_without_backtrace());
    }
  }
  return absl::OkStatus();
}

BackwardHooks ShardedModel::Hooks(bool last_micro_batch) {
  BackwardHooks hooks;
  if (last_micro_batch && options_.overlap) hooks.before_final_backward = [this] { armed_ = true; };
  hooks.gradients_leave_each_pass = options_.mode == ShardingMode::kFsdp;
  return hooks;
}

absl::Status ShardedModel::FinishGradients() {
  armed_ = false;
  for (size_t i = next_bucket_; i < bucket_order_.size(); ++i) {
    units_[bucket_order_[i]]->bucket_ready = true;
  }
  LaunchReadyBuckets();
  absl::Status status = deferred_error_;
  if (fsdp_) {
    absl::Status s = fsdp_->Progress(/*wait=*/true);
    if (status.ok()) status = s;
  }
  for (size_t i : bucket_order_) {
    Unit& u = *units_[i];
    absl::Status s = Finish(u.work);
    if (status.ok()) status = s;
    if (u.grad_shard.defined()) {  // zero2 / fsdp root: only the shard stays
      for (FlatParam& p : u.params) p.tensor.mutable_grad() = torch::Tensor();
      u.flat_grad = torch::Tensor();
    }
  }
  return status;
}

absl::StatusOr<double> ShardedModel::ClipGradients(double max_norm) {
  torch::NoGradGuard no_grad;
  const bool sharded =
      options_.mode == ShardingMode::kZero2 || options_.mode == ShardingMode::kFsdp;
  double sq = 0.0;
  for (auto& up : units_) {
    if (!up->trainable) continue;
    const torch::Tensor& g = sharded ? up->grad_shard : up->flat_grad;
    sq += g.to(torch::kFloat64).pow(2).sum().item<double>();
  }
  if (sharded && control_.size() > 1) {
    absl::Status s = control_.AllReduceSum(&sq, 1);
    if (!s.ok()) return s;
  }
  const double norm = std::sqrt(sq);
  if (max_norm > 0 && norm > max_norm) {
    const double coef = max_norm / (norm + 1e-6);
    for (auto& up : units_) {
      if (up->trainable) (sharded ? up->grad_shard : up->flat_grad).mul_(coef);
    }
  }
  return norm;
}

absl::Status ShardedModel::Step(double lr) {
  torch::NoGradGuard no_grad;
  ++optimizer_step_;
  for (auto& up : units_) {
    for (Segment& s : up->segments) {
      AdamWUpdate(s.param, s.grad, s.exp_avg, s.exp_avg_sq, lr, optimizer_step_, options_.adam,
                  s.decay);
    }
  }
  if (options_.mode == ShardingMode::kZero1 || options_.mode == ShardingMode::kZero2) {
    for (auto& up : units_) {
      if (!up->trainable) continue;
      absl::StatusOr<std::unique_ptr<comm::Work>> w = AllGatherInPlace(group_, up->flat_param);
      if (!w.ok()) return w.status();
      absl::Status s = Finish(*w);
      if (!s.ok()) return s;
    }
  }
  if (fsdp_) {
    try {
      fsdp_->Release(*units_.back());
    } catch (const c10::Error& e) {
      return absl::InternalError(e.what_without_backtrace());
    }
  }
  return absl::OkStatus();
}

absl::Status ShardedModel::GatherForForward() {
  if (!fsdp_) return absl::OkStatus();
  try {
    fsdp_->Ensure(*units_.back());
  } catch (const c10::Error& e) {
    return absl::InternalError(e.what_without_backtrace());
  }
  return absl::OkStatus();
}

void ShardedModel::ReleaseForward() {
  if (fsdp_) fsdp_->Release(*units_.back());
}

ShardedModel::Footprint ShardedModel::Owned() const {
  Footprint f;
  auto bytes = [](const torch::Tensor& t) {
    return t.defined() ? t.numel() * int64_t(t.element_size()) : 0;
  };
  for (const auto& up : units_) {
    const Unit& u = *up;
    f.parameter_bytes += u.params_sharded ? bytes(u.param_shard) : bytes(u.flat_param);
    // Kept between steps: the gradient shard (zero2, fsdp) or the whole flat gradient.
    f.gradient_bytes += bytes(u.grad_shard.defined() ? u.grad_shard : u.flat_grad);
    f.optimizer_bytes += bytes(u.exp_avg) + bytes(u.exp_avg_sq);
  }
  return f;
}

double ShardedModel::CommWaitSeconds() {
  return double(sharding_internal::comm_wait_ns.load()) * 1e-9;
}

int64_t ShardedModel::parameter_count() const {
  int64_t n = 0;
  for (const auto& up : units_) n += up->numel;
  return n;
}

CheckpointShard ShardedModel::OwnedShard() const {
  CheckpointShard shard;
  for (const auto& up : units_) {
    const Unit& u = *up;
    const torch::Tensor& store = u.params_sharded ? u.param_shard : u.flat_param;
    const int64_t base = u.params_sharded ? u.begin : 0;
    for (const FlatParam& p : u.params) {
      const int64_t lo = std::max(p.offset, u.begin);
      const int64_t hi = std::min(p.offset + p.numel, u.begin + u.shard);
      if (lo >= hi) continue;
      auto slice = [&](const torch::Tensor& t, int64_t t_base) {
        return t.narrow(0, lo - t_base, hi - lo).to(torch::kCPU).clone();
      };
      shard.model.push_back({p.name, p.shape, lo - p.offset, slice(store, base)});
      if (u.trainable) {
        shard.optimizer.push_back(
            {p.name + ".exp_avg", p.shape, lo - p.offset, slice(u.exp_avg, u.opt_begin)});
        shard.optimizer.push_back(
            {p.name + ".exp_avg_sq", p.shape, lo - p.offset, slice(u.exp_avg_sq, u.opt_begin)});
      }
    }
  }
  return shard;
}

absl::Status ShardedModel::LoadFull(const TensorMap& model, const TensorMap* optimizer,
                                    int64_t step, const std::string& origin) {
  torch::NoGradGuard no_grad;
  auto find = [&](const TensorMap& m, const std::string& name,
                  const FlatParam& p) -> absl::StatusOr<torch::Tensor> {
    auto it = m.find(name);
    if (it == m.end())
      return absl::NotFoundError(absl::StrCat(origin, ": missing tensor '", name, "'"));
    if (!it->second.sizes().equals(p.shape)) {
      return absl::InvalidArgumentError(absl::StrCat(origin, ": tensor '", name, "' has shape ",
                                                     c10::str(it->second.sizes()),
                                                     ", the model expects ", c10::str(p.shape)));
    }
    return it->second.reshape({-1});
  };
  // Copies elements [lo, hi) (flat unit indices) of parameter p's full values into store.
  auto copy = [](const torch::Tensor& full, const FlatParam& p, torch::Tensor& store, int64_t base,
                 int64_t len) {
    const int64_t lo = std::max(p.offset, base), hi = std::min(p.offset + p.numel, base + len);
    if (lo >= hi) return;
    store.narrow(0, lo - base, hi - lo).copy_(full.narrow(0, lo - p.offset, hi - lo));
  };
  for (auto& up : units_) {
    Unit& u = *up;
    if (u.trainable && optimizer == nullptr) {  // fresh moments
      u.exp_avg.zero_();
      u.exp_avg_sq.zero_();
    }
    for (const FlatParam& p : u.params) {
      absl::StatusOr<torch::Tensor> full = find(model, p.name, p);
      if (!full.ok()) return full.status();
      if (u.params_sharded) {
        copy(*full, p, u.param_shard, u.begin, u.shard);
        if (u.flat_param.defined()) copy(*full, p, u.flat_param, 0, u.padded);
      } else {
        copy(*full, p, u.flat_param, 0, u.padded);
      }
      if (!u.trainable || optimizer == nullptr) continue;
      for (auto [suffix, store] : {std::pair<const char*, torch::Tensor*>{".exp_avg", &u.exp_avg},
                                   {".exp_avg_sq", &u.exp_avg_sq}}) {
        absl::StatusOr<torch::Tensor> m = find(*optimizer, p.name + suffix, p);
        if (!m.ok()) return m.status();
        copy(*m, p, *store, u.opt_begin, store->numel());
      }
    }
  }
  optimizer_step_ = optimizer == nullptr ? 0 : step;
  return absl::OkStatus();
}

}  // namespace qat::trainer
