// bleu = sacrebleu `sentence_bleu(input, [reference]).score / 100` (sacrebleu 2.4.3 defaults:
// 13a tokenizer, case-sensitive, smooth_method="exp", effective order), BLEU.compute_bleu replayed.

import { countNgrams, internPair, ngramCount } from "./ngrams.js";
import { tokens13a } from "./tokenize-13a.js";

const MAX_ORDER = 4;

/** Brevity penalty × geometric mean of the (smoothed) n-gram precisions, in 0..100. */
export function sentenceBleu(hypothesis: string, reference: string): number {
  const hyp = tokens13a(hypothesis);
  const ref = tokens13a(reference);
  const ids = internPair(hyp, ref);
  const correct = [0, 0, 0, 0];
  const total = [0, 0, 0, 0];
  for (let n = 1; n <= MAX_ORDER; n++) {
    total[n - 1] = ngramCount(hyp.length, n);
    if (total[n - 1] === 0) continue;
    const refCounts = countNgrams(ids.b, ids.base, n);
    let c = 0;
    for (const [gram, count] of countNgrams(ids.a, ids.base, n)) {
      const r = refCounts.get(gram);
      if (r !== undefined) c += Math.min(count, r);
    }
    correct[n - 1] = c;
  }
  const sysLen = hyp.length;
  const refLen = ref.length;
  const bp = sysLen < refLen ? (sysLen > 0 ? Math.exp(1 - refLen / sysLen) : 0) : 1;
  if (correct.every((c) => c === 0)) return 0;
  const precisions = [0, 0, 0, 0];
  let smoothMteval = 1;
  let effOrder = MAX_ORDER;
  for (let n = 1; n <= MAX_ORDER; n++) {
    const t = total[n - 1] as number;
    if (t === 0) break;
    effOrder = n;
    const c = correct[n - 1] as number;
    if (c === 0) {
      smoothMteval *= 2;
      precisions[n - 1] = 100 / (smoothMteval * t);
    } else {
      precisions[n - 1] = (100 * c) / t;
    }
  }
  let logSum = 0;
  for (let i = 0; i < effOrder; i++) {
    const p = precisions[i] as number;
    logSum += p === 0 ? -9999999999 : Math.log(p);
  }
  return bp * Math.exp(logSum / effOrder);
}

/** The `bleu` metric in 0..1. */
export function bleu(input: string, reference: string): number {
  return sentenceBleu(input, reference) / 100;
}
