/**
 * OpenSSF model signing (the `model_signing` v1.0 format) with a local ECDSA key, and an in-toto SLSA
 * provenance statement of the training run signed the same way.
 *
 * The format, layer by layer (what the upstream `model_signing` Python package writes and checks):
 *   1. a manifest: every regular file under the model directory (relative POSIX path, symlinks refused, the
 *      `ignore_paths` left out) with the SHA-256 of its bytes, sorted by name;
 *   2. an in-toto Statement v1: one subject (the model's name and the SHA-256 over the concatenated raw file
 *      digests, in manifest order), predicateType `https://model_signing/signature/v1.0`, and the predicate
 *      `{serialization: {method: "files", hash_type, allow_symlinks, ignore_paths}, resources: [{name,
 *      algorithm, digest}]}`; verifiers of v1.0 ignore other predicate members, so ours adds `rft` (the job and
 *      the ledger's final parameter-group digests) to bind the files to the ledger;
 *   3. a DSSE envelope (payload type `application/vnd.in-toto+json`) whose signature is ECDSA over the DSSE
 *      pre-authentication encoding `DSSEv1 <len(type)> <type> <len(payload)> <payload>`, DER-encoded;
 *   4. a Sigstore bundle v0.3 (JSON) holding the envelope, `verificationMaterial.publicKey.hint` = hex SHA-256
 *      of the public key's SPKI PEM text, and no transparency-log entries (no public Sigstore here).
 * `model_signing verify key MODEL --signature FILE --public_key KEY.pub` accepts the result (tested); its key
 * method supports ECDSA on P-256/P-384/P-521 only (not Ed25519), so model-signing keys are P-256 here.
 *
 * Pure except `fileManifest` (reads the directory).
 */
import { createHash, createPrivateKey, createPublicKey, sign, verify, type KeyObject } from "node:crypto";
import { createReadStream, lstatSync, readdirSync } from "node:fs";
import { join, relative, sep } from "node:path";
import { canonicalJson } from "./canonical.js";

export const STATEMENT_TYPE = "https://in-toto.io/Statement/v1";
export const MODEL_SIGNING_PREDICATE = "https://model_signing/signature/v1.0";
export const SLSA_PROVENANCE_PREDICATE = "https://slsa.dev/provenance/v1";
export const DSSE_PAYLOAD_TYPE = "application/vnd.in-toto+json";
export const SIGSTORE_BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json";
/** What `model_signing sign` leaves out by default (its --ignore-git-paths). */
export const DEFAULT_IGNORE_PATHS = [".git", ".gitattributes", ".github", ".gitignore"];
/** The DigestSet name of an RFC 6962 Merkle root (SHA-256 leaves and nodes), as ledger/merkle.ts computes it. */
export const MERKLE_DIGEST = "rfc6962-merkle-sha256";

export interface Resource {
  name: string;
  algorithm: "sha256";
  /** Lower-case hex. */
  digest: string;
}

export interface ResourceDescriptor {
  name: string;
  digest: Record<string, string>;
  annotations?: Record<string, unknown>;
}

export interface Statement {
  _type: typeof STATEMENT_TYPE;
  subject: ResourceDescriptor[];
  predicateType: string;
  predicate: Record<string, unknown>;
}

export interface SigstoreBundle {
  mediaType: typeof SIGSTORE_BUNDLE_MEDIA_TYPE;
  verificationMaterial: { publicKey: { hint: string }; tlogEntries: [] };
  dsseEnvelope: { payload: string; payloadType: string; signatures: { sig: string; keyid: string }[] };
}

/** What a model signature says about the ledger (predicate member `rft`). */
export interface LedgerBinding {
  job: string;
  specDigest: string | null;
  /** The ledger's final digest of every parameter group (the job.finished event's `model`). */
  final: Record<string, string>;
}

export class ModelSigningError extends Error {}

function isIgnored(rel: string, ignore: readonly string[]): boolean {
  return ignore.some((p) => rel === p || rel.startsWith(`${p}/`));
}

async function sha256File(path: string): Promise<string> {
  const h = createHash("sha256");
  for await (const chunk of createReadStream(path, { highWaterMark: 4 << 20 })) h.update(chunk as Buffer);
  return h.digest("hex");
}

