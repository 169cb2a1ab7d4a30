#include "ptq/plan.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "kernels/lowbit.h"
#include "kernels/ternary.h"
#include "quant/quantizer.h"

namespace qat::ptq {
namespace {

using Clock = std::chrono::steady_clock;
double Since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

constexpr char kSpelling[] =
    "expected METHOD-GRANULARITY[-sym|-asym] with METHOD int2, int3, int4, int8, ternary or "
    "binary and GRANULARITY tensor, channel, g32, g64 or g128 (e.g. int4-g128-asym), or none";

// Per-tensor and per-channel int2/int4 scales are written once per this many columns
// (trainer/export.cc).
constexpr int64_t kReplicatedGroup = 128;

// One block linear of the model being planned.
struct Linear {
  std::string name;
  int64_t block = 0;
  trainer::QLinearImpl* module = nullptr;
  torch::Tensor original;  // the teacher's weight (the registered parameter itself)
};

// Puts every linear's own weight back when the search ends (or fails). The search swaps the
// tensor that QLinearImpl::forward multiplies (its `weight` member) for fake-quantized copies;
// the registered parameters themselves are never written.
class WeightRestorer {
 public:
  explicit WeightRestorer(std::vector<Linear>* linears) : linears_(linears) {}
  ~WeightRestorer() {
    for (Linear& l : *linears_) l.module->weight = l.original;
  }
  WeightRestorer(const WeightRestorer&) = delete;
  WeightRestorer& operator=(const WeightRestorer&) = delete;

 private:
  std::vector<Linear>* linears_;
};

struct Score {
  double ear = 0.0, kl = 0.0;
  double task = 0.0;  // --target-task: the metric's score on the file (0 otherwise)
};

// The calibration batches with the teacher's logits (computed once) and, during the
// sensitivity pass, the hidden states at the input of the current block.
class Evaluator {
 public:
  Evaluator(trainer::CausalLM& model, const torch::Tensor& windows, int64_t batch_size)
      : model_(model) {
    for (int64_t w = 0; w < windows.size(0); w += batch_size) {
      batches_.push_back(windows.narrow(0, w, std::min(batch_size, windows.size(0) - w)));
    }
    positions_ = windows.size(0) * windows.size(1);
  }

  // Caches the teacher's logits (float32, as computed) and the embeddings; returns their bytes.
  int64_t Prepare() {
    int64_t bytes = 0;
    for (const torch::Tensor& b : batches_) {
      torch::Tensor logits = model_->forward(b);
      teacher_logits_.push_back(logits.reshape({-1, logits.size(-1)}).to(torch::kFloat32));
      hidden_.push_back(model_->Embed(b));
      bytes += teacher_logits_.back().numel() * 4;
    }
    return bytes;
  }

  // The whole model, as it stands.
  Score Full() {
    Score s;
    for (size_t i = 0; i < batches_.size(); ++i) Accumulate(i, model_->forward(batches_[i]), &s);
    return Mean(s);
  }

  // The model from block `block` on, from the cached hidden states at its input (which must be
  // the current block: see Advance).
  Score Tail(int64_t block) {
    Score s;
    const int64_t layers = model_->config().num_layers;
    for (size_t i = 0; i < batches_.size(); ++i) {
      torch::Tensor h = hidden_[i];
      for (int64_t j = block; j < layers; ++j) h = model_->ForwardBlock(j, h);
      h = model_->model->norm(h);
      Accumulate(i, torch::matmul(h, model_->LmHeadWeight().t()), &s);
    }
    return Mean(s);
  }

  // The cached hidden states move past block `block` (with the weights it has now).
  void Advance(int64_t block) {
    for (torch::Tensor& h : hidden_) h = model_->ForwardBlock(block, h);
  }
  void DropHidden() { hidden_.clear(); }

 private:
  // As trainer::CompareDistributions: both log-softmaxes in float64.
  void Accumulate(size_t batch, const torch::Tensor& logits, Score* s) {
    const torch::Tensor& t = teacher_logits_[batch];
    torch::Tensor p_log = torch::log_softmax(t.to(torch::kFloat64), -1);
    torch::Tensor q_log =
        torch::log_softmax(logits.reshape({-1, t.size(-1)}).to(torch::kFloat64), -1);
    torch::Tensor p = p_log.exp();
    s->ear += torch::minimum(p, q_log.exp()).sum().item<double>();
    s->kl += (p * (p_log - q_log)).sum().item<double>();
  }
  Score Mean(Score s) const {
    s.ear /= double(positions_);
    s.kl /= double(positions_);
    return s;
  }

