#!/usr/bin/env bash
# The seeds' claims, measured (issue 14): a science teacher on Debian-packaged English prose, the
# PTQ sweep, QAT at matched steps with and without the smoothness regularizers over lambdas and
# seeds, effective candidates along sampled continuations, and docs/science.md with tables, gnuplot
# PNGs and one verdict per claim, computed from the numbers by the rule stated in the report.
#
#   launch/science.sh [--quick | --smoke] [--out DIR] [--doc FILE] [--jobs N] [--ranks N]
#                     [--corpus LIST] [--lambdas "L1 L2 L3"] [--seeds "S1 S2 S3"]
#                     [--no-install] [--fresh] [PART...]
#
#   PART        corpus teacher ptq qat generation report (default: all, in that order). Each part
#               skips what it finds finished (by its output files), so a killed run continues
#               where it stopped: training resumes from its newest checkpoint.
#   --quick     a much smaller teacher and students, fewer windows: about 11 minutes on 2 cores
#               (default output runs/science-quick)
#   --smoke     a tiny model on a 400 kB corpus, one lambda, two seeds: a minute or two; for the
#               test (tests/scripts/science_smoke_test.sh); implies --no-install and the fortunes
#               corpus (default output runs/science-smoke)
#   --out DIR   where every run, evaluation and plot goes (default runs/science)
#   --doc FILE  the report (default docs/science.md; --quick/--smoke: DIR/science.md)
#   --jobs N    independent runs at a time (QAT students, evaluations; default: the cores), each
#               with cores/N threads
#   --ranks N   ranks of the teacher's training (default: min(cores, 2))
#   --corpus L  comma list of austen, kjv, fortunes (default austen,kjv; smoke: fortunes)
#   --lambdas   smoothness.lambda values of grad_norm and grad_match (default "0.1 1 10")
#   --seeds     run.seed values of every QAT variant (default "1 2 3")
#   --no-install  never call apt-get (missing spm_train: byte tokenizer; gnuplot: no plots;
#               the austen/kjv packages: fortunes)
#   --fresh     delete DIR first
# Environment: QAT_BIN (the qat binary; default $QAT_BUILD_DIR/trainer/qat, build/trainer/qat).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
started=$(date +%s)

mode=full out="" doc="" jobs="" ranks="" corpus_sel="" lambdas="" seeds="" install=1 fresh=0
install_set=0
sel=()
all_parts=(corpus teacher ptq qat generation report)
while (($#)); do
  case "$1" in
    --quick) mode=quick; shift ;;
    --smoke) mode=smoke; shift ;;
    --out) out=$2; shift 2 ;;
    --doc) doc=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --ranks) ranks=$2; shift 2 ;;
    --corpus) corpus_sel=$2; shift 2 ;;
    --lambdas) lambdas=$2; shift 2 ;;
    --seeds) seeds=$2; shift 2 ;;
    --no-install) install=0; install_set=1; shift ;;
    --install) install=1; install_set=1; shift ;;
    --fresh) fresh=1; shift ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    corpus|teacher|ptq|qat|generation|report) sel+=("$1"); shift ;;
    *) echo "science: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
((${#sel[@]})) || sel=("${all_parts[@]}")
want() { local p; for p in "${sel[@]}"; do [ "$p" = "$1" ] && return 0; done; return 1; }

# ---------------------------------------------------------------- modes
# T: --set overrides of the teacher (and, through base:, of every student); S: of the students.
T=() S=()
case $mode in
  full)
    out=${out:-runs/science}; vocab=4096; corpus_sel=${corpus_sel:-austen,kjv}; max_bytes=0
    lambdas=${lambdas:-"0.1 1 10"}; seeds=${seeds:-"1 2 3"}
    nparts=4; part_windows=32; qat_windows=64; ptq_calib=128
    gen_prompts=16; gen_tokens=96; gen_seq=48
    ;;
  quick)
    # 800 teacher steps, 3 seeds x 40 student steps and 4 evaluation parts took 30.5 min on 2
    # cores; these settings keep every part and claim at n = 2 (the least a verdict takes): 11 min
    # from --fresh on the same machine (with qat's malloc settings, trainer/cli/main.cc).
    out=${out:-runs/science-quick}; vocab=2048; corpus_sel=${corpus_sel:-austen,kjv}; max_bytes=0
    lambdas=${lambdas:-"0.1 1 10"}; seeds=${seeds:-"1 2"}
    T=(model.hidden_size=128 model.intermediate_size=384 model.num_layers=2 model.num_heads=2
       model.num_kv_heads=1 model.max_seq_len=128 data.seq_len=128 train.steps=500
       train.warmup_steps=30 eval.every=100 eval.max_windows=16 run.save_every=100 run.log_every=20)
    S=(train.steps=30 train.batch_size=8 train.micro_batch_size=8 train.warmup_steps=5
       smoothness.lambda_warmup_steps=5 eval.max_windows=8 run.log_every=5)
    nparts=2; part_windows=16; qat_windows=32; ptq_calib=16
    gen_prompts=8; gen_tokens=48; gen_seq=24
    ;;
  smoke)
    out=${out:-runs/science-smoke}; vocab=512; corpus_sel=${corpus_sel:-fortunes}; max_bytes=400000
    lambdas=${lambdas:-"1"}; seeds=${seeds:-"1 2"}
    ((install_set)) || install=0
    T=(model.hidden_size=128 model.intermediate_size=256 model.num_layers=2 model.num_heads=2
       model.num_kv_heads=1 model.max_seq_len=128 data.seq_len=64 train.steps=30 train.batch_size=8
       train.micro_batch_size=8 train.warmup_steps=5 eval.every=10 eval.max_windows=4
       run.save_every=0 run.log_every=5)
    S=(train.steps=4 train.batch_size=4 train.micro_batch_size=4 train.warmup_steps=1
       smoothness.lambda_warmup_steps=1 eval.max_windows=2 run.log_every=1)
    nparts=2; part_windows=4; qat_windows=8; ptq_calib=4
    gen_prompts=2; gen_tokens=16; gen_seq=8
    ;;
esac
# the models of the generation part: QAT variants (seed: the first; LMID: the middle lambda), PTQ runs
gen_qat="none grad_norm-exact-LMID grad_match-exact-LMID grad_match-finite_diff-LMID"
gen_ptq="int8-ch-sym-rtn int4-g128-asym-gptq int3-g128-asym-gptq int2-g64-asym-gptq ternary-g64-gptq binary-ch-gptq"
# the PTQ quantizers evaluated on the validation parts (error bars); empty: all
part_quants=""
# the quantizers of C1 (smoothness vs bits), also its per-block table's rows
c1_quants="int8-ch-sym int4-g128-asym int3-g128-asym int2-g64-asym ternary-g64 binary-ch"
[ "$mode" = smoke ] && gen_qat="none grad_match-exact-LMID" gen_ptq="int4-g128-asym-gptq ternary-g64-gptq" \
  part_quants="int8-ch-sym int2-g64-sym int2-g64-asym ternary-g64 binary-ch"
case $out in /*) ;; *) out=$here/$out ;; esac
out=${out%/}
if [ -z "$doc" ]; then
  if [ "$mode" = full ]; then doc=$here/docs/science.md; else doc=$out/science.md; fi
fi
case $doc in /*) ;; *) doc=$PWD/$doc ;; esac
if ((fresh)); then
  case $out in "/"|"$here"|"$here/runs"|"${HOME:-/}") echo "science: refusing to delete $out" >&2; exit 2 ;; esac
  rm -rf "$out"
fi
mkdir -p "$out" "$(dirname "$doc")"

cores=$(nproc)
jobs=${jobs:-$cores}
((jobs >= 1)) || jobs=1
tpj=$(( cores / jobs > 0 ? cores / jobs : 1 ))  # threads per job
ranks=${ranks:-$(( cores >= 2 ? 2 : 1 ))}
read -r -a lambda_list <<<"$lambdas"
read -r -a seed_list <<<"$seeds"
((gen_prompts >= 2)) || gen_prompts=2   # qat prep needs two documents for its two shards

if [ -n "${QAT_BIN:-}" ]; then
  qat=$(cd "$(dirname "$QAT_BIN")" && pwd)/$(basename "$QAT_BIN")
else
  build=${QAT_BUILD_DIR:-build}
  case $build in /*) ;; *) build=$here/$build ;; esac
  qat=$build/trainer/qat
  [ -x "$qat" ] || launch/setup.sh
fi
[ -x "$qat" ] || { echo "science: no qat binary at $qat" >&2; exit 1; }
export QAT_BIN=$qat
# launch/ptq-sweep.sh runs $QAT_BUILD_DIR/trainer/qat
export QAT_BUILD_DIR=$(dirname "$(dirname "$qat")")

log() { echo "science[$mode]: $*"; }
timing() { echo -e "$1\t$2" >>"$out/timings.tsv"; }

# apt-get install, only when allowed and possible (root, or sudo without a password)
apt_install() {
  ((install)) || return 1
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then sudo -n true 2>/dev/null || return 1; sudo=(sudo -n); fi
  log "installing $*"
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "$@" \
    >/dev/null 2>&1 || { "${sudo[@]}" apt-get update -qq >/dev/null 2>&1 &&
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "$@" \
    >/dev/null 2>&1; }
}

# A pool of background jobs: run_job NAME CMD... runs CMD in the background (its output in
# $out/logs/NAME.log) once fewer than $jobs are running; pool_wait waits for all of them.
mkdir -p "$out/logs"
# A failed job leaves $out/logs/NAME.failed; pool_wait PREFIX fails if any PREFIX*.failed exists.
run_job() {
  local name=$1; shift
  while (( $(jobs -rp | wc -l) >= jobs )); do wait -n 2>/dev/null || true; done
  rm -f "$out/logs/$name.failed"
  ( "$@" </dev/null >"$out/logs/$name.log" 2>&1 || { touch "$out/logs/$name.failed"
      echo "science: job $name failed (log: $out/logs/$name.log):" >&2; tail -5 "$out/logs/$name.log" >&2; exit 1; } ) &
}
pool_wait() {
  wait || true
  ! compgen -G "$out/logs/$1*.failed" >/dev/null
}

# Whether an evaluation exists and holds the smoothness proxy per block input (older ones, from
# before qat eval reported it, are done again).
has_blocks() { [ -f "$1" ] && grep -q '"block_smoothness": \[' "$1"; }
# The per-block proxy of an evaluation as tab-separated numbers (KEY: block_smoothness or
# teacher_block_smoothness); empty when absent.
jlist() { [ -f "$1" ] || return 0; sed -n "s/.*\"$2\": \[\([^]]*\)\].*/\1/p" "$1" | head -1 | tr -d ' ' | tr ',' '\t'; }
# A number from one of qat eval's JSON files (empty when absent or not finite).
jf() { [ -f "$1" ] && sed -n "s/.*\"$2\": \([-0-9.e+]*\)[,}].*/\1/p" "$1" | head -1; }
num() { local v; v=$(jf "$1" "$2"); echo "${v:-NA}"; }

