/**
 * Token choice from one row of logits: temperature, top-k, top-p, seeded randomness. Pure functions.
 * The reported log-probability is the model's own (temperature 1, untruncated) log-softmax of the chosen
 * token: what the RL loss recomputes from the policy.
 */

export interface SamplingParams {
  /** 0 = greedy. Default 1. */
  temperature: number;
  /** Nucleus mass in (0, 1]. Default 1. */
  topP: number;
  /** Keep the k most likely tokens; 0 = all. */
  topK: number;
}

export const DEFAULT_SAMPLING: SamplingParams = { temperature: 1, topP: 1, topK: 0 };

/** A small, fast, seedable PRNG (mulberry32); deterministic across platforms. */
export class Rng {
  private a: number;
  constructor(seed: number) {
    this.a = seed >>> 0;
  }
  next(): number {
    this.a = (this.a + 0x6d2b79f5) >>> 0;
    let t = this.a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
}

/** log-sum-exp of a row (for the model's log-probabilities). */
export function logSumExp(logits: ArrayLike<number>): number {
  let max = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < logits.length; i++) if (logits[i]! > max) max = logits[i]!;
  let s = 0;
  for (let i = 0; i < logits.length; i++) s += Math.exp(logits[i]! - max);
  return max + Math.log(s);
}

export interface Pick {
  token: number;
  /** log p(token) under the model (temperature 1, no truncation). */
  logprob: number;
}

/** Whether token `t` is set in a bitmask (bit t&31 of word t>>5, xgrammar's layout). */
export const maskHas = (mask: Int32Array, t: number): boolean => ((mask[t >>> 5]! >>> (t & 31)) & 1) === 1;

/**
 * Chooses a token; `banned` ids are never chosen (e.g. padding), and with `mask` (a grammar's bitmask) only
 * the tokens it sets are. The log-probability stays the model's own over the whole vocabulary: what the RL
 * loss recomputes from the policy, constrained or not.
 */
export function pickToken(
  logits: Float32Array,
  p: SamplingParams,
  rng: Rng,
  banned?: ReadonlySet<number>,
  mask?: Int32Array,
): Pick {
  const V = logits.length;
  const lse = logSumExp(logits);
  const allowed = (i: number) => !banned?.has(i) && (!mask || maskHas(mask, i));
  if (p.temperature <= 0) {
    let best = -1;
    for (let i = 0; i < V; i++) if (allowed(i) && (best < 0 || logits[i]! > logits[best]!)) best = i;
    if (best < 0) throw new Error("no token is allowed at this step");
    return { token: best, logprob: logits[best]! - lse };
  }
  const inv = 1 / p.temperature;
  if (!(p.topK > 0 && p.topK < V - (banned?.size ?? 0)) && !(p.topP < 1)) {
    // No truncation (the RL default): the same arithmetic, in the same order, as the general path below,
    // without building index and weight arrays over the vocabulary (49152 entries for SmolLM2, per sample
    // and step): the weights are recomputed instead of stored (Math.exp is deterministic).
    const none = (!banned || banned.size === 0) && !mask;
    let max = Number.NEGATIVE_INFINITY;
    let last = -1;
    for (let i = 0; i < V; i++) {
      if (none || allowed(i)) {
        max = Math.max(max, logits[i]! * inv);
        last = i;
      }
    }
    let total = 0;
    for (let i = 0; i < V; i++) if (none || allowed(i)) total += Math.exp(logits[i]! * inv - max);
    if (last < 0) throw new Error("no token is allowed at this step");
    let r = rng.next() * total;
    let chosen = last;
    for (let i = 0; i < V; i++) {
      if (!(none || allowed(i))) continue;
      r -= Math.exp(logits[i]! * inv - max);
      if (r < 0) {
        chosen = i;
        break;
      }
    }
    return { token: chosen, logprob: logits[chosen]! - lse };
  }
  let idx: number[] = [];
  for (let i = 0; i < V; i++) if (allowed(i)) idx.push(i);
  if (idx.length === 0) throw new Error("no token is allowed at this step");
  const truncate = (p.topK > 0 && p.topK < idx.length) || p.topP < 1;
  if (truncate) {
    idx.sort((a, b) => logits[b]! - logits[a]!);
    if (p.topK > 0 && p.topK < idx.length) idx = idx.slice(0, p.topK);
  }
  let max = Number.NEGATIVE_INFINITY;
  for (const i of idx) max = Math.max(max, logits[i]! * inv);
  const w = idx.map((i) => Math.exp(logits[i]! * inv - max));
  let total = w.reduce((a, b) => a + b, 0);
  let n = idx.length;
  if (p.topP < 1) {
    // Smallest prefix (by probability) whose mass reaches top_p.
    let acc = 0;
    for (let j = 0; j < idx.length; j++) {
      acc += w[j]! / total;
      if (acc >= p.topP) {
        n = j + 1;
        break;
      }
    }
    total = w.slice(0, n).reduce((a, b) => a + b, 0);
  }
  let r = rng.next() * total;
  let chosen = idx[n - 1]!;
  for (let j = 0; j < n; j++) {
    r -= w[j]!;
    if (r < 0) {
      chosen = idx[j]!;
      break;
    }
  }
  return { token: chosen, logprob: logits[chosen]! - lse };
}

/** The k most likely tokens with their log-probabilities (for `top_logprobs`). */
export function topLogprobs(logits: Float32Array, k: number): Pick[] {
  if (k <= 0) return [];
  const lse = logSumExp(logits);
  const best: number[] = [];
  for (let i = 0; i < logits.length; i++) {
    if (best.length < k || logits[i]! > logits[best[best.length - 1]!]!) {
      best.push(i);
      best.sort((a, b) => logits[b]! - logits[a]!);
      if (best.length > k) best.pop();
    }
  }
  return best.map((token) => ({ token, logprob: logits[token]! - lse }));
}

/** Where the earliest stop sequence starts in `text`, or -1. */
export function findStop(text: string, stops: readonly string[]): number {
  let at = -1;
  for (const s of stops) {
    if (!s) continue;
    const i = text.indexOf(s);
    if (i >= 0 && (at < 0 || i < at)) at = i;
  }
  return at;
}
