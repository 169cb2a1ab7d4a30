#!/usr/bin/env bash
# One command that proves the GPU half (issue 16), for a GPU machine with CUDA and PyTorch but
# maybe no network and no apt (the packages come prepared by launch/gpu-prepare.sh, in .deps/gpu).
#   launch/gpu-check.sh [--dry-run] [--budget SECONDS] [REPORT_DIR]
#   REPORT_DIR   where gpu-report.md and logs/ go (default: $OUT when set, else runs/gpu-check)
#   --budget S   wall-clock seconds for all steps (default 480); a step gets what is left, and the
#                steps after the budget is spent are reported as skipped
#   --dry-run    on a machine without a GPU (here, ctest): checks this script, the package list and
#                every step that needs no GPU: the prepared packages unpack into a working prefix
#                (cmake, mpirun, Abseil, yaml-cpp, GoogleTest, zstd), the PyTorch reference runs,
#                and the qat command of each GPU step parses and stops at "no GPU", as it should
# It never stops at a failed step. Every step is timed; the report holds each step's status and
# seconds, every figure, and each failure with the tail of its log. The steps:
#   1 probe      GPU, driver, nvcc, PyTorch's libtorch cmake dir, NCCL (PyTorch's nvidia-nccl),
#                MPI, cmake, Abseil, yaml-cpp, GoogleTest, zstd; what is missing is unpacked from
#                .deps/gpu/debs into .deps/gpu/root, with wrappers that give those tools their
#                libraries (LD_LIBRARY_PATH, OPAL_PREFIX) without changing the environment of others
#   2 build      qat and the GPU tests first, against PyTorch's libtorch, sm_90, every core
#   3 ctest-gpu  the CUDA kernel, GPU runtime and NCCL tests
#   4 kernels    qat bench kernels --device cuda: GEMV at 8192^2 and 28672x8192, and M=8, vs cuBLAS
#   5 train      qat bench train, cuda, bf16, vs the PyTorch eager reference (launch/bench-train-vs-
#                torch.sh): bench-110m (16x1024) none / grad_norm exact / finite_diff; bench-340m
#                (8x2048) none and grad_norm exact (does the exact step fit in memory?)
#   6 nccl       qat train on cuda over NCCL (world size 1): checkpoint, resume bit for bit against
#                an uninterrupted run; export; qat eval --device cuda vs the CPU runtime, decode speed
#   7 build-all  the rest of the test suite
#   8 ctest-cpu  every other test, against libtorch 2.x (MPI tests with their usual ranks)
# On a GPU machine of your own with the build's Debian/Ubuntu packages installed (README's apt-get
# line), nothing needs preparing: run launch/gpu-check.sh; QAT_PYTHON names the Python with PyTorch.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dry=0 budget=480 report_dir=""
while (($#)); do
  case $1 in
    --dry-run) dry=1; shift ;;
    --budget) budget=$2; shift 2 ;;
    -h | --help) sed -n '2,33p' "$0"; exit 0 ;;
    -*) echo "gpu-check: unknown option '$1'" >&2; exit 2 ;;
    *) report_dir=$1; shift ;;
  esac
done
report_dir=${report_dir:-${OUT:-$root/runs/gpu-check}}
mkdir -p "$report_dir/logs" || exit 1
report_dir=$(cd "$report_dir" && pwd)
logs=$report_dir/logs report=$report_dir/gpu-report.md
deps=$root/.deps/gpu
prefix=$deps/root
((dry)) && prefix=$report_dir/prefix  # the dry run unpacks into its own folder
build=${QAT_GPU_BUILD_DIR:-$root/build-gpu}
jobs=$(nproc)
started=$(date +%s)
: >"$report_dir/steps.tsv" && : >"$report_dir/figures.md" && : >"$report_dir/failures.md"

