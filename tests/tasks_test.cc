// Zero-shot multiple-choice tasks (trainer/tasks.h): the task-file parser's errors, the scorer on
// a fake model whose log-probabilities the test controls, and checkpoint vs packed scoring.
#include "trainer/tasks.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <map>

#include "kernels/runtime.h"
#include "kernels/safetensors.h"
#include "test_dir.h"
#include "torch_test_util.h"
#include "trainer/export.h"
#include "trainer/train.h"

namespace qat::trainer {
namespace {

// Parses `text` as the task file "t.jsonl" and expects an error naming `line` and `what`.
void ExpectParseError(const std::string& text, int line, const std::string& what) {
  absl::StatusOr<std::vector<TaskExample>> r = ParseTasks(text, "t.jsonl");
  ASSERT_FALSE(r.ok()) << text;
  const std::string msg(r.status().message());
  EXPECT_NE(msg.find("t.jsonl:" + std::to_string(line) + ": "), std::string::npos) << msg;
  EXPECT_NE(msg.find(what), std::string::npos) << msg << "\n  lacks: " << what;
}

const char kGood[] = R"({"context": "a", "choices": [" b", " c"], "gold": 0})";

TEST(TaskFile, ParsesExamplesAndSkipsBlankLines) {
  const std::string text = std::string(kGood) + "\r\n\n   \n" +
                           R"({"task": "t2", "id": 7, "context": "", "choices": ["x", "y", "z"],)"
                           R"( "gold": 2})" +
                           "\n";
  std::vector<TaskExample> ex = ParseTasks(text, "t.jsonl").value();
  ASSERT_EQ(ex.size(), 2u);
  EXPECT_EQ(ex[0].task, "default");
  EXPECT_EQ(ex[0].context, "a");
  EXPECT_EQ(ex[0].choices, (std::vector<std::string>{" b", " c"}));
  EXPECT_EQ(ex[0].line, 1);
  EXPECT_EQ(ex[1].task, "t2");
  EXPECT_EQ(ex[1].id, "7");
  EXPECT_EQ(ex[1].gold, 2);
  EXPECT_EQ(ex[1].line, 4);
}

TEST(TaskFile, ErrorsNameFileLineAndWhatWasExpected) {
  const std::string ok = std::string(kGood) + "\n\n";  // the bad line is line 3
  ExpectParseError(ok + R"({"context": "a", "choices": [" b", " c"], "gold": 0)", 3,
                   "invalid JSON");
  ExpectParseError(ok + "[1, 2]", 3, "expected a JSON object");
  ExpectParseError(ok + R"({"choices": [" b", " c"], "gold": 0})", 3, "missing key \"context\"");
  ExpectParseError(ok + R"({"context": "a", "gold": 0})", 3, "missing key \"choices\"");
  ExpectParseError(ok + R"({"context": "a", "choices": [" b", " c"]})", 3, "missing key \"gold\"");
  ExpectParseError(ok + R"({"context": "a", "choices": [" b", " c"], "gold": 2})", 3,
                   "\"gold\": expected an index in [0, 2), got 2");
  ExpectParseError(ok + R"({"context": "a", "choices": [" b", " c"], "gold": -1})", 3,
                   "expected an index in [0, 2)");
  ExpectParseError(ok + R"({"context": "a", "choices": [" b", " c"], "gold": 1.0})", 3,
                   "\"gold\": expected an integer, got a number");
  ExpectParseError(ok + R"({"context": "a", "choices": [], "gold": 0})", 3,
                   "expected at least 2 choices, got 0");
  ExpectParseError(ok + R"({"context": "a", "choices": [" b"], "gold": 0})", 3,
                   "expected at least 2 choices, got 1");
  ExpectParseError(ok + R"({"context": "a", "choices": " b", "gold": 0})", 3,
                   "\"choices\": expected an array of strings, got a string");
  ExpectParseError(ok + R"({"context": "a", "choices": [" b", 3], "gold": 0})", 3,
                   "\"choices\"[1]: expected a string, got an integer");
  ExpectParseError(ok + R"({"context": "a", "choices": [" b", ""], "gold": 0})", 3,
                   "\"choices\"[1]: expected a non-empty string");
  ExpectParseError(ok + R"({"context": null, "choices": [" b", " c"], "gold": 0})", 3,
                   "\"context\": expected a string, got null");
  ExpectParseError(ok + R"({"context": "a", "choices": [" b", " c"], "gold": 0, "label": 1})", 3,
                   "unknown key \"label\"");
  ExpectParseError(ok + R"({"context": "a", "context": "b", "choices": [" b", " c"], "gold": 0})",
                   3, "invalid JSON");
  ExpectParseError(ok + R"({"context": "a", "choices": [" b", " c"], "gold": 0, "id": [1]})", 3,
                   "\"id\": expected a string or an integer");
  ExpectParseError(ok + R"({"context": "a", "choices": [" b", " c"], "gold": 0, "task": ""})", 3,
                   "\"task\": expected a non-empty string");
  ExpectParseError(ok + "{\"context\": \"\xff\", \"choices\": [\" b\", \" c\"], \"gold\": 0}", 3,
                   "invalid JSON");
  // A truncated last line (no newline at the end) is still named by its number.
  ExpectParseError(ok + kGood + "\n" + R"({"context": "a")", 4, "invalid JSON");
}

TEST(TaskFile, ReadTaskFileNamesTheFile) {
  testing_util::TestDir dir;
  const std::string empty = dir.dir() + "/empty.jsonl";
  ASSERT_TRUE(kernels::WriteFileAtomic(empty, "\n\n").ok());
  absl::StatusOr<std::vector<TaskExample>> r = ReadTaskFile(empty);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find(empty + ": no examples"), std::string::npos)
      << r.status().message();
  const std::string bad = dir.dir() + "/bad.jsonl";
  ASSERT_TRUE(kernels::WriteFileAtomic(bad, std::string(kGood) + "\n{\"context\": 1}\n").ok());
  r = ReadTaskFile(bad);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find(bad + ":2: \"context\": expected a string"),
            std::string::npos)
      << r.status().message();
  EXPECT_FALSE(ReadTaskFile(dir.dir() + "/absent.jsonl").ok());
}

