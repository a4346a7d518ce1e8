/**
 * SmolLM2-135M-Instruct sampling figures (`npx tsx bench/smollm2.ts [--model DIR] [--backend wasm]
 * [--tokens N] [--no-serve] [--no-hf]`): KV-cache decode tokens/s at batch 1 and 16 through generate() and
 * through `rft serve`'s HTTP API (concurrent requests), prefill tokens/s, peak RSS; and transformers'
 * generate() at batch 1 and 16 on the same machine in the same run (the sampling peer; torch threads from
 * `--threads`, default 1). Prints figures; asserts nothing.
 */
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { cpus, loadavg } from "node:os";
import * as tf from "@tensorflow/tfjs-core";
import { parseBackendName, useBackend } from "../trainer/model/backend.js";
import { forwardTidy, paddedCausalMask } from "../trainer/model/decoder.js";
import { loadHfModel } from "../trainer/model/hf-io.js";
import { disposeModel } from "../trainer/model/model.js";
import { generate, type SampleRequest } from "../trainer/sampling/generate.js";
import { startServer } from "../trainer/serve/server.js";
import { smollm2Dir } from "./smollm2-dir.js";

const arg = (name: string, def: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1]! : def;
};
const dir = await smollm2Dir();
const backend = await useBackend(parseBackendName(arg("backend", "wasm")));
const tokens = Number(arg("tokens", "32"));
const threads = Number(arg("threads", "1"));

let peakRss = 0;
const timer = setInterval(() => {
  peakRss = Math.max(peakRss, process.memoryUsage().rss);
}, 20);

async function timed<T>(f: () => Promise<T> | T): Promise<{ value: T; wall: number; cpu: number }> {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const value = await f();
  const c = process.cpuUsage(c0);
  return { value, wall: (performance.now() - t0) / 1000, cpu: (c.user + c.system) / 1e6 };
}

const model = await loadHfModel(dir);
const tok = model.tokenizer!;
const prompt = tok.encode(
  tok.applyChatTemplate([{ role: "user", content: "Write a short story about a robot who learns to paint." }], true),
);
console.log(
  `SmolLM2 at ${dir}: ${model.config.numLayers} layers, hidden ${model.config.hiddenSize}; backend ${backend}; prompt ${prompt.length} tokens; ${tokens} new tokens; load ${loadavg()
    .map((x) => x.toFixed(2))
    .join(" ")} on ${cpus().length} cores`,
);

const reqs = (n: number): SampleRequest[] =>
  Array.from({ length: n }, (_, i) => ({
    promptIds: prompt,
    maxTokens: tokens,
    sampling: { temperature: 1, topP: 1, topK: 0 },
    seed: 1000 + i,
  }));

const rows: string[][] = [];
const row = (what: string, tps: number, cpuTps: number, extra = "") =>
  rows.push([what, tps.toFixed(2), cpuTps.toFixed(2), extra]);

// Prefill: one forward pass over B prompts (logits of the last row only, as generate() does).
for (const B of [1, 16]) {
  const P = prompt.length;
  const ids = Int32Array.from({ length: B * P }, (_, i) => prompt[i % P]!);
  const pos = Int32Array.from({ length: B * P }, (_, i) => i % P);
  const run = () => {
    const out = forwardTidy(model, () => ({
      ids: tf.tensor2d(ids, [B, P], "int32"),
      positions: tf.tensor1d(pos, "int32"),
      mask: paddedCausalMask(new Array(B).fill(0), 0, P, model.config.numHeads / model.config.numKvHeads),
      logitRows: tf.tensor1d(
        Array.from({ length: B }, (_, b) => b * P + P - 1),
        "int32",
      ),
    }));
    out.logits.dataSync();
    out.logits.dispose();
  };
  run(); // warm-up
  const t = await timed(run);
  row(`prefill, ${B} × ${P} tokens`, (B * P) / t.wall, (B * P) / t.cpu, `${(t.wall * 1000).toFixed(0)} ms`);
}

// Decode through generate(): tokens/s counts the new tokens (a prefill is included, as a client sees it).
await generate(
  model,
  reqs(1).map((r) => ({ ...r, maxTokens: 2 })),
);
for (const B of [1, 16]) {
  const t = await timed(() => generate(model, reqs(B)));
  const n = t.value.reduce((a, c) => a + c.tokens.length, 0);
  row(`generate(), batch ${B}`, n / t.wall, n / t.cpu, `${n} tokens in ${t.wall.toFixed(1)} s`);
}