# Splits token shards (llm.c layout, data/tokens.h) into K parts of consecutive tokens:
#   split_shard K OUT_PREFIX SHARD... -> OUT_PREFIX-1.bin .. OUT_PREFIX-K.bin
split_shard() {
  perl -e '
    use strict; use warnings;
    my ($k, $prefix, @in) = @ARGV; my ($magic, $version, $w, $tokens) = (0, 0, 0, "");
    for my $f (@in) {
      open(my $fh, "<:raw", $f) or die "$f: $!"; local $/; my $all = <$fh>; close $fh;
      my @h = unpack("l<256", substr($all, 0, 1024));
      ($magic, $version) = @h[0, 1]; $w = $magic == 20240520 ? 2 : 4;
      my $n = $h[2] + ($w == 4 ? $h[3] * 2**32 : 0);
      $tokens .= substr($all, 1024, $n * $w);
    }
    my $n = length($tokens) / $w;
    for my $i (1 .. $k) {
      my ($a, $b) = (int(($i - 1) * $n / $k), int($i * $n / $k));
      my @h = (0) x 256; @h[0, 1, 2] = ($magic, $version, ($b - $a) % 2**32);
      $h[3] = int(($b - $a) / 2**32) if $w == 4;
      open(my $o, ">:raw", "$prefix-$i.bin.tmp") or die "$prefix-$i.bin: $!";
      print $o pack("l<256", @h), substr($tokens, $a * $w, ($b - $a) * $w); close $o;
      rename("$prefix-$i.bin.tmp", "$prefix-$i.bin") or die;
    }' "$@"
}

data=$out/data
tokenizer_flag() { [ -f "$data/spm.model" ] && echo "$data/spm.model" || echo ""; }
data_sets() {
  local tok; tok=$(tokenizer_flag)
  echo "data.train=[$data/train.bin]"
  echo "data.val=[$data/val.bin]"
  echo "data.tokenizer=$tok"
  echo "model.vocab_size=$(cat "$data/VOCAB")"
}
set_flags() { local kv; for kv in "$@"; do printf -- '--set\n%s\n' "$kv"; done; }

# ================================================================ 1. corpus
part_corpus() {
  [ -f "$data/val.bin" ] && [ -f "$data/VOCAB" ] && { log "corpus: done ($data)"; return; }
  local t0; t0=$(date +%s)
  local c=$out/corpus; mkdir -p "$c/debs" "$data"
  : >"$c/corpus.txt"; : >"$c/SOURCES"
  local src
  IFS=, read -r -a srcs <<<"$corpus_sel"
  for src in "${srcs[@]}"; do
    case $src in
      austen) corpus_austen "$c" || log "corpus: Jane Austen (r-cran-janeaustenr) unavailable, skipped" ;;
      kjv) corpus_kjv "$c" || log "corpus: King James Bible (bible-kjv) unavailable, skipped" ;;
      fortunes) corpus_fortunes "$c" || log "corpus: fortunes unavailable, skipped" ;;
      *) echo "science: unknown corpus '$src' (austen, kjv, fortunes)" >&2; exit 2 ;;
    esac
  done
  if [ ! -s "$c/corpus.txt" ]; then
    log "corpus: none of '$corpus_sel' could be had; falling back to Debian's fortunes"
    corpus_fortunes "$c" || { echo "science: no corpus (install fortunes)" >&2; exit 1; }
  fi
  if ((max_bytes > 0)); then   # keep whole documents up to max_bytes
    awk -v max="$max_bytes" '{ n += length($0) + 1; print } /^%$/ && n >= max { exit }' \
      "$c/corpus.txt" >"$c/corpus.cut" && mv "$c/corpus.cut" "$c/corpus.txt"
    echo "cut to the first $(wc -c <"$c/corpus.txt") bytes (--$mode)" >>"$c/SOURCES"
  fi
  grep -v '^%$' "$c/corpus.txt" >"$c/plain.txt"
  log "corpus: $(wc -c <"$c/corpus.txt") bytes, $(grep -c '^%$' "$c/corpus.txt") documents ($(paste -sd' ' "$c/SOURCES" | cut -c1-200))"

  # SentencePiece BPE (LLaMA-style: byte fallback, split digits) trained with Debian's spm_train
  command -v spm_train >/dev/null || apt_install sentencepiece || true
  local tok=""
  if command -v spm_train >/dev/null &&
     nice -n 5 spm_train --input="$c/plain.txt" --model_prefix="$data/spm" --vocab_size="$vocab" \
       --model_type=bpe --character_coverage=0.9999 --byte_fallback=true --split_digits=true \
       --input_sentence_size=2000000 --shuffle_input_sentence=true --max_sentence_length=16384 \
       --num_threads="$cores" --minloglevel=2 >"$out/logs/spm_train.log" 2>&1; then
    tok=$data/spm.model
    echo "$vocab" >"$data/VOCAB"
    echo "tokenizer: SentencePiece BPE, vocabulary $vocab, trained on this corpus by spm_train ($(dpkg-query -W -f='${Package} ${Version}' sentencepiece 2>/dev/null || echo sentencepiece))" >>"$c/SOURCES"
  else
    rm -f "$data/spm.model" "$data/spm.vocab"
    log "corpus: spm_train missing (Debian package sentencepiece) or failed ($out/logs/spm_train.log): byte tokenizer (vocabulary 258)"
    echo 258 >"$data/VOCAB"
    echo "tokenizer: bytes (vocabulary 258): spm_train was not available" >>"$c/SOURCES"
  fi
  "$qat" prep --fortune --val-fraction 0.05 ${tok:+--tokenizer "$tok"} --out "$data" "$c/corpus.txt" \
    | tee "$c/prep.log"
  timing corpus $(( $(date +%s) - t0 ))
}

# Paragraphs (blank-line separated; lines joined) -> fortune-format documents of >= 3000 bytes.
docs_from_paragraphs() {
  perl -e '
    use strict; use warnings; local $/ = ""; my $doc = "";
    while (my $p = <STDIN>) {
      $p =~ s/\s+/ /g; $p =~ s/^ | $//g; next if $p eq "" || $p eq "%";
      $doc .= "$p\n";
      if (length $doc >= 3000) { print $doc, "%\n"; $doc = ""; }
    }
    print $doc, "%\n" if length $doc;'
}

deb_extract() {  # deb_extract DIR PACKAGE: the package's files under DIR/root, without installing
  local d=$1 p=$2
  ((install)) || return 1
  ls "$d"/debs/"$p"_*.deb >/dev/null 2>&1 || (cd "$d/debs" && apt-get download "$p" >/dev/null 2>&1) || return 1
  dpkg-deb -x "$(ls "$d"/debs/"$p"_*.deb | head -1)" "$d/root"
}

# Jane Austen's six novels (public domain) from r-cran-janeaustenr (MIT): the R lazy-load database
# data/Rdata.rdb holds one character vector per novel (records: 4-byte big-endian length + zlib
# stream of an R XDR serialization). Read without R: the package is downloaded, not installed
# (installing it would pull in r-base-core).
corpus_austen() {
  local c=$1 rdb=/usr/lib/R/site-library/janeaustenr/data/Rdata.rdb
  if [ ! -f "$rdb" ]; then
    deb_extract "$c" r-cran-janeaustenr || return 1
    rdb=$c/root/usr/lib/R/site-library/janeaustenr/data/Rdata.rdb
  fi
  perl -MCompress::Zlib -e1 2>/dev/null || return 1
  perl -e '
    use strict; use warnings; use Compress::Zlib;
    local $/; my $db = <STDIN>; my $off = 0;
    while ($off + 4 < length $db) {
      my ($inf) = inflateInit(); my $in = substr($db, $off + 4);   # inflate eats its input: a copy
      my ($x) = $inf->inflate($in);
      last unless defined $x && length $x;
      $off += 4 + $inf->total_in();
      my $p = index($x, "\x00\x00\x00\x10"); next if $p < 0;     # STRSXP
      my $n = unpack("N", substr($x, $p + 4, 4)); $p += 8;
      for (1 .. $n) {
        my ($flags, $len) = unpack("NN", substr($x, $p, 8)); $p += 8;
        last if ($flags & 0xff) != 9;                              # CHARSXP
        if ($len == 0xffffffff) { print "\n"; next }
        print substr($x, $p, $len), "\n"; $p += $len;
      }
      print "\n\n";
    }' <"$rdb" >"$c/austen.txt"
  [ "$(wc -c <"$c/austen.txt")" -gt 1000000 ] || return 1
  docs_from_paragraphs <"$c/austen.txt" >>"$c/corpus.txt"
  echo "austen: Jane Austen's six novels, $(wc -c <"$c/austen.txt") bytes, Debian package r-cran-janeaustenr $(dpkg-deb -f "$(ls "$c"/debs/r-cran-janeaustenr_*.deb 2>/dev/null | head -1)" Version 2>/dev/null || dpkg-query -W -f='${Version}' r-cran-janeaustenr 2>/dev/null) (texts public domain; package MIT)" >>"$c/SOURCES"
}

