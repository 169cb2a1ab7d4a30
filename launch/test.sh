#!/usr/bin/env bash
# Sets up (if needed) and runs the whole test suite with ctest, the multi-rank tests under mpirun
# included. Extra arguments go to ctest (e.g. -R Recipe).
set -euo pipefail
cd "$(dirname "$0")/.."
launch/setup.sh
# mpirun refuses root without these (CI runs as root).
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
(
  cd "${QAT_BUILD_DIR:-build}"
  ctest --output-on-failure --timeout 900 -j"${QAT_TEST_JOBS:-2}" "$@"
)
# The fuzz harnesses of every loader of untrusted input, 10 s each under ASan and UBSan (the whole
# suite only: not when ctest was given a selection).
if (($# == 0)); then launch/fuzz.sh 10; fi