left() { echo $((budget - ($(date +%s) - started))); }
# step NAME CAP COMMAND...: runs COMMAND (a function or program) with its output in logs/NAME.log,
# under min(CAP, what is left of the budget); records status and seconds; never fails.
step() {
  local name=$1 cap=$2; shift 2
  local t=$(left)
  ((t < cap)) && cap=$t
  if ((cap <= 5)); then
    printf '%s\tskipped (budget spent)\t0\n' "$name" >>"$report_dir/steps.tsv"
    echo "gpu-check: $name: skipped, the budget of $budget s is spent"
    return 0
  fi
  echo "gpu-check: $name (at most $cap s)"
  local t0 rc
  t0=$(date +%s.%N)
  # The step's command in a shell of its own (the functions and variables below are exported),
  # killed with its whole process group at the cap.
  timeout -k 10 "$cap" bash -c "$*" >"$logs/$name.log" 2>&1 </dev/null
  rc=$?
  local dt; dt=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  local st=ok
  ((rc == 124 || rc == 137)) && st="timed out after $cap s"
  ((rc != 0 && rc != 124 && rc != 137)) && st="failed (exit $rc)"
  printf '%s\t%s\t%s\n' "$name" "$st" "$dt" >>"$report_dir/steps.tsv"
  if [ "$st" != ok ]; then
    { echo "### $name: $st"; echo; echo '```'; tail -40 "$logs/$name.log"; echo '```'; echo; } >>"$report_dir/failures.md"
  fi
  echo "gpu-check: $name: $st, $dt s"
  return 0
}
figure() { { echo "### $1"; echo; echo '```'; cat; echo '```'; echo; } >>"$report_dir/figures.md"; }

