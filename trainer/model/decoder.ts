/**
 * The Llama/Qwen2-family decoder: RMSNorm, RoPE, grouped-query attention with an optional KV cache, SwiGLU.
 * Pure tensor functions of (config, params, inputs); callers own tf.tidy scopes and the cache's lifetime.
 *
 * Attention layout (fast on wasm, no 5-D tensors): with g = heads / kv_heads, queries
 * are arranged [B·kvH, T·g, hd] (row t·g + j is query position t, head kvh·g + j — Hugging Face's repeat_kv
 * order), keys and values are held [B·kvH, S, hd] (the cache grows along S by contiguous blocks), and the
 * scores are q·kᵀ per item (see ops.bmmT), the output probs·v.
 */
import * as tf from "@tensorflow/tfjs-core";
import { type ModelConfig, ropeInvFreq } from "./config.js";
import { loraName, type LoraState } from "./lora.js";
import {
  applyRope,
  bmm,
  bmmT,
  embeddingLookup,
  linear,
  linearConst,
  rmsNorm,
  rotationMatrices,
  silu,
  tiedHead,
  tiedHeadConst,
} from "./ops.js";
import type { Params } from "./params.js";

export const MASKED = -1e9;

/** Per-layer key/value cache: k [B·kvH, S, hd], v [B·kvH, S, hd]. */
export interface KvCache {
  k: tf.Tensor3D[];
  v: tf.Tensor3D[];
  length: number;
}

export interface ForwardInput {
  /** Token ids [B, T] (int32). */
  ids: tf.Tensor2D;
  /** Position of every token, [B·T] (int32). */
  positions: tf.Tensor1D;
  /** Additive attention mask broadcastable to [B, 1, T·g, S] (0 = attend, MASKED = not). */
  mask: tf.Tensor;
  /** Rows of the final hidden state to project to logits ([R] int32 indices into B·T); all rows if absent. */
  logitRows?: tf.Tensor1D;
}

export interface ForwardOutput {
  /** [R, V] logits (R = B·T, or the number of logitRows). */
  logits: tf.Tensor2D;
  /** The updated cache, when one was given or requested. */
  cache?: KvCache;
}

/** cos/sin tables [maxContext, hd/2] in float32 (positions × inverse frequencies). */
export function ropeTables(c: ModelConfig, length = c.maxContext): { cos: tf.Tensor2D; sin: tf.Tensor2D } {
  const inv = ropeInvFreq(c);
  const half = c.headDim / 2;
  const cos = new Float32Array(length * half);
  const sin = new Float32Array(length * half);
  for (let p = 0; p < length; p++) {
    for (let i = 0; i < half; i++) {
      const f = Math.fround(p * Math.fround(inv[i]!));
      cos[p * half + i] = Math.cos(f);
      sin[p * half + i] = Math.sin(f);
    }
  }
  return { cos: tf.tensor2d(cos, [length, half]), sin: tf.tensor2d(sin, [length, half]) };
}

export interface DecoderState {
  config: ModelConfig;
  params: Params;
  rope: { cos: tf.Tensor2D; sin: tf.Tensor2D };
  /** Transposed tied embeddings, one per embedding tensor (see tiedHeadWeight); absent: made per call. */
  headCache?: HeadCache;
  /** LoRA adapters (model/lora.ts): the base weights are constants, adapted projections add (α/r)·x·A·B. */
  lora?: LoraState;
  /** Activation checkpointing: each layer keeps only its inputs for the backward pass and recomputes the rest. */
  checkpoint?: boolean;
}

/**
 * The tied head's [hidden, vocab] weight, made once per embedding tensor (one weight version: optimizers
 * replace parameter tensors, never write into them) instead of on every forward pass (transposing
 * SmolLM2's 49152×576 embedding took 405 ms on wasm, more than a decode step). Keyed by tensor: a policy and
 * its KL reference model share one cache without evicting each other; entries whose embedding was disposed
 * are freed on the next lookup, and `disposeHeadCache` frees all (disposeModel, setParam of the embedding).
 */
export type HeadCache = Map<tf.Tensor, tf.Tensor2D>;

