/**
 * Event encoding, signing and the per-job hash chain. Pure: no I/O, no clock (time is passed in).
 *
 *   signing bytes = canonical JSON of the envelope without `sig`      (what Ed25519 signs)
 *   event bytes   = canonical JSON of the whole envelope               (the Merkle leaf input)
 *   event hash    = "sha256:" + hex SHA-256(event bytes)               (what the next event's `prev` holds)
 */
import { isAscii } from "node:buffer";
import { verify as cryptoVerify, type KeyObject } from "node:crypto";
import { TypeCompiler } from "@sinclair/typebox/compiler";
import {
  type EventBodies,
  LEDGER_EVENT_VERSION,
  LedgerEvent,
  type LedgerEventType,
  type UnsignedEvent,
} from "../proto/ledger-events.js";
import { canonicalJson, fastCanonicalJson, isCanonicalText } from "./canonical.js";
import { leafHash } from "./merkle.js";
import { sharedVerifyPool, type VerifyPool } from "./verify-pool.js";
import { type DigestString, digestOf, keyIdOfRaw, publicKeyFromB64, signBytes, verifyBytes } from "./sign.js";

const EventCheck = TypeCompiler.Compile(LedgerEvent);
const EMPTY = Buffer.alloc(0);

export interface EncodedEvent {
  event: LedgerEvent;
  /** Canonical JSON of the whole envelope (UTF-8). */
  bytes: Buffer;
  /** Canonical JSON of the envelope without `sig` (may be left empty: then derived from `bytes` when needed). */
  signing: Buffer;
  hash: DigestString;
  /** RFC 6962 leaf hash of `bytes`, when already computed (decodeEventBytes). */
  leaf?: Buffer;
}

const ENVELOPE_KEYS = ["body", "job", "keyId", "prev", "seq", "sig", "time", "type", "v"];

/**
 * Where the top-level `,"sig":"<b64>"` segment is in an event's canonical bytes. Keys sort body, job, keyId,
 * prev, seq, sig, time, type, v, so a canonical envelope ends `,"sig":S,"time":T,"type":Y,"v":V}`; when `bytes`
 * ends exactly so (with the event's own values), that suffix is made of top-level members, and removing one
 * member of a canonical object leaves the canonical object without it: the signing bytes are the bytes without
 * the segment. null when the bytes do not end so (the caller then canonicalizes the unsigned envelope).
 */
export function sigSegment(bytes: Buffer, event: LedgerEvent): { at: number; len: number } | null {
  const ev = event as unknown as Record<string, unknown>;
  if (typeof ev.sig !== "string" || typeof ev.time !== "string" || typeof ev.type !== "string") return null;
  if (typeof ev.v !== "number") return null;
  const sig = Buffer.from(`,"sig":${JSON.stringify(ev.sig)}`, "utf8");
  const tail = Buffer.from(`,"time":${JSON.stringify(ev.time)},"type":${JSON.stringify(ev.type)},"v":${ev.v}}`, "utf8");
  const at = bytes.length - tail.length - sig.length;
  if (at <= 0 || bytes.compare(tail, 0, tail.length, at + sig.length) !== 0) return null;
  if (bytes.compare(sig, 0, sig.length, at, at + sig.length) !== 0) return null;
  return { at, len: sig.length };
}

/** The signing bytes (see sigSegment) cut out of an event's canonical bytes, or null. */
export function signingBytesOf(bytes: Buffer, event: LedgerEvent): Buffer | null {
  const s = sigSegment(bytes, event);
  return s ? withoutSegment(bytes, s) : null;
}

/** `bytes` without the segment `s` (the signing bytes, when `s` is the sig segment). */
function withoutSegment(bytes: Buffer, s: { at: number; len: number }): Buffer {
  const out = Buffer.allocUnsafe(bytes.length - s.len);
  bytes.copy(out, 0, 0, s.at);
  bytes.copy(out, s.at, s.at + s.len);
  return out;
}

