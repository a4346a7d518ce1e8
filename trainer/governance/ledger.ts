/**
 * The trainer's side of the ledger: the job's signing key, admission of the training rows, and the signed
 * events of the run (job.started, row.admitted / row.rejected, update.applied per step, checkpoint.saved,
 * job.finished, job.resumed), written through the ledger's EventWriter to a local append-only file
 * (`OUT/ledger/events.jsonl`, what `rft audit export OUT` reads) or, in a pod, to NATS JetStream. The chain is
 * append-only across restarts: a resumed job continues it from its last durable event (resumeFrom).
 *
 * Every job has a ledger. Without a `governance` section every row is admitted to every group.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { isAbsolute, join, resolve } from "node:path";
import type { KeyObject } from "node:crypto";
import type { FineTuneJobSpec } from "../../proto/finetunejob.js";
import type { EventBodies, LedgerEvent, LedgerEventType } from "../../proto/ledger-events.js";
import {
  type ChainHead,
  digestOfJson,
  eventHash,
  type EventSink,
  EventWriter,
  exportPrivateKeyPem,
  FileSink,
  generateKeyPair,
  keyId,
  lastStepOf,
  loadPrivateKey,
  loadPublicKey,
  manifestRoot,
  publicKeyB64,
} from "../../ledger/client.js";
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
  private readonly sink: EventSink;

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
    this.sink = o.sink ?? new FileSink(this.file);
    this.writer = new EventWriter({ job: o.job, privateKey: this.key, sink: this.sink });
  }

  get publicKey(): string {
    return publicKeyB64(this.key);
  }

  /** The chain position to store in a checkpoint. */
  get head(): ChainHead {
    return this.writer.head;
  }

  /** The last event durably written to this job's ledger (null: none), by this process or an earlier one. */
  async lastEvent(): Promise<LedgerEvent | null> {
    if (!this.sink.lastEvent)
      throw new GovernanceError("the ledger sink cannot tell its last event, so the job's chain cannot be continued");
    return this.sink.lastEvent(this.o.job, this.publicKey);
  }

  /** Continues the chain at `head` without writing anything (another writer appended up to it: commitStep). */
  continueAt(head: ChainHead) {
    this.writer = new EventWriter({ job: this.o.job, privateKey: this.key, sink: this.sink, resume: head });
  }

  /**
   * Restarts the job's chain after an attempt that stopped: appends a signed job.resumed after the ledger's last
   * durable event (never rewinding it: the steps the stopped attempt applied after the checkpoint stay in the
   * ledger, listed as abandoned), then the admission decisions the stopped attempt did not get to record.
   * `checkpoint` is the checkpoint the weights were loaded from (null: the base model), with the chain position
   * its state recorded (just after its checkpoint.saved event); `groups` the digests of the weights loaded.
   * Returns "fresh" when the ledger is empty and there is no checkpoint (the caller writes job.started), and
   * "closed" when the ledger ends with a succeeded job.finished (nothing is written).
   */
  async resumeFrom(
    checkpoint: { name: string; step: number; head: ChainHead } | null,
    groups: Record<string, Digest>,
  ): Promise<{ outcome: "fresh" | "closed" | "resumed"; last: LedgerEvent | null; event?: LedgerEvent }> {
    const job = this.o.job;
    const last = await this.lastEvent();
    if (!last) {
      if (checkpoint)
        throw new GovernanceError(
          `checkpoint ${checkpoint.name} was recorded at seq ${checkpoint.head.seq - 1} of the ledger of ${job}, but the ledger holds no events (lost or replaced)`,
        );
      return { outcome: "fresh", last };
    }
    if (checkpoint) {
      const at = checkpoint.head.seq - 1;
      if (checkpoint.head.job !== job)
        throw new GovernanceError(`checkpoint ${checkpoint.name} belongs to the ledger of ${checkpoint.head.job}`);
      if (last.seq < at)
        throw new GovernanceError(
          `the ledger of ${job} ends at seq ${last.seq}, before checkpoint ${checkpoint.name}'s checkpoint.saved (seq ${at}): events were lost`,
        );
      const there = last.seq === at ? last : ((await this.sink.eventAt?.(job, at)) ?? null);
      if (there && eventHash(there) !== checkpoint.head.prev)
        throw new GovernanceError(
          `the ledger's event seq ${at} is not checkpoint ${checkpoint.name}'s checkpoint.saved (another history)`,
        );
    }
    if (last.type === "job.finished" && last.body.status === "succeeded") return { outcome: "closed", last };
    const from = checkpoint?.step ?? 0;
    const abandonedSteps: number[] = [];
    for (let s = from + 1; s <= lastStepOf(last); s++) abandonedSteps.push(s);
    this.continueAt({ job, seq: last.seq + 1, prev: eventHash(last) });
    const event = this.append("job.resumed", {
      checkpoint: checkpoint
        ? { name: checkpoint.name, step: checkpoint.step, seq: checkpoint.head.seq - 1, event: checkpoint.head.prev! }
        : null,
      groups,
      abandonedSteps,
    });
    // Admission cut short by the stop: row events follow job.started in row order (row i at seq i + 1).
    if (last.type === "job.started" || last.type === "row.admitted" || last.type === "row.rejected")
      this.rowEvents(last.seq);
    this.sync();
    return { outcome: "resumed", last, event };
  }

  private append<K extends LedgerEventType>(type: K, body: EventBodies[K]) {
    return this.writer.append(type, body);
  }

  /**
   * Makes every event appended so far durable (the file sink fsyncs). The loop calls it once per step, after
   * the step's events; checkpointSaved, started, resumeFrom and finished call it themselves, so a checkpoint
   * (fsynced itself) never refers to an event that a crash of the machine could lose.
   */
  sync() {
    this.sink.sync?.();
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
    this.rowEvents(0);
    this.sync();
  }

  /** One row.admitted / row.rejected event per training row, in row order, from the `from`-th. */
  private rowEvents(from: number) {
    const rows = [...this.admitted, ...this.rejected].sort((a, b) => a.index - b.index);
    for (const r of rows.slice(from)) {
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
    const ev = this.append("checkpoint.saved", body);
    this.sync();
    return ev;
  }

  finished(body: EventBodies["job.finished"]) {
    const ev = this.append("job.finished", body);
    this.sync();
    return ev;
  }
}

