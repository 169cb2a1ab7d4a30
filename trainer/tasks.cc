#include "trainer/tasks.h"

#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <limits>
#include <map>
#include <memory>

#include "absl/strings/str_cat.h"
#include "kernels/json.h"
#include "kernels/safetensors.h"

namespace qat::trainer {
namespace {

namespace json = kernels::json;

const char* TypeName(const json::Value& v) {
  switch (v.type()) {
    case json::Type::kNull:
      return "null";
    case json::Type::kBool:
      return "a boolean";
    case json::Type::kInt:
      return "an integer";
    case json::Type::kDouble:
      return "a number";
    case json::Type::kString:
      return "a string";
    case json::Type::kArray:
      return "an array";
    case json::Type::kObject:
      return "an object";
  }
  return "?";
}

absl::StatusOr<TaskExample> ParseExample(std::string_view line, const std::string& where) {
  auto error = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": ", what));
  };
  absl::StatusOr<json::Value> root = json::Parse(line);
  if (!root.ok()) {
    return error(absl::StrCat("invalid JSON (", root.status().message(), " of the line)"));
  }
  if (!root->is_object()) {
    return error(
        absl::StrCat("expected a JSON object {\"context\": ..., \"choices\": [...], "
                     "\"gold\": N}, got ",
                     TypeName(*root)));
  }
  TaskExample ex;
  bool has_context = false, has_choices = false, has_gold = false;
  for (const json::Member& m : root->as_object()) {
    const std::string& key = m.first;
    const json::Value& v = m.second;
    if (key == "context") {
      if (!v.is_string())
        return error(absl::StrCat("\"context\": expected a string, got ", TypeName(v)));
      ex.context = v.as_string();
      has_context = true;
    } else if (key == "choices") {
      if (!v.is_array()) {
        return error(absl::StrCat("\"choices\": expected an array of strings, got ", TypeName(v)));
      }
      const json::Array& a = v.as_array();
      if (a.size() < 2) {
        return error(absl::StrCat("\"choices\": expected at least 2 choices, got ", a.size()));
      }
      for (size_t i = 0; i < a.size(); ++i) {
        if (!a[i].is_string()) {
          return error(
              absl::StrCat("\"choices\"[", i, "]: expected a string, got ", TypeName(a[i])));
        }
        if (a[i].as_string().empty()) {
          return error(absl::StrCat("\"choices\"[", i, "]: expected a non-empty string"));
        }
        ex.choices.push_back(a[i].as_string());
      }
      has_choices = true;
    } else if (key == "gold") {
      if (!v.is_int())
        return error(absl::StrCat("\"gold\": expected an integer, got ", TypeName(v)));
      ex.gold = v.as_int();
      has_gold = true;
    } else if (key == "task") {
      if (!v.is_string() || v.as_string().empty()) {
        return error(absl::StrCat("\"task\": expected a non-empty string, got ",
                                  v.is_string() ? "an empty string" : TypeName(v)));
      }
      ex.task = v.as_string();
    } else if (key == "id") {
      if (v.is_string()) {
        ex.id = v.as_string();
      } else if (v.is_int()) {
        ex.id = absl::StrCat(v.as_int());
      } else {
        return error(absl::StrCat("\"id\": expected a string or an integer, got ", TypeName(v)));
      }
    } else {
      return error(absl::StrCat("unknown key \"", key,
                                "\" (expected context, choices, gold and optionally task, id)"));
    }
  }
  if (!has_context) return error("missing key \"context\" (a string)");
  if (!has_choices) return error("missing key \"choices\" (an array of at least 2 strings)");
  if (!has_gold) return error("missing key \"gold\" (the index of the correct choice)");
  if (ex.gold < 0 || ex.gold >= int64_t(ex.choices.size())) {
    return error(
        absl::StrCat("\"gold\": expected an index in [0, ", ex.choices.size(), "), got ", ex.gold));
  }
  return ex;
}

bool IsBlank(std::string_view s) {
  for (char c : s) {
    if (c != ' ' && c != '\t') return false;
  }
  return true;
}

// Python's str.rstrip() for ASCII whitespace.
bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

// sqrt(p (1 - p) / (n - 1)) for a 0/1 sample of size n with mean p.
double MeanStderr(double p, int64_t n) {
  if (n < 2) return std::numeric_limits<double>::quiet_NaN();
  return std::sqrt(p * (1.0 - p) / double(n - 1));
}

struct Tally {
  int64_t n = 0, correct = 0, correct_norm = 0;
  TaskAccuracy Finish(const std::string& name) const {
    TaskAccuracy a;
    a.task = name;
    a.n = n;
    a.acc = n > 0 ? double(correct) / double(n) : 0.0;
    a.acc_norm = n > 0 ? double(correct_norm) / double(n) : 0.0;
    a.acc_stderr = MeanStderr(a.acc, n);
    a.acc_norm_stderr = MeanStderr(a.acc_norm, n);
    return a;
  }
};