  trainer::CausalLM& model_;
  std::vector<torch::Tensor> batches_, teacher_logits_, hidden_;
  int64_t positions_ = 0;
};

// A change of one layer's format and what the predictions say of it.
struct Move {
  int layer = -1;
  int to = -1;
  double loss_change = 0.0;  // predicted change of the total loss (negative: better)
  int64_t bits_change = 0;
  // Predicted loss reduction per added bit; +inf for a change that saves loss and adds no bits.
  double Efficiency() const {
    if (bits_change <= 0) return std::numeric_limits<double>::infinity();
    return -loss_change / double(bits_change);
  }
};

std::string Fmt(double x, int digits = 5) { return absl::StrFormat("%.*f", digits, x); }

// The whole file scored with `model` as it stands (trainer::ScoreTasks, as qat eval --tasks);
// errors name --target-task and the file.
absl::StatusOr<trainer::TaskAccuracy> TaskScore(trainer::CausalLM& model, const PlanTaskTarget& t) {
  absl::StatusOr<trainer::TasksResult> r = trainer::ScoreTasks(
      t.examples, *t.tokenizer, model->config().max_seq_len, trainer::TorchLogProbs(model));
  if (!r.ok()) {
    return absl::Status(r.status().code(),
                        absl::StrCat("--target-task ", t.file, ": ", r.status().message()));
  }
  return r->overall;
}
double Metric(const trainer::TaskAccuracy& a, const std::string& metric) {
  return metric == "acc_norm" ? a.acc_norm : a.acc;
}
double MetricStderr(const trainer::TaskAccuracy& a, const std::string& metric) {
  return metric == "acc_norm" ? a.acc_norm_stderr : a.acc_stderr;
}

}  // namespace

absl::StatusOr<PlanFormat> ParsePlanFormat(const std::string& spelling) {
  auto bad = [&](const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat("--candidates: '", spelling, "': ", why));
  };
  PlanFormat f;
  if (spelling == "none") {
    f.spelling = "none";
    f.keep = true;
    f.quant.method = "none";
    return f;
  }
  std::vector<std::string> parts = absl::StrSplit(spelling, '-');
  if (parts.size() < 2 || parts.size() > 3) {
    return bad(absl::StrCat("unknown candidate (", kSpelling, ")"));
  }
  trainer::QuantConfig& q = f.quant;
  const std::string& m = parts[0];
  if (m == "ternary" || m == "binary") {
    q.method = m;
  } else if (m == "int2" || m == "int3" || m == "int4" || m == "int8") {
    q.method = "int";
    q.bits = m[3] - '0';
  } else {
    return bad(absl::StrCat("unknown method '", m, "' (", kSpelling, ")"));
  }
  const std::string& g = parts[1];
  if (g == "tensor") {
    q.granularity = "per_tensor";
  } else if (g == "channel") {
    q.granularity = "per_channel";
  } else if (g == "g32" || g == "g64" || g == "g128") {
    q.granularity = "per_group";
    q.group_size = std::stoi(g.substr(1));
  } else {
    return bad(absl::StrCat("unknown granularity '", g, "' (", kSpelling, ")"));
  }
  q.symmetric = true;
  if (parts.size() == 3) {
    if (parts[2] == "asym") {
      if (q.method != "int") {
        return bad(absl::StrCat("asym needs an int method (", m, " weights are symmetric)"));
      }
      q.symmetric = false;
    } else if (parts[2] != "sym") {
      return bad(absl::StrCat("unknown suffix '", parts[2], "' (", kSpelling, ")"));
    }
  }
  absl::StatusOr<quant::QuantSpec> spec = quant::MakeQuantSpec(trainer::ToQuantWords(q), "quant.");
  if (!spec.ok()) return bad(std::string(spec.status().message()));
  f.spelling = absl::StrCat(m, "-", g, q.method == "int" ? (q.symmetric ? "-sym" : "-asym") : "");
  return f;
}

absl::StatusOr<std::vector<PlanFormat>> ParsePlanCandidates(const std::string& list) {
  std::vector<PlanFormat> out;
  std::set<std::string> seen;
  for (absl::string_view item : absl::StrSplit(list, ',')) {
    const std::string word(absl::StripAsciiWhitespace(item));
    if (word.empty()) continue;
    absl::StatusOr<PlanFormat> f = ParsePlanFormat(word);
    if (!f.ok()) return f.status();
    if (!seen.insert(f->spelling).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("--candidates: '", word, "' is given twice (as ", f->spelling, ")"));
    }
    out.push_back(*std::move(f));
  }
  if (out.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--candidates: no candidate given (", kSpelling, "; separated by commas)"));
  }
  return out;
}

int64_t PlanStorageBits(const PlanFormat& f, int64_t rows, int64_t cols,
                        const std::string& ternary_format) {
  if (f.keep) return 32 * rows * cols;
  const trainer::QuantConfig& q = f.quant;
  const bool per_group = q.granularity == "per_group";
  if (per_group && cols % q.group_size != 0) return -1;
  // Mirrors AddQuantizedLinear in trainer/export.cc: the scale tensor is [R, C] with C the
  // number of groups of a row (1 unless per group).
  const int64_t scale_groups = per_group ? cols / q.group_size : 1;
  const int levels = q.method == "ternary" ? 3 : q.method == "binary" ? 2 : (1 << q.bits);
  if (levels <= 3 && scale_groups == 1) {  // ternary2 / ternary3 + fp32 scale [1] or [rows]
    const int64_t row_bytes = ternary_format == "ternary3" ? kernels::Ternary3RowBytes(cols)
                                                           : kernels::TernaryRowBytes(cols);
    const int64_t scales = q.granularity == "per_tensor" ? 1 : rows;
    return 8 * (rows * row_bytes + 4 * scales);
  }
  if (levels > 16) return 32 * rows * cols;  // int8: dense fp32 values
  const int bits = levels <= 4 ? 2 : 4;
  const int64_t group = scale_groups > 1 ? cols / scale_groups : kReplicatedGroup;
  const int64_t groups = kernels::IntKGroupsPerRow(group, cols);
  return 8 * (rows * kernels::IntKRowBytes(bits, cols) + 2 * 4 * rows * groups);
}