/** The manifest of a model directory: every regular file's SHA-256, sorted by relative POSIX path. */
export async function fileManifest(dir: string, ignore: readonly string[] = DEFAULT_IGNORE_PATHS): Promise<Resource[]> {
  const files: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const full = join(d, e.name);
      const rel = relative(dir, full).split(sep).join("/");
      if (isIgnored(rel, ignore)) continue;
      const st = lstatSync(full);
      if (st.isSymbolicLink())
        throw new ModelSigningError(`${full}: a symbolic link (model signing covers regular files only)`);
      if (st.isDirectory()) walk(full);
      else if (st.isFile()) files.push(rel);
      else throw new ModelSigningError(`${full}: not a regular file`);
    }
  };
  if (!lstatSync(dir, { throwIfNoEntry: false })?.isDirectory()) throw new ModelSigningError(`${dir}: not a directory`);
  walk(dir);
  files.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const out: Resource[] = [];
  for (const name of files) out.push({ name, algorithm: "sha256", digest: await sha256File(join(dir, name)) });
  return out;
}

/** The manifest's root digest: SHA-256 over the concatenated raw digests, in manifest order (hex). */
export function manifestRootDigest(resources: readonly Resource[]): string {
  const h = createHash("sha256");
  for (const r of resources) h.update(Buffer.from(r.digest, "hex"));
  return h.digest("hex");
}

export function modelStatement(
  name: string,
  resources: Resource[],
  binding?: LedgerBinding,
  ignore: readonly string[] = DEFAULT_IGNORE_PATHS,
): Statement {
  return {
    _type: STATEMENT_TYPE,
    subject: [{ name, digest: { sha256: manifestRootDigest(resources) } }],
    predicateType: MODEL_SIGNING_PREDICATE,
    predicate: {
      serialization: { method: "files", hash_type: "sha256", allow_symlinks: false, ignore_paths: [...ignore] },
      resources,
      ...(binding ? { rft: binding } : {}),
    },
  };
}

/** DSSE v1 pre-authentication encoding. */
export function dssePae(payloadType: string, payload: Buffer): Buffer {
  const t = Buffer.from(payloadType, "utf8");
  return Buffer.concat([Buffer.from(`DSSEv1 ${t.length} `), t, Buffer.from(` ${payload.length} `), payload]);
}

function ecHash(key: KeyObject): string {
  const curve = key.asymmetricKeyDetails?.namedCurve;
  if (curve === "prime256v1") return "sha256";
  if (curve === "secp384r1") return "sha384";
  throw new ModelSigningError(
    `model signing needs an ECDSA P-256 or P-384 key (model_signing's key method), got ${key.asymmetricKeyType}${curve ? ` ${curve}` : ""}: make one with \`rft keys generate --algorithm ecdsa-p256\``,
  );
}

/** A model-signing private key: PKCS#8 (or SEC1) PEM of an ECDSA P-256/P-384 key. */
export function loadSigningKey(pem: string): KeyObject {
  let key: KeyObject;
  try {
    key = createPrivateKey(pem);
  } catch (e) {
    throw new ModelSigningError(`not a PEM private key (${(e as Error).message})`);
  }
  ecHash(key);
  return key;
}

/** A model-signing public key: SPKI PEM (or the private key's public half). */
export function loadVerifyKey(pem: string): KeyObject {
  let key: KeyObject;
  try {
    key = pem.includes("PRIVATE KEY") ? createPublicKey(createPrivateKey(pem)) : createPublicKey(pem);
  } catch (e) {
    throw new ModelSigningError(`not a PEM public key (${(e as Error).message})`);
  }
  ecHash(key);
  return key;
}

/** hex SHA-256 of the SPKI PEM text of the public key (model_signing's key hint). */
export function keyHint(key: KeyObject): string {
  const pub = key.type === "private" ? createPublicKey(key) : key;
  return createHash("sha256")
    .update(pub.export({ format: "pem", type: "spki" }).toString())
    .digest("hex");
}

/** Signs a statement: DSSE envelope over its canonical JSON, in a Sigstore bundle (no tlog entries). */
export function signStatement(statement: Statement, privateKey: KeyObject): SigstoreBundle {
  const hash = ecHash(privateKey);
  const payload = Buffer.from(canonicalJson(statement), "utf8");
  const sig = sign(hash, dssePae(DSSE_PAYLOAD_TYPE, payload), { key: privateKey, dsaEncoding: "der" });
  return {
    mediaType: SIGSTORE_BUNDLE_MEDIA_TYPE,
    verificationMaterial: { publicKey: { hint: keyHint(privateKey) }, tlogEntries: [] },
    dsseEnvelope: {
      payload: payload.toString("base64"),
      payloadType: DSSE_PAYLOAD_TYPE,
      signatures: [{ sig: sig.toString("base64"), keyid: "" }],
    },
  };
}

export type Opened = { ok: true; statement: Statement } | { ok: false; field: string; reason: string };

