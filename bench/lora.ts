/**
 * Full fine-tune vs LoRA: peak memory and step time of one training step (token NLL over B sequences of T
 * tokens, gradients, Adam) on SmolLM2-135M-Instruct and on a synthetic Llama-3.2-1B-shaped config, each with and
 * without activation checkpointing (`+ckpt`: layers recomputed in the backward pass).
 *
 *   npx tsx bench/lora.ts [--backend tensorflow] [--models smollm2,1b] [--modes full,lora,full+ckpt,lora+ckpt]
 *                         [--seqs 4] [--len 64]
 *                         [--steps 3] [--rank 8] [--max-gib N]
 *
 * Each (model, mode) runs in its own child process: its RSS once loaded, the peak RSS during the steps (a worker
 * thread samples it every 5 ms; tfjs's own byte count counts a tensor's clones again, so it is not used), the
 * bytes held in tensors after a step (weights, optimizer state), and s/step (the first step is a warm-up). A case
 * whose estimated size (weights + gradients + Adam's two moments, fp32) exceeds --max-gib (default: 80% of the
 * machine's free memory) is not run: its line says so and gives the estimate. Prints figures; asserts nothing.
 */
import { spawnSync } from "node:child_process";
import { freemem } from "node:os";
import { Worker } from "node:worker_threads";
import * as tf from "@tensorflow/tfjs-core";
import { type BackendName, parseBackendName, useBackend } from "../trainer/model/backend.js";
import { newHfConfig, parseHfConfig, type ModelConfig } from "../trainer/model/config.js";
import { loadHfModel } from "../trainer/model/hf-io.js";
import { addAdapters, adapterNames, resolveLora } from "../trainer/model/lora.js";
import { createModel, disposeModel, type Model } from "../trainer/model/model.js";
import { countParams, internalShape, mulberry32, type Params, paramSpecs } from "../trainer/model/params.js";
import { Adam, lossAndGrads, makeBatch } from "../trainer/model/train-step.js";
import { smollm2Dir } from "./smollm2-dir.js";

const arg = (name: string, def: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1]! : def;
};

/** Llama-3.2-1B's shape (1.24B parameters, tied embeddings), random weights. */
function oneB(): ModelConfig {
  return parseHfConfig(
    newHfConfig({
      arch: "llama",
      layers: 16,
      hidden: 2048,
      heads: 32,
      kvHeads: 8,
      intermediate: 8192,
      vocabSize: 128256,
      maxContext: 2048,
      tieWordEmbeddings: true,
      eosTokenId: 1,
      padTokenId: 0,
    }),
  );
}

/** Uniform(±0.02) weights, ones for norms, made one tensor at a time (fast enough for 1.24B values). */
function randomParams(c: ModelConfig): Params {
  const rand = mulberry32(1);
  const params: Params = new Map();
  for (const s of paramSpecs(c)) {
    const shape = internalShape(s);
    const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
    if (s.kind === "norm") data.fill(1);
    else for (let i = 0; i < data.length; i++) data[i] = (rand() - 0.5) * 0.04;
    params.set(s.name, tf.tensor(data, shape, "float32"));
  }
  return params;
}

const GIB = 1024 ** 3;

async function one(modelName: string, mode: string, backend: BackendName) {
  await useBackend(backend);
  const seqs = Number(arg("seqs", "4"));
  const len = Number(arg("len", "64"));
  const steps = Math.max(2, Number(arg("steps", "3")));
  const rank = Number(arg("rank", "8"));
  const t0 = performance.now();
  let model: Model;
  if (modelName === "smollm2") model = await loadHfModel(await smollm2Dir(), { tokenizer: false });
  else {
    const c = oneB();
    model = createModel(c, randomParams(c), null);
  }
  const loadS = (performance.now() - t0) / 1000;
  const lora = mode.startsWith("lora");
  if (lora) addAdapters(model, resolveLora({ rank }, model.config, "lora"), 1);
  if (mode.endsWith("+ckpt")) model.checkpoint = true;
  const trained = lora ? adapterNames(model.config, model.lora!.settings) : [...model.params.keys()];
  const trainedCount = trained.reduce((n, k) => n + model.params.get(k)!.size, 0);
  const rand = mulberry32(7);
  const V = model.config.vocabSize;
  const batch = makeBatch(
    Array.from({ length: seqs }, () => {
      const ids = Array.from({ length: len + 1 }, () => Math.floor(rand() * V));
      return { ids, mask: ids.map(() => 1) };
    }),
    0,
  );
  const adam = new Adam({ lr: 1e-5 });
  const step = (s: number) => {
    const { grads } = lossAndGrads(model, batch, trained, lora ? s : undefined);
    adam.step(model, grads);
  };
  // A step is one synchronous call: a worker thread samples the process's RSS meanwhile (every 5 ms).
  const rssBefore = process.memoryUsage().rss;
  const peak = new BigInt64Array(new SharedArrayBuffer(8));
  const sampler = new Worker(
    `const { workerData } = require("node:worker_threads");
     setInterval(() => { const r = BigInt(process.memoryUsage.rss()); if (r > Atomics.load(workerData, 0)) Atomics.store(workerData, 0, r); }, 5);`,
    { eval: true, workerData: peak },
  );
  await new Promise((r) => setTimeout(r, 50));
  step(0); // warm-up (not timed)
  const times: number[] = [];
  for (let s = 1; s < steps; s++) {
    const a = performance.now();
    step(s);
    times.push((performance.now() - a) / 1000);
  }
  const tfBytes = tf.memory().numBytes;
  await new Promise((r) => setTimeout(r, 20));
  const stepPeakRss = Number(Atomics.load(peak, 0));
  await sampler.terminate();
  adam.dispose();
  disposeModel(model);
  const r = {
    model: modelName,
    mode,
    backend,
    params: countParams(model.config),
    trained: trainedCount,
    tokensPerStep: seqs * len,
    loadS,
    stepS: times.reduce((a, b) => a + b, 0) / Math.max(1, times.length),
    rssBeforeStepMiB: rssBefore / 2 ** 20,
    stepPeakRssMiB: stepPeakRss / 2 ** 20,
    peakRssMiB: process.resourceUsage().maxRSS / 1024,
    tensorsMiBAfterStep: tfBytes / 2 ** 20,
  };
  process.stdout.write(`RESULT ${JSON.stringify(r)}\n`);
}

