/**
 * Micro-benchmark of batched matMul variants on the wasm backend, at the attention shapes of the sort-digits
 * RFT step: c[i] = a[i] @ b[i] for a [n, m, k], b [n, k, p].
 *
 *   npx tsx bench/bmm.ts
 *
 * Variants: tf.matMul on the 3-D tensors (wasm's generic BatchMatMul loop, b read with stride p), the same
 * with b given transposed (`transposeB`, both operands read contiguously), a loop of 2-D matMuls (XNNPACK,
 * one operator per item), and a broadcast multiply + sum. Prints µs per call and GFLOP/s.
 */
import "../trainer/model/tfjs.js";
import * as tf from "@tensorflow/tfjs-core";
import { useBackend } from "../trainer/model/backend.js";

await useBackend("wasm");

function bench(f: () => tf.Tensor, minMs = 300): number {
  for (let i = 0; i < 3; i++) f().dispose();
  let n = 0;
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  while (performance.now() - t0 < minMs) {
    f().dispose();
    n++;
  }
  const c = process.cpuUsage(c0);
  return (c.user + c.system) / n; // CPU µs per call
}

const shapes: [string, number, number, number, number][] = [
  ["train scores  ", 32, 86, 32, 43],
  ["train probs·v ", 32, 86, 43, 32],
  ["train dK      ", 32, 32, 86, 43],
  ["prefill scores", 128, 56, 32, 28],
  ["prefill p·v   ", 128, 56, 28, 32],
  ["decode scores ", 128, 2, 32, 36],
  ["decode p·v    ", 128, 2, 36, 32],
  ["sfx scores    ", 32, 30, 32, 43],
];
for (const [label, n, m, k, p] of shapes) {
  const a = tf.randomNormal([n, m, k]) as tf.Tensor3D;
  const b = tf.randomNormal([n, k, p]) as tf.Tensor3D;
  const bT = tf.transpose(b, [0, 2, 1]) as tf.Tensor3D;
  const flop = 2 * n * m * k * p;
  const res: Record<string, number> = {};
  res.batched = bench(() => tf.matMul(a, b));
  res.batchedTB = bench(() => tf.matMul(a, bT, false, true));
  res.transposeThenTB = bench(() => tf.tidy(() => tf.matMul(a, tf.transpose(b, [0, 2, 1]), false, true)));
  res.loop2d = bench(() =>
    tf.tidy(() => {
      const as = tf.unstack(a) as tf.Tensor2D[];
      const bs = tf.unstack(b) as tf.Tensor2D[];
      return tf.stack(as.map((x, i) => tf.matMul(x, bs[i]!)));
    }),
  );
  res.mulSum = bench(() =>
    tf.tidy(() => tf.sum(tf.mul(tf.reshape(a, [n, m, 1, k]), tf.reshape(bT, [n, 1, p, k])), -1)),
  );
  // exactness of the transposed variant vs the plain one
  const d = tf.tidy(() => tf.max(tf.abs(tf.sub(tf.matMul(a, b), tf.matMul(a, bT, false, true)))).dataSync()[0]);
  console.log(
    `${label} [${n},${m},${k}]x[${n},${k},${p}]  ` +
      Object.entries(res)
        .map(([kk, us]) => `${kk} ${us.toFixed(0)}µs (${(flop / us / 1e3).toFixed(2)} GF/s)`)
        .join("  ") +
      `  max|Δ TB| ${d}`,
  );
  tf.dispose([a, b, bT]);
}
