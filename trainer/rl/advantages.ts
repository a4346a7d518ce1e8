/**
 * Group-relative advantages and loss weights for the GRPO family. Pure functions over plain numbers.
 *
 * Rewards arrive grouped: the K samples of one prompt are a group. Advantages (one per sample, shared by all
 * its tokens):
 *   grpo, dapo:  A_i = (r_i − mean(r)) / (std(r) + 1e-4)   (std with Bessel's correction, as TRL)
 *   dr_grpo:     A_i =  r_i − mean(r)                       (no std: Dr. GRPO's difficulty-bias fix)
 * Per-token loss weights w_{i,t} turn Σ w·ℓ into each paper's aggregation, over the whole step's batch (so
 * splitting the batch into micro-batches — per envelope, per rank — never changes the gradient):
 *   grpo:    seq-mean-token-mean   w = 1 / (|o_i| · N)
 *   dapo:    token-mean            w = 1 / Σ_j |o_j|
 *   dr_grpo: seq-mean-token-sum-norm  w = 1 / (N · L), L = max completion tokens
 * where N is the number of sequences in the step and |o_i| the completion length of sample i.
 */
import type { LossType } from "../../proto/finetunejob.js";

export const STD_EPS = 1e-4;

export function mean(xs: readonly number[]): number {
  return xs.reduce((a, b) => a + b, 0) / xs.length;
}

/** Sample standard deviation (n − 1 in the denominator); 0 for fewer than two values. */
export function std(xs: readonly number[]): number {
  if (xs.length < 2) return 0;
  const m = mean(xs);
  return Math.sqrt(xs.reduce((a, x) => a + (x - m) ** 2, 0) / (xs.length - 1));
}

export function groupAdvantages(rewards: readonly number[], loss: LossType): number[] {
  if (isZeroVariance(rewards)) return rewards.map(() => 0); // exactly zero, free of rounding in the mean
  const m = mean(rewards);
  if (loss === "dr_grpo") return rewards.map((r) => r - m);
  const s = std(rewards);
  return rewards.map((r) => (r - m) / (s + STD_EPS));
}

/** True when every reward of a group is the same: its advantages are all zero and it teaches nothing. */
export function isZeroVariance(rewards: readonly number[]): boolean {
  return rewards.every((r) => r === rewards[0]);
}

/** Per-sequence token weight (every completion token of sequence i gets weights[i]). */
export function tokenWeights(lengths: readonly number[], loss: LossType, maxCompletionTokens: number): number[] {
  const n = lengths.length;
  if (n === 0) return [];
  switch (loss) {
    case "grpo":
      return lengths.map((len) => (len > 0 ? 1 / (len * n) : 0));
    case "dapo": {
      const total = lengths.reduce((a, b) => a + b, 0);
      return lengths.map(() => (total > 0 ? 1 / total : 0));
    }
    case "dr_grpo":
      return lengths.map(() => 1 / (n * maxCompletionTokens));
  }
}

/**
 * Phase "advantages": the group-relative advantage of every sample, groups of `groupSize` consecutive samples
 * (the K samples of one prompt); with dynamic sampling the zero-variance groups carry no signal and are
 * dropped. Returns the kept samples and their advantages, in order.
 */
export function stepAdvantages<T extends { response: { reward: number } }>(
  samples: readonly T[],
  groupSize: number,
  o: { loss: LossType; dynamicSampling: boolean },
): { kept: T[]; advantages: number[] } {
  const kept: T[] = [];
  const advantages: number[] = [];
  for (let g = 0; g * groupSize < samples.length; g++) {
    const group = samples.slice(g * groupSize, (g + 1) * groupSize);
    const rewards = group.map((r) => r.response.reward);
    if (o.dynamicSampling && isZeroVariance(rewards)) continue;
    kept.push(...group);
    advantages.push(...groupAdvantages(rewards, o.loss));
  }
  return { kept, advantages };
}
