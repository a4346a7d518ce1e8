/**
 * Differentiable building blocks with gradients written for the wasm backend's strengths:
 * - matMul gradients use explicit transposes (wasm's transposed matMul is 10–20× slower than plain);
 * - batched matMul runs as a loop of 2-D matMuls for large items (wasm's BatchMatMul with batch > 1 is ~10×
 *   slower), as one BatchMatMul with transpose flags for small ones (that kernel reads them at no cost);
 * - embedding lookup (gather) gets a scatter-add gradient (wasm lacks UnsortedSegmentSum).
 */
import * as tf from "@tensorflow/tfjs-core";
// The gradients of the core ops (the @tensorflow/tfjs bundle, loaded once by ./tfjs.ts).
import "./tfjs.js";

/** y = x @ w for x [N, in], w [in, out]. */
export const linear = tf.customGrad((...inputs: Array<tf.Tensor | tf.GradSaveFunc>) => {
  const [x, w, save] = inputs as [tf.Tensor2D, tf.Tensor2D, tf.GradSaveFunc];
  save([x, w]);
  return {
    value: tf.matMul(x, w),
    gradFunc: (dy: tf.Tensor2D, saved: tf.Tensor[]) => {
      const [xs, ws] = saved as [tf.Tensor2D, tf.Tensor2D];
      // The transposes are freed at once, not at the end of the backward pass: with every layer's weight
      // transposed (and packed again by XNNPACK as a matMul operand), a 135M model's backward held ~1 GB more.
      const wT = tf.transpose(ws);
      const dx = tf.matMul(dy, wT);
      wT.dispose();
      const xT = tf.transpose(xs);
      const dw = tf.matMul(xT, dy);
      xT.dispose();
      return [dx, dw];
    },
  };
}) as (x: tf.Tensor2D, w: tf.Tensor2D) => tf.Tensor2D;

/**
 * Logits of a tied head: hn [R, H] @ embᵀ, with embᵀ [H, V] given (made once per weight version, see
 * decoder.ts's head cache) and not an input of the gradient: the embedding's gradient is dyᵀ @ hn [V, H]
 * directly (one transpose of dy [R, V] instead of two of the [H, V] weight), hn's is dy @ emb (plain).
 */
export function tiedHead(hn: tf.Tensor2D, emb: tf.Tensor2D, embT: tf.Tensor2D): tf.Tensor2D {
  const f = tf.customGrad((...inputs: Array<tf.Tensor | tf.GradSaveFunc>) => {
    const [x, e, save] = inputs as [tf.Tensor2D, tf.Tensor2D, tf.GradSaveFunc];
    save([x, e]);
    return {
      value: tf.matMul(x, embT) as tf.Tensor2D,
      gradFunc: (dy: tf.Tensor2D, saved: tf.Tensor[]) => {
        const [xs, es] = saved as [tf.Tensor2D, tf.Tensor2D];
        const dyT = tf.transpose(dy);
        const de = tf.matMul(dyT, xs);
        dyT.dispose();
        return [tf.matMul(dy, es), de];
      },
    };
  });
  return f(hn, emb) as tf.Tensor2D;
}

/**
 * Below this many multiply-adds per item, one BatchMatMul beats n separate kernel launches (decode steps,
 * short prompts); above it, the loop of 2-D matMuls wins on wasm.
 */
const SMALL_ITEM = 64 * 64 * 64;

const swap = (t: tf.Tensor3D) => tf.transpose(t, [0, 2, 1]) as tf.Tensor3D;

/**
 * c[i] = op(a[i]) @ op(b[i]), op = transpose where asked. wasm's BatchMatMul (batch > 1) reads transposed
 * operands as fast as plain ones and sums in the same order, so small items take the flags as they are;
 * the 2-D matMuls (XNNPACK) are fast only on plain operands, so large items get materialised transposes.
 */
