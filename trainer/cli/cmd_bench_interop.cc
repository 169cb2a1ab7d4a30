// qat bench interop: Hugging Face import and export of a 340M-parameter LLaMA model made here.
//
// Each phase runs in a child process (this binary, re-executed with --phase) so that its peak
// resident memory (getrusage of the child: ru_maxrss) is its own:
//   write   random bf16 weights -> DIR/in (config.json + model.safetensors), no libtorch model
//   import  LoadHfModel(DIR/in): safetensors read + bf16 -> fp32 model
//   export  import, then ExportHf(DIR/out, bf16)
// Printed side by side: seconds, GB/s of safetensors bytes, peak RSS and its ratio to the bf16
// file size and to the fp32 model size.
#include <fcntl.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>

#include "absl/strings/str_cat.h"
#include "kernels/safetensors.h"
#include "trainer/cli/commands.h"
#include "trainer/cli/flags.h"
#include "trainer/hf.h"

extern char** environ;

namespace qat::cli {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// About 345M parameters (24 x 11.65M in the blocks, 2 x 32.8M embedding and head).
trainer::ModelConfig BenchConfig() {
  trainer::ModelConfig c;
  c.vocab_size = 32000;
  c.hidden_size = 1024;
  c.intermediate_size = 2816;
  c.num_layers = 24;
  c.num_heads = 16;
  c.num_kv_heads = 8;
  c.max_seq_len = 2048;
  c.rope_theta = 10000.0;
  c.rms_norm_eps = 1e-5;
  return c;
}

int64_t Params(const trainer::ModelConfig& c) {
  int64_t n = 0;
  for (const auto& [name, shape] : trainer::HfTensorShapes(c)) {
    int64_t k = 1;
    for (int64_t d : shape) k *= d;
    n += k;
  }
  return n;
}

// Random bf16 values (normal, std 0.02; norms 1) written without building a model.
absl::Status WriteModel(const std::string& dir) {
  const trainer::ModelConfig c = BenchConfig();
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  kernels::SafetensorsWriter w;
  for (const auto& [name, shape] : trainer::HfTensorShapes(c)) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    std::vector<uint16_t> bf16(static_cast<size_t>(n));
    const bool norm = shape.size() == 1;
    // One random draw per 64 values keeps writing fast; the values still vary.
    uint32_t bits = 0;
    for (int64_t i = 0; i < n; ++i) {
      if (norm) {
        bf16[i] = 0x3F80;  // 1.0
        continue;
      }
      if (i % 64 == 0) {
        const float f = normal(rng);
        std::memcpy(&bits, &f, 4);
      }
      bf16[i] = static_cast<uint16_t>((bits >> 16) ^ (i & 0x7));
    }
    w.Add(name, kernels::DType::kBF16, shape, bf16.data(), bf16.size() * 2);
  }
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (absl::Status s = w.Write(dir + "/model.safetensors"); !s.ok()) return s;
  return kernels::WriteFileAtomic(dir + "/config.json",
                                  trainer::HfConfigJson(c, "bfloat16", -1, -1));
}

int RunPhase(const std::string& phase, const std::string& dir) {
  if (phase == "write") {
    const Clock::time_point t = Clock::now();
    absl::Status s = WriteModel(dir + "/in");
    if (!s.ok()) return Fail("bench", std::string(s.message()));
    std::printf("%.3f\n", Since(t));
    return 0;
  }
  const Clock::time_point t0 = Clock::now();
  absl::StatusOr<trainer::LoadedModel> loaded = trainer::LoadHfModel(dir + "/in");
  if (!loaded.ok()) return Fail("bench", std::string(loaded.status().message()));
  const double import_s = Since(t0);
  if (phase == "import") {
    std::printf("%.3f\n", import_s);
    return 0;
  }
  const Clock::time_point t1 = Clock::now();
  absl::StatusOr<trainer::HfExportReport> r =
      trainer::ExportHf(loaded->model, dir + "/out", {"bf16", ""});
  if (!r.ok()) return Fail("bench", std::string(r.status().message()));
  std::printf("%.3f\n", Since(t1));
  return 0;
}

