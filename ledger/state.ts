/**
 * The ledger's in-memory state and its ingest decision, with no I/O: per job, the accepted chain, its Merkle
 * log, the job key, and events that arrived early (out of order). `ingest` is deterministic given the order of
 * its inputs, so replaying the stream rebuilds the same state after a restart.
 *
 * Outcomes: accepted (appended; may also release buffered successors), buffered (seq ahead of the chain),
 * duplicate (the same event again: ignored), rejected (counted, with a reason).
 */
import type { LedgerEvent, SignedTreeHead } from "../proto/ledger-events.js";
import { jobOfSubject } from "../proto/ledger-events.js";
import {
  checkLink,
  checkSignature,
  decodeEventBytes,
  type EncodedEvent,
  encodeDecoded,
  SignatureWindow,
} from "./chain.js";
import { MerkleLog } from "./merkle.js";
import { sharedVerifyPool } from "./verify-pool.js";

const EMPTY = Buffer.alloc(0);

export interface JobLog {
  job: string;
  /** The job signing key (raw base64) from its job.started (checked against the registry when one is set). */
  key: string;
  events: LedgerEvent[];
  hashes: string[];
  log: MerkleLog;
  /** Verified events ahead of the chain, by seq. */
  pending: Map<number, EncodedEvent>;
  /** Latest signed tree head. */
  head: SignedTreeHead | null;
}

export type IngestOutcome =
  | { status: "accepted"; job: string; seq: number }
  | { status: "buffered"; job: string; seq: number }
  | { status: "duplicate"; job: string; seq: number }
  | { status: "rejected"; job: string | null; seq: number | null; reason: string; code: RejectCode };

export type RejectCode = "malformed" | "schema" | "subject" | "key" | "signature" | "chain" | "conflict" | "overflow";

/** Work on an event that needs no ledger state (parse, schema, encoding, signature) — can run ahead in bulk. */
export interface PreparedIngest {
  subject: string;
  enc: EncodedEvent | null;
  error: { code: RejectCode; reason: string } | null;
  /** Signature validity under `sigKey`, when checked ahead. */
  sigKey?: string;
  sigValid?: boolean;
}

export interface LedgerStateOptions {
  /** Registered job keys: job ("ns/name") or namespace wildcard ("ns/*") → raw base64 public key. */
  keyRegistry?: (job: string) => string | undefined;
  /**
   * Only a registered key may start a job: a job.started of a job with no registered key is rejected (so no
   * first event can claim a job). The ledger service sets it with its RFT_JOB_KEYS registry.
   */
  requireRegisteredKey?: boolean;
  /** Most early events kept per job before the chain catches up (default 100,000). */
  maxPending?: number;
}

export class LedgerState {
  readonly jobs = new Map<string, JobLog>();
  /** Events of jobs whose job.started has not arrived yet (signature unchecked until it does). */
  private readonly orphans = new Map<string, Map<number, EncodedEvent[]>>();
  private readonly maxPending: number;

  constructor(private readonly opts: LedgerStateOptions = {}) {
    this.maxPending = opts.maxPending ?? 100_000;
  }

  /** The key an event of `job` must be signed with, if known now (for checking signatures ahead). */
  keyFor(enc: EncodedEvent): string | undefined {
    const j = this.jobs.get(enc.event.job);
    if (j) return j.key;
    if (enc.event.type === "job.started") return enc.event.body.signer.publicKey;
    return undefined;
  }

  ingest(p: PreparedIngest): IngestOutcome[] {
    if (p.error || !p.enc) return [{ status: "rejected", job: jobOfSubject(p.subject), seq: null, ...p.error! }];
    const enc = p.enc;
    const ev = enc.event;
    if (jobOfSubject(p.subject) !== ev.job) {
      return [reject(enc, "subject", `event of job ${ev.job} published on subject ${p.subject}`)];
    }
    const j = this.jobs.get(ev.job);
    if (!j) return this.ingestNewJob(enc, p);
    return this.ingestInto(j, enc, p);
  }

  private ingestNewJob(enc: EncodedEvent, p: PreparedIngest): IngestOutcome[] {
    const ev = enc.event;
    if (ev.type !== "job.started" || ev.seq !== 0) {
      if (ev.type === "job.started") return [reject(enc, "chain", `job.started with seq ${ev.seq} (must be 0)`)];
      // Early event of a job we have not seen start: hold it (unverified) until job.started arrives.
      let m = this.orphans.get(ev.job);
      if (!m) {
        m = new Map();
        this.orphans.set(ev.job, m);
      }
      const list = m.get(ev.seq) ?? [];
      if (list.some((x) => x.hash === enc.hash)) return [{ status: "duplicate", job: ev.job, seq: ev.seq }];
      if (m.size >= this.maxPending) return [reject(enc, "overflow", "too many events before job.started")];
      list.push(enc);
      m.set(ev.seq, list);
      return [{ status: "buffered", job: ev.job, seq: ev.seq }];
    }
    const declared = ev.body.signer.publicKey;
    const registered = this.opts.keyRegistry?.(ev.job);
    if (registered === undefined && this.opts.requireRegisteredKey) {
      return [reject(enc, "key", `no key is registered for job ${ev.job}: a first event cannot claim a job`)];
    }
    if (registered !== undefined && registered !== declared) {
      return [reject(enc, "key", "job.started declares a signing key that is not the job's registered key")];
    }
    const sigErr = checkSignature(enc, declared, p.sigKey === declared ? p.sigValid : undefined);
    if (sigErr) return [reject(enc, "signature", `${sigErr.field}: ${sigErr.reason}`)];
    const j: JobLog = {
      job: ev.job,
      key: declared,
      events: [],
      hashes: [],
      log: new MerkleLog(),
      pending: new Map(),
      head: null,
    };
    this.jobs.set(ev.job, j);
    const out: IngestOutcome[] = [this.append(j, enc)];
    // Release early events, now that the key is known.
    const early = this.orphans.get(ev.job);
    this.orphans.delete(ev.job);
    if (early) {
      for (const [, list] of [...early.entries()].sort((a, b) => a[0] - b[0])) {
        for (const e of list) out.push(...this.ingestInto(j, e, { subject: p.subject, enc: e, error: null }));
      }
    }
    return out;
  }