function loopBmm(a: tf.Tensor3D, b: tf.Tensor3D, transposeA = false, transposeB = false): tf.Tensor3D {
  const n = a.shape[0];
  const m = transposeA ? a.shape[2] : a.shape[1];
  const k = transposeA ? a.shape[1] : a.shape[2];
  const p = transposeB ? b.shape[1] : b.shape[2];
  if (n > 1 && m * k * p < SMALL_ITEM) return tf.matMul(a, b, transposeA, transposeB);
  const ap = transposeA ? swap(a) : a;
  const bp = transposeB ? swap(b) : b;
  let out: tf.Tensor3D;
  if (n === 1) {
    out = tf.tidy(() => tf.reshape(tf.matMul(tf.reshape(ap, [m, k]), tf.reshape(bp, [k, p])), [1, m, p]));
  } else {
    const as = tf.unstack(ap) as tf.Tensor2D[];
    const bs = tf.unstack(bp) as tf.Tensor2D[];
    out = tf.stack(as.map((x, i) => tf.matMul(x, bs[i]!))) as tf.Tensor3D;
    tf.dispose([...as, ...bs]);
  }
  if (ap !== a) ap.dispose();
  if (bp !== b) bp.dispose();
  return out;
}

/** c[i] = a[i] @ b[i] for a [n, m, k], b [n, k, p]. */
export const bmm = tf.customGrad((...inputs: Array<tf.Tensor | tf.GradSaveFunc>) => {
  const [a, b, save] = inputs as [tf.Tensor3D, tf.Tensor3D, tf.GradSaveFunc];
  save([a, b]);
  return {
    value: loopBmm(a, b),
    gradFunc: (dy: tf.Tensor3D, saved: tf.Tensor[]) => {
      const [as, bs] = saved as [tf.Tensor3D, tf.Tensor3D];
      return [loopBmm(dy, bs, false, true), loopBmm(as, dy, true, false)];
    },
  };
}) as (a: tf.Tensor3D, b: tf.Tensor3D) => tf.Tensor3D;

/** c[i] = a[i] @ b[i]ᵀ for a [n, m, k], b [n, p, k] (attention scores against keys stored [S, hd]). */
export const bmmT = tf.customGrad((...inputs: Array<tf.Tensor | tf.GradSaveFunc>) => {
  const [a, b, save] = inputs as [tf.Tensor3D, tf.Tensor3D, tf.GradSaveFunc];
  save([a, b]);
  return {
    value: loopBmm(a, b, false, true),
    gradFunc: (dy: tf.Tensor3D, saved: tf.Tensor[]) => {
      const [as, bs] = saved as [tf.Tensor3D, tf.Tensor3D];
      return [loopBmm(dy, bs), loopBmm(dy, as, true, false)];
    },
  };
}) as (a: tf.Tensor3D, b: tf.Tensor3D) => tf.Tensor3D;

/** Rows of `table` [V, D] at `ids` (int32, any shape) → [...ids.shape, D]; gradient by scatter-add. */
export function embeddingLookup(table: tf.Tensor2D, ids: tf.Tensor): tf.Tensor2D {
  const flat = tf.reshape(ids, [-1]) as tf.Tensor1D;
  const f = tf.customGrad((...inputs: Array<tf.Tensor | tf.GradSaveFunc>) => {
    const [t, idx, save] = inputs as [tf.Tensor2D, tf.Tensor1D, tf.GradSaveFunc];
    save([idx]);
    return {
      value: tf.gather(t, idx),
      gradFunc: (dy: tf.Tensor2D, saved: tf.Tensor[]) => {
        const ix = saved[0]!;
        const dt = tf.scatterND(tf.reshape(ix, [-1, 1]), dy, table.shape);
        return [dt, tf.zerosLike(ix)];
      },
    };
  });
  return f(table, flat) as tf.Tensor2D;
}

/**
 * Rows `index` of x [n, d] → [index.length, d] (a row may repeat), as a product with a 0/1 selection matrix:
 * exact (x·1 + zeros), and on wasm far faster than tf.gather, whose kernel moves one element at a time
 * (~20 ns each), while n stays small (KV-cache rows by sample). The gradient sums by the transposed matrix.
 */