function estimateGiB(c: ModelConfig, mode: string): number {
  const n = countParams(c);
  // fp32 weights + (full: gradients and two Adam moments of every weight)
  return ((mode.startsWith("full") ? 16 : 4) * n) / GIB;
}

if (process.argv.includes("--one")) {
  await one(arg("one", ""), arg("mode", ""), parseBackendName(arg("backend", "tensorflow")) as BackendName);
} else {
  const backend = arg("backend", "tensorflow");
  const maxGiB = Number(arg("max-gib", String((0.8 * freemem()) / GIB)));
  const models = arg("models", "smollm2,1b").split(",");
  const modes = arg("modes", "full,lora,full+ckpt,lora+ckpt").split(",");
  const pass = ["seqs", "len", "steps", "rank"].flatMap((k) =>
    process.argv.includes(`--${k}`) ? [`--${k}`, arg(k, "")] : [],
  );
  const configs: Record<string, () => Promise<ModelConfig>> = {
    smollm2: async () =>
      await loadHfModel(await smollm2Dir(), { tokenizer: false }).then((m) => {
        const c = m.config;
        disposeModel(m);
        return c;
      }),
    "1b": async () => oneB(),
  };
  await useBackend("cpu");
  process.stdout.write(
    `LoRA vs full fine-tune, backend ${backend}, ${arg("seqs", "4")} sequences × ${arg("len", "64")} tokens per step, rank ${arg("rank", "8")} on all 7 projections, memory limit for a case ${maxGiB.toFixed(1)} GiB\n\n`,
  );
  process.stdout.write(
    "| model | mode | parameters | trained | est. weights+grads+Adam | RSS loaded | peak RSS in the steps | tensors after a step | s/step |\n|---|---|---|---|---|---|---|---|---|\n",
  );
  for (const m of models) {
    const c = await configs[m]!();
    for (const mode of modes) {
      const est = estimateGiB(c, mode);
      const head = `| ${m} | ${mode} | ${(countParams(c) / 1e6).toFixed(1)}M`;
      if (est > maxGiB) {
        process.stdout.write(
          `${head} | | ${est.toFixed(1)} GiB | not run: over the ${maxGiB.toFixed(1)} GiB limit | | | |\n`,
        );
        continue;
      }
      const child = spawnSync(
        process.execPath,
        ["--import", "tsx", "bench/lora.ts", "--one", m, "--mode", mode, "--backend", backend, ...pass],
        { encoding: "utf8", maxBuffer: 16 << 20 },
      );
      const line = child.stdout.split("\n").find((l) => l.startsWith("RESULT "));
      if (!line) {
        process.stdout.write(
          `${head} | | ${est.toFixed(1)} GiB | failed (exit ${child.status ?? child.signal}): ${child.stderr.trim().split("\n").pop()} | | | |\n`,
        );
        continue;
      }
      const r = JSON.parse(line.slice(7));
      process.stdout.write(
        `${head} | ${(r.trained / 1e6).toFixed(2)}M | ${est.toFixed(2)} GiB | ${(r.rssBeforeStepMiB / 1024).toFixed(2)} GiB | ${(r.stepPeakRssMiB / 1024).toFixed(2)} GiB | ${(r.tensorsMiBAfterStep / 1024).toFixed(2)} GiB | ${r.stepS.toFixed(2)} |\n`,
      );
    }
  }
}
