#!/usr/bin/env bash
# Smoke test of launch/science.sh (issue 14): every part on a tiny model in a temporary
# directory, then the report's sections, one verdict line per claim computed from replicates,
# the plots (or the line saying gnuplot is missing), and a second run that finds everything done.
#   tests/scripts/science_smoke_test.sh QAT_BINARY SOURCE_DIR
set -euo pipefail
qat=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
src=$(cd "$2" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
doc=$tmp/science.md
fail() { echo "science_smoke_test: FAIL: $*" >&2; exit 1; }

start=$(date +%s)
QAT_BIN=$qat "$src/launch/science.sh" --smoke --out "$tmp/run" --doc "$doc" >"$tmp/first.log" 2>&1 ||
  { tail -40 "$tmp/first.log" >&2; fail "launch/science.sh --smoke exited non-zero"; }
echo "first run: $(( $(date +%s) - start )) s"
[ -s "$doc" ] || fail "no report at $doc"

for s in "## Setup" "## What is ours and what is the papers'" "## Verdict rule" "## Teacher" \
         "## C1 " "## C2 " "## PTQ: " "## C3 " "## C3b " "## Estimator cost" "## C4 " "## Summary"; do
  grep -q "^$s" "$doc" || fail "section '$s' missing"
done
grep -q "stand-in" "$doc" || fail "the report does not call our effective candidates a stand-in"
grep -q "trainer/objective.h" "$doc" && grep -q "ptq/ptq.h" "$doc" || fail "our definitions are not pointed to"

for s in "### C1 at every block input" "### The students' smoothness at every block input"; do
  grep -q "^$s" "$doc" || fail "section '$s' missing (the proxy per block input)"
done
for id in C1 C1-depth C2 C3 C3b C4 C5; do
  line=$(grep -E "^\*\*Verdict $id \(" "$doc" || true)
  [ -n "$line" ] || fail "no verdict line for $id"
  echo "$line" | grep -Eq "^\*\*Verdict $id \(.*\): (reproduced|not reproduced|inconclusive)\*\* — " ||
    fail "malformed verdict line: $line"
  echo "$line" | grep -q "(n=2)" || fail "verdict $id is not computed from 2 replicates: $line"
  grep -qE "^- \*\*Verdict $id \(" "$doc" || fail "verdict $id missing from the summary"
done
# tables carry numbers (mean ± sd)
[ "$(grep -c '^| .* ± ' "$doc")" -ge 20 ] || fail "too few table rows with mean ± sd"

if grep -q "gnuplot is not installed" "$doc"; then
  echo "plots skipped: gnuplot is not installed here (the report says so)"
else
  n=0
  while read -r png; do
    f=$(dirname "$doc")/$png
    [ -f "$f" ] || fail "plot $png is referenced but missing"
    [ "$(head -c 4 "$f" | od -An -tx1 | tr -d ' \n')" = 89504e47 ] || fail "$png is not a PNG"
    n=$((n + 1))
  done < <(sed -n 's/^!\[[^]]*\](\(.*\.png\))$/\1/p' "$doc")
  [ "$n" -ge 5 ] || fail "expected at least 5 plots, found $n"
  echo "$n plots"
fi

# Resumable: a second run finds every part finished and only rewrites the report.
start=$(date +%s)
QAT_BIN=$qat "$src/launch/science.sh" --smoke --out "$tmp/run" --doc "$doc" >"$tmp/second.log" 2>&1 ||
  { tail -40 "$tmp/second.log" >&2; fail "the second run exited non-zero"; }
grep -q "corpus: done" "$tmp/second.log" || fail "second run: corpus not reused"
grep -q "teacher: done" "$tmp/second.log" || fail "second run: teacher not reused"
grep -q "qat: 0 student(s)" "$tmp/second.log" || fail "second run: students retrained"
! grep -q "^== " "$tmp/run/logs/ptq-sweep.log" || fail "second run: PTQ models quantized again"
echo "second run: $(( $(date +%s) - start )) s"
echo "science_smoke_test: ok"
