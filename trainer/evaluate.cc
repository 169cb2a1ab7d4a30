#include "trainer/evaluate.h"

#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <random>

#include "absl/strings/str_cat.h"

namespace qat::trainer {
namespace {
using Clock = std::chrono::steady_clock;
double Since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}
}  // namespace

absl::StatusOr<LmEval> EvaluateTorch(CausalLM& model, const data::WindowSampler& val,
                                     int64_t max_windows, int64_t batch_size) {
  torch::NoGradGuard no_grad;
  const int64_t T = val.seq_len();
  const int64_t n = std::min(max_windows, val.num_eval_windows());
  if (n <= 0) return absl::InvalidArgumentError("validation data holds no complete window");
  if (T > model->config().max_seq_len) {
    return absl::InvalidArgumentError(absl::StrCat("validation windows of ", T,
                                                   " tokens exceed the model's max_seq_len ",
                                                   model->config().max_seq_len));
  }
  const torch::Device device = model->parameters().front().device();
  LmEval out;
  double total = 0.0;
  std::vector<int32_t> buf;
  Clock::time_point start = Clock::now();
  for (int64_t w = 0; w < n; w += batch_size) {
    const int64_t b = std::min(batch_size, n - w);
    buf.resize(static_cast<size_t>(b * (T + 1)));
    for (int64_t i = 0; i < b; ++i) val.FillEval(w + i, buf.data() + i * (T + 1));
    torch::Tensor batch =
        torch::from_blob(buf.data(), {b, T + 1}, torch::kInt32).to(device, torch::kInt64);
    torch::Tensor logits = model->forward(batch.narrow(1, 0, T)).to(torch::kFloat64);
    torch::Tensor logp = torch::log_softmax(logits, -1);
    torch::Tensor picked = logp.gather(-1, batch.narrow(1, 1, T).unsqueeze(-1));
    total -= picked.sum().item<double>();
    out.tokens += b * T;
  }
  out.seconds = Since(start);
  out.nll = total / double(out.tokens);
  out.perplexity = std::exp(out.nll);
  return out;
}

DistributionSums CompareDistributions(const torch::Tensor& teacher_logits,
                                      const torch::Tensor& student_logits, double threshold) {
  torch::NoGradGuard no_grad;
  const int64_t V = teacher_logits.size(-1);
  torch::Tensor lp = torch::log_softmax(teacher_logits.reshape({-1, V}).to(torch::kFloat64), -1);
  torch::Tensor lq = torch::log_softmax(student_logits.reshape({-1, V}).to(torch::kFloat64), -1);
  torch::Tensor p = lp.exp(), q = lq.exp();
  DistributionSums s;
  s.ear = torch::minimum(p, q).sum(-1).sum().item<double>();
  s.top1 = (p.argmax(-1) == q.argmax(-1)).sum().item<double>();
  s.kl = (p * (lp - lq)).sum(-1).sum().item<double>();
  s.p_exp_entropy = (-(p * lp).sum(-1)).exp().sum().item<double>();
  s.q_exp_entropy = (-(q * lq).sum(-1)).exp().sum().item<double>();
  s.p_above = (p > threshold).sum().item<double>();
  s.q_above = (q > threshold).sum().item<double>();
  return s;
}

namespace {
// Sums over the batch's sequences of ||B * dCE/dh_l|| for the input h_l of every block l
// (h_0: the input embeddings), added into `sums` (one per block).
void AddSmoothnessSums(CausalLM& model, const torch::Tensor& inputs, const torch::Tensor& targets,
                       std::vector<double>* sums) {
  torch::AutoGradMode enable(true);
  torch::Tensor x = model->Embed(inputs).detach().requires_grad_(true);
  BlockTrace trace;
  torch::Tensor logits = model->ForwardFromEmbeddings(x, &trace);
  const int64_t V = logits.size(-1), B = inputs.size(0);
  torch::Tensor ce = torch::nn::functional::cross_entropy(logits.reshape({-1, V}), targets.reshape({-1}));
  std::vector<torch::Tensor> grads = torch::autograd::grad({ce}, trace.inputs);
  sums->resize(grads.size(), 0.0);
  for (size_t l = 0; l < grads.size(); ++l) {
    (*sums)[l] += (grads[l].reshape({B, -1}).norm(2, 1) * double(B)).sum().item<double>();
  }
}
}  // namespace

