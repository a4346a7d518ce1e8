/**
 * score_model grading through a judge endpoint served by `rft serve` (in this process, a random ~0.2M-parameter
 * byte-level model on wasm: plumbing cost, not judgement quality), per endpoint `maxConcurrency`: grades/s,
 * p50/p99 latency per grade, the judge's tokens, and the batch sizes the server formed. Also the client side alone
 * against the named fake judge (test/helpers/fake-chat-server.ts), to separate our overhead from the model's.
 * Run: npx tsx bench/judge.ts [--grades N] [--tokens N]
 */
import { GraderEngine } from "../grader-sidecar/src/engine.js";
import { resolveEndpoints } from "../grader-sidecar/src/model-client.js";
import { useBackend } from "../trainer/model/backend.js";
import { createRandomModel, disposeModel } from "../trainer/model/model.js";
import { startServer } from "../trainer/serve/server.js";
import { startFakeChatServer } from "../test/helpers/fake-chat-server.js";

const arg = (flag: string, dflt: number) => {
  const i = process.argv.indexOf(flag);
  return i >= 0 ? Number(process.argv[i + 1]) : dflt;
};
const grades = arg("--grades", 64);
const tokens = arg("--tokens", 8);
const pct = (xs: number[], p: number) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!;

const grader = {
  type: "score_model",
  name: "judge",
  model: "gpt-4o-2024-08-06",
  input: [
    { role: "system", content: "Score the answer from 0 to 1." },
    { role: "user", content: "Question: {{ item.q }}\nAnswer: {{ sample.output_text }} SCORE=0.5" },
  ],
  sampling_params: { max_completions_tokens: tokens, temperature: 1 },
};

async function run(label: string, baseUrl: string, servedModel: string | undefined, cap: number) {
  const engine = new GraderEngine({
    models: resolveEndpoints([
      { baseUrl, maxConcurrency: cap, structuredOutputs: false, ...(servedModel ? { servedModel } : {}) },
    ]),
  });
  const c = await engine.compile(grader);
  await engine.grade(c, { q: "warm-up" }, { output_text: "x" });
  const lat: number[] = [];
  let prompt = 0;
  let completion = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: grades }, async (_, i) => {
      const s = performance.now();
      const r = await engine.grade(c, { q: `What is ${i} + ${i}?` }, { output_text: String(2 * i) });
      lat.push(performance.now() - s);
      for (const u of Object.values(r.model_grader_token_usage_per_model)) {
        prompt += u.prompt_tokens;
        completion += u.completion_tokens;
      }
    }),
  );
  const ms = performance.now() - t0;
  await engine.close();
  return [
    label,
    String(cap),
    ((grades / ms) * 1000).toFixed(1),
    `${pct(lat, 50).toFixed(1)} ms`,
    `${pct(lat, 99).toFixed(1)} ms`,
    `${(prompt / grades).toFixed(0)} / ${(completion / grades).toFixed(1)}`,
  ];
}

await useBackend("wasm");
const model = createRandomModel({ arch: "llama", layers: 2, hidden: 64, heads: 4, kvHeads: 2, vocab: "byte", seed: 1 });
const serve = await startServer(model, { modelId: "judge", port: 0, maxTokens: tokens, maxBatch: 64 });
const fake = await startFakeChatServer();
const rows = [["judge", "maxConcurrency", "grades/s", "p50", "p99", "prompt / completion tokens per grade"]];
for (const cap of [1, 4, 16]) rows.push(await run("rft serve (tiny random, wasm)", serve.url, "judge", cap));
for (const cap of [16, 1, 16]) rows.push(await run("fake judge (fixed answer)", fake.baseUrl, undefined, cap));
await serve.close();
await fake.close();
disposeModel(model);
const w = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
for (const r of rows) console.log(r.map((x, i) => x.padEnd(w[i]!)).join("  "));
console.log(`${grades} grades per row, completion ≤ ${tokens} tokens, structuredOutputs: false`);
