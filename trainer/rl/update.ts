/**
 * Phase "update": one policy update on a step's kept samples, masked per envelope. The samples are split by
 * their row's envelope, and each part's gradient is taken only with respect to the parameters of the groups
 * in its envelope (the other parameters are constants of that part's loss). A parameter no part may touch gets
 * no gradient and is left to the optimizer untouched: its bytes and its optimizer state stay as they were.
 * Returns what the ledger records of the step, and the loss statistics of the metrics (clip fraction, KL).
 *
 * A diverged update (a NaN or infinite gradient norm) stops here, before the optimizer step changes anything:
 * `TrainingDivergedError` names the step and what to change; the weights, the optimizer state, the last
 * checkpoint and the ledger stay as the previous step left them.
 */
import * as tf from "@tensorflow/tfjs-core";
import type { Collective } from "../collective/collective.js";
import { allReduceGradients, globalShare, type ShareSummary } from "../collective/data-parallel.js";
import type { RftRow } from "../data/dataset.js";
import type { AdmittedRow } from "../governance/admission.js";
import { type Digest, type DigestCache, digestTensors, groupDigests } from "../governance/digests.js";
import { noteWork } from "../model/backend-failure.js";
import type { Model } from "../model/model.js";
import type { Params } from "../model/params.js";
import { type Adam, NonFiniteGradientError } from "../model/train-step.js";
import type { ResolvedRft } from "../settings/hyperparameters.js";
import { tokenWeights } from "./advantages.js";
import { completionLogprobs, packSequences } from "./logprobs.js";
import { policyLoss } from "./loss.js";
import type { Rollout } from "./rollouts.js";
import { learningRateAt, mixSeed } from "./schedule.js";

/** What an update reads and changes: the policy, its reference, the optimizer and the run's governance maps. */
export interface UpdateContext {
  model: Model;
  /** The frozen KL reference (klCoef > 0), else null. */
  ref: Params | null;
  adam: Adam;
  hp: ResolvedRft;
  /** The collective of a multi-rank run, else null. */
  dp: Collective | null;
  rank: number;
  seed: number;
  /** Sequences per forward/backward pass. */
  microBatch: number;
  admission: Map<RftRow, AdmittedRow>;
  /** Ledger group → tensor names. */
  groups: Map<string, string[]>;
  /** Ledger group → the tensors training changes. */
  trainable: Map<string, string[]>;
  /** Each group's current weight digest; the changed groups' digests are updated in place. */
  digests: Record<string, Digest>;
  digestCache: DigestCache | undefined;
}

/** Token sums of the clipped policy-gradient loss over a step's updates (for the step's metrics). */
export interface LossSums {
  /** Completion tokens in the loss, summed over the updates. */
  tokens: number;
  /** Of those, tokens whose probability ratio was clipped. */
  clipped: number;
  /** Σ of the k3 KL estimate over those tokens (0 without a reference). */
  kl: number;
}

export interface StepUpdate {
  sequences: number;
  tokens: number;
  contributions: Record<string, string[]>;
  gradients: Record<string, { l2: number; digest: Digest }>;
  before: Record<string, Digest>;
  after: Record<string, Digest>;
  loss: LossSums;
  /** The global gradient norm of the last optimizer step (null: no update). */
  gradNorm: number | null;
  /** Seconds of governance work in the update (gradient summaries, weight digests). */
  governanceSeconds: number;
}

/** The update diverged: a NaN or infinite gradient norm, caught before the optimizer step. */
export class TrainingDivergedError extends Error {
  constructor(
    readonly step: number,
    readonly gradNorm: number,
    readonly groups: string[],
    hp: Pick<ResolvedRft, "learningRateMultiplier">,
  ) {
    super(
      `training diverged at step ${step}: the gradient norm is ${gradNorm}` +
        `${groups.length ? ` (non-finite in groups ${groups.join(", ")})` : ""}; the update was not applied, and the ` +
        `weights, checkpoints and ledger stay as step ${step - 1} left them. Lower learning_rate_multiplier ` +
        `(now ${hp.learningRateMultiplier}), or raise clip_epsilon/kl_coef to keep the policy near its samples, and ` +
        `start again from the last checkpoint`,
    );
    this.name = "TrainingDivergedError";
  }
}

interface Keep {
  r: Rollout;
  a: number;
}

/** The samples by envelope (the groups a row may reach), in a stable order, and the rows contributing to each group. */
function envelopeParts(keep: Keep[], c: UpdateContext) {
  const parts = new Map<string, { groups: string[]; idx: number[] }>();
  const contributions: Record<string, Set<string>> = {};
  keep.forEach((x, i) => {
    const admitted = c.admission.get(x.r.row)!;
    const key = admitted.groups.join(",");
    const part = parts.get(key) ?? { groups: admitted.groups, idx: [] };
    part.idx.push(i);
    parts.set(key, part);
    // Only the groups with trainable tensors take a contribution: under LoRA the frozen base groups, and a group
    // without tensors of its own (lm_head of a model with tied embeddings), receive no gradient (and the verifier
    // asks a gradient of every contributed group).
    for (const g of admitted.groups)
      if (c.trainable.get(g)!.length > 0) (contributions[g] ??= new Set()).add(admitted.id);
  });
  return { parts, contributions };
}

