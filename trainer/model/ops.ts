/**
 * Differentiable building blocks with gradients written for the wasm backend's strengths:
 * - matMul gradients use explicit transposes (wasm's transposed matMul is 10–20× slower than plain);
 * - batched matMul runs as a loop of 2-D matMuls for large items (wasm's BatchMatMul with batch > 1 is ~10×
 *   slower), as one BatchMatMul with transpose flags for small ones (that kernel reads them at no cost);
 * - embedding lookup (gather) gets a scatter-add gradient (wasm lacks UnsortedSegmentSum).
 */
import * as tf from "@tensorflow/tfjs-core";
// The gradients of the core ops are registered by the @tensorflow/tfjs bundle (tfjs-core's own Node bundle
// leaves them out, and its ES module files do not load under Node's ESM resolver).
import "@tensorflow/tfjs";

/** y = x @ w for x [N, in], w [in, out]. */
export const linear = tf.customGrad((...inputs: Array<tf.Tensor | tf.GradSaveFunc>) => {
  const [x, w, save] = inputs as [tf.Tensor2D, tf.Tensor2D, tf.GradSaveFunc];
  save([x, w]);
  return {
    value: tf.matMul(x, w),
    gradFunc: (dy: tf.Tensor2D, saved: tf.Tensor[]) => {
      const [xs, ws] = saved as [tf.Tensor2D, tf.Tensor2D];
      return [tf.matMul(dy, tf.transpose(ws)), tf.matMul(tf.transpose(xs), dy)];
    },
  };
}) as (x: tf.Tensor2D, w: tf.Tensor2D) => tf.Tensor2D;

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

/** RMSNorm over the last axis: x · rsqrt(mean(x²) + eps) · w. */
export function rmsNorm(x: tf.Tensor2D, w: tf.Tensor1D, eps: number): tf.Tensor2D {
  const ms = tf.mean(tf.square(x), -1, true);
  return tf.mul(tf.mul(x, tf.rsqrt(tf.add(ms, eps))), w);
}

/** SiLU(x) = x · sigmoid(x). */
export function silu(x: tf.Tensor): tf.Tensor {
  return tf.mul(x, tf.sigmoid(x));
}

/**
 * Rotary embedding (the "rotate half" layout of Hugging Face Llama): x [N, heads, hd], cos/sin [N, 1, hd/2].
 * out = [x1·cos − x2·sin, x2·cos + x1·sin] for the two halves x1, x2 of each head.
 */
export function applyRope(x: tf.Tensor3D, cos: tf.Tensor3D, sin: tf.Tensor3D): tf.Tensor3D {
  const [n, h, hd] = x.shape;
  const half = hd / 2;
  const x1 = tf.slice(x, [0, 0, 0], [n, h, half]);
  const x2 = tf.slice(x, [0, 0, half], [n, h, half]);
  return tf.concat(
    [tf.sub(tf.mul(x1, cos), tf.mul(x2, sin)), tf.add(tf.mul(x2, cos), tf.mul(x1, sin))],
    2,
  ) as tf.Tensor3D;
}