export function disposeHeadCache(cache: HeadCache | undefined, only?: tf.Tensor): void {
  if (!cache) return;
  for (const [src, t] of cache) {
    if (only && src !== only) continue;
    t.dispose();
    cache.delete(src);
  }
}

function tiedHeadWeight(state: DecoderState, emb: tf.Tensor2D): tf.Tensor2D {
  const cache = state.headCache;
  if (!cache) return tf.transpose(emb);
  let t = cache.get(emb);
  if (t && !t.isDisposed) return t;
  for (const [src, old] of cache) {
    if (src.isDisposed) {
      old.dispose();
      cache.delete(src);
    }
  }
  // Outside any tidy scope and any gradient tape: the copy outlives the call; its gradient is tiedHead's.
  t = tf.keep(tf.tidy(() => tf.transpose(emb)));
  cache.set(emb, t);
  return t;
}

function p(params: Params, name: string): tf.Tensor {
  const t = params.get(name);
  if (!t) throw new Error(`missing parameter ${name}`);
  return t;
}

/** The tables' values, read once per table tensor (they never change). */
const ropeValues = new WeakMap<tf.Tensor, Float32Array>();

/**
 * cos/sin [N, 1, hd] at `positions`, each half-width table row written twice (the two halves of a head
 * rotate by the same angles). Built on the host: wasm's Gather kernel moves one element at a time.
 */
function ropeRows(
  rope: { cos: tf.Tensor2D; sin: tf.Tensor2D },
  positions: tf.Tensor1D,
  N: number,
  half: number,
): { cos: tf.Tensor3D; sin: tf.Tensor3D } {
  const pos = positions.dataSync();
  const rows = (table: tf.Tensor2D) => {
    let v = ropeValues.get(table);
    if (!v) {
      v = table.dataSync() as Float32Array;
      ropeValues.set(table, v);
    }
    const out = new Float32Array(N * 2 * half);
    for (let i = 0; i < N; i++) {
      const src = v.subarray(pos[i]! * half, (pos[i]! + 1) * half);
      out.set(src, i * 2 * half);
      out.set(src, i * 2 * half + half);
    }
    return tf.tensor3d(out, [N, 1, 2 * half]);
  };
  return { cos: rows(rope.cos), sin: rows(rope.sin) };
}

/** [B·T, kvH·w] → [B·kvH, T, w] (a reshape when T or kvH is 1: decode steps). */
function splitHeads(x: tf.Tensor, B: number, T: number, kvH: number, w: number): tf.Tensor3D {
  if (T === 1 || kvH === 1) return tf.reshape(x, [B * kvH, T, w]);
  return tf.reshape(tf.transpose(tf.reshape(x, [B, T, kvH, w]), [0, 2, 1, 3]), [B * kvH, T, w]);
}

/** [B·kvH, T·g, hd] → [B·T, kvH·w] with w = g·hd, the inverse of splitHeads. */
function mergeHeads(x: tf.Tensor, B: number, T: number, kvH: number, w: number): tf.Tensor2D {
  if (T === 1 || kvH === 1) return tf.reshape(x, [B * T, kvH * w]);
  return tf.reshape(tf.transpose(tf.reshape(x, [B, kvH, T, w]), [0, 2, 1, 3]), [B * T, kvH * w]);
}

/** A 32-bit mix of integers (dropout seeds per layer and projection). */
function mix(...xs: number[]): number {
  let h = 0x2545f491;
  for (const x of xs) {
    h = Math.imul(h ^ (x >>> 0), 0x9e3779b1);
    h ^= h >>> 15;
  }
  return h >>> 0;
}

/**
 * x·W for the projection `module` (`model.layers.3.mlp.up_proj`), plus its LoRA term (α/r)·(dropout(x)·A)·B
 * when the model is adapted and the projection targeted. Under LoRA the base weight is a constant.
 */