  private ingestInto(j: JobLog, enc: EncodedEvent, p: PreparedIngest): IngestOutcome[] {
    const ev = enc.event;
    const next = j.events.length;
    if (ev.seq < next) {
      if (j.hashes[ev.seq] === enc.hash) return [{ status: "duplicate", job: ev.job, seq: ev.seq }];
      return [reject(enc, "conflict", `conflicts with the accepted event seq ${ev.seq} (a second history)`)];
    }
    const sigErr = checkSignature(enc, j.key, p.sigKey === j.key ? p.sigValid : undefined);
    if (sigErr) return [reject(enc, "signature", `${sigErr.field}: ${sigErr.reason}`)];
    if (ev.type === "job.started") return [reject(enc, "chain", "a second job.started")];
    if (ev.seq > next) {
      const held = j.pending.get(ev.seq);
      if (held) {
        if (held.hash === enc.hash) return [{ status: "duplicate", job: ev.job, seq: ev.seq }];
        return [reject(enc, "conflict", `two different signed events for seq ${ev.seq}`)];
      }
      if (j.pending.size >= this.maxPending) return [reject(enc, "overflow", `too many events ahead of seq ${next}`)];
      j.pending.set(ev.seq, enc);
      return [{ status: "buffered", job: ev.job, seq: ev.seq }];
    }
    const linkErr = checkLink({ seq: next - 1, hash: j.hashes[next - 1]!, job: j.job }, enc);
    if (linkErr) return [reject(enc, "chain", `${linkErr.field}: ${linkErr.reason}`)];
    const out: IngestOutcome[] = [this.append(j, enc)];
    // Successors that were waiting.
    for (;;) {
      const n = j.pending.get(j.events.length);
      if (!n) break;
      j.pending.delete(j.events.length);
      const l = checkLink({ seq: j.events.length - 1, hash: j.hashes[j.events.length - 1]!, job: j.job }, n);
      if (l) {
        out.push(reject(n, "chain", `${l.field}: ${l.reason}`));
        break;
      }
      out.push(this.append(j, n));
    }
    return out;
  }

  private append(j: JobLog, enc: EncodedEvent): IngestOutcome {
    j.events.push(enc.event);
    j.hashes.push(enc.hash);
    if (enc.leaf) j.log.appendLeafHash(enc.leaf);
    else j.log.appendData(enc.bytes);
    return { status: "accepted", job: j.job, seq: enc.event.seq };
  }
}

function reject(enc: EncodedEvent, code: RejectCode, reason: string): IngestOutcome {
  return { status: "rejected", job: enc.event.job, seq: enc.event.seq, code, reason };
}

/**
 * Prepares a batch: parse, schema and canonical form here; hashes and the signatures it can check (keys come from
 * the state, or from a job.started earlier in the same batch) on the VerifyPool's worker threads, in parallel;
 * then the batch is ingested in order. Events arrive as their canonical bytes, which are hashed and verified as
 * received (decodeEventBytes).
 */
export async function prepareBatch(
  state: LedgerState,
  batch: { subject: string; data: Uint8Array }[],
): Promise<PreparedIngest[]> {
  const pool = sharedVerifyPool();
  const window = pool ? null : new SignatureWindow();
  const starters = new Map<string, string>();
  const prepared: PreparedIngest[] = [];
  for (const m of batch) {
    const d = decodeEventBytes(m.data);
    if (!d.ok) {
      prepared.push({ subject: m.subject, enc: null, error: { code: d.code, reason: d.reason } });
      continue;
    }
    const ev = d.event;
    const key =
      state.jobs.get(ev.job)?.key ??
      starters.get(ev.job) ??
      (ev.type === "job.started" ? ev.body.signer.publicKey : undefined);
    if (ev.type === "job.started" && !state.jobs.has(ev.job) && !starters.has(ev.job))
      starters.set(ev.job, ev.body.signer.publicKey);
    const p: PreparedIngest = { subject: m.subject, enc: null, error: null };
    prepared.push(p);
    if (!pool || key === undefined) {
      const enc = encodeDecoded(d);
      p.enc = enc;
      if (key === undefined) continue;
      p.sigKey = key;
      const wait = window!.add(enc, key, (ok) => {
        p.sigValid = ok;
      });
      if (wait) await wait;
      continue;
    }
    // Hash, leaf hash and signature on a worker. The bytes stay here in case the event is verified again later
    // under another key (an early event released when its job.started arrives): its signing bytes are cut out
    // of them then.
    const enc: EncodedEvent = { event: ev, bytes: d.bytes, signing: EMPTY, hash: "sha256:" };
    p.enc = enc;
    p.sigKey = key;
    const wait = pool.submit(d.bytes, d.sig.at, d.sig.len, key, (hash, leaf, valid) => {
      enc.hash = `sha256:${hash.toString("hex")}`;
      enc.leaf = leaf;
      p.sigValid = valid;
    });
    if (wait) await wait;
  }
  await (pool ? pool.drain() : window!.drain());
  return prepared;
}
