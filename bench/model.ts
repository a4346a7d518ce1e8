/**
 * Model benchmark (`npx tsx bench/model.ts [--backend auto|tensorflow|wasm] [--quick]`): for a ~10M-parameter Llama-style
 * decoder, sampling tokens/s at batch 1 and 32, training tokens/s, achieved FLOP/s as a fraction of the
 * backend's measured matMul rate, and peak memory. Prints figures; asserts nothing.
 */
import * as tf from "@tensorflow/tfjs-core";
import { parseBackendName, useBackend } from "../trainer/model/backend.js";
import { createRandomModel, disposeModel } from "../trainer/model/model.js";
import { countParams } from "../trainer/model/params.js";
import { Adam, lossAndGrads, makeBatch } from "../trainer/model/train-step.js";
import { generate } from "../trainer/sampling/generate.js";

const arg = (name: string, def: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1]! : def;
};
const quick = process.argv.includes("--quick");
const backend = await useBackend(parseBackendName(arg("backend", "auto")));

/** Wall and CPU seconds of `f` (CPU time is what this process got: robust when other processes compete). */
async function timed<T>(f: () => Promise<T> | T): Promise<{ value: T; wall: number; cpu: number }> {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const value = await f();
  const c = process.cpuUsage(c0);
  return { value, wall: (performance.now() - t0) / 1000, cpu: (c.user + c.system) / 1e6 };
}

let peakRss = 0;
const sampleRss = () => {
  peakRss = Math.max(peakRss, process.memoryUsage().rss);
};
const timer = setInterval(sampleRss, 20);

/** FLOP/s of a plain matMul, per CPU second and per wall second. */
async function matmulRate(m: number, k: number, n: number): Promise<{ cpu: number; wall: number }> {
  const a = tf.randomNormal([m, k]) as tf.Tensor2D;
  const b = tf.randomNormal([k, n]) as tf.Tensor2D;
  // (Never return a typed array from tf.tidy: it walks every element looking for tensors.)
  const once = () => {
    const c = tf.matMul(a, b);
    c.dataSync();
    c.dispose();
  };
  once();
  const reps = quick ? 5 : 20;
  const t = await timed(() => {
    for (let i = 0; i < reps; i++) once();
  });
  a.dispose();
  b.dispose();
  return { cpu: (2 * m * k * n * reps) / t.cpu, wall: (2 * m * k * n * reps) / t.wall };
}

const cfg = {
  arch: "llama" as const,
  layers: 6,
  hidden: 384,
  heads: 6,
  kvHeads: 2,
  intermediate: 1024,
  vocab: "byte" as const,
  seed: 1,
  maxContext: 1024,
};
const model = createRandomModel(cfg);
const c = model.config;
const nParams = countParams(c);
const B = 8;
const T = 128;
const tokens = B * T;
// Reference rate: the training step's typical matMul shape (tokens × hidden × intermediate).
const peak = await matmulRate(tokens, c.hiddenSize, c.intermediateSize);

// Forward FLOPs per token: 2 × (matMul weights incl. the LM head) + attention (QKᵀ and PV: 4·T·qDim/2 on average causal... counted full).
const qDim = c.numHeads * c.headDim;
const kvDim = c.numKvHeads * c.headDim;
const linearWeights =
  c.numLayers * (c.hiddenSize * (2 * qDim + 2 * kvDim) + 3 * c.hiddenSize * c.intermediateSize) +
  c.hiddenSize * c.vocabSize;
const fwdFlopsPerToken = 2 * linearWeights + c.numLayers * 4 * T * qDim;
const trainFlops = 3 * fwdFlopsPerToken * tokens;

