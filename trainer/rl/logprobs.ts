/**
 * log π(token) of each completion token, for a batch of prompt+completion sequences.
 *
 * The samples of one prompt share it (GRPO draws G completions per prompt), so the prompt is run once: a
 * prefix pass over the distinct prompts (left-padded, as in sampling) fills a KV cache, each sequence takes
 * its prompt's cache rows (ops.selectRows, whose gradient sums back, so the prompt's weights get the sum of
 * its samples' gradients), and a suffix pass runs the completion tokens (right-padded) against it. The
 * logits of a prompt's last token (which predict every sample's first token) come from the prefix pass.
 * Only the rows that predict a completion token are projected to the vocabulary (the lm_head is the largest
 * matMul of a small model), and the target tokens' log-probabilities are picked by a gather, not a one-hot
 * product over the vocabulary.
 */
import * as tf from "@tensorflow/tfjs-core";
import { type DecoderState, forward, type KvCache, MASKED, paddedCausalMask } from "../model/decoder.js";
import { embeddingLookup, selectRows } from "../model/ops.js";
import type { Params } from "../model/params.js";

export interface Sequence {
  prompt: number[];
  completion: number[];
}

export interface PackedBatch {
  /** Sequences. */
  B: number;
  /** Distinct prompts G, left-padded to P tokens: ids [G·P], positions [G·P], pads [G]. */
  prefix: { G: number; P: number; ids: Int32Array; positions: Int32Array; pads: number[] };
  /** The prompt (prefix row) of each sequence, [B]. */
  promptOf: Int32Array;
  /**
   * Completion tokens but the last, right-padded to C = (longest completion − 1) per sequence: ids [B·C],
   * positions [B·C]; C may be 0 (no suffix pass).
   */
  suffix: { C: number; ids: Int32Array; positions: Int32Array; logitRows: Int32Array };
  /**
   * One entry per completion token, in sequence order: the index of its log-probability in the flattened
   * [G + suffix logit rows, V] log-softmax of both passes.
   */
  rows: Int32Array;
  /** The completion token each row predicts. */
  targets: Int32Array;
  /** Which sequence each row belongs to. */
  seqOfRow: Int32Array;
}

export function packSequences(seqs: readonly Sequence[], padId: number): PackedBatch {
  const B = seqs.length;
  const promptIndex = new Map<string, number>();
  const prompts: number[][] = [];
  const promptOf = new Int32Array(B);
  seqs.forEach((s, b) => {
    const key = s.prompt.join(",");
    let i = promptIndex.get(key);
    if (i === undefined) {
      i = prompts.length;
      promptIndex.set(key, i);
      prompts.push(s.prompt);
    }
    promptOf[b] = i;
  });
  const G = prompts.length;
  const P = Math.max(1, ...prompts.map((p) => p.length));
  const pIds = new Int32Array(G * P).fill(padId);
  const pPos = new Int32Array(G * P);
  const pads = prompts.map((p) => P - p.length);
  prompts.forEach((p, i) => {
    for (let t = 0; t < P; t++) {
      if (t >= pads[i]!) pIds[i * P + t] = p[t - pads[i]!]!;
      pPos[i * P + t] = Math.max(0, t - pads[i]!);
    }
  });
  const C = Math.max(0, ...seqs.map((s) => s.completion.length - 1));
  const sIds = new Int32Array(B * C).fill(padId);
  const sPos = new Int32Array(B * C);
  const logitRows: number[] = [];
  const rows: number[] = [];
  const targets: number[] = [];
  const seqOfRow: number[] = [];
  seqs.forEach((s, b) => {
    for (let t = 0; t < C; t++) {
      if (t < s.completion.length - 1) sIds[b * C + t] = s.completion[t]!;
      sPos[b * C + t] = s.prompt.length + t;
    }
    for (let j = 0; j < s.completion.length; j++) {
      if (j === 0) rows.push(promptOf[b]!);
      else {
        rows.push(G + logitRows.length);
        logitRows.push(b * C + j - 1);
      }
      targets.push(s.completion[j]!);
      seqOfRow.push(b);
    }
  });
  return {
    B,
    prefix: { G, P, ids: pIds, positions: pPos, pads },
    promptOf,
    suffix: { C, ids: sIds, positions: sPos, logitRows: Int32Array.from(logitRows) },
    rows: Int32Array.from(rows),
    targets: Int32Array.from(targets),
    seqOfRow: Int32Array.from(seqOfRow),
  };
}

