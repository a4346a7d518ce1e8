// n-gram counting shared by BLEU, GLEU and ROUGE-N. Tokens never contain whitespace (all the
// tokenizers split on it), so a space-joined n-gram is an unambiguous key and its order is
// recoverable from the number of tokens joined.

/** Counts of every n-gram of order minN..maxN (like NLTK's everygrams / sacrebleu's extraction). */
export function countNgrams(tokens: readonly string[], minN: number, maxN: number): Map<string, number> {
  const counts = new Map<string, number>();
  const len = tokens.length;
  for (let i = 0; i < len; i++) {
    let key = "";
    for (let n = 1; n <= maxN && i + n <= len; n++) {
      key = n === 1 ? (tokens[i] as string) : `${key} ${tokens[i + n - 1] as string}`;
      if (n >= minN) counts.set(key, (counts.get(key) ?? 0) + 1);
    }
  }
  return counts;
}

/** Σ min(countA, countB) over shared keys (the size of a Counter intersection). */
export function overlap(a: ReadonlyMap<string, number>, b: ReadonlyMap<string, number>): number {
  const [small, large] = a.size <= b.size ? [a, b] : [b, a];
  let n = 0;
  for (const [k, c] of small) {
    const d = large.get(k);
    if (d !== undefined) n += Math.min(c, d);
  }
  return n;
}

/** Total number of n-grams of order minN..maxN in a sequence of len tokens. */
export function ngramTotal(len: number, minN: number, maxN: number): number {
  let n = 0;
  for (let k = minN; k <= maxN; k++) n += Math.max(0, len - k + 1);
  return n;
}
