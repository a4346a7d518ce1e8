/**
 * `rft api` latency under load: 50 concurrent clients (the official openai client each) creating fine-tuning
 * jobs and listing them against a real server (in this process, on loopback). p50/p99 per operation.
 * The jobs' training file is a valid upload that is not an RFT dataset, so every job ends in `failed` at
 * validation and no trainer process competes for the CPU: the figures are the API's, not training's.
 * Usage: npx tsx bench/api.ts [--clients 50] [--requests 20]
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import OpenAI, { toFile } from "openai";
import { ApiKeys } from "../api/http.js";
import { ModelCatalog } from "../api/models.js";
import { startApiServer } from "../api/server.js";
import { createLogger } from "../proto/log.js";
import { tinyModel } from "../test/helpers/rft-job.js";

const arg = (name: string, d: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : d;
};
const CLIENTS = arg("clients", 50);
const REQUESTS = arg("requests", 20);
const KEY = "sk-bench-0123456789abcdef";

const dir = mkdtempSync(join(tmpdir(), "rft-bench-api-"));
await tinyModel(join(dir, "base"));
const models = new ModelCatalog();
models.add("base", join(dir, "base"));
const api = await startApiServer({
  dataDir: join(dir, "data"),
  keys: new ApiKeys([KEY]),
  models,
  port: 0,
  logger: createLogger("bench", "silent"),
});
const sft = ['{"messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"}]}'];
const setup = new OpenAI({ baseURL: api.url, apiKey: KEY, maxRetries: 0 });
const train = await setup.files.create({
  file: await toFile(Buffer.from(`${sft.join("\n")}\n`), "t.jsonl"),
  purpose: "fine-tune",
});
const body = {
  model: "base",
  training_file: train.id,
  method: {
    type: "reinforcement" as const,
    reinforcement: {
      grader: {
        type: "string_check" as const,
        name: "x",
        input: "{{sample.output_text}}",
        reference: "a",
        operation: "eq" as const,
      },
      hyperparameters: { n_epochs: 1 },
    },
  },
};

const pct = (xs: number[], p: number) =>
  xs.slice().sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!;

async function phase(name: string, op: (c: OpenAI) => Promise<unknown>) {
  const lat: number[] = [];
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: CLIENTS }, async () => {
      const c = new OpenAI({ baseURL: api.url, apiKey: KEY, maxRetries: 0 });
      for (let i = 0; i < REQUESTS; i++) {
        const s = performance.now();
        await op(c);
        lat.push(performance.now() - s);
      }
    }),
  );
  const secs = (performance.now() - t0) / 1000;
  console.log(
    `${name.padEnd(22)} ${lat.length} requests, ${CLIENTS} clients: p50 ${pct(lat, 50).toFixed(1)} ms, p99 ${pct(lat, 99).toFixed(1)} ms, ${(lat.length / secs).toFixed(0)} req/s`,
  );
}

await phase("jobs.create", (c) => c.fineTuning.jobs.create(body));
await phase("jobs.list (limit 20)", (c) => c.fineTuning.jobs.list({ limit: 20 }));
await phase("jobs.retrieve", (c) =>
  c.fineTuning.jobs.retrieve(train.id.replace("file-", "ftjob-")).catch(() => undefined),
);
console.log(`jobs stored: ${(await setup.fineTuning.jobs.list({ limit: 1 })).data.length ? CLIENTS * REQUESTS : 0}`);
await api.close();