# The King James Bible (public domain) from bible-kjv-text, printed by bible-kjv's `bible`.
# Verse numbers and chapter headings are dropped; one chapter is one document.
corpus_kjv() {
  local c=$1 bible=() 
  if command -v bible >/dev/null && [ -f /usr/lib/bible.data ]; then
    bible=(bible)
  else
    deb_extract "$c" bible-kjv || return 1
    deb_extract "$c" bible-kjv-text || return 1
    bible=("$c/root/usr/bin/bible" -p "$c/root/usr/lib")
  fi
  "${bible[@]}" 'Gen1:1-Rev22:21' >"$c/kjv.raw" 2>/dev/null || return 1
  [ "$(wc -c <"$c/kjv.raw")" -gt 1000000 ] || return 1
  perl -ne '
    if (/^\s*$/) { next }
    if (/^(?:[1-3] )?[A-Z][A-Za-z ]+ \d+$/) { print "\n" if $v; print "%\n" if $started; $v = ""; $started = 1; next }
    if (s/^\s+\d+ //) { print "$v\n" if length $v; chomp; $v = $_; next }
    chomp; s/^\s+//; $v .= " $_";
    END { print "$v\n%\n" if length $v }' "$c/kjv.raw" >"$c/kjv.txt"
  cat "$c/kjv.txt" >>"$c/corpus.txt"
  echo "kjv: the King James Bible, $(wc -c <"$c/kjv.txt") bytes, Debian package bible-kjv-text (text public domain; program GPL-2+)" >>"$c/SOURCES"
}

corpus_fortunes() {
  local c=$1 f
  [ -d /usr/share/games/fortunes ] || apt_install fortunes || return 1
  local n0; n0=$(wc -c <"$c/corpus.txt")
  while read -r f; do
    cat "$f"; tail -c1 "$f" | grep -q . && echo; tail -n1 "$f" | grep -qx '%' || echo '%'
  done < <(find /usr/share/games/fortunes -maxdepth 1 -type f ! -name '*.dat' ! -name '*.u8' | sort) \
    >>"$c/corpus.txt"
  echo "fortunes: Debian's fortunes, $(( $(wc -c <"$c/corpus.txt") - n0 )) bytes" >>"$c/SOURCES"
}

# ================================================================ 2. teacher
teacher=$out/teacher
teacher_flags() { mapfile -t TF < <(set_flags "run.dir=$teacher" $(data_sets) "${T[@]}"); }
part_teacher() {
  [ -f "$data/VOCAB" ] || { echo "science: no corpus in $data: run the corpus part first" >&2; exit 1; }
  if [ -f "$teacher/DONE" ]; then log "teacher: done ($teacher)"; else
    local t0; t0=$(date +%s)
    teacher_flags
    log "teacher: training ($ranks ranks; resumes from its newest checkpoint)"
    OMP_NUM_THREADS=$(( cores / ranks > 0 ? cores / ranks : 1 )) \
      launch/qat-run -n "$ranks" --done "$teacher/DONE" -- qat train recipes/science-teacher.yaml "${TF[@]}" \
      2>&1 | tee "$out/logs/teacher.log" | grep -E '^(model|train|step [0-9]+/[0-9]+ .*val_loss)' || true
    [ -f "$teacher/DONE" ] || { echo "science: the teacher did not finish (log: $out/logs/teacher.log)" >&2; exit 1; }
    timing teacher $(( $(date +%s) - t0 ))
  fi
  [ -f "$teacher/eval.json" ] || "$qat" eval --ckpt "$teacher" --teacher "$teacher" --metrics \
    --windows "$qat_windows" --max-new-tokens 0 --json "$teacher/eval.json" >/dev/null
}

# ================================================================ 3. ptq
ptq=$out/ptq
part_ptq() {
  [ -f "$teacher/DONE" ] || { echo "science: no teacher: run the teacher part first" >&2; exit 1; }
  local t0; t0=$(date +%s)
  log "ptq: launch/ptq-sweep.sh (every quantizer x rtn, gptq, gptq-smooth; finished runs are reused)"
  QAT_PTQ_WINDOWS=$ptq_calib launch/ptq-sweep.sh "$teacher" "$data/train.bin" "$data/val.bin" "$ptq" \
    >"$out/logs/ptq-sweep.log" 2>&1 || { tail -20 "$out/logs/ptq-sweep.log" >&2; exit 1; }
  # Error bars: every model again on nparts disjoint parts of the validation shard.
  [ -f "$data/val-part-$nparts.bin" ] || split_shard "$nparts" "$data/val-part" "$data/val.bin"
  local d k
  for k in $(seq "$nparts"); do
    has_blocks "$ptq/teacher-part-$k.json" || run_job "ptq-teacher-part-$k" "$qat" eval --ckpt "$teacher" \
      --teacher "$teacher" --metrics --data "$data/val-part-$k.bin" --windows "$part_windows" \
      --max-new-tokens 0 --threads "$tpj" --json "$ptq/teacher-part-$k.json"
  done
  for d in "$ptq"/*/; do
    d=${d%/}; [ -f "$d/eval.json" ] || continue
    # Evaluations from before qat eval reported the proxy per block are done again only for the
    # quantizers of C1 (the per-block table's rows); the others keep theirs.
    local bq; bq=$(basename "$d"); bq=${bq%-rtn}; bq=${bq%-gptq-smooth}; bq=${bq%-gptq}
    local redo=1; [[ " $c1_quants " == *" $bq "* ]] || redo=0
    if [ -n "$part_quants" ]; then
      local b; b=$(basename "$d"); b=${b%-rtn}; b=${b%-gptq-smooth}; b=${b%-gptq}
      [[ " $part_quants " == *" $b "* ]] || continue
    fi
    for k in $(seq "$nparts"); do
      { [ -f "$d/eval-part-$k.json" ] && { ((!redo)) || has_blocks "$d/eval-part-$k.json"; }; } ||
        run_job "ptq-$(basename "$d")-part-$k" "$qat" eval --ckpt "$d" \
        --teacher "$teacher" --metrics --data "$data/val-part-$k.bin" --windows "$part_windows" \
        --max-new-tokens 0 --threads "$tpj" --json "$d/eval-part-$k.json"
    done
  done
  pool_wait ptq- || { echo "science: some PTQ evaluations failed" >&2; exit 1; }
  timing ptq $(( $(date +%s) - t0 ))
}

# ================================================================ 4. qat
qatdir=$out/qat
# name mode estimator lambda
qat_configs() {
  echo "none none exact 0"
  local m e l
  for m in grad_norm grad_match; do for e in exact finite_diff; do for l in "${lambda_list[@]}"; do
    echo "$m-$e-$l $m $e $l"
  done; done; done
}
qat_one() {  # qat_one NAME MODE EST LAMBDA SEED
  local dir=$qatdir/$1-s$5
  if [ ! -f "$dir/DONE" ]; then
    local F; mapfile -t F < <(set_flags "run.dir=$dir" $(data_sets) "${T[@]}" "${S[@]}" \
      "model.init_from=$teacher" "distill.teacher=$teacher" "run.seed=$5" "train.threads=$tpj" \
      "smoothness.mode=$2" "smoothness.estimator=$3" "smoothness.lambda=$4")
    OMP_NUM_THREADS=$tpj launch/qat-run -n 1 --done "$dir/DONE" -- qat train recipes/science-student.yaml "${F[@]}"
  fi
  "$qat" eval --ckpt "$dir" --teacher "$teacher" --metrics --windows "$qat_windows" --max-new-tokens 0 \
    --threads "$tpj" --json "$dir/eval.json"
}
part_qat() {
  [ -f "$teacher/DONE" ] || { echo "science: no teacher: run the teacher part first" >&2; exit 1; }
  local t0; t0=$(date +%s) n=0
  mkdir -p "$qatdir"
  # Seed by seed, so that a run stopped part way leaves whole sweeps (every variant at the seeds
  # done so far) rather than all seeds of a few variants.
  local name m e l s
  for s in "${seed_list[@]}"; do
    while read -r name m e l; do
      has_blocks "$qatdir/$name-s$s/eval.json" && continue
      n=$((n + 1))
      run_job "qat-$name-s$s" qat_one "$name" "$m" "$e" "$l" "$s"
    done < <(qat_configs)
  done
  log "qat: $n student(s) to train and evaluate, $jobs at a time ($(qat_configs | wc -l) variants x ${#seed_list[@]} seeds)"
  pool_wait qat- || { echo "science: some QAT runs failed (logs: $out/logs/qat-*.log)" >&2; exit 1; }
  timing qat $(( $(date +%s) - t0 ))
}

# ================================================================ 5. generation
gen=$out/gen
mid_lambda() { echo "${lambda_list[$(( ${#lambda_list[@]} / 2 ))]}"; }
# label:checkpoint of the models whose candidates are measured (those that exist)
gen_models() {
  echo "teacher:$teacher"
  local s1=${seed_list[0]} l; l=$(mid_lambda)
  local q
  for q in $gen_qat; do q=${q//LMID/$l}
    [ -f "$qatdir/$q-s$s1/DONE" ] && echo "qat-$q-s$s1:$qatdir/$q-s$s1"
  done
  for q in $gen_ptq; do
    [ -f "$ptq/$q/eval.json" ] && echo "ptq-$q:$ptq/$q"
  done
  return 0
}
# Prompts: the first six words of evenly spaced paragraphs of the corpus.
gen_prompts_file() {
  [ -s "$gen/prompts.txt" ] && return
  grep -v '^%$' "$out/corpus/plain.txt" | awk 'NF >= 8' >"$gen/paragraphs.tmp"
  local n; n=$(wc -l <"$gen/paragraphs.tmp")
  awk -v n="$n" -v k="$gen_prompts" 'BEGIN { for (i = 0; i < k; i++) want[int((i + 0.5) * n / k) + 1] = 1 }
    want[NR] { printf "%s %s %s %s %s %s\n", $1, $2, $3, $4, $5, $6 }' "$gen/paragraphs.tmp" >"$gen/prompts.txt"
  rm -f "$gen/paragraphs.tmp"
}
# The "sample" string of qat eval's JSON (bytes written as \u00XX) back to raw bytes.
json_sample() {
  perl -ne 'if (/"sample": "((?:[^"\\]|\\.)*)"/) { my $s = $1;
    $s =~ s/\\u([0-9a-fA-F]{4})/chr(hex($1))/ge; $s =~ s/\\(.)/$1/g; print $s }' "$1"
}
gen_sample_model() {  # LABEL CKPT: this model's continuations of every prompt -> samples.txt
  local label=$1 ck=$2 d=$gen/$1 i=0 p
  mkdir -p "$d"
  [ -f "$d/samples.txt" ] && return
  while IFS= read -r p; do
    i=$((i + 1))
    [ -f "$d/sample-$i.json" ] || "$qat" eval --ckpt "$ck" --prompt "$p" --max-new-tokens "$gen_tokens" \
      --temperature 1 --top-k 0 --seed "$i" --windows 1 --threads "$tpj" --json "$d/sample-$i.json" </dev/null >/dev/null
  done <"$gen/prompts.txt"
  for i in $(seq "$(wc -l <"$gen/prompts.txt")"); do json_sample "$d/sample-$i.json"; echo; echo '%'; done >"$d/samples.tmp"
  local tok; tok=$(tokenizer_flag)
  "$qat" prep --fortune --val-fraction 0 ${tok:+--tokenizer "$tok"} --out "$d/shard" "$d/samples.tmp" >/dev/null
  mv "$d/samples.tmp" "$d/samples.txt"
}
gen_eval_model() {  # LABEL CKPT: candidates on the teacher's continuations (nparts parts) and on its own
  local label=$1 ck=$2 d=$gen/$1 k
  for k in $(seq "$nparts"); do
    [ -f "$d/on-teacher-$k.json" ] || "$qat" eval --ckpt "$ck" --teacher "$teacher" --metrics \
      --data "$gen/teacher/part-$k.bin" --seq-len "$gen_seq" --windows 100000 --max-new-tokens 0 \
      --threads "$tpj" --json "$d/on-teacher-$k.json" >/dev/null
  done
  [ -f "$d/own.json" ] || "$qat" eval --ckpt "$ck" --teacher "$teacher" --metrics \
    --data "$d/shard/train.bin" --data "$d/shard/val.bin" --seq-len "$gen_seq" --windows 100000 \
    --max-new-tokens 0 --threads "$tpj" --json "$d/own.json" >/dev/null
}
part_generation() {
  [ -f "$teacher/DONE" ] || { echo "science: no teacher: run the teacher part first" >&2; exit 1; }
  local t0; t0=$(date +%s)
  mkdir -p "$gen"
  gen_prompts_file
  local models; mapfile -t models < <(gen_models)
  log "generation: ${#models[@]} model(s) x $(wc -l <"$gen/prompts.txt") prompts x $gen_tokens tokens (temperature 1, no top-k)"
  local m
  for m in "${models[@]}"; do run_job "gen-sample-${m%%:*}" gen_sample_model "${m%%:*}" "${m#*:}"; done
  pool_wait gen-sample- || { echo "science: sampling failed (logs: $out/logs/gen-*.log)" >&2; exit 1; }
  [ -f "$gen/teacher/part-$nparts.bin" ] || split_shard "$nparts" "$gen/teacher/part" \
    "$gen/teacher/shard/train.bin" "$gen/teacher/shard/val.bin"
  for m in "${models[@]}"; do run_job "gen-eval-${m%%:*}" gen_eval_model "${m%%:*}" "${m#*:}"; done
  pool_wait gen-eval- || { echo "science: candidate evaluation failed (logs: $out/logs/gen-*.log)" >&2; exit 1; }
  printf '%s\n' "${models[@]}" >"$gen/models.txt"
  timing generation $(( $(date +%s) - t0 ))
}

# ================================================================ 6. report
rep=$out/report
# --- statistics (awk). Files are TSV: key, replicate, then metric columns named in a header line.
# msd FILE KEY COL -> "mean sd n" over replicates (NA skipped)
msd() {
  awk -F'\t' -v key="$2" -v col="$3" '
    NR == 1 { for (i = 1; i <= NF; i++) if ($i == col) c = i; next }
    $1 == key && $c != "NA" && $c != "" { n++; s += $c; ss += $c * $c }
    END { if (n == 0) { print "NA NA 0"; exit }
          m = s / n; v = n > 1 ? (ss - n * m * m) / (n - 1) : 0; if (v < 0) v = 0
          printf "%.6g %.6g %d\n", m, sqrt(v), n }' "$1"
}
# contrast FILE COL "A1 A2.." "B1 B2.." -> "mean sd n se": per replicate r, d_r = mean_i (A_i - B_i)
# over the pairs (A_i, B_i) present at r; then the mean, sd and standard error of d over replicates
contrast() {
  awk -F'\t' -v col="$2" -v as="$3" -v bs="$4" '
    BEGIN { na = split(as, A, " "); nb = split(bs, B, " ") }
    NR == 1 { for (i = 1; i <= NF; i++) if ($i == col) c = i; next }
    $c != "NA" && $c != "" { v[$1 SUBSEP $2] = $c; reps[$2] = 1 }
    END {
      for (r in reps) { s = 0; k = 0
        for (i = 1; i <= na; i++) if (((A[i] SUBSEP r) in v) && ((B[i] SUBSEP r) in v)) { s += v[A[i] SUBSEP r] - v[B[i] SUBSEP r]; k++ }
        if (k) { n++; d = s / k; sum += d; sq += d * d } }
      if (n == 0) { print "NA NA 0 NA"; exit }
      m = sum / n; var = n > 1 ? (sq - n * m * m) / (n - 1) : 0; if (var < 0) var = 0
      printf "%.6g %.6g %d %s\n", m, sqrt(var), n, (n > 1 ? sprintf("%.6g", sqrt(var / n)) : "NA") }' "$1"
}
# verdict MEAN SE N DIR [K]: the claim predicts sign(MEAN) = DIR; K standard errors (default 2)
verdict() {
  awk -v m="$1" -v se="$2" -v n="$3" -v dir="$4" -v k="${5:-2}" 'BEGIN {
    if (m == "NA" || n < 2 || se == "NA") { print "inconclusive"; exit }
    if (se == 0) { print (m * dir > 0 ? "reproduced" : (m * dir < 0 ? "not reproduced" : "inconclusive")); exit }
    z = m * dir / se
    print (z > k ? "reproduced" : (z < -k ? "not reproduced" : "inconclusive")) }'
}
mean_of() { local m; m=$(msd "$1" "$2" "$3" | cut -d' ' -f1); [ "$m" = NA ] && echo - || printf '%.4g' "$m"; }
fmt_ms() { awk -v m="$1" -v s="$2" 'BEGIN { if (m == "NA") print "-"; else printf "%.4g ± %.2g", m, s }'; }
# Per-block table pieces for L blocks: header cells, separator cells, and "mean ± sd" cells of the
# columns PREFIX0..PREFIX(L-1) of MODEL's rows in FILE.
block_head() { local k; for ((k = 0; k < $1; k++)); do printf ' S_%d |' "$k"; done; }
block_sep() { local k; for ((k = 0; k < $1; k++)); do printf -- '---|'; done; }
block_cells() { local k; for ((k = 0; k < $4; k++)); do printf ' %s |' "$(fmt_ms $(msd "$1" "$2" "$3$k" | cut -d' ' -f1-2))"; done; }
fmt_d() { awk -v m="$1" -v se="$2" -v n="$3" 'BEGIN { if (m == "NA") print "-"; else if (se == "NA") printf "%+.4g (n=%d)", m, n; else printf "%+.4g ± %.2g (n=%d)", m, se, n }'; }

have_gnuplot=0
plot() {  # plot NAME GNUPLOT_BODY: $rep/NAME.png
  ((have_gnuplot)) || return 0
  local term="pngcairo size 900,560 font 'DejaVu Sans,10'"
  gnuplot -e 'set terminal pngcairo' >/dev/null 2>&1 || term="png size 900,560"
  { echo "set terminal $term"; echo "set output '$rep/$1.png'"; echo "set datafile missing 'NA'"
    echo "set termoption noenhanced"; echo "set key outside right"; echo "set grid"; echo "$2"; } >"$rep/$1.gp"
  gnuplot "$rep/$1.gp" 2>"$rep/$1.gp.log" || echo "(gnuplot failed on $1: $rep/$1.gp.log)" >&2
}
# The plots and the tables' data go beside the report ($pub: docs/science/ for docs/science.md),
# so that a clone shows them; $rep (under the ignored output directory) keeps the working files.
pub=${doc%.md}
img() {
  if ! ((have_gnuplot)); then echo "*Plot $1 skipped: gnuplot is not installed (Debian package gnuplot-nox).*"
  elif [ -f "$rep/$1.png" ]; then
    mkdir -p "$pub" && cp "$rep/$1.png" "$pub/$1.png"
    echo "![$2]($(realpath --relative-to="$(dirname "$doc")" "$pub/$1.png"))"
  else echo "*Plot $1: gnuplot failed ($rep/$1.gp.log).*"; fi
  echo
}

ptq_quantizers=(int8-ch-sym int4-g128-sym int4-g128-asym int3-g128-sym int3-g128-asym int2-g64-sym
                int2-g64-asym int2-ch-asym ternary-ch ternary-g64 binary-ch)
ptq_methods=(rtn gptq gptq-smooth)
bits_of() { case $1 in int8*) echo 8 ;; int4*) echo 4 ;; int3*) echo 3 ;; int2*) echo 2 ;; ternary*) echo 1.58 ;; binary*) echo 1 ;; esac; }

collect() {
  mkdir -p "$rep"
  # ptq.tsv: model, part, metrics (the teacher as "teacher")
  {
    printf 'model\trep\tppl\tear\ttop1\tS\tC\tCab\ttS\ttC\n'
    local k q m j
    for k in $(seq "$nparts"); do
      j=$ptq/teacher-part-$k.json
      [ -f "$j" ] && printf 'teacher\t%s\t%s\t1\t1\t%s\t%s\t%s\t%s\t%s\n' "$k" "$(num "$j" teacher_perplexity)" \
        "$(num "$j" teacher_smoothness)" "$(num "$j" teacher_candidates_exp_entropy)" \
        "$(num "$j" teacher_candidates_above)" "$(num "$j" teacher_smoothness)" "$(num "$j" teacher_candidates_exp_entropy)"
      for q in "${ptq_quantizers[@]}"; do for m in "${ptq_methods[@]}"; do
        j=$ptq/$q-$m/eval-part-$k.json
        [ -f "$j" ] && printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$q-$m" "$k" "$(num "$j" perplexity)" \
          "$(num "$j" ear)" "$(num "$j" top1_agreement)" "$(num "$j" smoothness)" \
          "$(num "$j" candidates_exp_entropy)" "$(num "$j" candidates_above)" \
          "$(num "$j" teacher_smoothness)" "$(num "$j" teacher_candidates_exp_entropy)"
      done; done
    done
  } >"$rep/ptq.tsv"
  # qat.tsv: variant, seed, metrics (+ ms per step from metrics.jsonl)
  {
    printf 'model\trep\tppl\tear\ttop1\tS\tC\tCab\ttS\ttC\tms\n'
    local name mo e l s d
    while read -r name mo e l; do for s in "${seed_list[@]}"; do
      d=$qatdir/$name-s$s; j=$d/eval.json
      [ -f "$j" ] || continue
      local ms
      ms=$(awk -F'"tokens_per_s": ' 'NR > 1 && NF > 1 { split($2, a, ","); if (a[1] > 0) { s += 1 / a[1]; n++ } }
        END { if (n) printf "%.6g", s / n; else print "NA" }' "$d/metrics.jsonl" 2>/dev/null || echo NA)
      local tps; tps=$(awk '/^  batch_size:/ && !b { b = $2 } /^  seq_len:/ && !q { q = $2 } END { print b * q }' "$d/recipe.yaml")
      [ "$ms" != NA ] && ms=$(awk -v a="$ms" -v t="$tps" 'BEGIN { printf "%.6g", 1000 * a * t }')
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$s" "$(num "$j" perplexity)" "$(num "$j" ear)" \
        "$(num "$j" top1_agreement)" "$(num "$j" smoothness)" "$(num "$j" candidates_exp_entropy)" \
        "$(num "$j" candidates_above)" "$(num "$j" teacher_smoothness)" "$(num "$j" teacher_candidates_exp_entropy)" "$ms"
    done; done < <(qat_configs)
  } >"$rep/qat.tsv"
  # ptq-blocks.tsv / qat-blocks.tsv: model, replicate, the proxy at each block input S0..S(L-1)
  # (S0: the embeddings), Sdeep = their mean over blocks 1..L-1, and the teacher's on the same windows
  local L; L=$(awk '/^model:/ { m = 1; next } /^[a-z]/ { m = 0 } m && /^  num_layers:/ { print $2; exit }' "$teacher/recipe.yaml" 2>/dev/null)
  L=${L:-0}
  block_header() { printf 'model\trep'; local l; for ((l = 0; l < L; l++)); do printf '\tS%d' "$l"; done
    printf '\tSdeep'; for ((l = 0; l < L; l++)); do printf '\ttS%d' "$l"; done; printf '\ttSdeep\n'; }
  block_row() {  # MODEL REP JSON STUDENT_KEY TEACHER_KEY
    local s t; s=$(jlist "$3" "$4"); t=$(jlist "$3" "$5")
    [ -n "$s" ] && [ -n "$t" ] || return 0
    printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$s" "$t" | awk -F'\t' -v L="$L" 'BEGIN { OFS = "\t" }
      NF == 2 + 2 * L { d = 0; e = 0; for (l = 1; l < L; l++) { d += $(3 + l); e += $(3 + L + l) }
        out = $1 OFS $2; for (l = 0; l < L; l++) out = out OFS $(3 + l)
        out = out OFS (L > 1 ? d / (L - 1) : "NA"); for (l = 0; l < L; l++) out = out OFS $(3 + L + l)
        print out, (L > 1 ? e / (L - 1) : "NA") }'
  }
  {
    block_header
    local k q m
    for k in $(seq "$nparts"); do
      block_row teacher "$k" "$ptq/teacher-part-$k.json" teacher_block_smoothness teacher_block_smoothness
      for q in "${ptq_quantizers[@]}"; do for m in "${ptq_methods[@]}"; do
        block_row "$q-$m" "$k" "$ptq/$q-$m/eval-part-$k.json" block_smoothness teacher_block_smoothness
      done; done
    done
  } >"$rep/ptq-blocks.tsv"
  {
    block_header
    local name mo e l s
    while read -r name mo e l; do for s in "${seed_list[@]}"; do
      block_row "$name" "$s" "$qatdir/$name-s$s/eval.json" block_smoothness teacher_block_smoothness
    done; done < <(qat_configs)
  } >"$rep/qat-blocks.tsv"
  # gen.tsv: model, part of the teacher's continuations, the model's and the teacher's candidates
  {
    printf 'model\trep\tC\ttC\tCab\ttCab\tppl\tear\n'
    local line label k j
    [ -f "$gen/models.txt" ] && while IFS= read -r line; do
      label=${line%%:*}
      for k in $(seq "$nparts"); do
        j=$gen/$label/on-teacher-$k.json
        [ -f "$j" ] && printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$k" "$(num "$j" candidates_exp_entropy)" \
          "$(num "$j" teacher_candidates_exp_entropy)" "$(num "$j" candidates_above)" \
          "$(num "$j" teacher_candidates_above)" "$(num "$j" perplexity)" "$(num "$j" ear)"
      done
    done <"$gen/models.txt"
  } >"$rep/gen.tsv"
}

part_report() {
  local t0; t0=$(date +%s)
  command -v gnuplot >/dev/null || apt_install gnuplot-nox || true
  command -v gnuplot >/dev/null && have_gnuplot=1
  collect
  cd "$rep"   # nothing below writes outside $rep and $doc; a stray awk redirection would land here
  local T_=$rep/ptq.tsv Q_=$rep/qat.tsv G_=$rep/gen.tsv
  local r m sd n se v a b q k line
  : >"$rep/verdicts.md"
  say_verdict() {  # ID CLAIM MEAN SE N DIR TEXT [K]
    local vv; vv=$(verdict "$3" "$4" "$5" "$6" "${8:-2}")
    echo "**Verdict $1 ($2): $vv** — $7" | tee -a "$rep/verdicts.md"
    echo
  }
  {
  echo "# The seeds' claims, measured"
  echo
  echo "Written by \`launch/science.sh$( [ "$mode" = full ] || echo " --$mode")\` on $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores ($(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)). Outputs: \`$(case $out in "$here"/*) echo "${out#"$here"/}" ;; *) echo "$out" ;; esac)\`. Mode: **$mode**$( [ "$mode" = full ] || echo " (small shapes and few steps: a test of the pipeline, not a measurement to quote)")."
  echo "Every number below is computed from the files under that directory by the report part; nothing is edited by hand."
  echo

  # -------------------------------------------------------------- setup
  echo "## Setup"
  echo
  echo "- Corpus: $(paste -sd';' "$out/corpus/SOURCES" 2>/dev/null | sed 's/;/; /g'). Documents (\`qat prep --fortune\`: Austen in runs of whole paragraphs of ≥ 3000 bytes, one Bible chapter each, one fortune each), 5% held out: $(grep -h '^prep: [0-9]* documents' "$out/corpus/prep.log" 2>/dev/null | tail -1 | sed 's/^prep: //')."
  if [ -f "$teacher/recipe.yaml" ]; then
    local shape; shape=$(awk '/^model:/ { m = 1; next } /^[a-z]/ { m = 0 } m && /(vocab_size|hidden_size|intermediate_size|num_layers|num_heads|num_kv_heads):/ { gsub(/^ +/, ""); printf "%s%s", s, $0; s = ", " }' "$teacher/recipe.yaml")
    local steps bs sl; steps=$(awk '/^train:/ { t = 1 } t && /^  steps:/ { print $2; exit }' "$teacher/recipe.yaml")
    bs=$(awk '/^train:/ { t = 1 } t && /^  batch_size:/ { print $2; exit }' "$teacher/recipe.yaml")
    sl=$(awk '/^data:/ { t = 1 } t && /^  seq_len:/ { print $2; exit }' "$teacher/recipe.yaml")
    echo "- Teacher: full precision, cross entropy, from scratch (\`recipes/science-teacher.yaml\`$( ((${#T[@]})) && echo " with \`--set ${T[*]}\`")): $shape; $steps steps of $bs × $sl tokens; $(grep -h '^model:' "$out/logs/teacher.log" 2>/dev/null | head -1 | sed 's/^model: //; s/, quant.*//'). Validation: perplexity $(jf "$teacher/eval.json" perplexity), smoothness proxy $(jf "$teacher/eval.json" teacher_smoothness), effective candidates exp(H) $(jf "$teacher/eval.json" teacher_candidates_exp_entropy) ($qat_windows windows)."
  fi
  echo "- Students (QAT): ternary, BitNet b1.58 absmean per tensor, from the teacher's weights, distilled from it (KL 0.9 + CE 0.1) at matched steps and data (\`recipes/science-student.yaml\`$( ((${#S[@]})) && echo " with \`--set ${S[*]}\`")). Variants: none; grad_norm and grad_match × estimators exact and finite_diff × λ ∈ {${lambda_list[*]}}; seeds (run.seed: the data order) {${seed_list[*]}}."
  echo "- PTQ: \`launch/ptq-sweep.sh\` (\`qat quantize\`: rtn, gptq and our smoothness-preserving gptq, --smooth ${QAT_PTQ_SMOOTH:-1}; $ptq_calib calibration windows) on every quantizer it lists; each result$( [ -n "$part_quants" ] && echo " of $part_quants") evaluated again on $nparts disjoint parts of the validation shard ($part_windows windows each) for the error bars."
  echo "- Metrics (\`qat eval --metrics\`, \`trainer/evaluate.h\`): perplexity; EAR = mean Σ_v min(p_v, q_v) against the teacher; top-1 agreement; smoothness proxy S = E‖dCE/dx‖ at the input embeddings; effective candidates exp(H) and the count with p > 0.01."
  echo "- Time per part (s, summed over invocations, on this machine shared with other work): $(awk -F'\t' '{ t[$1] += $2 } END { for (k in t) printf "%s %d; ", k, t[k] }' "$out/timings.tsv" 2>/dev/null)"
  echo

  echo "## What is ours and what is the papers'"
  echo
  echo "- **The papers' claims** (quoted from \`MISSION.md\`): FINE (\"Fitting Is Not Enough: Smoothness in Extremely Quantized LLMs\"): smoothness degrades as bits fall; preserving it gives gains beyond fitting; \"maximizing smoothness is not unconditionally beneficial\"; quantized models lose effective candidates. SLQ (\"Statistically-Lossless Quantization of LLMs\"): EAR = 1 − TV(p, q); asymmetric quantizers matter for distribution fidelity."
  echo "- **Ours** (the authors' code is unreleased): the smoothness proxy S = E_batch ‖dL/dx‖₂ at the token embeddings; the regularizers grad_norm (λ E‖dL/dx‖²) and grad_match (λ E‖dL_S/dx − dL_T/dx‖², the teacher's and the student's cross-entropy input gradients) and their estimators (exact double backward; finite_diff, a central difference of the parameter gradient along the penalised direction) — definitions in \`trainer/objective.h\`; the smoothness-preserving GPTQ (GPTQ with the Hessian H_x + μ' H_g, H_g from the teacher's input gradients) — \`ptq/ptq.h\`. FINE's own losses and PTQ objective may differ."
  echo "- **Effective candidates are a stand-in.** Ours is exp(entropy of the next-token distribution), averaged over positions (and the count of tokens with p > 0.01). FINE's \"effective candidates\" come from its sequence-neighbourhood modelling (rPPL-1..40, decoding trees), whose exact definition is unpublished. A verdict on our stand-in is not a verdict on their measure."
  echo "- The smoothness proxy is reported at the input embeddings (S, the one the regularizers act on in every run here) and at each block's input h_l (S_l = E‖dCE/dh_l‖, S_0 = S; \`qat eval --metrics\`, \"block_smoothness\"). The regularizers can act on every block input too (\`smoothness.at: block_inputs\`), but no run here uses it."
  echo

  echo "## Verdict rule"
  echo
  echo "Each claim is reduced, before looking at the numbers, to one contrast d between paired measurements (the same seed for QAT students: the same initial weights and data order; the same evaluation part for PTQ models and for candidates), averaged over the cells the claim covers. With n replicates, mean d̄ and standard error SE = sd(d)/√n: **reproduced** if d̄ exceeds 2 SE in the claimed direction, **not reproduced** if it exceeds 2 SE in the other, **inconclusive** otherwise (and always with n < 2). With n = 3 seeds, 2 SE is a lenient bar (about p ≈ 0.18 two-sided for t with 2 degrees of freedom); the per-cell verdicts in the tables are exploratory and not corrected for multiple comparisons. Error bars are ± one standard deviation over replicates; differences are ± one standard error. For PTQ the replicates are evaluation parts of one quantization (evaluation noise only; the quantizers are deterministic given the teacher)."
  echo

  # -------------------------------------------------------------- teacher
  echo "## Teacher"
  echo
  if [ -f "$teacher/metrics.jsonl" ]; then
    sed -n 's/.*"step": \([0-9]*\), "loss": \([-0-9.e+]*\),.*"val_loss": \([-0-9.e+a-z]*\).*/\1 \2 \3/p' \
      "$teacher/metrics.jsonl" | sed 's/ null$/ NA/' >"$rep/teacher-loss.dat"
    echo "| step | train loss | validation loss |"
    echo "|---|---|---|"
    awk '$3 != "NA" { printf "| %d | %.4f | %.4f |\n", $1, $2, $3 }' "$rep/teacher-loss.dat"
    echo
    local last3; last3=$(awk '$3 != "NA" { v[++n] = $3 } END { if (n >= 3) printf "%.4f", v[n - 2] - v[n]; else print "NA" }' "$rep/teacher-loss.dat")
    echo "Validation-loss drop over the last two evaluations: $last3 nats (the curve flattens when this is small against the drop at the start)."
    echo
    plot teacher-loss "set xlabel 'step'; set ylabel 'loss (nats)'; set title 'Science teacher: cross entropy'
plot '$rep/teacher-loss.dat' using 1:2 with lines title 'train', '' using 1:3 with linespoints title 'validation'"
    img teacher-loss "teacher loss curve"
  else
    echo "No teacher run in this output directory."; echo
  fi

  # -------------------------------------------------------------- C1
  echo "## C1 — FINE: smoothness degrades as bits fall (PTQ)"
  echo
  echo "Claim: the smoothness proxy S = E‖dL/dx‖ rises (the model gets less smooth) as the bit width falls. Contrast: per evaluation part, S of the ≤ 2-bit quantizers (int2-g64-asym, ternary-g64, binary-ch) minus S of the ≥ 4-bit ones (int8-ch-sym, int4-g128-asym), paired by method (rtn, gptq, gptq-smooth) and averaged; the claim predicts d > 0."
  echo
  echo "| quantizer | bits | method | S (mean ± sd) | teacher S | ppl | EAR | n |"
  echo "|---|---|---|---|---|---|---|---|"
  read -r m sd n <<<"$(msd "$T_" teacher S)"
  echo "| fp32 teacher | 32 | - | $(fmt_ms "$m" "$sd") | - | $(fmt_ms $(msd "$T_" teacher ppl | cut -d' ' -f1-2)) | 1 | $n |"
  : >"$rep/c1.dat"
  for q in $c1_quants; do
    local row; row="$(bits_of $q)"
    for mth in "${ptq_methods[@]}"; do
      read -r m sd n <<<"$(msd "$T_" "$q-$mth" S)"
      [ "$n" -gt 0 ] || { row="$row NA NA"; continue; }
      row="$row $m $sd"
      echo "| $q | $(bits_of $q) | $mth | $(fmt_ms "$m" "$sd") | $(fmt_ms $(msd "$T_" "$q-$mth" tS | cut -d' ' -f1-2)) | $(fmt_ms $(msd "$T_" "$q-$mth" ppl | cut -d' ' -f1-2)) | $(fmt_ms $(msd "$T_" "$q-$mth" ear | cut -d' ' -f1-2)) | $n |"
    done
    echo "$row $(msd "$T_" teacher S | cut -d' ' -f1-2)" >>"$rep/c1.dat"
  done
  echo
  a="" b=""
  for mth in "${ptq_methods[@]}"; do
    for q in int2-g64-asym ternary-g64 binary-ch; do for p in int8-ch-sym int4-g128-asym; do a="$a $q-$mth"; b="$b $p-$mth"; done; done
  done
  read -r m sd n se <<<"$(contrast "$T_" S "$a" "$b")"
  echo "Adjacent steps (S at the lower bit width minus S at the higher, averaged over methods):"
  echo
  local prev="" stepline=""
  for q in $c1_quants; do
    if [ -n "$prev" ]; then
      local aa="" bb=""; for mth in "${ptq_methods[@]}"; do aa="$aa $q-$mth"; bb="$bb $prev-$mth"; done
      local m2 sd2 n2 se2; read -r m2 sd2 n2 se2 <<<"$(contrast "$T_" S "$aa" "$bb")"
      stepline="$stepline- $prev → $q: $(fmt_d "$m2" "$se2" "$n2") ($(verdict "$m2" "$se2" "$n2" 1))"$'\n'
    fi
    prev=$q
  done
  echo "$stepline"
  plot ptq-smoothness "set xlabel 'bits per weight'; set ylabel 'smoothness proxy E||dL/dx||'; set title 'C1: smoothness vs bits (PTQ; bars: sd over evaluation parts)'; set xrange [0.5:9]; set logscale x 2
plot '$rep/c1.dat' using 1:2:3 with yerrorlines title 'rtn', '' using 1:4:5 with yerrorlines title 'gptq', '' using 1:6:7 with yerrorlines title 'gptq-smooth', '' using 1:8 with lines dt 2 title 'fp32 teacher'"
  img ptq-smoothness "smoothness vs bits"
  say_verdict C1 "FINE: smoothness degrades as bits fall" "$m" "$se" "$n" 1 "S(≤2-bit) − S(≥4-bit) = $(fmt_d "$m" "$se" "$n")"

  local TB_=$rep/ptq-blocks.tsv QB_=$rep/qat-blocks.tsv
  local L; L=$(head -1 "$TB_" | tr '\t' '\n' | grep -c '^S[0-9]')
  if [ "$L" -gt 1 ] && [ "$(wc -l <"$TB_")" -gt 1 ]; then
    echo "### C1 at every block input"
    echo
    echo "The same proxy at the input of each block, S_l = E‖dCE/dh_l‖ (S_0 = S above; mean ± sd over the evaluation parts). Sdeep = the mean over blocks 1..$((L - 1)). The embeddings alone can hide what happens in depth: the residual stream's scale differs from block to block, so compare each column with the teacher's row."
    echo
    echo "| quantizer | method |$(block_head "$L") Sdeep | Sdeep / teacher's |"
    echo "|---|---|$(block_sep "$L")---|---|"
    echo "| fp32 teacher | - |$(block_cells "$TB_" teacher S "$L") $(fmt_ms $(msd "$TB_" teacher Sdeep | cut -d' ' -f1-2)) | 1 |"
    for q in $c1_quants; do for mth in "${ptq_methods[@]}"; do
      [ "$(msd "$TB_" "$q-$mth" Sdeep | cut -d' ' -f3)" -gt 0 ] || continue
      echo "| $q | $mth |$(block_cells "$TB_" "$q-$mth" S "$L") $(fmt_ms $(msd "$TB_" "$q-$mth" Sdeep | cut -d' ' -f1-2)) | $(awk -v a="$(mean_of "$TB_" "$q-$mth" Sdeep)" -v b="$(mean_of "$TB_" "$q-$mth" tSdeep)" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2f", a / b }') |"
    done; done
    echo
    local bl=""
    for ((k = 0; k < L; k++)); do
      local m2 sd2 n2 se2; read -r m2 sd2 n2 se2 <<<"$(contrast "$TB_" "S$k" "$a" "$b")"
      bl="$bl- block $k: S_$k(≤2-bit) − S_$k(≥4-bit) = $(fmt_d "$m2" "$se2" "$n2") ($(verdict "$m2" "$se2" "$n2" 1))"$'\n'
    done
    echo "The C1 contrast (same pairs) at each block input:"
    echo
    echo "$bl"
    read -r m sd n se <<<"$(contrast "$TB_" Sdeep "$a" "$b")"
    say_verdict C1-depth "FINE: smoothness degrades as bits fall, at the block inputs" "$m" "$se" "$n" 1 "Sdeep(≤2-bit) − Sdeep(≥4-bit) = $(fmt_d "$m" "$se" "$n")"
  fi

  # -------------------------------------------------------------- C2
  echo "## C2 — SLQ: asymmetric grids give higher EAR than symmetric ones at equal bits (PTQ)"
  echo
  echo "Contrast: per evaluation part, EAR(asymmetric) − EAR(symmetric) for int4-g128, int3-g128 and int2-g64 under each method, averaged over the 9 pairs; the claim predicts d > 0."
  echo
  echo "| grid | method | EAR symmetric | EAR asymmetric | asym − sym | cell verdict |"
  echo "|---|---|---|---|---|---|"
  a="" b=""
  : >"$rep/c2.dat"
  local gi=0
  for q in int4-g128 int3-g128 int2-g64; do
    local drow="$(bits_of $q)"
    for mth in "${ptq_methods[@]}"; do
      a="$a $q-asym-$mth"; b="$b $q-sym-$mth"
      local m2 sd2 n2 se2; read -r m2 sd2 n2 se2 <<<"$(contrast "$T_" ear "$q-asym-$mth" "$q-sym-$mth")"
      echo "| $q | $mth | $(fmt_ms $(msd "$T_" "$q-sym-$mth" ear | cut -d' ' -f1-2)) | $(fmt_ms $(msd "$T_" "$q-asym-$mth" ear | cut -d' ' -f1-2)) | $(fmt_d "$m2" "$se2" "$n2") | $(verdict "$m2" "$se2" "$n2" 1) |"
      drow="$drow $(msd "$T_" "$q-sym-$mth" ear | cut -d' ' -f1-2) $(msd "$T_" "$q-asym-$mth" ear | cut -d' ' -f1-2)"
    done
    echo "$drow" >>"$rep/c2.dat"
  done
  echo
  read -r m sd n se <<<"$(contrast "$T_" ear "$a" "$b")"
  plot ptq-ear-sym-asym "set xlabel 'bits per weight'; set ylabel 'EAR vs teacher'; set title 'C2: EAR, symmetric vs asymmetric grids (bars: sd over evaluation parts)'; set xrange [1.5:4.5]
plot '$rep/c2.dat' using (\$1-0.1):2:3 with yerrorlines title 'rtn sym', '' using (\$1-0.1):4:5 with yerrorlines title 'rtn asym', '' using 1:6:7 with yerrorlines title 'gptq sym', '' using 1:8:9 with yerrorlines title 'gptq asym', '' using (\$1+0.1):10:11 with yerrorlines title 'smooth sym', '' using (\$1+0.1):12:13 with yerrorlines title 'smooth asym'"
  img ptq-ear-sym-asym "EAR symmetric vs asymmetric"
  say_verdict C2 "SLQ: asymmetric > symmetric EAR at equal bits" "$m" "$se" "$n" 1 "EAR(asym) − EAR(sym) = $(fmt_d "$m" "$se" "$n")"

  # -------------------------------------------------------------- PTQ: granularity and methods
  echo "## PTQ: per channel vs per group, and RTN vs GPTQ vs smoothness-preserving GPTQ"
  echo
  echo "All PTQ results (mean ± sd over $nparts evaluation parts):"
  echo
  echo "| quantizer | method | ppl | EAR | top-1 | S | exp(H) | p > 0.01 |"
  echo "|---|---|---|---|---|---|---|---|"
  echo "| fp32 teacher | - | $(fmt_ms $(msd "$T_" teacher ppl | cut -d' ' -f1-2)) | 1 | 1 | $(fmt_ms $(msd "$T_" teacher S | cut -d' ' -f1-2)) | $(fmt_ms $(msd "$T_" teacher C | cut -d' ' -f1-2)) | $(fmt_ms $(msd "$T_" teacher Cab | cut -d' ' -f1-2)) |"
  for q in "${ptq_quantizers[@]}"; do for mth in "${ptq_methods[@]}"; do
    read -r m sd n <<<"$(msd "$T_" "$q-$mth" ppl)"
    [ "$n" -gt 0 ] || continue
    echo "| $q | $mth | $(fmt_ms "$m" "$sd") | $(fmt_ms $(msd "$T_" "$q-$mth" ear | cut -d' ' -f1-2)) | $(fmt_ms $(msd "$T_" "$q-$mth" top1 | cut -d' ' -f1-2)) | $(fmt_ms $(msd "$T_" "$q-$mth" S | cut -d' ' -f1-2)) | $(fmt_ms $(msd "$T_" "$q-$mth" C | cut -d' ' -f1-2)) | $(fmt_ms $(msd "$T_" "$q-$mth" Cab | cut -d' ' -f1-2)) |"
  done; done
  echo
  echo "Per channel vs per group (no claim; EAR(per channel) − EAR(per group), averaged over methods): int2 asym: $(read -r m sd n se <<<"$(contrast "$T_" ear "int2-ch-asym-rtn int2-ch-asym-gptq int2-ch-asym-gptq-smooth" "int2-g64-asym-rtn int2-g64-asym-gptq int2-g64-asym-gptq-smooth")"; fmt_d "$m" "$se" "$n"); ternary: $(read -r m sd n se <<<"$(contrast "$T_" ear "ternary-ch-rtn ternary-ch-gptq ternary-ch-gptq-smooth" "ternary-g64-rtn ternary-g64-gptq ternary-g64-gptq-smooth")"; fmt_d "$m" "$se" "$n")."
  echo
  a="" b=""
  for q in "${ptq_quantizers[@]}"; do a="$a $q-gptq-smooth"; b="$b $q-gptq"; done
  read -r m sd n se <<<"$(contrast "$T_" ear "$a" "$b")"
  echo "C5 is FINE's principle applied in PTQ through our own objective (\`ptq/ptq.h\`): EAR(gptq-smooth) − EAR(gptq), averaged over every quantizer; the principle predicts d > 0. GPTQ vs RTN (no claim): $(read -r m2 sd2 n2 se2 <<<"$(contrast "$T_" ear "$(for q in "${ptq_quantizers[@]}"; do printf '%s ' "$q-gptq"; done)" "$(for q in "${ptq_quantizers[@]}"; do printf '%s ' "$q-rtn"; done)")"; fmt_d "$m2" "$se2" "$n2") in EAR."
  echo
  say_verdict C5 "FINE in PTQ, our smoothness-preserving GPTQ: higher EAR than plain GPTQ" "$m" "$se" "$n" 1 "EAR(gptq-smooth) − EAR(gptq) = $(fmt_d "$m" "$se" "$n")"

  # -------------------------------------------------------------- C3
  echo "## C3 — FINE: preserving smoothness gains beyond fitting (QAT at matched steps)"
  echo
  echo "Mean ± sd over seeds; Δ = variant − none, paired by seed (± SE). ms/step: mean over the logged steps (tokens per step / tokens per second; the machine is shared, so timings are indicative)."
  echo
  echo "| variant | λ | ppl | EAR | top-1 | S | exp(H) | ms/step | Δppl | ΔEAR | verdict (ppl) |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|"
  local name mo e l
  : >"$rep/c3.dat"
  while read -r name mo e l; do
    read -r m sd n <<<"$(msd "$Q_" "$name" ppl)"
    [ "$n" -gt 0 ] || continue
    local dp dpsd dpn dpse de desd den dese
    read -r dp dpsd dpn dpse <<<"$(contrast "$Q_" ppl "$name" none)"
    read -r de desd den dese <<<"$(contrast "$Q_" ear "$name" none)"
    local vcell="-"; [ "$name" = none ] || vcell=$(verdict "$dp" "$dpse" "$dpn" -1)
    echo "| $mo$( [ "$mo" = none ] || echo " $e") | $l | $(fmt_ms "$m" "$sd") | $(fmt_ms $(msd "$Q_" "$name" ear | cut -d' ' -f1-2)) | $(fmt_ms $(msd "$Q_" "$name" top1 | cut -d' ' -f1-2)) | $(fmt_ms $(msd "$Q_" "$name" S | cut -d' ' -f1-2)) | $(fmt_ms $(msd "$Q_" "$name" C | cut -d' ' -f1-2)) | $(fmt_ms $(msd "$Q_" "$name" ms | cut -d' ' -f1-2)) | $( [ "$name" = none ] && echo - || fmt_d "$dp" "$dpse" "$dpn") | $( [ "$name" = none ] && echo - || fmt_d "$de" "$dese" "$den") | $vcell |"
    echo "$mo-$e $l $m $sd $(msd "$Q_" "$name" ear | cut -d' ' -f1-2) $(msd "$Q_" "$name" S | cut -d' ' -f1-2)" >>"$rep/c3.dat"
  done < <(qat_configs)
  echo
  echo "Teacher (fp32) on the same windows: ppl $(jf "$qatdir/none-s${seed_list[0]}/eval.json" teacher_perplexity), S $(jf "$qatdir/none-s${seed_list[0]}/eval.json" teacher_smoothness), exp(H) $(jf "$qatdir/none-s${seed_list[0]}/eval.json" teacher_candidates_exp_entropy)."
  echo
  # plot data: one block per (mode, estimator), x = lambda; "none" as a constant line
  local nm nsd ne nesd ns nssd
  read -r nm nsd _ <<<"$(msd "$Q_" none ppl)"; read -r ne nesd _ <<<"$(msd "$Q_" none ear)"; read -r ns nssd _ <<<"$(msd "$Q_" none S)"
  local blocks="" idx=0 titles=()
  : >"$rep/c3-blocks.dat"
  for mo in grad_norm grad_match; do for e in exact finite_diff; do
    awk -v k="$mo-$e" '$1 == k { print $2, $3, $4, $5, $6, $7, $8 }' "$rep/c3.dat" >>"$rep/c3-blocks.dat"
    printf '\n\n' >>"$rep/c3-blocks.dat"; titles+=("$mo $e")
  done; done
  local pl="" pe="" ps=""
  for idx in 0 1 2 3; do
    pl="$pl'$rep/c3-blocks.dat' index $idx using 1:2:3 with yerrorlines title '${titles[$idx]}', "
    pe="$pe'$rep/c3-blocks.dat' index $idx using 1:4:5 with yerrorlines title '${titles[$idx]}', "
    ps="$ps'$rep/c3-blocks.dat' index $idx using 1:6:7 with yerrorlines title '${titles[$idx]}', "
  done
  local xr; xr=$(printf '%s\n' "${lambda_list[@]}" | awk 'NR == 1 { lo = hi = $1 } { if ($1 < lo) lo = $1; if ($1 > hi) hi = $1 } END { printf "[%g:%g]", lo / 2, hi * 2 }')
  [ "$nm" = NA ] && nm=1/0; [ "$ne" = NA ] && ne=1/0; [ "$ns" = NA ] && ns=1/0
  plot qat-vs-lambda "set multiplot layout 3,1 title 'C3: ternary QAT vs lambda (bars: sd over seeds; dashed: no regularizer)'; set logscale x; set xrange $xr; set key outside right
set ylabel 'ppl'; plot ${pl}$nm with lines dt 2 title 'none'
set ylabel 'EAR'; plot ${pe}$ne with lines dt 2 title 'none'
set ylabel 'S'; set xlabel 'lambda'; plot ${ps}$ns with lines dt 2 title 'none'
unset multiplot"
  img qat-vs-lambda "QAT metrics vs lambda"
  a="" b=""
  for e in exact finite_diff; do for l in "${lambda_list[@]}"; do a="$a grad_match-$e-$l"; b="$b none"; done; done
  read -r m sd n se <<<"$(contrast "$Q_" ppl "$a" "$b")"
  local me sde ne2 see; read -r me sde ne2 see <<<"$(contrast "$Q_" ear "$a" "$b")"
  echo "Contrast: grad_match (preserve the teacher's input gradients: FINE's \"preserving smoothness\" in our definition) minus none, per seed, averaged over both estimators and every λ; the claim predicts lower perplexity (d < 0). EAR alongside: $(fmt_d "$me" "$see" "$ne2") ($(verdict "$me" "$see" "$ne2" 1))."
  local best bestd bestse bestn; best="" 
  while read -r name mo e l; do
    [ "$mo" = none ] && continue
    local dd ds dn dse; read -r dd ds dn dse <<<"$(contrast "$Q_" ppl "$name" none)"
    [ "$dd" = NA ] && continue
    if [ -z "$best" ] || awk -v a="$dd" -v b="$bestd" 'BEGIN { exit !(a < b) }'; then best=$name bestd=$dd bestse=$dse bestn=$dn; fi
  done < <(qat_configs)
  [ -n "$best" ] && echo "Best cell, chosen after the fact (so judged at 3 SE): $best, Δppl $(fmt_d "$bestd" "$bestse" "$bestn") → $(verdict "$bestd" "$bestse" "$bestn" -1 3)."
  echo
  say_verdict C3 "FINE: preserving smoothness gains beyond fitting" "$m" "$se" "$n" -1 "ppl(grad_match) − ppl(none) = $(fmt_d "$m" "$se" "$n"); EAR $(fmt_d "$me" "$see" "$ne2")"

  local QL; QL=$(head -1 "$rep/qat-blocks.tsv" | tr '\t' '\n' | grep -c '^S[0-9]')
  if [ "$QL" -gt 1 ] && [ "$(wc -l <"$rep/qat-blocks.tsv")" -gt 1 ]; then
    local QB_=$rep/qat-blocks.tsv
    echo "### The students' smoothness at every block input"
    echo
    echo "S_l = E‖dCE/dh_l‖ at the input of block l (S_0: the embeddings, where the regularizers act), mean ± sd over seeds; ΔSdeep = Sdeep(variant) − Sdeep(none), paired by seed. Whether a penalty at the embeddings reaches the blocks behind them."
    echo
    echo "| variant | λ |$(block_head "$QL") Sdeep | ΔSdeep |"
    echo "|---|---|$(block_sep "$QL")---|---|"
    echo "| fp32 teacher | - |$(block_cells "$QB_" none tS "$QL") $(fmt_ms $(msd "$QB_" none tSdeep | cut -d' ' -f1-2)) | - |"
    while read -r name mo e l; do
      [ "$(msd "$QB_" "$name" Sdeep | cut -d' ' -f3)" -gt 0 ] || continue
      local dd ds dn dse; read -r dd ds dn dse <<<"$(contrast "$QB_" Sdeep "$name" none)"
      echo "| $mo$( [ "$mo" = none ] || echo " $e") | $l |$(block_cells "$QB_" "$name" S "$QL") $(fmt_ms $(msd "$QB_" "$name" Sdeep | cut -d' ' -f1-2)) | $( [ "$name" = none ] && echo - || fmt_d "$dd" "$dse" "$dn") |"
    done < <(qat_configs)
    echo
  fi

  # -------------------------------------------------------------- C3b
  echo "## C3b — FINE: \"maximizing smoothness is not unconditionally beneficial\""
  echo
  local lmax; lmax=$(printf '%s\n' "${lambda_list[@]}" | sort -g | tail -1)
  a="grad_norm-exact-$lmax grad_norm-finite_diff-$lmax"; b="none none"
  local sm ssd sn sse; read -r sm ssd sn sse <<<"$(contrast "$Q_" S "$a" "$b")"
  read -r m sd n se <<<"$(contrast "$Q_" ppl "$a" "$b")"
  local sv; sv=$(verdict "$sm" "$sse" "$sn" -1)
  echo "Contrast: grad_norm (penalise ‖dL/dx‖², i.e. maximise smoothness) at the largest λ = $lmax, both estimators, minus none, per seed. First check that it did make the student smoother: ΔS = $(fmt_d "$sm" "$sse" "$sn") ($sv that S fell). The remark predicts that the perplexity is then worse (d > 0): Δppl = $(fmt_d "$m" "$se" "$n")."
  echo
  if [ "$sv" = reproduced ]; then
    say_verdict C3b "FINE: maximising smoothness is not unconditionally beneficial" "$m" "$se" "$n" 1 "at λ = $lmax grad_norm lowered S by $(fmt_d "$sm" "$sse" "$sn") and changed ppl by $(fmt_d "$m" "$se" "$n")"
  else
    say_verdict C3b "FINE: maximising smoothness is not unconditionally beneficial" NA NA 0 1 "grad_norm at λ = $lmax did not lower S by more than 2 SE ($(fmt_d "$sm" "$sse" "$sn")), so the remark is not tested; Δppl $(fmt_d "$m" "$se" "$n")"
  fi

  # -------------------------------------------------------------- estimator cost
  echo "## Estimator cost"
  echo
  echo "| variant | ms/step (mean ± sd over all λ and seeds) | × none |"
  echo "|---|---|---|"
  local nms; nms=$(msd "$Q_" none ms | cut -d' ' -f1)
  for mo in grad_norm grad_match; do for e in exact finite_diff; do
    read -r m sd n <<<"$(awk -F'\t' -v p="$mo-$e-" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "ms") c = i; next } index($1, p) == 1 && $c != "NA" { s += $c; ss += $c * $c; k++ } END { if (!k) print "NA NA 0"; else { m = s / k; v = k > 1 ? (ss - k * m * m) / (k - 1) : 0; printf "%.6g %.6g %d\n", m, sqrt(v > 0 ? v : 0), k } }' "$Q_")"
    echo "| $mo $e | $(fmt_ms "$m" "$sd") | $(awk -v a="$m" -v b="$nms" 'BEGIN { if (a == "NA" || b == "NA" || b == 0) print "-"; else printf "%.2f", a / b }') |"
  done; done
  echo "| none | $(fmt_ms $(msd "$Q_" none ms | cut -d' ' -f1-2)) | 1 |"
  echo

  # -------------------------------------------------------------- C4
  echo "## C4 — FINE: quantized models lose candidates (generation)"
  echo
  echo "The decoding tree's width along sampled continuations. \`qat eval\` measures candidates on given token windows only, so: each model continues $(wc -l <"$gen/prompts.txt" 2>/dev/null || echo 0) prompts (the first six words of evenly spaced corpus paragraphs) by $gen_tokens tokens (temperature 1, no top-k: ancestral sampling); the continuations are tokenized again (\`qat prep\`) and scored with \`qat eval --metrics\` in windows of $gen_seq tokens. **On the teacher's continuations** every model is scored at the same positions (split into $nparts parts for the error bars); **on its own continuations** (one evaluation, no error bar) each model walks its own decoding path. Candidates = our next-token stand-in (exp(H), count with p > 0.01), not FINE's sequence-neighbourhood measure."
  echo
  echo "| model | exp(H) on teacher's continuations | teacher's exp(H) there | teacher − model | p > 0.01 (model / teacher) | exp(H) on own continuations | teacher's exp(H) on them |"
  echo "|---|---|---|---|---|---|---|"
  : >"$rep/c4.dat"
  local quantized=() i=0
  if [ -f "$gen/models.txt" ]; then
    while IFS= read -r line; do
      label=${line%%:*}; i=$((i + 1))
      read -r m sd n <<<"$(msd "$G_" "$label" C)"
      local tm tsd; read -r tm tsd _ <<<"$(msd "$G_" "$label" tC)"
      local dd ds dn dse
      # teacher - model on the same positions: tC - C per part
      read -r dd ds dn dse <<<"$(awk -F'\t' -v k="$label" 'NR > 1 && $1 == k && $3 != "NA" && $4 != "NA" { d = $4 - $3; n++; s += d; ss += d * d }
        END { if (!n) { print "NA NA 0 NA"; exit } m = s / n; v = n > 1 ? (ss - n * m * m) / (n - 1) : 0; if (v < 0) v = 0; printf "%.6g %.6g %d %s\n", m, sqrt(v), n, (n > 1 ? sprintf("%.6g", sqrt(v / n)) : "NA") }' "$G_")"
      local own=$gen/$label/own.json
      echo "| $label | $(fmt_ms "$m" "$sd") | $(fmt_ms "$tm" "$tsd") | $( [ "$label" = teacher ] && echo - || fmt_d "$dd" "$dse" "$dn") | $(mean_of "$G_" "$label" Cab) / $(mean_of "$G_" "$label" tCab) | $(jf "$own" candidates_exp_entropy) | $(jf "$own" teacher_candidates_exp_entropy) |"
      echo "$i \"$label\" $m $sd $(jf "$own" candidates_exp_entropy | sed 's/^$/NA/')" >>"$rep/c4.dat"
      [ "$label" = teacher ] || quantized+=("$label")
    done <"$gen/models.txt"
  fi
  echo
  plot candidates "set style data histogram; set style histogram errorbars gap 1 lw 1; set style fill solid 0.6 border -1; set ylabel 'exp(H) (effective candidates, our stand-in)'; set title 'C4: effective candidates along the teacher''s sampled continuations (bars: sd over parts)'; set xtics rotate by -35; set yrange [0:*]
plot '$rep/c4.dat' using 3:4:xtic(2) title 'on the teacher''s continuations', '' using 5:(0) title 'on its own continuations'"
  img candidates "effective candidates, teacher vs students"
  # per part: mean over quantized models of (teacher - model)
  read -r m sd n se <<<"$(awk -F'\t' -v list=" ${quantized[*]} " 'NR > 1 && index(list, " " $1 " ") && $3 != "NA" && $4 != "NA" { s[$2] += $4 - $3; c[$2]++ }
    END { for (r in s) { d = s[r] / c[r]; n++; t += d; tt += d * d } if (!n) { print "NA NA 0 NA"; exit } m = t / n; v = n > 1 ? (tt - n * m * m) / (n - 1) : 0; if (v < 0) v = 0; printf "%.6g %.6g %d %s\n", m, sqrt(v), n, (n > 1 ? sprintf("%.6g", sqrt(v / n)) : "NA") }' "$G_")"
  # on validation windows: teacher - PTQ models (all), per part
  local vm vsd vn vse
  read -r vm vsd vn vse <<<"$(awk -F'\t' 'NR > 1 && $1 != "teacher" && $7 != "NA" && $10 != "NA" { s[$2] += $10 - $7; c[$2]++ }
    END { for (r in s) { d = s[r] / c[r]; n++; t += d; tt += d * d } if (!n) { print "NA NA 0 NA"; exit } m = t / n; v = n > 1 ? (tt - n * m * m) / (n - 1) : 0; if (v < 0) v = 0; printf "%.6g %.6g %d %s\n", m, sqrt(v), n, (n > 1 ? sprintf("%.6g", sqrt(v / n)) : "NA") }' "$T_")"
  echo "Contrast: per part of the teacher's continuations, exp(H) of the teacher minus that of the quantized model at the same positions, averaged over the ${#quantized[@]} quantized models above; the claim predicts d > 0. For comparison, on validation windows (every PTQ model): teacher − model = $(fmt_d "$vm" "$vse" "$vn") ($(verdict "$vm" "$vse" "$vn" 1))."
  echo
  say_verdict C4 "FINE: quantized models lose candidates" "$m" "$se" "$n" 1 "exp(H) teacher − quantized along the teacher's continuations = $(fmt_d "$m" "$se" "$n"); on validation windows $(fmt_d "$vm" "$vse" "$vn")"

  echo "## Summary"
  echo
  sed 's/^/- /' "$rep/verdicts.md"
  echo
  mkdir -p "$pub" && cp "$rep"/*.tsv "$pub/"
  echo "Raw data: \`$(realpath --relative-to="$(dirname "$doc")" "$pub")/*.tsv\` (one row per model and replicate; copies of \`${rep#"$here"/}/*.tsv\`), every \`eval*.json\` under \`${out#"$here"/}\`; rerun \`launch/science.sh$( [ "$mode" = full ] || echo " --$mode") report\` to rewrite this file."
  } >"$doc.tmp"
  mv "$doc.tmp" "$doc"
  ((have_gnuplot)) || log "report: gnuplot not installed: plots skipped (Debian package gnuplot-nox)"
  timing report $(( $(date +%s) - t0 ))
  cd "$here"
  log "report: $doc"
}

# ================================================================ run
for p in "${all_parts[@]}"; do
  want "$p" || continue
  "part_$p"
done
log "done in $(( $(date +%s) - started )) s (outputs: $out)"
