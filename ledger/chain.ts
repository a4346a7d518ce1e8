/**
 * Event encoding, signing and the per-job hash chain. Pure: no I/O, no clock (time is passed in).
 *
 *   signing bytes = canonical JSON of the envelope without `sig`      (what Ed25519 signs)
 *   event bytes   = canonical JSON of the whole envelope               (the Merkle leaf input)
 *   event hash    = "sha256:" + hex SHA-256(event bytes)               (what the next event's `prev` holds)
 */
import { verify as cryptoVerify, type KeyObject } from "node:crypto";
import { TypeCompiler } from "@sinclair/typebox/compiler";
import {
  type EventBodies,
  LEDGER_EVENT_VERSION,
  LedgerEvent,
  type LedgerEventType,
  type UnsignedEvent,
} from "../proto/ledger-events.js";
import { canonicalJson } from "./canonical.js";
import { leafHash } from "./merkle.js";
import { type DigestString, digestOf, keyIdOfRaw, publicKeyFromB64, signBytes, verifyBytes } from "./sign.js";

const EventCheck = TypeCompiler.Compile(LedgerEvent);
const EMPTY = Buffer.alloc(0);

export interface EncodedEvent {
  event: LedgerEvent;
  /** Canonical JSON of the whole envelope (UTF-8). */
  bytes: Buffer;
  /** Canonical JSON of the envelope without `sig`. */
  signing: Buffer;
  hash: DigestString;
}

const ENVELOPE_KEYS = ["body", "job", "keyId", "prev", "seq", "sig", "time", "type", "v"];

/**
 * Canonical encodings of an event. One canonicalization: the full form is the signing form with `"sig":…`
 * spliced in before `"time"` (keys sort body, job, keyId, prev, seq, sig, time, type, v); when the envelope is
 * not of the expected shape it falls back to canonicalizing twice.
 */
export function encodeEvent(event: LedgerEvent): EncodedEvent {
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
  /** The signature's validity when already computed (prepareEventsAsync). */
  known?: boolean,
): { field: string; reason: string } | null {
  const ev = enc.event;
  const expected = keyIdOfB64(publicKeyB64);
  if (ev.keyId !== expected) {
    return { field: "keyId", reason: `signed by key ${short(ev.keyId)}, but the job's key is ${short(expected)}` };
  }
  if (!(known ?? verifyBytes(publicKeyFromB64(publicKeyB64), enc.signing, ev.sig))) {
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

/** Ed25519 verification on libuv's thread pool (node:crypto's callback form), so it overlaps other work. */
export function verifySignatureAsync(enc: EncodedEvent, publicKeyB64: string): Promise<boolean> {
  return new Promise((resolve) => {
    try {
      const sig = Buffer.from(enc.event.sig, "base64");
      if (sig.length !== 64) return resolve(false);
      cryptoVerify(null, enc.signing, publicKeyFromB64(publicKeyB64), sig, (err, ok) => resolve(!err && ok));
    } catch {
      resolve(false);
    }
  });
}

/**
 * prepareEvents plus every signature checked under `signerKey` on the thread pool while the main thread keeps
 * encoding: the fast path for large bundles and for ingest.
 */
export async function prepareEventsAsync(
  events: readonly unknown[],
  signerKey: string | null,
): Promise<PreparedEvents> {
  const p: PreparedEvents = { schema: [], encoded: [], leaves: [], sigValid: [], key: signerKey };
  const pending: Promise<void>[] = [];
  for (let i = 0; i < events.length; i++) {
    const raw = events[i];
    const bad = schemaErrors(raw);
    p.schema.push(bad);
    const enc = bad.length > 0 ? null : encodeEvent(raw as LedgerEvent);
    // Keep only what the chain check needs: large bundles would otherwise hold every event's bytes twice.
    p.encoded.push(enc ? { event: enc.event, hash: enc.hash, bytes: EMPTY, signing: EMPTY } : null);
    p.leaves.push(enc ? leafHash(enc.bytes) : null);
    if (enc && signerKey !== null) {
      pending.push(
        verifySignatureAsync(enc, signerKey).then((ok) => {
          p.sigValid[i] = ok;
        }),
      );
      if (pending.length >= 512) await Promise.all(pending.splice(0));
    }
  }
  await Promise.all(pending);
  return p;
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
  const encoded = prepared.encoded;
  let signerKey: string | null = opts.signerKey ?? null;
  let prev: { seq: number; hash: string; job: string } | null = null;
  events.forEach((raw, index) => {
    const seq = typeof (raw as { seq?: unknown })?.seq === "number" ? (raw as { seq: number }).seq : null;
    const bad = prepared.schema[index]!;
    const enc = encoded[index];
    if (bad.length > 0 || !enc) {
      for (const b of bad) failures.push({ index, seq, ...b, reason: `schema: ${b.reason}` });
      return;
    }
    const ev = enc.event;
    if (index === 0) {
      if (ev.type !== "job.started")
        failures.push({ index, seq, field: "type", reason: "first event is not job.started" });
      else if (signerKey === null) signerKey = ev.body.signer.publicKey;
      else if (ev.body.signer.publicKey !== signerKey) {
        failures.push({
          index,
          seq,
          field: "body.signer.publicKey",
          reason: "job.started declares a key other than the pinned job key",
        });
      }
    } else if (ev.type === "job.started") {
      failures.push({ index, seq, field: "type", reason: "a second job.started in the chain" });
    }
    if (signerKey !== null) {
      const known = prepared.key === signerKey ? prepared.sigValid[index] : undefined;
      // Released encodings (prepareEventsAsync) are re-encoded if their signature was not checked under this key.
      const full = known === undefined && enc.signing.length === 0 ? encodeEvent(ev) : enc;
      const s = checkSignature(full, signerKey, known);
      if (s) failures.push({ index, seq, ...s });
    } else {
      failures.push({ index, seq, field: "sig", reason: "no job key to verify against (job.started missing)" });
    }
    const l = checkLink(prev, enc);
    if (l) failures.push({ index, seq, ...l });
    prev = { seq: ev.seq, hash: enc.hash, job: ev.job };
  });
  return { encoded, leaves: prepared.leaves, failures, signerKey };
}

function short(h: string | null): string {
  if (h === null) return "null";
  const hex = h.startsWith("sha256:") ? h.slice(7) : h;
  return `${h.startsWith("sha256:") ? "sha256:" : ""}${hex.slice(0, 12)}…`;
}
