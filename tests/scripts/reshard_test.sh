#!/usr/bin/env bash
# Resharding (ctest): a checkpoint written by 2 ranks (zero2) is resumed on 1 rank (ddp) and on 4
# ranks (fsdp); each continuation's step losses and final loss equal those of the 2-rank
# continuation within fp32 tolerance (relative 1e-5).
#   reshard_test.sh QAT_BINARY SOURCE_DIR
set -euo pipefail
qat=$1 src=$2
source "$src/tests/scripts/tiny_run.sh"
tiny_setup reshard "$qat"
cat > "$work/recipe.yaml" <<YAML
base: base.yaml
run: {save_every: 3, keep_last: 5}
quant: {method: ternary, scale: seq}
train: {steps: 6, sharding: zero2}
YAML

train() {  # train RANKS DIR [--set ...]
  local n=$1 dir=$2; shift 2
  "$src/launch/qat-run" -n "$n" -- qat train "$work/recipe.yaml" --set "run.dir=$work/$dir" "$@" \
    > "$work/$dir.log" 2>&1 || { cat "$work/$dir.log"; exit 1; }
}
train 2 two
for target in one:1:ddp four:4:fsdp; do
  IFS=: read -r dir n mode <<<"$target"
  mkdir -p "$work/$dir/checkpoints"
  cp -r "$work/two/checkpoints/step-00000003" "$work/$dir/checkpoints/"
  train "$n" "$dir" --set train.sharding=$mode
  grep -q "resuming from .*step-00000003 (step 3, written by 2 rank(s), zero2)" "$work/$dir.log" ||
    { echo "FAIL: $dir did not resume from the 2-rank checkpoint"; cat "$work/$dir.log"; exit 1; }
done

losses() { sed -n 's/^{"step": \([0-9]*\), "loss": \([-0-9.e]*\).*/\1 \2/p' "$work/$1/metrics.jsonl"; }
status=0
for dir in one four; do
  if ! paste <(losses two | tail -n 3) <(losses "$dir" | tail -n 3) | awk -v d="$dir" '
      { if ($1 != $3) { print "FAIL: " d ": step " $1 " vs " $3; bad = 1 }
        diff = $2 - $4; if (diff < 0) diff = -diff
        if (diff > 1e-5 * ($2 < 0 ? -$2 : $2)) { print "FAIL: " d ": step " $1 " loss " $4 " vs " $2; bad = 1 } }
      END { if (NR != 3) { print "FAIL: " d ": " NR " steps compared"; bad = 1 } exit bad }'; then
    status=1
  fi
done
[ $status -eq 0 ] && echo "reshard_test: 2-rank checkpoint continued on 1 (ddp) and 4 (fsdp) ranks with the 2-rank losses"
exit $status
