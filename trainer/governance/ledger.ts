/**
 * The trainer's side of the ledger: the job's signing key, admission of the training rows, and the signed
 * events of the run (job.started, row.admitted / row.rejected, update.applied per step, checkpoint.saved,
 * job.finished), written through the ledger's EventWriter to a local append-only file (`OUT/ledger/events.jsonl`,
 * what `rft audit export OUT` reads) or, in a pod, to NATS JetStream.
 *
 * Every job has a ledger. Without a `governance` section every row is admitted to every group.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { isAbsolute, join, resolve } from "node:path";
import type { KeyObject } from "node:crypto";
import type { FineTuneJobSpec } from "../../proto/finetunejob.js";
import type { EventBodies, LedgerEventType } from "../../proto/ledger-events.js";
import type { ChainHead } from "../../ledger/chain.js";
import { manifestRoot } from "../../ledger/dataset.js";
import { FileSink, readEventsFile } from "../../ledger/publisher.js";
import {
  digestOfJson,
  exportPrivateKeyPem,
  generateKeyPair,
  keyId,
  loadPrivateKey,
  loadPublicKey,
  publicKeyB64,
} from "../../ledger/sign.js";
import { type EventSink, EventWriter } from "../../ledger/writer.js";
import { replaceFileAtomic } from "../checkpoint/store.js";
import { type AdmittedRow, admitRows, type AuthorityKey, defaultEnvelope, type RejectedRow } from "./admission.js";
import type { Digest } from "./digests.js";

export class GovernanceError extends Error {}

type KeyRef = NonNullable<FineTuneJobSpec["governance"]>["signingKey"];

function keyText(ref: NonNullable<KeyRef>, baseDir: string, what: string): string {
  if (ref.inline) return ref.inline;
  if (ref.file) {
    const p = isAbsolute(ref.file) ? ref.file : resolve(baseDir, ref.file);
    if (!existsSync(p)) throw new GovernanceError(`${what}: no such key file ${p}`);
    return readFileSync(p, "utf8");
  }
  if (ref.secretRef) {
    throw new GovernanceError(
      `${what}: secretRef (${ref.secretRef.name}/${ref.secretRef.key}) is resolved by the operator; use file or inline with rft run`,
    );
  }
  throw new GovernanceError(`${what}: set inline, file or secretRef`);
}

/** The declared authorities with their keys loaded (errors name the authority). */
export function loadAuthorities(spec: FineTuneJobSpec, baseDir: string): AuthorityKey[] {
  return (spec.governance?.authorities ?? []).map((a, i) => {
    const what = `spec.governance.authorities[${i}] (${a.name}).publicKey`;
    let key: KeyObject;
    try {
      key = loadPublicKey(keyText(a.publicKey, baseDir, what));
    } catch (err) {
      if (err instanceof GovernanceError) throw err;
      throw new GovernanceError(`${what}: not an Ed25519 public key (${(err as Error).message})`);
    }
    return {
      name: a.name,
      publicKeyB64: publicKeyB64(key),
      keyId: keyId(key),
      lawfulBasis: a.lawfulBasis,
      envelope: a.envelope,
    };
  });
}

/** The job's signing key: the spec's, or one generated once per output directory (kept beside the ledger). */
export function jobSigningKey(spec: FineTuneJobSpec, baseDir: string, ledgerDir: string): KeyObject {
  const ref = spec.governance?.signingKey;
  if (ref) return loadPrivateKey(keyText(ref, baseDir, "spec.governance.signingKey"));
  const file = join(ledgerDir, "job-key.pem");
  if (existsSync(file)) return loadPrivateKey(readFileSync(file, "utf8"));
  mkdirSync(ledgerDir, { recursive: true });
  const { privateKey } = generateKeyPair();
  writeFileSync(file, exportPrivateKeyPem(privateKey), { mode: 0o600 });
  return privateKey;
}

