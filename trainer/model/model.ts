/** A loaded model: config, parameters (tensors), RoPE tables and, when present, its tokenizer. */
import type * as tf from "@tensorflow/tfjs-core";
import { type ModelConfig, newHfConfig, parseHfConfig } from "./config.js";
import { type DecoderState, disposeHeadCache, ropeTables } from "./decoder.js";
import { disposeParams, initParams, type Params } from "./params.js";
import { byteLevelTokenizer, ChatTokenizer, type TokenizerFiles } from "./tokenizer.js";

export interface Model extends DecoderState {
  tokenizer: ChatTokenizer | null;
}

export function createModel(config: ModelConfig, params: Params, tokenizerFiles?: TokenizerFiles | null): Model {
  const tokenizer = tokenizerFiles ? new ChatTokenizer(tokenizerFiles, config.eosTokenIds) : null;
  return { config, params, rope: ropeTables(config), tokenizer, headCache: new Map() };
}

export function disposeModel(m: Model): void {
  disposeHeadCache(m.headCache);
  disposeParams(m.params);
  m.rope.cos.dispose();
  m.rope.sin.dispose();
}

/** Replaces parameter tensors (disposing the old ones); used by optimizers. */
export function setParam(m: Model, name: string, t: tf.Tensor): void {
  const old = m.params.get(name);
  m.params.set(name, t);
  if (old && old !== t) {
    disposeHeadCache(m.headCache, old); // the tied head's transpose of the old embedding
    old.dispose();
  }
}

export interface RandomModelOptions {
  arch: "llama" | "qwen2";
  layers: number;
  hidden: number;
  heads: number;
  kvHeads: number;
  /** "byte" for the built-in byte-level tokenizer, or tokenizer files (vocab size taken from them). */
  vocab: "byte" | TokenizerFiles;
  intermediate?: number;
  maxContext?: number;
  tieWordEmbeddings?: boolean;
  seed?: number;
  std?: number;
}

/** A small random model with a tokenizer, as `rft init-model` makes. */
export function createRandomModel(o: RandomModelOptions): Model {
  let files: TokenizerFiles;
  let vocabSize: number;
  let eos: number | null;
  let pad: number | null;
  if (o.vocab === "byte") {
    const b = byteLevelTokenizer(o.maxContext ?? 2048);
    files = b;
    vocabSize = b.vocabSize;
    eos = b.eosId;
    pad = b.padId;
  } else {
    files = o.vocab;
    const t = new ChatTokenizer(files);
    vocabSize = t.vocabSize();
    eos = t.eosIds[0] ?? null;
    pad = t.padId;
  }
  const raw = newHfConfig({
    arch: o.arch,
    layers: o.layers,
    hidden: o.hidden,
    heads: o.heads,
    kvHeads: o.kvHeads,
    vocabSize,
    ...(o.intermediate !== undefined && { intermediate: o.intermediate }),
    ...(o.maxContext !== undefined && { maxContext: o.maxContext }),
    ...(o.tieWordEmbeddings !== undefined && { tieWordEmbeddings: o.tieWordEmbeddings }),
    eosTokenId: eos,
    padTokenId: pad,
  });
  const config = parseHfConfig(raw);
  return createModel(config, initParams(config, o.seed ?? 0, o.std ?? 0.02), files);
}
