/**
 * text_similarity metric throughput and latency on a fixed set of ~100-character (input, reference)
 * pairs: near-duplicates, reorderings, paraphrases and shorter answers (the partial_ratio path of
 * fuzzy_match). Prints calls/s and p50/p99 per call for each metric.
 * Run: npx tsx bench/similarity.ts [--seconds N]
 *
 * `--long [--kb N] [--unbounded]`: instead, one call per metric on hostile long pairs (N kB each, default
 * 1024: words, and a short text inside a long one, where fuzzy_match runs partial_ratio), through the cost
 * bounds of similarity/limits.ts (what the grader does); `--unbounded` calls the metric directly (the
 * behaviour before the bounds: minutes at 1 MB, so use --kb 20 or so), plus each metric's worst case at its limit.
 */
import { type LocalMetric, textSimilarity } from "../grader-sidecar/src/similarity/index.js";
import { DEFAULT_SIMILARITY_LIMITS, similarityOverLimit } from "../grader-sidecar/src/similarity/limits.js";
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

if (process.argv.includes("--long")) {
  long();
  process.exit(0);
}

function long() {
  const kbArg = process.argv.indexOf("--kb");
  const chars = (kbArg >= 0 ? Number(process.argv[kbArg + 1]) : 1024) * 1024;
  const unbounded = process.argv.includes("--unbounded");
  const r = rng(7);
  const letters = (n: number, alphabet: string) => {
    let s = "";
    while (s.length < n) s += alphabet[Math.floor(r() * alphabet.length)];
    return s;
  };
  const text = (n: number) => {
    let s = "";
    while (s.length < n) s += `${WORDS[Math.floor(r() * WORDS.length)]} `;
    return s.slice(0, n);
  };
  const grade = (metric: LocalMetric, a: string, b: string) => {
    const t0 = performance.now();
    const why = unbounded ? null : similarityOverLimit(metric, a, b);
    const out = why ?? textSimilarity(metric, a, b).toFixed(3);
    return [(performance.now() - t0).toFixed(1), why ? "truncated_observation_error" : `score ${out}`];
  };
  console.log(`${unbounded ? "unbounded" : "bounded"}; one call each`);
  const rows: string[][] = [["metric", "pair", "ms", "result"]];
  const pairs: [string, string, string][] = [
    [`words ${chars / 1024} kB × 2`, text(chars), text(chars)],
    [
      `"ab" ${Math.floor(chars / 1536)} kB in ${chars / 1024} kB`,
      letters(Math.floor(chars / 1.5), "ab"),
      letters(chars, "ab"),
    ],
  ];
  for (const metric of METRICS) {
    for (const [name, a, b] of pairs) rows.push([metric, name, ...grade(metric, a, b)]);
    if (unbounded) continue;
    // The slowest pairs within the limits found while choosing them.
    const max = DEFAULT_SIMILARITY_LIMITS.maxChars[metric];
    if (metric === "fuzzy_match") {
      const m = Math.floor(Math.cbrt(DEFAULT_SIMILARITY_LIMITS.fuzzyPartialCost / 1.5));
      rows.push([
        metric,
        `"ab" ${m} in ${Math.floor(1.5 * m)} (at the cost limit)`,
        ...grade(metric, letters(m, "ab"), letters(Math.floor(1.5 * m), "ab")),
      ]);
      const m2 = Math.floor(Math.sqrt(DEFAULT_SIMILARITY_LIMITS.fuzzyPartialCost / max));
      rows.push([
        metric,
        `"ab" ${m2} in ${max} (at the cost limit)`,
        ...grade(metric, letters(m2, "ab"), letters(max, "ab")),
      ]);
      rows.push([
        metric,
        `"ab " ${max} × 2 (at the length limit)`,
        ...grade(metric, letters(max, "ab "), letters(max, "ab ")),
      ]);
    } else {
      rows.push([
        metric,
        `"a " vs "a b " ${max} (at the limit)`,
        ...grade(metric, "a ".repeat(max / 2), "a b ".repeat(max / 4)),
      ]);
    }
  }
  const widths = rows[0]?.map((_, c) => Math.max(...rows.map((row) => (row[c] as string).length))) ?? [];
  for (const row of rows)
    console.log(
      row.map((cell, c) => (c === 2 ? cell.padStart(widths[c] ?? 0) : cell.padEnd(widths[c] ?? 0))).join("  "),
    );
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