// Through rft serve's HTTP API: B concurrent chat completions.
if (!process.argv.includes("--no-serve")) {
  const srv = await startServer(model, { modelId: "m", port: 0, host: "127.0.0.1" });
  const ask = async (i: number) => {
    const r = await fetch(`${srv.url}/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        model: "m",
        messages: [{ role: "user", content: "Write a short story about a robot who learns to paint." }],
        max_completion_tokens: tokens,
        temperature: 1,
        seed: 2000 + i,
      }),
    });
    const body = (await r.json()) as { usage?: { completion_tokens: number } };
    if (!r.ok) throw new Error(`HTTP ${r.status}: ${JSON.stringify(body)}`);
    return body.usage!.completion_tokens;
  };
  await ask(0);
  for (const B of [1, 16]) {
    const before = srv.batcher.batchSizes.length;
    const t = await timed(() => Promise.all(Array.from({ length: B }, (_, i) => ask(i))));
    const n = t.value.reduce((a, b) => a + b, 0);
    row(
      `rft serve HTTP, ${B} concurrent`,
      n / t.wall,
      n / t.cpu,
      `${n} tokens in ${t.wall.toFixed(1)} s; batches ${srv.batcher.batchSizes.slice(before).join(",")}`,
    );
  }
  await srv.close();
}
clearInterval(timer);
disposeModel(model);

// transformers' generate on the same machine (the sampling peer).
const py = process.env.RFT_BENCH_PYTHON ?? join(process.cwd(), ".venv-model-test/bin/python");
const pyBin = existsSync(py) ? py : "/work/main/.venv-model-test/bin/python";
if (!process.argv.includes("--no-hf") && existsSync(pyBin)) {
  const script = `
import sys, time, resource, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
torch.set_num_threads(${threads})
d = sys.argv[1]; n = ${tokens}
tok = AutoTokenizer.from_pretrained(d); m = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
ids = torch.tensor([[${prompt.join(",")}]])
with torch.no_grad():
    m(ids)
    t = time.time(); m(ids.repeat(16, 1)); print(f"prefill16 {16*ids.shape[1]/(time.time()-t):.2f}")
    for B in (1, 16):
        x = ids.repeat(B, 1); torch.manual_seed(0)
        t = time.time(); c0 = time.process_time()
        out = m.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n, min_new_tokens=n, do_sample=True, temperature=1.0, top_k=0, top_p=1.0, pad_token_id=tok.pad_token_id)
        w = time.time() - t; c = time.process_time() - c0
        k = B * (out.shape[1] - x.shape[1]); print(f"gen{B} {k/w:.2f} {k/c:.2f} {k} {w:.1f}")
print(f"rss {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024:.0f}")
`;
  const r = spawnSync(pyBin, ["-c", script, dir], { encoding: "utf8" });
  if (r.status !== 0) console.log(`transformers run failed: ${r.stderr.slice(-800)}`);
  for (const line of r.stdout.trim().split("\n")) {
    const [k, a, b, n, w] = line.split(" ");
    if (k === "prefill16") rows.push([`transformers prefill, 16 × ${prompt.length}, ${threads} thread(s)`, a!, "", ""]);
    if (k?.startsWith("gen"))
      rows.push([`transformers generate, batch ${k.slice(3)}, ${threads} thread(s)`, a!, b!, `${n} tokens in ${w} s`]);
    if (k === "rss") rows.push(["transformers peak RSS (MiB)", a!, "", ""]);
  }
}
rows.push(["our peak RSS (MiB)", (peakRss / 2 ** 20).toFixed(0), "", ""]);
const w = [44, 10, 12];
console.log(`${"".padEnd(w[0]!)}${"tok/s".padStart(w[1]!)}${"tok/CPU-s".padStart(w[2]!)}`);
for (const r of rows) console.log(`${r[0]!.padEnd(w[0]!)}${r[1]!.padStart(w[1]!)}${r[2]!.padStart(w[2]!)}  ${r[3]}`);
console.log(
  `load after: ${loadavg()
    .map((x) => x.toFixed(2))
    .join(" ")}`,
);