function project(state: DecoderState, params: Params, x: tf.Tensor2D, module: string, salt: number): tf.Tensor2D {
  const w = p(params, `${module}.weight`) as tf.Tensor2D;
  const lora = state.lora;
  if (!lora) return linear(x, w);
  const y = linearConst(x, w);
  const A = params.get(loraName(module, "A")) as tf.Tensor2D | undefined;
  if (!A) return y;
  const B = p(params, loraName(module, "B")) as tf.Tensor2D;
  const rate = lora.settings.dropout;
  const xd =
    rate > 0 && lora.dropoutSeed !== undefined
      ? (tf.dropout(x, rate, undefined, mix(lora.dropoutSeed, salt)) as tf.Tensor2D)
      : x;
  return tf.add(y, tf.mul(linear(linear(xd, A), B), lora.scale));
}

interface LayerContext {
  B: number;
  T: number;
  S: number;
  N: number;
  H: number;
  kvH: number;
  g: number;
  hd: number;
  scale: number;
  cos: tf.Tensor3D;
  sin: tf.Tensor3D;
  rot: { r: tf.Tensor2D; rT: tf.Tensor2D };
  mask: tf.Tensor;
}

/**
 * A layer past its keys and values: queries (from `a`, the input norm of h), attention over k3/v3, the output
 * projection, the residual, the MLP and its residual. Returns the layer's output.
 */
function layerRest(
  state: DecoderState,
  params: Params,
  l: number,
  salt: (j: number) => number,
  x: LayerContext,
  h: tf.Tensor2D,
  a: tf.Tensor2D,
  k3: tf.Tensor3D,
  v3: tf.Tensor3D,
): tf.Tensor2D {
  const c = state.config;
  const pre = `model.layers.${l}`;
  let q2 = project(state, params, a, `${pre}.self_attn.q_proj`, salt(0));
  if (c.qkvBias) q2 = tf.add(q2, p(params, `${pre}.self_attn.q_proj.bias`));
  const q = applyRope(tf.mul(tf.reshape(q2, [x.N, x.H, x.hd]), x.scale) as tf.Tensor3D, x.cos, x.sin, x.rot);
  const q3 = tf.reshape(splitHeads(q, x.B, x.T, x.kvH, x.g * x.hd), [x.B * x.kvH, x.T * x.g, x.hd]) as tf.Tensor3D;
  let scores = tf.reshape(bmmT(q3, k3), [x.B, x.kvH, x.T * x.g, x.S]);
  scores = tf.add(scores, x.mask);
  const probs = tf.reshape(tf.softmax(scores), [x.B * x.kvH, x.T * x.g, x.S]) as tf.Tensor3D;
  const o = mergeHeads(bmm(probs, v3), x.B, x.T, x.kvH, x.g * x.hd);
  let attnOut = project(state, params, o, `${pre}.self_attn.o_proj`, salt(3));
  if (c.oBias) attnOut = tf.add(attnOut, p(params, `${pre}.self_attn.o_proj.bias`));
  const h1 = tf.add(h, attnOut) as tf.Tensor2D;
  const m = rmsNorm(h1, p(params, `${pre}.post_attention_layernorm.weight`) as tf.Tensor1D, c.rmsNormEps);
  const gate = silu(project(state, params, m, `${pre}.mlp.gate_proj`, salt(4)));
  const up = project(state, params, m, `${pre}.mlp.up_proj`, salt(5));
  return tf.add(h1, project(state, params, tf.mul(gate, up) as tf.Tensor2D, `${pre}.mlp.down_proj`, salt(6)));
}

/** The engine's internals this module reads: whether a gradient tape is recording, and the tape itself. */
const engineState = () => (tf.engine() as unknown as { state: { gradientDepth: number; activeTape: unknown } }).state;

/** True inside tf.grads / valueAndGrads (activation checkpointing only matters when a backward pass follows). */
function recordingGradients(): boolean {
  return engineState().gradientDepth > 0;
}

/** The tensors of layer l's checkpointed part that training may differentiate (under LoRA: its adapters). */
function checkpointInputs(state: DecoderState, params: Params, l: number): string[] {
  const pre = `model.layers.${l}`;
  const mods = ["self_attn.q_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"];
  if (state.lora)
    return mods.flatMap((m) =>
      params.has(loraName(`${pre}.${m}`, "A")) ? [loraName(`${pre}.${m}`, "A"), loraName(`${pre}.${m}`, "B")] : [],
    );
  const c = state.config;
  return [
    `${pre}.input_layernorm.weight`,
    `${pre}.post_attention_layernorm.weight`,
    ...mods.map((m) => `${pre}.${m}.weight`),
    ...(c.qkvBias ? [`${pre}.self_attn.q_proj.bias`] : []),
    ...(c.oBias ? [`${pre}.self_attn.o_proj.bias`] : []),
  ];
}