/**
 * With several ranks: the step's lengths and envelope parts from every rank, so that the loss weights are
 * those of the whole step and every rank packs the same gradient layout.
 */
async function globalLayout(keep: Keep[], lengths: number[], c: UpdateContext) {
  if (!c.dp) return null;
  const parts: string[][] = [];
  const seen = new Set<string>();
  for (const x of keep) {
    const groups = c.admission.get(x.r.row)!.groups;
    if (!seen.has(groups.join(","))) {
      seen.add(groups.join(","));
      parts.push(groups);
    }
  }
  return globalShare(await c.dp.allGatherJson<ShareSummary>({ lengths, parts }), c.rank, c.trainable);
}

/** This rank's gradient of one update: every envelope part, micro-batch by micro-batch, summed per tensor. */
function updateGradient(
  c: UpdateContext,
  o: { keep: Keep[]; weights: number[]; parts: Map<string, { groups: string[]; idx: number[] }> },
  step: number,
  u: number,
  loss: LossSums,
): Map<string, tf.Tensor> {
  const micro = c.microBatch;
  const padId = c.model.tokenizer?.padId ?? c.model.config.padTokenId ?? 0;
  const grads = new Map<string, tf.Tensor>();
  for (const { groups, idx } of o.parts.values()) {
    const names = groups.flatMap((g) => c.trainable.get(g)!);
    if (names.length === 0) continue;
    for (let s = 0; s < idx.length; s += micro) {
      const ids = idx.slice(s, s + micro);
      noteWork(
        `training step ${step}, micro-batch ${s / micro + 1}/${Math.ceil(idx.length / micro)} (${ids.length} sequences, --micro-batch ${micro})`,
      );
      const g = partGradients(
        c,
        ids.map((i) => o.keep[i]!),
        ids.map((i) => o.weights[i]!),
        names,
        padId,
        mixSeed(c.seed, step, u, c.rank, s, names.length),
        loss,
      );
      g.forEach((t, k) => {
        const prev = grads.get(names[k]!);
        grads.set(names[k]!, prev ? tf.add(prev, t) : t);
        if (prev) tf.dispose([prev, t]);
      });
    }
  }
  return grads;
}

/** Gradients of one micro-batch's loss with respect to `names` (the other parameters are constants). */
function partGradients(
  c: UpdateContext,
  part: Keep[],
  weights: number[],
  names: string[],
  padId: number,
  dropoutSeed: number,
  sums: LossSums,
): tf.Tensor[] {
  const { hp, model } = c;
  const batch = packSequences(
    part.map((x) => ({ prompt: x.r.prompt, completion: x.r.completion.tokens })),
    padId,
  );
  const perRow = (f: (i: number) => number) => Float32Array.from(batch.seqOfRow, (b) => f(b));
  const old = Float32Array.from(part.flatMap((x) => x.r.completion.logprobs));
  let stats: tf.Tensor[] = [];
  const grads = tf.tidy(() => {
    const R = batch.rows.length;
    const oldLogp = tf.tensor2d(old, [R, 1]);
    const mask = tf.ones([R, 1]) as tf.Tensor2D;
    const adv = tf.tensor1d(perRow((b) => part[b]!.a));
    const w = tf.tensor1d(perRow((b) => weights[b]!));
    const refLogp = c.ref ? (tf.reshape(completionLogprobs(model, c.ref, batch), [R, 1]) as tf.Tensor2D) : undefined;
    // LoRA dropout (when set) with masks of this micro-batch's seed; never in sampling or the reference.
    const policy = model.lora ? { ...model, lora: { ...model.lora, dropoutSeed } } : model;
    const f = (...ws: tf.Tensor[]) => {
      const params = new Map(model.params);
      names.forEach((n, i) => params.set(n, ws[i]!));
      const logp = tf.reshape(completionLogprobs(policy, params, batch), [R, 1]) as tf.Tensor2D;
      const out = policyLoss(
        { logp, oldLogp, refLogp, mask, advantages: adv, weights: w },
        { clipLow: hp.clipEpsilon.low, clipHigh: hp.clipEpsilon.high, klCoef: hp.klCoef },
      );
      // The metrics' clip fraction and KL of this micro-batch, kept past the gradient's scopes.
      stats = [tf.keep(out.clipFraction), tf.keep(out.kl)];
      return out.loss;
    };
    return tf.grads(f)(names.map((n) => model.params.get(n)!));
  });
  const [clipFraction, kl] = stats.map((t) => t.dataSync()[0]!);
  tf.dispose(stats);
  const tokens = batch.rows.length;
  sums.tokens += tokens;
  sums.clipped += clipFraction! * tokens;
  sums.kl += kl! * tokens;
  return grads;
}

/**
 * What the ledger records of this rank's gradient (Σ over the updates): its L2 norm and digest per touched
 * group.
 */
