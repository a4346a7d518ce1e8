/**
 * RFC 8785 (JCS) canonical JSON: the byte string every hash and signature of the ledger is computed over.
 * Backed by the `canonicalize` npm package (erdtman/canonicalize; see ledger/README.md for why), wrapped so
 * that values JSON cannot represent are an error instead of silently vanishing.
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
