// Indel (insert/delete only) distance between code-point sequences through the length of their
// longest common subsequence, computed with the bit-parallel LCS algorithm (Allison–Dix / Hyyrö:
// one pass over the text, ⌈m/32⌉ 32-bit words per character). This is what rapidfuzz's `ratio`
// and its alignment search are built on. Code points (not UTF-16 units) are the symbols, because
// rapidfuzz sees Python strings as code-point arrays.

/** Python-style code points of a JS string (a lone surrogate stays one symbol, as in Python). */
export function toCodePoints(s: string): Int32Array {
  const n = s.length;
  let out = new Int32Array(n);
  let k = 0;
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < n) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        out[k++] = ((c - 0xd800) << 10) + (d - 0xdc00) + 0x10000;
        i++;
        continue;
      }
    }
    out[k++] = c;
  }
  if (k !== n) out = out.subarray(0, k);
  return out;
}

let arena = new Int32Array(4096);
let arenaTop = 0;

/** Forget every sequence `scratchCodePoints` handed out (call at the start of a scoring call). */
export function resetScratch(): void {
  arenaTop = 0;
}

function reserve(n: number): void {
  if (arenaTop + n > arena.length) {
    arena = new Int32Array(Math.max(arena.length, n * 4));
    arenaTop = 0;
  }
}

/** Writes the code points of s at arena[k…]; returns the new end. */
function writeCodePoints(s: string, k: number): number {
  const out = arena;
  const n = s.length;
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < n) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        out[k++] = ((c - 0xd800) << 10) + (d - 0xdc00) + 0x10000;
        i++;
        continue;
      }
    }
    out[k++] = c;
  }
  return k;
}

/**
 * `toCodePoints` into a scratch arena: no allocation beyond the view. The result is valid until
 * the next `resetScratch()`.
 */
export function scratchCodePoints(s: string): Int32Array {
  reserve(s.length);
  const base = arenaTop;
  arenaTop = writeCodePoints(s, base);
  return arena.subarray(base, arenaTop);
}

/** The code points of `tokens.join(" ")`, in the scratch arena (see `scratchCodePoints`). */
export function scratchJoin(tokens: readonly string[]): Int32Array {
  let n = tokens.length;
  for (const t of tokens) n += t.length;
  reserve(n);
  const base = arenaTop;
  let k = base;
  for (let i = 0; i < tokens.length; i++) {
    if (i > 0) arena[k++] = 32;
    k = writeCodePoints(tokens[i] as string, k);
  }
  arenaTop = k;
  return arena.subarray(base, k);
}

/** Number of code points in a JS string. */
export function codePointLength(s: string): number {
  let n = s.length;
  for (let i = 0; i < s.length - 1; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        n--;
        i++;
      }
    }
  }
  return n;
}

function popcount32(x: number): number {
  let v = x - ((x >>> 1) & 0x55555555);
  v = (v & 0x33333333) + ((v >>> 2) & 0x33333333);
  return (((v + (v >>> 4)) & 0x0f0f0f0f) * 0x01010101) >>> 24;
}

/** Distinct symbols above U+00FF a pooled pattern table has rows for; more take a fresh table. */
const EXT_ROWS = 64;

/**
 * Match bit-vectors of a pattern: for symbol c, bit i of its row is set when pattern[i] === c.
 * Rows 0..255 are the Latin-1 symbols, then one row per other distinct symbol, then a zero row.
 * Patterns are pooled (per word count): `Pattern.acquire` … `release()`, so that the hot path
 * allocates no tables; release clears only the rows the pattern set.
 */
export class Pattern {
  len = 0;
  readonly words: number;
  table: Int32Array;
  private readonly ext = new Map<number, number>();
  private zeroRow: number;
  private cps: Int32Array = new Int32Array(0);
  private start = 0;

  private static readonly pools: Pattern[][] = [];

  private constructor(words: number) {
    this.words = words;
    this.table = new Int32Array((256 + EXT_ROWS + 1) * words);
    this.zeroRow = (256 + EXT_ROWS) * words;
  }

