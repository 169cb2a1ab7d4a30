#!/usr/bin/env bash
# Builds the libFuzzer harnesses of tests/fuzz (clang, ASan + UBSan, no libtorch) and runs each for
# SECONDS (default 60), two at a time. Fails on the first finding: a crash, a sanitizer report, a
# timeout, or an allocation over the memory limit (-rss_limit_mb, -malloc_limit_mb: an input file
# must not make a loader allocate gigabytes). Findings are kept in $QAT_FUZZ_DIR/findings.
#
#   launch/fuzz.sh [SECONDS]
# Environment: QAT_FUZZ_DIR (build and working corpora; default build-fuzz), QAT_FUZZ_JOBS (2).
# The committed seed corpora (tests/fuzz/corpus/NAME) are read, never written.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
seconds=${1:-60}
[[ "$seconds" =~ ^[1-9][0-9]*$ ]] || { echo "fuzz: SECONDS must be a positive integer, got '$seconds'" >&2; exit 2; }
dir=${QAT_FUZZ_DIR:-build-fuzz}
jobs=${QAT_FUZZ_JOBS:-2}
command -v clang++ >/dev/null || { echo "fuzz: clang++ not found (apt-get install clang)" >&2; exit 1; }

if [ ! -f "$dir/CMakeCache.txt" ]; then
  CC=clang CXX=clang++ cmake -S . -B "$dir" -DQAT_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
fi
cmake --build "$dir" -j"$(nproc)" >/dev/null
mkdir -p "$dir/findings"

names=(json safetensors gguf packed_model shard tokenizer_json recipe corpus)
run_one() {
  local name=$1 work=$dir/corpus/$1
  mkdir -p "$work"
  # New inputs go to the working corpus; the committed seeds are only read.
  if "$dir/tests/fuzz/fuzz_$name" "$work" "tests/fuzz/corpus/$name" -max_total_time="$seconds" \
       -rss_limit_mb=2048 -malloc_limit_mb=1024 -timeout=10 -max_len=65536 \
       -artifact_prefix="$dir/findings/$name-" -print_final_stats=1 >"$dir/fuzz_$name.log" 2>&1; then
    echo "fuzz: $name: $(grep -m1 -o 'stat::number_of_executed_units: [0-9]*' "$dir/fuzz_$name.log" | sed 's/.*: //') runs in $seconds s, no finding"
  else
    echo "fuzz: $name: FINDING (log: $dir/fuzz_$name.log):" >&2
    grep -E "ERROR|SUMMARY|runtime error|Test unit written" "$dir/fuzz_$name.log" | head -5 >&2
    return 1
  fi
}
failed=0
for ((i = 0; i < ${#names[@]}; i += jobs)); do
  pids=()
  for name in "${names[@]:i:jobs}"; do run_one "$name" & pids+=($!); done
  for p in "${pids[@]}"; do wait "$p" || failed=1; done
done
exit $failed
