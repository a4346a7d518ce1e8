/**
 * Batched generation with a KV cache. Prompts are left-padded into one batch; one prefill pass, then one
 * decode pass per new token for the whole batch. Samples that finish drop out of the batch (their rows are
 * removed from the cache), so a long sample does not make short ones pay.
 */
import * as tf from "@tensorflow/tfjs-core";
import { disposeCache, forwardTidy, type KvCache, paddedCausalMask } from "../model/decoder.js";
import type { Model } from "../model/model.js";
import { DEFAULT_SAMPLING, findStop, type Pick, pickToken, Rng, type SamplingParams, topLogprobs } from "./pick.js";

export interface SampleRequest {
  promptIds: number[];
  sampling?: Partial<SamplingParams>;
  maxTokens: number;
  /** Stop sequences (text); the completion is cut before the first one. */
  stop?: string[];
  /** Seed for this sample's PRNG (deterministic for a fixed seed). */
  seed?: number;
  /** How many alternatives to report per position (0 = none). */
  topLogprobs?: number;
}

export interface Completion {
  tokens: number[];
  text: string;
  /** log p of each sampled token (model distribution, temperature 1). */
  logprobs: number[];
  top?: Pick[][];
  finishReason: "stop" | "length";
}

export interface GenerateOptions {
  /** Streaming: called with each sample's new text as it becomes final (stop sequences never leak out). */
  onTokens?: (sample: number, text: string) => void;
}

interface Live {
  i: number;
  req: SampleRequest;
  sampling: SamplingParams;
  rng: Rng;
  tokens: number[];
  logprobs: number[];
  top: Pick[][];
  pad: number;
  position: number;
  streamed: string;
}

/** Keeps rows `keep` of every cache tensor ([B·kvH, …] → [keep·kvH, …]). */
function selectRows(cache: KvCache, keep: number[], kvH: number): KvCache {
  const rows = tf.tensor1d(
    keep.flatMap((b) => Array.from({ length: kvH }, (_, h) => b * kvH + h)),
    "int32",
  );
  const out: KvCache = {
    k: cache.k.map((t) => tf.gather(t, rows)),
    v: cache.v.map((t) => tf.gather(t, rows)),
    length: cache.length,
  };
  rows.dispose();
  return out;
}

export async function generate(
  model: Model,
  requests: SampleRequest[],
  opts: GenerateOptions = {},
): Promise<Completion[]> {
  const c = model.config;
  const g = c.numHeads / c.numKvHeads;
  const tok = model.tokenizer;
  const eos = new Set(tok?.eosIds ?? c.eosTokenIds);
  const padId = tok?.padId ?? c.padTokenId ?? 0;
  const banned = new Set<number>();
  if (tok?.padId != null && !eos.has(tok.padId)) banned.add(tok.padId);
  const results: Completion[] = requests.map(() => ({ tokens: [], text: "", logprobs: [], finishReason: "length" }));
  if (requests.length === 0) return results;
  for (const r of requests) {
    if (r.promptIds.length === 0) throw new Error("empty prompt");
    if (r.promptIds.length >= c.maxContext)
      throw new Error(`prompt of ${r.promptIds.length} tokens exceeds the context (${c.maxContext})`);
  }
  const P = Math.max(...requests.map((r) => r.promptIds.length));
  let live: Live[] = requests.map((req, i) => ({
    i,
    req,
    sampling: { ...DEFAULT_SAMPLING, ...req.sampling },
    rng: new Rng(req.seed ?? (Math.random() * 2 ** 32) >>> 0),
    tokens: [],
    logprobs: [],
    top: [],
    pad: P - req.promptIds.length,
    position: req.promptIds.length,
    streamed: "",
  }));
  const B0 = live.length;
  // Prefill.
  const ids = new Int32Array(B0 * P);
  const pos = new Int32Array(B0 * P);
  live.forEach((s, b) => {
    for (let t = 0; t < P; t++) {
      ids[b * P + t] = t < s.pad ? padId : s.req.promptIds[t - s.pad]!;
      pos[b * P + t] = Math.max(0, t - s.pad);
    }
  });
  let { logits, cache } = forwardTidy(
    model,
    () => ({
      ids: tf.tensor2d(ids, [B0, P], "int32"),
      positions: tf.tensor1d(pos, "int32"),
      mask: paddedCausalMask(
        live.map((s) => s.pad),
        0,
        P,
        g,
      ),
      logitRows: tf.tensor1d(
        live.map((_, b) => b * P + P - 1),
        "int32",
      ),
    }),
    { k: [], v: [], length: 0 },
  ) as { logits: tf.Tensor2D; cache: KvCache };

  try {
    for (;;) {
      const rows = (await logits.data()) as Float32Array;
      logits.dispose();
      const V = c.vocabSize;
      const next: number[] = [];
      const keep: number[] = [];
      live.forEach((s, b) => {
        const row = rows.subarray(b * V, (b + 1) * V);
        const pick = pickToken(row, s.sampling, s.rng, banned);
        let finish: "stop" | "length" | null = null;
        let text: string;
        if (eos.has(pick.token)) {
          finish = "stop";
          text = tok && s.tokens.length ? tok.decode(s.tokens) : "";
        } else {
          s.tokens.push(pick.token);
          s.logprobs.push(pick.logprob);
          if (s.req.topLogprobs) s.top.push(topLogprobs(row, s.req.topLogprobs));
          text = tok ? tok.decode(s.tokens) : "";
          const at = s.req.stop?.length ? findStop(text, s.req.stop) : -1;
          if (at >= 0) {
            finish = "stop";
            text = text.slice(0, at);
          } else if (s.tokens.length >= s.req.maxTokens || s.position + 1 >= c.maxContext) {
            finish = "length";
          }
        }
        if (opts.onTokens) {
          // While running, hold back text that could begin a stop sequence or end in a partial UTF-8 character.
          let safe = text.length;
          if (!finish) {
            safe -= Math.max(0, ...(s.req.stop ?? []).map((x) => x.length - 1));
            if (text.endsWith("\uFFFD")) safe = Math.min(safe, text.length - 1);
          }
          if (safe > s.streamed.length) {
            opts.onTokens(s.i, text.slice(s.streamed.length, safe));
            s.streamed = text.slice(0, safe);
          }
        }
        if (finish) {
          results[s.i] = {
            tokens: s.tokens,
            logprobs: s.logprobs,
            text,
            finishReason: finish,
            ...(s.req.topLogprobs ? { top: s.top } : {}),
          };
        } else {
          keep.push(b);
          next.push(pick.token);
        }
      });
      if (keep.length === 0) break;
      if (keep.length < live.length) {
        const smaller = selectRows(cache, keep, c.numKvHeads);
        disposeCache(cache);
        cache = smaller;
        live = keep.map((b) => live[b]!);
      }
      const B = live.length;
      const S = cache.length;
      const prevCache = cache;
      const out = forwardTidy(
        model,
        () => ({
          ids: tf.tensor2d(Int32Array.from(next), [B, 1], "int32"),
          positions: tf.tensor1d(
            live.map((s) => s.position),
            "int32",
          ),
          mask: paddedCausalMask(
            live.map((s) => s.pad),
            S,
            1,
            g,
          ),
        }),
        prevCache,
      ) as { logits: tf.Tensor2D; cache: KvCache };
      disposeCache(prevCache);
      logits = out.logits;
      cache = out.cache;
      for (const s of live) s.position++;
    }
  } finally {
    disposeCache(cache);
    if (!logits.isDisposed) logits.dispose();
  }
  return results;
}
