// text_similarity metrics computed in-process (everything except `cosine`, which needs an
// embedding model). Each metric matches a named Python implementation to 1e-6; see README.md.

import type { SimilarityMetric } from "../../../proto/graders.js";
import { bleu } from "./bleu.js";
import { fuzzyMatch } from "./fuzzy-match.js";
import { gleu } from "./gleu.js";
import { meteor } from "./meteor.js";
import { rougeL, rougeN } from "./rouge.js";

export type LocalMetric = Exclude<SimilarityMetric, "cosine">;

/**
 * Score `input` against `reference` with one text_similarity metric, in 0..1. The Python libraries
 * can land a rounding step above 1 (BLEU of identical texts is 1.0000000000000002); that is clamped.
 */
export function textSimilarity(metric: LocalMetric, input: string, reference: string): number {
  return Math.min(1, score(metric, input, reference));
}

function score(metric: LocalMetric, input: string, reference: string): number {
  switch (metric) {
    case "fuzzy_match":
      return fuzzyMatch(input, reference);
    case "bleu":
      return bleu(input, reference);
    case "gleu":
      return gleu(input, reference);
    case "meteor":
      return meteor(input, reference);
    case "rouge_1":
      return rougeN(input, reference, 1);
    case "rouge_2":
      return rougeN(input, reference, 2);
    case "rouge_3":
      return rougeN(input, reference, 3);
    case "rouge_4":
      return rougeN(input, reference, 4);
    case "rouge_5":
      return rougeN(input, reference, 5);
    case "rouge_l":
      return rougeL(input, reference);
    default: {
      const never: never = metric;
      throw new Error(`unsupported text_similarity metric: ${String(never)}`);
    }
  }
}

export { bleu, fuzzyMatch, gleu, meteor, rougeL, rougeN };
