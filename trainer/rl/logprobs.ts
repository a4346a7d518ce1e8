/**
 * log π(token) of each completion token, for a batch of prompt+completion sequences. Sequences are
 * right-padded (causal attention keeps padding out of real tokens' view) and only the rows that predict a
 * completion token are projected to the vocabulary (the lm_head is the largest matMul of a small model).
 */
import * as tf from "@tensorflow/tfjs-core";
import { causalMask, type DecoderState, forward } from "../model/decoder.js";
import type { Params } from "../model/params.js";

export interface Sequence {
  prompt: number[];
  completion: number[];
}

export interface PackedBatch {
  B: number;
  T: number;
  ids: Int32Array; // [B·T]
  /** Flat index b·T + t of every position whose next token is a completion token, in sequence order. */
  rows: Int32Array;
  /** The completion token each row predicts. */
  targets: Int32Array;
  /** Which sequence each row belongs to. */
  seqOfRow: Int32Array;
}

export function packSequences(seqs: readonly Sequence[], padId: number): PackedBatch {
  const B = seqs.length;
  const T = Math.max(1, ...seqs.map((s) => s.prompt.length + s.completion.length - 1));
  const ids = new Int32Array(B * T).fill(padId);
  const rows: number[] = [];
  const targets: number[] = [];
  const seqOfRow: number[] = [];
  seqs.forEach((s, b) => {
    const all = [...s.prompt, ...s.completion];
    for (let t = 0; t < Math.min(T, all.length); t++) ids[b * T + t] = all[t]!;
    for (let j = 0; j < s.completion.length; j++) {
      rows.push(b * T + s.prompt.length - 1 + j);
      targets.push(s.completion[j]!);
      seqOfRow.push(b);
    }
  });
  return {
    B,
    T,
    ids,
    rows: Int32Array.from(rows),
    targets: Int32Array.from(targets),
    seqOfRow: Int32Array.from(seqOfRow),
  };
}

/** [R] log-probabilities of the completion tokens (differentiable with respect to `params`). */
export function completionLogprobs(state: DecoderState, params: Params, batch: PackedBatch): tf.Tensor1D {
  return tf.tidy(() => {
    const { B, T } = batch;
    const g = state.config.numHeads / state.config.numKvHeads;
    const positions = new Int32Array(B * T);
    for (let i = 0; i < B * T; i++) positions[i] = i % T;
    const { logits } = forward(
      { ...state, params },
      {
        ids: tf.tensor2d(batch.ids, [B, T], "int32"),
        positions: tf.tensor1d(positions, "int32"),
        mask: causalMask(T, g),
        logitRows: tf.tensor1d(batch.rows, "int32"),
      },
    );
    const logp = tf.logSoftmax(logits);
    const onehot = tf.oneHot(tf.tensor1d(batch.targets, "int32"), state.config.vocabSize);
    return tf.sum(tf.mul(logp, onehot), -1) as tf.Tensor1D;
  });
}