/**
 * Activation checkpointing: layerRest as one custom-gradient op that keeps only its inputs (h, the layer's
 * keys and values, its weights). Its intermediates — queries, attention scores and probabilities, the MLP's
 * [N, F] activations — are freed after the forward pass and recomputed in the backward pass (the same
 * dropout masks: they are seeded). About one more forward pass of compute for most of the activation memory.
 */
function checkpointedLayer(
  state: DecoderState,
  params: Params,
  l: number,
  salt: (j: number) => number,
  x: LayerContext,
  h: tf.Tensor2D,
  k3: tf.Tensor3D,
  v3: tf.Tensor3D,
): tf.Tensor2D {
  const names = checkpointInputs(state, params, l);
  const c = state.config;
  const run = (xs: tf.Tensor[], cx: LayerContext) => {
    const ps = new Map(params);
    names.forEach((n, i) => ps.set(n, xs[3 + i]!));
    const hh = xs[0] as tf.Tensor2D;
    const a = rmsNorm(hh, p(ps, `model.layers.${l}.input_layernorm.weight`) as tf.Tensor1D, c.rmsNormEps);
    return layerRest(state, ps, l, salt, cx, hh, a, xs[1] as tf.Tensor3D, xs[2] as tf.Tensor3D);
  };
  const n = 3 + names.length;
  const f = tf.customGrad((...inputs: Array<tf.Tensor | tf.GradSaveFunc>) => {
    const save = inputs.pop() as tf.GradSaveFunc;
    const xs = inputs as tf.Tensor[];
    // The context's tensors (RoPE rows, rotation, mask) belong to the forward pass's scope, which ends before
    // the backward pass: saved copies keep them for the recomputation.
    save([...xs, x.cos, x.sin, x.rot.r, x.rot.rT, x.mask]);
    return {
      value: tf.tidy(() => run(xs, x)),
      gradFunc: (dy: tf.Tensor2D, saved: tf.Tensor[]) => {
        const [cos, sin, r, rT, mask] = saved.slice(n);
        const cx = {
          ...x,
          cos: cos as tf.Tensor3D,
          sin: sin as tf.Tensor3D,
          rot: { r, rT } as LayerContext["rot"],
          mask: mask!,
        };
        // A gradient inside a gradient function: tf.grads starts (and at its end drops) the engine's tape,
        // which the outer backward pass still holds; put it back.
        const es = engineState();
        const tape = es.activeTape;
        try {
          return tf.grads((...ys: tf.Tensor[]) => run(ys, cx))(saved.slice(0, n), dy);
        } finally {
          es.activeTape = tape;
        }
      },
    };
  });
  return f(h, k3, v3, ...names.map((n) => p(params, n))) as tf.Tensor2D;
}