absl::StatusOr<torch::Tensor> CalibrationWindows(const data::WindowSampler& calib,
                                                 int64_t windows) {
  const int64_t T = calib.seq_len();
  const int64_t available = calib.num_eval_windows();
  if (windows < 1) return absl::InvalidArgumentError("--calib-windows must be at least 1");
  if (available < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("the calibration data holds no complete window of ", T + 1, " tokens (",
                     calib.total_tokens(), " tokens in all)"));
  }
  const int64_t n = std::min(windows, available);
  std::vector<int32_t> buf(static_cast<size_t>(n * (T + 1)));
  for (int64_t i = 0; i < n; ++i) calib.FillEval(i * available / n, buf.data() + i * (T + 1));
  return torch::from_blob(buf.data(), {n, T + 1}, torch::kInt32)
      .narrow(1, 0, T)
      .to(torch::kInt64)
      .contiguous();
}

absl::StatusOr<PlanResult> PlanBits(trainer::CausalLM& teacher, const torch::Tensor& windows,
                                    const PlanOptions& o) {
  const Clock::time_point start = Clock::now();
  auto say = [&](const std::string& line) {
    if (o.progress) o.progress(line);
  };
  const bool by_task = o.target_task.has_value();
  if (int(o.target_ear > 0) + int(o.avg_bits > 0) + int(by_task) != 1) {
    return absl::InvalidArgumentError(
        "give exactly one of --target-ear, --avg-bits and --target-task");
  }
  // A target to meet (EAR or task score), as opposed to a bit budget.
  const bool by_target = !(o.avg_bits > 0);
  if (o.target_ear > 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--target-ear ", o.target_ear, " is out of range (0, 1]"));
  }
  if (by_task) {
    const PlanTaskTarget& t = *o.target_task;
    if (t.examples.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("--target-task ", t.file, ": no examples"));
    }
    if (t.tokenizer == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("--target-task ", t.file, ": no tokenizer"));
    }
    if (t.metric != "acc" && t.metric != "acc_norm") {
      return absl::InvalidArgumentError(
          absl::StrCat("--task-metric: expected acc or acc_norm, got '", t.metric, "'"));
    }
    if (!(t.tolerance >= 0) || !std::isfinite(t.tolerance)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--task-tolerance ", t.tolerance, " must be a number >= 0"));
    }
  }
  if (o.candidates.empty()) return absl::InvalidArgumentError("--candidates: no candidate given");
  if (o.batch_size < 1) return absl::InvalidArgumentError("--batch-size must be at least 1");
  if (o.ternary_format != "ternary2" && o.ternary_format != "ternary3") {
    return absl::InvalidArgumentError(absl::StrCat(
        "--ternary-format: expected ternary2 or ternary3, got '", o.ternary_format, "'"));
  }
  if (!windows.defined() || windows.dim() != 2 || windows.size(0) < 1 || windows.size(1) < 1) {
    return absl::InvalidArgumentError("no calibration windows (--calib holds no complete window)");
  }
  const trainer::ModelConfig& c = teacher->config();
  if (windows.size(1) > c.max_seq_len) {
    return absl::InvalidArgumentError(absl::StrCat("calibration windows of ", windows.size(1),
                                                   " tokens exceed the teacher's max_seq_len ",
                                                   c.max_seq_len));
  }
  {
    const std::vector<trainer::QuantizedWeight> q = trainer::QuantizedWeights(teacher);
    if (!q.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("the teacher quantizes ", q.front().name, " (", q.front().quantizer->name(),
                       "): qat plan needs a full-precision teacher (quant.method none)"));
    }
  }
  if (by_task && o.target_task->tokenizer->vocab_size() > c.vocab_size) {
    const data::Tokenizer& tok = *o.target_task->tokenizer;
    return absl::InvalidArgumentError(absl::StrCat("--target-task ", o.target_task->file, ": the ",
                                                   tok.kind(), " tokenizer has ", tok.vocab_size(),
                                                   " tokens, the teacher only ", c.vocab_size,
                                                   " (is it the teacher's tokenizer?)"));
  }
  torch::NoGradGuard no_grad;
  teacher->eval();

  // The block linears, in model order.
  std::vector<Linear> linears;
  for (int64_t i = 0; i < c.num_layers; ++i) {
    for (const auto& [suffix, linear] : trainer::BlockLinears(teacher, i)) {
      linears.push_back({absl::StrCat("model.layers.", i, ".", suffix, ".weight"), i,
                         linear.ptr().get(), linear->weight});
    }
  }
  WeightRestorer restore(&linears);

  PlanResult r;
  r.candidates = o.candidates;
  r.windows = windows.size(0);
  r.seq_len = windows.size(1);
  r.target_ear = o.target_ear;
  r.avg_bits = o.avg_bits;
  // --target-task: the teacher's score, scored first (before any weight changes, and so that
  // the file's errors come before the sensitivity pass). The target check allows 1e-9 for
  // rounding: a score equal to the threshold up to the last bits meets it.
  double task_threshold = 0.0;
  if (by_task) {
    const PlanTaskTarget& t = *o.target_task;
    const Clock::time_point t0 = Clock::now();
    absl::StatusOr<trainer::TaskAccuracy> a = TaskScore(teacher, t);
    if (!a.ok()) return a.status();
    r.by_task = true;
    r.task_file = t.file;
    r.task_metric = t.metric;
    r.task_examples = int64_t(t.examples.size());
    r.task_tolerance = t.tolerance;
    r.teacher_task = Metric(*a, t.metric);
    r.teacher_task_stderr = MetricStderr(*a, t.metric);
    task_threshold = r.teacher_task - t.tolerance;
    say(absl::StrFormat(
        "plan: teacher on %s (%d examples): %s %.4f (standard error %.4f); target %s >= %.4f "
        "(--task-tolerance %g) (%.2f s)",
        t.file, r.task_examples, t.metric, r.teacher_task, r.teacher_task_stderr, t.metric,
        task_threshold, t.tolerance, Since(t0)));
  }
  const int K = static_cast<int>(o.candidates.size());
  std::vector<std::shared_ptr<quant::WeightQuantizer>> quantizers(K);
  for (int k = 0; k < K; ++k) {
    if (o.candidates[k].keep) continue;
    absl::StatusOr<quant::QuantSpec> spec =
        quant::MakeQuantSpec(trainer::ToQuantWords(o.candidates[k].quant), "quant.");
    if (!spec.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--candidates: ", o.candidates[k].spelling, ": ", spec.status().message()));
    }
    quantizers[k] = std::make_shared<quant::WeightQuantizer>(*spec);
  }
  for (const Linear& l : linears) {
    LayerPlan p;
    p.name = l.name;
    p.rows = l.original.size(0);
    p.cols = l.original.size(1);
    p.scores.resize(K);
    std::vector<std::string> skipped;
    for (int k = 0; k < K; ++k) {
      CandidateScore& s = p.scores[k];
      s.bits = PlanStorageBits(o.candidates[k], p.rows, p.cols, o.ternary_format);
      s.fits =
          s.bits >= 0 &&
          (!quantizers[k] || quantizers[k]->CheckShape(l.name, "group_size", p.rows, p.cols).ok());
      if (!s.fits) skipped.push_back(o.candidates[k].spelling);
    }
    if (skipped.size() == size_t(K)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--candidates: none fits ", l.name, " [", p.rows, ", ", p.cols,
                       "]: every group size must divide its input size ", p.cols,
                       " (add e.g. a per-channel one)"));
    }
    if (!skipped.empty()) {
      r.notes.push_back(absl::StrCat(l.name, " [", p.rows, ", ", p.cols, "]: skipped ",
                                     absl::StrJoin(skipped, ", "), " (group size does not divide ",
                                     p.cols, ")"));
    }
    r.total_weights += p.rows * p.cols;
    r.layers.push_back(std::move(p));
  }
  const int N = static_cast<int>(linears.size());
  auto quantized = [&](int layer, int k) -> torch::Tensor {
    return quantizers[k] ? quantizers[k]->FakeQuant(linears[layer].original)
                         : linears[layer].original;
  };
  auto set_format = [&](int layer, int k) { linears[layer].module->weight = quantized(layer, k); };

  // 1. Sensitivity of every layer to every candidate, alone.
  Evaluator ev(teacher, windows, o.batch_size);
  {
    const Clock::time_point t = Clock::now();
    const int64_t bytes = ev.Prepare();
    say(
        absl::StrFormat("plan: teacher logits of %d windows x %d tokens cached "
                        "(%.1f MB, %.1f s)",
                        r.windows, r.seq_len, bytes / 1e6, Since(t)));
  }
  for (int i = 0; i < N; ++i) {
    const Clock::time_point t = Clock::now();
    LayerPlan& p = r.layers[i];
    std::string line = absl::StrFormat("plan: sensitivity [%d/%d] %s [%d x %d]:", i + 1, N, p.name,
                                       p.rows, p.cols);
    for (int k = 0; k < K; ++k) {
      CandidateScore& s = p.scores[k];
      if (!s.fits) {
        absl::StrAppend(&line, " ", o.candidates[k].spelling, " skipped;");
        continue;
      }
      if (o.candidates[k].keep) {
        s.ear = 1.0, s.kl = 0.0;  // the teacher itself
      } else {
        set_format(i, k);
        const Score m = ev.Tail(linears[i].block);
        linears[i].module->weight = linears[i].original;
        s.ear = m.ear, s.kl = m.kl;
        ++r.evaluations;
      }
      absl::StrAppend(&line, " ", o.candidates[k].spelling, " EAR ", Fmt(s.ear), " KL ", Fmt(s.kl),
                      ";");
    }
    line.pop_back();
    say(absl::StrFormat("%s (%.2f s)", line, Since(t)));
    if (i + 1 == N || linears[i + 1].block != linears[i].block) ev.Advance(linears[i].block);
  }
  ev.DropHidden();

  // 2.-3. The allocation on the predictions.
  auto loss = [&](int layer, int k) { return std::max(0.0, 1.0 - r.layers[layer].scores[k].ear); };
  auto bits = [&](int layer, int k) { return r.layers[layer].scores[k].bits; };
  auto fits = [&](int layer, int k) { return r.layers[layer].scores[k].fits; };
  // Every layer at its cheapest candidate (the more accurate one on a tie).
  std::vector<int> cheapest(N, -1);
  for (int i = 0; i < N; ++i) {
    for (int k = 0; k < K; ++k) {
      if (!fits(i, k)) continue;
      const int a = cheapest[i];
      if (a < 0 || bits(i, k) < bits(i, a) ||
          (bits(i, k) == bits(i, a) && loss(i, k) < loss(i, a))) {
        cheapest[i] = k;
      }
    }
  }
  auto total_loss = [&](const std::vector<int>& a) {
    double d = 0;
    for (int i = 0; i < N; ++i) d += loss(i, a[i]);
    return d;
  };
  auto total_bits = [&](const std::vector<int>& a) {
    int64_t b = 0;
    for (int i = 0; i < N; ++i) b += bits(i, a[i]);
    return b;
  };
  // The upgrade of `layer` (a candidate with a smaller predicted loss) with the largest loss
  // reduction per added bit, adding at most max_bits (< 0: no limit).
  auto best_upgrade = [&](const std::vector<int>& a, int layer, int64_t max_bits) {
    Move best;
    for (int k = 0; k < K; ++k) {
      if (!fits(layer, k) || loss(layer, k) >= loss(layer, a[layer])) continue;
      Move m{layer, k, loss(layer, k) - loss(layer, a[layer]),
             bits(layer, k) - bits(layer, a[layer])};
      if (max_bits >= 0 && m.bits_change > max_bits) continue;
      if (best.layer < 0 || m.Efficiency() > best.Efficiency() ||
          (m.Efficiency() == best.Efficiency() && m.loss_change < best.loss_change)) {
        best = m;
      }
    }
    return best;
  };
  // Every layer's best upgrade, most efficient first.
  auto upgrades = [&](const std::vector<int>& a, int64_t max_bits) {
    std::vector<Move> moves;
    for (int i = 0; i < N; ++i) {
      Move m = best_upgrade(a, i, max_bits);
      if (m.layer >= 0) moves.push_back(m);
    }
    std::stable_sort(moves.begin(), moves.end(),
                     [](const Move& x, const Move& y) { return x.Efficiency() > y.Efficiency(); });
    return moves;
  };
  // The greedy allocation for a predicted total loss of at most `budget`: upgrades by predicted
  // efficiency from the cheapest allocation until the budget is met, then the downgrades that
  // keep it, most bits saved first.
  auto allocate_for_loss = [&](double budget) {
    std::vector<int> a = cheapest;
    while (total_loss(a) > budget) {
      std::vector<Move> m = upgrades(a, -1);
      if (m.empty()) break;
      a[m.front().layer] = m.front().to;
    }
    for (;;) {
      Move best;
      const double d = total_loss(a);
      for (int i = 0; i < N; ++i) {
        for (int k = 0; k < K; ++k) {
          if (!fits(i, k) || bits(i, k) >= bits(i, a[i])) continue;
          Move m{i, k, loss(i, k) - loss(i, a[i]), bits(i, k) - bits(i, a[i])};
          if (d + m.loss_change > budget) continue;
          if (best.layer < 0 || m.bits_change < best.bits_change ||
              (m.bits_change == best.bits_change && m.loss_change < best.loss_change)) {
            best = m;
          }
        }
      }
      if (best.layer < 0) break;
      a[best.layer] = best.to;
    }
    return a;
  };
  auto bpw = [&](const std::vector<int>& a) {
    return double(total_bits(a)) / double(r.total_weights);
  };
  auto apply = [&](const std::vector<int>& a) {
    for (int i = 0; i < N; ++i) set_format(i, a[i]);
  };
  // Measures the allocation the linears hold now: EAR and KL on the calibration windows and,
  // with --target-task, the score on the task file.
  auto measure = [&]() -> absl::StatusOr<Score> {
    ++r.evaluations;
    Score s = ev.Full();
    if (by_task) {
      absl::StatusOr<trainer::TaskAccuracy> a = TaskScore(teacher, *o.target_task);
      if (!a.ok()) return a.status();
      s.task = Metric(*a, o.target_task->metric);
    }
    return s;
  };
  // The target check of a measured allocation (steps 4 and 5): the measured EAR, or with
  // --target-task the measured task score (the EAR is then only reported).
  auto meets = [&](const Score& s) {
    return by_task ? s.task >= task_threshold - 1e-9 : s.ear >= o.target_ear;
  };
  // Whether `a` is closer to the target than `b`: the larger task score (a tie, common on a
  // small file, goes to the larger EAR) or the larger EAR.
  auto closer = [&](const Score& a, const Score& b) {
    if (by_task && a.task != b.task) return a.task > b.task;
    return a.ear > b.ear;
  };
  auto describe = [&](const Score& s) {
    return by_task ? absl::StrFormat("%s %.4f (EAR %.5f)", o.target_task->metric, s.task, s.ear)
                   : absl::StrFormat("EAR %.5f", s.ear);
  };
  const std::string target_text =
      by_task ? absl::StrFormat("%s >= %.4f", o.target_task->metric, task_threshold)
              : absl::StrFormat("EAR >= %g", o.target_ear);

  std::vector<int> alloc;
  Score measured;
  if (!by_target) {
    const int64_t budget = static_cast<int64_t>(std::floor(o.avg_bits * double(r.total_weights)));
    if (total_bits(cheapest) > budget) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "--avg-bits %g is below the cheapest allocation of these candidates: %.4f bits per "
          "weight of the block linears (as qat export stores them)",
          o.avg_bits, bpw(cheapest)));
    }
    alloc = cheapest;
    for (;;) {
      std::vector<Move> m = upgrades(alloc, budget - total_bits(alloc));
      if (m.empty()) break;
      alloc[m.front().layer] = m.front().to;
    }
    apply(alloc);
    absl::StatusOr<Score> s = measure();
    if (!s.ok()) return s.status();
    measured = *s;
    say(absl::StrFormat("plan: allocation %.4f bits/weight: predicted EAR %.5f, measured %.5f",
                        bpw(alloc), 1.0 - total_loss(alloc), measured.ear));
  } else {
    // 4. The best reachable: every layer at its most accurate candidate.
    std::vector<int> best(N, -1);
    for (int i = 0; i < N; ++i) {
      for (int k = 0; k < K; ++k) {
        if (!fits(i, k)) continue;
        const int b = best[i];
        if (b < 0 || loss(i, k) < loss(i, b) ||
            (loss(i, k) == loss(i, b) && bits(i, k) < bits(i, b))) {
          best[i] = k;
        }
      }
    }
    {
      const Clock::time_point t = Clock::now();
      apply(best);
      absl::StatusOr<Score> s = measure();
      if (!s.ok()) return s.status();
      r.best_ear = s->ear;
      r.best_task = s->task;
      say(absl::StrFormat(
          "plan: best reachable (every layer at its most accurate candidate): %s at %.4f "
          "bits/weight (%.2f s)",
          describe(*s), bpw(best), Since(t)));
      if (by_task && !meets(*s)) {
        const PlanTaskTarget& t = *o.target_task;
        return absl::InvalidArgumentError(absl::StrFormat(
            "--target-task %s is out of reach with these candidates: the best %s reachable "
            "(every layer at its most accurate candidate) is %.4f (EAR %.5f), the teacher's "
            "%.4f (standard error %.4f) on the %d examples, so the target %s >= %.4f (the "
            "teacher's - --task-tolerance %g) is missed; raise --task-tolerance or add more "
            "accurate candidates (e.g. int8-channel or none)",
            t.file, t.metric, r.best_task, r.best_ear, r.teacher_task, r.teacher_task_stderr,
            r.task_examples, t.metric, task_threshold, t.tolerance));
      }
    }
    if (!by_task && r.best_ear < o.target_ear) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "--target-ear %g is out of reach with these candidates: the best EAR reachable (every "
          "layer at its most accurate candidate) is %.5f on the %d calibration windows; lower "
          "the target or add more accurate candidates (e.g. int8-channel or none)",
          o.target_ear, r.best_ear, r.windows));
    }
    // Calibration rounds: greedy allocations for a predicted loss budget, measured, to find the
    // budget whose allocation meets the target at the fewest bits. --target-ear: the measured
    // loss of an allocation over its predicted (additive) loss rescales the budget of the next
    // one (the layers' losses do not add up: large ones overlap, small ones may compound).
    // --target-task: the target sets no loss budget, so the budget is bisected geometrically
    // between the predicted losses of the most accurate allocation (which meets it) and the
    // cheapest one; an allocation that meets the target raises the lower end, one that misses
    // lowers the upper end (losses span orders of magnitude: the lower end starts no lower
    // than 1e-4 of the upper). The cheapest allocation that meets the target is kept, else the
    // one closest to it.
    const double loss_budget = 1.0 - o.target_ear;
    double ratio = 1.0;
    const double hi_loss = total_loss(cheapest);
    double lo = std::max(total_loss(best), 1e-4 * hi_loss), hi = hi_loss;
    std::map<std::vector<int>, Score> tried;
    std::vector<int> closest;
    Score closest_score;
    std::vector<int> feasible;
    Score feasible_score;
    for (int64_t round = 0; round < o.calibration_rounds; ++round) {
      const double budget = by_task ? std::sqrt(lo * hi) : loss_budget / ratio;
      std::vector<int> a = allocate_for_loss(budget);
      const auto seen = tried.find(a);
      const bool repeat = seen != tried.end();
      // --target-ear: a repeat ends the rounds (the next budget would be the same). A bisection
      // step moves on from the repeat's known measurement.
      if (repeat && !by_task) break;
      const Clock::time_point t = Clock::now();
      Score s;
      if (repeat) {
        s = seen->second;
      } else {
        apply(a);
        absl::StatusOr<Score> m = measure();
        if (!m.ok()) return m.status();
        s = *m;
        tried[a] = s;
      }
      const double predicted = total_loss(a);
      say(
          absl::StrFormat("plan: allocation round %d: %.4f bits/weight, predicted EAR %.5f "
                          "(loss budget %.5f), measured %s%s (%.2f s)",
                          round + 1, bpw(a), 1.0 - predicted, budget, describe(s),
                          repeat ? " (measured before)" : "", Since(t)));
      if (meets(s) && (feasible.empty() || total_bits(a) < total_bits(feasible))) {
        feasible = a, feasible_score = s;
      }
      if (closest.empty() || closer(s, closest_score)) closest = a, closest_score = s;
      if (by_task) {
        (meets(s) ? lo : hi) = budget;
        if (hi <= lo * 1.01) break;  // the budgets left allocate (nearly) the same
      } else {
        if (predicted <= 0 || 1.0 - s.ear <= 0) break;
        ratio = (1.0 - s.ear) / predicted;
      }
    }
    if (closest.empty()) {  // no calibration round: the measured greedy from the cheapest
      alloc = cheapest;
      apply(alloc);
      absl::StatusOr<Score> s = measure();
      if (!s.ok()) return s.status();
      measured = *s;
      say(absl::StrFormat("plan: cheapest allocation %.4f bits/weight: measured %s", bpw(alloc),
                          describe(measured)));
    } else {
      alloc = feasible.empty() ? closest : feasible;
      measured = feasible.empty() ? closest_score : feasible_score;
      apply(alloc);
    }

    // 5. Measured upgrades while the target is missed, then measured downgrades.
    std::set<int> upgraded;
    while (!meets(measured)) {
      const Clock::time_point t = Clock::now();
      std::vector<Move> moves = upgrades(alloc, -1);
      if (moves.empty()) break;
      if (o.refine_tries > 0 && int64_t(moves.size()) > o.refine_tries) {
        moves.resize(o.refine_tries);
      }
      int chosen = -1;
      double chosen_rate = 0, chosen_task_rate = 0;
      Score chosen_score;
      for (size_t j = 0; j < moves.size(); ++j) {
        const Move& m = moves[j];
        set_format(m.layer, m.to);
        const absl::StatusOr<Score> s = measure();
        set_format(m.layer, alloc[m.layer]);
        if (!s.ok()) return s.status();
        // Measured gain per added bit; a change that adds no bits ranks by its gain above every
        // other. --target-task ranks by the task gain first, the EAR gain breaking ties.
        auto per_bit = [&](double gain) {
          return m.bits_change > 0 ? gain / double(m.bits_change) : 1e300 * gain;
        };
        const double rate = per_bit(s->ear - measured.ear);
        const double task_rate = by_task ? per_bit(s->task - measured.task) : 0.0;
        if (chosen < 0 || task_rate > chosen_task_rate ||
            (task_rate == chosen_task_rate && rate > chosen_rate)) {
          chosen = int(j), chosen_rate = rate, chosen_task_rate = task_rate, chosen_score = *s;
        }
      }
      const Move& m = moves[chosen];
      say(
          absl::StrFormat("plan: refine: %s misses %s: %s %s -> %s (%+d bits): %s "
                          "(best of %d measured upgrades, %.2f s)",
                          describe(measured), target_text, r.layers[m.layer].name,
                          o.candidates[alloc[m.layer]].spelling, o.candidates[m.to].spelling,
                          m.bits_change, describe(chosen_score), moves.size(), Since(t)));
      alloc[m.layer] = m.to;
      set_format(m.layer, m.to);
      measured = chosen_score;
      upgraded.insert(m.layer);
      ++r.upgrades;
    }
    if (!meets(measured)) {
      // Not expected: the upgrades end at the most accurate allocation, measured above.
      return absl::InternalError(absl::StrFormat("%s: the refinement ended at %s",
                                                 by_task ? "--target-task" : "--target-ear",
                                                 describe(measured)));
    }
    if (o.downgrade) {
      // One pass over the cheapest predicted downgrades (loss per saved bit), each kept when the
      // measured allocation still meets the target. Layers upgraded above are left alone.
      std::vector<Move> moves;
      auto cost = [](const Move& m) { return m.loss_change / double(-m.bits_change); };
      for (int i = 0; i < N; ++i) {
        if (upgraded.count(i)) continue;
        Move best_move;
        for (int k = 0; k < K; ++k) {
          if (!fits(i, k) || bits(i, k) >= bits(i, alloc[i])) continue;
          Move m{i, k, loss(i, k) - loss(i, alloc[i]), bits(i, k) - bits(i, alloc[i])};
          if (best_move.layer < 0 || cost(m) < cost(best_move)) best_move = m;
        }
        if (best_move.layer >= 0) moves.push_back(best_move);
      }
      std::stable_sort(moves.begin(), moves.end(),
                       [&](const Move& x, const Move& y) { return cost(x) < cost(y); });
      if (o.refine_tries > 0 && int64_t(moves.size()) > o.refine_tries) {
        moves.resize(o.refine_tries);
      }
      for (const Move& m : moves) {
        set_format(m.layer, m.to);
        const absl::StatusOr<Score> s = measure();
        if (!s.ok()) return s.status();
        const bool keep = meets(*s);
        say(absl::StrFormat("plan: refine: try %s %s -> %s (%d bits): %s, %s",
                            r.layers[m.layer].name, o.candidates[alloc[m.layer]].spelling,
                            o.candidates[m.to].spelling, m.bits_change, describe(*s),
                            keep ? "kept" : "undone"));
        if (keep) {
          alloc[m.layer] = m.to;
          measured = *s;
          ++r.downgrades;
        } else {
          set_format(m.layer, alloc[m.layer]);
        }
      }
    }
  }

  for (int i = 0; i < N; ++i) r.layers[i].chosen = alloc[i];
  r.predicted_ear = 1.0 - total_loss(alloc);
  r.measured_ear = measured.ear;
  r.measured_kl = measured.kl;
  r.measured_task = measured.task;
  r.total_bits = total_bits(alloc);
  r.seconds = Since(start);
  return r;
}