struct ChildResult {
  double seconds = 0;
  double max_rss_mb = 0;
};

// Runs `qat bench interop --phase P --dir D` and returns its printed seconds and peak RSS.
absl::StatusOr<ChildResult> RunChild(const std::string& phase, const std::string& dir) {
  const std::string self = fs::read_symlink("/proc/self/exe").string();
  const std::string out_file = dir + "/." + phase + ".out";
  std::vector<std::string> args = {self, "bench", "interop", "--phase", phase, "--dir", dir};
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, out_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                   0644);
  pid_t pid;
  const int err = posix_spawn(&pid, self.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (err != 0)
    return absl::InternalError(absl::StrCat("cannot start ", self, ": ", strerror(err)));
  int status = 0;
  struct rusage usage {};
  if (wait4(pid, &status, 0, &usage) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return absl::InternalError(absl::StrCat("phase ", phase, " failed (status ", status, ")"));
  }
  absl::StatusOr<std::string> text = kernels::ReadFile(out_file);
  if (!text.ok()) return text.status();
  ChildResult r;
  r.seconds = std::atof(text->c_str());
  r.max_rss_mb = usage.ru_maxrss / 1024.0;  // kilobytes on Linux
  return r;
}

}  // namespace

int BenchInteropMain(int argc, char** argv) {
  constexpr char kUsage[] = "qat bench interop [--dir DIR] [--keep]";
  Args args;
  int code = 0;
  if (!ParseCommand(argc, argv, "bench", kUsage,
                    {{"dir", true, false, "scratch directory (default: a temporary one)"},
                     {"keep", false, false, "keep the model directories written"},
                     {"phase", true, false, "internal: run one phase (write, import, export)"}},
                    &args, &code)) {
    return code;
  }
  std::error_code ec;
  const std::string dir =
      args.Has("dir")
          ? args.Get("dir")
          : (fs::temp_directory_path() / absl::StrCat("qat_bench_interop_", getpid())).string();
  if (args.Has("phase")) return RunPhase(args.Get("phase"), dir);

  fs::create_directories(dir, ec);
  const trainer::ModelConfig c = BenchConfig();
  const double params = static_cast<double>(Params(c));
  std::printf(
      "bench interop: LLaMA %lld layers x %lld hidden, vocab %lld: %.1fM parameters; "
      "bf16 safetensors %.0f MB, fp32 model %.0f MB\n",
      (long long)c.num_layers, (long long)c.hidden_size, (long long)c.vocab_size, params / 1e6,
      params * 2 / 1e6, params * 4 / 1e6);
  std::printf("%-8s %9s %10s %13s %12s %12s\n", "phase", "seconds", "GB/s", "peak_RSS_MB",
              "RSS/bf16", "RSS/fp32");
  for (const char* phase : {"write", "import", "export"}) {
    absl::StatusOr<ChildResult> r = RunChild(phase, dir);
    if (!r.ok()) return Fail("bench", std::string(r.status().message()));
    std::printf("%-8s %9.2f %10.2f %13.0f %12.2f %12.2f\n", phase, r->seconds,
                params * 2 / 1e9 / std::max(1e-9, r->seconds), r->max_rss_mb,
                r->max_rss_mb * 1e6 / (params * 2) * 1.048576,
                r->max_rss_mb * 1e6 / (params * 4) * 1.048576);
  }
  std::printf(
      "export = import + ExportHf (bf16): its seconds are the export alone, its peak RSS "
      "the whole process (the fp32 model, the bf16 copy and the file image). GB/s counts "
      "bf16 safetensors bytes.\n");
  if (!args.Has("keep")) fs::remove_all(dir, ec);
  return 0;
}

}  // namespace qat::cli