/**
 * Canonical encodings of an event. Fast path: the event's keys are already in canonical order (it came from
 * JSON.parse of canonical text), so JSON.stringify writes its canonical JSON and the signing bytes are cut out of
 * it (signingBytesOf). Otherwise one canonicalization: the full form is the signing form with `"sig":…` spliced
 * in before `"time"`; when the envelope is not of the expected shape it falls back to canonicalizing twice.
 */
export function encodeEvent(event: LedgerEvent): EncodedEvent {
  const fast = fastCanonicalJson(event);
  if (fast !== undefined) {
    const bytes = Buffer.from(fast, "utf8");
    const signing = signingBytesOf(bytes, event);
    if (signing) return { event, bytes, signing, hash: digestOf(bytes) };
  }
  const { sig, ...unsigned } = event as LedgerEvent & Record<string, unknown>;
  const signingText = canonicalJson(unsigned);
  let fullText: string | undefined;
  const keys = Object.keys(event);
  if (
    keys.length === ENVELOPE_KEYS.length &&
    keys.every((k) => ENVELOPE_KEYS.includes(k)) &&
    typeof sig === "string" &&
    /^[A-Za-z0-9+/=]*$/.test(sig) &&
    typeof event.time === "string" &&
    typeof event.type === "string" &&
    typeof event.v === "number"
  ) {
    const at = signingText.lastIndexOf(',"time":');
    if (at > 0) fullText = `${signingText.slice(0, at)},"sig":"${sig}"${signingText.slice(at)}`;
  }
  fullText ??= canonicalJson(event);
  const bytes = Buffer.from(fullText, "utf8");
  return { event, bytes, signing: Buffer.from(signingText, "utf8"), hash: digestOf(bytes) };
}

/** What decodeEventBytes makes of a received event. */
export type DecodedEvent =
  | {
      ok: true;
      event: LedgerEvent;
      /** The event's canonical JSON: the received bytes when they were canonical, else re-encoded. */
      bytes: Buffer;
      /** Where the `,"sig":"…"` segment is in `bytes` (sigSegment). */
      sig: { at: number; len: number };
      /** The received bytes were the event's canonical JSON (no re-encoding). */
      canonical: boolean;
    }
  | {
      ok: false;
      code: "malformed" | "schema";
      /** The parsed value (schema failures). */
      value?: unknown;
      schema: { field: string; reason: string }[];
      reason: string;
    };

/**
 * An event received as bytes (a NATS message, a line of a JSONL bundle): parse, schema, canonical form. When
 * the bytes are already the event's canonical JSON (what every publisher sends; checked by isCanonicalText,
 * not assumed) they are used as received, with no re-serialization; otherwise the event is canonicalized like
 * any other value. Hashing and the signature check come after (encodeDecoded, or the VerifyPool).
 */
export function decodeEventBytes(data: Uint8Array): DecodedEvent {
  const buf = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const ascii = isAscii(buf);
  const text = ascii ? buf.toString("latin1") : buf.toString("utf8");
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return { ok: false, code: "malformed", schema: [], reason: "payload is not JSON" };
  }
  const schema = schemaErrors(value);
  if (schema.length > 0) {
    return {
      ok: false,
      code: "schema",
      value,
      schema,
      reason: schema.map((b) => `${b.field}: ${b.reason}`).join("; "),
    };
  }
  const event = value as LedgerEvent;
  // Non-ASCII text: the bytes are canonical only if they are also the UTF-8 of the text (no invalid sequences).
  const canonical = isCanonicalText(text, value) && (ascii || buf.equals(Buffer.from(text, "utf8")));
  const bytes = canonical ? buf : encodeEvent(event).bytes;
  const sig = sigSegment(bytes, event);
  // A schema-valid event's canonical JSON always ends with its sig, time, type and v members.
  if (!sig) throw new Error(`internal: no top-level sig in the canonical JSON of event seq ${event.seq}`);
  return { ok: true, event, bytes, sig, canonical };
}

