// n-gram counting shared by BLEU, GLEU and ROUGE-N. The tokens of the two texts are interned to
// ids 1..V first; an n-gram is then the number id₁·Kⁿ⁻¹ + … + idₙ in base K = V + 1 (no digit is 0,
// so n-grams of different orders never collide), far cheaper to hash than joined strings. When Kⁿ
// would pass 2^53 the key falls back to a string of the ids.

export type NgramCounts = Map<number | string, number>;

/** Interns the tokens of two texts into one id space; K is the key base (number of ids + 1). */
export function internPair(a: readonly string[], b: readonly string[]): { a: Int32Array; b: Int32Array; base: number } {
  const ids = new Map<string, number>();
  const map = (tokens: readonly string[]) => {
    const out = new Int32Array(tokens.length);
    for (let i = 0; i < tokens.length; i++) {
      const t = tokens[i] as string;
      let id = ids.get(t);
      if (id === undefined) {
        id = ids.size + 1;
        ids.set(t, id);
      }
      out[i] = id;
    }
    return out;
  };
  const ia = map(a);
  const ib = map(b);
  return { a: ia, b: ib, base: ids.size + 1 };
}

/** Counts of the n-grams (one order n) of an id sequence. */
export function countNgrams(ids: Int32Array, base: number, n: number): NgramCounts {
  const counts: NgramCounts = new Map();
  const last = ids.length - n;
  if (base ** n < Number.MAX_SAFE_INTEGER) {
    for (let i = 0; i <= last; i++) {
      let key = 0;
      for (let j = 0; j < n; j++) key = key * base + (ids[i + j] as number);
      counts.set(key, (counts.get(key) ?? 0) + 1);
    }
  } else {
    for (let i = 0; i <= last; i++) {
      const key = ids.subarray(i, i + n).join(",");
      counts.set(key, (counts.get(key) ?? 0) + 1);
    }
  }
  return counts;
}

/** Σ min(countA, countB) over shared keys (the size of a Counter intersection). */
export function overlap(a: NgramCounts, b: NgramCounts): number {
  const [small, large] = a.size <= b.size ? [a, b] : [b, a];
  let n = 0;
  for (const [k, c] of small) {
    const d = large.get(k);
    if (d !== undefined) n += Math.min(c, d);
  }
  return n;
}

/** Number of n-grams of order n in a sequence of len tokens. */
export function ngramCount(len: number, n: number): number {
  return Math.max(0, len - n + 1);
}
