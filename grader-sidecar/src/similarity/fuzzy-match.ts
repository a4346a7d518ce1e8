// fuzzy_match = rapidfuzz `fuzz.WRatio(input, reference) / 100` (rapidfuzz 3.10.1, processor=None).
//
// WRatio's score cutoffs only prune work: a sub-score below its cutoff can never win the final
// max(), so the scores below are computed without cutoffs and the result is the same. partial_ratio
// is rapidfuzz 3.x's exact alignment search: with the shorter string s1 (length m) and the longer
// s2, the best fuzz.ratio of s1 against every window s2[i:i+m], every prefix s2[:i] (i < m) and
// every suffix of s2 shorter than m; for equal lengths also the other way round.

import {
  codePointLength,
  indelDistance,
  lcsScan,
  Pattern,
  ratio,
  resetScratch,
  scratchCodePoints,
  scratchJoin,
} from "./indel.js";
import { pySplit } from "./tokenize-13a.js";

/** Compare two strings by code point (Python's str ordering), not by UTF-16 unit. */
export function compareCodePoints(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    let x = a.charCodeAt(i);
    let y = b.charCodeAt(i);
    if (x !== y) {
      if (x >= 0xd800) x = x >= 0xe000 ? x - 0x800 : x + 0x2000;
      if (y >= 0xd800) y = y >= 0xe000 ? y - 0x800 : y + 0x2000;
      return x - y;
    }
  }
  return a.length - b.length;
}

let lcsBuf = new Int32Array(128);

const stack: number[] = [];

/**
 * The largest LCS of the pattern (length m) with a window s2[i:i+m], i < nWin. Shifting a window
 * by one changes its LCS by at most 1, so between windows a and b (LCS la, lb) no window exceeds
 * ⌊(la + lb + b − a) / 2⌋: ranges that cannot beat the best so far are skipped (bisection, as in
 * rapidfuzz's partial_ratio), which keeps the result exact. Short needles scan linearly instead.
 */
function bestWindowLcs(p: Pattern, s2: Int32Array, m: number, nWin: number): number {
  if (m <= 32) {
    // Short needles: scan every window, skipping those that end in a symbol absent from the
    // needle (never better than the window before them).
    let best = 0;
    for (let i = 0; i < nWin; i++) {
      if (i > 0 && !p.has(s2[i + m - 1] as number)) continue;
      const l = lcsScan(p, s2, i, 1, m);
      if (l > best) {
        best = l;
        if (l === m) break;
      }
    }
    return best;
  }
  const first = lcsScan(p, s2, 0, 1, m);
  if (nWin === 1 || first === m) return first;
  const last = lcsScan(p, s2, nWin - 1, 1, m);
  let best = Math.max(first, last);
  if (best === m) return best;
  stack.length = 0;
  stack.push(0, first, nWin - 1, last);
  while (stack.length > 0) {
    const lb = stack.pop() as number;
    const b = stack.pop() as number;
    const la = stack.pop() as number;
    const a = stack.pop() as number;
    if (b - a <= 1 || (la + lb + (b - a)) >> 1 <= best) continue;
    const mid = (a + b) >> 1;
    const lm = lcsScan(p, s2, mid, 1, m);
    if (lm > best) {
      best = lm;
      if (best === m) return best;
    }
    stack.push(a, la, mid, lm, mid, lm, b, lb);
  }
  return best;
}

/** Best ratio of s1 (the shorter, non-empty) against windows, prefixes and suffixes of s2. */
function partialRatioImpl(s1: Int32Array, s2: Int32Array): number {
  const len1 = s1.length;
  const len2 = s2.length;
  const p = Pattern.acquire(s1);
  const bestLcsFull = bestWindowLcs(p, s2, len1, len2 - len1 + 1);
  if (bestLcsFull === len1) {
    p.release();
    return 100;
  }
  let best = (1 - (2 * len1 - 2 * bestLcsFull) / (2 * len1)) * 100;
  if (len1 > 1) {
    if (lcsBuf.length < len1) lcsBuf = new Int32Array(len1 * 2);
    const buf = lcsBuf;
    // prefixes s2[:k] for k = 1..len1-1: one pass of the LCS automaton
    lcsScan(p, s2, 0, 1, len1 - 1, buf);
    for (let k = 1; k < len1; k++) {
      const lensum = len1 + k;
      const r = (1 - (lensum - 2 * (buf[k - 1] as number)) / lensum) * 100;
      if (r > best) best = r;
    }
    // suffixes of length k = 1..len1-1: the same on both sequences reversed
    const rp = Pattern.acquire(s1, 0, len1, true);
    lcsScan(rp, s2, len2 - 1, -1, len1 - 1, buf);
    rp.release();
    for (let k = 1; k < len1; k++) {
      const lensum = len1 + k;
      const r = (1 - (lensum - 2 * (buf[k - 1] as number)) / lensum) * 100;
      if (r > best) best = r;
    }
  }
  p.release();
  return best;
}

/** rapidfuzz `fuzz.partial_ratio` on code-point sequences. */
export function partialRatio(a: Int32Array, b: Int32Array): number {
  if (a.length === 0 || b.length === 0) return a.length === b.length ? 100 : 0;
  const [s1, s2] = a.length <= b.length ? [a, b] : [b, a];
  let score = partialRatioImpl(s1, s2);
  if (score !== 100 && s1.length === s2.length) score = Math.max(score, partialRatioImpl(s2, s1));
  return score;
}

