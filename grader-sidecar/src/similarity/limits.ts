// Cost bounds of the text_similarity metrics. The metrics are exact ports of Python scorers, and several are
// quadratic (rouge_l's token LCS, meteor's alignment) or worse (fuzzy_match's partial_ratio: windows × needle²),
// so a long enough input would hold the event loop for seconds or minutes. Past these limits nothing is
// computed: the grader scores 0 with `truncated_observation_error` (the observation was too long to grade).
// Limits, not deadlines, so a reward never depends on the machine's speed. Figures: bench/similarity.ts --long.

import { codePointLength } from "./indel.js";
import type { LocalMetric } from "./index.js";

export interface SimilarityLimits {
  /** Longest input or reference (UTF-16 code units; code points for fuzzy_match), per metric. */
  maxChars: Record<LocalMetric, number>;
  /**
   * fuzzy_match only: when one text is at least 1.5× the other (WRatio then runs partial_ratio, whose cost
   * grows with shorter² × longer), shorter² × longer in code points may not exceed this.
   */
  fuzzyPartialCost: number;
}

export const DEFAULT_SIMILARITY_LIMITS: SimilarityLimits = {
  maxChars: {
    fuzzy_match: 10_000,
    rouge_l: 10_000,
    meteor: 10_000,
    bleu: 100_000,
    gleu: 100_000,
    rouge_1: 100_000,
    rouge_2: 100_000,
    rouge_3: 100_000,
    rouge_4: 100_000,
    rouge_5: 100_000,
  },
  fuzzyPartialCost: 4e9,
};

/** Why `metric` will not score this pair (a one-line reason), or null when it is within the limits. */
export function similarityOverLimit(
  metric: LocalMetric,
  input: string,
  reference: string,
  limits: SimilarityLimits = DEFAULT_SIMILARITY_LIMITS,
): string | null {
  const max = limits.maxChars[metric];
  if (metric !== "fuzzy_match") {
    // `.length` is the cheap bound (code units ≥ code points); the other metrics work on tokens anyway.
    for (const [what, s] of [
      ["input", input],
      ["reference", reference],
    ] as const) {
      if (s.length > max) return `${metric}: ${what} is ${s.length} characters; the limit is ${max}`;
    }
    return null;
  }
  const la = codePointLength(input);
  const lb = codePointLength(reference);
  if (la > max) return `fuzzy_match: input is ${la} characters; the limit is ${max}`;
  if (lb > max) return `fuzzy_match: reference is ${lb} characters; the limit is ${max}`;
  const short = Math.min(la, lb);
  const long = Math.max(la, lb);
  if (short > 0 && long >= 1.5 * short && short * short * long > limits.fuzzyPartialCost) {
    return (
      `fuzzy_match: a ${short}-character text against a ${long}-character one costs ${short}² × ${long} > ` +
      `${limits.fuzzyPartialCost} (partial_ratio's limit)`
    );
  }
  return null;
}
