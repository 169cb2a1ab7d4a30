#!/usr/bin/env bash
# launch/gpu-check.sh --dry-run (issue 16): on this machine without a GPU, every step that needs no
# GPU passes (the package list or the prepared packages, the PyTorch reference, each GPU step's
# qat command stopping at "no GPU"), and the report holds the probe table and the step timings.
#   gpu_check_dry_run_test.sh QAT_BINARY SOURCE_DIR
set -euo pipefail
qat=$1 src=$2
work=$(mktemp -d "${TMPDIR:-/tmp}/qat_gpu_check.XXXXXX")
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*"; [ -f "$work/gpu-report.md" ] && cat "$work/gpu-report.md"; exit 1; }
QAT_BIN=$qat QAT_GPU_BUILD_DIR=$work/build "$src/launch/gpu-check.sh" --dry-run "$work" > "$work/out.log" 2>&1 ||
  { cat "$work/out.log"; fail "the dry run reported failed steps"; }
r=$work/gpu-report.md
[ -f "$r" ] || fail "no report"
for s in "# qat GPU check (dry run)" "## Probe" "## Steps" "## Figures" "## Failures"; do
  grep -q "^$s" "$r" || fail "report section '$s' missing"
done
for c in "GPU" "nvcc" "libtorch cmake dir" "NCCL" "mpirun" "Abseil (cmake)" "yaml-cpp (cmake)" "GoogleTest (cmake)"; do
  grep -q "^| $c" "$r" || fail "probe row '$c' missing"
done
for s in probe packages configure-line kernels train nccl; do
  grep -Eq "^\| $s \| ok \| [0-9.]+ \|$" "$r" || fail "step $s not ok with its seconds"
done
grep -q "no CUDA GPU is visible" "$r" || fail "bench kernels did not stop at 'no GPU'"
grep -q "^ref: steady state over" "$r" || fail "the PyTorch reference did not run"
grep -Eq "^none exact +[0-9.]+ +[0-9.]+ +[0-9.]+x" "$r" || fail "no side-by-side row"
grep -q "r.yaml: ok" "$r" || fail "the NCCL step's recipe was not checked"
echo "dry run: $(grep '^Total' "$r")"