/**
 * Whether the ledger still records a checkpoint whose state holds chain position `head` (just after its
 * checkpoint.saved): the ledger reaches that seq and, where the sink can read it back, the event there is the
 * one the checkpoint recorded. `last` is the ledger's last durable event.
 */
export async function ledgerRecords(
  sink: EventSink,
  last: LedgerEvent | null,
  job: string,
  head: ChainHead | undefined,
): Promise<boolean> {
  if (!last || !head || head.job !== job || head.prev === null) return false;
  const at = head.seq - 1;
  if (last.seq < at) return false;
  const there = last.seq === at ? last : sink.eventAt ? await sink.eventAt(job, at) : undefined;
  if (there === undefined) return true; // a sink without random access: the seq is all that can be checked
  return there !== null && eventHash(there) === head.prev;
}

/** The job's ledger sink and its last durable event, read before the model is loaded (to pick the checkpoint). */
export async function ledgerTail(o: {
  spec: FineTuneJobSpec;
  job: string;
  baseDir: string;
  outDir: string;
  sink?: EventSink;
}): Promise<{ sink: EventSink; last: LedgerEvent | null }> {
  const ledgerDir = join(o.outDir, "ledger");
  const sink = o.sink ?? new FileSink(join(ledgerDir, "events.jsonl"));
  if (!sink.lastEvent) return { sink, last: null };
  const key = jobSigningKey(o.spec, o.baseDir, ledgerDir);
  return { sink, last: await sink.lastEvent(o.job, publicKeyB64(key)) };
}
