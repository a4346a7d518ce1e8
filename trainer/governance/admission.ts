/**
 * Admission: which training rows may train, and which parameter groups each may change. Pure.
 *
 * A row carrying `provenance: {authority, credential}` is admitted when the authority is declared in the job
 * and the credential is the authority's Ed25519 signature over the SHA-256 of the row's canonical JSON without
 * `provenance`; its gradient may reach only the groups of the authority's envelope. A row without provenance
 * is admitted under the job's default envelope (every group) unless credentials are required (the default
 * once any authority is declared). Everything else is rejected with a reason, never trained on.
 */
import { expandEnvelope, sortGroups } from "../../proto/envelope.js";
import type { RejectCode } from "../../proto/ledger-events.js";
import { rowContentHash, rowId, verifyRowCredential } from "../../ledger/client.js";

export interface AuthorityKey {
  name: string;
  publicKeyB64: string;
  keyId: string;
  lawfulBasis: string;
  envelope: string[];
}

export interface AdmittedRow {
  index: number;
  id: string;
  hash: string;
  authority: string | null;
  credential: string | null;
  /** Parameter groups the row's gradient may reach (canonical order). */
  groups: string[];
}

export interface RejectedRow {
  index: number;
  id: string;
  hash: string;
  authority: string | null;
  code: RejectCode;
  reason: string;
}

export interface AdmissionPolicy {
  authorities: AuthorityKey[];
  requireCredentials: boolean;
  numLayers: number;
}

/** The envelope of rows admitted without provenance: the whole model. */
export const defaultEnvelope = (numLayers: number) => ["embeddings", `layers[0:${numLayers}]`, "final_norm", "lm_head"];

export function admitRows(rows: readonly Record<string, unknown>[], policy: AdmissionPolicy) {
  const byName = new Map(
    policy.authorities.map((a) => [
      a.name,
      { a, groups: sortGroups(expandEnvelope(a.envelope, policy.numLayers), policy.numLayers) },
    ]),
  );
  const everything = sortGroups(expandEnvelope(defaultEnvelope(policy.numLayers), policy.numLayers), policy.numLayers);
  const admitted: AdmittedRow[] = [];
  const rejected: RejectedRow[] = [];
  rows.forEach((row, index) => {
    const id = rowId(row, index);
    const hash = rowContentHash(row);
    const prov = row.provenance as { authority?: unknown; credential?: unknown } | undefined;
    const reject = (authority: string | null, code: RejectCode, reason: string) =>
      rejected.push({ index, id, hash, authority, code, reason });
    if (prov === undefined) {
      if (policy.requireCredentials)
        reject(null, "missing_credential", "the row has no provenance and the job requires credentials");
      else admitted.push({ index, id, hash, authority: null, credential: null, groups: everything });
      return;
    }
    const name = typeof prov.authority === "string" ? prov.authority : null;
    const known = name ? byName.get(name) : undefined;
    if (!known)
      return reject(
        name,
        "unknown_authority",
        `authority ${JSON.stringify(prov.authority)} is not declared in the job`,
      );
    if (typeof prov.credential !== "string" || !verifyRowCredential(hash, prov.credential, known.a.publicKeyB64)) {
      return reject(name, "bad_credential", `the credential is not ${name}'s signature over the row's hash ${hash}`);
    }
    admitted.push({ index, id, hash, authority: name, credential: prov.credential, groups: known.groups });
  });
  return { admitted, rejected };
}