TEST(TaskFile, ShippedSmokeSetParses) {
  std::vector<TaskExample> ex =
      ReadTaskFile(QAT_SOURCE_DIR "/recipes/tasks/fortunes-smoke.jsonl").value();
  EXPECT_GE(ex.size(), 8u);
}

// A fake model over the byte tokenizer: every token's log-probability is fixed by its byte,
// whatever came before. Records the requests it sees.
struct FakeModel {
  std::map<int32_t, double> logp;  // by token id; others: `other`
  double other = -2.0;
  std::vector<std::vector<int32_t>> seen;
  std::vector<int64_t> firsts;
  TokenLogProbs Fn() {
    return [this](const std::vector<int32_t>& tokens,
                  int64_t first) -> absl::StatusOr<std::vector<double>> {
      seen.push_back(tokens);
      firsts.push_back(first);
      std::vector<double> out;
      for (size_t i = size_t(first); i < tokens.size(); ++i) {
        auto it = logp.find(tokens[i]);
        out.push_back(it == logp.end() ? other : it->second);
      }
      return out;
    };
  }
};

TaskExample Example(std::string context, std::vector<std::string> choices, int64_t gold,
                    std::string task = "default") {
  TaskExample ex;
  ex.context = std::move(context);
  ex.choices = std::move(choices);
  ex.gold = gold;
  ex.task = std::move(task);
  return ex;
}

