// meteor = NLTK `meteor_score([ref_tokens], hyp_tokens)` (nltk 3.9.1; alpha 0.9, beta 3, gamma 0.5)
// with the exact and Porter-stem matching stages. The WordNet synonym stage is not applied: no
// WordNet data ships in any registry package this project can use (see README), so the Python
// reference runs NLTK with a WordNet that has no synsets, which makes that stage a no-op.
// Tokens: sacrebleu's 13a tokenization split on spaces, lower-cased by METEOR itself.

import { porterStem } from "./porter.js";
import { tokens13a } from "./tokenize-13a.js";

type Enum = [index: number, word: string];

/** NLTK `_match_enums`: from the last hypothesis word back, pair it with the last equal reference word. */
function matchEnums(hyp: Enum[], ref: Enum[], out: Array<[number, number]>): void {
  for (let i = hyp.length - 1; i >= 0; i--) {
    const word = (hyp[i] as Enum)[1];
    for (let j = ref.length - 1; j >= 0; j--) {
      if ((ref[j] as Enum)[1] === word) {
        out.push([(hyp[i] as Enum)[0], (ref[j] as Enum)[0]]);
        hyp.splice(i, 1);
        ref.splice(j, 1);
        break;
      }
    }
  }
}

function countChunks(matches: ReadonlyArray<readonly [number, number]>): number {
  let chunks = 1;
  for (let i = 0; i < matches.length - 1; i++) {
    const a = matches[i] as readonly [number, number];
    const b = matches[i + 1] as readonly [number, number];
    if (!(b[0] === a[0] + 1 && b[1] === a[1] + 1)) chunks++;
  }
  return chunks;
}

const ALPHA = 0.9;
const BETA = 3.0;
const GAMMA = 0.5;

/** single_meteor_score over pre-tokenized input. */
export function singleMeteorScore(reference: readonly string[], hypothesis: readonly string[]): number {
  const hyp: Enum[] = hypothesis.map((w, i) => [i, w.toLowerCase()]);
  const ref: Enum[] = reference.map((w, i) => [i, w.toLowerCase()]);
  const translationLength = hyp.length;
  const referenceLength = ref.length;
  const matches: Array<[number, number]> = [];
  matchEnums(hyp, ref, matches);
  const stemmedHyp: Enum[] = hyp.map(([i, w]) => [i, porterStem(w)]);
  const stemmedRef: Enum[] = ref.map(([i, w]) => [i, porterStem(w)]);
  matchEnums(stemmedHyp, stemmedRef, matches);
  matches.sort((x, y) => x[0] - y[0]);
  const matchesCount = matches.length;
  // Python raises ZeroDivisionError (→ 0.0) for any zero denominator below.
  if (translationLength === 0 || referenceLength === 0 || matchesCount === 0) return 0;
  const precision = matchesCount / translationLength;
  const recall = matchesCount / referenceLength;
  const fmean = (precision * recall) / (ALPHA * precision + (1 - ALPHA) * recall);
  const fragFrac = countChunks(matches) / matchesCount;
  const penalty = GAMMA * fragFrac ** BETA;
  return (1 - penalty) * fmean;
}

/** The `meteor` metric in 0..1. */
export function meteor(input: string, reference: string): number {
  return singleMeteorScore(tokens13a(reference), tokens13a(input));
}
