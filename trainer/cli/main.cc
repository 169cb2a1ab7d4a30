// qat: one binary, one subcommand per job.
#include <malloc.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "trainer/cli/commands.h"
#include "trainer/cli/flags.h"

namespace qat::cli {

int Fail(const char* command, const std::string& message) {
  std::fprintf(stderr, "qat %s: error: %s\n", command, message.c_str());
  return 1;
}

absl::StatusOr<Args> Args::Parse(int argc, char** argv, int first,
                                 const std::vector<FlagSpec>& specs) {
  Args args;
  for (int i = first; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--", 0) != 0 || a == "--") {
      args.positional_.push_back(a);
      continue;
    }
    std::string name = a.substr(2), value;
    bool has_inline = false;
    if (size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_inline = true;
    }
    const FlagSpec* spec = nullptr;
    for (const FlagSpec& s : specs) {
      if (s.name == name) spec = &s;
    }
    if (spec == nullptr) return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name));
    if (spec->takes_value && !has_inline) {
      if (i + 1 >= argc) {
        return absl::InvalidArgumentError(absl::StrCat("flag --", name, " needs a value"));
      }
      value = argv[++i];
    }
    if (!spec->takes_value && has_inline) {
      return absl::InvalidArgumentError(absl::StrCat("flag --", name, " takes no value"));
    }
    if (!spec->repeatable && args.values_.count(name)) {
      return absl::InvalidArgumentError(absl::StrCat("flag --", name, " given twice"));
    }
    args.values_[name].push_back(value);
  }
  return args;
}

std::string Args::Get(const std::string& name, const std::string& fallback) const {
  auto it = values_.find(name);
  return it == values_.end() ? fallback : it->second.back();
}

std::vector<std::string> Args::GetAll(const std::string& name) const {
  auto it = values_.find(name);
  return it == values_.end() ? std::vector<std::string>{} : it->second;
}

absl::StatusOr<int64_t> Args::GetInt(const std::string& name, int64_t fallback) const {
  if (!Has(name)) return fallback;
  const std::string v = Get(name);
  char* end = nullptr;
  errno = 0;
  long long x = std::strtoll(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || errno != 0) {
    return absl::InvalidArgumentError(absl::StrCat("--", name, " expects an integer, got '", v, "'"));
  }
  return static_cast<int64_t>(x);
}

absl::StatusOr<double> Args::GetDouble(const std::string& name, double fallback) const {
  if (!Has(name)) return fallback;
  const std::string v = Get(name);
  char* end = nullptr;
  errno = 0;
  double x = std::strtod(v.c_str(), &end);
  if (v.empty() || *end != '\0' || errno != 0) {
    return absl::InvalidArgumentError(absl::StrCat("--", name, " expects a number, got '", v, "'"));
  }
  return x;
}

std::string FlagHelp(const std::vector<FlagSpec>& specs) {
  std::string out;
  for (const FlagSpec& s : specs) {
    std::string left = "  --" + s.name + (s.takes_value ? " VALUE" : "");
    if (left.size() < 26) left.resize(26, ' ');
    out += left + " " + s.help + "\n";
  }
  return out;
}

bool ParseCommand(int argc, char** argv, const char* command, const char* usage,
                  std::vector<FlagSpec> specs, Args* args, int* exit_code) {
  specs.push_back({"help", false, false, "show this help"});
  absl::StatusOr<Args> parsed = Args::Parse(argc, argv, 2, specs);
  if (!parsed.ok()) {
    std::fprintf(stderr, "qat %s: error: %s\nusage: %s\n%s", command,
                 std::string(parsed.status().message()).c_str(), usage, FlagHelp(specs).c_str());
    *exit_code = 2;
    return false;
  }
  if (parsed->Has("help")) {
    std::printf("usage: %s\n%s", usage, FlagHelp(specs).c_str());
    *exit_code = 0;
    return false;
  }
  *args = std::move(*parsed);
  return true;
}

}  // namespace qat::cli

namespace {
constexpr char kUsage[] =
    "usage: qat <command> [args]\n"
    "commands:\n"
    "  prep     text files -> token shards (train.bin, val.bin)\n"
    "  train    train from a YAML recipe (run it under mpirun for several ranks)\n"
    "  export   checkpoint -> packed model file (ternary 2-bit + fp32)\n"
    "  eval     perplexity, speed and generated text of a packed model or a checkpoint\n"
    "  bench    kernels: packed low-bit vs dense; comm: bus bandwidth; train RECIPE: step speed\n"
    "  recipe   check | show | schema: validate and print recipes\n"
    "  ckpt     inspect: a checkpoint's step, loss, recipe hash, files and checksums\n"
    "  quantize post-training quantization (rtn, gptq, smoothness-preserving gptq) -> checkpoint\n"
    "  plan     per-layer formats under an EAR target or a bit budget -> recipe fragment\n"
    "Run 'qat <command> --help' for its flags.\n";
}  // namespace

