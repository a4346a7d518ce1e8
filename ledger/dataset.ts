/**
 * The dataset manifest: what the ledger commits to about the training data without holding it.
 * For each row: its id, the hash of its content, and (from the row events) its authority, envelope and
 * admission decision. Pure.
 *
 *   row hash      = "sha256:" + hex SHA-256(canonical JSON of the row without its `provenance` key)
 *   row id        = the row's `id` when it is a non-empty string, else "#<index>" (0-based line index)
 *   credential    = base64 Ed25519 signature by the authority over the 32 raw bytes of the row hash
 *   manifest root = RFC 6962 Merkle root (hex) over canonical JSON {"hash":…,"id":…} of every row, in order
 */
import type { KeyObject } from "node:crypto";
import { canonicalBytes } from "./canonical.js";
import { leafHash, treeHash } from "./merkle.js";
import { type DigestString, digestBytes, digestOfJson, publicKeyFromB64, signBytes, verifyBytes } from "./sign.js";

export type DatasetRow = Record<string, unknown>;

export function rowContentHash(row: DatasetRow): DigestString {
  const { provenance: _p, ...content } = row;
  return digestOfJson(content);
}

export function rowId(row: DatasetRow, index: number): string {
  return typeof row.id === "string" && row.id.length > 0 && row.id.length <= 256 ? row.id : `#${index}`;
}

export function manifestRoot(rows: readonly { id: string; hash: string }[]): string {
  return treeHash(rows.map((r) => leafHash(canonicalBytes({ id: r.id, hash: r.hash })))).toString("hex");
}

/** The authority's credential for a row hash. */
export function signRowHash(hash: string, authorityKey: KeyObject): string {
  return signBytes(authorityKey, digestBytes(hash));
}

export function verifyRowCredential(hash: string, credential: string, authorityPublicKeyB64: string): boolean {
  try {
    return verifyBytes(publicKeyFromB64(authorityPublicKeyB64), digestBytes(hash), credential);
  } catch {
    return false;
  }
}

/** A copy of `row` carrying `provenance: {authority, credential}` (what `rft dataset sign` writes). */
export function signRow(row: DatasetRow, authority: string, authorityKey: KeyObject): DatasetRow {
  return { ...row, provenance: { authority, credential: signRowHash(rowContentHash(row), authorityKey) } };
}