# ------------------------------------------------------------------------------ 1. probe
py=${QAT_PYTHON:-/opt/torch/.venv/bin/python3}
[ -x "$py" ] || py=$(command -v python3 || echo python3)
((dry)) && [ -z "${QAT_PYTHON:-}" ] && py=/usr/bin/python3
nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
torch_cmake="" nccl_root="" cmake_extra="" wrap=$prefix/wrap
probe() {
  echo "## Probe"
  echo
  echo "| component | found |"
  echo "|---|---|"
  row() { echo "| $1 | ${2:-**missing**} |"; }
  row GPU "$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1)"
  row nvcc "$([ -x "$nvcc" ] && "$nvcc" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p' | sed "s|^|$nvcc, CUDA |")"
  row "PyTorch ($py)" "$("$py" -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda, "GPU visible:", torch.cuda.is_available())' 2>/dev/null)"
  row "libtorch cmake dir" "$torch_cmake"
  row "NCCL" "$nccl_root"
  local t
  for t in cmake make mpirun pkg-config; do row "$t" "$(command -v "$t")"; done
  row "Abseil (cmake)" "$(cfg absl)"; row "yaml-cpp (cmake)" "$(cfg yaml-cpp)"; row "GoogleTest (cmake)" "$(cfg GTest)"
  row "zstd (pkg-config)" "$(pkg-config --modversion libzstd 2>/dev/null)"
  row "zlib" "$(ls /usr/include/zlib.h "$prefix"/usr/include/zlib.h 2>/dev/null | head -1)"
  echo
}
# A package's CMake config directory, in the system or the prefix.
cfg() {
  local d
  for d in /usr/lib/*/cmake /usr/lib/cmake /usr/local/lib/cmake /usr/local/lib/*/cmake /usr/share/cmake \
           "$prefix"/usr/lib/*/cmake "$prefix"/usr/share/cmake; do
    [ -d "$d/$1" ] && { echo "$d/$1"; return 0; }
  done
  return 1
}
find_torch_nccl() {
  torch_cmake=$("$py" -c 'import torch.utils; print(torch.utils.cmake_prefix_path)' 2>/dev/null)
  nccl_root=$("$py" -c 'import nvidia.nccl, os; print(os.path.dirname(nvidia.nccl.__file__))' 2>/dev/null ||
              { [ -f /usr/include/nccl.h ] && echo /usr; } || { [ -f /usr/local/cuda/include/nccl.h ] && echo /usr/local/cuda; })
  return 0
}
# Unpacks the prepared packages into $prefix and makes wrappers in $wrap for the tools taken from
# there: each gets the prefix's libraries (and OpenMPI its OPAL_PREFIX) for itself alone.
unpack_prefix() {
  local debs=$deps/debs
  ls "$debs"/*.deb >/dev/null 2>&1 || { echo "no prepared packages in $debs (run launch/gpu-prepare.sh on a CPU machine and carry .deps/gpu)"; return 1; }
  mkdir -p "$prefix" "$wrap"
  local f
  for f in "$debs"/*.deb; do dpkg-deb -x "$f" "$prefix" 2>/dev/null || { mkdir -p "$prefix/.ar" && (cd "$prefix/.ar" && ar x "$f" && tar -xf data.tar.* -C "$prefix" && rm -f ./*); }; done
  local arch=x86_64-linux-gnu lib
  lib=$prefix/usr/lib/$arch:$prefix/usr/lib/$arch/openmpi/lib
  local tool target
  for tool in cmake ctest make pkg-config mpirun mpiexec mpicc mpicxx; do
    target=$prefix/usr/bin/$tool
    [ -x "$target" ] || target=$prefix/usr/bin/$tool.openmpi
    [ -x "$target" ] || continue
    printf '#!/bin/sh\nLD_LIBRARY_PATH=%s${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} OPAL_PREFIX=%s PKG_CONFIG_PATH=%s${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH} exec %s "$@"\n' \
      "$lib" "$prefix/usr" "$prefix/usr/lib/$arch/pkgconfig:$prefix/usr/share/pkgconfig" "$target" >"$wrap/$tool"
    chmod +x "$wrap/$tool"
  done
  echo "unpacked $(ls "$debs"/*.deb | wc -l) packages into $prefix; wrappers: $(ls "$wrap" | tr '\n' ' ')"
}
use_prefix_for_missing() {
  local need=0 t
  for t in cmake make mpirun pkg-config; do command -v "$t" >/dev/null || need=1; done
  for t in absl yaml-cpp GTest; do cfg "$t" >/dev/null || need=1; done
  pkg-config --exists libzstd 2>/dev/null || need=1
  [ -f /usr/include/zlib.h ] || need=1
  ((need)) || { echo "every build dependency is installed; nothing unpacked"; return 0; }
  unpack_prefix || return 1
  # Only what the system lacks comes from the prefix (its tools first in PATH when absent).
  for t in cmake ctest make pkg-config mpirun mpiexec mpicc mpicxx; do
    command -v "$t" >/dev/null && [ "$(command -v "$t")" != "$wrap/$t" ] && rm -f "$wrap/$t"
  done
  export PATH=$wrap:$PATH
  cmake_extra="-DCMAKE_PREFIX_PATH=$torch_cmake;$prefix/usr"
  [ -x "$wrap/mpicc" ] && cmake_extra="$cmake_extra -DMPI_C_COMPILER=$wrap/mpicc -DMPIEXEC_EXECUTABLE=$wrap/mpirun"
  export PKG_CONFIG_PATH=$prefix/usr/lib/x86_64-linux-gnu/pkgconfig:$prefix/usr/share/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
  return 0
}

find_torch_nccl
{ echo "# qat GPU check$( ((dry)) && echo " (dry run)")"; echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC') on $(hostname), $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo); commit $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?'); budget $budget s."
  echo; } >"$report"
use_prefix_for_missing >"$logs/prefix.log" 2>&1 || echo "gpu-check: the prepared packages could not be used (logs/prefix.log)"
probe >>"$report"
printf 'probe\tok\t%s\n' "$(( $(date +%s) - started ))" >>"$report_dir/steps.tsv"
[ -n "$cmake_extra" ] || cmake_extra="-DCMAKE_PREFIX_PATH=$torch_cmake"
qat=$build/trainer/qat

# ------------------------------------------------------------------------------ steps 2-8
configure() {
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release $cmake_extra -DQAT_CUDA=ON \
    -DCMAKE_CUDA_COMPILER="$nvcc" -DCMAKE_CUDA_ARCHITECTURES=90 ${nccl_root:+-DNCCL_ROOT=$nccl_root}
}
build_first() { configure && cmake --build "$build" -j "$jobs" --target qat cuda_test runtime_test comm_test; }
build_all() { cmake --build "$build" -j "$jobs"; }
ctest_gpu() { ctest --test-dir "$build" --output-on-failure -R 'Cuda|Gpu|Nccl|comm_test' --timeout 120; }
ctest_cpu() { ctest --test-dir "$build" -j "$jobs" --timeout 240 -E 'Cuda|Gpu|Nccl|comm_test|science_smoke_test|multihost_test'; }
bench_kernels() { "$qat" bench kernels --device cuda --shapes 8192x8192,28672x8192 --m 8; }
bench_train() {
  QAT_BIN=$qat "$root/launch/bench-train-vs-torch.sh" "$root/recipes/bench-110m.yaml" --python "$py" --repeat 1 \
    --set train.device=cuda --set train.dtype=bf16 &&
  QAT_BIN=$qat "$root/launch/bench-train-vs-torch.sh" "$root/recipes/bench-340m.yaml" --python "$py" --repeat 1 \
    --variants "none grad_norm:exact" --set train.device=cuda --set train.dtype=bf16
}
# A short run on cuda over NCCL, stopped at step 3 and resumed, against an uninterrupted one; then
# the packed export on the GPU runtime against the CPU runtime.
nccl_run() {
  local w=$report_dir/nccl
  rm -rf "$w" && mkdir -p "$w"
  awk 'BEGIN { for (i = 1; i <= 400; i++) printf "the cat sat on the mat, and the dog sat on the log %d.\n%%\n", i }' >"$w/corpus.txt"
  "$qat" prep --fortune --val-fraction 0.1 --out "$w/data" "$w/corpus.txt" || return 1
  cat >"$w/r.yaml" <<YAML
run: {log_every: 1, save_every: 3, keep_last: 5, seed: 1}
model: {hidden_size: 256, intermediate_size: 512, num_layers: 2, num_heads: 4, num_kv_heads: 2, max_seq_len: 128}
quant: {method: ternary}
data: {train: [$w/data/train.bin], val: [$w/data/val.bin], seq_len: 64}
train: {steps: 6, batch_size: 8, micro_batch_size: 8, lr: 3.0e-3, warmup_steps: 2, device: cuda}
comm: {backend: nccl}
eval: {max_windows: 4}
YAML
  ((dry)) && { "$qat" recipe check "$w/r.yaml"; return; }
  "$root/launch/qat-run" -n 1 -- qat train "$w/r.yaml" --set "run.dir=$w/whole" || return 1
  "$root/launch/qat-run" -n 1 -- qat train "$w/r.yaml" --set "run.dir=$w/resumed" --set run.stop_after=3 || return 1
  "$root/launch/qat-run" -n 1 -- qat train "$w/r.yaml" --set "run.dir=$w/resumed" || return 1
  local f same=1
  for f in "$w"/whole/checkpoints/step-00000006/*.safetensors; do
    cmp "$f" "$w/resumed/checkpoints/step-00000006/$(basename "$f")" || same=0
  done
  echo "resume on cuda over NCCL: $( ((same)) && echo "bit-identical to the uninterrupted run" || echo "DIFFERS from the uninterrupted run")"
  "$qat" export --ckpt "$w/whole" --out "$w/model.qat.safetensors" || return 1
  "$qat" eval --model "$w/model.qat.safetensors" --data "$w/data/val.bin" --windows 8 --device cuda \
    --max-new-tokens 0 --speed-tokens 128 --json "$w/gpu.json" || return 1
  "$qat" eval --model "$w/model.qat.safetensors" --data "$w/data/val.bin" --windows 8 --device cpu \
    --max-new-tokens 0 --speed-tokens 128 --json "$w/cpu.json" || return 1
  local g c
  g=$(sed -n 's/.*"perplexity": \([0-9.e+-]*\).*/\1/p' "$w/gpu.json") c=$(sed -n 's/.*"perplexity": \([0-9.e+-]*\).*/\1/p' "$w/cpu.json")
  echo "packed eval: perplexity cuda $g, cpu $c, relative difference $(awk -v a="$g" -v b="$c" 'BEGIN { d = a - b; if (d < 0) d = -d; printf "%.2e", d / b }')"
  echo "decode tokens/s: cuda $(sed -n 's/.*"speed_decode_tokens_per_s": \([0-9.e+-]*\).*/\1/p' "$w/gpu.json"), cpu $(sed -n 's/.*"speed_decode_tokens_per_s": \([0-9.e+-]*\).*/\1/p' "$w/cpu.json")"
  ((same))
}