// log-softmax of one row of logits, at `target`.
double LogProbAt(const float* row, int64_t vocab, int32_t target) {
  double mx = row[0];
  for (int64_t v = 1; v < vocab; ++v) mx = std::max(mx, double(row[v]));
  double sum = 0.0;
  for (int64_t v = 0; v < vocab; ++v) sum += std::exp(double(row[v]) - mx);
  return double(row[target]) - mx - std::log(sum);
}

absl::Status CheckRequest(const std::vector<int32_t>& tokens, int64_t first, int64_t vocab,
                          int64_t max_seq_len) {
  if (first < 1 || first >= int64_t(tokens.size())) {
    return absl::InvalidArgumentError(absl::StrCat("log-probabilities: first target ", first,
                                                   " outside [1, ", tokens.size(), ")"));
  }
  if (int64_t(tokens.size()) - 1 > max_seq_len) {
    return absl::InvalidArgumentError(absl::StrCat("log-probabilities: ", tokens.size() - 1,
                                                   " input tokens exceed max_seq_len ",
                                                   max_seq_len));
  }
  for (int32_t t : tokens) {
    if (t < 0 || t >= vocab) {
      return absl::InvalidArgumentError(absl::StrCat("token id ", t,
                                                     " is outside the model's vocabulary of ",
                                                     vocab, " (is the tokenizer the model's?)"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<TaskExample>> ParseTasks(std::string_view text,
                                                    const std::string& origin) {
  std::vector<TaskExample> out;
  if (text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);  // a UTF-8 byte-order mark
  int64_t line_no = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (IsBlank(line)) continue;
    absl::StatusOr<TaskExample> ex = ParseExample(line, absl::StrCat(origin, ":", line_no));
    if (!ex.ok()) return ex.status();
    ex->line = line_no;
    out.push_back(*std::move(ex));
  }
  return out;
}

absl::StatusOr<std::vector<TaskExample>> ReadTaskFile(const std::string& path) {
  absl::StatusOr<std::string> text = kernels::ReadFile(path);
  if (!text.ok()) return text.status();
  absl::StatusOr<std::vector<TaskExample>> examples = ParseTasks(*text, path);
  if (!examples.ok()) return examples.status();
  if (examples->empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path,
                     ": no examples (expected one JSON object per line: {\"context\": ..., "
                     "\"choices\": [...], \"gold\": N})"));
  }
  return examples;
}

TokenLogProbs TorchLogProbs(CausalLM& model) {
  return [model](const std::vector<int32_t>& tokens,
                 int64_t first) mutable -> absl::StatusOr<std::vector<double>> {
    const ModelConfig& c = model->config();
    absl::Status ok = CheckRequest(tokens, first, c.vocab_size, c.max_seq_len);
    if (!ok.ok()) return ok;
    try {
      torch::NoGradGuard no_grad;
      const int64_t T = int64_t(tokens.size());
      const torch::Device device = model->parameters().front().device();
      torch::Tensor ids =
          torch::tensor(std::vector<int64_t>(tokens.begin(), tokens.end()), torch::kInt64)
              .to(device);
      torch::Tensor logits = model->forward(ids.narrow(0, 0, T - 1).unsqueeze(0))[0];
      torch::Tensor logp =
          torch::log_softmax(logits.narrow(0, first - 1, T - first).to(torch::kFloat64), -1);
      torch::Tensor picked = logp.gather(1, ids.narrow(0, first, T - first).unsqueeze(1))
                                 .squeeze(1)
                                 .cpu()
                                 .contiguous();
      const double* p = picked.data_ptr<double>();
      return std::vector<double>(p, p + (T - first));
    } catch (const c10::Error& e) {
      return absl::InternalError(absl::StrCat("libtorch forward: ", e.what_without_backtrace()));
    }
  };
}

TokenLogProbs PackedLogProbs(const kernels::PackedModel& model) {
  // One KV cache, reset per request (the function is not meant for concurrent calls).
  auto session = std::make_shared<kernels::Session>(model.NewSession());
  return [&model, session](const std::vector<int32_t>& tokens,
                           int64_t first) -> absl::StatusOr<std::vector<double>> {
    const kernels::RuntimeConfig& c = model.config();
    absl::Status ok = CheckRequest(tokens, first, c.vocab_size, c.max_seq_len);
    if (!ok.ok()) return ok;
    const int64_t T = int64_t(tokens.size()), V = c.vocab_size;
    session->Reset();
    // Logits of the rows that predict the targets first..T-1 only: the context is cache.
    absl::StatusOr<std::vector<float>> logits = session->Forward(tokens.data(), T - 1, first - 1);
    if (!logits.ok()) return logits.status();
    std::vector<double> out;
    out.reserve(size_t(T - first));
    for (int64_t i = first; i < T; ++i) {
      out.push_back(LogProbAt(logits->data() + (i - first) * V, V, tokens[size_t(i)]));
    }
    return out;
  };
}

absl::StatusOr<TasksResult> ScoreTasks(const std::vector<TaskExample>& examples,
                                       const data::Tokenizer& tokenizer, int64_t max_seq_len,
                                       const TokenLogProbs& logprobs) {
  using Clock = std::chrono::steady_clock;
  const Clock::time_point start = Clock::now();
  if (max_seq_len < 1) return absl::InvalidArgumentError("tasks: max_seq_len must be positive");
  const int32_t prefix = tokenizer.bos_id() >= 0 ? tokenizer.bos_id() : tokenizer.eos_id();
  TasksResult result;
  std::vector<std::string> order;
  std::map<std::string, Tally> tallies;
  Tally total;
  for (const TaskExample& ex : examples) {
    auto error = [&](const std::string& what) {
      return absl::InvalidArgumentError(absl::StrCat("tasks: example on line ", ex.line,
                                                     ex.id.empty() ? "" : " (id " + ex.id + ")",
                                                     ": ", what));
    };
    if (ex.gold < 0 || ex.gold >= int64_t(ex.choices.size())) {
      return error("gold is not the index of a choice");
    }
    size_t keep = ex.context.size();
    while (keep > 0 && IsSpace(ex.context[keep - 1])) --keep;
    const std::string context = ex.context.substr(0, keep);
    const std::string moved = ex.context.substr(keep);
    absl::StatusOr<std::vector<int32_t>> ctx = tokenizer.Encode(context);
    if (!ctx.ok()) return error(absl::StrCat("context: ", ctx.status().message()));
    if (ctx->empty() && prefix < 0) {
      return error("empty context and the tokenizer has neither BOS nor EOS to condition on");
    }
    ExampleScore score;
    for (size_t i = 0; i < ex.choices.size(); ++i) {
      absl::StatusOr<std::vector<int32_t>> whole =
          tokenizer.Encode(context + moved + ex.choices[i]);
      if (!whole.ok()) return error(absl::StrCat("choice ", i, ": ", whole.status().message()));
      const int64_t n_cont = int64_t(whole->size()) - int64_t(ctx->size());
      if (n_cont <= 0) return error(absl::StrCat("choice ", i, " encodes to no tokens"));
      if (n_cont > max_seq_len) {
        return error(absl::StrCat("choice ", i, " is ", n_cont,
                                  " tokens long, more than the model's max_seq_len ", max_seq_len));
      }
      std::vector<int32_t> seq;
      seq.reserve(whole->size() + 1);
      if (prefix >= 0) seq.push_back(prefix);
      seq.insert(seq.end(), whole->begin(), whole->end());
      if (int64_t(seq.size()) > max_seq_len + 1) {
        seq.erase(seq.begin(), seq.end() - (max_seq_len + 1));
        ++result.truncated;
      }
      const int64_t first = int64_t(seq.size()) - n_cont;
      absl::StatusOr<std::vector<double>> lp = logprobs(seq, first);
      if (!lp.ok()) return error(absl::StrCat("choice ", i, ": ", lp.status().message()));
      if (int64_t(lp->size()) != n_cont) {
        return error(absl::StrCat("choice ", i, ": the model returned ", lp->size(),
                                  " log-probabilities for ", n_cont, " tokens"));
      }
      double sum = 0.0;
      for (double v : *lp) sum += v;
      score.loglik.push_back(sum);
    }
    for (size_t i = 1; i < ex.choices.size(); ++i) {
      if (score.loglik[i] > score.loglik[size_t(score.pred)]) score.pred = int64_t(i);
      const double ni = score.loglik[i] / double(ex.choices[i].size());
      const size_t b = size_t(score.pred_norm);
      if (ni > score.loglik[b] / double(ex.choices[b].size())) score.pred_norm = int64_t(i);
    }
    if (!tallies.count(ex.task)) order.push_back(ex.task);
    for (Tally* t : {&tallies[ex.task], &total}) {
      ++t->n;
      t->correct += score.pred == ex.gold;
      t->correct_norm += score.pred_norm == ex.gold;
    }
    result.examples.push_back(std::move(score));
  }
  for (const std::string& name : order) result.tasks.push_back(tallies[name].Finish(name));
  result.overall = total.Finish("overall");
  result.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  return result;
}

}  // namespace qat::trainer
