/**
 * Ed25519 checks of ledger events: against a raw base64 key (synchronously, or on libuv's thread pool with a
 * bounded window of checks in flight), with the canonical-signature rule (one spelling per signature).
 */
import { verify as cryptoVerify } from "node:crypto";
import { type EncodedEvent, encodeEvent, signingBytesOf } from "./event-codec.js";
import { isCanonicalPublicKey, keyIdOfRaw, publicKeyFromB64, verifyBytes } from "./sign.js";

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
    return {
      field: "keyId",
      reason: `signed by key ${shortHash(ev.keyId)}, but the job's key is ${shortHash(expected)}`,
    };
  }
  if (!isCanonicalPublicKey(publicKeyB64)) {
    return { field: "keyId", reason: "the job key is not the canonical base64 of a 32-byte Ed25519 public key" };
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

/** A digest shortened for messages: its first 12 hex digits. */
export function shortHash(h: string | null): string {
  if (h === null) return "null";
  const hex = h.startsWith("sha256:") ? h.slice(7) : h;
  return `${h.startsWith("sha256:") ? "sha256:" : ""}${hex.slice(0, 12)}…`;
}
