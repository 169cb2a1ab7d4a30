# Sourced by the CLI-level training tests: `tiny_setup NAME QAT_BINARY` makes $work (removed at
# exit), a tiny corpus as token shards in $work/data, and $work/base.yaml, a tiny model on that
# data for a test's own recipe to name as `base:`. QAT_BIN and one thread per rank are exported.
tiny_setup() {
  work=$(mktemp -d "${TMPDIR:-/tmp}/qat_$1.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  export QAT_BIN=$2 OMP_NUM_THREADS=1
  for i in $(seq 1 120); do echo "the cat sat on the mat. the dog sat on the log. line $i"; echo %; done > "$work/corpus.txt"
  "$2" prep --out "$work/data" --fortune --val-fraction 0.1 "$work/corpus.txt" > /dev/null
  cat > "$work/base.yaml" <<YAML
run: {log_every: 1}
model: {hidden_size: 32, intermediate_size: 64, num_layers: 2, num_heads: 4, num_kv_heads: 2, max_seq_len: 32}
data: {train: [$work/data/train.bin], val: [$work/data/val.bin], seq_len: 16}
train: {batch_size: 8, micro_batch_size: 2, lr: 3.0e-3, warmup_steps: 2}
eval: {max_windows: 4}
YAML
}