/** Checks a Sigstore bundle's DSSE signature under `publicKey` and returns its in-toto statement. Never throws. */
export function openSigstoreBundle(bundle: unknown, publicKey: KeyObject): Opened {
  const b = bundle as Partial<SigstoreBundle> | null;
  const bad = (field: string, reason: string): Opened => ({ ok: false, field, reason });
  if (typeof b !== "object" || b === null) return bad("", "not a JSON object");
  if (b.mediaType !== SIGSTORE_BUNDLE_MEDIA_TYPE)
    return bad("mediaType", `expected ${SIGSTORE_BUNDLE_MEDIA_TYPE}, got ${JSON.stringify(b.mediaType)}`);
  const env = b.dsseEnvelope;
  if (!env || typeof env.payload !== "string" || !Array.isArray(env.signatures))
    return bad("dsseEnvelope", "missing (payload, payloadType, signatures)");
  if (env.payloadType !== DSSE_PAYLOAD_TYPE)
    return bad("dsseEnvelope.payloadType", `expected ${DSSE_PAYLOAD_TYPE}, got ${JSON.stringify(env.payloadType)}`);
  if (env.signatures.length !== 1 || typeof env.signatures[0]?.sig !== "string")
    return bad("dsseEnvelope.signatures", "expected exactly one signature");
  let hash: string;
  try {
    hash = ecHash(publicKey);
  } catch (e) {
    return bad("publicKey", (e as Error).message);
  }
  const hint = b.verificationMaterial?.publicKey?.hint;
  if (hint !== undefined && hint !== keyHint(publicKey))
    return bad("verificationMaterial.publicKey.hint", "signed with another key than the one given");
  const payload = Buffer.from(env.payload, "base64");
  let ok: boolean;
  try {
    ok = verify(
      hash,
      dssePae(env.payloadType, payload),
      { key: publicKey, dsaEncoding: "der" },
      Buffer.from(env.signatures[0].sig, "base64"),
    );
  } catch {
    ok = false;
  }
  if (!ok) return bad("dsseEnvelope.signatures[0].sig", "the signature does not verify under the given key");
  let statement: Statement;
  try {
    statement = JSON.parse(payload.toString("utf8")) as Statement;
  } catch {
    return bad("dsseEnvelope.payload", "not JSON");
  }
  if (statement?._type !== STATEMENT_TYPE) return bad("payload._type", `expected ${STATEMENT_TYPE}`);
  if (!Array.isArray(statement.subject) || statement.subject.length !== 1)
    return bad("payload.subject", "expected exactly one subject");
  return { ok: true, statement };
}

export interface Mismatch {
  field: string;
  reason: string;
}

/** What differs between a signed model statement and the files on disk (empty: the same). */
export function compareManifest(statement: Statement, onDisk: readonly Resource[]): Mismatch[] {
  const out: Mismatch[] = [];
  const signed = (statement.predicate.resources ?? []) as Resource[];
  if (manifestRootDigest(signed) !== statement.subject[0]?.digest.sha256)
    out.push({ field: "payload.subject[0].digest", reason: "does not match the signed resources" });
  const disk = new Map(onDisk.map((r) => [r.name, r.digest]));
  for (const r of signed) {
    const d = disk.get(r.name);
    if (d === undefined)
      out.push({ field: `resources.${r.name}`, reason: "signed, but missing from the model directory" });
    else if (d !== r.digest)
      out.push({ field: `resources.${r.name}`, reason: `sha256 on disk ${d}, signed ${r.digest}` });
    disk.delete(r.name);
  }
  for (const name of disk.keys())
    out.push({ field: `resources.${name}`, reason: "in the model directory but not signed" });
  return out;
}

/** What differs between a model signature's ledger binding and the bundle's final digests. */
export function compareBinding(
  statement: Statement,
  bundle: { job: string; specDigest: string | null; final: Record<string, string> | null },
): Mismatch[] {
  const b = statement.predicate.rft as LedgerBinding | undefined;
  if (!b)
    return [{ field: "predicate.rft", reason: "the signature names no ledger (not made by rft audit sign-model)" }];
  const out: Mismatch[] = [];
  if (b.job !== bundle.job)
    out.push({ field: "predicate.rft.job", reason: `signed for job ${b.job}, the bundle is ${bundle.job}` });
  if (b.specDigest !== bundle.specDigest)
    out.push({
      field: "predicate.rft.specDigest",
      reason: `signed ${b.specDigest}, the bundle has ${bundle.specDigest}`,
    });
  if (!bundle.final)
    out.push({ field: "predicate.rft.final", reason: "the bundle has no final model (job not finished)" });
  else if (canonicalJson(b.final) !== canonicalJson(bundle.final)) {
    const groups = new Set([...Object.keys(b.final), ...Object.keys(bundle.final)]);
    const diff = [...groups].filter((g) => b.final[g] !== bundle.final![g]);
    out.push({
      field: "predicate.rft.final",
      reason: `differs from the ledger's final digests in ${diff.slice(0, 5).join(", ")}`,
    });
  }
  return out;
}

