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
  LmEval out;
  double total = 0.0;
  std::vector<int32_t> buf;
  Clock::time_point start = Clock::now();
  for (int64_t w = 0; w < n; w += batch_size) {
    const int64_t b = std::min(batch_size, n - w);
    buf.resize(static_cast<size_t>(b * (T + 1)));
    for (int64_t i = 0; i < b; ++i) val.FillEval(w + i, buf.data() + i * (T + 1));
    torch::Tensor batch = torch::from_blob(buf.data(), {b, T + 1}, torch::kInt32).to(torch::kInt64);
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

absl::StatusOr<Generation> GeneratePacked(const kernels::PackedModel& model,
                                          const std::string& prompt, const SamplingOptions& opt) {
  data::ByteTokenizer tok;
  std::vector<int32_t> ids = {data::ByteTokenizer::kBos};
  for (int32_t id : tok.Encode(prompt)) ids.push_back(id);
  const int64_t V = model.config().vocab_size;
  const int64_t budget = std::min<int64_t>(opt.max_new_tokens,
                                           model.config().max_seq_len - int64_t(ids.size()));
  kernels::Session session = model.NewSession();
  std::mt19937_64 rng(opt.seed);
  Generation g;
  Clock::time_point t0 = Clock::now();
  absl::StatusOr<std::vector<float>> logits = session.Forward(ids.data(), int64_t(ids.size()));
  if (!logits.ok()) return logits.status();
  g.prefill_tokens_per_s = double(ids.size()) / std::max(1e-9, Since(t0));
  std::vector<int32_t> generated;
  std::vector<float> last(logits->end() - V, logits->end());
  Clock::time_point t1 = Clock::now();
  for (int64_t i = 0; i < budget; ++i) {
    int32_t next = kernels::SampleToken(last.data(), V, float(opt.temperature), int(opt.top_k), rng);
    if (next == data::ByteTokenizer::kEos) break;
    generated.push_back(next);
    if (i + 1 == budget) break;
    logits = session.Forward(&next, 1);
    if (!logits.ok()) return logits.status();
    last = *logits;
  }
  const double decode_s = Since(t1);
  g.new_tokens = int64_t(generated.size());
  g.decode_tokens_per_s = decode_s > 0 ? double(generated.size()) / decode_s : 0.0;
  g.text = prompt + tok.Decode(generated);
  return g;
}

absl::StatusOr<Generation> GenerateTorch(CausalLM& model, const std::string& prompt,
                                         const SamplingOptions& opt) {
  torch::NoGradGuard no_grad;
  data::ByteTokenizer tok;
  std::vector<int32_t> ids = {data::ByteTokenizer::kBos};
  for (int32_t id : tok.Encode(prompt)) ids.push_back(id);
  const int64_t V = model->config().vocab_size;
  const int64_t budget = std::min<int64_t>(opt.max_new_tokens,
                                           model->config().max_seq_len - int64_t(ids.size()));
  std::mt19937_64 rng(opt.seed);
  Generation g;
  std::vector<int32_t> generated;
  Clock::time_point t0 = Clock::now();
  for (int64_t i = 0; i < budget; ++i) {
    torch::Tensor input =
        torch::from_blob(ids.data(), {1, int64_t(ids.size())}, torch::kInt32).to(torch::kInt64);
    torch::Tensor last = model->forward(input).select(1, int64_t(ids.size()) - 1).reshape({V});
    last = last.to(torch::kFloat32).contiguous();
    int32_t next = kernels::SampleToken(last.data_ptr<float>(), V, float(opt.temperature),
                                        int(opt.top_k), rng);
    if (next == data::ByteTokenizer::kEos) break;
    generated.push_back(next);
    ids.push_back(next);
  }
  const double secs = Since(t0);
  g.new_tokens = int64_t(generated.size());
  g.decode_tokens_per_s = secs > 0 ? double(generated.size()) / secs : 0.0;
  g.text = prompt + tok.Decode(generated);
  return g;
}

}  // namespace qat::trainer
