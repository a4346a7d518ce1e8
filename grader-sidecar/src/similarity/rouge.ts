// rouge_1..rouge_5 and rouge_l = Google rouge-score 0.1.2 `RougeScorer([...], use_stemmer=True)`
// F-measure of `score(target=reference, prediction=input)` ("rougeL", not "rougeLsum").
// Tokenizer: lower-case, non-[a-z0-9] runs become spaces, tokens longer than 3 characters are
// Porter-stemmed (NLTK PorterStemmer, NLTK_EXTENSIONS mode).

import { countNgrams, internPair, ngramCount, overlap } from "./ngrams.js";
import { porterStem } from "./porter.js";

const TOKEN = /[a-z0-9]+/g;

/** rouge_score.tokenize.tokenize(text, PorterStemmer()). */
export function rougeTokens(text: string): string[] {
  const tokens = text.toLowerCase().match(TOKEN) ?? [];
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i] as string;
    if (t.length > 3) tokens[i] = porterStem(t);
  }
  return tokens;
}

function fmeasure(precision: number, recall: number): number {
  return precision + recall > 0 ? (2 * precision * recall) / (precision + recall) : 0;
}

/** ROUGE-N F-measure between token lists. */
export function rougeNTokens(target: readonly string[], prediction: readonly string[], n: number): number {
  const ids = internPair(target, prediction);
  const inter = overlap(countNgrams(ids.a, ids.base, n), countNgrams(ids.b, ids.base, n));
  const tCount = ngramCount(target.length, n);
  const pCount = ngramCount(prediction.length, n);
  return fmeasure(inter / Math.max(pCount, 1), inter / Math.max(tCount, 1));
}

/** LCS length of two token sequences (O(n·m) with one row). */
function lcsTokens(a: readonly string[], b: readonly string[]): number {
  const row = new Int32Array(b.length + 1);
  for (let i = 1; i <= a.length; i++) {
    let diag = 0;
    const ai = a[i - 1];
    for (let j = 1; j <= b.length; j++) {
      const up = row[j] as number;
      row[j] = ai === b[j - 1] ? diag + 1 : Math.max(up, row[j - 1] as number);
      diag = up;
    }
  }
  return row[b.length] as number;
}

/** ROUGE-L F-measure between token lists. */
export function rougeLTokens(target: readonly string[], prediction: readonly string[]): number {
  if (target.length === 0 || prediction.length === 0) return 0;
  const lcs = lcsTokens(target, prediction);
  return fmeasure(lcs / prediction.length, lcs / target.length);
}

/** ROUGE-N F-measure (n = 1..5) of input against reference. */
export function rougeN(input: string, reference: string, n: number): number {
  return rougeNTokens(rougeTokens(reference), rougeTokens(input), n);
}

/** ROUGE-L F-measure of input against reference. */
export function rougeL(input: string, reference: string): number {
  return rougeLTokens(rougeTokens(reference), rougeTokens(input));
}
