/**
 * text_similarity metric throughput and latency on a fixed set of ~100-character (input, reference)
 * pairs: near-duplicates, reorderings, paraphrases and shorter answers (the partial_ratio path of
 * fuzzy_match). Prints calls/s and p50/p99 per call for each metric.
 * Run: npx tsx bench/similarity.ts [--seconds N]
 */
import { type LocalMetric, textSimilarity } from "../grader-sidecar/src/similarity/index.js";
import { SIMILARITY_METRICS } from "../proto/graders.js";

const secondsArg = process.argv.indexOf("--seconds");
const seconds = secondsArg >= 0 ? Number(process.argv[secondsArg + 1]) : 1;

const METRICS = SIMILARITY_METRICS.filter((m): m is LocalMetric => m !== "cosine");

// Deterministic pairs (mulberry32 PRNG), so runs are comparable.
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const WORDS = (
  "the a of to and in model answer capital France Paris city reward grader training correct value " +
  "running quickly generally organization computes values 42 3.14 because therefore however result"
).split(" ");

function makePairs(count: number): Array<[string, string]> {
  const r = rng(20240611);
  const pick = () => WORDS[Math.floor(r() * WORDS.length)] as string;
  const sentence = (chars: number) => {
    let s = pick();
    while (s.length < chars) s += (r() < 0.1 ? ", " : " ") + pick();
    return `${s[0]?.toUpperCase()}${s.slice(1)}.`;
  };
  const pairs: Array<[string, string]> = [];
  for (let i = 0; i < count; i++) {
    const ref = sentence(95);
    const words = ref.split(" ");
    let input: string;
    switch (i % 4) {
      case 0: // near duplicate with typos
        input = ref.replace(/e/, "a").replace(/t/, "tt");
        break;
      case 1: // reordered
        input = [...words.slice(words.length >> 1), ...words.slice(0, words.length >> 1)].join(" ");
        break;
      case 2: // unrelated answer of similar length
        input = sentence(95);
        break;
      default: // short answer inside a long reference (partial_ratio path)
        input = words.slice(2, 6).join(" ");
    }
    pairs.push([input, ref]);
  }
  return pairs;
}

const pairs = makePairs(64);
const mean = (xs: string[]) => Math.round(xs.reduce((n, s) => n + s.length, 0) / xs.length);
console.log(
  `${pairs.length} pairs, mean length input ${mean(pairs.map((p) => p[0]))} / reference ${mean(pairs.map((p) => p[1]))} chars; ${seconds}s per metric`,
);

const pct = (xs: Float64Array, p: number) => xs[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))] as number;
const rows: string[][] = [["metric", "calls/s", "p50 µs", "p99 µs"]];
let sink = 0;

for (const metric of METRICS) {
  for (let k = 0; k < 2000; k++) {
    const [a, b] = pairs[k % pairs.length] as [string, string];
    sink += textSimilarity(metric, a, b);
  }
  // throughput: tight loop, timed in batches
  let calls = 0;
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  while (performance.now() < end) {
    for (let k = 0; k < 256; k++, calls++) {
      const [a, b] = pairs[calls % pairs.length] as [string, string];
      sink += textSimilarity(metric, a, b);
    }
  }
  const rate = (calls / (performance.now() - t0)) * 1000;
  // latency: one call at a time
  const lat = new Float64Array(20000);
  for (let k = 0; k < lat.length; k++) {
    const [a, b] = pairs[k % pairs.length] as [string, string];
    const s = process.hrtime.bigint();
    sink += textSimilarity(metric, a, b);
    lat[k] = Number(process.hrtime.bigint() - s) / 1000;
  }
  lat.sort();
  rows.push([metric, Math.round(rate).toLocaleString("en"), pct(lat, 50).toFixed(1), pct(lat, 99).toFixed(1)]);
}

const widths = rows[0]?.map((_, c) => Math.max(...rows.map((r) => (r[c] as string).length))) ?? [];
for (const r of rows)
  console.log(r.map((cell, c) => (c === 0 ? cell.padEnd(widths[c] ?? 0) : cell.padStart(widths[c] ?? 0))).join("  "));
if (Number.isNaN(sink)) console.log("unreachable");
