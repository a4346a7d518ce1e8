// fuzzy_match = rapidfuzz `fuzz.WRatio(input, reference) / 100` (rapidfuzz 3.10.1, processor=None).
//
// WRatio's score cutoffs only prune work: a sub-score below its cutoff can never win the final
// max(), so the scores below are computed without cutoffs and the result is the same. partial_ratio
// is rapidfuzz 3.x's exact alignment search: with the shorter string s1 (length m) and the longer
// s2, the best fuzz.ratio of s1 against every window s2[i:i+m], every prefix s2[:i] (i < m) and
// every suffix of s2 shorter than m; for equal lengths also the other way round.

import { codePointLength, indelDistance, lcsScan, Pattern, ratio, toCodePoints } from "./indel.js";
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

/** Best ratio of s1 (the shorter, non-empty) against windows, prefixes and suffixes of s2. */
function partialRatioImpl(s1: Int32Array, s2: Int32Array): number {
  const len1 = s1.length;
  const len2 = s2.length;
  const p = new Pattern(s1);
  let bestLcsFull = 0;
  for (let i = 0; i + len1 <= len2; i++) {
    // A window ending in a symbol absent from s1 is never better than the one before it.
    if (i + len1 < len2 && i > 0 && !p.has(s2[i + len1 - 1] as number)) continue;
    const l = lcsScan(p, s2, i, 1, len1);
    if (l > bestLcsFull) {
      bestLcsFull = l;
      if (l === len1) return 100;
    }
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
    const rp = new Pattern(s1, 0, len1, true);
    lcsScan(rp, s2, len2 - 1, -1, len1 - 1, buf);
    for (let k = 1; k < len1; k++) {
      const lensum = len1 + k;
      const r = (1 - (lensum - 2 * (buf[k - 1] as number)) / lensum) * 100;
      if (r > best) best = r;
    }
  }
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

interface Decomposition {
  intersection: string[];
  diffAB: string[];
  diffBA: string[];
}

const WIDE = /[^\u0000-\u00ff]/;
const LATIN1_WS_RUN = /[\t\n\v\f\r\x1c-\x20]+/;

/**
 * rapidfuzz's `sorted_split`. Its whitespace test depends on the width of the string's storage:
 * Python hands over a str with all code points ≤ 0xFF as 1-byte characters, for which only the
 * ASCII whitespace (\t \n \v \f \r \x1c-\x1f, space) separates words; U+0085 and U+00A0 do so
 * only in strings that also hold a code point above 0xFF (then Python's full whitespace set).
 */
function sortedTokens(s: string): string[] {
  const tokens = WIDE.test(s) ? pySplit(s) : s.split(LATIN1_WS_RUN).filter((t) => t.length > 0);
  return tokens.sort(compareCodePoints);
}

function dedupeSorted(tokens: string[]): string[] {
  const out: string[] = [];
  for (const t of tokens) if (out.length === 0 || out[out.length - 1] !== t) out.push(t);
  return out;
}

function decompose(a: string[], b: string[]): Decomposition {
  const ua = dedupeSorted(a);
  const ub = dedupeSorted(b);
  const setA = new Set(ua);
  const setB = new Set(ub);
  return {
    intersection: ua.filter((t) => setB.has(t)),
    diffAB: ua.filter((t) => !setB.has(t)),
    diffBA: ub.filter((t) => !setA.has(t)),
  };
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
  const abJoined = diffAB.join(" ");
  const baJoined = diffBA.join(" ");
  const abLen = codePointLength(abJoined);
  const baLen = codePointLength(baJoined);
  const sectLen = codePointLength(intersection.join(" "));
  let result = ratio(toCodePoints(ta.join(" ")), toCodePoints(tb.join(" ")));
  const sep = sectLen > 0 ? 1 : 0;
  const sectAbLen = sectLen + sep + abLen;
  const sectBaLen = sectLen + sep + baLen;
  const dist = indelDistance(toCodePoints(abJoined), toCodePoints(baJoined));
  result = Math.max(result, normDistance(dist, sectAbLen + sectBaLen));
  if (sectLen === 0) return result;
  const sectAbRatio = normDistance(sep + abLen, sectLen + sectAbLen);
  const sectBaRatio = normDistance(sep + baLen, sectLen + sectBaLen);
  return Math.max(result, sectAbRatio, sectBaRatio);
}

/** rapidfuzz `fuzz.partial_token_ratio`. */
export function partialTokenRatio(s1: string, s2: string): number {
  const ta = sortedTokens(s1);
  const tb = sortedTokens(s2);
  const { intersection, diffAB, diffBA } = decompose(ta, tb);
  if (intersection.length > 0) return 100;
  const result = partialRatio(toCodePoints(ta.join(" ")), toCodePoints(tb.join(" ")));
  if (ta.length === diffAB.length && tb.length === diffBA.length) return result;
  return Math.max(result, partialRatio(toCodePoints(diffAB.join(" ")), toCodePoints(diffBA.join(" "))));
}

const UNBASE_SCALE = 0.95;

/** rapidfuzz `fuzz.WRatio` (0..100). */
export function wratio(s1: string, s2: string): number {
  const a = toCodePoints(s1);
  const b = toCodePoints(s2);
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
