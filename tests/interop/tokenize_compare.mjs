// Tokenizes files with a reference implementation and checks that each file's ids occur, in one
// piece, in the shards `qat prep --tokenizer` wrote for the same files (a document there is
// [BOS] + ids + [EOS]). Prints one line per file; exit status 1 if any file differs.
//   node tokenize_compare.mjs transformers TOKENIZER_DIR SHARD_DIR FILE...   (transformers.js)
//   node tokenize_compare.mjs llama.cpp MODEL.gguf SHARD_DIR FILE...         (llama.cpp vocab)
import fs from "node:fs";
import {readShard, containsRun} from "./shard.mjs";

const [impl, source, shard_dir, ...files] = process.argv.slice(2);
let encode;
if (impl === "transformers") {
  const {TokenizerLoader} = await import("@lenml/tokenizers");
  const tok = TokenizerLoader.fromPreTrained({
    tokenizerJSON: JSON.parse(fs.readFileSync(`${source}/tokenizer.json`, "utf8")),
    tokenizerConfig: JSON.parse(fs.readFileSync(`${source}/tokenizer_config.json`, "utf8")),
  });
  encode = (text) => tok.encode(text, {add_special_tokens: false});
} else {
  const {getLlama} = await import("node-llama-cpp");
  const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
  const model = await llama.loadModel({modelPath: source, vocabOnly: true});
  encode = (text) => Array.from(model.tokenize(text, true));
}
const stream = [...readShard(`${shard_dir}/train.bin`), ...readShard(`${shard_dir}/val.bin`)];
let bad = 0;
for (const f of files) {
  const ids = encode(fs.readFileSync(f, "utf8"));
  const same = containsRun(stream, ids);
  bad += same ? 0 : 1;
  console.log(`  ${impl} (${source.split("/").slice(-2).join("/")}) ${f.split("/").pop()}: ${ids.length} tokens, ${same ? "identical" : "DIFFERENT"}`);
}
process.exit(bad ? 1 : 0);
