/**
 * Token-level loss and gradients for a batch of right-padded sequences, and an Adam(W) optimizer over the
 * model's named parameters. Shared by SFT and the RL losses.
 */
import * as tf from "@tensorflow/tfjs-core";
import { causalMask, forward } from "./decoder.js";
import { adapterNames } from "./lora.js";
import { type Model, setParam } from "./model.js";
import { SafetensorsError, SafetensorsReader, type TensorToWrite, writeSafetensors } from "./safetensors.js";

export interface TokenBatch {
  /** [B, T] token ids, right-padded. */
  ids: Int32Array;
  /** [B, T] the token each position predicts (the next id), anything where weight is 0. */
  targets: Int32Array;
  /** [B, T] per-position loss weight (0 = no loss). */
  weights: Float32Array;
  B: number;
  T: number;
}

/** Builds a batch from sequences and their per-token loss masks (mask[i] = 1: token i is a target). */
export function makeBatch(seqs: { ids: number[]; mask: number[] }[], padId: number): TokenBatch {
  const B = seqs.length;
  const T = Math.max(...seqs.map((s) => s.ids.length)) - 1;
  const ids = new Int32Array(B * T).fill(padId);
  const targets = new Int32Array(B * T);
  const weights = new Float32Array(B * T);
  seqs.forEach((s, b) => {
    for (let t = 0; t < s.ids.length - 1; t++) {
      ids[b * T + t] = s.ids[t]!;
      targets[b * T + t] = s.ids[t + 1]!;
      weights[b * T + t] = s.mask[t + 1]!;
    }
  });
  return { ids, targets, weights, B, T };
}

/** Mean negative log-likelihood over weighted positions; a scalar tensor. */
function nll(model: Model, params: Map<string, tf.Tensor>, batch: TokenBatch, dropoutSeed?: number): tf.Scalar {
  const { B, T } = batch;
  const g = model.config.numHeads / model.config.numKvHeads;
  const positions = new Int32Array(B * T);
  for (let i = 0; i < B * T; i++) positions[i] = i % T;
  const lora = model.lora && dropoutSeed !== undefined ? { ...model.lora, dropoutSeed } : model.lora;
  const { logits } = forward(
    { ...model, params, ...(lora ? { lora } : {}) },
    {
      ids: tf.tensor2d(batch.ids, [B, T], "int32"),
      positions: tf.tensor1d(positions, "int32"),
      mask: causalMask(T, g),
    },
  );
  const logp = tf.logSoftmax(logits);
  const picked = tf.sum(tf.mul(logp, tf.oneHot(tf.tensor1d(batch.targets, "int32"), model.config.vocabSize)), -1);
  const w = tf.tensor1d(batch.weights);
  const denom = Math.max(
    1e-8,
    batch.weights.reduce((a, b) => a + b, 0),
  );
  return tf.div(tf.neg(tf.sum(tf.mul(picked, w))), denom) as tf.Scalar;
}

/** Loss without gradients. */
export function evalLoss(model: Model, batch: TokenBatch): number {
  return tf.tidy(() => nll(model, model.params, batch).dataSync()[0]!);
}

/**
 * Loss and gradients (by parameter name; default every parameter, or the adapters of a LoRA model); the
 * caller disposes the gradients. `dropoutSeed`: LoRA dropout masks for this pass (none without it).
 */
export function lossAndGrads(
  model: Model,
  batch: TokenBatch,
  names = trainableNames(model),
  dropoutSeed?: number,
): { loss: number; grads: Map<string, tf.Tensor> } {
  const out = tf.tidy(() => {
    const f = (...ws: tf.Tensor[]) => {
      const params = new Map(model.params);
      names.forEach((n, i) => {
        params.set(n, ws[i]!);
      });
      return nll(model, params, batch, dropoutSeed);
    };
    const { value, grads } = tf.valueAndGrads(f)(names.map((n) => model.params.get(n)!));
    return [value, ...grads];
  });
  const [value, ...grads] = out;
  const loss = value!.dataSync()[0]!;
  value!.dispose();
  return { loss, grads: new Map(names.map((n, i) => [n, grads[i]!])) };
}

/** What training changes: the adapters of a LoRA model, else every parameter. */
export function trainableNames(model: Model): string[] {
  return model.lora ? adapterNames(model.config, model.lora.settings) : [...model.params.keys()];
}

export interface AdamOptions {
  lr: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  weightDecay?: number;
  /** Clip gradients to this global L2 norm (0 = off). */
  clipNorm?: number;
}

/** A gradient whose global norm is NaN or infinite reached the optimizer; nothing was changed. */
export class NonFiniteGradientError extends Error {
  constructor(readonly gradNorm: number) {
    super(`the gradient norm is ${gradNorm}: the update was not applied`);
    this.name = "NonFiniteGradientError";
  }
}

