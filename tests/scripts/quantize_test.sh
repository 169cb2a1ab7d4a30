#!/usr/bin/env bash
# qat quantize through the CLI (ctest): a tiny teacher is quantized by GPTQ (int4 per group,
# asymmetric) and by the smoothness-preserving option (ternary); the PTQ checkpoint evaluates
# through `qat export` + the packed runtime at the perplexity of its fake-quantized evaluation
# (within 0.5%), exports to GGUF, and initialises `qat train`; bad flags and inputs get clear
# errors.
#   quantize_test.sh QAT_BINARY SOURCE_DIR
set -euo pipefail
qat=$1 src=$2
source "$src/tests/scripts/tiny_run.sh"
tiny_setup quantize "$qat"
fail() { echo "FAIL: $*"; exit 1; }
"$qat" train "$work/base.yaml" --set "run.dir=$work/teacher" --set train.steps=6 \
  --set quant.method=none > "$work/teacher.log" 2>&1 || { cat "$work/teacher.log"; exit 1; }

printf 'quant: {method: int, bits: 4, granularity: per_group, group_size: 32, symmetric: false}\n' > "$work/int4.yaml"
printf 'quant: {method: ternary, granularity: per_channel}\n' > "$work/ternary.yaml"
"$qat" quantize --from "$work/teacher" --quant "$work/int4.yaml" --calib "$work/data/train.bin" \
  --calib-windows 16 --out "$work/int4" > "$work/int4.log" || { cat "$work/int4.log"; exit 1; }
grep -q "quantize: layer 2/2" "$work/int4.log" || fail "no progress line"
grep -q "model.layers.1.mlp.down_proj.weight" "$work/int4.log" || fail "no per-layer table"
"$qat" quantize --from "$work/teacher" --quant "$work/ternary.yaml" --calib "$work/data/train.bin" \
  --calib-windows 16 --smooth 1 --out "$work/ternary" > "$work/ternary.log" || { cat "$work/ternary.log"; exit 1; }

ppl() { sed -n 's/.*"perplexity": \([-0-9.e+]*\).*/\1/p' "$1"; }
for run in int4 ternary; do
  "$qat" export --ckpt "$work/$run" --out "$work/$run.qat.safetensors" > /dev/null
  common=(--data "$work/data/val.bin" --seq-len 16 --windows 4 --max-new-tokens 0)
  "$qat" eval --ckpt "$work/$run" "${common[@]}" --json "$work/$run-ckpt.json" > /dev/null
  "$qat" eval --model "$work/$run.qat.safetensors" "${common[@]}" --speed-tokens 0 \
    --json "$work/$run-packed.json" > /dev/null
  a=$(ppl "$work/$run-ckpt.json") b=$(ppl "$work/$run-packed.json")
  awk -v a="$a" -v b="$b" 'BEGIN { d = (a - b) / a; exit !(d < 0.005 && d > -0.005) }' ||
    fail "$run: packed perplexity $b vs fake-quant $a"
done
"$qat" export --ckpt "$work/int4" --format gguf --out "$work/int4.gguf" > /dev/null
# QAT from the PTQ checkpoint, with its stored scales.
cat > "$work/qat.yaml" <<YAML
base: base.yaml
model: {init_from: $work/int4}
quant: {method: int, bits: 4, granularity: per_group, group_size: 32, symmetric: false, scale: fixed}
train: {steps: 2}
YAML
"$qat" train "$work/qat.yaml" --set "run.dir=$work/qat" > "$work/qat.log" 2>&1 || { cat "$work/qat.log"; exit 1; }
grep -q "initialised from $work/int4" "$work/qat.log" || fail "train did not start from the PTQ checkpoint"

# Bad input: each must fail with a message naming the problem.
expect_error() {  # expect_error NEEDLE ARGS...
  local needle=$1; shift
  local out
  if out=$("$qat" quantize "$@" 2>&1); then fail "quantize $* succeeded"; fi
  grep -q -- "$needle" <<<"$out" || fail "quantize $*: '$out' lacks '$needle'"
}
expect_error "needs calibration data" --from "$work/teacher" --quant "$work/int4.yaml" --out "$work/x"
expect_error "expected gptq or rtn" --from "$work/teacher" --quant "$work/int4.yaml" --out "$work/x" --method awq
expect_error "--smooth is an option of --method gptq" --from "$work/teacher" --quant "$work/int4.yaml" \
  --out "$work/x" --method rtn --smooth 1
expect_error "are required" --quant "$work/int4.yaml" --out "$work/x"
printf 'quant: {method: none}\n' > "$work/none.yaml"
expect_error "nothing to quantize" --from "$work/teacher" --quant "$work/none.yaml" --out "$work/x" --method rtn
printf 'quant: {method: int, bits: 4, granularity: per_group, group_size: 128}\n' > "$work/g128.yaml"
expect_error "group_size" --from "$work/teacher" --quant "$work/g128.yaml" --out "$work/x" --method rtn
expect_error "only quant" --from "$work/teacher" --quant "$work/int4.yaml" --out "$work/x" --method rtn \
  --set train.lr=1
expect_error "$work/nowhere" --from "$work/nowhere" --quant "$work/int4.yaml" --out "$work/x" --method rtn
expect_error "--seq-len" --from "$work/teacher" --quant "$work/int4.yaml" --out "$work/x" \
  --calib "$work/data/train.bin" --seq-len 4096
[ ! -e "$work/x" ] || fail "a failed quantize left $work/x behind"
echo "quantize_test: ok"
