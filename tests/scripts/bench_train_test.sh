#!/usr/bin/env bash
# `qat bench train` (ctest) on 2 ranks with a random teacher and each smoothness mode, as
# launch/bench-smoothness.sh runs it: every variant finishes and prints its steady-state figures,
# which must be positive numbers.
#   bench_train_test.sh QAT_BINARY SOURCE_DIR
set -euo pipefail
qat=$1 src=$2
source "$src/tests/scripts/tiny_run.sh"
tiny_setup bench_train "$qat"
for variant in none:exact grad_norm:exact grad_norm:finite_diff grad_match:exact grad_match:finite_diff; do
  IFS=: read -r mode est <<<"$variant"
  out=$("$src/launch/qat-run" -n 2 -- qat bench train "$work/base.yaml" --synthetic --random-teacher \
        --steps 3 --set smoothness.mode=$mode --set smoothness.estimator=$est \
        --set smoothness.lambda=1 2>&1) || { echo "FAIL: $variant"; echo "$out"; exit 1; }
  tps=$(sed -n 's/.*steady state over [0-9]* steps: \([0-9.]*\) tokens\/s.*/\1/p' <<<"$out")
  rss=$(sed -n 's/.*peak resident memory of rank 0: \([0-9.]*\) GB.*/\1/p' <<<"$out")
  awk -v t="$tps" -v r="$rss" 'BEGIN { exit !(t > 0 && r > 0) }' ||
    { echo "FAIL: $variant printed no steady-state figures"; echo "$out"; exit 1; }
  echo "$variant: $tps tokens/s, peak RSS $rss GB"
done
# One process, its threads from the cores: qat bounds libgomp's idle spinning itself
# (trainer/cli/main.cc, by starting again with GOMP_SPINCOUNT=1000) and an environment's setting wins.
spin() {
  env -u OMP_NUM_THREADS -u OMP_WAIT_POLICY "$@" "$qat" bench train "$work/base.yaml" --synthetic --steps 2 2>&1 |
    sed -n 's/.*idle OpenMP threads: \(.*\)$/\1/p'
}
got=$(spin -u GOMP_SPINCOUNT)
[ "$got" = "GOMP_SPINCOUNT=1000" ] || { echo "FAIL: with nothing set, idle OpenMP threads: '$got'"; exit 1; }
got=$(spin GOMP_SPINCOUNT=4321)
[ "$got" = "GOMP_SPINCOUNT=4321" ] || { echo "FAIL: with GOMP_SPINCOUNT=4321 set, idle OpenMP threads: '$got'"; exit 1; }
echo "idle OpenMP spin: bounded to 1000 by qat itself, an environment's value kept"
