#!/usr/bin/env bash
# Issue 15's memory findings through the CLI, each under a virtual-memory limit (ulimit -v 3 GB;
# qat itself needs about 1.5 GB of address space for its libraries): files that used to make qat
# allocate gigabytes now cost nothing or fail with a clear error.
#   - a packed model claiming qat.max_seq_len 2^24 at head dim 128 (the old RoPE tables: 8 GiB)
#     loads and evaluates;
#   - a 96-byte tokenizer.json with id 2^24 - 1 is refused (it cost 855 MB);
#   - a recipe whose base is /dev/zero is refused (it grew without bound);
#   - a shard with an id beyond the model's vocabulary names the shard, the offset and the id.
#   hostile_inputs_test.sh QAT_BINARY SOURCE_DIR
set -euo pipefail
qat=$1 src=$2
source "$src/tests/scripts/tiny_run.sh"
tiny_setup hostile "$qat"
fail() { echo "FAIL: $*"; exit 1; }
limited() { (ulimit -v 3000000; "$@"); }

# A dense packed model: vocab 258 (the byte tokenizer), hidden 128, one head of 128, 1 layer.
perl -e '
  use strict; use warnings;
  my ($V, $H, $I) = (258, 128, 128);
  my (%t, @order);
  my $mat = sub { my ($n, $r, $c) = @_; push @order, $n;
    $t{$n} = [[$r, $c], pack("f<*", map { (($_ * 7) % 11 - 5) * 0.01 } 1 .. $r * $c)] };
  my $vec = sub { my ($n) = @_; push @order, $n; $t{$n} = [[$H], pack("f<*", (1) x $H)] };
  $mat->("model.embed_tokens.weight", $V, $H);
  $vec->($_) for qw(model.norm.weight model.layers.0.input_layernorm.weight
                    model.layers.0.post_attention_layernorm.weight);
  $mat->("model.layers.0.$_.weight", $H, $H) for qw(self_attn.q_proj self_attn.k_proj
    self_attn.v_proj self_attn.o_proj mlp.gate_proj mlp.up_proj mlp.down_proj);
  my %meta = ("format" => "qat-packed", "qat.version" => "2", "qat.vocab_size" => $V,
    "qat.hidden_size" => $H, "qat.intermediate_size" => $I, "qat.num_layers" => 1,
    "qat.num_heads" => 1, "qat.num_kv_heads" => 1, "qat.max_seq_len" => 16777216,
    "qat.rope_theta" => 10000, "qat.rms_norm_eps" => "1e-5", "qat.tie_embeddings" => 1,
    "qat.bos_id" => 256, "qat.eos_id" => 257, "qat.tokenizer" => "byte");
  my ($off, $data, @h) = (0, "");
  for my $n (@order) { my ($shape, $bytes) = @{$t{$n}}; my $end = $off + length $bytes;
    push @h, sprintf(q("%s":{"dtype":"F32","shape":[%s],"data_offsets":[%d,%d]}), $n,
                     join(",", @$shape), $off, $end); $data .= $bytes; $off = $end; }
  push @h, q("__metadata__":{) . join(",", map { sprintf(q("%s":"%s"), $_, $meta{$_}) } sort keys %meta) . "}";
  my $header = "{" . join(",", @h) . "}"; $header .= " " x ((8 - length($header) % 8) % 8);
  open(my $o, ">:raw", $ARGV[0]) or die; print $o pack("Q<", length $header), $header, $data;
' "$work/huge.safetensors"
limited "$qat" eval --model "$work/huge.safetensors" --data "$work/data/val.bin" --seq-len 16 \
  --windows 2 --max-new-tokens 0 > "$work/huge.log" 2>&1 || { cat "$work/huge.log"; fail "qat.max_seq_len 2^24 under ulimit -v"; }
grep -q "perplexity" "$work/huge.log" || { cat "$work/huge.log"; fail "no perplexity"; }

printf '{"model":{"type":"BPE","vocab":{"a":0,"b":16777215},"merges":[]}}' > "$work/tokenizer.json"
if limited "$qat" prep --tokenizer "$work/tokenizer.json" --out "$work/p" "$work/corpus.txt" > "$work/tok.log" 2>&1; then
  fail "a sparse tokenizer.json was accepted"
fi
grep -q 'has id 16777215, but the file holds only 2 tokens' "$work/tok.log" || { cat "$work/tok.log"; fail "tokenizer message"; }

printf 'base: /dev/zero\n' > "$work/zero.yaml"
if limited "$qat" train "$work/zero.yaml" > "$work/zero.log" 2>&1; then fail "base: /dev/zero was accepted"; fi
grep -q "zero.yaml:1: base '/dev/zero'.*must be a regular file" "$work/zero.log" || { cat "$work/zero.log"; fail "recipe message"; }

# A shard whose 4th token is 300: uint16 layout (header 256 x int32, then the ids).
perl -e 'print pack("l<256", 20240520, 1, 40, (0) x 253), pack("S<*", 1, 2, 3, 300, (5) x 36)' > "$work/bad.bin"
if limited "$qat" eval --model "$work/huge.safetensors" --data "$work/bad.bin" --seq-len 8 --windows 1 \
     --max-new-tokens 0 > "$work/ids.log" 2>&1; then fail "token id 300 >= vocab 258 was accepted"; fi
grep -q "bad.bin: byte offset 1030: token 3 has id 300, outside the model's vocabulary \[0, 258)" "$work/ids.log" \
  || { cat "$work/ids.log"; fail "token range message"; }
echo "hostile_inputs_test: ok"
