/**
 * The public key a job's ledger events are signed with, as the operator registers it: the key of the job's
 * Secret, or the job's own `spec.governance.signingKey` (inline, or a Secret in the job's namespace). A key
 * in a file on the trainer's volume cannot be read here, and is refused for a ledger on NATS.
 */
import { createPrivateKey, createPublicKey } from "node:crypto";
import type { FineTuneJobObject } from "./desired.js";

/** Raw base64 public key of a PEM (PKCS#8) or raw base64 32-byte seed Ed25519 private key. */
export function ed25519PublicOf(text: string): string {
  const t = text.trim();
  const key = t.startsWith("-----")
    ? createPrivateKey(t)
    : createPrivateKey({
        key: Buffer.concat([Buffer.from("302e020100300506032b657004220420", "hex"), Buffer.from(t, "base64")]),
        format: "der",
        type: "pkcs8",
      });
  if (key.asymmetricKeyType !== "ed25519") throw new Error(`not an Ed25519 key (${key.asymmetricKeyType})`);
  const der = createPublicKey(key).export({ format: "der", type: "spki" });
  return der.subarray(der.length - 32).toString("base64");
}

/**
 * The job's signing public key: `secretPublicKey` (its Secret's) unless the spec names its own key;
 * `readSecret(name, key)` reads a Secret of the job's namespace.
 */
export async function jobSigningPublicKey(
  job: FineTuneJobObject,
  secretPublicKey: string | undefined,
  readSecret: (name: string, key: string) => Promise<string | undefined>,
): Promise<string | undefined> {
  const ref = job.spec.governance?.signingKey;
  if (!ref) return secretPublicKey;
  const field = "spec.governance.signingKey";
  if (ref.inline !== undefined) return ed25519PublicOf(ref.inline);
  if (ref.secretRef) {
    const v = await readSecret(ref.secretRef.name, ref.secretRef.key);
    if (v === undefined)
      throw new Error(`${field}.secretRef: Secret ${ref.secretRef.name} key ${ref.secretRef.key} not found`);
    return ed25519PublicOf(v);
  }
  throw new Error(
    `${field}.file: a key file on the trainer's volume cannot be registered with the ledger; use secretRef or inline`,
  );
}
