/**
 * Throughput and latency of the python grader sandbox with the default pool.
 * Usage: npx tsx bench/python-grader.ts [calls=5000] [concurrency=32]
 */
import { PythonSandbox } from "../grader-sidecar/src/python/sandbox.js";

const calls = Number(process.argv[2] ?? 5000);
const concurrency = Number(process.argv[3] ?? 32);

const graders: Record<string, string> = {
  trivial: "def grade(sample, item):\n    return 1.0 if sample['output_text'] == item['answer'] else 0.0\n",
  rapidfuzz:
    "from rapidfuzz import fuzz\n\ndef grade(sample, item):\n" +
    "    return fuzz.ratio(sample['output_text'], item['answer']) / 100\n",
  numpy:
    "import numpy as np\n\ndef grade(sample, item):\n" +
    "    a = np.frombuffer(sample['output_text'].encode(), dtype=np.uint8).astype(float)\n" +
    "    return float(np.tanh(a.mean() / 255))\n",
};

function pct(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

async function run(sb: PythonSandbox, name: string, source: string) {
  const sample = { output_text: "The answer is 42.", output_tools: [], choices: [] };
  const item = { answer: "The answer is 42." };
  for (let i = 0; i < 50; i++) await sb.grade(source, sample, item); // warm: module cached in every worker
  const lat: number[] = [];
  let next = 0;
  let failures = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < calls) {
        next++;
        const s = performance.now();
        const r = await sb.grade(source, sample, item);
        lat.push(performance.now() - s);
        if (!r.ok) failures++;
      }
    }),
  );
  const secs = (performance.now() - t0) / 1000;
  lat.sort((a, b) => a - b);
  console.log(
    `${name.padEnd(10)} ${String(calls).padStart(6)} calls  ${(calls / secs).toFixed(0).padStart(6)} grades/s  ` +
      `p50 ${pct(lat, 50).toFixed(2)} ms  p99 ${pct(lat, 99).toFixed(2)} ms  failures ${failures}`,
  );
}

const sb = new PythonSandbox();
const t0 = performance.now();
await sb.start();
const st = sb.stats();
console.log(
  `pool: ${st.workers} workers, isolation ${st.isolation}, ready in ${(performance.now() - t0).toFixed(0)} ms; ` +
    `concurrency ${concurrency}`,
);
for (const [name, source] of Object.entries(graders)) await run(sb, name, source);
const t1 = performance.now();
await sb.grade("def grade(s, i):\n    while True: pass\n", { output_text: "" }, {}, { timeoutMs: 200 });
await sb.grade(graders.trivial!, { output_text: "" }, { answer: "" });
console.log(`timeout (200 ms) + replacement + next grade: ${(performance.now() - t1).toFixed(0)} ms`);
await sb.close();
