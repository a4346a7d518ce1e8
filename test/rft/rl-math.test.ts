/** Advantage and loss math against hand-computed values (GRPO, Dr. GRPO, DAPO, clipping, KL). */
import assert from "node:assert/strict";
import { before, test } from "node:test";
import "@tensorflow/tfjs-backend-cpu";
import * as tf from "@tensorflow/tfjs-core";
import { groupAdvantages, isZeroVariance, std, tokenWeights } from "../../trainer/rl/advantages.js";
import { policyLoss } from "../../trainer/rl/loss.js";

before(async () => {
  await tf.setBackend("cpu");
});

const close = (a: number, b: number, tol = 1e-6, msg = "") => assert.ok(Math.abs(a - b) <= tol, `${msg} ${a} vs ${b}`);

test("advantages: GRPO/DAPO normalise by the group std; Dr. GRPO only centres", () => {
  const r = [1, 0, 0, 1];
  close(std(r), Math.sqrt(1 / 3), 1e-12);
  const a = groupAdvantages(r, "grpo");
  close(a[0]!, 0.5 / (Math.sqrt(1 / 3) + 1e-4), 1e-12);
  close(a[1]!, -0.5 / (Math.sqrt(1 / 3) + 1e-4), 1e-12);
  assert.deepEqual(groupAdvantages(r, "dapo"), a);
  assert.deepEqual(groupAdvantages(r, "dr_grpo"), [0.5, -0.5, -0.5, 0.5]);
  assert.deepEqual(groupAdvantages([0.7, 0.7, 0.7], "grpo"), [0, 0, 0]);
  assert.equal(isZeroVariance([0.7, 0.7, 0.7]), true);
  assert.equal(isZeroVariance([0.7, 0.7, 0.2]), false);
});

test("aggregation weights: seq-mean-token-mean, token-mean, constant normaliser", () => {
  assert.deepEqual(tokenWeights([2, 3], "grpo", 4), [1 / 4, 1 / 6]);
  assert.deepEqual(tokenWeights([2, 3], "dapo", 4), [1 / 5, 1 / 5]);
  assert.deepEqual(tokenWeights([2, 3], "dr_grpo", 4), [1 / 8, 1 / 8]);
});

// Two sequences: seq0 has ratios [1.5, 1] with A=+1; seq1 has ratio 0.5 with A=−1 and one padding token.
const half = Math.log(0.5);
const input = (weights: number[], ref?: number[][]) => ({
  logp: tf.tensor2d([
    [Math.log(0.75), half],
    [Math.log(0.25), half],
  ]),
  oldLogp: tf.tensor2d([
    [half, half],
    [half, half],
  ]),
  refLogp: ref ? tf.tensor2d(ref) : undefined,
  mask: tf.tensor2d([
    [1, 1],
    [1, 0],
  ]),
  advantages: tf.tensor1d([1, -1]),
  weights: tf.tensor1d(weights),
});
const cfg = { clipLow: 0.2, clipHigh: 0.28, klCoef: 0 };

test("loss: clip-higher and token-mean (DAPO)", () => {
  // seq0: −min(1.5, 1.28) = −1.28 and −1; seq1: −min(−0.5, −0.8) = 0.8. Token-mean over 3 tokens.
  const out = policyLoss(input(tokenWeights([2, 1], "dapo", 4)), cfg);
  close(out.loss.dataSync()[0]!, (-1.28 - 1 + 0.8) / 3, 1e-6, "loss");
  close(out.clipFraction.dataSync()[0]!, 2 / 3, 1e-6, "clip fraction");
});

test("loss: seq-mean-token-mean (GRPO) and constant normaliser (Dr. GRPO)", () => {
  close(policyLoss(input(tokenWeights([2, 1], "grpo", 4)), cfg).loss.dataSync()[0]!, -2.28 / 4 + 0.8 / 2, 1e-6);
  close(policyLoss(input(tokenWeights([2, 1], "dr_grpo", 4)), cfg).loss.dataSync()[0]!, (-2.28 + 0.8) / 8, 1e-6);
});

test("loss gradient: clipped tokens get none, unclipped tokens get −ρ·A·w", () => {
  const x = input(tokenWeights([2, 1], "dapo", 4));
  const g = tf.grad((logp: tf.Tensor) => policyLoss({ ...x, logp: logp as tf.Tensor2D }, cfg).loss)(x.logp);
  const v = Array.from(g.dataSync());
  close(v[0]!, 0, 1e-7, "clipped high");
  close(v[1]!, -1 / 3, 1e-6, "unclipped, ratio 1, A=+1");
  close(v[2]!, 0, 1e-7, "clipped low");
  close(v[3]!, 0, 1e-7, "padding");
});

test("loss: k3 KL to the reference model is added per token", () => {
  // ref − logp = ln 2 on every token: k3 = 2 − ln 2 − 1.
  const ref = [
    [Math.log(1.5), 0],
    [Math.log(0.5), 0],
  ];
  const k3 = 2 - Math.log(2) - 1;
  const w = tokenWeights([2, 1], "dapo", 4);
  const plain = policyLoss(input(w), cfg).loss.dataSync()[0]!;
  const withKl = policyLoss(input(w, ref), { ...cfg, klCoef: 0.1 });
  close(withKl.loss.dataSync()[0]!, plain + 0.1 * k3, 1e-6, "loss with KL");
  close(withKl.kl.dataSync()[0]!, k3, 1e-6, "mean KL");
  assert.throws(() => policyLoss(input(w), { ...cfg, klCoef: 0.1 }), /needs refLogp/);
});

test("loss: the same gradient whether the batch is whole or split into micro-batches", () => {
  const w = tokenWeights([2, 1], "dapo", 4);
  const x = input(w);
  const whole = tf.grad((l: tf.Tensor) => policyLoss({ ...x, logp: l as tf.Tensor2D }, cfg).loss)(x.logp);
  const part = (i: number) => {
    const sl = <T extends tf.Tensor>(t: T) => tf.slice(t, [i], [1]) as T;
    const xi = {
      logp: sl(x.logp),
      oldLogp: sl(x.oldLogp),
      mask: sl(x.mask),
      advantages: sl(x.advantages),
      weights: sl(x.weights),
    };
    return tf.grad((l: tf.Tensor) => policyLoss({ ...xi, logp: l as tf.Tensor2D }, cfg).loss)(xi.logp);
  };
  const split = tf.concat([part(0), part(1)]);
  assert.deepEqual(Array.from(split.dataSync()), Array.from(whole.dataSync()));
});