// Training.
const rand = (n: number) => Array.from({ length: n }, (_, i) => (i * 7919 + 13) % 256);
const seqs = Array.from({ length: B }, (_, b) => ({
  ids: rand(T + 1).map((x) => (x + b) % 256),
  mask: new Array(T + 1).fill(1),
}));
const batch = makeBatch(seqs, 256);
const adam = new Adam({ lr: 1e-4 });
const steps = quick ? 2 : 5;
{
  const { grads } = lossAndGrads(model, batch);
  adam.step(model, grads); // warm-up
}
const tensorsBefore = tf.memory().numTensors;
const train = await timed(() => {
  for (let s = 0; s < steps; s++) {
    const { grads } = lossAndGrads(model, batch);
    adam.step(model, grads);
    sampleRss();
  }
});
const trainWall = train.wall / steps;
const trainCpu = train.cpu / steps;
const leak = tf.memory().numTensors - tensorsBefore;
adam.dispose();

// Sampling.
async function sampling(
  batchSize: number,
  newTokens: number,
): Promise<{ tps: number; tpsCpu: number; generated: number }> {
  const prompts = Array.from({ length: batchSize }, (_, i) => ({
    promptIds: rand(16).map((x) => (x + i) % 256),
    maxTokens: newTokens,
    seed: i,
    sampling: { temperature: 1 },
  }));
  await generate(
    model,
    prompts.slice(0, 1).map((p) => ({ ...p, maxTokens: 2 })),
  );
  const t = await timed(() => generate(model, prompts));
  const generated = t.value.reduce((a, o) => a + o.tokens.length + (o.finishReason === "stop" ? 1 : 0), 0);
  sampleRss();
  return { tps: generated / t.wall, tpsCpu: generated / t.cpu, generated };
}
const s1 = await sampling(1, quick ? 16 : 64);
const s32 = await sampling(32, quick ? 16 : 64);
clearInterval(timer);
sampleRss();

const fmt = (x: number, d = 1) => x.toFixed(d);
const peak2 = await matmulRate(tokens, c.hiddenSize, c.intermediateSize);
const rateCpu = Math.max(peak.cpu, peak2.cpu);
const rateWall = Math.max(peak.wall, peak2.wall);
const achievedCpu = trainFlops / trainCpu;
const achievedWall = trainFlops / trainWall;
console.log(
  `backend: ${backend}   model: llama ${c.numLayers}L × ${c.hiddenSize}d, ${c.numHeads} heads / ${c.numKvHeads} kv, mlp ${c.intermediateSize}, vocab ${c.vocabSize}`,
);
console.log(
  `parameters: ${(nParams / 1e6).toFixed(2)} M   (figures per wall second; per CPU second of this process in brackets)`,
);
console.log(
  `matMul rate (${tokens}×${c.hiddenSize} @ ${c.hiddenSize}×${c.intermediateSize}): ${fmt(rateWall / 1e9)} GFLOP/s [${fmt(rateCpu / 1e9)}]`,
);
console.log(
  `sampling, batch 1:  ${fmt(s1.tps)} tokens/s [${fmt(s1.tpsCpu)}] (${s1.generated} tokens after a 16-token prompt)`,
);
console.log(
  `sampling, batch 32: ${fmt(s32.tps)} tokens/s [${fmt(s32.tpsCpu)}] (${s32.generated} tokens after 16-token prompts)`,
);
console.log(
  `training (batch ${B} × ${T} tokens: loss + grads + Adam): ${fmt(tokens / trainWall)} tokens/s [${fmt(tokens / trainCpu)}], ${fmt(trainWall * 1000, 0)} ms/step`,
);
console.log(
  `training FLOP/s: ${fmt(achievedWall / 1e9, 2)} GFLOP/s = ${fmt((100 * achievedWall) / rateWall)}% of the matMul rate [${fmt(achievedCpu / 1e9, 2)} = ${fmt((100 * achievedCpu) / rateCpu)}%] (target ≥ 40% on wasm)`,
);
console.log(`tensors leaked per training step: ${fmt(leak / steps, 0)}`);
console.log(
  `peak memory: RSS ${fmt(peakRss / 2 ** 20, 0)} MiB; tfjs ${fmt(tf.memory().numBytes / 2 ** 20, 0)} MiB live at the end; load average ${(await import("node:os")).loadavg()[0]!.toFixed(1)}`,
);
disposeModel(model);