  /** Pattern over `cps[start..end)`, read backwards when `reverse` (bit 0 = cps[end-1]). */
  static acquire(cps: Int32Array, start = 0, end = cps.length, reverse = false): Pattern {
    const len = end - start;
    const words = Math.max(1, (len + 31) >>> 5);
    let pool = Pattern.pools[words];
    if (pool === undefined) {
      pool = [];
      Pattern.pools[words] = pool;
    }
    const p = pool.pop() ?? new Pattern(words);
    p.fill(cps, start, end, reverse);
    return p;
  }

  private fill(cps: Int32Array, start: number, end: number, reverse: boolean): void {
    const words = this.words;
    const len = end - start;
    this.len = len;
    this.cps = cps;
    this.start = start;
    const ext = this.ext;
    for (let i = start; i < end; i++) {
      const c = cps[i] as number;
      if (c >= 256 && !ext.has(c)) ext.set(c, 256 + ext.size);
    }
    if (ext.size > EXT_ROWS) {
      this.table = new Int32Array((256 + ext.size + 1) * words);
      this.zeroRow = (256 + ext.size) * words;
    }
    const table = this.table;
    for (let k = 0; k < len; k++) {
      const c = cps[reverse ? end - 1 - k : start + k] as number;
      const row = c < 256 ? c : (ext.get(c) as number);
      table[row * words + (k >>> 5)] |= 1 << (k & 31);
    }
  }

  /** Clears the rows this pattern set and returns it to the pool. */
  release(): void {
    const words = this.words;
    const table = this.table;
    const cps = this.cps;
    for (let i = this.start; i < this.start + this.len; i++) {
      const c = cps[i] as number;
      if (c < 256) for (let w = c * words; w < c * words + words; w++) table[w] = 0;
    }
    if (this.ext.size > 0) {
      for (const row of this.ext.values()) for (let w = row * words; w < row * words + words; w++) table[w] = 0;
    }
    if (this.ext.size > EXT_ROWS) {
      this.table = new Int32Array((256 + EXT_ROWS + 1) * words);
      this.zeroRow = (256 + EXT_ROWS) * words;
    }
    this.ext.clear();
    (Pattern.pools[words] as Pattern[]).push(this);
  }

  /** Offset of the row for symbol c in `table`. */
  row(c: number): number {
    if (c < 256) return c * this.words;
    const r = this.ext.get(c);
    return r === undefined ? this.zeroRow : r * this.words;
  }

  has(c: number): boolean {
    const off = this.row(c);
    for (let w = 0; w < this.words; w++) if (this.table[off + w] !== 0) return true;
    return false;
  }
}

let scratch = new Int32Array(64);

function lastWordMask(len: number): number {
  const r = len & 31;
  return r === 0 ? -1 : (1 << r) - 1;
}

/**
 * LCS length of the pattern and text[from], text[from+step], … (count symbols). When `out` is
 * given, out[k] receives the LCS after k+1 symbols.
 */