export root dry deps prefix build jobs logs report_dir py nvcc torch_cmake nccl_root cmake_extra qat wrap
export -f configure build_first build_all ctest_gpu ctest_cpu bench_kernels bench_train nccl_run \
  unpack_prefix cfg

if ((dry)); then
  # The same steps, with what can run without a GPU. A failure here is a failure of the check.
  qat=${QAT_BIN:-$root/build/trainer/qat}
  dry_packages() {
    if ls "$deps"/debs/*.deb >/dev/null 2>&1; then
      local n; n=$(wc -l <"$deps/packages.txt")
      local have=0 p
      while read -r p; do compgen -G "$deps/debs/${p}_*.deb" >/dev/null && have=$((have + 1)) || echo "not prepared: $p"; done <"$deps/packages.txt"
      echo "prepared: $have of $n packages, $(du -cb "$deps"/debs/*.deb | tail -1 | awk '{ printf "%.1f MiB", $1 / 1048576 }')"
      ((have == n)) || return 1
      unpack_prefix || return 1
      "$wrap/cmake" --version | head -1 || return 1
      "$wrap/mpirun" --version | head -1 || return 1
      "$wrap/mpicc" -showme:incdirs || return 1
      "$wrap/pkg-config" --modversion libzstd || return 1
      for p in absl yaml-cpp GTest; do ls -d "$prefix"/usr/lib/*/cmake/$p || return 1; done
      [ -f "$prefix/usr/include/zlib.h" ] || return 1
      echo "the prefix has cmake, mpirun, mpicc, pkg-config, Abseil, yaml-cpp, GoogleTest, zstd and zlib"
    else
      echo "nothing prepared in $deps: checking the package list and its size with apt instead"
      "$root/launch/gpu-prepare.sh" --list
    fi
  }
  expect_no_gpu() {  # runs "$@", which must fail saying there is no GPU, not with a usage error
    local out; out=$("$@" 2>&1) && { echo "$out"; echo "expected a no-GPU error"; return 1; }
    echo "$out" | tail -2
    echo "$out" | grep -Eqi 'no CUDA GPU|sees no GPU|no GPU|without CUDA' || { echo "not the no-GPU error"; return 1; }
  }
  export qat
  export -f dry_packages expect_no_gpu
  step packages 240 dry_packages
  step configure-line 10 'echo cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release $cmake_extra -DQAT_CUDA=ON -DCMAKE_CUDA_COMPILER="$nvcc" -DCMAKE_CUDA_ARCHITECTURES=90'
  step kernels 60 expect_no_gpu "$qat" bench kernels --device cuda --shapes 8192x8192,28672x8192 --m 8
  step train 120 'expect_no_gpu "$qat" bench train "$root/recipes/bench-110m.yaml" --synthetic --random-teacher --steps 2 --set train.device=cuda --set train.dtype=bf16 &&
    expect_no_gpu "$qat" bench train "$root/recipes/bench-340m.yaml" --synthetic --random-teacher --steps 2 --set train.device=cuda &&
    "$py" "$root/launch/bench_train_ref.py" --vocab 256 --hidden 64 --inter 128 --layers 2 --heads 4 --kv-heads 2 --seq 32 --batch 2 --steps 2 --threads 1 --mode grad_norm --estimator finite_diff &&
    QAT_BIN=$qat "$root/launch/bench-train-vs-torch.sh" "$root/recipes/demo-ternary.yaml" --python "$py" --steps 2 --repeat 1 \
      --variants "none grad_norm:finite_diff" --set train.batch_size=2 --set data.seq_len=32 --set train.threads=1 \
      --set model.hidden_size=64 --set model.intermediate_size=128 --set model.num_layers=2'
  step nccl 60 nccl_run
