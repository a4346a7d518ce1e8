/**
 * The per-job hash chain: each event is the next link after the previous one (seq contiguous from 0, `prev` the
 * previous event's hash, one job, job.started first and once) and is signed by the job's key. Pure.
 *
 * The event codec (encoding, decoding, schema, signing) is event-codec.ts, the signature checks
 * event-signature.ts and the per-event preparation event-preparer.ts; this module re-exports them, so importers
 * keep one path.
 */
import { type EncodedEvent, encodeEvent } from "./event-codec.js";
import { type PreparedEvents, prepareEvents } from "./event-preparer.js";
import { checkSignature, shortHash as short } from "./event-signature.js";

export * from "./event-codec.js";
export * from "./event-preparer.js";
export * from "./event-signature.js";

/** A precise reason why an event does not verify. */
export interface EventFailure {
  /** Position in the list being checked (-1: not about one event). */
  index: number;
  /** The event's seq when it has one. */
  seq: number | null;
  /** JSON path of the offending field, e.g. "sig", "prev", "body.weights.lm_head.before". */
  field: string;
  reason: string;
}

/** Checks that `enc` is the next link after `prev` (null: it must be the first event of the chain). */
export function checkLink(
  prev: { seq: number; hash: string; job: string } | null,
  enc: EncodedEvent,
): { field: string; reason: string } | null {
  const ev = enc.event;
  if (prev === null) {
    if (ev.seq !== 0) return { field: "seq", reason: `chain starts at seq ${ev.seq}, expected 0 (events missing)` };
    if (ev.prev !== null) return { field: "prev", reason: "first event must have prev null" };
    return null;
  }
  if (ev.job !== prev.job) return { field: "job", reason: `event of job ${ev.job} in the chain of ${prev.job}` };
  if (ev.seq !== prev.seq + 1) {
    const what =
      ev.seq <= prev.seq ? "duplicate or out of order" : `gap: events ${prev.seq + 1}..${ev.seq - 1} missing`;
    return { field: "seq", reason: `seq ${ev.seq} follows seq ${prev.seq} (${what})` };
  }
  if (ev.prev !== prev.hash) {
    return {
      field: "prev",
      reason: `prev ${short(ev.prev)} is not the hash of event ${prev.seq} (${short(prev.hash)})`,
    };
  }
  return null;
}

export interface ChainResult {
  /** Aligned with the input; null where the value is not a well-formed event. */
  encoded: (EncodedEvent | null)[];
  /** RFC 6962 leaf hash of each well-formed event (null where not well-formed). */
  leaves: (Buffer | null)[];
  failures: EventFailure[];
  /** The job signing key (raw base64) declared by job.started, when found. */
  signerKey: string | null;
}

/**
 * Verifies a whole chain: schema of each event, one job, job.started first, every signature under the key it
 * declares (or `opts.signerKey` when pinned), seq contiguity from 0 and prev hashes. `opts.prepared` reuses
 * per-event work done before (signature results are used only when they were computed under the same key).
 */
export function verifyChain(
  events: readonly unknown[],
  opts: { signerKey?: string; prepared?: PreparedEvents } = {},
): ChainResult {
  const failures: EventFailure[] = [];
  const prepared = opts.prepared ?? prepareEvents(events);
  const checker = new ChainChecker(opts.signerKey ?? null, (f) => failures.push(f));
  events.forEach((raw, index) => {
    checker.add(raw, prepared.schema[index]!, prepared.encoded[index] ?? null, prepared.sigValid[index], prepared.key);
  });
  return { encoded: prepared.encoded, leaves: prepared.leaves, failures, signerKey: checker.signerKey };
}

/**
 * verifyChain one event at a time, keeping only the previous link: what a streaming verifier (a JSONL bundle)
 * feeds as each event's hash and signature check come back, in order.
 */
export class ChainChecker {
  private index = 0;
  private prev: { seq: number; hash: string; job: string } | null = null;

  constructor(
    /** The job key (raw base64) when pinned; else job.started's declared key, once seen. */
    public signerKey: string | null,
    private readonly onFailure: (f: EventFailure) => void,
  ) {}

  /**
   * The next event: `raw` as received, `bad` its schema errors (`enc` null when not well-formed), and its
   * signature's validity when already checked (`sigValid`, computed under `sigKey`).
   */
  add(
    raw: unknown,
    bad: readonly { field: string; reason: string }[],
    enc: EncodedEvent | null,
    sigValid?: boolean,
    sigKey?: string | null,
  ): void {
    const index = this.index++;
    const seq = typeof (raw as { seq?: unknown })?.seq === "number" ? (raw as { seq: number }).seq : null;
    const fail = (f: { field: string; reason: string }) => this.onFailure({ index, seq, ...f });
    if (bad.length > 0 || !enc) {
      for (const b of bad) fail({ field: b.field, reason: `schema: ${b.reason}` });
      return;
    }
    const ev = enc.event;
    if (index === 0) {
      if (ev.type !== "job.started") fail({ field: "type", reason: "first event is not job.started" });
      else if (this.signerKey === null) this.signerKey = ev.body.signer.publicKey;
      else if (ev.body.signer.publicKey !== this.signerKey) {
        fail({ field: "body.signer.publicKey", reason: "job.started declares a key other than the pinned job key" });
      }
    } else if (ev.type === "job.started") {
      fail({ field: "type", reason: "a second job.started in the chain" });
    }
    if (this.signerKey !== null) {
      const known = sigKey === this.signerKey ? sigValid : undefined;
      // Released encodings (EventPreparer) are re-encoded if their signature was not checked under this key.
      const full = known === undefined && enc.signing.length === 0 ? encodeEvent(ev) : enc;
      const s = checkSignature(full, this.signerKey, known);
      if (s) fail(s);
    } else {
      fail({ field: "sig", reason: "no job key to verify against (job.started missing)" });
    }
    const l = checkLink(this.prev, enc);
    if (l) fail(l);
    this.prev = { seq: ev.seq, hash: enc.hash, job: ev.job };
  }
}