/** The encodings of a decoded event, computed here: hash, Merkle leaf hash and signing bytes. */
export function encodeDecoded(d: Extract<DecodedEvent, { ok: true }>): EncodedEvent {
  const signing = withoutSegment(d.bytes, d.sig);
  return { event: d.event, bytes: d.bytes, signing, hash: digestOf(d.bytes), leaf: leafHash(d.bytes) };
}

/** Hash of an event (see the file comment). */
export function eventHash(event: LedgerEvent): DigestString {
  return encodeEvent(event).hash;
}

/** Signs an unsigned envelope. */
export function signEvent(unsigned: UnsignedEvent, privateKey: KeyObject): LedgerEvent {
  const sig = signBytes(privateKey, Buffer.from(canonicalJson(unsigned), "utf8"));
  return { ...unsigned, sig } as LedgerEvent;
}

/** The state a chain writer needs to append: the next seq and the previous event's hash. */
export interface ChainHead {
  job: string;
  seq: number;
  prev: DigestString | null;
}

/** Builds and signs the next event of a chain; returns it with the advanced head. Pure apart from signing. */
export function nextEvent<K extends LedgerEventType>(
  head: ChainHead,
  type: K,
  body: EventBodies[K],
  time: string,
  privateKey: KeyObject,
  keyId: string,
): { event: LedgerEvent; encoded: EncodedEvent; head: ChainHead } {
  const unsigned = { v: LEDGER_EVENT_VERSION, job: head.job, seq: head.seq, type, time, prev: head.prev, body, keyId };
  const event = signEvent(unsigned as UnsignedEvent, privateKey);
  const encoded = encodeEvent(event);
  return { event, encoded, head: { job: head.job, seq: head.seq + 1, prev: encoded.hash } };
}

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

const BranchChecks = new Map(
  LedgerEvent.anyOf.map((s) => [s.properties.type.const as string, TypeCompiler.Compile(s)]),
);

