/**
 * Digests (SHA-256) and signatures (Ed25519) from node:crypto, plus key import/export.
 * Keys travel as PEM (PKCS#8 private, SPKI public) or as raw base64 (32-byte seed / 32-byte public key).
 * A key id is the hex SHA-256 of the raw 32-byte public key.
 */
import {
  createHash,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  type KeyObject,
  sign,
  verify,
} from "node:crypto";
import { canonicalBytes } from "./canonical.js";

const SPKI_PREFIX = Buffer.from("302a300506032b6570032100", "hex");
const PKCS8_PREFIX = Buffer.from("302e020100300506032b657004220420", "hex");

export type DigestString = `sha256:${string}`;

export function sha256(data: Uint8Array | string): Buffer {
  return createHash("sha256").update(data).digest();
}
/** "sha256:<hex>" of bytes (strings are hashed as UTF-8). */
export function digestOf(data: Uint8Array | string): DigestString {
  return `sha256:${createHash("sha256").update(data).digest("hex")}`;
}
/** "sha256:<hex>" of the canonical JSON of a value. */
export function digestOfJson(value: unknown): DigestString {
  return digestOf(canonicalBytes(value));
}
/** The 32 raw bytes of a "sha256:<hex>" digest. */
export function digestBytes(d: string): Buffer {
  if (!/^sha256:[0-9a-f]{64}$/.test(d)) throw new Error(`not a sha256 digest: ${JSON.stringify(d)}`);
  return Buffer.from(d.slice(7), "hex");
}

export interface KeyPair {
  privateKey: KeyObject;
  publicKey: KeyObject;
}

export function generateKeyPair(): KeyPair {
  return generateKeyPairSync("ed25519");
}

/** The raw 32-byte Ed25519 public key (of a public or private KeyObject). */
export function rawPublicKey(key: KeyObject): Buffer {
  const pub = key.type === "private" ? createPublicKey(key) : key;
  const der = pub.export({ format: "der", type: "spki" });
  return der.subarray(der.length - 32);
}
export function publicKeyB64(key: KeyObject): string {
  return rawPublicKey(key).toString("base64");
}
export function keyIdOfRaw(raw: Uint8Array): string {
  return sha256(raw).toString("hex");
}
export function keyId(key: KeyObject): string {
  return keyIdOfRaw(rawPublicKey(key));
}

/** True when `b64` is the canonical base64 of 32 bytes (an Ed25519 public key: one spelling per key). */
export function isCanonicalPublicKey(b64: unknown): b64 is string {
  if (typeof b64 !== "string") return false;
  const raw = Buffer.from(b64, "base64");
  return raw.length === 32 && raw.toString("base64") === b64;
}

const pubCache = new Map<string, KeyObject>();
/** A public KeyObject from raw base64 (cached: verification of many events under one key). */
export function publicKeyFromB64(b64: string): KeyObject {
  let k = pubCache.get(b64);
  if (!k) {
    if (!isCanonicalPublicKey(b64)) throw new Error("an Ed25519 public key is 32 bytes, base64");
    const raw = Buffer.from(b64, "base64");
    k = createPublicKey({ key: Buffer.concat([SPKI_PREFIX, raw]), format: "der", type: "spki" });
    if (pubCache.size > 10_000) pubCache.clear();
    pubCache.set(b64, k);
  }
  return k;
}

/** Parses a private key: PEM (PKCS#8) or the raw 32-byte seed in base64. */
export function loadPrivateKey(text: string): KeyObject {
  const t = text.trim();
  const key = t.startsWith("-----BEGIN")
    ? createPrivateKey(t)
    : createPrivateKey({ key: Buffer.concat([PKCS8_PREFIX, rawSeed(t)]), format: "der", type: "pkcs8" });
  if (key.asymmetricKeyType !== "ed25519") throw new Error(`expected an Ed25519 key, got ${key.asymmetricKeyType}`);
  return key;
}
function rawSeed(b64: string): Buffer {
  const raw = Buffer.from(b64, "base64");
  if (raw.length !== 32) throw new Error("a raw Ed25519 private key is a 32-byte seed, base64");
  return raw;
}

/** Parses a public key: PEM (SPKI), raw base64, or a private key (its public half). */
export function loadPublicKey(text: string): KeyObject {
  const t = text.trim();
  if (t.includes("PRIVATE KEY")) return createPublicKey(loadPrivateKey(t));
  const key = t.startsWith("-----BEGIN") ? createPublicKey(t) : publicKeyFromB64(t);
  if (key.asymmetricKeyType !== "ed25519") throw new Error(`expected an Ed25519 key, got ${key.asymmetricKeyType}`);
  return key;
}

export function exportPrivateKeyPem(key: KeyObject): string {
  return key.export({ format: "pem", type: "pkcs8" }).toString();
}
export function exportPublicKeyPem(key: KeyObject): string {
  const pub = key.type === "private" ? createPublicKey(key) : key;
  return pub.export({ format: "pem", type: "spki" }).toString();
}
/** The raw 32-byte seed of a private key, base64. */
export function exportPrivateKeyRaw(key: KeyObject): string {
  const der = key.export({ format: "der", type: "pkcs8" });
  return der.subarray(der.length - 32).toString("base64");
}

/** base64 Ed25519 signature of `data`. */
export function signBytes(privateKey: KeyObject, data: Uint8Array): string {
  return sign(null, data, privateKey).toString("base64");
}
/** True when `sigB64` is a valid Ed25519 signature of `data` under `publicKey`. Never throws. */
export function verifyBytes(publicKey: KeyObject, data: Uint8Array, sigB64: string): boolean {
  try {
    const sig = Buffer.from(sigB64, "base64");
    return sig.length === 64 && verify(null, data, publicKey, sig);
  } catch {
    return false;
  }
}
