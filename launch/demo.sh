#!/usr/bin/env bash
# The embedded default end to end: setup (if needed), the fortunes corpus as token shards, a
# full-precision teacher, a ternary student distilled from it (both with mpirun), packed export,
# evaluation of all four (libtorch checkpoints and packed exports on qat kernels), and a table.
#   --fresh          start over (removes runs/demo); otherwise finished stages are reused
#   QAT_DEMO_RANKS=N ranks for training (default 2: data-parallel, ddp)
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${1:-}" = "--fresh" ] && rm -rf runs/demo
start=$(date +%s)

launch/setup.sh
qat=${QAT_BUILD_DIR:-build}/trainer/qat
ranks=${QAT_DEMO_RANKS:-2}
export QAT_BIN=$qat  # launch/qat-run wraps mpirun (root, oversubscription, threads per rank)
out=runs/demo
mkdir -p "$out"

echo "== 1/5 corpus: Debian fortunes -> token shards"
if [ ! -f $out/data/val.bin ]; then
  mapfile -t files < <(find /usr/share/games/fortunes -maxdepth 1 -type f ! -name '*.dat' | sort)
  "$qat" prep --fortune --val-fraction 0.05 --out $out/data "${files[@]}"
fi

echo "== 2/5 teacher: full precision, cross entropy (mpirun -np $ranks)"
launch/qat-run -n "$ranks" -- qat train recipes/demo-teacher.yaml
echo "== 3/5 student: ternary QAT distilled from the teacher (mpirun -np $ranks)"
launch/qat-run -n "$ranks" -- qat train recipes/demo-ternary.yaml

echo "== 4/5 export"
"$qat" export --ckpt $out/teacher --out $out/teacher.qat.safetensors
"$qat" export --ckpt $out/student --out $out/student.qat.safetensors

echo "== 5/5 evaluate (the same 64 validation windows of 128 tokens each)"
common=(--data $out/data/val.bin --seq-len 128 --windows 64 --prompt "The " --max-new-tokens 120
        --temperature 0.7 --top-k 40 --seed 7)
"$qat" eval --ckpt $out/teacher "${common[@]}" --json $out/eval-teacher-ckpt.json
"$qat" eval --ckpt $out/student "${common[@]}" --json $out/eval-student-ckpt.json
"$qat" eval --model $out/teacher.qat.safetensors "${common[@]}" --json $out/eval-teacher-fp32.json
"$qat" eval --model $out/student.qat.safetensors "${common[@]}" --json $out/eval-student-packed.json

field() { sed -n "s/.*\"$2\": \([-0-9.e+]*\).*/\1/p" "$out/eval-$1.json"; }
sample() { sed -n 's/.*"sample": "\(.*\)"}$/\1/p' "$out/eval-$1.json" | sed 's/\\u000a/ \/ /g; s/\\u00[0-9a-f][0-9a-f]/?/g; s/\\"/"/g' | cut -c1-150; }
t_ppl=$(field teacher-ckpt perplexity); s_ppl=$(field student-ckpt perplexity)
p_ppl=$(field student-packed perplexity); f_ppl=$(field teacher-fp32 perplexity)
p_tps=$(field student-packed decode_tokens_per_s); f_tps=$(field teacher-fp32 decode_tokens_per_s)
t_size=$(stat -c %s $out/teacher.qat.safetensors); p_size=$(stat -c %s $out/student.qat.safetensors)
echo
echo "================ qat demo: ternary QAT on Debian fortunes ================"
printf "%-44s %12s\n" "model" "perplexity"
printf "%-44s %12.3f\n" "teacher, fp32 (libtorch checkpoint)" "$t_ppl"
printf "%-44s %12.3f\n" "teacher, fp32 (qat runtime, dense kernels)" "$f_ppl"
printf "%-44s %12.3f\n" "student, ternary fake-quant (libtorch)" "$s_ppl"
printf "%-44s %12.3f\n" "student, packed 2-bit (qat ternary kernels)" "$p_ppl"
awk -v a="$p_ppl" -v b="$s_ppl" 'BEGIN { printf "packed vs fake-quant perplexity: %+.4f%%\n", 100 * (a - b) / b }'
echo
printf "%-44s %12s %12s\n" "decode speed (qat runtime, $(nproc) threads)" "tokens/s" "file MB"
printf "%-44s %12.1f %12.2f\n" "teacher, fp32 dense" "$f_tps" "$(awk -v s="$t_size" 'BEGIN{print s/1e6}')"
printf "%-44s %12.1f %12.2f\n" "student, packed ternary" "$p_tps" "$(awk -v s="$p_size" 'BEGIN{print s/1e6}')"
awk -v a="$p_tps" -v b="$f_tps" 'BEGIN { printf "packed / fp32 decode speed: %.2fx\n", a / b }'
echo
echo "teacher sample: $(sample teacher-fp32)"
echo "student sample: $(sample student-packed)"
echo "==========================================================================="
echo "demo took $(( $(date +%s) - start )) s; runs, exports and eval JSON are in $out/"