/** Runs the decoder. With `cache` (possibly empty, length 0) the new keys/values are appended and returned. */
export function forward(state: DecoderState, input: ForwardInput, cache?: KvCache): ForwardOutput {
  const { config: c, params } = state;
  const [B, T] = input.ids.shape;
  const N = B * T;
  const H = c.numHeads;
  const kvH = c.numKvHeads;
  const g = H / kvH;
  const hd = c.headDim;
  const half = hd / 2;
  const scale = 1 / Math.sqrt(hd);
  const { cos, sin } = ropeRows(state.rope, input.positions, N, half);
  const rot = rotationMatrices(hd);
  let h = embeddingLookup(p(params, "model.embed_tokens.weight") as tf.Tensor2D, input.ids);
  const newCache: KvCache | undefined = cache ? { k: [], v: [], length: cache.length + T } : undefined;
  const S = (cache?.length ?? 0) + T;

  const ctx: LayerContext = { B, T, S, N, H, kvH, g, hd, scale, cos, sin, rot, mask: input.mask };
  const checkpointing = state.checkpoint === true && recordingGradients();
  for (let l = 0; l < c.numLayers; l++) {
    const pre = `model.layers.${l}`;
    // Dropout masks differ by layer, projection and pass (the prefix and suffix passes of one batch).
    const salt = (j: number) => mix(l, j, cache?.length ?? 0);
    // The keys and values of the new tokens (the cache's, and the checkpointed part's inputs).
    const a = rmsNorm(h, p(params, `${pre}.input_layernorm.weight`) as tf.Tensor1D, c.rmsNormEps);
    const proj = (name: string, j: number): tf.Tensor2D => {
      const y = project(state, params, a, `${pre}.self_attn.${name}`, salt(j));
      return c.qkvBias ? tf.add(y, p(params, `${pre}.self_attn.${name}.bias`)) : y;
    };
    const k = applyRope(tf.reshape(proj("k_proj", 1), [N, kvH, hd]) as tf.Tensor3D, cos, sin, rot);
    let k3 = splitHeads(k, B, T, kvH, hd);
    let v3 = splitHeads(proj("v_proj", 2), B, T, kvH, hd);
    if (cache && newCache) {
      if (cache.length > 0) {
        k3 = tf.concat([cache.k[l]!, k3], 1);
        v3 = tf.concat([cache.v[l]!, v3], 1);
      }
      newCache.k.push(k3);
      newCache.v.push(v3);
    }
    h = checkpointing
      ? checkpointedLayer(state, params, l, salt, ctx, h, k3, v3)
      : layerRest(state, params, l, salt, ctx, h, a, k3, v3);
  }
  // A gather with a scatter-add gradient: wasm has no UnsortedSegmentSum, the plain gather gradient.
  if (input.logitRows) h = embeddingLookup(h, input.logitRows);
  const hn = rmsNorm(h, p(params, "model.norm.weight") as tf.Tensor1D, c.rmsNormEps);
  let logits: tf.Tensor2D;
  if (c.tieWordEmbeddings) {
    const emb = p(params, "model.embed_tokens.weight") as tf.Tensor2D;
    logits = (state.lora ? tiedHeadConst : tiedHead)(hn, emb, tiedHeadWeight(state, emb));
  } else {
    logits = (state.lora ? linearConst : linear)(hn, p(params, "lm_head.weight") as tf.Tensor2D);
  }
  return newCache ? { logits, cache: newCache } : { logits };
}

/** Additive causal mask for unpadded sequences of length T in the [T·g, T] row order (shared by the batch). */
export function causalMask(T: number, g: number): tf.Tensor4D {
  const m = new Float32Array(T * g * T);
  for (let t = 0; t < T; t++)
    for (let j = 0; j < g; j++) for (let s = t + 1; s < T; s++) m[(t * g + j) * T + s] = MASKED;
  return tf.tensor4d(m, [1, 1, T * g, T]);
}

/**
 * Additive mask for a batch with per-sample left padding: `pads[b]` leading key positions of sample b are
 * padding; the T new queries sit at key positions past..past+T-1 of S = past + T keys.
 */
export function paddedCausalMask(pads: number[], past: number, T: number, g: number): tf.Tensor4D {
  const B = pads.length;
  const S = past + T;
  const m = new Float32Array(B * T * g * S);
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      for (let j = 0; j < g; j++) {
        const row = ((b * T + t) * g + j) * S;
        for (let s = 0; s < S; s++) if (s < pads[b]! || s > past + t) m[row + s] = MASKED;
      }
    }
  }
  return tf.tensor4d(m, [B, 1, T * g, S]);
}

export function disposeCache(cache: KvCache | undefined): void {
  if (!cache) return;
  for (const t of cache.k) t.dispose();
  for (const t of cache.v) t.dispose();
}

/** `forward` inside a tf.tidy: only the logits and the cache survive (inputs built in `input()` are freed). */
export function forwardTidy(state: DecoderState, input: () => ForwardInput, cache?: KvCache): ForwardOutput {
  return tf.tidy(() => forward(state, input(), cache) as unknown as tf.TensorContainer) as unknown as ForwardOutput;
}
