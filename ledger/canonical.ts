/**
 * RFC 8785 (JCS) canonical JSON: the byte string every hash and signature of the ledger is computed over.
 * Backed by the `canonicalize` npm package (erdtman/canonicalize; see ledger/README.md for why), wrapped so
 * that values JSON cannot represent are an error instead of silently vanishing.
 *
 * The fast path (`fastCanonicalJson`, `isCanonicalText`) is JSON.stringify plus a walk proving that its output
 * IS what `canonicalize` would write; when it cannot prove that, it defers to `canonicalize` (the reference).
 */
import canonicalize from "canonicalize";

/** Canonical JSON text of `value`. Throws on NaN/±Infinity, lone surrogates, cycles, or a top-level undefined. */
export function canonicalJson(value: unknown): string {
  const s = canonicalize(value);
  if (s === undefined) throw new TypeError("canonicalJson: value has no JSON representation");
  return s;
}

/** UTF-8 bytes of the canonical JSON of `value`. */
export function canonicalBytes(value: unknown): Buffer {
  return Buffer.from(canonicalJson(value), "utf8");
}

/**
 * Whether JSON.stringify writes `v` exactly as RFC 8785 does: every object is a plain object whose keys
 * (Object.keys order, which is JSON.stringify's order) are already in UTF-16 code-unit order, and every number
 * is finite. JCS is JSON.stringify's number and string serialization with sorted keys, so then the two agree
 * (lone surrogates aside: see fastCanonicalJson). Integer-like keys ("9", "10"), which JS enumerates first in
 * numeric order, pass only where that order is also the sorted one; otherwise this says no.
 */
function stringifyIsCanonical(v: unknown, depth: number): boolean {
  if (typeof v !== "object") return primitiveOk(v);
  if (v === null) return true;
  if (depth > 64) return false; // deep nesting (or a cycle): leave it to the reference
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) {
      const x: unknown = v[i];
      if (typeof x === "object" ? !stringifyIsCanonical(x, depth + 1) : !primitiveOk(x)) return false;
    }
    return true;
  }
  const proto: unknown = Object.getPrototypeOf(v);
  if (proto !== Object.prototype && proto !== null) return false; // toJSON, Map, Date, …: the reference decides
  let prev: string | undefined;
  // for-in (no key array allocated): own keys in Object.keys order, then any inherited enumerable ones, which
  // can only make the check stricter.
  for (const k in v) {
    if (prev !== undefined && !(prev < k)) return false;
    prev = k;
    const x = (v as Record<string, unknown>)[k];
    if (typeof x === "object" ? !stringifyIsCanonical(x, depth + 1) : !primitiveOk(x)) return false;
  }
  return true;
}
/** Strings, booleans, finite numbers and undefined (skipped or null in both); anything else goes to the reference. */
function primitiveOk(x: unknown): boolean {
  const t = typeof x;
  return t === "string" || t === "boolean" || t === "undefined" || (t === "number" && Number.isFinite(x));
}

/**
 * The canonical JSON of `value` when JSON.stringify provably writes it (keys already sorted, numbers finite,
 * no lone surrogates), else undefined. Values that JSON.parse produced from canonical text always qualify.
 */
export function fastCanonicalJson(value: unknown): string | undefined {
  if (!stringifyIsCanonical(value, 0)) return undefined;
  const s = JSON.stringify(value) as string | undefined;
  // JSON.stringify escapes a lone surrogate (as \ud800–\udfff) where canonicalize throws; it writes no other
  // \ud escape.
  // (A false alarm — a literal backslash before "ud" — only costs the slow path.)
  if (s === undefined || s.includes("\\ud")) return undefined;
  return s;
}

/** canonicalJson, taking the fast path when it applies (same result, same errors). */
export function canonicalJsonFast(value: unknown): string {
  return fastCanonicalJson(value) ?? canonicalJson(value);
}

/**
 * True when `text` is exactly the canonical JSON of `value` (typically `value = JSON.parse(text)`): the check
 * that lets a verifier hash and verify the bytes it received instead of re-serializing them. Whitespace, key
 * order, duplicate keys (JSON.parse keeps one), number forms (1.0, 1e2), and escapes (\u0041, \/) all make
 * the re-serialization differ from the text.
 */
export function isCanonicalText(text: string, value: unknown): boolean {
  const fast = fastCanonicalJson(value);
  if (fast !== undefined) return fast === text;
  try {
    return canonicalJson(value) === text;
  } catch {
    return false;
  }
}
