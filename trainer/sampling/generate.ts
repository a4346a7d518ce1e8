/**
 * Batched generation with a KV cache. Prompts are left-padded into one batch; one prefill pass over the
 * distinct prompts (samples of one prompt share its cache rows), then one decode pass per new token for the
 * whole batch. Samples that finish drop out of the batch (their rows are removed from the cache) once enough
 * have finished to pay for the copy, so a long sample does not make short ones pay.
 */
import * as tf from "@tensorflow/tfjs-core";
import { cleanup } from "../model/backend-failure.js";
import { disposeCache, forwardTidy, type KvCache, paddedCausalMask } from "../model/decoder.js";
import type { Model } from "../model/model.js";
import { selectRows } from "../model/ops.js";
import { DEFAULT_SAMPLING, findStop, type Pick, pickToken, Rng, type SamplingParams, topLogprobs } from "./pick.js";
import type { ConstraintFactory, TokenConstraint } from "./structured.js";

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
  /**
   * Stops this sample at the next decode step once aborted (a client that hung up): it leaves the batch with
   * what it has (finishReason "length"), and the other samples go on.
   */
  signal?: AbortSignal;
  /** Structured outputs: each step samples only among the tokens this sample's grammar allows. */
  constraint?: ConstraintFactory;
}

export interface Completion {
  tokens: number[];
  text: string;
  /** log p of each sampled token (model distribution, temperature 1). */
  logprobs: number[];
  top?: Pick[][];
  finishReason: "stop" | "length";
  /** Ended by its request's signal (the client hung up) before it finished. */
  cancelled?: true;
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
  /** The token to feed next. */
  next: number;
  /** Finished; its row may still be in the batch (see COMPACT_COST). */
  done: boolean;
  grammar: TokenConstraint | null;
}

/**
 * Finished rows are dropped from the batch once (rows finished) × (steps left) ≥ COMPACT_COST × (rows
 * live): a decode step of one row costs about what copying one live row's cache costs.
 */
const COMPACT_COST = 2;

/** Rows `rows` of every cache tensor, by sample: [n·kvH, S, hd] → [rows.length·kvH, S, hd] (a row may repeat). */
function selectCacheRows(cache: KvCache, rows: number[], kvH: number): KvCache {
  const index = rows.flatMap((b) => Array.from({ length: kvH }, (_, h) => b * kvH + h));
  return tf.tidy(() => {
    const take = (t: tf.Tensor3D) => {
      const [n, a, b] = t.shape;
      return tf.reshape(selectRows(tf.reshape(t, [n, a * b]), index), [index.length, a, b]);
    };
    return { k: cache.k.map(take), v: cache.v.map(take), length: cache.length } as unknown as tf.TensorContainer;
  }) as unknown as KvCache;
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
    next: -1,
    done: false,
    grammar: null,
  }));
  /** Every sample (the batch `live` shrinks as samples finish), for disposing their grammar states. */
  const all = live;
  // Prefill, once per distinct prompt (the samples of one prompt share it); the cache rows are then copied
  // out to the samples.
  const promptIndex = new Map<string, number>();
  const prompts: Live[] = [];
  const promptOf = live.map((s) => {
    const key = s.req.promptIds.join(",");
    let i = promptIndex.get(key);
    if (i === undefined) {
      i = prompts.length;
      promptIndex.set(key, i);
      prompts.push(s);
    }
    return i;
  });
  const G = prompts.length;
  const ids = new Int32Array(G * P);
  const pos = new Int32Array(G * P);
  prompts.forEach((s, b) => {
    for (let t = 0; t < P; t++) {
      ids[b * P + t] = t < s.pad ? padId : s.req.promptIds[t - s.pad]!;
      pos[b * P + t] = Math.max(0, t - s.pad);
    }
  });
  let { logits, cache } = forwardTidy(
    model,
    () => ({
      ids: tf.tensor2d(ids, [G, P], "int32"),
      positions: tf.tensor1d(pos, "int32"),
      mask: paddedCausalMask(
        prompts.map((s) => s.pad),
        0,
        P,
        g,
      ),
      logitRows: tf.tensor1d(
        prompts.map((_, b) => b * P + P - 1),
        "int32",
      ),
    }),
    { k: [], v: [], length: 0 },
  ) as { logits: tf.Tensor2D; cache: KvCache };
  if (G < live.length) {
    const tiled = selectCacheRows(cache, promptOf, c.numKvHeads);
    disposeCache(cache);
    cache = tiled;
  }
  /** Logit row of batch row b: the prefill's rows are per prompt. */
  let rowOf = (b: number) => promptOf[b]!;

  try {
    for (const s of live) if (s.req.constraint) s.grammar = await s.req.constraint();
    for (;;) {
      const rows = (await logits.data()) as Float32Array;
      logits.dispose();
      const V = c.vocabSize;
      const keep: number[] = [];
      for (const [b, s] of live.entries()) {
        if (s.done) continue;
        if (s.req.signal?.aborted) {
          results[s.i] = { tokens: s.tokens, logprobs: s.logprobs, text: "", finishReason: "length", cancelled: true };
          s.done = true;
          continue;
        }
        const r = rowOf(b);
        const row = rows.subarray(r * V, (r + 1) * V);
        const mask = s.grammar ? await s.grammar.allowed() : undefined;
        const pick = pickToken(row, s.sampling, s.rng, banned, mask);
        if (s.grammar && !s.grammar.accept(pick.token))
          throw new Error(`the grammar refused token ${pick.token}, which its own mask allowed`);
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
          s.done = true;
        } else {
          keep.push(b);
          s.next = pick.token;
        }
      }
      if (keep.length === 0) break;
      // Finished samples leave the batch when what their rows would cost in the steps left (at most) is
      // worth a copy of the live rows' cache; until then they ride along, fed padding, their logits unread.
      const dead = live.length - keep.length;
      const left = Math.max(
        ...keep.map((b) => Math.min(live[b]!.req.maxTokens - live[b]!.tokens.length, c.maxContext - live[b]!.position)),
      );
      if (dead > 0 && dead * left >= COMPACT_COST * keep.length) {
        const smaller = selectCacheRows(cache, keep, c.numKvHeads);
        disposeCache(cache);
        cache = smaller;
        live = keep.map((b) => live[b]!);
      }
      rowOf = (b) => b;
      const B = live.length;
      const S = cache.length;
      const prevCache = cache;
      const out = forwardTidy(
        model,
        () => ({
          ids: tf.tensor2d(
            Int32Array.from(live, (s) => (s.done ? padId : s.next)),
            [B, 1],
            "int32",
          ),
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
      for (const s of live) if (!s.done) s.position++;
      // Between decode steps, let the event loop run (a server reads requests that arrive mid-generation,
      // timers fire): setImmediate runs after pending I/O, a resolved promise (logits.data()) does not.
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
  } finally {
    for (const s of all) s.grammar?.dispose();
    cleanup(() => {
      disposeCache(cache);
      if (!logits.isDisposed) logits.dispose();
    });
  }
  return results;
}