TEST(ScoreTasks, RequestsFollowTheHarness) {
  std::unique_ptr<data::Tokenizer> tok = data::MakeByteTokenizer();
  FakeModel fake;
  // The trailing space of the context moves to the continuation: " world" is scored (6 tokens).
  TasksResult r =
      ScoreTasks({Example("Hello ", {"world", "there"}, 0)}, *tok, 64, fake.Fn()).value();
  ASSERT_EQ(fake.seen.size(), 2u);
  std::vector<int32_t> want = {tok->bos_id()};
  for (char c : std::string("Hello world")) want.push_back(static_cast<unsigned char>(c));
  EXPECT_EQ(fake.seen[0], want);
  EXPECT_EQ(fake.firsts[0], 6);  // BOS + "Hello", then " world"
  EXPECT_NEAR(r.examples[0].loglik[0], 6 * fake.other, 1e-12);
  EXPECT_EQ(r.truncated, 0);

  // An empty context conditions on BOS alone.
  fake.seen.clear();
  fake.firsts.clear();
  ASSERT_TRUE(ScoreTasks({Example("", {"ab", "c"}, 0)}, *tok, 64, fake.Fn()).ok());
  EXPECT_EQ(fake.seen[0], (std::vector<int32_t>{tok->bos_id(), 'a', 'b'}));
  EXPECT_EQ(fake.firsts[0], 1);

  // A long context loses tokens on the left: max_seq_len + 1 tokens remain, the choice whole.
  fake.seen.clear();
  fake.firsts.clear();
  r = ScoreTasks({Example("0123456789abcdefghij", {" xyz", " q"}, 0)}, *tok, 8, fake.Fn()).value();
  EXPECT_EQ(r.truncated, 2);
  ASSERT_EQ(fake.seen.size(), 2u);
  EXPECT_EQ(fake.seen[0], (std::vector<int32_t>{'f', 'g', 'h', 'i', 'j', ' ', 'x', 'y', 'z'}));
  EXPECT_EQ(fake.firsts[0], 5);
  EXPECT_EQ(fake.seen[1], (std::vector<int32_t>{'d', 'e', 'f', 'g', 'h', 'i', 'j', ' ', 'q'}));
  EXPECT_EQ(fake.firsts[1], 7);

  // A choice longer than max_seq_len is an error naming the example's line.
  TaskExample longer = Example("a", {" 123456789", " b"}, 0);
  longer.line = 12;
  absl::StatusOr<TasksResult> bad = ScoreTasks({longer}, *tok, 8, fake.Fn());
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("line 12"), std::string::npos) << bad.status().message();
  EXPECT_NE(bad.status().message().find("max_seq_len 8"), std::string::npos)
      << bad.status().message();
}

// The fake model prefers the letter 'a': the choice made of 'a's wins wherever it is.
TEST(ScoreTasks, AccuracyIsKnownWhereTheModelIsKnown) {
  std::unique_ptr<data::Tokenizer> tok = data::MakeByteTokenizer();
  FakeModel fake;
  fake.logp = {{' ', -0.5}, {'a', -0.1}};
  std::vector<TaskExample> ex = {
      Example("Q1", {" aaa", " bbb", " ccc"}, 0, "first"),   // right
      Example("Q2", {" bbb", " aaa"}, 1, "first"),           // right
      Example("Q3", {" bbb", " aaa", " ccc"}, 2, "first"),   // wrong (model says 1)
      Example("Q4", {" ccc", " bbb", " aaa"}, 2, "second"),  // right
  };
  TasksResult r = ScoreTasks(ex, *tok, 64, fake.Fn()).value();
  EXPECT_EQ(r.examples[0].pred, 0);
  EXPECT_EQ(r.examples[1].pred, 1);
  EXPECT_EQ(r.examples[2].pred, 1);
  EXPECT_EQ(r.examples[3].pred, 2);
  EXPECT_NEAR(r.examples[0].loglik[0], -0.5 - 3 * 0.1, 1e-12);
  EXPECT_NEAR(r.examples[0].loglik[1], -0.5 - 3 * 2.0, 1e-12);
  ASSERT_EQ(r.tasks.size(), 2u);
  EXPECT_EQ(r.tasks[0].task, "first");
  EXPECT_EQ(r.tasks[0].n, 3);
  EXPECT_NEAR(r.tasks[0].acc, 2.0 / 3, 1e-12);
  EXPECT_NEAR(r.tasks[0].acc_stderr, std::sqrt(2.0 / 3 * (1.0 / 3) / 2), 1e-12);
  EXPECT_EQ(r.tasks[1].task, "second");
  EXPECT_EQ(r.tasks[1].n, 1);
  EXPECT_EQ(r.tasks[1].acc, 1.0);
  EXPECT_TRUE(std::isnan(r.tasks[1].acc_stderr));  // one example: no standard error
  EXPECT_EQ(r.overall.n, 4);
  EXPECT_NEAR(r.overall.acc, 0.75, 1e-12);
  EXPECT_NEAR(r.overall.acc_stderr, std::sqrt(0.75 * 0.25 / 3), 1e-12);  // harness mean_stderr
  // Equal lengths: length normalisation changes nothing here.
  EXPECT_NEAR(r.overall.acc_norm, 0.75, 1e-12);
}

