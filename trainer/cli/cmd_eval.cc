// qat eval: perplexity on validation windows, speed, a generated sample, and zero-shot
// multiple-choice accuracy (--tasks, trainer/tasks.h), for a packed model (our kernels, no
// libtorch matmuls) or a libtorch checkpoint (fake-quantized as in training).
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "kernels/safetensors.h"
#include "trainer/cli/commands.h"
#include "trainer/cli/flags.h"
#include "trainer/evaluate.h"
#include "trainer/placement.h"
#include "trainer/tasks.h"
#include "trainer/train.h"

namespace qat::cli {
namespace {

std::string JsonString(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || c >= 0x7f) {
      out += absl::StrFormat("\\u%04x", c);  // bytes as code points: always valid JSON
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

absl::StatusOr<kernels::Isa> ParseIsa(const std::string& name) {
  if (name.empty()) return kernels::BestIsa();
  for (kernels::Isa isa : {kernels::Isa::kScalar, kernels::Isa::kAvx2, kernels::Isa::kAvx512}) {
    if (name == kernels::IsaName(isa)) {
      if (!kernels::IsaSupported(isa)) {
        return absl::InvalidArgumentError(absl::StrCat("--isa ", name, ": not supported by this CPU"));
      }
      return isa;
    }
  }
  return absl::InvalidArgumentError(absl::StrCat("--isa: unknown '", name, "'"));
}

absl::StatusOr<kernels::Device> ParseDevice(const std::string& name) {
  if (name.empty() || name == "cpu") return kernels::Device::kCpu;
  if (name == "cuda") return kernels::Device::kCuda;
  return absl::InvalidArgumentError(absl::StrCat("--device: expected cpu or cuda, got '", name, "'"));
}

// Throughput of the packed runtime on this machine: one forward over `prefill` tokens (a prompt
// of that length), then `decode` single-token steps on its KV cache (greedy, tokens fed back).
struct Speed {
  int64_t prefill_tokens = 0, decode_tokens = 0, prefill_passes = 0;
  double prefill_tokens_per_s = 0, decode_tokens_per_s = 0;
};
absl::StatusOr<Speed> MeasureSpeed(const kernels::PackedModel& model, int64_t prefill,
                                   int64_t decode) {
  using Clock = std::chrono::steady_clock;
  const kernels::RuntimeConfig& c = model.config();
  Speed s;
  s.prefill_tokens = std::max<int64_t>(1, std::min(prefill, c.max_seq_len - 1));
  s.decode_tokens = std::max<int64_t>(0, std::min(decode, c.max_seq_len - s.prefill_tokens));
  std::vector<int32_t> prompt(static_cast<size_t>(s.prefill_tokens));
  for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = static_cast<int32_t>((i * 7 + 3) % c.vocab_size);
  kernels::Session session = model.NewSession();
  {  // warm-up (first-touch allocations, GPU scratch), not timed
    absl::StatusOr<std::vector<float>> w = session.Forward(prompt.data(), std::min<int64_t>(8, s.prefill_tokens));
    if (!w.ok()) return w.status();
    session.Reset();
  }
  // Prefill as generation runs it (logits of the last row only), timed over several passes on a
  // fresh cache: the median, since one pass on a shared machine varies by 2x.
  const int64_t n = s.prefill_tokens;
  absl::StatusOr<std::vector<float>> logits;
  std::vector<double> seconds;
  const Clock::time_point begin = Clock::now();
  while (
      seconds.size() < 3 ||
      (seconds.size() < 15 && std::chrono::duration<double>(Clock::now() - begin).count() < 1.0)) {
    session.Reset();
    Clock::time_point t0 = Clock::now();
    logits = session.Forward(prompt.data(), n, n - 1);
    if (!logits.ok()) return logits.status();
    seconds.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
  }
  std::sort(seconds.begin(), seconds.end());
  s.prefill_tokens_per_s = n / std::max(1e-9, seconds[seconds.size() / 2]);
  s.prefill_passes = int64_t(seconds.size());
  std::mt19937_64 rng(1);
  Clock::time_point t1 = Clock::now();
  for (int64_t i = 0; i < s.decode_tokens; ++i) {
    const float* last = logits->data() + logits->size() - c.vocab_size;
    const int32_t next = kernels::SampleToken(last, c.vocab_size, 0.0f, 0, rng);
    logits = session.Forward(&next, 1);
    if (!logits.ok()) return logits.status();
  }
  const double decode_s = std::chrono::duration<double>(Clock::now() - t1).count();
  s.decode_tokens_per_s = s.decode_tokens > 0 ? s.decode_tokens / std::max(1e-9, decode_s) : 0.0;
  return s;
}

// The tokenizer of a packed model: --tokenizer when given, else the byte tokenizer or the one
// recorded in the file's metadata (data::Tokenizer::Metadata).
absl::StatusOr<std::unique_ptr<data::Tokenizer>> PackedTokenizer(const std::string& path,
                                                                 const std::string& kind,
                                                                 const std::string& flag) {
  if (!flag.empty()) return data::LoadTokenizer(flag);
  if (kind == "byte") return data::MakeByteTokenizer();
  absl::StatusOr<kernels::SafetensorsFile> file = kernels::SafetensorsFile::Open(path);
  if (!file.ok()) return file.status();
  return data::TokenizerFromMetadata(file->metadata(), path);
}

// A number for JSON: NaN (a standard error of fewer than 2 examples) as null.
std::string JsonNumber(double v) { return std::isfinite(v) ? absl::StrFormat("%.9g", v) : "null"; }

std::string StderrText(double v) { return std::isfinite(v) ? absl::StrFormat("%.4f", v) : "n/a"; }

// Scores the examples with `logprobs` and the model's max_seq_len.
absl::StatusOr<trainer::TasksResult> RunTasks(const std::vector<trainer::TaskExample>& examples,
                                              const data::Tokenizer& tokenizer, int64_t vocab,
                                              int64_t max_seq_len,
                                              const trainer::TokenLogProbs& logprobs) {
  if (tokenizer.vocab_size() > vocab) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--tasks: the ", tokenizer.kind(), " tokenizer has ", tokenizer.vocab_size(),
        " tokens, the model only ", vocab, " (is it the model's tokenizer?)"));
  }
  return trainer::ScoreTasks(examples, tokenizer, max_seq_len, logprobs);
}

}  // namespace