export function lcsScan(
  p: Pattern,
  text: Int32Array,
  from: number,
  step: 1 | -1,
  count: number,
  out?: Int32Array,
): number {
  if (p.len === 0) {
    if (out) out.fill(0, 0, count);
    return 0;
  }
  if (out !== undefined) return lcsScanRecord(p, text, from, step, count, out);
  const table = p.table;
  const words = p.words;
  const mask = lastWordMask(p.len);
  let pos = from;
  if (words === 1) {
    let s = -1;
    for (let k = 0; k < count; k++, pos += step) {
      const c = text[pos] as number;
      const m = table[c < 256 ? c : p.row(c)] as number;
      s = ((s >>> 0) + ((s & m) >>> 0)) | (s & ~m);
    }
    return popcount32(~s & mask);
  }
  if (words === 2) {
    let s0 = -1;
    let s1 = -1;
    for (let k = 0; k < count; k++, pos += step) {
      const c = text[pos] as number;
      const off = c < 256 ? c << 1 : p.row(c);
      const m0 = table[off] as number;
      const m1 = table[off + 1] as number;
      const sum0 = (s0 >>> 0) + ((s0 & m0) >>> 0);
      s0 = sum0 | (s0 & ~m0);
      const carry = sum0 > 0xffffffff ? 1 : 0;
      s1 = ((s1 >>> 0) + ((s1 & m1) >>> 0) + carry) | (s1 & ~m1);
    }
    return popcount32(~s0) + popcount32(~s1 & mask);
  }
  if (scratch.length < words) scratch = new Int32Array(words * 2);
  const s = scratch;
  s.fill(-1, 0, words);
  for (let k = 0; k < count; k++, pos += step) {
    const c = text[pos] as number;
    const off = c < 256 ? c * words : p.row(c);
    let carry = 0;
    for (let w = 0; w < words; w++) {
      const sw = s[w] as number;
      const m = table[off + w] as number;
      const sum = (sw >>> 0) + ((sw & m) >>> 0) + carry;
      carry = sum > 0xffffffff ? 1 : 0;
      s[w] = sum | (sw & ~m);
    }
  }
  return countZeros(s, words, mask);
}

function lcsScanRecord(
  p: Pattern,
  text: Int32Array,
  from: number,
  step: 1 | -1,
  count: number,
  out: Int32Array,
): number {
  const table = p.table;
  const words = p.words;
  const mask = lastWordMask(p.len);
  let pos = from;
  if (words === 1) {
    let s = -1;
    for (let k = 0; k < count; k++, pos += step) {
      const c = text[pos] as number;
      const m = table[c < 256 ? c : p.row(c)] as number;
      s = ((s >>> 0) + ((s & m) >>> 0)) | (s & ~m);
      out[k] = popcount32(~s & mask);
    }
    return popcount32(~s & mask);
  }
  if (scratch.length < words) scratch = new Int32Array(words * 2);
  const s = scratch;
  s.fill(-1, 0, words);
  for (let k = 0; k < count; k++, pos += step) {
    const c = text[pos] as number;
    const off = c < 256 ? c * words : p.row(c);
    let carry = 0;
    for (let w = 0; w < words; w++) {
      const sw = s[w] as number;
      const m = table[off + w] as number;
      const sum = (sw >>> 0) + ((sw & m) >>> 0) + carry;
      carry = sum > 0xffffffff ? 1 : 0;
      s[w] = sum | (sw & ~m);
    }
    out[k] = countZeros(s, words, mask);
  }
  return countZeros(s, words, mask);
}

function countZeros(s: Int32Array, words: number, mask: number): number {
  let n = 0;
  for (let w = 0; w < words - 1; w++) n += popcount32(~(s[w] as number));
  return n + popcount32(~(s[words - 1] as number) & mask);
}

/** LCS length of two code-point sequences (a common prefix and suffix are matched directly). */
export function lcsLength(a: Int32Array, b: Int32Array): number {
  const [short, long] = a.length <= b.length ? [a, b] : [b, a];
  const ls = short.length;
  const ll = long.length;
  let pre = 0;
  while (pre < ls && short[pre] === long[pre]) pre++;
  let suf = 0;
  while (suf < ls - pre && short[ls - 1 - suf] === long[ll - 1 - suf]) suf++;
  if (pre + suf === ls) return ls;
  const p = Pattern.acquire(short, pre, ls - suf);
  const n = lcsScan(p, long, pre, 1, ll - suf - pre);
  p.release();
  return pre + suf + n;
}

/** Indel distance: insertions + deletions turning a into b. */
export function indelDistance(a: Int32Array, b: Int32Array): number {
  return a.length + b.length - 2 * lcsLength(a, b);
}

/** rapidfuzz `fuzz.ratio`: 100 · normalized Indel similarity (100 for two empty sequences). */
export function ratio(a: Int32Array, b: Int32Array): number {
  const lensum = a.length + b.length;
  if (lensum === 0) return 100;
  return (1 - indelDistance(a, b) / lensum) * 100;
}