/** Everything the provenance statement records, from the ledger. */
export interface RunFacts {
  job: string;
  specDigest: string;
  /** The digest of the base model's group digests (canonical JSON) and their count. */
  baseGroups: Record<string, string>;
  dataset: { rows: number; manifestRoot: string };
  /** Per authority: the Merkle root over its own rows' {id, hash} (same rule as the manifest root). */
  authorities: { name: string; rows: number; manifestRoot: string; lawfulBasis: string }[];
  ledgerMerkleRoot: string;
  events: number;
  steps: number;
  startedOn: string;
  finishedOn: string;
  worldSize: number;
}

const hexOf = (d: string) => d.replace(/^sha256:/, "");

/** An in-toto SLSA provenance v1 statement of the training run: materials in, the model out. */
export function provenanceStatement(modelName: string, modelRootDigest: string, f: RunFacts): Statement {
  return {
    _type: STATEMENT_TYPE,
    subject: [{ name: modelName, digest: { sha256: modelRootDigest } }],
    predicateType: SLSA_PROVENANCE_PREDICATE,
    predicate: {
      buildDefinition: {
        buildType: "https://rft.dev/FineTuneJob/v1alpha1",
        externalParameters: { job: f.job, specDigest: f.specDigest },
        internalParameters: { worldSize: f.worldSize, steps: f.steps },
        resolvedDependencies: [
          {
            name: "base-model",
            digest: { sha256: hexOf(sha256Canonical(f.baseGroups)) },
            annotations: {
              what: "SHA-256 of the canonical JSON of the base model's parameter-group digests",
              groups: f.baseGroups,
            },
          },
          { name: "job-spec", digest: { sha256: hexOf(f.specDigest) } },
          {
            name: "dataset",
            digest: { [MERKLE_DIGEST]: f.dataset.manifestRoot },
            annotations: { rows: f.dataset.rows },
          },
          ...f.authorities.map((a) => ({
            name: `dataset/${a.name}`,
            digest: { [MERKLE_DIGEST]: a.manifestRoot },
            annotations: { rows: a.rows, lawfulBasis: a.lawfulBasis },
          })),
        ],
      },
      runDetails: {
        builder: { id: "https://rft.dev/rft-operator/trainer" },
        metadata: { invocationId: f.job, startedOn: f.startedOn, finishedOn: f.finishedOn },
        byproducts: [
          { name: "ledger", digest: { [MERKLE_DIGEST]: f.ledgerMerkleRoot }, annotations: { events: f.events } },
        ],
      },
    },
  };
}

function sha256Canonical(v: unknown): string {
  return `sha256:${createHash("sha256").update(canonicalJson(v)).digest("hex")}`;
}

/** What differs between a provenance statement and the bundle (and the model signature's subject). */
export function compareProvenance(
  statement: Statement,
  bundle: { job: string; specDigest: string | null; base: Record<string, string> | null; manifestRoot: string | null },
  modelSubject?: string,
): Mismatch[] {
  const out: Mismatch[] = [];
  if (statement.predicateType !== SLSA_PROVENANCE_PREDICATE)
    return [{ field: "payload.predicateType", reason: `expected ${SLSA_PROVENANCE_PREDICATE}` }];
  const p = statement.predicate as {
    buildDefinition?: {
      externalParameters?: { job?: string; specDigest?: string };
      resolvedDependencies?: ResourceDescriptor[];
    };
  };
  const deps = new Map((p.buildDefinition?.resolvedDependencies ?? []).map((d) => [d.name, d.digest]));
  const ext = p.buildDefinition?.externalParameters;
  if (ext?.job !== bundle.job)
    out.push({ field: "externalParameters.job", reason: `${ext?.job} is not the bundle's job ${bundle.job}` });
  if (ext?.specDigest !== bundle.specDigest || deps.get("job-spec")?.sha256 !== hexOf(bundle.specDigest ?? ""))
    out.push({ field: "resolvedDependencies.job-spec", reason: "not the bundle's spec digest" });
  if (!bundle.base || deps.get("base-model")?.sha256 !== hexOf(sha256Canonical(bundle.base)))
    out.push({ field: "resolvedDependencies.base-model", reason: "not the bundle's base-model digests" });
  if (deps.get("dataset")?.[MERKLE_DIGEST] !== bundle.manifestRoot)
    out.push({ field: "resolvedDependencies.dataset", reason: "not the bundle's dataset manifest root" });
  if (modelSubject !== undefined && statement.subject[0]?.digest.sha256 !== modelSubject)
    out.push({ field: "payload.subject[0].digest", reason: "not the signed model's manifest digest" });
  return out;
}
