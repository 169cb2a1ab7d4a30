#!/usr/bin/env bash
# Crash recovery (ctest): a 2-rank training job whose rank is killed with SIGKILL, once at the end
# of a step and once in the middle of writing a checkpoint, is rerun by `launch/qat-run
# --restarts` from its newest valid checkpoint; its final weights and optimizer state equal, byte
# for byte, those of an uninterrupted run.
#   restart_test.sh QAT_BINARY SOURCE_DIR
set -euo pipefail
qat=$1 src=$2
source "$src/tests/scripts/tiny_run.sh"
tiny_setup restart "$qat"
cat > "$work/recipe.yaml" <<YAML
base: base.yaml
run: {save_every: 2, keep_last: 5}
quant: {method: ternary}
train: {steps: 8, sharding: zero2}
YAML

run() {  # run DIR [qat-run options...]
  local dir=$1; shift
  "$src/launch/qat-run" -n 2 --done "$work/$dir/DONE" "$@" -- qat train "$work/recipe.yaml" --set "run.dir=$work/$dir" \
    > "$work/$dir.log" 2>&1 || { cat "$work/$dir.log"; return 1; }
}
run reference
QAT_FAULT_KILL=step:5:1 QAT_FAULT_ONCE=$work/once_step \
  run killed_in_step --restarts 2 -x QAT_FAULT_KILL -x QAT_FAULT_ONCE
QAT_FAULT_KILL=checkpoint:6:0 QAT_FAULT_ONCE=$work/once_ckpt \
  run killed_in_checkpoint --restarts 2 -x QAT_FAULT_KILL -x QAT_FAULT_ONCE

status=0
for dir in killed_in_step killed_in_checkpoint; do
  grep -q "fault injection" "$work/$dir.log" || { echo "FAIL: $dir: no fault was injected"; status=1; }
  grep -q "restart 1 of 2" "$work/$dir.log" || { echo "FAIL: $dir: qat-run did not restart"; status=1; }
  grep -q "resuming from .*step-00000004" "$work/$dir.log" ||
    { echo "FAIL: $dir: did not resume from step 4"; cat "$work/$dir.log"; status=1; }
  [ -f "$work/$dir/DONE" ] || { echo "FAIL: $dir: no DONE marker"; status=1; }
  for f in "$work"/reference/checkpoints/step-00000008/*.safetensors; do
    if ! cmp -s "$f" "$work/$dir/checkpoints/step-00000008/$(basename "$f")"; then
      echo "FAIL: $dir: $(basename "$f") differs from the uninterrupted run"; status=1
    fi
  done
  ls "$work/$dir/checkpoints" | grep -q '\.tmp' && { echo "FAIL: $dir: a .tmp checkpoint was left"; status=1; }
done
[ $status -eq 0 ] && echo "restart_test: both interrupted runs match the uninterrupted one byte for byte"
exit $status
