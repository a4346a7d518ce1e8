/**
 * Per-event work that needs no chain context, done before the chain check: the schema, the encodings, the
 * Merkle leaf hash and the signature, either all at once (prepareEvents) or streamed with the hashing and
 * signature checks on worker threads (EventPreparer).
 */
import type { LedgerEvent } from "../proto/ledger-events.js";
import {
  type DecodedEvent,
  type EncodedEvent,
  decodeValue,
  encodeDecoded,
  encodeEvent,
  schemaErrors,
} from "./event-codec.js";
import { SignatureWindow } from "./event-signature.js";
import { leafHash } from "./merkle.js";
import { sharedVerifyPool, type VerifyPool } from "./verify-pool.js";

const EMPTY = Buffer.alloc(0);

/** Per-event work that needs no chain context: schema check, encoding, and (optionally) the signature check. */
export interface PreparedEvents {
  schema: { field: string; reason: string }[][];
  /** Encodings; `bytes`/`signing` may be released (empty) once the leaf hash and signature check are done. */
  encoded: (EncodedEvent | null)[];
  leaves: (Buffer | null)[];
  /** Signature validity under `key` (undefined: not checked yet). */
  sigValid: (boolean | undefined)[];
  key: string | null;
}

export function prepareEvents(events: readonly unknown[]): PreparedEvents {
  const schema: { field: string; reason: string }[][] = [];
  const encoded: (EncodedEvent | null)[] = [];
  for (const raw of events) {
    const bad = schemaErrors(raw);
    schema.push(bad);
    encoded.push(bad.length > 0 ? null : encodeEvent(raw as LedgerEvent));
  }
  return { schema, encoded, leaves: encoded.map((e) => (e ? leafHash(e.bytes) : null)), sigValid: [], key: null };
}

/** One event as EventPreparer hands it on: the value, its schema errors, encodings and signature validity. */
export interface PreparedEvent {
  /** The value as received (the event, when well-formed). */
  raw: unknown;
  bad: { field: string; reason: string }[];
  /** null when not well-formed; `bytes`/`signing` are released (empty), `hash` is set. */
  enc: EncodedEvent | null;
  leaf: Buffer | null;
  /** Validity under the preparer's key (undefined: no key, or not well-formed). */
  sigValid: boolean | undefined;
}

/**
 * Prepares events one at a time (a parsed value, or received bytes decoded by decodeEventBytes): this thread
 * parses and checks; hashing and signature checks go to the VerifyPool's worker threads (or, where workers cannot
 * start, to libuv's thread pool). Await what `add*` returns (the pool is full), then `finish()`.
 *
 * With a `sink`, each event is handed to it in order as soon as its hash and signature check are back, and
 * nothing is kept (a streaming verifier holds only what is in flight); without one they are collected as
 * PreparedEvents, which `finish()` returns.
 */
export class EventPreparer {
  readonly prepared: PreparedEvents;
  /** Events whose bytes were not their canonical JSON (re-encoded). */
  nonCanonical = 0;
  private readonly pool: VerifyPool | null;
  private readonly window: SignatureWindow | null;
  private readonly sink: (p: PreparedEvent) => void;
  /** Events not yet handed to the sink, oldest first (from `head`). */
  private queue: (PreparedEvent & { ready: boolean })[] = [];
  private head = 0;

  constructor(
    readonly signerKey: string | null,
    pool: VerifyPool | null = sharedVerifyPool(),
    sink?: (p: PreparedEvent) => void,
  ) {
    const prepared: PreparedEvents = { schema: [], encoded: [], leaves: [], sigValid: [], key: signerKey };
    this.prepared = prepared;
    this.sink =
      sink ??
      ((e) => {
        prepared.schema.push(e.bad);
        prepared.encoded.push(e.enc);
        prepared.leaves.push(e.leaf);
        prepared.sigValid.push(e.sigValid);
      });
    this.pool = pool;
    this.window = pool ? null : new SignatureWindow();
  }

  /** An event as a parsed value (the JSON bundle). */
  addValue(raw: unknown): Promise<void> | undefined {
    return this.addDecoded(decodeValue(raw));
  }

  /** An event received as bytes and decoded (decodeEventBytes; a JSONL bundle line). Not for malformed ones. */
  addDecoded(d: DecodedEvent): Promise<void> | undefined {
    if (!d.ok) return this.push(d.value, d.schema, null);
    if (!d.canonical) this.nonCanonical++;
    return this.push(d.event, [], d);
  }

  private push(
    raw: unknown,
    bad: { field: string; reason: string }[],
    d: Extract<DecodedEvent, { ok: true }> | null,
  ): Promise<void> | undefined {
    if (!d) {
      this.queue.push({ raw, bad, enc: null, leaf: null, sigValid: undefined, ready: true });
      this.release();
      return undefined;
    }
    // Keep only what the chain check needs: large bundles would otherwise hold every event's bytes twice.
    const enc: EncodedEvent = { event: d.event, hash: "sha256:", bytes: EMPTY, signing: EMPTY };
    const e = { raw, bad, enc, leaf: null as Buffer | null, sigValid: undefined as boolean | undefined, ready: false };
    this.queue.push(e);
    if (this.pool) {
      return this.pool.submit(d.bytes, d.sig.at, d.sig.len, this.signerKey, (hash, leaf, valid) => {
        enc.hash = `sha256:${hash.toString("hex")}`;
        e.leaf = leaf;
        e.sigValid = valid;
        e.ready = true;
        this.release();
      });
    }
    const full = encodeDecoded(d);
    enc.hash = full.hash;
    e.leaf = full.leaf!;
    if (this.signerKey === null) {
      e.ready = true;
      this.release();
      return undefined;
    }
    return this.window!.add(full, this.signerKey, (ok) => {
      e.sigValid = ok;
      e.ready = true;
      this.release();
    });
  }

  /** Hands the ready events at the front of the queue to the sink, in order. */
  private release(): void {
    const q = this.queue;
    while (this.head < q.length && q[this.head]!.ready) {
      const e = q[this.head]!;
      q[this.head++] = undefined as never;
      this.sink(e);
    }
    if (this.head === q.length) {
      this.queue = [];
      this.head = 0;
    } else if (this.head > 4096) {
      this.queue = q.slice(this.head);
      this.head = 0;
    }
  }

  async finish(): Promise<PreparedEvents> {
    await (this.pool ? this.pool.drain() : this.window!.drain());
    this.release();
    if (this.head !== this.queue.length) throw new Error("internal: prepared events left unreleased");
    return this.prepared;
  }
}
