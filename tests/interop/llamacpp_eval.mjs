// llama.cpp on a GGUF written by `qat export --format gguf`: perplexity over the windows `qat eval`
// uses (window w = tokens [w*T, w*T+T] of a shard, each in a fresh context; data/sampler.cc) and
// greedy text from a prompt, compared with what `qat eval --json` printed for the same model.
//   node llamacpp_eval.mjs MODEL.gguf SHARD.bin SEQ_LEN WINDOWS PROMPT NEW_TOKENS QAT_EVAL.json
//                          MAX_REL_PPL_DIFF same|any
// Exit status 1 when the perplexities differ by more than MAX_REL_PPL_DIFF (relative), or, with
// "same", when the greedy texts differ.
// Log-probabilities come from the raw logits (no sampler in between). The prompt gets BOS first
// when the vocabulary has one, as `qat eval` does.
import {getLlama} from "node-llama-cpp";
import fs from "node:fs";
import {readShard} from "./shard.mjs";

const [model_path, shard_path, T_, W_, prompt, n_new_, qat_json, tol_, greedy] = process.argv.slice(2);
const T = Number(T_), W = Number(W_), n_new = Number(n_new_), tol = Number(tol_);
const ours = JSON.parse(fs.readFileSync(qat_json, "utf8"));
const tokens = readShard(shard_path);
const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
const model = await llama.loadModel({modelPath: model_path});
const context = await model.createContext({contextSize: Math.max(T, n_new + 16), batchSize: T});
const seq = context.getSequence();

let nll = 0, n = 0;
const windows = Math.min(W, Math.floor((tokens.length - 1) / T));
for (let w = 0; w < windows; ++w) {
  await seq.clearHistory();
  const input = [];
  for (let i = 0; i < T; ++i) input.push([tokens[w * T + i], {generateNext: {logits: true}}]);
  const out = await seq.controlledEvaluate(input);
  for (let i = 0; i < T; ++i) {
    const logits = out[i].next.logits;
    let max = -Infinity, sum = 0;
    for (const v of logits.values()) max = Math.max(max, v);
    for (const v of logits.values()) sum += Math.exp(v - max);
    nll -= logits.get(tokens[w * T + i + 1]) - max - Math.log(sum);
    ++n;
  }
}

await seq.clearHistory();
const ids = Array.from(model.tokenize(prompt, false));
let next = model.tokens.bos == null ? ids : [model.tokens.bos, ...ids];
const generated = [];
for (let k = 0; k < n_new; ++k) {
  const items = next.map((t, i) => (i + 1 < next.length ? t : [t, {generateNext: {token: true, options: {temperature: 0}}}]));
  const out = await seq.controlledEvaluate(items);
  const t = out[items.length - 1].next.token;
  if (t === model.tokens.eos) break;
  generated.push(t);
  next = [t];
}
const ppl = Math.exp(nll / n), sample = prompt + model.detokenize(generated);
const rel = (ppl - ours.perplexity) / ours.perplexity, same_text = sample === ours.sample;
const name = model_path.split("/").pop();
console.log(`  ${name}: perplexity llama.cpp ${ppl.toFixed(5)} vs qat ${ours.perplexity.toFixed(5)} ` +
            `(${(100 * rel).toFixed(4)}%, ${n} tokens); greedy ${n_new} tokens ${same_text ? "identical" : "differ"}`);
if (!same_text) console.log(`    llama.cpp: ${JSON.stringify(sample)}\n    qat:       ${JSON.stringify(ours.sample)}`);
await context.dispose();
await model.dispose();
process.exit(Math.abs(rel) > tol || (greedy === "same" && !same_text) ? 1 : 0);
