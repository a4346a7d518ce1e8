/**
 * Device benchmark for one backend (`npx tsx bench/device.ts --backend tensorflow|webgpu|wasm [--model DIR]
 * [--sizes 1024,2048,4096,8192] [--batch 4] [--seq 128] [--steps 3]`), used by scripts/gpu-check.sh:
 *   - the device the backend runs on (tensorflow: TF version and whether tfjs-node placed tensors on a GPU;
 *     webgpu: the adapter);
 *   - fp32 matMul TFLOP/s for square sizes (one scalar read back per product, so the copy back does not count);
 *   - with --model (a Hugging Face model directory, e.g. from `rft import gguf FILE --out DIR`): one training step
 *     (loss + gradients + Adam over every parameter) on a batch of random token ids, after a warm-up step.
 * Prints JSON lines; asserts nothing.
 */
import * as tf from "@tensorflow/tfjs-core";
import { BackendError, parseBackendName, useBackend } from "../trainer/model/backend.js";
import { loadHfModel } from "../trainer/model/hf-io.js";
import { disposeModel } from "../trainer/model/model.js";
import { countParams } from "../trainer/model/params.js";
import { Adam, lossAndGrads, makeBatch } from "../trainer/model/train-step.js";

const arg = (name: string, def: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1]! : def;
};
const out = (o: Record<string, unknown>) => console.log(JSON.stringify(o));
const backend = await useBackend(parseBackendName(arg("backend", "auto"))).catch((e: unknown) => {
  if (!(e instanceof BackendError)) throw e;
  console.error(`bench/device: ${e.message}`);
  process.exit(3);
});

// --- device
const device: Record<string, unknown> = { backend };
if (backend === "tensorflow") {
  const b = tf.backend() as unknown as { binding: { TF_Version: string }; isUsingGpuDevice: boolean };
  Object.assign(device, { tensorflow: b.binding.TF_Version, isUsingGpuDevice: b.isUsingGpuDevice });
} else if (backend === "webgpu") {
  const b = tf.backend() as unknown as { adapterInfo?: unknown };
  const gpu = (globalThis as { navigator?: { gpu?: { requestAdapter(): Promise<{ info?: unknown } | null> } } })
    .navigator?.gpu;
  const adapter = await gpu?.requestAdapter();
  const info = (adapter?.info ?? b.adapterInfo ?? {}) as Record<string, unknown>;
  Object.assign(device, {
    adapter: Object.fromEntries(["vendor", "architecture", "device", "description"].map((k) => [k, info[k]])),
  });
}
out({ device });

// --- matMul rate
for (const n of arg("sizes", "1024,2048,4096,8192").split(",").map(Number)) {
  const a = tf.randomNormal([n, n]) as tf.Tensor2D;
  const b = tf.randomNormal([n, n]) as tf.Tensor2D;
  const once = async () => {
    const s = tf.tidy(() => tf.sum(tf.matMul(a, b)));
    await s.data();
    s.dispose();
  };
  await once();
  await once();
  const reps = n <= 2048 ? 10 : 5;
  const times: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    await once();
    times.push((performance.now() - t0) / 1000);
  }
  times.sort((x, y) => x - y);
  const flops = 2 * n ** 3;
  out({
    matMul: n,
    ms_median: +(times[times.length >> 1]! * 1000).toFixed(2),
    tflops_median: +(flops / times[times.length >> 1]! / 1e12).toFixed(3),
    tflops_best: +(flops / times[0]! / 1e12).toFixed(3),
  });
  a.dispose();
  b.dispose();
}

// --- one training step of a real model
const modelDir = arg("model", "");
if (modelDir) {
  const B = Number(arg("batch", "4"));
  const T = Number(arg("seq", "128"));
  const steps = Number(arg("steps", "3"));
  const t0 = performance.now();
  const model = await loadHfModel(modelDir, { tokenizer: false });
  const loadS = (performance.now() - t0) / 1000;
  const V = model.config.vocabSize;
  let x = 12345;
  const rand = () => (x = (x * 1103515245 + 12345) % 2 ** 31) % V;
  const batch = makeBatch(
    Array.from({ length: B }, () => ({ ids: Array.from({ length: T + 1 }, rand), mask: new Array(T + 1).fill(1) })),
    0,
  );
  const adam = new Adam({ lr: 1e-5 });
  const step = () => {
    const { loss, grads } = lossAndGrads(model, batch);
    adam.step(model, grads);
    return loss;
  };
  const w0 = performance.now();
  const firstLoss = step(); // warm-up (kernel compilation on webgpu, cuDNN/cuBLAS set-up on CUDA)
  const warmS = (performance.now() - w0) / 1000;
  const times: number[] = [];
  let loss = firstLoss;
  for (let i = 0; i < steps; i++) {
    const s0 = performance.now();
    loss = step();
    times.push((performance.now() - s0) / 1000);
  }
  const med = times.sort((p, q) => p - q)[times.length >> 1]!;
  out({
    trainStep: modelDir,
    params_M: +(countParams(model.config) / 1e6).toFixed(1),
    batch: `${B}x${T}`,
    load_s: +loadS.toFixed(1),
    warmup_s: +warmS.toFixed(2),
    ms_per_step_median: +(med * 1000).toFixed(0),
    tokens_per_s: +((B * T) / med).toFixed(0),
    loss_first: +firstLoss.toFixed(4),
    loss_last: +loss.toFixed(4),
    finite: Number.isFinite(loss),
  });
  adam.dispose();
  disposeModel(model);
}
