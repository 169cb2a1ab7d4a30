#!/usr/bin/env bash
# Prepares, on a Debian 12 CPU machine with network, what the GPU machine's build may lack (issue
# 16): the Debian packages of the build's dependencies, with their library dependencies, as .deb
# files in a folder git ignores. launch/gpu-check.sh unpacks them there into a prefix when its probe
# finds something missing (the GPU image has no apt and no network).
#   launch/gpu-prepare.sh [--list] [DIR]   DIR: default .deps/gpu (the files land in DIR/debs)
#   --list   resolve only: print the packages and their total size from apt's index, download
#            nothing (launch/gpu-check.sh --dry-run uses it where nothing was prepared)
# Prints the folder's size; it must stay within 64 MiB, the most a device run carries.
#
# The set is apt's own resolution for a machine with nothing installed (no recommends), minus what
# every image that can run nvcc and PyTorch has: packages of priority required or important
# (libc, coreutils, ...), the compiler toolchain nvcc drives (gcc, g++, binutils, libc6-dev,
# libstdc++), Perl, and the autotools, documentation and ssh that a one-node build never runs.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
list_only=0
[ "${1:-}" = --list ] && { list_only=1; shift; }
dir=${1:-$here/.deps/gpu}
limit_mib=64
# What the build needs (README's apt-get line, CMakeLists.txt): Abseil, yaml-cpp, GoogleTest,
# OpenMPI, zlib and zstd (data/documents.cc), pkg-config (finds zstd), cmake and make.
wanted=(libabsl-dev libyaml-cpp-dev libgtest-dev libopenmpi-dev openmpi-bin zlib1g-dev libzstd-dev
        pkgconf cmake make)
# Assumed present on any CUDA + PyTorch image (see above); an extended regex over package names.
assumed='^(gcc|g\+\+|cpp|gfortran)(-[0-9]+)?$|^binutils|^libgcc-[0-9]+-dev$|^libgcc-s1$|^lib(a|l|t|ub|hwa)san[0-9]+$|^libstdc\+\+|^libc6(-dev)?$|^libc-dev-bin$|^linux-libc-dev$|^libcrypt-dev$|^libnsl-dev$|^libtirpc-dev$|^rpcsvc-proto$|^(perl|perl-modules|libperl)[-0-9.]*|^(automake|autoconf|autotools-dev|libtool|m4)$|^libjs-|^openssh-client$|^libitm|^libquadmath|^libcc1|^libisl|^libmpc[0-9]|^libmpfr|^libgomp|^libatomic|^libctf|^libgprofng|^libbinutils|^libjansson|^libsframe|^cpp-[0-9]+$|^gcc-[0-9]+-base$|^libgfortran-[0-9]+-dev$|^libssl3$|^libx11|^libxau|^libxdmcp|^libxcb|^x11-common$'

command -v apt-get >/dev/null || { echo "gpu-prepare: needs Debian's apt-get" >&2; exit 1; }
. /etc/os-release 2>/dev/null || true
[ "${VERSION_CODENAME:-}" = bookworm ] ||
  echo "gpu-prepare: warning: this is ${PRETTY_NAME:-not Debian 12}; the packages are meant to be Debian 12's" >&2
((list_only)) || mkdir -p "$dir/debs"
empty=$(mktemp)
trap 'rm -f "$empty"' EXIT
# apt's resolution from an empty package database: the whole dependency closure, first
# alternatives, as a fresh machine would install it.
resolve() {
  apt-get install -s -qq --no-install-recommends -o Dir::State::status="$empty" "${wanted[@]}" \
    2>/dev/null | sed -n 's/^Inst \([^ ]*\) .*/\1/p' | sort -u
}
mapfile -t closure < <(resolve)
if ((${#closure[@]} == 0)); then  # no package lists yet (a fresh container): fetch them once
  sudo=(); [ "$(id -u)" -ne 0 ] && sudo=(sudo -n)
  "${sudo[@]}" apt-get update -qq >/dev/null 2>&1 && mapfile -t closure < <(resolve)
fi
((${#closure[@]})) || { echo "gpu-prepare: apt could not resolve ${wanted[*]} (apt-get update?)" >&2; exit 1; }
# Priorities of the whole closure in one apt-cache call: "package priority" lines.
declare -A prio=()
while read -r p pr; do prio[$p]=$pr; done < <(apt-cache show --no-all-versions "${closure[@]}" 2>/dev/null |
  awk '/^Package: / { p = $2 } /^Priority: / { print p, $2 }')
keep=()
for p in "${closure[@]}"; do
  case ${prio[$p]:-} in required | important) continue ;; esac
  [[ $p =~ $assumed ]] && continue
  keep+=("$p")
done
if ((list_only)); then
  bytes=$(apt-cache show --no-all-versions "${keep[@]}" 2>/dev/null | awk '/^Size: / { s += $2 } END { print s + 0 }')
  printf '%s\n' "${keep[@]}"
  echo "gpu-prepare: ${#keep[@]} packages, $(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1048576 }') MiB to download (limit $limit_mib MiB)"
  awk -v b="$bytes" -v l="$limit_mib" 'BEGIN { exit !(b <= l * 1048576) }'
  exit
fi
printf '%s\n' "${keep[@]}" >"$dir/packages.txt"
# Stale files of an earlier list go; what is there already is not downloaded again.
for f in "$dir"/debs/*.deb; do
  [ -e "$f" ] || continue
  name=$(dpkg-deb -f "$f" Package)
  grep -qx "$name" "$dir/packages.txt" || rm -f "$f"
done
missing=()
for p in "${keep[@]}"; do compgen -G "$dir/debs/${p}_*.deb" >/dev/null || missing+=("$p"); done
if ((${#missing[@]})); then
  (cd "$dir/debs" && apt-get download -qq "${missing[@]}") ||
    { echo "gpu-prepare: apt-get download failed (network? apt-get update?)" >&2; exit 1; }
fi
n=$(ls "$dir"/debs/*.deb | wc -l)
bytes=$(du -cb "$dir"/debs/*.deb "$dir/packages.txt" | tail -1 | cut -f1)
mib=$(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1048576 }')
echo "gpu-prepare: $n packages (of ${#closure[@]} in the closure of ${wanted[*]}) in $dir/debs: $mib MiB"
if awk -v b="$bytes" -v l="$limit_mib" 'BEGIN { exit !(b > l * 1048576) }'; then
  echo "gpu-prepare: $mib MiB is over the $limit_mib MiB a device run carries" >&2
  exit 1
fi
echo "gpu-prepare: carry it with the working tree, e.g. run(command=\"launch/gpu-check.sh\", carry=[\"${dir#"$here"/}\"])"