function gradientSummary(grad: Map<string, tf.Tensor>, touched: string[], trainable: Map<string, string[]>) {
  const gradients: Record<string, { l2: number; digest: Digest }> = {};
  for (const g of touched) {
    const names = trainable.get(g)!;
    const l2 = Math.sqrt(tf.tidy(() => tf.addN(names.map((n) => tf.sum(tf.square(grad.get(n)!)))).dataSync()[0]!));
    gradients[g] = { l2, digest: digestTensors(names, (n) => grad.get(n)!) };
  }
  return gradients;
}

/** The optimizer step of one update, stopped with TrainingDivergedError when the gradient norm is not finite. */
function optimizerStep(
  c: UpdateContext,
  grads: Map<string, tf.Tensor>,
  step: number,
  gradients: Record<string, { l2: number }>,
): number {
  noteWork(`the optimizer step of step ${step}`);
  c.adam.opts.lr = learningRateAt(step, c.hp);
  try {
    return c.adam.step(c.model, grads).gradNorm;
  } catch (e) {
    if (!(e instanceof NonFiniteGradientError)) throw e;
    const groups = Object.keys(gradients).filter((g) => !Number.isFinite(gradients[g]!.l2));
    throw new TrainingDivergedError(step, e.gradNorm, groups, c.hp);
  }
}

/** A step with nothing to train (no kept sample with tokens on any rank): the weights stay as they are. */
function noUpdate(before: Record<string, Digest>): StepUpdate {
  const loss = { tokens: 0, clipped: 0, kl: 0 };
  return {
    sequences: 0,
    tokens: 0,
    contributions: {},
    gradients: {},
    before,
    after: before,
    loss,
    gradNorm: null,
    governanceSeconds: 0,
  };
}

/** The update of a step (updatesPerBatch optimizer steps over the kept samples). */
export async function updatePolicy(
  c: UpdateContext,
  rollouts: Rollout[],
  advantages: number[],
  step: number,
): Promise<StepUpdate> {
  const { hp, dp } = c;
  const keep = rollouts.map((r, i) => ({ r, a: advantages[i]! })).filter((x) => x.r.completion.tokens.length > 0);
  let gradients: Record<string, { l2: number; digest: Digest }> = {};
  const loss: LossSums = { tokens: 0, clipped: 0, kl: 0 };
  const before = { ...c.digests };
  const lengths = keep.map((x) => x.r.completion.tokens.length);
  const global = await globalLayout(keep, lengths, c);
  const globalCount = global ? global.lengths.length : keep.length;
  if (globalCount === 0) return noUpdate(before);
  const weights = global
    ? tokenWeights(global.lengths, hp.loss, hp.maxCompletionTokens).slice(global.offset, global.offset + keep.length)
    : tokenWeights(lengths, hp.loss, hp.maxCompletionTokens);
  const { parts, contributions } = envelopeParts(keep, c);
  const touched = Object.keys(contributions);
  // The groups whose weights change: this rank's, or with several ranks every rank's (their tensors are
  // global.names).
  const changed = global
    ? [...c.trainable.keys()].filter((g) => c.trainable.get(g)!.some((n) => global.names.includes(n)))
    : touched;
  let governanceSeconds = 0;
  let gradNorm: number | null = null;
  // With one update per batch the ledger's gradient summary is read from the update's own gradients before the
  // optimizer consumes them; only several updates keep a running sum (a copy of every touched tensor).
  const summarize = (grad: Map<string, tf.Tensor>) => {
    const t = performance.now();
    gradients = gradientSummary(grad, touched, c.trainable);
    governanceSeconds += (performance.now() - t) / 1000;
  };
  const stepGrad = new Map<string, tf.Tensor>(); // Σ over updates of this rank's gradient (several updates)
  try {
    for (let u = 0; u < hp.updatesPerBatch; u++) {
      let grads = updateGradient(c, { keep, weights, parts }, step, u, loss);
      if (hp.updatesPerBatch === 1) summarize(grads);
      else
        for (const [n, g] of grads) {
          const prev = stepGrad.get(n);
          stepGrad.set(n, prev ? tf.add(prev, g) : tf.clone(g));
          prev?.dispose();
        }
      if (dp && global) {
        const shapes = new Map(global.names.map((n) => [n, c.model.params.get(n)!.shape]));
        grads = await allReduceGradients(dp, global.names, shapes, grads);
      }
      gradNorm = optimizerStep(c, grads, step, gradients);
    }
    if (stepGrad.size) summarize(stepGrad);
  } finally {
    tf.dispose([...stepGrad.values()]);
  }
  const tGov = performance.now(); // governance work: weight digests of the changed groups
  Object.assign(c.digests, groupDigests(c.model.params, c.groups, changed, c.digestCache));
  governanceSeconds += (performance.now() - tGov) / 1000;
  return {
    sequences: keep.length,
    tokens: lengths.reduce((a, b) => a + b, 0),
    contributions: Object.fromEntries(Object.entries(contributions).map(([g, ids]) => [g, [...ids].sort()])),
    gradients,
    before,
    after: { ...c.digests },
    loss,
    gradNorm,
    governanceSeconds,
  };
}
