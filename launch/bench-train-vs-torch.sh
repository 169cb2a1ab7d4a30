#!/usr/bin/env bash
# The training step, qat against PyTorch eager, side by side in one run (issues 16 and 17): for each
# variant, `qat bench train` (random tokens, a random full-precision teacher) and
# launch/bench_train_ref.py (the same model and step in PyTorch eager) on the recipe's shape, one
# process each, then the ratio of their steady-state tokens/s and their peak memory.
#   launch/bench-train-vs-torch.sh [RECIPE] [--python PY] [--variants "none grad_norm:exact ..."]
#                                  [--steps N] [--set key=value]...
#   RECIPE     default recipes/demo-ternary.yaml (on a GPU: recipes/bench-110m.yaml --set
#              train.device=cuda; train.dtype comes from the recipe)
#   --python   the Python with PyTorch (default /usr/bin/python3; the GPU image: /opt/torch/.venv/bin/python3)
#   --variants mode:estimator list (default "none grad_norm:exact grad_norm:finite_diff")
#   --repeat N run each pair N times, alternating qat and the reference, and report the medians
#              (default 3; a shared machine drifts by 10-20% between single runs)
#   --same-malloc  run the reference with the glibc malloc settings qat sets for itself
#              (trainer/cli/main.cc), so that the ratio compares the two steps' own work; by
#              default each runs as it does out of the box
# Environment: QAT_BIN (default build/trainer/qat). The reference takes the whole batch at once, so
# train.micro_batch_size is set to train.batch_size for qat too.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
qat=${QAT_BIN:-$here/${QAT_BUILD_DIR:-build}/trainer/qat}
recipe=$here/recipes/demo-ternary.yaml
python=/usr/bin/python3 variants="none grad_norm:exact grad_norm:finite_diff" steps=6 repeat=3
ref_env=()
sets=()
[ $# -gt 0 ] && [[ $1 != --* ]] && { recipe=$1; shift; }
while (($#)); do
  case $1 in
    --python) python=$2; shift 2 ;;
    --variants) variants=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --repeat) repeat=$2; shift 2 ;;
    --same-malloc) ref_env=(MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=1073741824); shift ;;
    --set) sets+=(--set "$2"); shift 2 ;;
    *) echo "bench-train-vs-torch: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
[ -x "$qat" ] || { echo "bench-train-vs-torch: $qat not found (launch/setup.sh)" >&2; exit 1; }
"$python" -c 'import torch' 2>/dev/null || { echo "bench-train-vs-torch: $python has no torch" >&2; exit 1; }

# The resolved recipe: the shape and the step's settings for the reference.
shown=$("$qat" recipe show "$recipe" --set train.micro_batch_size=1 "${sets[@]}") || exit 1
key() { awk -v s="$1" -v k="$2" '/^[a-z]/ { sec = $1; sub(":", "", sec) } sec == s && $1 == k ":" { gsub(/"/, "", $2); print $2; exit }' <<<"$shown"; }
batch=$(key train batch_size)
sets+=(--set "train.micro_batch_size=$batch")
device=$(key train device) dtype=$(key train dtype) threads=$(key train threads)
[ "$device" = auto ] && device=cpu
args=(--vocab "$(key model vocab_size)" --hidden "$(key model hidden_size)" --inter "$(key model intermediate_size)"
      --layers "$(key model num_layers)" --heads "$(key model num_heads)" --kv-heads "$(key model num_kv_heads)"
      --rope-theta "$(key model rope_theta)" --seq "$(key data seq_len)" --batch "$batch" --steps "$steps"
      --device "$device" --dtype "$dtype" --kd-weight "$(key distill kd_weight)" --fd-step "$(key smoothness fd_step)")
[ "${threads:-0}" -gt 0 ] && args+=(--threads "$threads")
[ "$device" = cpu ] && [ "${threads:-0}" -eq 0 ] && args+=(--threads "$(nproc)")
echo "recipe: $recipe ${sets[*]}"
echo "shape: ${args[*]}"
echo "reference malloc: ${ref_env[*]:-glibc defaults (qat sets its own: trainer/cli/main.cc)}"
printf "%-24s %14s %14s %8s %12s %12s\n" variant "qat tok/s" "torch tok/s" "qat/torch" "qat peak GB" "torch peak GB"
status=0
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2) }'; }
for v in $variants; do
  mode=${v%%:*} est=${v#*:}
  [ "$mode" = "$v" ] && est=exact
  qs="" ts="" ratios="" qm="" tm=""
  for ((i = 0; i < repeat; i++)); do
    out=$("$qat" bench train "$recipe" --synthetic --random-teacher --steps "$steps" "${sets[@]}" \
          --set smoothness.mode="$mode" --set smoothness.estimator="$est" --set smoothness.lambda=1 \
          --set smoothness.lambda_warmup_steps=0 2>&1) || { echo "$out" | tail -5 >&2; status=1; continue 2; }
    q=$(sed -n 's/.*steady state over [0-9]* steps: \([0-9.]*\) tokens\/s.*/\1/p' <<<"$out" | tail -1)
    qm=$(sed -n 's/.*peak \(resident\|GPU\)[a-z ]*memory[a-z0-9 ]*: \([0-9.]*\) GB.*/\2/p' <<<"$out" | tail -1)
    ref=$(env "${ref_env[@]}" "$python" "$here/launch/bench_train_ref.py" "${args[@]}" --mode "$mode" --estimator "$est" --lam 1 2>&1) ||
      { echo "$ref" | tail -5 >&2; status=1; continue 2; }
    t=$(sed -n 's/.*steps: \([0-9.]*\) tokens\/s.*/\1/p' <<<"$ref")
    tm=$(sed -n 's/.*peak memory \([0-9.]*\) GB.*/\1/p' <<<"$ref")
    qs+=" $q" ts+=" $t" ratios+=" $(awk -v a="$q" -v b="$t" 'BEGIN { print (b > 0 ? a / b : 0) }')"
  done
  printf "%-24s %14.1f %14.1f %7.2fx %12s %12s   (qat/torch per pair:%s)\n" "$mode${est:+ $est}" \
    "$(median <<<"$qs")" "$(median <<<"$ts")" "$(median <<<"$ratios")" "${qm:--}" "${tm:--}" \
    "$(for r in $ratios; do printf ' %.2f' "$r"; done)"
done
echo "$("$python" -c 'import torch; print("torch", torch.__version__)'); qat bench train and the reference each in a process of its own, alternating, $repeat pair(s) per variant; medians; qat/torch is the median of the pairs' ratios"
exit $status