else
  step build 300 build_first
  step ctest-gpu 90 ctest_gpu
  step kernels 90 bench_kernels
  step train 240 bench_train
  step nccl 120 nccl_run
  step build-all 300 build_all
  step ctest-cpu 400 ctest_cpu
fi

# ------------------------------------------------------------------------------ the report
for s in kernels train nccl; do
  [ -s "$logs/$s.log" ] && grep -Ev '^(step [0-9]+/|saved |initialised|teacher:|model:)' "$logs/$s.log" | tail -40 | figure "$s"
done
{ echo "## Steps"; echo; echo "| step | status | seconds |"; echo "|---|---|---|"
  awk -F'\t' '{ printf "| %s | %s | %s |\n", $1, $2, $3 }' "$report_dir/steps.tsv"
  echo; echo "Total: $(( $(date +%s) - started )) s."; echo
  echo "## Figures"; echo; cat "$report_dir/figures.md"
  echo "## Failures"; echo
  [ -s "$report_dir/failures.md" ] && cat "$report_dir/failures.md" || echo "None."
} >>"$report"
echo "gpu-check: report: $report"
failed=$(awk -F'\t' '$2 != "ok"' "$report_dir/steps.tsv" | wc -l)
echo "gpu-check: $failed step(s) not ok"
((failed == 0))
