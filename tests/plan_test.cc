// qat plan (ptq/plan.h): candidate spellings and storage bits, the allocation on a tiny model
// with one deliberately fragile layer, its agreement with qat export and with qat eval's EAR,
// the recipe fragment as a base, the task-score target (--target-task), and the errors.
#include "ptq/plan.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <fstream>

#include "kernels/lowbit.h"
#include "kernels/ternary.h"
#include "test_dir.h"
#include "torch_test_util.h"
#include "trainer/checkpoint.h"
#include "trainer/evaluate.h"
#include "trainer/export.h"
#include "trainer/model.h"
#include "trainer/recipe.h"
#include "trainer/tasks.h"

namespace qat::ptq {
namespace {

using trainer::CausalLM;
using trainer::ModelConfig;
using trainer::QuantConfig;

constexpr char kFragile[] = "model.layers.1.self_attn.v_proj.weight";

ModelConfig PlanModel() {
  ModelConfig c = testing_util::TinyModel();
  c.hidden_size = 128;
  c.intermediate_size = 192;  // g128 does not divide down_proj's input: skipped there
  return c;
}

// A full-precision teacher with peaked predictions, and one layer whose weights have outliers
// (2% of them at 6x the layer's largest weight): low-bit round to nearest ruins it.
CausalLM FragileTeacher() {
  QuantConfig none;
  none.method = "none";
  CausalLM m = trainer::BuildModel(PlanModel(), none).value();
  trainer::InitWeights(m, 5, 0.03);
  torch::NoGradGuard ng;
  for (auto& p : m->named_parameters()) {
    if (p.key() != kFragile) continue;
    torch::Tensor w = p.value();
    torch::manual_seed(3);
    torch::Tensor mask = torch::rand(w.sizes()) < 0.02;
    const double big = 6.0 * w.abs().max().item<double>();
    w.copy_(torch::where(mask, torch::sign(torch::randn(w.sizes())) * big, w));
  }
  m->eval();
  return m;
}

// Every window of a short shard (so that CompareWithTeacher reads the same ones).
struct Calibration {
  data::WindowSampler sampler;
  torch::Tensor windows;
};
Calibration MakeCalibration(const std::string& dir) {
  testing_util::WriteTinyCorpus(dir);
  data::WindowSampler s = data::WindowSampler::Open({dir + "/val.bin"}, 16, 0).value();
  torch::Tensor w = CalibrationWindows(s, 1000).value();
  EXPECT_EQ(w.size(0), s.num_eval_windows());
  return {std::move(s), w};
}

std::vector<PlanFormat> Candidates(const std::string& list) {
  return ParsePlanCandidates(list).value();
}

const LayerPlan& Layer(const PlanResult& r, const std::string& name) {
  for (const LayerPlan& l : r.layers) {
    if (l.name == name) return l;
  }
  ADD_FAILURE() << "no layer " << name;
  return r.layers.front();
}
double Bpw(const LayerPlan& l) { return double(l.scores[l.chosen].bits) / double(l.rows * l.cols); }

// A model with the plan's quant section (through a recipe whose base is the plan file), holding
// the teacher's weights.
CausalLM StudentFromPlan(const std::string& dir, const std::string& plan_yaml, CausalLM& teacher) {
  std::ofstream(dir + "/plan.yaml") << plan_yaml;
  std::ofstream(dir + "/student.yaml") << "base: plan.yaml\n";
  trainer::Recipe r = trainer::LoadRecipe(dir + "/student.yaml").value();
  CausalLM s = trainer::BuildModel(teacher->config(), r.quant).value();
  EXPECT_TRUE(trainer::LoadParameters(*s, trainer::ParameterMap(*teacher), "teacher").ok());
  s->eval();
  return s;
}

TEST(PlanFormat, SpellingsMapToQuantKeys) {
  PlanFormat f = ParsePlanFormat("int4-g128-asym").value();
  EXPECT_EQ(f.spelling, "int4-g128-asym");
  EXPECT_EQ(f.quant.method, "int");
  EXPECT_EQ(f.quant.bits, 4);
  EXPECT_FALSE(f.quant.symmetric);
  EXPECT_EQ(f.quant.granularity, "per_group");
  EXPECT_EQ(f.quant.group_size, 128);
  f = ParsePlanFormat("int8-channel").value();
  EXPECT_EQ(f.spelling, "int8-channel-sym");
  EXPECT_EQ(f.quant.bits, 8);
  EXPECT_TRUE(f.quant.symmetric);
  EXPECT_EQ(f.quant.granularity, "per_channel");
  f = ParsePlanFormat("ternary-tensor").value();
  EXPECT_EQ(f.quant.method, "ternary");
  EXPECT_EQ(f.quant.granularity, "per_tensor");
  EXPECT_TRUE(ParsePlanFormat("none").value().keep);
  EXPECT_EQ(ParsePlanFormat("binary-g32").value().quant.group_size, 32);

  for (const char* bad : {"int5-g64", "int4", "int4-g48", "ternary-channel-asym", "int4-g64-x",
                          "fp16", "int2-g64-asym-extra"}) {
    absl::StatusOr<PlanFormat> r = ParsePlanFormat(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.status().message().find("--candidates"), std::string::npos) << r.status();
    EXPECT_NE(r.status().message().find(bad), std::string::npos) << r.status();
  }
  EXPECT_EQ(Candidates(" int2-g64-asym, ternary-channel ,none").size(), 3u);
  EXPECT_FALSE(ParsePlanCandidates("int4-g64,int4-g64-sym").ok());  // the same format twice
  EXPECT_FALSE(ParsePlanCandidates(" , ").ok());
}

TEST(PlanFormat, StorageBitsFollowTheExportLayouts) {
  auto bits = [](const char* f, int64_t rows, int64_t cols) {
    return PlanStorageBits(ParsePlanFormat(f).value(), rows, cols);
  };
  // ternary2: ceil(cols/128) * 32 bytes a row + fp32 scales.
  EXPECT_EQ(bits("ternary-channel", 64, 256), 8 * (64 * 64 + 4 * 64));
  EXPECT_EQ(bits("ternary-tensor", 64, 200), 8 * (64 * 64 + 4));
  EXPECT_EQ(PlanStorageBits(ParsePlanFormat("ternary-tensor").value(), 64, 320, "ternary3"),
            8 * (64 * 64 + 4));
  // int2 / int4 + an fp32 scale and zero per group (per channel: groups of 128).
  EXPECT_EQ(bits("int2-g64-asym", 64, 256), 8 * (64 * 64 + 8 * 64 * 4));
  EXPECT_EQ(bits("int4-g128-asym", 64, 256), 8 * (64 * 128 + 8 * 64 * 2));
  EXPECT_EQ(bits("int3-g128-asym", 64, 256), bits("int4-g128-asym", 64, 256));
  EXPECT_EQ(bits("int4-channel", 64, 200), 8 * (64 * 112 + 8 * 64 * 2));
  EXPECT_EQ(bits("ternary-g64", 64, 256), bits("int2-g64-sym", 64, 256));
  EXPECT_EQ(bits("ternary-g128", 64, 128), bits("ternary-channel", 64, 128));  // one group
  // Dense fp32.
  EXPECT_EQ(bits("int8-channel", 64, 256), 32 * 64 * 256);
  EXPECT_EQ(bits("none", 64, 256), 32 * 64 * 256);
  EXPECT_EQ(bits("int4-g128-asym", 64, 96), -1);  // does not fit
}

TEST(Plan, TargetEarGivesTheFragileLayerTheMostBitsAndMatchesExportAndEval) {
  const std::string dir = testing_util::FreshDir("plan");
  Calibration calib = MakeCalibration(dir);
  CausalLM teacher = FragileTeacher();
  torch::NoGradGuard ng;
  const torch::Tensor before = teacher->forward(calib.windows.narrow(0, 0, 2));

  PlanOptions o;
  o.candidates =
      Candidates("ternary-channel,int2-g64-asym,int2-g128-asym,int4-g128-asym,int4-g64-asym");
  o.target_ear = 0.95;
  std::vector<std::string> lines;
  o.progress = [&](const std::string& l) { lines.push_back(l); };
  PlanResult r = PlanBits(teacher, calib.windows, o).value();
  std::printf("%s", PlanTable(r).c_str());

  // The teacher is given back unchanged.
  EXPECT_TRUE(torch::equal(teacher->forward(calib.windows.narrow(0, 0, 2)), before));
  ASSERT_EQ(r.layers.size(), 14u);
  EXPECT_GE(lines.size(), 14u + 3);
  // g128 does not fit down_proj (input 192): skipped with a note.
  const LayerPlan& down = Layer(r, "model.layers.0.mlp.down_proj.weight");
  EXPECT_FALSE(down.scores[2].fits);
  EXPECT_FALSE(r.notes.empty());

  // The fragile layer is the most sensitive and gets the most bits.
  const LayerPlan& fragile = Layer(r, kFragile);
  for (const LayerPlan& l : r.layers) {
    if (l.name == kFragile) continue;
    EXPECT_LT(fragile.scores[0].ear, l.scores[0].ear) << l.name;  // ternary alone
    EXPECT_GE(Bpw(fragile), Bpw(l)) << l.name;
  }
  EXPECT_GT(Bpw(fragile), Bpw(Layer(r, "model.layers.0.self_attn.q_proj.weight")));

  // The target is met, as measured.
  EXPECT_GE(r.measured_ear, o.target_ear);
  EXPECT_GE(r.best_ear, r.measured_ear);

  // The fragment as a base: the student it describes has the measured EAR under qat eval's
  // comparison, and qat export stores it in exactly the planned bits.
  CausalLM student = StudentFromPlan(dir, PlanToYaml(r, {"test plan"}), teacher);
  for (const LayerPlan& l : r.layers) {
    QuantConfig q = trainer::LayerQuantConfig(student->quant(), l.name);
    EXPECT_EQ(q.method, r.candidates[l.chosen].quant.method) << l.name;
    EXPECT_EQ(q.granularity, r.candidates[l.chosen].quant.granularity) << l.name;
  }
  trainer::TeacherComparison cmp =
      trainer::CompareWithTeacher(student, teacher, calib.sampler, 1000, 8, 0.01).value();
  EXPECT_NEAR(cmp.ear, r.measured_ear, 1e-6);
  EXPECT_NEAR(cmp.kl_teacher_student, r.measured_kl, 1e-6);
  const std::string ckpt = testing_util::SaveModel(student, dir + "/student");
  trainer::ExportReport report =
      trainer::ExportPacked(ckpt, dir + "/student.qat.safetensors").value();
  EXPECT_EQ(report.linear_bits, r.total_bits);
  EXPECT_EQ(report.quantized_linear_bits, r.total_bits);
  EXPECT_EQ(report.linear_weights, r.total_weights);
  EXPECT_DOUBLE_EQ(report.LinearBitsPerWeight(), r.BitsPerWeight());
}

// Without calibration rounds the measured upgrades alone climb from the cheapest allocation.
TEST(Plan, MeasuredUpgradesFromTheCheapest) {
  const std::string dir = testing_util::FreshDir("plan_upgrades");
  Calibration calib = MakeCalibration(dir);
  CausalLM teacher = FragileTeacher();
  PlanOptions o;
  o.candidates = Candidates("ternary-channel,int4-g64-asym");
  o.target_ear = 0.93;
  o.calibration_rounds = 0;
  o.refine_tries = 0;  // every layer
  o.downgrade = false;
  PlanResult r = PlanBits(teacher, calib.windows, o).value();
  std::printf("%s", PlanTable(r).c_str());
  EXPECT_GE(r.measured_ear, o.target_ear);
  EXPECT_GT(r.upgrades, 0);
  // The fragile layer is the first upgrade (the largest measured gain per bit).
  EXPECT_EQ(r.candidates[Layer(r, kFragile).chosen].spelling, "int4-g64-asym");
}

TEST(Plan, SensitivityEqualsAOneOverrideModel) {
  const std::string dir = testing_util::FreshDir("plan_one");
  Calibration calib = MakeCalibration(dir);
  CausalLM teacher = FragileTeacher();
  PlanOptions o;
  o.candidates = Candidates("int2-g32-asym,none");
  o.avg_bits = 40;  // everything fits: the allocation is every layer at none
  PlanResult r = PlanBits(teacher, calib.windows, o).value();
  EXPECT_DOUBLE_EQ(r.BitsPerWeight(), 32.0);
  EXPECT_NEAR(r.measured_ear, 1.0, 1e-9);
  // Layer 0's q_proj and the fragile layer of block 1 alone in int2-g32-asym, as a recipe with
  // quant.method none and one override measures them.
  for (const char* name : {"model.layers.0.self_attn.q_proj.weight", kFragile}) {
    QuantConfig q;
    q.method = "none";
    q.overrides.push_back({name,
                           {{"method", "int"},
                            {"bits", "2"},
                            {"symmetric", "false"},
                            {"granularity", "per_group"},
                            {"group_size", "32"}}});
    CausalLM one = trainer::BuildModel(teacher->config(), q).value();
    ASSERT_TRUE(trainer::LoadParameters(*one, trainer::ParameterMap(*teacher), "teacher").ok());
    one->eval();
    trainer::TeacherComparison cmp =
        trainer::CompareWithTeacher(one, teacher, calib.sampler, 1000, 8, 0.01).value();
    EXPECT_NEAR(Layer(r, name).scores[0].ear, cmp.ear, 1e-6) << name;
    EXPECT_NEAR(Layer(r, name).scores[0].kl, cmp.kl_teacher_student, 1e-6) << name;
  }
}

TEST(Plan, AverageBitsBudget) {
  const std::string dir = testing_util::FreshDir("plan_bits");
  Calibration calib = MakeCalibration(dir);
  CausalLM teacher = FragileTeacher();
  PlanOptions o;
  o.candidates = Candidates("ternary-channel,int2-g64-asym,int4-g64-asym");
  o.avg_bits = 3.0;
  PlanResult r = PlanBits(teacher, calib.windows, o).value();
  std::printf("%s", PlanTable(r).c_str());
  EXPECT_LE(r.BitsPerWeight(), 3.0);
  EXPECT_GT(r.BitsPerWeight(), 2.0);
  const LayerPlan& fragile = Layer(r, kFragile);
  EXPECT_EQ(r.candidates[fragile.chosen].spelling, "int4-g64-asym");
  for (const LayerPlan& l : r.layers) EXPECT_GE(Bpw(fragile), Bpw(l)) << l.name;
  EXPECT_GT(r.measured_ear, 0.0);
  EXPECT_LE(r.measured_ear, 1.0);

  o.avg_bits = 1.0;  // below ternary's 2 bits + scales
  absl::StatusOr<PlanResult> low = PlanBits(teacher, calib.windows, o);
  ASSERT_FALSE(low.ok());
  EXPECT_NE(low.status().message().find("cheapest allocation"), std::string::npos) << low.status();
}

TEST(Plan, Errors) {
  const std::string dir = testing_util::FreshDir("plan_errors");
  Calibration calib = MakeCalibration(dir);
  CausalLM teacher = FragileTeacher();
  PlanOptions o;
  o.candidates = Candidates("ternary-channel,int2-g32-asym");
  o.target_ear = 0.999999;

  // An impossible target names the best EAR reachable.
  absl::StatusOr<PlanResult> r = PlanBits(teacher, calib.windows, o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("best EAR reachable"), std::string::npos) << r.status();

  // No calibration data.
  r = PlanBits(teacher, torch::zeros({0, 16}, torch::kInt64), o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("calibration"), std::string::npos) << r.status();
  data::ByteTokenizer tok;
  ASSERT_TRUE(data::WriteShard(dir + "/short.bin", tok.Encode("too short")).ok());
  absl::StatusOr<data::WindowSampler> short_data =
      data::WindowSampler::Open({dir + "/short.bin"}, 16, 0);
  ASSERT_FALSE(short_data.ok());  // what qat plan --calib reports
  EXPECT_NE(short_data.status().message().find("fewer than"), std::string::npos);
  EXPECT_FALSE(CalibrationWindows(calib.sampler, 0).ok());

  // No candidate fits a layer: g128 on the 192-wide down_proj.
  o.candidates = Candidates("int4-g128-asym");
  o.target_ear = 0.5;
  r = PlanBits(teacher, calib.windows, o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("mlp.down_proj"), std::string::npos) << r.status();

  // Neither or both targets.
  o.candidates = Candidates("int4-g64-asym");
  o.avg_bits = 4;
  EXPECT_FALSE(PlanBits(teacher, calib.windows, o).ok());
  o.avg_bits = 0, o.target_ear = 0;
  EXPECT_FALSE(PlanBits(teacher, calib.windows, o).ok());

  // A quantized teacher.
  QuantConfig q;
  q.method = "ternary";
  CausalLM quantized = trainer::BuildModel(PlanModel(), q).value();
  o.target_ear = 0.9;
  r = PlanBits(quantized, calib.windows, o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("full-precision"), std::string::npos) << r.status();
}

// A task file (at `path`) that the teacher gets all right: contexts cut from the tiny corpus
// at word ends, three 4-byte choices each (equal lengths: acc_norm agrees with acc), and gold
// set to the teacher's own choice after scoring. The choices are near each other for a
// random-init model, so quantization flips some of them.
std::vector<trainer::TaskExample> WriteTeacherTasks(const std::string& path, CausalLM& teacher,
                                                    const data::Tokenizer& tok) {
  const std::vector<std::string> contexts = {
      "the cat sat on the", "the dog sat on the", "the cat sat",         "the dog sat",
      "the mat. the",       "the log. the",       "on the mat. the dog", "sat on the log. the"};
  const std::vector<std::vector<std::string>> choice_sets = {
      {" mat", " log", " cat"}, {" dog", " sat", " the"}, {" on.", " mat", " dog"}};
  std::string text;
  for (const std::string& c : contexts) {
    for (const std::vector<std::string>& choices : choice_sets) {
      std::string line = R"({"context": ")" + c + R"(", "choices": [)";
      for (size_t i = 0; i < choices.size(); ++i) {
        line += (i ? ", \"" : "\"") + choices[i] + "\"";
      }
      text += line + R"(], "gold": 0})" + "\n";
    }
  }
  std::vector<trainer::TaskExample> ex = trainer::ParseTasks(text, path).value();
  trainer::TasksResult scored =
      trainer::ScoreTasks(ex, tok, teacher->config().max_seq_len, trainer::TorchLogProbs(teacher))
          .value();
  text.clear();
  for (size_t e = 0; e < ex.size(); ++e) {
    ex[e].gold = scored.examples[e].pred;
    EXPECT_EQ(scored.examples[e].pred_norm, scored.examples[e].pred);
    std::string line = R"({"context": ")" + ex[e].context + R"(", "choices": [)";
    for (size_t i = 0; i < ex[e].choices.size(); ++i) {
      line += (i ? ", \"" : "\"") + ex[e].choices[i] + "\"";
    }
    text += line + R"(], "gold": )" + std::to_string(ex[e].gold) + "}\n";
  }
  std::ofstream(path) << text;
  return trainer::ReadTaskFile(path).value();
}

PlanTaskTarget TaskTarget(const std::string& path, const data::Tokenizer& tok,
                          std::vector<trainer::TaskExample> examples) {
  PlanTaskTarget t;
  t.file = path;
  t.examples = std::move(examples);
  t.tokenizer = &tok;
  return t;
}

// --target-task with tolerance 0 ("task-lossless"): the allocation keeps the teacher's acc of
// 1 (as measured in the search, and as the student the fragment describes scores the file),
// at fewer bits than full precision.
TEST(PlanTask, LosslessTargetKeepsTheTeachersScore) {
  testing_util::TestDir dir;
  Calibration calib = MakeCalibration(dir.dir());
  CausalLM teacher = FragileTeacher();
  std::unique_ptr<data::Tokenizer> tok = data::MakeByteTokenizer();
  const std::string file = dir.path("tasks.jsonl");
  std::vector<trainer::TaskExample> examples = WriteTeacherTasks(file, teacher, *tok);
  ASSERT_EQ(examples.size(), 24u);

  PlanOptions o;
  o.candidates = Candidates("ternary-channel,int2-g64-asym,int4-g64-asym,none");
  o.target_task = TaskTarget(file, *tok, examples);
  std::vector<std::string> lines;
  o.progress = [&](const std::string& l) { lines.push_back(l); };
  PlanResult r = PlanBits(teacher, calib.windows, o).value();
  const std::string table = PlanTable(r);
  std::printf("%s", table.c_str());

  EXPECT_TRUE(r.by_task);
  EXPECT_EQ(r.task_metric, "acc");
  EXPECT_EQ(r.task_examples, 24);
  EXPECT_DOUBLE_EQ(r.teacher_task, 1.0);
  EXPECT_DOUBLE_EQ(r.measured_task, r.teacher_task);
  EXPECT_DOUBLE_EQ(r.best_task, 1.0);  // every layer at none: the teacher itself
  EXPECT_LT(r.BitsPerWeight(), 32.0);
  EXPECT_GT(r.measured_ear, 0.0);
  EXPECT_LE(r.measured_ear, 1.0);
  EXPECT_NE(table.find("task acc on " + file + " (24 examples): measured 1.0000, teacher 1.0000"),
            std::string::npos)
      << table;
  EXPECT_NE(lines.front().find("teacher on " + file), std::string::npos) << lines.front();

  // The student the fragment describes scores the file as measured, and its EAR is the one
  // reported.
  CausalLM student = StudentFromPlan(dir.dir(), PlanToYaml(r), teacher);
  trainer::TasksResult scored = trainer::ScoreTasks(examples, *tok, student->config().max_seq_len,
                                                    trainer::TorchLogProbs(student))
                                    .value();
  EXPECT_DOUBLE_EQ(scored.overall.acc, r.measured_task);
  trainer::TeacherComparison cmp =
      trainer::CompareWithTeacher(student, teacher, calib.sampler, 1000, 8, 0.01).value();
  EXPECT_NEAR(cmp.ear, r.measured_ear, 1e-6);

  // The all-ternary model loses examples: the target made the plan spend bits.
  QuantConfig ternary;
  ternary.method = "ternary";
  ternary.granularity = "per_channel";
  CausalLM low = trainer::BuildModel(teacher->config(), ternary).value();
  ASSERT_TRUE(trainer::LoadParameters(*low, trainer::ParameterMap(*teacher), "teacher").ok());
  low->eval();
  const double low_acc =
      trainer::ScoreTasks(examples, *tok, low->config().max_seq_len, trainer::TorchLogProbs(low))
          .value()
          .overall.acc;
  EXPECT_LT(low_acc, 1.0);
  int ternary_layers = 0;
  for (const LayerPlan& l : r.layers) ternary_layers += l.chosen == 0;
  EXPECT_LT(ternary_layers, int(r.layers.size()));
}

// Even the most accurate allocation of these candidates loses examples: an error naming the
// best score reachable and the teacher's.
TEST(PlanTask, ImpossibleTargetNamesTheBestAndTheTeachersScore) {
  testing_util::TestDir dir;
  Calibration calib = MakeCalibration(dir.dir());
  CausalLM teacher = FragileTeacher();
  std::unique_ptr<data::Tokenizer> tok = data::MakeByteTokenizer();
  const std::string file = dir.path("tasks.jsonl");
  PlanOptions o;
  o.candidates = Candidates("binary-tensor");
  o.target_task = TaskTarget(file, *tok, WriteTeacherTasks(file, teacher, *tok));
  absl::StatusOr<PlanResult> r = PlanBits(teacher, calib.windows, o);
  ASSERT_FALSE(r.ok());
  const std::string msg(r.status().message());
  EXPECT_NE(msg.find("--target-task " + file + " is out of reach"), std::string::npos) << msg;
  EXPECT_NE(msg.find("the best acc reachable"), std::string::npos) << msg;
  EXPECT_NE(msg.find("the teacher's 1.0000"), std::string::npos) << msg;

  // A tolerance of the whole score range makes it reachable.
  o.target_task->tolerance = 1.0;
  PlanResult ok = PlanBits(teacher, calib.windows, o).value();
  EXPECT_LT(ok.measured_task, 1.0);
  EXPECT_GE(ok.measured_task, 0.0);
}

TEST(PlanTask, Errors) {
  testing_util::TestDir dir;
  Calibration calib = MakeCalibration(dir.dir());
  CausalLM teacher = FragileTeacher();
  std::unique_ptr<data::Tokenizer> tok = data::MakeByteTokenizer();
  const std::string file = dir.path("tasks.jsonl");
  const PlanTaskTarget target = TaskTarget(file, *tok, WriteTeacherTasks(file, teacher, *tok));
  auto expect_error = [&](const PlanOptions& o, const std::string& what) {
    absl::StatusOr<PlanResult> r = PlanBits(teacher, calib.windows, o);
    ASSERT_FALSE(r.ok()) << what;
    EXPECT_NE(r.status().message().find(what), std::string::npos) << r.status();
  };
  PlanOptions o;
  o.candidates = Candidates("int4-g64-asym,none");
  // Two targets, or three.
  o.target_task = target;
  o.target_ear = 0.9;
  expect_error(o, "exactly one of --target-ear, --avg-bits and --target-task");
  o.target_ear = 0;
  o.avg_bits = 4;
  expect_error(o, "exactly one of --target-ear, --avg-bits and --target-task");
  o.target_ear = 0.9;
  expect_error(o, "exactly one of --target-ear, --avg-bits and --target-task");
  o.target_ear = 0, o.avg_bits = 0;

  o.target_task->metric = "f1";
  expect_error(o, "--task-metric");
  o.target_task->metric = "acc_norm";
  o.target_task->tolerance = -0.1;
  expect_error(o, "--task-tolerance");
  o.target_task->tolerance = 0;
  o.target_task->examples.clear();
  expect_error(o, "--target-task " + file + ": no examples");
  // A choice longer than the teacher's context: the file's error, named, before any search.
  o.target_task = target;
  o.target_task->examples[0].choices[1] = " " + std::string(40, 'x');
  expect_error(o, "--target-task " + file + ": tasks: example on line 1");
  // A tokenizer with more tokens than the teacher's vocabulary.
  ModelConfig small = PlanModel();
  small.vocab_size = 200;
  QuantConfig none;
  none.method = "none";
  CausalLM narrow = trainer::BuildModel(small, none).value();
  o.target_task = target;
  absl::StatusOr<PlanResult> r = PlanBits(narrow, calib.windows.clamp_max(199), o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("tokenizer has 258 tokens"), std::string::npos) << r.status();
}

}  // namespace
}  // namespace qat::ptq
