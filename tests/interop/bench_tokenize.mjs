// The peer side of tests/interop/bench_prep.sh: tokenizes the "text" of every line of a JSON Lines
// file with transformers.js (@lenml/tokenizers) on a tokenizer.json, times it, and checks the ids
// against the shard `qat prep --val-fraction 0` wrote for the same file (one document per line,
// blank ones skipped, each framed by the tokenizer's BOS and/or EOS there).
//   node bench_tokenize.mjs TOKENIZER_DIR FILE.jsonl SHARD.bin
// Prints one line: "transformers.js: MB, s, MB/s, tokens/s, documents identical/total".
import fs from "node:fs";
import {readShard} from "./shard.mjs";

const [source, jsonl, shard] = process.argv.slice(2);
const {TokenizerLoader} = await import("@lenml/tokenizers");
const t0 = performance.now();
const tok = TokenizerLoader.fromPreTrained({
  tokenizerJSON: JSON.parse(fs.readFileSync(`${source}/tokenizer.json`, "utf8")),
  tokenizerConfig: JSON.parse(fs.readFileSync(`${source}/tokenizer_config.json`, "utf8")),
});
const load_s = (performance.now() - t0) / 1e3;

// Timed: reading the file, parsing each line and encoding its text (what qat prep does before it
// writes), not loading the tokenizer.
const t1 = performance.now();
const lines = fs.readFileSync(jsonl, "utf8").split("\n");
const docs = [];
let bytes = 0, tokens = 0;
for (const line of lines) {
  if (line.length === 0) continue;
  bytes += Buffer.byteLength(line, "utf8") + 1;
  const text = JSON.parse(line).text;
  if (!/[^ \t\r\n\v\f]/.test(text)) continue;
  const ids = tok.encode(text, {add_special_tokens: false});
  tokens += ids.length;
  docs.push(ids);
}
const s = (performance.now() - t1) / 1e3;

// The shard: documents in order, each [BOS] + ids + [EOS] with a frame of 1 or 2 tokens.
const stream = readShard(shard);
const frame = (stream.length - tokens) / docs.length;
let same = 0, p = 0;
if (frame === 1 || frame === 2) {
  for (const ids of docs) {
    p += frame - 1;
    let ok = true;
    for (let i = 0; i < ids.length; ++i) if (stream[p + i] !== ids[i]) { ok = false; break; }
    same += ok ? 1 : 0;
    p += ids.length + 1;
  }
}
console.log(`transformers.js: ${(bytes / 1e6).toFixed(1)} MB in ${s.toFixed(2)} s (${(bytes / 1e6 / s).toFixed(2)} MB/s, ` +
            `${Math.round(tokens / s)} tokens/s; tokenizer load ${load_s.toFixed(2)} s); ids: ` +
            `${same}/${docs.length} documents identical to qat's${frame === 1 || frame === 2 ? "" : ` (token counts differ: shard ${stream.length}, ours ${tokens} + frames)`}`);
process.exit(same === docs.length ? 0 : 1);
