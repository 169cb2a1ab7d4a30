#!/usr/bin/env bash
# The PTQ table (issue 13, and the PTQ part of the seeds' claims): one full-precision teacher,
# every quantizer below by round-to-nearest, GPTQ and the smoothness-preserving GPTQ (ptq/ptq.h),
# each evaluated against the teacher on the same validation windows: perplexity, EAR, top-1
# agreement, the smoothness proxy and the effective candidates. Finished runs are reused.
#   launch/ptq-sweep.sh [TEACHER_RUN] [TRAIN_SHARD] [VAL_SHARD] [OUT_DIR]
#   QAT_PTQ_SMOOTH=mu (default 1), QAT_PTQ_WINDOWS=N calibration windows (default 128),
#   QAT_PTQ_SEEDS="1 2 3" calibration draws (default one: 1234): GPTQ runs once per seed and the
#   table gives mean ± standard deviation over the seeds (RTN needs no calibration: one run),
#   QAT_PTQ_ONLY="int2-g64-asym ternary-g64" a subset of the quantizers below.
set -euo pipefail
cd "$(dirname "$0")/.."
teacher=${1:-runs/demo/teacher}
train=${2:-runs/demo/data/train.bin}
val=${3:-runs/demo/data/val.bin}
out=${4:-runs/ptq}
qat=${QAT_BUILD_DIR:-build}/trainer/qat
smooth=${QAT_PTQ_SMOOTH:-1}
windows=${QAT_PTQ_WINDOWS:-128}
read -r -a seeds <<<"${QAT_PTQ_SEEDS:-1234}"
mkdir -p "$out"

# name: quant keys (the recipe fragment written for it)
quantizers=(
  "int8-ch-sym method=int bits=8 granularity=per_channel symmetric=true"
  "int4-g128-sym method=int bits=4 granularity=per_group group_size=128 symmetric=true"
  "int4-g128-asym method=int bits=4 granularity=per_group group_size=128 symmetric=false"
  "int3-g128-sym method=int bits=3 granularity=per_group group_size=128 symmetric=true"
  "int3-g128-asym method=int bits=3 granularity=per_group group_size=128 symmetric=false"
  "int2-g64-sym method=int bits=2 granularity=per_group group_size=64 symmetric=true"
  "int2-g64-asym method=int bits=2 granularity=per_group group_size=64 symmetric=false"
  "int2-ch-asym method=int bits=2 granularity=per_channel symmetric=false"
  "ternary-ch method=ternary granularity=per_channel"
  "ternary-g64 method=ternary granularity=per_group group_size=64"
  "binary-ch method=binary granularity=per_channel"
)
methods=("rtn" "gptq" "gptq-smooth")
if [ -n "${QAT_PTQ_ONLY:-}" ]; then
  kept=()
  for q in "${quantizers[@]}"; do [[ " $QAT_PTQ_ONLY " == *" ${q%% *} "* ]] && kept+=("$q"); done
  quantizers=("${kept[@]}")
fi
# The run directory of a quantizer, method and seed (the seed is left out for the default one).
run_dir() { if [ "$2" = rtn ] || [ "$3" = 1234 ]; then echo "$out/$1-$2"; else echo "$out/$1-$2-s$3"; fi; }

common=(--teacher "$teacher" --metrics --data "$val" --windows 64 --max-new-tokens 0)
[ -f "$out/teacher.json" ] || "$qat" eval --ckpt "$teacher" "${common[@]}" --json "$out/teacher.json" >/dev/null
for q in "${quantizers[@]}"; do
  read -r name keys <<<"$q"
  fragment="$out/$name.yaml"
  { echo "quant:"; for kv in $keys; do echo "  ${kv%%=*}: ${kv#*=}"; done; } >"$fragment"
  for m in "${methods[@]}"; do
    for seed in "${seeds[@]}"; do
      run=$(run_dir "$name" "$m" "$seed")
      [ -f "$run/eval.json" ] && continue
      flags=(--method "${m%%-*}")
      [ "$m" = gptq-smooth ] && flags+=(--smooth "$smooth")
      [ "$m" != rtn ] && flags+=(--calib "$train" --calib-windows "$windows" --seed "$seed")
      echo "== $name $m seed $seed"
      rm -rf "$run"
      /usr/bin/time -f "%e s, %M KB peak" -o "$run.time" \
        "$qat" quantize --from "$teacher" --quant "$fragment" --out "$run" "${flags[@]}" >"$run.log"
      "$qat" eval --ckpt "$run" "${common[@]}" --json "$run/eval.json" >/dev/null
    done
  done
done

field() { sed -n "s/.*\"$2\": \([-0-9.e+]*\).*/\1/p" "$1"; }
{
  echo "| quantizer | method | ppl | EAR | top-1 | smoothness E‖dL/dx‖ | exp(H) | p>0.01 | quantize time, peak RSS |"
  echo "|---|---|---|---|---|---|---|---|---|"
  t="$out/teacher.json"
  printf "| fp32 teacher | - | %.3f | 1 | 1 | %.4f | %.3f | %.3f | - |\n" "$(field "$t" teacher_perplexity)" \
    "$(field "$t" teacher_smoothness)" "$(field "$t" teacher_candidates_exp_entropy)" \
    "$(field "$t" teacher_candidates_above)"
  for q in "${quantizers[@]}"; do
    read -r name _ <<<"$q"
    for m in "${methods[@]}"; do
      files=()
      for seed in "${seeds[@]}"; do files+=("$(run_dir "$name" "$m" "$seed")/eval.json"); done
      [ "$m" = rtn ] && files=("${files[0]}")
      # mean ± sample standard deviation of each column over the seeds' runs
      row=$(for key in perplexity ear top1_agreement smoothness candidates_exp_entropy candidates_above; do
        for f in "${files[@]}"; do field "$f" "$key"; done |
          awk -v n="${#files[@]}" '{ s += $1; q += $1 * $1 } END {
            m = s / n; if (n < 2) { printf "%.4f", m } else {
            v = (q - n * m * m) / (n - 1); printf "%.4f ± %.4f", m, (v > 0 ? sqrt(v) : 0) } }'
        printf " | "
      done)
      printf "| %s | %s | %s%s (n=%d) |\n" "$name" "$m" "$row" "$(cat "${files[0]%/eval.json}.time")" "${#files[@]}"
    done
  done
} | tee "$out/table.md"