// Length normalisation flips a choice: " a" has the higher total log-likelihood (-4 vs -5), but
// " bbbbbbbb" the higher log-likelihood per byte (-5/9 vs -4/2).
TEST(ScoreTasks, AccNormDividesByTheChoiceLengthInBytes) {
  std::unique_ptr<data::Tokenizer> tok = data::MakeByteTokenizer();
  FakeModel fake;
  fake.logp = {{' ', -1.0}, {'a', -3.0}, {'b', -0.5}};
  TasksResult r =
      ScoreTasks({Example("x", {" a", " bbbbbbbb"}, 1), Example("y", {" bbbbbbbb", " a"}, 0)}, *tok,
                 64, fake.Fn())
          .value();
  for (const ExampleScore& s : r.examples) {
    EXPECT_NE(s.pred, s.pred_norm);
  }
  EXPECT_EQ(r.examples[0].pred, 0);
  EXPECT_EQ(r.examples[0].pred_norm, 1);
  EXPECT_NEAR(r.examples[0].loglik[0], -4.0, 1e-12);
  EXPECT_NEAR(r.examples[0].loglik[1], -5.0, 1e-12);
  EXPECT_EQ(r.overall.acc, 0.0);
  EXPECT_EQ(r.overall.acc_norm, 1.0);
  EXPECT_EQ(r.overall.acc_stderr, 0.0);
}

// The same task file scored by a checkpoint in libtorch and by its packed export on qat's
// runtime: the log-likelihoods agree, and both agree with a plain libtorch forward.
TEST(ScoreTasks, CheckpointAndPackedExportAgree) {
  testing_util::TestDir dir;
  ModelConfig c = testing_util::TinyModel();  // byte vocabulary, max_seq_len 32
  QuantConfig q;
  q.method = "ternary";
  CausalLM model = BuildModel(c, q).value();
  InitWeights(model, 5, 0.1);
  const std::string ckpt = testing_util::SaveModel(model, dir.dir());
  const std::string packed_path = dir.dir() + "/model.qat.safetensors";
  ASSERT_TRUE(ExportPacked(ckpt, packed_path).ok());

  std::vector<TaskExample> ex = {
      Example("The cat sat on the", {" mat.", " log.", " moon."}, 0),
      Example("", {"abc", "xyz"}, 1),
      Example("A very long context that does not fit in thirty-two tokens at all:", {" yes", " no"},
              0),  // truncated on the left
  };
  std::unique_ptr<data::Tokenizer> tok = data::MakeByteTokenizer();
  LoadedModel loaded = LoadModelFromCheckpoint(ckpt).value();
  TasksResult a = ScoreTasks(ex, *tok, c.max_seq_len, TorchLogProbs(loaded.model)).value();
  auto packed = kernels::PackedModel::Load(packed_path, 2, kernels::BestIsa()).value();
  TasksResult b = ScoreTasks(ex, *tok, c.max_seq_len, PackedLogProbs(*packed)).value();
  EXPECT_EQ(a.truncated, 2);
  EXPECT_EQ(b.truncated, 2);
  for (size_t i = 0; i < ex.size(); ++i) {
    for (size_t k = 0; k < ex[i].choices.size(); ++k) {
      const double x = a.examples[i].loglik[k], y = b.examples[i].loglik[k];
      EXPECT_TRUE(std::isfinite(x) && x < 0) << x;
      EXPECT_NEAR(x, y, 1e-3 * std::max(1.0, std::abs(x))) << "example " << i << " choice " << k;
    }
    EXPECT_EQ(a.examples[i].pred, b.examples[i].pred);
  }
  // The first choice by hand: log_softmax of one forward over BOS + "The cat sat on the mat".
  torch::NoGradGuard ng;
  std::vector<int64_t> ids = {tok->bos_id()};
  for (char ch : std::string("The cat sat on the mat."))
    ids.push_back(static_cast<unsigned char>(ch));
  torch::Tensor in = torch::tensor(ids).unsqueeze(0);
  torch::Tensor logp = torch::log_softmax(model->forward(in)[0].to(torch::kFloat64), -1);
  double want = 0;
  const int64_t first = int64_t(ids.size()) - 5;  // " mat." is 5 bytes
  for (int64_t t = first; t < int64_t(ids.size()); ++t) {
    want += logp[t - 1][ids[size_t(t)]].item<double>();
  }
  EXPECT_NEAR(a.examples[0].loglik[0], want, 1e-6 * std::abs(want));
}

}  // namespace
}  // namespace qat::trainer