export interface LedgerOptions {
  spec: FineTuneJobSpec;
  /** "<namespace>/<name>". */
  job: string;
  baseDir: string;
  outDir: string;
  numLayers: number;
  /** Raw training rows, in file order. */
  rows: Record<string, unknown>[];
  /** Where events go (default: OUT/ledger/events.jsonl). */
  sink?: EventSink;
}

export class TrainingLedger {
  readonly admitted: AdmittedRow[];
  readonly rejected: RejectedRow[];
  readonly authorities: AuthorityKey[];
  readonly requireCredentials: boolean;
  readonly file: string;
  private writer: EventWriter;
  private readonly key: KeyObject;

  constructor(private readonly o: LedgerOptions) {
    const ledgerDir = join(o.outDir, "ledger");
    mkdirSync(ledgerDir, { recursive: true });
    this.file = join(ledgerDir, "events.jsonl");
    this.authorities = loadAuthorities(o.spec, o.baseDir);
    this.requireCredentials = o.spec.governance?.requireCredentials ?? this.authorities.length > 0;
    const { admitted, rejected } = admitRows(o.rows, {
      authorities: this.authorities,
      requireCredentials: this.requireCredentials,
      numLayers: o.numLayers,
    });
    this.admitted = admitted;
    this.rejected = rejected;
    this.key = jobSigningKey(o.spec, o.baseDir, ledgerDir);
    this.writer = new EventWriter({ job: o.job, privateKey: this.key, sink: o.sink ?? new FileSink(this.file) });
  }

  get publicKey(): string {
    return publicKeyB64(this.key);
  }

  /** The chain position to store in a checkpoint. */
  get head(): ChainHead {
    return this.writer.head;
  }

  /**
   * Continues the chain from a checkpoint. Events after it (steps whose updates no durable model holds) are
   * dropped from the local file: the resumed run re-does those steps.
   */
  resume(head: ChainHead) {
    if (!this.o.sink) {
      const kept = readEventsFile(this.file).filter((e) => e.seq < head.seq);
      replaceFileAtomic(this.file, kept.map((e) => `${JSON.stringify(e)}\n`).join(""));
    }
    this.writer = new EventWriter({
      job: this.o.job,
      privateKey: this.key,
      sink: this.o.sink ?? new FileSink(this.file),
      resume: head,
    });
  }

  private append<K extends LedgerEventType>(type: K, body: EventBodies[K]) {
    return this.writer.append(type, body);
  }

  /** job.started and one row event per training row. */
  started(baseDigests: Record<string, Digest>, worldSize = 1) {
    const rows = [...this.admitted, ...this.rejected].sort((a, b) => a.index - b.index);
    this.append("job.started", {
      specDigest: digestOfJson(this.o.spec),
      signer: { publicKey: this.publicKey },
      model: { numLayers: this.o.numLayers, groups: baseDigests },
      dataset: { rows: rows.length, manifestRoot: manifestRoot(rows.map((r) => ({ id: r.id, hash: r.hash }))) },
      authorities: this.authorities.map((a) => ({
        name: a.name,
        publicKey: a.publicKeyB64,
        keyId: a.keyId,
        lawfulBasis: a.lawfulBasis,
        envelope: a.envelope,
      })),
      requireCredentials: this.requireCredentials,
      ...(this.requireCredentials ? {} : { defaultEnvelope: defaultEnvelope(this.o.numLayers) }),
      worldSize,
    });
    for (const r of rows) {
      if ("code" in r)
        this.append("row.rejected", {
          row: r.id,
          hash: r.hash as Digest,
          authority: r.authority,
          code: r.code,
          reason: r.reason,
        });
      else
        this.append("row.admitted", {
          row: r.id,
          hash: r.hash as Digest,
          authority: r.authority,
          credential: r.credential,
          groups: r.groups,
        });
    }
  }

  updateApplied(body: EventBodies["update.applied"]) {
    return this.append("update.applied", body);
  }

  checkpointSaved(body: EventBodies["checkpoint.saved"]) {
    return this.append("checkpoint.saved", body);
  }

  finished(body: EventBodies["job.finished"]) {
    return this.append("job.finished", body);
  }
}