// eslint-disable-next-line no-control-regex -- Latin-1 range test, as rapidfuzz does
const WIDE = /[^\u0000-\u00ff]/;
const SURROGATE = /[\uD800-\uDFFF]/;
// eslint-disable-next-line no-control-regex -- Python's str.split() whitespace includes \x1c-\x1f
const LATIN1_WS_RUN = /[\t\n\v\f\r\x1c-\x20]+/;

/**
 * rapidfuzz's `sorted_split`. Its whitespace test depends on the width of the string's storage:
 * Python hands over a str with all code points ≤ 0xFF as 1-byte characters, for which only the
 * ASCII whitespace (\t \n \v \f \r \x1c-\x1f, space) separates words; U+0085 and U+00A0 do so
 * only in strings that also hold a code point above 0xFF (then Python's full whitespace set).
 */
function sortedTokens(s: string): string[] {
  let tokens: string[];
  if (WIDE.test(s)) {
    tokens = pySplit(s);
  } else {
    tokens = s.split(LATIN1_WS_RUN);
    if (tokens[0] === "") tokens.shift();
    if (tokens.length > 0 && tokens[tokens.length - 1] === "") tokens.pop();
  }
  if (SURROGATE.test(s)) return tokens.sort(compareCodePoints);
  // Without surrogates UTF-16 order is code-point order; insertion sort wins on a sentence's words.
  for (let i = 1; i < tokens.length; i++) {
    const x = tokens[i] as string;
    let j = i - 1;
    while (j >= 0 && (tokens[j] as string) > x) {
      tokens[j + 1] = tokens[j] as string;
      j--;
    }
    tokens[j + 1] = x;
  }
  return tokens;
}

/** rapidfuzz's `set_decomposition` of two sorted token lists (each deduplicated). */
interface Decomposition {
  intersection: string[];
  diffAB: string[];
  diffBA: string[];
}

function decompose(a: readonly string[], b: readonly string[]): Decomposition {
  const intersection: string[] = [];
  const diffAB: string[] = [];
  const diffBA: string[] = [];
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) {
    const x = a[i];
    const y = b[j];
    const order = x === undefined ? 1 : y === undefined ? -1 : x === y ? 0 : compareCodePoints(x, y);
    if (order === 0) {
      intersection.push(x as string);
    } else if (order < 0) {
      diffAB.push(x as string);
    } else {
      diffBA.push(y as string);
    }
    if (order <= 0) while (i < a.length && a[i] === x) i++;
    if (order >= 0) while (j < b.length && b[j] === y) j++;
  }
  return { intersection, diffAB, diffBA };
}

/** Length of `tokens.join(" ")` in code points. */
function joinedLength(tokens: readonly string[]): number {
  if (tokens.length === 0) return 0;
  let n = tokens.length - 1;
  for (const t of tokens) n += codePointLength(t);
  return n;
}

function normDistance(dist: number, lensum: number): number {
  return lensum > 0 ? 100 - (100 * dist) / lensum : 100;
}

/** rapidfuzz `fuzz.token_ratio` = max(token_sort_ratio, token_set_ratio). */
export function tokenRatio(s1: string, s2: string): number {
  const ta = sortedTokens(s1);
  const tb = sortedTokens(s2);
  const { intersection, diffAB, diffBA } = decompose(ta, tb);
  if (intersection.length > 0 && (diffAB.length === 0 || diffBA.length === 0)) return 100;
  const ab = scratchJoin(diffAB);
  const ba = scratchJoin(diffBA);
  const sectLen = joinedLength(intersection);
  let result = ratio(scratchJoin(ta), scratchJoin(tb));
  const sep = sectLen > 0 ? 1 : 0;
  const sectAbLen = sectLen + sep + ab.length;
  const sectBaLen = sectLen + sep + ba.length;
  result = Math.max(result, normDistance(indelDistance(ab, ba), sectAbLen + sectBaLen));
  if (sectLen === 0) return result;
  const sectAbRatio = normDistance(sep + ab.length, sectLen + sectAbLen);
  const sectBaRatio = normDistance(sep + ba.length, sectLen + sectBaLen);
  return Math.max(result, sectAbRatio, sectBaRatio);
}

/** rapidfuzz `fuzz.partial_token_ratio`. */
export function partialTokenRatio(s1: string, s2: string): number {
  const ta = sortedTokens(s1);
  const tb = sortedTokens(s2);
  const { intersection, diffAB, diffBA } = decompose(ta, tb);
  if (intersection.length > 0) return 100;
  const result = partialRatio(scratchJoin(ta), scratchJoin(tb));
  if (ta.length === diffAB.length && tb.length === diffBA.length) return result;
  return Math.max(result, partialRatio(scratchJoin(diffAB), scratchJoin(diffBA)));
}

const UNBASE_SCALE = 0.95;

/** rapidfuzz `fuzz.WRatio` (0..100). */
export function wratio(s1: string, s2: string): number {
  resetScratch();
  const a = scratchCodePoints(s1);
  const b = scratchCodePoints(s2);
  const len1 = a.length;
  const len2 = b.length;
  if (len1 === 0 || len2 === 0) return 0;
  const lenRatio = len1 > len2 ? len1 / len2 : len2 / len1;
  let end = ratio(a, b);
  if (lenRatio < 1.5) return Math.max(end, tokenRatio(s1, s2) * UNBASE_SCALE);
  const partialScale = lenRatio < 8.0 ? 0.9 : 0.6;
  end = Math.max(end, partialRatio(a, b) * partialScale);
  return Math.max(end, partialTokenRatio(s1, s2) * UNBASE_SCALE * partialScale);
}

/** The `fuzzy_match` metric: WRatio / 100. */
export function fuzzyMatch(input: string, reference: string): number {
  return wratio(input, reference) / 100;
}