absl::StatusOr<TeacherComparison> CompareWithTeacher(CausalLM& student, CausalLM& teacher,
                                                     const data::WindowSampler& val,
                                                     int64_t max_windows, int64_t batch_size,
                                                     double threshold) {
  const int64_t T = val.seq_len();
  const int64_t n = std::min(max_windows, val.num_eval_windows());
  if (n <= 0) return absl::InvalidArgumentError("validation data holds no complete window");
  if (student->config().vocab_size != teacher->config().vocab_size) {
    return absl::InvalidArgumentError("student and teacher vocabularies differ");
  }
  TeacherComparison out;
  DistributionSums total;
  double s_nll = 0, t_nll = 0;
  std::vector<double> s_smooth, t_smooth;  // per block input
  std::vector<int32_t> buf;
  for (int64_t w = 0; w < n; w += batch_size) {
    const int64_t b = std::min(batch_size, n - w);
    buf.resize(static_cast<size_t>(b * (T + 1)));
    for (int64_t i = 0; i < b; ++i) val.FillEval(w + i, buf.data() + i * (T + 1));
    torch::Tensor batch = torch::from_blob(buf.data(), {b, T + 1}, torch::kInt32).to(torch::kInt64);
    torch::Tensor inputs = batch.narrow(1, 0, T), targets = batch.narrow(1, 1, T);
    torch::Tensor ls, lt;
    {
      torch::NoGradGuard no_grad;
      ls = student->forward(inputs);
      lt = teacher->forward(inputs);
    }
    DistributionSums d = CompareDistributions(lt, ls, threshold);
    total.ear += d.ear, total.top1 += d.top1, total.kl += d.kl;
    total.p_exp_entropy += d.p_exp_entropy, total.q_exp_entropy += d.q_exp_entropy;
    total.p_above += d.p_above, total.q_above += d.q_above;
    const int64_t V = ls.size(-1);
    auto nll = [&](const torch::Tensor& logits) {
      return -torch::log_softmax(logits.reshape({-1, V}).to(torch::kFloat64), -1)
                  .gather(1, targets.reshape({-1, 1}))
                  .sum()
                  .item<double>();
    };
    s_nll += nll(ls), t_nll += nll(lt);
    AddSmoothnessSums(student, inputs, targets, &s_smooth);
    AddSmoothnessSums(teacher, inputs, targets, &t_smooth);
    out.positions += b * T;
  }
  const double N = double(out.positions);
  out.ear = total.ear / N;
  out.top1_agreement = total.top1 / N;
  out.kl_teacher_student = total.kl / N;
  out.student_nll = s_nll / N, out.teacher_nll = t_nll / N;
  out.teacher_candidates_exp_entropy = total.p_exp_entropy / N;
  out.student_candidates_exp_entropy = total.q_exp_entropy / N;
  out.teacher_candidates_above = total.p_above / N;
  out.student_candidates_above = total.q_above / N;
  for (double& v : s_smooth) v /= double(n);
  for (double& v : t_smooth) v /= double(n);
  out.student_smoothness = s_smooth.at(0);
  out.teacher_smoothness = t_smooth.at(0);
  out.student_block_smoothness = s_smooth;
  out.teacher_block_smoothness = t_smooth;
  return out;
}

absl::StatusOr<LmEval> EvaluatePacked(const kernels::PackedModel& model,
                                      const data::WindowSampler& val, int64_t max_windows) {
  const int64_t T = val.seq_len();
  const int64_t V = model.config().vocab_size;
  const int64_t n = std::min(max_windows, val.num_eval_windows());
  if (n <= 0) return absl::InvalidArgumentError("validation data holds no complete window");
  LmEval out;
  double total = 0.0;
  std::vector<int32_t> buf(static_cast<size_t>(T + 1));
  kernels::Session session = model.NewSession();
  Clock::time_point start = Clock::now();
  for (int64_t w = 0; w < n; ++w) {
    val.FillEval(w, buf.data());
    session.Reset();
    absl::StatusOr<std::vector<float>> logits = session.Forward(buf.data(), T);
    if (!logits.ok()) return logits.status();
    for (int64_t t = 0; t < T; ++t) {
      const float* row = logits->data() + t * V;
      double mx = row[0];
      for (int64_t v = 1; v < V; ++v) mx = std::max(mx, double(row[v]));
      double sum = 0.0;
      for (int64_t v = 0; v < V; ++v) sum += std::exp(double(row[v]) - mx);
      total -= double(row[buf[t + 1]]) - mx - std::log(sum);
    }
    out.tokens += T;
  }
  out.seconds = Since(start);
  out.nll = total / double(out.tokens);
  out.perplexity = std::exp(out.nll);
  return out;
}

