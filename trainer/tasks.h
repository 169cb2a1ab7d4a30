// Zero-shot multiple-choice evaluation (`qat eval --tasks FILE.jsonl`), scored as EleutherAI's
// lm-evaluation-harness scores its multiple-choice tasks (HellaSwag, PIQA, ARC, ...).
//
// Task file: JSON Lines (UTF-8, one JSON object per line, "\n" or "\r\n" line ends; lines
// holding only spaces/tabs are skipped). Each object has exactly these members:
//   "context"  string, may be empty   the text the model reads first
//   "choices"  array of >= 2 strings, none empty   the candidate continuations
//   "gold"     integer in [0, number of choices)   index of the correct choice
//   "task"     string (optional)    groups examples: results are reported per task name
//                                   (examples without one belong to the task "default")
//   "id"       string or integer (optional)   a label kept with the example
// Any other member, a duplicate member or any other type is an error. Example line:
//   {"task": "proverbs", "context": "A rolling stone gathers no", "choices": [" moss.",
//    " wheels."], "gold": 0}
// As in the harness, a choice normally starts with the space that separates it from the context.
//
// Scoring of one choice (the harness's loglikelihood request):
//  - trailing whitespace of the context (spaces, tabs, newlines) moves to the front of the
//    continuation (harness _encode_pair); then whole = Encode(context + continuation), ctx =
//    Encode(context), and the continuation's tokens are whole[len(ctx):] (so a BPE merge across the
//    boundary is counted with the continuation, as in the harness);
//  - the sequence is prefix + ctx + continuation, where prefix is the tokenizer's BOS (qat's
//    shards start every document with it, data/prep.cc), else its EOS (as the harness's
//    end-of-text prefix), else nothing (an empty context then is an error);
//  - loglik = sum of log p(token | everything before it) over the continuation's tokens;
//  - a sequence longer than max_seq_len + 1 tokens loses tokens from the left (the prefix and the
//    start of the context), as the harness truncates; a continuation that alone exceeds
//    max_seq_len tokens is an error.
// Per example: pred = argmax_i loglik_i, pred_norm = argmax_i loglik_i / bytes(choice_i) (the
// harness divides by the choice's length in characters: the same for ASCII; we count UTF-8
// bytes); ties go to the lowest index. acc = mean(pred == gold), acc_norm = mean(pred_norm ==
// gold), each with the standard error of the mean sqrt(p (1 - p) / (n - 1)) (the harness's
// mean_stderr; NaN when n < 2). Results per task name, and over all examples (size-weighted).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "data/tokens.h"
#include "kernels/runtime.h"
#include "trainer/model.h"

namespace qat::trainer {

struct TaskExample {
  std::string task = "default";
  std::string id;  // "" when absent; integers as decimal text
  std::string context;
  std::vector<std::string> choices;
  int64_t gold = 0;
  int64_t line = 0;  // 1-based line in the file
};

// Parses task-file text; `origin` names it in errors ("FILE:LINE: what was expected").
absl::StatusOr<std::vector<TaskExample>> ParseTasks(std::string_view text,
                                                    const std::string& origin);
// Reads and parses a task file (at least one example).
absl::StatusOr<std::vector<TaskExample>> ReadTaskFile(const std::string& path);

// The model under evaluation: for a token sequence, log p(tokens[i] | tokens[0..i-1]) for every
// i in [first, tokens.size()) (1 <= first < tokens.size() <= max_seq_len + 1), in order.
using TokenLogProbs = std::function<absl::StatusOr<std::vector<double>>(
    const std::vector<int32_t>& tokens, int64_t first)>;
TokenLogProbs TorchLogProbs(CausalLM& model);                     // libtorch, no grad
TokenLogProbs PackedLogProbs(const kernels::PackedModel& model);  // qat's runtime

struct TaskAccuracy {
  std::string task;  // "overall" for the total
  int64_t n = 0;
  double acc = 0, acc_stderr = 0, acc_norm = 0, acc_norm_stderr = 0;
};
struct ExampleScore {
  std::vector<double> loglik;  // per choice
  int64_t pred = 0, pred_norm = 0;
};
struct TasksResult {
  std::vector<TaskAccuracy> tasks;  // in order of first appearance in the file
  TaskAccuracy overall;
  std::vector<ExampleScore> examples;  // parallel to the input
  int64_t truncated = 0;               // choices whose sequence lost tokens on the left
  double seconds = 0;
};

// Scores every choice of every example (see the top of this file). Errors name the example's
// line.
absl::StatusOr<TasksResult> ScoreTasks(const std::vector<TaskExample>& examples,
                                       const data::Tokenizer& tokenizer, int64_t max_seq_len,
                                       const TokenLogProbs& logprobs);

}  // namespace qat::trainer
