#!/usr/bin/env bash
# A weighted mixture through the CLI (ctest; issue 18): two corpora prepared from JSON Lines (one
# gzip-compressed), a recipe drawing them 0.7 / 0.3 by a glob and a path; the run logs the mixture
# and its realised proportions, and a run stopped at step 3 and resumed ends with the checkpoint of
# an uninterrupted one, byte for byte.
#   mixture_test.sh QAT_BINARY SOURCE_DIR
set -euo pipefail
qat=$1 src=$2
source "$src/tests/scripts/tiny_run.sh"
tiny_setup mixture "$qat"
for i in $(seq 1 80); do echo "{\"text\": \"the cat sat on the mat, line $i\"}"; done > "$work/a.jsonl"
for i in $(seq 1 80); do echo "{\"text\": \"SELECT x FROM t WHERE id = $i;\"}"; done | gzip > "$work/b.jsonl.gz"
"$qat" prep --out "$work/a" --shard-tokens 1000 "$work/a.jsonl" > "$work/prep-a.log"
"$qat" prep --out "$work/b" "$work/b.jsonl.gz" > "$work/prep-b.log"
ls "$work"/a/train-*.bin >/dev/null
cat > "$work/recipe.yaml" <<YAML
base: base.yaml
data: {train: [{path: "$work/a/train-*.bin", weight: 0.7}, {path: $work/b/train.bin, weight: 0.3}]}
run: {save_every: 3, keep_last: 5}
train: {steps: 6}
YAML
status=0
fail() { echo "FAIL: $*"; status=1; }
"$src/launch/qat-run" -n 2 -- qat train "$work/recipe.yaml" --set "run.dir=$work/whole" > "$work/whole.log" 2>&1 ||
  { cat "$work/whole.log"; fail "the mixture run failed"; }
grep -q "data: a mixture of $work/a/train-\*.bin (.* shard(s), [0-9]* tokens, weight 0.7); $work/b/train.bin (1 shard(s), [0-9]* tokens, weight 0.3)" "$work/whole.log" ||
  { grep "data:" "$work/whole.log"; fail "no mixture line"; }
grep -Eq "^step 6/6 .*\| mixture realised 0\.[0-9]{3} 0\.[0-9]{3}" "$work/whole.log" || fail "no realised proportions"
"$src/launch/qat-run" -n 2 -- qat train "$work/recipe.yaml" --set "run.dir=$work/resumed" --set run.stop_after=3 \
  > "$work/first.log" 2>&1 || { cat "$work/first.log"; fail "the first half failed"; }
"$src/launch/qat-run" -n 2 -- qat train "$work/recipe.yaml" --set "run.dir=$work/resumed" > "$work/second.log" 2>&1 ||
  { cat "$work/second.log"; fail "the resumed half failed"; }
grep -q "resuming from .*step-00000003" "$work/second.log" || fail "did not resume from step 3"
# The realised proportions after the resume count from step 0, as in the uninterrupted run.
[ "$(grep '^step 6/6' "$work/whole.log" | sed 's/.*mixture realised//')" = \
  "$(grep '^step 6/6' "$work/second.log" | sed 's/.*mixture realised//')" ] || fail "realised proportions differ after resume"
n=0
for f in "$work"/whole/checkpoints/step-00000006/*.safetensors; do
  n=$((n + 1))
  cmp -s "$f" "$work/resumed/checkpoints/step-00000006/$(basename "$f")" || fail "$(basename "$f") differs after resume"
done
((n > 0)) || fail "no final checkpoint"
[ $status -eq 0 ] && echo "mixture_test: mixture logged ($(grep '^step 6/6' "$work/whole.log" | sed 's/.*| mixture/mixture/')); resumed run byte-identical"
exit $status
