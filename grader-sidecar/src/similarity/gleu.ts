// gleu = NLTK `sentence_gleu([ref_tokens], hyp_tokens)` (Google-BLEU, n-grams of order 1..4):
// matched n-grams / max(hypothesis n-grams, reference n-grams). Tokens: sacrebleu's 13a
// tokenization split on spaces (see README: NLTK's word_tokenize needs punkt data).

import { countNgrams, ngramTotal, overlap } from "./ngrams.js";
import { tokens13a } from "./tokenize-13a.js";

/** sentence_gleu over pre-tokenized input (NLTK semantics, single reference). */
export function sentenceGleu(reference: readonly string[], hypothesis: readonly string[]): number {
  const tpfp = ngramTotal(hypothesis.length, 1, 4);
  const tpfn = ngramTotal(reference.length, 1, 4);
  const nAll = Math.max(tpfp, tpfn);
  if (nAll === 0) return 0;
  const tp = overlap(countNgrams(hypothesis, 1, 4), countNgrams(reference, 1, 4));
  return tp / nAll;
}

/** The `gleu` metric in 0..1. */
export function gleu(input: string, reference: string): number {
  return sentenceGleu(tokens13a(reference), tokens13a(input));
}
