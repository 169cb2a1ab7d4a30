#!/usr/bin/env bash
# The smoothness experiment (MISSION.md): from one teacher, the same data and steps, ternary
# students with no regularizer, grad_norm and grad_match at a few lambdas; one table of
# perplexity, EAR, smoothness proxy, effective candidates and step time.
#   --fresh   retrain the students (the teacher and corpus of launch/demo.sh are reused)
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${1:-}" = "--fresh" ] && rm -rf runs/ablation
launch/setup.sh >/dev/null
qat=${QAT_BUILD_DIR:-build}/trainer/qat
export QAT_BIN=$qat
if [ ! -f runs/demo/data/val.bin ]; then
  mapfile -t files < <(find /usr/share/games/fortunes -maxdepth 1 -type f ! -name '*.dat' | sort)
  "$qat" prep --fortune --val-fraction 0.05 --out runs/demo/data "${files[@]}"
fi
[ -f runs/demo/teacher/DONE ] || launch/qat-run -n 1 -- qat train recipes/demo-teacher.yaml

# name mode estimator lambda
# Lambdas from a 12-step probe on the demo student: R is about 0.03-0.08 (grad_norm) and
# 0.2-0.4 (grad_match) against a task loss of about 0.3, so lambda 1 makes the penalty a tenth to a
# quarter of the loss and lambda 10 about as large as it.
variants=(
  "none none exact 0"
  "grad_norm_exact_1 grad_norm exact 1"
  "grad_norm_exact_10 grad_norm exact 10"
  "grad_norm_fd_10 grad_norm finite_diff 10"
  "grad_match_exact_1 grad_match exact 1"
  "grad_match_fd_1 grad_match finite_diff 1"
)
for v in "${variants[@]}"; do
  read -r name mode est lambda <<<"$v"
  echo "== $name"
  launch/qat-run -n 1 -- qat train recipes/smoothness-ablation.yaml --set run.dir=runs/ablation/$name \
    --set smoothness.mode=$mode --set smoothness.estimator=$est --set smoothness.lambda=$lambda
  "$qat" eval --ckpt runs/ablation/$name --teacher runs/demo/teacher --metrics --windows 32 \
    --max-new-tokens 0 --json runs/ablation/$name/eval.json >/dev/null
done

field() { sed -n "s/.*\"$2\": \([-0-9.e+]*\).*/\1/p" "runs/ablation/$1/eval.json"; }
# Mean step time over the logged intervals after the first (tokens per step / tokens per second).
step_ms() { awk -F'"tokens_per_s": ' 'NR > 1 { split($2, a, ","); s += 2048 / a[1]; n++ } END { printf "%.0f", 1000 * s / n }' "runs/ablation/$1/metrics.jsonl"; }
echo
printf "%-24s %8s %8s %8s %11s %9s %9s %9s\n" variant ppl EAR top1 "E|dL/dx|" "exp(H)" "p>0.01" "ms/step"
t_ppl=$(field none teacher_perplexity)
printf "%-24s %8.3f %8s %8s %11.4f %9.3f %9.3f %9s\n" "teacher (fp32)" "$t_ppl" - - \
  "$(field none teacher_smoothness)" "$(field none teacher_candidates_exp_entropy)" \
  "$(field none teacher_candidates_above)" -
for v in "${variants[@]}"; do
  read -r name _ <<<"$v"
  printf "%-24s %8.3f %8.4f %8.4f %11.4f %9.3f %9.3f %9s\n" "$name" "$(field "$name" perplexity)" \
    "$(field "$name" ear)" "$(field "$name" top1_agreement)" "$(field "$name" smoothness)" \
    "$(field "$name" candidates_exp_entropy)" "$(field "$name" candidates_above)" "$(step_ms "$name")"
done