/**
 * Additive mask of the suffix pass, [B, 1, C·g, P + C]: query t of sequence b sees its prompt's keys but
 * the left padding, and its own suffix keys up to t.
 */
function suffixMask(batch: PackedBatch, g: number): tf.Tensor4D {
  const { B } = batch;
  const { P, pads } = batch.prefix;
  const { C } = batch.suffix;
  const S = P + C;
  const m = new Float32Array(B * C * g * S);
  for (let b = 0; b < B; b++) {
    const pad = pads[batch.promptOf[b]!]!;
    for (let t = 0; t < C; t++) {
      for (let j = 0; j < g; j++) {
        const row = ((b * C + t) * g + j) * S;
        for (let s = 0; s < pad; s++) m[row + s] = MASKED;
        for (let s = P + t + 1; s < S; s++) m[row + s] = MASKED;
      }
    }
  }
  return tf.tensor4d(m, [B, 1, C * g, S]);
}

/** The cache rows of each sequence's prompt: [G·kvH, S, hd] → [B·kvH, S, hd] (gradients summed back). */
function tileRows(t: tf.Tensor3D, rows: number[]): tf.Tensor3D {
  const [n, a, b] = t.shape;
  return tf.reshape(selectRows(tf.reshape(t, [n, a * b]), rows), [rows.length, a, b]);
}

/** [R] log-probabilities of the completion tokens (differentiable with respect to `params`). */
export function completionLogprobs(state: DecoderState, params: Params, batch: PackedBatch): tf.Tensor1D {
  return tf.tidy(() => {
    const c = state.config;
    const g = c.numHeads / c.numKvHeads;
    const st = { ...state, params };
    const { G, P } = batch.prefix;
    const { C } = batch.suffix;
    if (batch.rows.length === 0) return tf.zeros([0]) as tf.Tensor1D;
    const pre = forward(
      st,
      {
        ids: tf.tensor2d(batch.prefix.ids, [G, P], "int32"),
        positions: tf.tensor1d(batch.prefix.positions, "int32"),
        mask: paddedCausalMask(batch.prefix.pads, 0, P, g),
        logitRows: tf.tensor1d(
          Int32Array.from({ length: G }, (_, i) => i * P + P - 1),
          "int32",
        ),
      },
      { k: [], v: [], length: 0 },
    );
    const parts = [tf.logSoftmax(pre.logits)];
    if (C > 0 && batch.suffix.logitRows.length > 0) {
      const kvH = c.numKvHeads;
      const rows = Array.from(batch.promptOf).flatMap((i) => Array.from({ length: kvH }, (_, h) => i * kvH + h));
      const cache: KvCache = {
        k: pre.cache!.k.map((t) => tileRows(t, rows)),
        v: pre.cache!.v.map((t) => tileRows(t, rows)),
        length: P,
      };
      const { logits } = forward(
        st,
        {
          ids: tf.tensor2d(batch.suffix.ids, [batch.B, C], "int32"),
          positions: tf.tensor1d(batch.suffix.positions, "int32"),
          mask: suffixMask(batch, g),
          logitRows: tf.tensor1d(batch.suffix.logitRows, "int32"),
        },
        cache,
      );
      parts.push(tf.logSoftmax(logits));
    }
    const V = c.vocabSize;
    const logp = tf.reshape(parts.length > 1 ? tf.concat(parts, 0) : parts[0]!, [-1, 1]) as tf.Tensor2D;
    const at = Int32Array.from(batch.rows, (r, i) => r * V + batch.targets[i]!);
    return tf.reshape(embeddingLookup(logp, tf.tensor1d(at, "int32")), [-1]) as tf.Tensor1D;
  });
}
