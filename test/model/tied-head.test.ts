/**
 * The tied head's transposed embedding is made once per weight version (decoder.ts's head cache): logits and
 * gradients equal an untied model whose lm_head is the embedding's transpose, an optimizer step that changes
 * the embedding invalidates the copy (logits equal a fresh model's), and the copy is freed with the model.
 */
import assert from "node:assert/strict";
import { before, test } from "node:test";
import * as tf from "@tensorflow/tfjs-core";
import { parseHfConfig } from "../../trainer/model/config.js";
import { causalMask, forward } from "../../trainer/model/decoder.js";
import { createModel, createRandomModel, disposeModel, type Model } from "../../trainer/model/model.js";
import { Adam, lossAndGrads, makeBatch } from "../../trainer/model/train-step.js";
import { setup } from "./helpers.js";

before(setup);

const tiny = () =>
  createRandomModel({
    arch: "llama",
    layers: 2,
    hidden: 32,
    heads: 4,
    kvHeads: 2,
    vocab: "byte",
    tieWordEmbeddings: true,
    seed: 5,
    std: 0.2,
  });

const ids = [1, 72, 101, 108, 108, 111, 44, 32, 119, 111];

function logits(m: Model): Float32Array {
  const T = ids.length;
  const l = tf.tidy(
    () =>
      forward(m, {
        ids: tf.tensor2d([ids], [1, T], "int32"),
        positions: tf.range(0, T, 1, "int32") as tf.Tensor1D,
        mask: causalMask(T, m.config.numHeads / m.config.numKvHeads),
      }).logits,
  );
  const out = l.dataSync() as Float32Array;
  l.dispose();
  return out;
}

/** A model with copies of `m`'s weights and a cold head cache. */
function fresh(m: Model): Model {
  const params = new Map([...m.params].map(([n, t]) => [n, tf.clone(t)]));
  return createModel(m.config, params, m.tokenizer?.files ?? null);
}

/** The same weights as an untied model: lm_head = embeddingᵀ (internal [hidden, vocab] layout). */
function untied(m: Model): Model {
  const raw = { ...(m.config.raw as Record<string, unknown>), tie_word_embeddings: false };
  const config = parseHfConfig(raw);
  const params = new Map([...m.params].map(([n, t]) => [n, tf.clone(t)]));
  params.set("lm_head.weight", tf.transpose(m.params.get("model.embed_tokens.weight")!));
  return createModel(config, params, m.tokenizer?.files ?? null);
}

const maxAbs = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  assert.equal(a.length, b.length);
  let e = 0;
  for (let i = 0; i < a.length; i++) e = Math.max(e, Math.abs(a[i]! - b[i]!));
  return e;
};

test("logits and gradients equal an untied model whose lm_head is the embedding's transpose", () => {
  const m = tiny();
  const u = untied(m);
  assert.ok(maxAbs(logits(m), logits(u)) < 1e-5);
  const batch = makeBatch([{ ids, mask: ids.map((_, i) => (i > 2 ? 1 : 0)) }], 0);
  const a = lossAndGrads(m, batch);
  const b = lossAndGrads(u, batch);
  assert.ok(Math.abs(a.loss - b.loss) < 1e-5);
  // The tied embedding's gradient is the lookup's plus the head's (transposed back).
  const want = tf.tidy(() =>
    tf.add(b.grads.get("model.embed_tokens.weight")!, tf.transpose(b.grads.get("lm_head.weight")!)),
  );
  const got = a.grads.get("model.embed_tokens.weight")!;
  assert.ok(maxAbs(got.dataSync(), want.dataSync()) < 1e-5);
  for (const [n, g] of a.grads) {
    if (n === "model.embed_tokens.weight") continue;
    assert.ok(maxAbs(g.dataSync(), b.grads.get(n)!.dataSync()) < 1e-5, n);
  }
  tf.dispose([want, ...a.grads.values(), ...b.grads.values()]);
  disposeModel(m);
  disposeModel(u);
});

test("an optimizer step that changes the embedding invalidates the cached head; disposeModel frees it", () => {
  const warm = tiny(); // anything tfjs keeps after its first use of a kernel is not ours to count
  logits(warm);
  disposeModel(warm);
  const m = tiny();
  const before = tf.memory().numTensors;
  logits(m);
  assert.equal(m.headCache!.size, 1, "one transposed copy after a forward pass");
  assert.equal(tf.memory().numTensors, before + 1);
  const firstCopy = [...m.headCache!.values()][0]!;
  const batch = makeBatch([{ ids, mask: ids.map(() => 1) }], 0);
  const adam = new Adam({ lr: 0.05 });
  for (let step = 0; step < 3; step++) {
    const { grads } = lossAndGrads(m, batch);
    adam.step(m, grads);
    assert.equal(m.headCache!.size, 0, "setParam of the embedding frees its transposed copy");
    const f = fresh(m);
    assert.ok(maxAbs(logits(m), logits(f)) < 1e-6, `step ${step}: logits equal a fresh model's`);
    disposeModel(f);
  }
  assert.ok(firstCopy.isDisposed);
  adam.dispose();
  assert.equal(m.headCache!.size, 1);
  const held = tf.memory().numTensors;
  const owned = m.params.size + 2 + 1; // parameters, the RoPE tables, the head copy
  disposeModel(m);
  assert.equal(tf.memory().numTensors, held - owned, "disposeModel frees the head copy too");
});

test("a replaced embedding (not through setParam) is noticed by the cache and the stale copy freed", () => {
  const m = tiny();
  logits(m);
  const old = m.params.get("model.embed_tokens.weight")!;
  const next = tf.mul(old, 1.5);
  m.params.set("model.embed_tokens.weight", next);
  old.dispose();
  const f = fresh(m);
  assert.ok(maxAbs(logits(m), logits(f)) < 1e-6);
  assert.equal(m.headCache!.size, 1, "the stale copy was freed");
  disposeModel(f);
  disposeModel(m);
});
