/**
 * What a step is made of, as pure functions of (seed, step): the data order of each epoch, the rows of a step,
 * the sampling seeds (`mixSeed`) and the learning rate. Everything random in a run derives from these, which
 * is what makes a resumed run equal one that never stopped.
 */
import type { ResolvedRft } from "../settings/hyperparameters.js";

/** A 32-bit mix of integers (deterministic seeds for sampling and data order). */
export function mixSeed(...xs: number[]): number {
  let h = 0x9e3779b9;
  for (const x of xs) {
    h ^= x >>> 0;
    h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
    h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
    h ^= h >>> 16;
  }
  return h >>> 0;
}

/** The order of the training rows in an epoch: a Fisher–Yates shuffle seeded by (seed, epoch). */
function epochOrder(n: number, seed: number, epoch: number): number[] {
  const order = Array.from({ length: n }, (_, i) => i);
  let s = mixSeed(seed, epoch, 0x5eed);
  for (let i = n - 1; i > 0; i--) {
    s = mixSeed(s, i);
    const j = s % (i + 1);
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  return order;
}

/** The training rows of a step (1-based): its epoch's permutation, sliced. */
export function stepRows(
  step: number,
  nTrain: number,
  hp: Pick<ResolvedRft, "batchSize" | "stepsPerEpoch">,
  seed: number,
) {
  const epoch = Math.floor((step - 1) / hp.stepsPerEpoch);
  const k = (step - 1) % hp.stepsPerEpoch;
  return epochOrder(nTrain, seed, epoch).slice(k * hp.batchSize, (k + 1) * hp.batchSize);
}

/** Learning rate at a step: linear warm-up, then constant. */
export function learningRateAt(step: number, hp: Pick<ResolvedRft, "learningRate" | "warmupSteps">): number {
  return hp.warmupSteps > 0 && step <= hp.warmupSteps ? (hp.learningRate * step) / hp.warmupSteps : hp.learningRate;
}