std::string PlanToYaml(const PlanResult& plan, const std::vector<std::string>& header) {
  std::string out;
  for (const std::string& h : header) absl::StrAppend(&out, "# ", h, "\n");
  absl::StrAppend(&out,
                  "quant:\n"
                  "  method: none\n"
                  "  scale: none\n"
                  "  activations: none\n"
                  "  overrides:\n");
  for (const LayerPlan& l : plan.layers) {
    const PlanFormat& f = plan.candidates[l.chosen];
    const CandidateScore& s = l.scores[l.chosen];
    absl::StrAppendFormat(&out, "    - pattern: %s  # %s, %.4f bits/weight, EAR alone %.5f\n",
                          l.name, f.spelling, double(s.bits) / double(l.rows * l.cols), s.ear);
    if (f.keep) {
      absl::StrAppend(&out, "      method: none\n");
      continue;
    }
    const trainer::QuantConfig& q = f.quant;
    absl::StrAppend(&out, "      method: ", q.method, "\n");
    if (q.method == "int") absl::StrAppend(&out, "      bits: ", q.bits, "\n");
    absl::StrAppend(&out, "      symmetric: ", q.symmetric ? "true" : "false", "\n");
    absl::StrAppend(&out, "      granularity: ", q.granularity, "\n");
    if (q.granularity == "per_group")
      absl::StrAppend(&out, "      group_size: ", q.group_size, "\n");
  }
  return out;
}

