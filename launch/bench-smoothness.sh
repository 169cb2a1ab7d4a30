#!/usr/bin/env bash
# Step time and peak memory of QAT with and without the smoothness regularizers, side by side in
# one run (issue: smoothness-preserving QAT). Each variant is one `qat bench train` process (so its
# peak memory is its own) on the same recipe, random tokens and a random full-precision teacher.
#   launch/bench-smoothness.sh [RECIPE] [extra qat bench train flags...]
#   default RECIPE: recipes/demo-ternary.yaml; on a GPU e.g.
#   launch/bench-smoothness.sh recipes/bench-110m.yaml --set train.device=cuda
set -euo pipefail
cd "$(dirname "$0")/.."
recipe=${1:-recipes/demo-ternary.yaml}
shift || true
qat=${QAT_BIN:-${QAT_BUILD_DIR:-build}/trainer/qat}
[ -x "$qat" ] || launch/setup.sh >/dev/null
variants=(
  "none none exact 0"
  "grad_norm_exact grad_norm exact 1"
  "grad_norm_finite_diff grad_norm finite_diff 1"
  "grad_match_exact grad_match exact 1"
  "grad_match_finite_diff grad_match finite_diff 1"
)
printf "%-24s %12s %10s %10s %12s\n" variant tokens/s s/step "vs none" "peak RSS GB"
base=""
for v in "${variants[@]}"; do
  read -r name mode est lambda <<<"$v"
  out=$("$qat" bench train "$recipe" --synthetic --random-teacher --steps 5 \
        --set smoothness.mode=$mode --set smoothness.estimator=$est --set smoothness.lambda=$lambda \
        --set smoothness.lambda_warmup_steps=0 "$@" 2>&1) || { echo "$out" >&2; exit 1; }
  tps=$(sed -n 's/.*steady state over [0-9]* steps: \([0-9.]*\) tokens\/s, \([0-9.]*\) s\/step.*/\1/p' <<<"$out")
  sps=$(sed -n 's/.*tokens\/s, \([0-9.]*\) s\/step.*/\1/p' <<<"$out")
  rss=$(sed -n 's/.*peak resident memory of rank 0: \([0-9.]*\) GB.*/\1/p' <<<"$out")
  [ -z "$base" ] && base=$tps
  printf "%-24s %12.0f %10.3f %9.0f%% %12.2f\n" "$name" "$tps" "$sps" "$(awk -v a="$tps" -v b="$base" 'BEGIN{print 100*a/b}')" "$rss"
done
