/**
 * The clipped policy-gradient loss of the GRPO family (TRL's GRPOTrainer is the readable model), on tfjs.
 *
 * Per completion token t of sample i, with ratio ρ = exp(logp − oldLogp):
 *   ℓ_{i,t} = −min(ρ·A_i, clip(ρ, 1 − ε_low, 1 + ε_high)·A_i) + β·k3,
 *   k3 = exp(refLogp − logp) − (refLogp − logp) − 1          (Schulman's unbiased, non-negative KL estimator)
 * and the loss is Σ_{i,t} w_i · mask_{i,t} · ℓ_{i,t} with the aggregation weights of advantages.ts.
 */
// Registers every op gradient and chained op on the shared tfjs-core engine (tfjs-core alone ships none in its Node build).
import "../model/tfjs.js";
import * as tf from "@tensorflow/tfjs-core";

export interface PolicyLossInput {
  /** log π_θ of each completion token under the current policy, [B, T] (differentiable). */
  logp: tf.Tensor2D;
  /** log π_old of the same tokens (from sampling), [B, T]. */
  oldLogp: tf.Tensor2D;
  /** log π_ref of the same tokens (frozen reference model), [B, T]; needed when klCoef > 0. */
  refLogp?: tf.Tensor2D;
  /** 1 on completion tokens, 0 on padding, [B, T]. */
  mask: tf.Tensor2D;
  /** One advantage per sequence, [B]. */
  advantages: tf.Tensor1D;
  /** One aggregation weight per sequence, [B] (tokenWeights). */
  weights: tf.Tensor1D;
}

export interface PolicyLossConfig {
  clipLow: number;
  clipHigh: number;
  klCoef: number;
}

export interface PolicyLossOutput {
  loss: tf.Scalar;
  /** Fraction of completion tokens whose ratio was clipped (for metrics). */
  clipFraction: tf.Scalar;
  /** Mean k3 KL over completion tokens (0 without a reference). */
  kl: tf.Scalar;
}

export function policyLoss(x: PolicyLossInput, cfg: PolicyLossConfig): PolicyLossOutput {
  return tf.tidy(() => {
    const adv = tf.expandDims(x.advantages, 1) as tf.Tensor2D;
    const ratio = tf.exp(tf.sub(x.logp, x.oldLogp));
    const clipped = tf.clipByValue(ratio, 1 - cfg.clipLow, 1 + cfg.clipHigh);
    const surrogate = tf.minimum(tf.mul(ratio, adv), tf.mul(clipped, adv));
    let perToken = tf.neg(surrogate);
    let kl: tf.Tensor = tf.scalar(0);
    const tokens = tf.maximum(tf.sum(x.mask), 1);
    if (cfg.klCoef > 0) {
      if (!x.refLogp) throw new Error("policyLoss: klCoef > 0 needs refLogp");
      const d = tf.sub(x.refLogp, x.logp);
      const k3 = tf.sub(tf.sub(tf.exp(d), d), 1);
      perToken = tf.add(perToken, tf.mul(k3, cfg.klCoef));
      kl = tf.div(tf.sum(tf.mul(k3, x.mask)), tokens);
    }
    const w = tf.mul(x.mask, tf.expandDims(x.weights, 1));
    const loss = tf.sum(tf.mul(perToken, w)) as tf.Scalar;
    const isClipped = tf.cast(tf.notEqual(ratio, clipped), "float32");
    const clipFraction = tf.div(tf.sum(tf.mul(isClipped, x.mask)), tokens) as tf.Scalar;
    return { loss, clipFraction, kl: kl as tf.Scalar };
  });
}