std::string PlanTable(const PlanResult& plan) {
  size_t width = 5;
  for (const LayerPlan& l : plan.layers) width = std::max(width, l.name.size());
  std::string out = absl::StrFormat("%-*s  %-16s %8s %9s %9s\n", int(width), "layer", "format",
                                    "bits/w", "EAR alone", "KL alone");
  std::map<std::string, int> by_format;
  for (const LayerPlan& l : plan.layers) {
    const CandidateScore& s = l.scores[l.chosen];
    const std::string& f = plan.candidates[l.chosen].spelling;
    ++by_format[f];
    absl::StrAppendFormat(&out, "%-*s  %-16s %8.4f %9.5f %9.5f\n", int(width), l.name, f,
                          double(s.bits) / double(l.rows * l.cols), s.ear, s.kl);
  }
  std::string formats;
  for (const auto& [f, n] : by_format) {
    absl::StrAppend(&formats, formats.empty() ? "" : ", ", n, " ", f);
  }
  absl::StrAppendFormat(&out,
                        "block linears: %d (%s), %d weights, %d bits = %.4f bits/weight (as qat "
                        "export stores them)%s\n",
                        plan.layers.size(), formats, plan.total_weights, plan.total_bits,
                        plan.BitsPerWeight(),
                        plan.avg_bits > 0 ? absl::StrFormat("; budget %g", plan.avg_bits) : "");
  std::string ear_note;
  if (plan.target_ear > 0) {
    ear_note = absl::StrFormat(" (target %g, best reachable %.5f)", plan.target_ear, plan.best_ear);
  } else if (plan.by_task) {
    ear_note = absl::StrFormat(" (best reachable %.5f)", plan.best_ear);
  }
  absl::StrAppendFormat(&out,
                        "EAR on %d windows x %d tokens: predicted %.5f, measured %.5f%s; KL %.5f\n",
                        plan.windows, plan.seq_len, plan.predicted_ear, plan.measured_ear, ear_note,
                        plan.measured_kl);
  if (plan.by_task) {
    absl::StrAppendFormat(&out,
                          "task %s on %s (%d examples): measured %.4f, teacher %.4f (standard "
                          "error %.4f), target >= %.4f (--task-tolerance %g), best reachable "
                          "%.4f\n",
                          plan.task_metric, plan.task_file, plan.task_examples, plan.measured_task,
                          plan.teacher_task, plan.teacher_task_stderr,
                          plan.teacher_task - plan.task_tolerance, plan.task_tolerance,
                          plan.best_task);
  }
  absl::StrAppendFormat(&out,
                        "refinement: %d upgrades and %d downgrades kept; %d measured "
                        "configurations; %.1f s\n",
                        plan.upgrades, plan.downgrades, plan.evaluations, plan.seconds);
  for (const std::string& n : plan.notes) absl::StrAppend(&out, "note: ", n, "\n");
  return out;
}

}  // namespace qat::ptq