/** Schema errors of a value claimed to be an event (empty when it is one). */
export function schemaErrors(value: unknown): { field: string; reason: string }[] {
  const type = (value as { type?: unknown } | null)?.type;
  const branch = typeof type === "string" ? BranchChecks.get(type) : undefined;
  if (branch ? branch.Check(value) : EventCheck.Check(value)) return [];
  const out: { field: string; reason: string }[] = [];
  // The union reports every branch; the branch of the declared type gives a readable reason.
  for (const e of (branch ?? EventCheck).Errors(value)) {
    out.push({ field: e.path.replace(/^\//, "").replaceAll("/", ".") || "(event)", reason: e.message });
    if (out.length >= 5) break;
  }
  if (!branch) out.unshift({ field: "type", reason: `unknown event type ${JSON.stringify(type)}` });
  return out;
}

/** Checks an event's signature against a raw base64 public key (and that keyId names that key). */
export function checkSignature(
  enc: EncodedEvent,
  publicKeyB64: string,
  /** The signature's validity when already computed (EventPreparer). */
  known?: boolean,
): { field: string; reason: string } | null {
  const ev = enc.event;
  const expected = keyIdOfB64(publicKeyB64);
  if (ev.keyId !== expected) {
    return { field: "keyId", reason: `signed by key ${short(ev.keyId)}, but the job's key is ${short(expected)}` };
  }
  if (!isCanonicalSig(ev.sig)) {
    // Base64 decoding ignores the unused low bits of the last character: without this, one signature would have
    // several spellings, hence one signed event several hashes.
    return { field: "sig", reason: "not the canonical base64 of a 64-byte Ed25519 signature" };
  }
  if (!(known ?? verifyBytes(publicKeyFromB64(publicKeyB64), signingOf(enc), ev.sig))) {
    return { field: "sig", reason: "Ed25519 signature does not verify over the event's canonical JSON" };
  }
  return null;
}

const keyIds = new Map<string, string>();
function keyIdOfB64(b64: string): string {
  let k = keyIds.get(b64);
  if (k === undefined) {
    k = keyIdOfRaw(Buffer.from(b64, "base64"));
    if (keyIds.size > 10_000) keyIds.clear();
    keyIds.set(b64, k);
  }
  return k;
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

/** An encoding's signing bytes; where they were left out (empty) they are cut out of `bytes`, or re-encoded. */
function signingOf(enc: EncodedEvent): Buffer {
  if (enc.signing.length > 0) return enc.signing;
  return (enc.bytes.length > 0 ? signingBytesOf(enc.bytes, enc.event) : null) ?? encodeEvent(enc.event).signing;
}

/** True when `sig` is the canonical base64 of 64 bytes (86 characters, "==", unused bits zero). */
export function isCanonicalSig(sig: unknown): boolean {
  // 86 characters carry 516 bits: the last one's low 4 bits are unused, so it must be A, Q, g or w.
  return typeof sig === "string" && CANONICAL_SIG.test(sig);
}
const CANONICAL_SIG = /^[A-Za-z0-9+/]{85}[AQgw]==$/;

/** Ed25519 verification on libuv's thread pool (node:crypto's callback form), so it overlaps other work. */
export function verifySignatureAsync(enc: EncodedEvent, publicKeyB64: string): Promise<boolean> {
  return new Promise((resolve) => verifySignatureCb(enc, publicKeyB64, resolve));
}

/** verifySignatureAsync with a plain callback (no promise per event: the ingest and bundle hot paths). */
export function verifySignatureCb(enc: EncodedEvent, publicKeyB64: string, done: (ok: boolean) => void): void {
  try {
    const sig = Buffer.from(enc.event.sig, "base64");
    if (sig.length !== 64) return done(false);
    cryptoVerify(null, signingOf(enc), publicKeyFromB64(publicKeyB64), sig, (err, ok) => done(!err && ok));
  } catch {
    done(false);
  }
}

/**
 * Keeps up to `high` signature checks in flight on libuv's thread pool while the caller goes on decoding: `add`
 * returns a promise only when the window is full (await it: it resolves once the pool has caught up to `low`).
 */
export class SignatureWindow {
  private inflight = 0;
  private wake: (() => void) | null = null;
  private idle: (() => void) | null = null;
  constructor(
    private readonly high = 2048,
    private readonly low = 1024,
  ) {}

  add(enc: EncodedEvent, key: string, done: (ok: boolean) => void): Promise<void> | undefined {
    this.inflight++;
    verifySignatureCb(enc, key, (ok) => {
      this.inflight--;
      done(ok);
      if (this.wake && this.inflight <= this.low) {
        const w = this.wake;
        this.wake = null;
        w();
      }
      if (this.idle && this.inflight === 0) {
        const w = this.idle;
        this.idle = null;
        w();
      }
    });
    if (this.inflight < this.high) return undefined;
    return new Promise<void>((r) => {
      this.wake = r;
    });
  }

  /** Resolves when every check added so far is done. */
  drain(): Promise<void> {
    if (this.inflight === 0) return Promise.resolve();
    return new Promise<void>((r) => {
      this.idle = r;
    });
  }
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
    const bad = schemaErrors(raw);
    if (bad.length > 0) return this.push(raw, bad, null);
    const event = raw as LedgerEvent;
    const bytes = encodeEvent(event).bytes;
    return this.push(raw, [], { ok: true, event, bytes, sig: sigSegment(bytes, event)!, canonical: true });
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

function short(h: string | null): string {
  if (h === null) return "null";
  const hex = h.startsWith("sha256:") ? h.slice(7) : h;
  return `${h.startsWith("sha256:") ? "sha256:" : ""}${hex.slice(0, 12)}…`;
}