/**
 * Adam(W) with per-parameter state (m, v and the step count t): a parameter absent from a step's gradients
 * keeps its bytes and its optimizer state exactly (what depth-selective, governed updates rely on), and its
 * bias correction counts only the steps that updated it. The state saves to and loads from safetensors
 * (`name.m`, `name.v`, and `name.t` as a one-element tensor), so a resumed run continues bit for bit.
 */
export class Adam {
  private readonly m = new Map<string, tf.Tensor>();
  private readonly v = new Map<string, tf.Tensor>();
  private readonly t = new Map<string, number>();
  constructor(public opts: AdamOptions) {}

  /**
   * Applies one update to the parameters named in `grads` (others are untouched); disposes the grads. A NaN or
   * infinite gradient norm throws NonFiniteGradientError before any parameter or moment changes.
   */
  step(model: Model, grads: Map<string, tf.Tensor>): { gradNorm: number } {
    const { lr, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weightDecay = 0, clipNorm = 0 } = this.opts;
    const gradNorm = grads.size
      ? tf.tidy(() => Math.sqrt(tf.addN([...grads.values()].map((g) => tf.sum(tf.square(g)))).dataSync()[0]!))
      : 0;
    if (!Number.isFinite(gradNorm)) {
      tf.dispose([...grads.values()]);
      throw new NonFiniteGradientError(gradNorm);
    }
    const scale = clipNorm > 0 && gradNorm > clipNorm ? clipNorm / gradNorm : 1;
    for (const [name, g] of grads) {
      const p = model.params.get(name)!;
      const t = (this.t.get(name) ?? 0) + 1;
      this.t.set(name, t);
      const bc1 = 1 - beta1 ** t;
      const bc2 = 1 - beta2 ** t;
      const [m, v, next] = tf.tidy(() => {
        const gs = scale === 1 ? g : tf.mul(g, scale);
        const m0 = this.m.get(name);
        const v0 = this.v.get(name);
        const m1 = m0 ? tf.add(tf.mul(m0, beta1), tf.mul(gs, 1 - beta1)) : tf.mul(gs, 1 - beta1);
        const v1 = v0 ? tf.add(tf.mul(v0, beta2), tf.mul(tf.square(gs), 1 - beta2)) : tf.mul(tf.square(gs), 1 - beta2);
        let upd = tf.div(tf.div(m1, bc1), tf.add(tf.sqrt(tf.div(v1, bc2)), eps));
        if (weightDecay > 0) upd = tf.add(upd, tf.mul(p, weightDecay));
        return [m1, v1, tf.sub(p, tf.mul(upd, lr))];
      });
      this.m.get(name)?.dispose();
      this.v.get(name)?.dispose();
      this.m.set(name, m!);
      this.v.set(name, v!);
      setParam(model, name, next!);
      g.dispose();
    }
    return { gradNorm };
  }

  /** The step count of one parameter (0 = never updated). */
  steps(name: string): number {
    return this.t.get(name) ?? 0;
  }

  /** Writes the optimizer state as safetensors (f32; the step counts are exact integers in f32 up to 2^24). */
  async save(file: string): Promise<void> {
    const out: TensorToWrite[] = [];
    for (const [name, m] of this.m) {
      out.push({ name: `${name}.m`, shape: m.shape, data: new Float32Array(await m.data()) });
      out.push({ name: `${name}.v`, shape: m.shape, data: new Float32Array(await this.v.get(name)!.data()) });
      out.push({ name: `${name}.t`, shape: [1], data: Float32Array.of(this.t.get(name)!) });
    }
    await writeSafetensors(file, out, "F32");
  }

  /** Replaces the state with the one saved in `file` (shapes checked against the model's parameters). */
  async load(file: string, model: Model): Promise<void> {
    this.dispose();
    const r = await SafetensorsReader.open(file);
    try {
      for (const key of r.names()) {
        if (!key.endsWith(".t")) continue;
        const name = key.slice(0, -2);
        const p = model.params.get(name);
        if (!p) throw new SafetensorsError(`${file}: optimizer state for unknown parameter ${name}`);
        const m = await r.readF32(`${name}.m`);
        const v = await r.readF32(`${name}.v`);
        this.m.set(name, tf.tensor(m.data, p.shape));
        this.v.set(name, tf.tensor(v.data, p.shape));
        this.t.set(name, (await r.readF32(key)).data[0]!);
      }
    } finally {
      await r.close();
    }
  }

  dispose(): void {
    for (const t of this.m.values()) t.dispose();
    for (const t of this.v.values()) t.dispose();
    this.m.clear();
    this.v.clear();
    this.t.clear();
  }
}