int EvalMain(int argc, char** argv) {
  constexpr char kUsage[] =
      "qat eval (--model PACKED.safetensors | --ckpt CHECKPOINT_OR_RUN_DIR) [--data VAL.bin]... "
      "[--tasks TASKS.jsonl] [options]\n"
      "With --tasks, only the multiple-choice tasks are scored unless --data, --max-new-tokens "
      "or --speed-tokens ask for more.";
  Args args;
  int code = 0;
  if (!ParseCommand(
          argc, argv, "eval", kUsage,
          {{"model", true, false, "packed model file (runs on qat kernels)"},
           {"ckpt", true, false, "checkpoint or run directory (runs in libtorch)"},
           {"data", true, true, "validation shard(s); default for --ckpt: its recipe's data.val"},
           {"tasks", true, false,
            "zero-shot multiple-choice tasks, JSON Lines (format: trainer/tasks.h; e.g. "
            "recipes/tasks/fortunes-smoke.jsonl): acc and acc_norm per task, as "
            "lm-evaluation-harness scores them"},
           {"seq-len", true, false, "tokens per window (default: the recipe's, else 128)"},
           {"windows", true, false, "windows scored (default 64)"},
           {"prompt", true, false, "prompt of the generated sample (default 'The ')"},
           {"max-new-tokens", true, false, "tokens generated (default 64; 0: no sample)"},
           {"temperature", true, false, "sampling temperature (default 0.8; 0: greedy)"},
           {"top-k", true, false, "top-k sampling (default 40; 0: off)"},
           {"seed", true, false, "sampling seed (default 1)"},
           {"threads", true, false, "threads (default: all cores)"},
           {"isa", true, false, "packed kernels: scalar | avx2 | avx512 (default: best)"},
           {"device", true, false, "packed model: cpu | cuda (default cpu)"},
           {"speed-tokens", true, false,
            "packed model: prompt length and decode steps of the speed test (default 128; 0: off)"},
           {"teacher", true, false, "with --ckpt and --metrics: the teacher checkpoint"},
           {"metrics", false, false, "EAR, top-1 agreement, smoothness, effective candidates"},
           {"threshold", true, false, "probability threshold of the candidate count (default 0.01)"},
           {"json", true, false, "also write the results to this JSON file"},
           {"tokenizer", true, false,
            "tokenizer of the prompt and sample (default: the checkpoint's data.tokenizer, or "
            "the packed file's qat.tokenizer)"}},
          &args, &code)) {
    return code;
  }
  if (args.Has("model") == args.Has("ckpt")) return Fail("eval", "give exactly one of --model, --ckpt");
  // With --tasks, the other measurements run only when asked for. The file is read first, so
  // that its errors come before a model is loaded.
  const bool with_tasks = args.Has("tasks");
  std::vector<trainer::TaskExample> task_examples;
  if (with_tasks) {
    absl::StatusOr<std::vector<trainer::TaskExample>> ex = trainer::ReadTaskFile(args.Get("tasks"));
    if (!ex.ok()) return Fail("eval", std::string(ex.status().message()));
    task_examples = *std::move(ex);
  }
  absl::StatusOr<int64_t> windows = args.GetInt("windows", 64),
                          new_tokens = args.GetInt("max-new-tokens", with_tasks ? 0 : 64),
                          top_k = args.GetInt("top-k", 40), seed = args.GetInt("seed", 1),
                          threads = args.GetInt("threads", 0), seq_len_flag = args.GetInt("seq-len", 0),
                          speed_tokens = args.GetInt("speed-tokens", with_tasks ? 0 : 128);
  absl::StatusOr<double> temperature = args.GetDouble("temperature", 0.8);
  for (const absl::Status& s : {windows.status(), new_tokens.status(), top_k.status(), seed.status(),
                                threads.status(), seq_len_flag.status(), temperature.status(),
                                speed_tokens.status()}) {
    if (!s.ok()) return Fail("eval", std::string(s.message()));
  }
  trainer::SamplingOptions sampling{*new_tokens, *temperature, *top_k, static_cast<uint64_t>(*seed)};
  const std::string prompt = args.Get("prompt", "The ");
  std::vector<std::string> data = args.GetAll("data");
  int64_t seq_len = *seq_len_flag;

  std::string kind, source;
  trainer::LmEval ev;
  trainer::Generation gen;
  bool have_eval = false;
  std::optional<trainer::TeacherComparison> cmp;
  std::unique_ptr<data::Tokenizer> tokenizer;  // decodes the sample (set below)
  std::optional<Speed> speed;
  std::optional<trainer::TasksResult> tasks;
  if (args.Has("device") && !args.Has("model")) {
    return Fail("eval", "--device applies to packed models (--model); checkpoints run in libtorch");
  }
  if (args.Has("metrics") && (!args.Has("ckpt") || !args.Has("teacher"))) {
    return Fail("eval", "--metrics needs --ckpt STUDENT and --teacher TEACHER");
  }
  absl::StatusOr<double> threshold = args.GetDouble("threshold", 0.01);
  if (!threshold.ok()) return Fail("eval", std::string(threshold.status().message()));
  if (args.Has("ckpt")) {
    trainer::SetProcessThreads(*threads);
    absl::StatusOr<trainer::LoadedModel> loaded = trainer::LoadModelFromCheckpoint(args.Get("ckpt"));
    if (!loaded.ok()) return Fail("eval", std::string(loaded.status().message()));
    absl::StatusOr<std::unique_ptr<data::Tokenizer>> tok =
        data::LoadTokenizer(args.Get("tokenizer", loaded->recipe.data.tokenizer));
    if (!tok.ok()) return Fail("eval", std::string(tok.status().message()));
    tokenizer = *std::move(tok);
    kind = absl::StrCat("checkpoint (libtorch, quant ", loaded->recipe.quant.method, ")");
    source = loaded->checkpoint;
    if (data.empty() && (!with_tasks || args.Has("metrics"))) data = loaded->recipe.data.val;
    if (seq_len == 0) seq_len = loaded->recipe.data.seq_len;
    if (!data.empty()) {
      absl::StatusOr<data::WindowSampler> val =
          data::WindowSampler::Open(data, seq_len, 0, loaded->recipe.model.vocab_size);
      if (!val.ok()) return Fail("eval", std::string(val.status().message()));
      absl::StatusOr<trainer::LmEval> r = trainer::EvaluateTorch(loaded->model, *val, *windows, 8);
      if (!r.ok()) return Fail("eval", std::string(r.status().message()));
      ev = *r;
      have_eval = true;
      if (args.Has("metrics")) {
        absl::StatusOr<trainer::LoadedModel> teacher =
            trainer::LoadModelFromCheckpoint(args.Get("teacher"));
        if (!teacher.ok()) return Fail("eval", std::string(teacher.status().message()));
        absl::StatusOr<trainer::TeacherComparison> c = trainer::CompareWithTeacher(
            loaded->model, teacher->model, *val, *windows, 8, *threshold);
        if (!c.ok()) return Fail("eval", std::string(c.status().message()));
        cmp = *c;
      }
    }
    if (with_tasks) {
      absl::StatusOr<trainer::TasksResult> t = RunTasks(
          task_examples, *tokenizer, loaded->model->config().vocab_size,
          loaded->model->config().max_seq_len, trainer::TorchLogProbs(loaded->model));
      if (!t.ok()) return Fail("eval", std::string(t.status().message()));
      tasks = *std::move(t);
    }
    if (sampling.max_new_tokens > 0) {
      sampling.tokenizer = tokenizer.get();
      absl::StatusOr<trainer::Generation> g = trainer::GenerateTorch(loaded->model, prompt, sampling);
      if (!g.ok()) return Fail("eval", std::string(g.status().message()));
      gen = *g;
    }
  } else {
    absl::StatusOr<kernels::Isa> isa = ParseIsa(args.Get("isa"));
    if (!isa.ok()) return Fail("eval", std::string(isa.status().message()));
    absl::StatusOr<kernels::Device> device = ParseDevice(args.Get("device"));
    if (!device.ok()) return Fail("eval", std::string(device.status().message()));
    absl::StatusOr<std::unique_ptr<kernels::PackedModel>> model =
        kernels::PackedModel::Load(args.Get("model"), static_cast<int>(*threads), *isa, *device);
    if (!model.ok()) return Fail("eval", std::string(model.status().message()));
    source = args.Get("model");
    absl::StatusOr<std::unique_ptr<data::Tokenizer>> tok = PackedTokenizer(
        args.Get("model"), (*model)->config().tokenizer, args.Get("tokenizer"));
    if (!tok.ok()) return Fail("eval", std::string(tok.status().message()));
    tokenizer = *std::move(tok);
    kind = absl::StrCat("packed (qat kernels, ",
                        *device == kernels::Device::kCuda ? "cuda" : kernels::IsaName(*isa), ", ",
                        (*model)->LinearSummary(), ")");
    if (*speed_tokens > 0) {
      absl::StatusOr<Speed> s = MeasureSpeed(**model, *speed_tokens, *speed_tokens);
      if (!s.ok()) return Fail("eval", std::string(s.status().message()));
      speed = *s;
    }
    if (seq_len == 0) seq_len = std::min<int64_t>(128, (*model)->config().max_seq_len);
    if (!data.empty()) {
      absl::StatusOr<data::WindowSampler> val =
          data::WindowSampler::Open(data, seq_len, 0, (*model)->config().vocab_size);
      if (!val.ok()) return Fail("eval", std::string(val.status().message()));
      absl::StatusOr<trainer::LmEval> r = trainer::EvaluatePacked(**model, *val, *windows);
      if (!r.ok()) return Fail("eval", std::string(r.status().message()));
      ev = *r;
      have_eval = true;
    }
    if (with_tasks) {
      absl::StatusOr<trainer::TasksResult> t =
          RunTasks(task_examples, *tokenizer, (*model)->config().vocab_size,
                   (*model)->config().max_seq_len, trainer::PackedLogProbs(**model));
      if (!t.ok()) return Fail("eval", std::string(t.status().message()));
      tasks = *std::move(t);
    }
    if (sampling.max_new_tokens > 0) {
      sampling.tokenizer = tokenizer.get();
      absl::StatusOr<trainer::Generation> g = trainer::GeneratePacked(**model, prompt, sampling);
      if (!g.ok()) return Fail("eval", std::string(g.status().message()));
      gen = *g;
    }
  }

  std::printf("eval: %s\n  model: %s\n", kind.c_str(), source.c_str());
  if (have_eval) {
    std::printf("  perplexity %.4f (nll %.5f) over %lld tokens, %.0f tokens/s\n", ev.perplexity,
                ev.nll, (long long)ev.tokens, ev.tokens / std::max(1e-9, ev.seconds));
  }
  if (cmp) {
    std::printf("  vs teacher over %lld positions:\n"
                "    %-34s %10s %10s\n"
                "    %-34s %10.4f %10.4f\n"
                "    %-34s %10.4f %10.4f\n"
                "    %-34s %10.4f %10.4f\n"
                "    %-34s %10.4f %10.4f\n"
                "    EAR %.4f | top-1 agreement %.4f | KL(teacher||student) %.4f\n",
                (long long)cmp->positions, "", "student", "teacher", "perplexity",
                std::exp(cmp->student_nll), std::exp(cmp->teacher_nll),
                "smoothness proxy E||dL/dx||", cmp->student_smoothness, cmp->teacher_smoothness,
                "effective candidates exp(H)", cmp->student_candidates_exp_entropy,
                cmp->teacher_candidates_exp_entropy, "candidates with p > threshold",
                cmp->student_candidates_above, cmp->teacher_candidates_above, cmp->ear,
                cmp->top1_agreement, cmp->kl_teacher_student);
    std::printf("    smoothness proxy per block input (student / teacher):");
    for (size_t l = 0; l < cmp->student_block_smoothness.size(); ++l) {
      std::printf(" %zu: %.4f / %.4f", l, cmp->student_block_smoothness[l],
                  cmp->teacher_block_smoothness[l]);
    }
    std::printf("\n");
  }
  if (speed) {
    std::printf(
        "  speed: prefill %.1f tokens/s (%lld-token prompt, median of %lld passes), decode "
        "%.1f tokens/s (%lld steps on the KV cache)\n",
        speed->prefill_tokens_per_s, (long long)speed->prefill_tokens,
        (long long)speed->prefill_passes, speed->decode_tokens_per_s,
        (long long)speed->decode_tokens);
  }
  if (tasks) {
    int64_t choices = 0;
    for (const trainer::ExampleScore& e : tasks->examples) choices += int64_t(e.loglik.size());
    std::printf("  tasks: %s (%lld examples, %lld choices, %lld truncated on the left), %.1f s\n"
                "    %-24s %6s %8s %8s %9s %8s\n",
                args.Get("tasks").c_str(), (long long)tasks->overall.n, (long long)choices,
                (long long)tasks->truncated, tasks->seconds, "task", "n", "acc", "stderr",
                "acc_norm", "stderr");
    std::vector<trainer::TaskAccuracy> rows = tasks->tasks;
    if (rows.size() > 1) rows.push_back(tasks->overall);
    for (const trainer::TaskAccuracy& a : rows) {
      std::printf("    %-24s %6lld %8.4f %8s %9.4f %8s\n", a.task.c_str(), (long long)a.n, a.acc,
                  StderrText(a.acc_stderr).c_str(), a.acc_norm, StderrText(a.acc_norm_stderr).c_str());
    }
  }
  if (sampling.max_new_tokens > 0) {
    std::printf("  decode %.1f tokens/s (%lld tokens)\n  sample: %s\n", gen.decode_tokens_per_s,
                (long long)gen.new_tokens, JsonString(gen.text).c_str());
  }
  if (args.Has("json")) {
    std::string j = absl::StrCat("{\"kind\": ", JsonString(kind), ", \"model\": ", JsonString(source));
    if (have_eval) {
      absl::StrAppendFormat(&j, ", \"perplexity\": %.9g, \"nll\": %.9g, \"tokens\": %d, "
                            "\"eval_tokens_per_s\": %.6g", ev.perplexity, ev.nll, ev.tokens,
                            ev.tokens / std::max(1e-9, ev.seconds));
    }
    if (cmp) {
      absl::StrAppendFormat(
          &j, ", \"ear\": %.9g, \"top1_agreement\": %.9g, \"kl_teacher_student\": %.9g, "
          "\"teacher_perplexity\": %.9g, \"smoothness\": %.9g, \"teacher_smoothness\": %.9g, "
          "\"candidates_exp_entropy\": %.9g, \"teacher_candidates_exp_entropy\": %.9g, "
          "\"candidates_above\": %.9g, \"teacher_candidates_above\": %.9g",
          cmp->ear, cmp->top1_agreement, cmp->kl_teacher_student, std::exp(cmp->teacher_nll),
          cmp->student_smoothness, cmp->teacher_smoothness, cmp->student_candidates_exp_entropy,
          cmp->teacher_candidates_exp_entropy, cmp->student_candidates_above,
          cmp->teacher_candidates_above);
      const auto list = [](const std::vector<double>& v) {
        return absl::StrCat(
            "[",
            absl::StrJoin(
                v, ", ", [](std::string* out, double x) { absl::StrAppendFormat(out, "%.9g", x); }),
            "]");
      };
      absl::StrAppend(&j, ", \"block_smoothness\": ", list(cmp->student_block_smoothness),
                      ", \"teacher_block_smoothness\": ", list(cmp->teacher_block_smoothness));
    }
    if (speed) {
      absl::StrAppendFormat(&j, ", \"prefill_tokens_per_s\": %.6g, \"prefill_tokens\": %d, "
                            "\"speed_decode_tokens_per_s\": %.6g, \"speed_decode_tokens\": %d",
                            speed->prefill_tokens_per_s, speed->prefill_tokens,
                            speed->decode_tokens_per_s, speed->decode_tokens);
    }
    if (tasks) {
      auto accuracy = [](const trainer::TaskAccuracy& a) {
        return absl::StrCat("{\"task\": ", JsonString(a.task), ", \"n\": ", a.n,
                            ", \"acc\": ", JsonNumber(a.acc), ", \"acc_stderr\": ",
                            JsonNumber(a.acc_stderr), ", \"acc_norm\": ", JsonNumber(a.acc_norm),
                            ", \"acc_norm_stderr\": ", JsonNumber(a.acc_norm_stderr), "}");
      };
      absl::StrAppend(&j, ", \"tasks\": {\"file\": ", JsonString(args.Get("tasks")),
                      ", \"truncated\": ", tasks->truncated, ", \"overall\": ",
                      accuracy(tasks->overall), ", \"per_task\": [");
      for (size_t i = 0; i < tasks->tasks.size(); ++i) {
        absl::StrAppend(&j, i ? ", " : "", accuracy(tasks->tasks[i]));
      }
      absl::StrAppend(&j, "]}");
    }
    absl::StrAppendFormat(&j, ", \"decode_tokens_per_s\": %.6g, \"new_tokens\": %d, \"sample\": %s}\n",
                          gen.decode_tokens_per_s, gen.new_tokens, JsonString(gen.text));
    absl::Status s = kernels::WriteFileAtomic(args.Get("json"), j);
    if (!s.ok()) return Fail("eval", std::string(s.message()));
  }
  return 0;
}

}  // namespace qat::cli
