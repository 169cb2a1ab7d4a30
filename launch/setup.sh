#!/usr/bin/env bash
# Installs the Debian 12 packages qat needs (only those missing), then configures and builds into
# build/ (or $QAT_BUILD_DIR). Idempotent: a second run installs nothing and rebuilds nothing.
#   QAT_JOBS=N         parallel compile jobs (default: all cores)
#   QAT_CMAKE_ARGS=... extra CMake arguments, e.g. -DQAT_CUDA=OFF or
#                      -DCMAKE_PREFIX_PATH=/path/to/torch/share/cmake for libtorch 2.x
set -euo pipefail
cd "$(dirname "$0")/.."

# libopenblas0-openmp: Debian's libtorch calls the system BLAS, which is the slow reference one
# unless an optimised one is installed (about 10x on the demo's matmuls). unicode-data and bzip2:
# the Unicode conformance test of our NFC normalizer (tests/tokenizer_test.cc). clang and
# libclang-rt-14-dev (libFuzzer, ASan, UBSan): the fuzz harnesses of launch/fuzz.sh. zlib1g-dev,
# libzstd-dev: qat prep reads .gz and .zst corpora (zstd: the tests compress with it). iproute2:
# tests/scripts/multihost_test.sh (two network namespaces as two hosts). python3-torch: the PyTorch
# eager reference of the training step (launch/bench_train_ref.py), which launch/gpu-check.sh
# --dry-run runs in ctest; Python serves comparisons only.
packages=(build-essential cmake ccache libtorch-dev libopenblas0-openmp libopenmpi-dev openmpi-bin
          libyaml-cpp-dev libabsl-dev libgtest-dev libsentencepiece-dev fortunes unicode-data bzip2
          clang libclang-rt-14-dev zlib1g-dev libzstd-dev zstd iproute2 python3-torch)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo=()
  [ "$(id -u)" -ne 0 ] && sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

build_dir=${QAT_BUILD_DIR:-build}
# shellcheck disable=SC2086
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release ${QAT_CMAKE_ARGS:-} >/dev/null
cmake --build "$build_dir" -j"${QAT_JOBS:-$(nproc)}"
echo "setup: built $build_dir/trainer/qat"
