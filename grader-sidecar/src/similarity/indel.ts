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

/**
 * Match bit-vectors of a pattern: for symbol c, bit i of its row is set when pattern[i] === c.
 * Rows 0..255 are the Latin-1 symbols, then one row per other distinct symbol, then a zero row.
 */
export class Pattern {
  readonly len: number;
  readonly words: number;
  readonly table: Int32Array;
  private readonly ext: Map<number, number> | null;
  private readonly zeroRow: number;

  /** Pattern over `cps[start..end)`, read backwards when `reverse` (bit 0 = cps[end-1]). */
  constructor(cps: Int32Array, start = 0, end = cps.length, reverse = false) {
    const len = end - start;
    this.len = len;
    const words = Math.max(1, (len + 31) >>> 5);
    this.words = words;
    let ext: Map<number, number> | null = null;
    for (let i = start; i < end; i++) {
      const c = cps[i] as number;
      if (c >= 256) {
        if (ext === null) ext = new Map();
        if (!ext.has(c)) ext.set(c, 256 + ext.size);
      }
    }
    this.ext = ext;
    const rows = 256 + (ext === null ? 0 : ext.size);
    this.zeroRow = rows * words;
    const table = new Int32Array((rows + 1) * words);
    for (let k = 0; k < len; k++) {
      const c = cps[reverse ? end - 1 - k : start + k] as number;
      const row = c < 256 ? c : ((ext as Map<number, number>).get(c) as number);
      table[row * words + (k >>> 5)] |= 1 << (k & 31);
    }
    this.table = table;
  }

  /** Offset of the row for symbol c in `table`. */
  row(c: number): number {
    if (c < 256) return c * this.words;
    if (this.ext === null) return this.zeroRow;
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
  const table = p.table;
  if (p.len === 0) {
    if (out) out.fill(0, 0, count);
    return 0;
  }
  const words = p.words;
  if (words === 1) {
    const mask = lastWordMask(p.len);
    let s = -1;
    let pos = from;
    for (let k = 0; k < count; k++, pos += step) {
      const m = table[p.row(text[pos] as number)] as number;
      const u = s & m;
      s = ((s >>> 0) + (u >>> 0)) | (s & ~m);
      if (out) out[k] = popcount32(~s & mask);
    }
    return popcount32(~s & mask);
  }
  if (scratch.length < words) scratch = new Int32Array(words * 2);
  const s = scratch;
  s.fill(-1, 0, words);
  const mask = lastWordMask(p.len);
  let pos = from;
  for (let k = 0; k < count; k++, pos += step) {
    const off = p.row(text[pos] as number);
    let carry = 0;
    for (let w = 0; w < words; w++) {
      const sw = s[w] as number;
      const m = table[off + w] as number;
      const sum = (sw >>> 0) + ((sw & m) >>> 0) + carry;
      carry = sum > 0xffffffff ? 1 : 0;
      s[w] = sum | (sw & ~m);
    }
    if (out) out[k] = countZeros(s, words, mask);
  }
  return countZeros(s, words, mask);
}

function countZeros(s: Int32Array, words: number, mask: number): number {
  let n = 0;
  for (let w = 0; w < words - 1; w++) n += popcount32(~(s[w] as number));
  return n + popcount32(~(s[words - 1] as number) & mask);
}

/** LCS length of two code-point sequences. */
export function lcsLength(a: Int32Array, b: Int32Array): number {
  if (a.length === 0 || b.length === 0) return 0;
  const [short, long] = a.length <= b.length ? [a, b] : [b, a];
  return lcsScan(new Pattern(short), long, 0, 1, long.length);
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
