/**
 * The ledger event codec. Pure: no I/O, no clock (time is passed in).
 *
 *   signing bytes = canonical JSON of the envelope without `sig`      (what Ed25519 signs)
 *   event bytes   = canonical JSON of the whole envelope               (the Merkle leaf input)
 *   event hash    = "sha256:" + hex SHA-256(event bytes)               (what the next event's `prev` holds)
 *
 * Encoding (fast and general paths), decoding received bytes, the schema check, signing and building the next
 * event of a chain. chain.ts checks chains of these events; event-signature.ts checks their signatures.
 */
import { isAscii } from "node:buffer";
import type { KeyObject } from "node:crypto";
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
import { type DigestString, digestOf, signBytes } from "./sign.js";

const EventCheck = TypeCompiler.Compile(LedgerEvent);

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
    return { ok: false, code: "schema", value, schema, reason: schemaReason(schema) };
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

/** A parsed value as decodeEventBytes decodes received bytes: its schema errors, or the event's canonical form. */
export function decodeValue(value: unknown): DecodedEvent {
  const schema = schemaErrors(value);
  if (schema.length > 0) return { ok: false, code: "schema", value, schema, reason: schemaReason(schema) };
  const event = value as LedgerEvent;
  const bytes = encodeEvent(event).bytes;
  return { ok: true, event, bytes, sig: sigSegment(bytes, event)!, canonical: true };
}

const schemaReason = (schema: { field: string; reason: string }[]) =>
  schema.map((b) => `${b.field}: ${b.reason}`).join("; ");

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
