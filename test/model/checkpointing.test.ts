/**
 * Activation checkpointing (DecoderState.checkpoint): the same loss as without it, bit for bit (the forward pass
 * is the same), and the same gradients to float rounding (the backward pass recomputes each layer with the same
 * kernels and dropout masks; only the order in which gradients are summed differs), for a full fine-tune, for
 * LoRA with dropout, and for the RFT log-probs with their prefix/suffix passes through the KV cache; and a
 * lower peak of tensor memory in the step.
 */
import assert from "node:assert/strict";
import { before, test } from "node:test";
import * as tf from "@tensorflow/tfjs-core";
import { addAdapters, randomizeAdapters, resolveLora } from "../../trainer/model/lora.js";
import { createRandomModel, disposeModel, type Model } from "../../trainer/model/model.js";
import { lossAndGrads, makeBatch, trainableNames } from "../../trainer/model/train-step.js";
import { completionLogprobs, packSequences } from "../../trainer/rl/logprobs.js";
import { setup } from "./helpers.js";

before(setup);

const model = (arch: "llama" | "qwen2") =>
  createRandomModel({ arch, layers: 3, hidden: 64, heads: 4, kvHeads: 2, vocab: "byte", seed: 4, std: 0.1 });

const seqs = [
  { ids: Array.from({ length: 40 }, (_, i) => (i * 7) % 250), mask: Array.from({ length: 40 }, () => 1) },
  { ids: Array.from({ length: 40 }, (_, i) => (i * 13 + 5) % 250), mask: Array.from({ length: 40 }, () => 1) },
];

function gradsOf(m: Model, checkpoint: boolean, dropoutSeed?: number) {
  const r = lossAndGrads({ ...m, checkpoint }, makeBatch(seqs, 0), undefined, dropoutSeed);
  const out = new Map([...r.grads].map(([n, g]) => [n, g.dataSync().slice()]));
  tf.dispose([...r.grads.values()]);
  return { loss: r.loss, grads: out };
}

/** Max |a − b| over max |b|. */
function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let err = 0;
  let scale = 1e-30;
  for (let i = 0; i < b.length; i++) {
    err = Math.max(err, Math.abs(a[i]! - b[i]!));
    scale = Math.max(scale, Math.abs(b[i]!));
  }
  return err / scale;
}

function assertSame(a: ReturnType<typeof gradsOf>, b: ReturnType<typeof gradsOf>) {
  assert.equal(a.loss, b.loss);
  assert.deepEqual([...a.grads.keys()], [...b.grads.keys()]);
  for (const [n, g] of a.grads) assert.ok(relErr(g, b.grads.get(n)!) < 1e-5, `${n}: ${relErr(g, b.grads.get(n)!)}`);
}

for (const arch of ["llama", "qwen2"] as const) {
  test(`${arch}: checkpointed full fine-tune gradients equal the plain ones`, () => {
    const m = model(arch);
    assertSame(gradsOf(m, true), gradsOf(m, false));
    disposeModel(m);
  });
}

test("checkpointed LoRA gradients (dropout 0.2) equal the plain ones", () => {
  const m = model("qwen2");
  addAdapters(m, resolveLora({ rank: 4, dropout: 0.2 }, m.config, "lora"), 2);
  randomizeAdapters(m, 3);
  assertSame(gradsOf(m, true, 9), gradsOf(m, false, 9));
  disposeModel(m);
});

test("checkpointed RFT log-prob gradients (prefix and suffix passes) equal the plain ones", () => {
  const m = model("llama");
  const batch = packSequences(
    [
      { prompt: [1, 2, 3, 4, 5], completion: [6, 7, 8, 9] },
      { prompt: [1, 2, 3, 4, 5], completion: [10, 11] },
      { prompt: [9, 8], completion: [7, 6, 5] },
    ],
    0,
  );
  const names = trainableNames(m);
  const grads = (checkpoint: boolean) => {
    const gs = tf.grads((...ws: tf.Tensor[]) => {
      const params = new Map(m.params);
      names.forEach((n, i) => params.set(n, ws[i]!));
      return tf.sum(completionLogprobs({ ...m, checkpoint }, params, batch));
    })(names.map((n) => m.params.get(n)!));
    const out = gs.map((g) => g.dataSync().slice());
    tf.dispose(gs);
    return out;
  };
  const a = grads(true);
  const b = grads(false);
  a.forEach((g, i) => assert.ok(relErr(g, b[i]!) < 1e-5, `${names[i]}: ${relErr(g, b[i]!)}`));
  disposeModel(m);
});

test("checkpointing lowers the peak tensor memory of a training step", async () => {
  const m = createRandomModel({ arch: "llama", layers: 4, hidden: 64, heads: 4, kvHeads: 4, vocab: "byte", seed: 1 });
  const long = [0, 1, 2, 3].map((s) => ({
    ids: Array.from({ length: 129 }, (_, i) => (i * (s + 3)) % 250),
    mask: Array.from({ length: 129 }, () => 1),
  }));
  const peak = async (checkpoint: boolean) => {
    const prof = await tf.profile(() => {
      const r = lossAndGrads({ ...m, checkpoint }, makeBatch(long, 0));
      tf.dispose([...r.grads.values()]);
    });
    return prof.peakBytes;
  };
  const plain = await peak(false);
  const before = tf.memory().numTensors;
  const ckpt = await peak(true);
  assert.equal(tf.memory().numTensors, before, "a checkpointed step leaves no tensor behind");
  assert.ok(ckpt < 0.8 * plain, `peak ${ckpt} bytes with checkpointing vs ${plain} without`);
  disposeModel(m);
});
