/**
 * Grader throughput and latency. Prints, per scenario: grades/s, p50/p99 latency, and the ratio to the target
 * of issue #2. Run: npx tsx bench/graders.ts [--seconds N]
 *   in-process string_check (≥ 200k/s) · in-process multi(string_check + fuzzy_match) (≥ 50k/s)
 *   gRPC GradeBatch to a grader in another process (≥ 20k samples/s) · python trivial grader, warm pool (≥ 1,000/s)
 */
import { spawn } from "node:child_process";
import { once } from "node:events";
import { createInterface } from "node:readline";
import * as grpc from "@grpc/grpc-js";
import { GraderEngine } from "../grader-sidecar/src/engine.js";
import type { GradeBatchResponse__Output } from "../proto/gen/rft/grader/v1/GradeBatchResponse.js";
import { loadGraderProto } from "../proto/grpc.js";

const seconds = Number(process.argv[process.argv.indexOf("--seconds") + 1] || 3);
const pct = (xs: number[], p: number) =>
  xs.sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!;
const rows: string[][] = [["scenario", "grades/s", "p50", "p99", "target", "ratio"]];
const us = (ms: number) => (ms < 1 ? `${(ms * 1000).toFixed(1)} µs` : `${ms.toFixed(2)} ms`);

function report(name: string, count: number, elapsedMs: number, lat: number[], target: number) {
  const rate = (count / elapsedMs) * 1000;
  rows.push([
    name,
    Math.round(rate).toLocaleString("en"),
    us(pct(lat, 50)),
    us(pct(lat, 99)),
    target.toLocaleString("en"),
    `${(rate / target).toFixed(2)}×`,
  ]);
}

const answers = [
  "The capital of France is Paris.",
  "Paris",
  "I believe it is Lyon, the largest city in the south.",
  "paris, france",
];
const items = answers.map((_, i) => ({
  answer: "Paris",
  explanation: `Paris has been the capital since the 10th century ${i}`,
}));

async function inProcess(name: string, grader: unknown, target: number) {
  const engine = new GraderEngine();
  const compiled = await engine.compile(grader);
  const lat: number[] = [];
  let n = 0;
  const end = performance.now() + seconds * 1000;
  const t0 = performance.now();
  while (performance.now() < end) {
    for (let k = 0; k < 1000; k++, n++) {
      const s = performance.now();
      await engine.grade(compiled, items[n & 3], { output_text: answers[n & 3]! });
      if ((n & 63) === 0) lat.push(performance.now() - s);
    }
  }
  report(name, n, performance.now() - t0, lat, target);
  await engine.close();
}

async function grpcBatch(target: number) {
  const child = spawn(
    process.execPath,
    ["--import", "tsx", "cli/rft.ts", "grader", "--grpc-port", "0", "--http-port", "0", "--concurrency", "256"],
    {
      env: { ...process.env, RFT_LOG_LEVEL: "info" },
      stdio: ["ignore", "pipe", "inherit"],
    },
  );
  let port = 0;
  for await (const line of createInterface({ input: child.stdout! })) {
    const m = /"grpcPort":(\d+)/.exec(line);
    if (m) {
      port = Number(m[1]);
      break;
    }
  }
  const proto = loadGraderProto();
  const client = new proto.rft.grader.v1.GraderService(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  const grader = JSON.stringify({
    type: "string_check",
    name: "exact",
    input: "{{ sample.output_text }}",
    reference: "{{ item.answer }}",
    operation: "like",
  });
  const itemJson = items.map((i) => JSON.stringify(i));
  const chunk = 256;
  const lat: number[] = [];
  let graded = 0;
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  // One stream, like a trainer: send chunks of samples, keep a bounded number of chunks outstanding.
  const call = client.GradeBatch();
  const sentAt = new Map<number, number>();
  let id = 0;
  let outstanding = 0;
  const done = new Promise<void>((resolve, reject) => {
    call.on("data", (m: GradeBatchResponse__Output) => {
      const now = performance.now();
      for (const r of m.results) {
        const s = sentAt.get(Number(r.id));
        if (s !== undefined) {
          lat.push(now - s);
          sentAt.delete(Number(r.id));
        }
      }
      graded += m.results.length;
      outstanding -= m.results.length;
      pump();
    });
    call.on("end", resolve);
    call.on("error", reject);
  });
  let first = true;
  let closed = false;
  function pump() {
    while (outstanding < chunk * 8 && performance.now() < end) {
      const batch = [];
      for (let k = 0; k < chunk; k++, id++) {
        if ((id & 31) === 0) sentAt.set(id, performance.now());
        batch.push({ id, item_json: itemJson[id & 3]!, sample: { output_text: answers[id & 3]! } });
      }
      outstanding += chunk;
      call.write({ grader_json: first ? grader : "", items: batch });
      first = false;
    }
    if (!closed && performance.now() >= end) {
      closed = true;
      call.end();
    }
  }
  pump();
  await done;
  report("gRPC GradeBatch string_check (other process)", graded, performance.now() - t0, lat, target);
  client.close();
  child.kill("SIGTERM");
  await once(child, "exit");
}

async function python(target: number) {
  const engine = new GraderEngine({ python: { size: 2 } });
  const compiled = await engine.compile({
    type: "python",
    name: "trivial",
    source: "def grade(sample, item):\n    return 1.0 if item['answer'] in sample['output_text'] else 0.0\n",
  });
  await engine.grade(compiled, items[0], { output_text: answers[0]! }); // warm
  const lat: number[] = [];
  let n = 0;
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  const worker = async () => {
    while (performance.now() < end) {
      const s = performance.now();
      const res = await engine.grade(compiled, items[n & 3], { output_text: answers[n & 3]! });
      if (res.metadata.errors.python_grader_server_error || res.metadata.errors.python_grader_runtime_error)
        throw new Error("python grader failed");
      lat.push(performance.now() - s);
      n++;
    }
  };
  await Promise.all(Array.from({ length: 8 }, worker));
  report("python trivial grader, warm pool of 2", n, performance.now() - t0, lat, target);
  await engine.close();
}

const exact = {
  type: "string_check",
  name: "exact",
  input: "{{ sample.output_text }}",
  reference: "{{ item.answer }}",
  operation: "ilike",
};
await inProcess("in-process string_check", exact, 200_000);
await inProcess(
  "in-process multi(string_check + fuzzy_match)",
  {
    type: "multi",
    name: "combo",
    graders: {
      exact,
      fuzzy: {
        type: "text_similarity",
        name: "fuzzy",
        input: "{{ sample.output_text }}",
        reference: "{{ item.explanation }}",
        evaluation_metric: "fuzzy_match",
      },
    },
    calculate_output: "0.5 * exact + 0.5 * fuzzy",
  },
  50_000,
);
await grpcBatch(20_000);
await python(1_000);

const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
for (const r of rows) console.log(r.map((cell, c) => cell.padEnd(widths[c]!)).join("  "));
console.log(`(${seconds} s per scenario on ${(await import("node:os")).cpus().length} cores, Node ${process.version})`);