export function selectRows(x: tf.Tensor2D, index: ArrayLike<number>): tf.Tensor2D {
  const n = x.shape[0];
  const m = index.length;
  const f = tf.customGrad((...inputs: Array<tf.Tensor | tf.GradSaveFunc>) => {
    const [xs, save] = inputs as [tf.Tensor2D, tf.GradSaveFunc];
    const sel = new Float32Array(m * n);
    const selT = new Float32Array(n * m);
    for (let i = 0; i < m; i++) {
      sel[i * n + index[i]!] = 1;
      selT[index[i]! * m + i] = 1;
    }
    const s = tf.tensor2d(sel, [m, n]);
    const value = tf.matMul(s, xs) as tf.Tensor2D;
    s.dispose();
    save([tf.tensor2d(selT, [n, m])]);
    return {
      value,
      gradFunc: (dy: tf.Tensor2D, saved: tf.Tensor[]) => [tf.matMul(saved[0] as tf.Tensor2D, dy)],
    };
  });
  return f(x) as tf.Tensor2D;
}

/** RMSNorm over the last axis: x · rsqrt(mean(x²) + eps) · w. */
export function rmsNorm(x: tf.Tensor2D, w: tf.Tensor1D, eps: number): tf.Tensor2D {
  const ms = tf.mean(tf.square(x), -1, true);
  return tf.mul(tf.mul(x, tf.rsqrt(tf.add(ms, eps))), w);
}

/** SiLU(x) = x · sigmoid(x). */
export function silu(x: tf.Tensor): tf.Tensor {
  return tf.mul(x, tf.sigmoid(x));
}

/** The signed permutation R with [x1, x2]·R = [−x2, x1] (halves of hd), and its transpose. */
export function rotationMatrices(hd: number): { r: tf.Tensor2D; rT: tf.Tensor2D } {
  const half = hd / 2;
  const r = new Float32Array(hd * hd);
  const rT = new Float32Array(hd * hd);
  for (let i = 0; i < half; i++) {
    r[(half + i) * hd + i] = -1; // out[i] = −x2[i]
    r[i * hd + half + i] = 1; // out[half + i] = x1[i]
    rT[i * hd + half + i] = -1;
    rT[(half + i) * hd + i] = 1;
  }
  return { r: tf.tensor2d(r, [hd, hd]), rT: tf.tensor2d(rT, [hd, hd]) };
}

/**
 * [x1, x2] → [−x2, x1] over the last axis of x [N, hd], as a product with a signed permutation matrix: exact
 * (one ±1 per column), and cheaper on wasm than slicing the halves and concatenating them (slices and their
 * gradients, pads, move one element at a time).
 */
export function rotateHalf(x: tf.Tensor2D, rot: { r: tf.Tensor2D; rT: tf.Tensor2D }): tf.Tensor2D {
  const f = tf.customGrad((...inputs: Array<tf.Tensor | tf.GradSaveFunc>) => {
    const [xs, save] = inputs as [tf.Tensor2D, tf.GradSaveFunc];
    save([rot.rT]);
    return {
      value: tf.matMul(xs, rot.r) as tf.Tensor2D,
      gradFunc: (dy: tf.Tensor2D, saved: tf.Tensor[]) => [tf.matMul(dy, saved[0] as tf.Tensor2D)],
    };
  });
  return f(x) as tf.Tensor2D;
}

/**
 * Rotary embedding (the "rotate half" layout of Hugging Face Llama): x [N, heads, hd], cos/sin [N, 1, hd]
 * (each table's half repeated). out = x·cos + rotateHalf(x)·sin = [x1·cos − x2·sin, x2·cos + x1·sin],
 * bit for bit (a + (−b)·c = a − b·c in IEEE arithmetic).
 */
export function applyRope(
  x: tf.Tensor3D,
  cos: tf.Tensor3D,
  sin: tf.Tensor3D,
  rot: { r: tf.Tensor2D; rT: tf.Tensor2D },
): tf.Tensor3D {
  const [n, h, hd] = x.shape;
  const rx = tf.reshape(rotateHalf(tf.reshape(x, [n * h, hd]), rot), [n, h, hd]);
  return tf.add(tf.mul(x, cos), tf.mul(rx, sin));
}
