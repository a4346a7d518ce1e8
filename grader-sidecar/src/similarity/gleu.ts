// gleu = NLTK `sentence_gleu([ref_tokens], hyp_tokens)` (Google-BLEU, n-grams of order 1..4):
// matched n-grams / max(hypothesis n-grams, reference n-grams). Tokens: sacrebleu's 13a
// tokenization split on spaces (see README: NLTK's word_tokenize needs punkt data).

import { countNgrams, internPair, ngramCount, overlap } from "./ngrams.js";
import { tokens13a } from "./tokenize-13a.js";

/** sentence_gleu over pre-tokenized input (NLTK semantics, single reference). */
export function sentenceGleu(reference: readonly string[], hypothesis: readonly string[]): number {
  let tpfp = 0;
  let tpfn = 0;
  for (let n = 1; n <= 4; n++) {
    tpfp += ngramCount(hypothesis.length, n);
    tpfn += ngramCount(reference.length, n);
  }
  const nAll = Math.max(tpfp, tpfn);
  if (nAll === 0) return 0;
  const ids = internPair(hypothesis, reference);
  let tp = 0;
  for (let n = 1; n <= 4; n++) tp += overlap(countNgrams(ids.a, ids.base, n), countNgrams(ids.b, ids.base, n));
  return tp / nAll;
}

/** The `gleu` metric in 0..1. */
export function gleu(input: string, reference: string): number {
  return sentenceGleu(tokens13a(reference), tokens13a(input));
}