namespace {
// glibc's malloc serves blocks above its mmap threshold (128 KiB, raised on the fly up to the size
// of the largest block freed) with fresh mappings and gives them back at free, and trims the heap
// top past 128 KiB. A training step allocates and frees the same activation and gradient tensors
// (a few MB each) every step, so with those defaults every step pays page faults on every one of
// them: perf showed 13-16% of a CPU training step in the kernel's page-fault path and 5-9% in
// OpenBLAS zeroing fresh GEMM outputs, and the step ran 15-30% faster with the settings below.
// Blocks up to 32 MiB (glibc's largest mmap threshold) now come from the heap, which is not
// trimmed below 1 GiB of free top, so a step reuses the pages of the last one. Environment settings
// (MALLOC_*_ or GLIBC_TUNABLES) are left to win.
void TuneMalloc() {
#if defined(__GLIBC__)
  if (std::getenv("MALLOC_MMAP_THRESHOLD_") == nullptr &&
      std::getenv("GLIBC_TUNABLES") == nullptr) {
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
  }
  if (std::getenv("MALLOC_TRIM_THRESHOLD_") == nullptr &&
      std::getenv("GLIBC_TUNABLES") == nullptr) {
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
  }
#endif
}

// libgomp's idle OpenMP threads spin on their core for about 300,000 iterations after every
// parallel region before they sleep (GOMP_SPINCOUNT), unless libgomp itself sees more threads
// than CPUs. libtorch runs its elementwise ops on those threads and its GEMMs on OpenBLAS's own,
// so wherever the cores are shared (two jobs on a node, a busy workstation, ctest -j) the
// spinning threads of one process take the cores that the other's threads need. Two 2-thread
// `qat bench train` (grad_norm finite_diff, demo shape) on this project's 2-core VM ran at 91
// tokens/s each, against 709-843 with GOMP_SPINCOUNT=1000 and 945-964 with
// OMP_WAIT_POLICY=passive; PyTorch eager on the same libraries at 84 against 756-801. Alone on
// the machine, neither setting changed the step beyond the run-to-run noise. libgomp reads the
// variable once, when it loads, before main, so the commands that compute on libtorch's threads
// run themselves again with GOMP_SPINCOUNT=1000 (libgomp's own value for oversubscribed teams):
// one more process start, about 1 s here. An environment that sets GOMP_SPINCOUNT or
// OMP_WAIT_POLICY is left alone, and OMP_NUM_THREADS=1 needs nothing (no idle team threads);
// launch/qat-run exports the setting, so its ranks start once.
void BoundOpenMpSpin(char** argv) {
  auto set = [](const char* name) {
    const char* v = std::getenv(name);
    return v != nullptr && *v != '\0';
  };
  if (set("GOMP_SPINCOUNT") || set("OMP_WAIT_POLICY")) return;
  const char* omp_threads = std::getenv("OMP_NUM_THREADS");
  if (omp_threads != nullptr && std::strcmp(omp_threads, "1") == 0) return;
  const std::string cmd = argv[1];
  if (cmd != "train" && cmd != "eval" && cmd != "bench" && cmd != "quantize" && cmd != "plan") {
    return;
  }
  for (char** a = argv + 2; *a != nullptr; ++a) {
    if (std::strcmp(*a, "--help") == 0) return;  // nothing to compute
  }
  if (setenv("GOMP_SPINCOUNT", "1000", 1) != 0) return;
  execv("/proc/self/exe", argv);
  unsetenv("GOMP_SPINCOUNT");  // no /proc: go on with libgomp's default
}
}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2) BoundOpenMpSpin(argv);
  TuneMalloc();
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "help")) {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const std::string cmd = argv[1];
  if (cmd == "prep") return qat::cli::PrepMain(argc, argv);
  if (cmd == "train") return qat::cli::TrainMain(argc, argv);
  if (cmd == "export") return qat::cli::ExportMain(argc, argv);
  if (cmd == "eval") return qat::cli::EvalMain(argc, argv);
  if (cmd == "bench" && argc > 2 && !std::strcmp(argv[2], "train")) {
    return qat::cli::BenchTrainMain(argc - 1, argv + 1);
  }
  if (cmd == "bench") return qat::cli::BenchMain(argc, argv);
  if (cmd == "recipe") return qat::cli::RecipeMain(argc, argv);
  if (cmd == "ckpt") return qat::cli::CkptMain(argc, argv);
  if (cmd == "quantize") return qat::cli::QuantizeMain(argc, argv);
  if (cmd == "plan") return qat::cli::PlanMain(argc, argv);
  std::fprintf(stderr, "qat: unknown command '%s'\n%s", cmd.c_str(), kUsage);
  return 2;
}
