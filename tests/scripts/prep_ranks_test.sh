#!/usr/bin/env bash
# `mpirun -np N qat prep` (ctest; issue 18): the shards are byte-identical for 1 or 2 ranks and 1
# or 2 threads per rank, with batches small enough that every rank tokenizes several; with bad
# records counted (--skip-bad) or stopping prep, the outcome and the message are those of one
# process; no part file is left behind.
#   prep_ranks_test.sh QAT_BINARY SOURCE_DIR
set -euo pipefail
qat=$1
work=$(mktemp -d "${TMPDIR:-/tmp}/qat_prep_ranks.XXXXXX")
trap 'rm -rf "$work"' EXIT
status=0
fail() { echo "FAIL: $*"; status=1; }
mpi() { mpirun --oversubscribe --bind-to none -np "$@"; }

# ~0.9 MB of JSON Lines in two files (one gzip-compressed), documents of 1 to 80 words; with
# --batch-mb 0.02 that is ~45 batches, taken by the ranks in turn.
for f in a b; do
  awk -v f="$f" 'BEGIN { n = split("the cat sat on a mat and then it ran far away from home while singing über café 猫", w, " ")
    for (i = 1; i <= 2500; i++) { k = (i * 37 + length(f)) % 80 + 1; line = ""
      for (j = 0; j < k; j++) line = line w[(i * 7 + j * 13) % n + 1] " "
      printf "{\"text\": \"%s %d: %s\", \"id\": %d}\n", f, i, line, i } }' > "$work/$f.jsonl"
done
gzip "$work/b.jsonl"

for np in 1 2; do for t in 1 2; do
  mpi "$np" "$qat" prep --out "$work/s-$np-$t" --threads "$t" --batch-mb 0.02 --shard-tokens 60000 \
    "$work/a.jsonl" "$work/b.jsonl.gz" > "$work/s-$np-$t.log" 2>&1 || { cat "$work/s-$np-$t.log"; fail "prep on $np rank(s) x $t thread(s)"; }
done; done
grep -q "2 ranks x 2 thread(s)" "$work/s-2-2.log" || { cat "$work/s-2-2.log"; fail "no ranks x threads line"; }
ls "$work"/s-1-1/train-0000[0-9].bin > /dev/null || fail "no numbered shards"
for d in s-1-2 s-2-1 s-2-2; do
  [ "$(cd "$work/s-1-1" && ls)" = "$(cd "$work/$d" && ls)" ] || fail "$d: other shard files than s-1-1"
  for f in "$work"/s-1-1/*.bin; do
    cmp -s "$f" "$work/$d/$(basename "$f")" || fail "$d/$(basename "$f") differs from 1 rank x 1 thread"
  done
  [ -z "$(ls -A "$work/$d" | grep '^\.prep-part')" ] || fail "$d: part files left"
done

# Bad records in the middle (a batch of rank 1's) and at the end.
{ head -1200 "$work/a.jsonl"; echo '{"text": 5}'; echo 'not json'; sed -n '1201,$p' "$work/a.jsonl"; echo '{"txt": "x"}'; } > "$work/bad.jsonl"
for np in 1 2; do
  mpi "$np" "$qat" prep --out "$work/k-$np" --skip-bad --batch-mb 0.02 "$work/bad.jsonl" > "$work/k-$np.log" 2>&1 ||
    { cat "$work/k-$np.log"; fail "--skip-bad on $np rank(s)"; }
  grep -q "skipped 3 bad record(s) (1 expected a string, 1 malformed JSON, 1 no key); the first: .*bad.jsonl:1201 (byte offset [0-9]*)" "$work/k-$np.log" ||
    { cat "$work/k-$np.log"; fail "$np rank(s): skipped records not counted"; }
  if mpi "$np" "$qat" prep --out "$work/e-$np" --batch-mb 0.02 "$work/bad.jsonl" > "$work/e-$np.log" 2>&1; then
    fail "$np rank(s): a bad record did not stop prep"
  fi
  grep -q "bad.jsonl:1201 (byte offset [0-9]*): \"text\" is a number, expected a string" "$work/e-$np.log" ||
    { cat "$work/e-$np.log"; fail "$np rank(s): no error naming line 1201"; }
  [ "$(grep -c 'qat prep: error' "$work/e-$np.log")" = 1 ] || fail "$np rank(s): the error is not printed once"
  [ -z "$(ls -A "$work/e-$np")" ] || fail "$np rank(s): files left after the error: $(ls -A "$work/e-$np")"
done
for f in "$work"/k-1/*.bin; do cmp -s "$f" "$work/k-2/$(basename "$f")" || fail "--skip-bad: $(basename "$f") differs across ranks"; done
[ "$(grep 'byte offset' "$work/e-1.log" | sed 's/.*error: //')" = "$(grep 'byte offset' "$work/e-2.log" | sed 's/.*error: //')" ] ||
  fail "the error differs across ranks"
exit $status
