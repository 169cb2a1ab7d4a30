// Tokens of a qat token shard (llm.c layout, data/tokens.h): a 256 x int32 header (magic 20240520
// for uint16 tokens, 20240801 for uint32; header[2] + header[3] * 2^32 = token count), then tokens.
import fs from "node:fs";
export function readShard(path) {
  const b = fs.readFileSync(path);
  const magic = b.readInt32LE(0), wide = magic === 20240801;
  if (!wide && magic !== 20240520) throw new Error(`${path}: bad magic ${magic}`);
  const n = b.readUInt32LE(8) + b.readUInt32LE(12) * 2 ** 32, out = new Array(n);
  for (let i = 0; i < n; ++i) out[i] = wide ? b.readUInt32LE(1024 + 4 * i) : b.readUInt16LE(1024 + 2 * i);
  return out;
}
// Whether `ids` occurs as a contiguous run in `stream` (both arrays of numbers).
export function containsRun(stream, ids) {
  return `,${stream.join(",")},`.includes(`,${ids.join(",")},`);
}