namespace {

const data::Tokenizer& ByteTokenizerInstance() {
  static const std::unique_ptr<data::Tokenizer> byte = data::MakeByteTokenizer();
  return *byte;
}

// BOS (when the tokenizer has one) + the prompt's tokens, all inside the model's vocabulary.
absl::StatusOr<std::vector<int32_t>> PromptIds(const data::Tokenizer& tok, const std::string& prompt,
                                               int64_t vocab) {
  if (tok.vocab_size() > vocab) {
    return absl::InvalidArgumentError(absl::StrCat(
        "generation: the ", tok.kind(), " tokenizer has ", tok.vocab_size(),
        " tokens, the model only ", vocab, " (is it the model's tokenizer?)"));
  }
  absl::StatusOr<std::vector<int32_t>> encoded = tok.Encode(prompt);
  if (!encoded.ok()) return encoded.status();
  std::vector<int32_t> ids;
  if (tok.bos_id() >= 0) ids.push_back(tok.bos_id());
  ids.insert(ids.end(), encoded->begin(), encoded->end());
  if (ids.empty()) return absl::InvalidArgumentError("generation: empty prompt and no BOS token");
  return ids;
}

}  // namespace

absl::StatusOr<Generation> GeneratePacked(const kernels::PackedModel& model,
                                          const std::string& prompt, const SamplingOptions& opt) {
  const data::Tokenizer& tok = opt.tokenizer ? *opt.tokenizer : ByteTokenizerInstance();
  absl::StatusOr<std::vector<int32_t>> prompt_ids = PromptIds(tok, prompt, model.config().vocab_size);
  if (!prompt_ids.ok()) return prompt_ids.status();
  std::vector<int32_t> ids = *std::move(prompt_ids);
  const int64_t V = model.config().vocab_size;
  const int64_t budget = std::min<int64_t>(opt.max_new_tokens,
                                           model.config().max_seq_len - int64_t(ids.size()));
  kernels::Session session = model.NewSession();
  std::mt19937_64 rng(opt.seed);
  Generation g;
  Clock::time_point t0 = Clock::now();
  // The prompt's last row is the only one sampled from.
  absl::StatusOr<std::vector<float>> logits =
      session.Forward(ids.data(), int64_t(ids.size()), int64_t(ids.size()) - 1);
  if (!logits.ok()) return logits.status();
  g.prefill_tokens_per_s = double(ids.size()) / std::max(1e-9, Since(t0));
  std::vector<int32_t> generated;
  std::vector<float> last(logits->end() - V, logits->end());
  Clock::time_point t1 = Clock::now();
  for (int64_t i = 0; i < budget; ++i) {
    int32_t next = kernels::SampleToken(last.data(), V, float(opt.temperature), int(opt.top_k), rng);
    if (next == tok.eos_id()) break;
    generated.push_back(next);
    if (i + 1 == budget) break;
    logits = session.Forward(&next, 1);
    if (!logits.ok()) return logits.status();
    last = *logits;
  }
  const double decode_s = Since(t1);
  g.new_tokens = int64_t(generated.size());
  g.decode_tokens_per_s = decode_s > 0 ? double(generated.size()) / decode_s : 0.0;
  absl::StatusOr<std::string> text = tok.Decode(generated);
  if (!text.ok()) return text.status();
  g.text = prompt + *text;
  return g;
}

absl::StatusOr<Generation> GenerateTorch(CausalLM& model, const std::string& prompt,
                                         const SamplingOptions& opt) {
  torch::NoGradGuard no_grad;
  const data::Tokenizer& tok = opt.tokenizer ? *opt.tokenizer : ByteTokenizerInstance();
  absl::StatusOr<std::vector<int32_t>> prompt_ids = PromptIds(tok, prompt, model->config().vocab_size);
  if (!prompt_ids.ok()) return prompt_ids.status();
  std::vector<int32_t> ids = *std::move(prompt_ids);
  const int64_t V = model->config().vocab_size;
  const int64_t budget = std::min<int64_t>(opt.max_new_tokens,
                                           model->config().max_seq_len - int64_t(ids.size()));
  std::mt19937_64 rng(opt.seed);
  Generation g;
  std::vector<int32_t> generated;
  Clock::time_point t0 = Clock::now();
  for (int64_t i = 0; i < budget; ++i) {
    torch::Tensor input = torch::from_blob(ids.data(), {1, int64_t(ids.size())}, torch::kInt32)
                              .to(model->parameters().front().device(), torch::kInt64);
    torch::Tensor last = model->forward(input).select(1, int64_t(ids.size()) - 1).reshape({V});
    last = last.to(torch::kCPU, torch::kFloat32).contiguous();
    int32_t next = kernels::SampleToken(last.data_ptr<float>(), V, float(opt.temperature),
                                        int(opt.top_k), rng);
    if (next == tok.eos_id()) break;
    generated.push_back(next);
    ids.push_back(next);
  }
  const double secs = Since(t0);
  g.new_tokens = int64_t(generated.size());
  g.decode_tokens_per_s = secs > 0 ? double(generated.size()) / secs : 0.0;
  absl::StatusOr<std::string> text = tok.Decode(generated);
  if (!text.ok()) return text.status();
  g.text = prompt + *text;
  return g;
}

}  // namespace qat::trainer
