/**
 * The provenance bundle: everything an auditor needs to check a job offline, and no training data.
 * Built from a job's events (every field besides `events` and `treeHead` is derived from them, and
 * `verifyBundle` re-derives and compares each one). Format: ledger/README.md.
 */
import type { KeyObject } from "node:crypto";
import type { LedgerEvent, SignedTreeHead } from "../proto/ledger-events.js";
import { encodeEvent } from "./chain.js";
import { MerkleLog } from "./merkle.js";
import { keyIdOfRaw, publicKeyB64 } from "./sign.js";
import { signTreeHead } from "./tree-head.js";

export const BUNDLE_FORMAT = "rft-provenance-bundle/1";

export interface ManifestRow {
  id: string;
  hash: string;
  authority: string | null;
  decision: "admitted" | "rejected";
  /** Admitted: the parameter groups the row may reach. */
  groups?: string[];
  /** Rejected: the code and reason. */
  code?: string;
  reason?: string;
  /** seq of the row event that decided it. */
  seq: number;
}

export interface ProvenanceBundle {
  format: typeof BUNDLE_FORMAT;
  job: string;
  specDigest: string | null;
  keys: { job: { publicKey: string; keyId: string } | null; ledger: { publicKey: string; keyId: string } };
  model: { numLayers: number | null; base: Record<string, string> | null; final: Record<string, string> | null };
  manifest: { root: string | null; rows: ManifestRow[] };
  events: LedgerEvent[];
  /** RFC 6962 root (hex) over the events' canonical JSON, in seq order. */
  merkleRoot: string;
  treeHead: SignedTreeHead;
}

/** The manifest as the row events state it. */
export function manifestFromEvents(events: readonly LedgerEvent[]): ManifestRow[] {
  const rows: ManifestRow[] = [];
  for (const ev of events) {
    if (ev.type === "row.admitted") {
      const b = ev.body;
      rows.push({
        id: b.row,
        hash: b.hash,
        authority: b.authority,
        decision: "admitted",
        groups: b.groups,
        seq: ev.seq,
      });
    } else if (ev.type === "row.rejected") {
      const b = ev.body;
      rows.push({
        id: b.row,
        hash: b.hash,
        authority: b.authority,
        decision: "rejected",
        code: b.code,
        reason: b.reason,
        seq: ev.seq,
      });
    }
  }
  return rows;
}

/**
 * Assembles a bundle from a job's events (seq order) and a signed tree head covering exactly those events.
 * `ledgerPublicKey` is the raw base64 key that signed the head.
 */
export function assembleBundle(
  events: LedgerEvent[],
  treeHead: SignedTreeHead,
  ledgerPublicKey: string,
  /** The Merkle root (hex) over `events`, when the caller has it (computed here otherwise). */
  merkleRoot?: string,
): ProvenanceBundle {
  const started = events.find((e) => e.type === "job.started");
  // The final model is that of the last job.finished, unless a job.resumed reopened the job after it.
  const last = events.findLast((e) => e.type === "job.finished" || e.type === "job.resumed");
  const finished = last?.type === "job.finished" ? last : undefined;
  const s = started?.type === "job.started" ? started.body : null;
  return {
    format: BUNDLE_FORMAT,
    job: treeHead.log,
    specDigest: s?.specDigest ?? null,
    keys: {
      job: s ? { publicKey: s.signer.publicKey, keyId: keyIdOfRaw(Buffer.from(s.signer.publicKey, "base64")) } : null,
      ledger: { publicKey: ledgerPublicKey, keyId: keyIdOfRaw(Buffer.from(ledgerPublicKey, "base64")) },
    },
    model: {
      numLayers: s?.model.numLayers ?? null,
      base: s?.model.groups ?? null,
      final: finished?.type === "job.finished" ? finished.body.model : null,
    },
    manifest: { root: s?.dataset.manifestRoot ?? null, rows: manifestFromEvents(events) },
    events,
    merkleRoot: merkleRoot ?? merkleLogOf(events).root().toString("hex"),
    treeHead,
  };
}

/** Builds a bundle and signs a fresh tree head over all `events` with `ledgerKey` (local export). */
export function exportBundle(events: LedgerEvent[], ledgerKey: KeyObject, now = Date.now()): ProvenanceBundle {
  const job = events[0]?.job;
  if (!job) throw new Error("no events to export");
  const root = merkleLogOf(events).root();
  const head = signTreeHead({ log: job, size: events.length, root, timestamp: now }, ledgerKey);
  return assembleBundle(events, head, publicKeyB64(ledgerKey), root.toString("hex"));
}

function merkleLogOf(events: readonly LedgerEvent[]): MerkleLog {
  const log = new MerkleLog();
  for (const ev of events) log.appendData(encodeEvent(ev).bytes);
  return log;
}
