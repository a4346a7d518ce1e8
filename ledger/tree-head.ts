/**
 * Signed tree heads (STH): (log, size, root, timestamp) signed by the ledger key, and the checks an auditor
 * runs on them: signature, and that a newer head extends an older one (no rollback, no replay, no fork).
 */
import type { KeyObject } from "node:crypto";
import { TypeCompiler } from "@sinclair/typebox/compiler";
import { SignedTreeHead } from "../proto/ledger-events.js";
import { canonicalBytes } from "./canonical.js";
import { consistencyError } from "./merkle.js";
import {
  isCanonicalPublicKey,
  keyId as keyIdOf,
  keyIdOfRaw,
  publicKeyFromB64,
  signBytes,
  verifyBytes,
} from "./sign.js";

export type { SignedTreeHead } from "../proto/ledger-events.js";

const HeadCheck = TypeCompiler.Compile(SignedTreeHead);

export function signTreeHead(
  head: { log: string; size: number; root: Buffer | string; timestamp: number },
  privateKey: KeyObject,
): SignedTreeHead {
  const unsigned = {
    v: 1 as const,
    log: head.log,
    size: head.size,
    root: typeof head.root === "string" ? head.root : head.root.toString("hex"),
    timestamp: head.timestamp,
    keyId: keyIdOf(privateKey),
  };
  return { ...unsigned, sig: signBytes(privateKey, canonicalBytes(unsigned)) };
}

/** Why a head does not verify under the ledger's public key (raw base64), or null. */
export function treeHeadError(head: unknown, ledgerPublicKeyB64: string): string | null {
  if (!HeadCheck.Check(head)) {
    const e = HeadCheck.Errors(head).First();
    return `tree head is malformed: ${e ? `${e.path || "/"} ${e.message}` : "invalid"}`;
  }
  if (!isCanonicalPublicKey(ledgerPublicKeyB64))
    return "the ledger key is not the canonical base64 of a 32-byte Ed25519 public key";
  const expected = keyIdOfRaw(Buffer.from(ledgerPublicKeyB64, "base64"));
  if (head.keyId !== expected)
    return `tree head signed by key ${head.keyId.slice(0, 12)}…, not the ledger key ${expected.slice(0, 12)}…`;
  const { sig, ...unsigned } = head;
  if (!verifyBytes(publicKeyFromB64(ledgerPublicKeyB64), canonicalBytes(unsigned), sig)) {
    return "tree head signature does not verify";
  }
  return null;
}

/**
 * Why `newer` cannot succeed `older` (both already signature-checked), or null. A head that is smaller or older
 * than one already seen is a rollback or a replay; equal sizes need equal roots; a larger size needs a valid
 * consistency proof (hex or raw hashes) from the older root to the newer one.
 */
export function headProgressionError(
  older: SignedTreeHead,
  newer: SignedTreeHead,
  proof?: readonly (string | Uint8Array)[],
): string | null {
  if (newer.log !== older.log) return `tree head is for log ${newer.log}, not ${older.log}`;
  if (newer.size < older.size) {
    return `rollback: tree head size ${newer.size} is smaller than the already-seen size ${older.size}`;
  }
  if (newer.timestamp < older.timestamp) {
    return `replay: tree head timestamp ${new Date(newer.timestamp).toISOString()} is older than the already-seen ${new Date(older.timestamp).toISOString()}`;
  }
  if (newer.size === older.size) {
    return newer.root === older.root ? null : `fork: two different roots for size ${newer.size}`;
  }
  if (!proof) return `no consistency proof from size ${older.size} to ${newer.size}`;
  const p = proof.map((x) => (typeof x === "string" ? Buffer.from(x, "hex") : x));
  const err = consistencyError(
    older.size,
    newer.size,
    p,
    Buffer.from(older.root, "hex"),
    Buffer.from(newer.root, "hex"),
  );
  return err === null ? null : `inconsistent tree heads ${older.size} → ${newer.size}: ${err}`;
}
