/**
 * Ledger event contracts (issue 5): the signed events a trainer emits and the ledger verifies, as TypeBox schemas.
 *
 * Every event is one JSON object, the *envelope*:
 *   { v: 1, job: "<namespace>/<name>", seq, type, time, prev, body, keyId, sig }
 * - seq      0, 1, 2, … per job, no gaps; one writer per job chain (rank 0 in a multi-rank job).
 * - prev     null for seq 0, else the hash of the previous event of this job (see below).
 * - keyId    hex SHA-256 of the job signing key's raw 32-byte Ed25519 public key (declared in job.started).
 * - sig      base64 Ed25519 signature over the RFC 8785 canonical JSON of the envelope without `sig`.
 * - hash of an event = "sha256:" + hex SHA-256 of the canonical JSON of the whole envelope (with `sig`).
 * Digests are written "sha256:<64 hex>". Parameter group names: see proto/envelope.ts.
 * The byte-level rules (canonicalization, signing) live in ledger/; this file holds only shapes and names.
 */
import { type Static, Type as T, type TSchema } from "@sinclair/typebox";

export const LEDGER_EVENT_VERSION = 1 as const;
export const LEDGER_STREAM = "RFT_LEDGER";
export const LEDGER_HEADS_BUCKET = "RFT_LEDGER_HEADS";
export const LEDGER_SUBJECT_PREFIX = "rft.ledger";

export const Digest = T.String({ pattern: "^sha256:[0-9a-f]{64}$" });
export const KeyId = T.String({ pattern: "^[0-9a-f]{64}$" });
/** base64 of the raw 32-byte Ed25519 public key. */
export const PublicKeyB64 = T.String({ pattern: "^[A-Za-z0-9+/]{43}=$" });
/** base64 of a 64-byte Ed25519 signature. */
export const SignatureB64 = T.String({ pattern: "^[A-Za-z0-9+/]{86}==$" });
/** "<namespace>/<name>" (Kubernetes names: DNS-1123 label / subdomain). */
export const JobRef = T.String({
  pattern: "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?/[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$",
});
export const RowId = T.String({ minLength: 1, maxLength: 256 });
export const GroupName = T.String({
  pattern: "^(embeddings|final_norm|lm_head|layers\\.(0|[1-9][0-9]*)\\.(attention|mlp|norms))$",
});
const GroupMap = <S extends TSchema>(s: S) => T.Record(GroupName, s, { additionalProperties: false });
const Strict = { additionalProperties: false } as const;

export const Authority = T.Object(
  {
    name: T.String({ minLength: 1, maxLength: 128 }),
    publicKey: PublicKeyB64,
    keyId: KeyId,
    lawfulBasis: T.String({ maxLength: 1024 }),
    /** Envelope selectors as declared (proto/envelope.ts grammar). */
    envelope: T.Array(T.String({ minLength: 1, maxLength: 64 }), { minItems: 1, maxItems: 256 }),
  },
  Strict,
);
export type Authority = Static<typeof Authority>;

export const JobStartedBody = T.Object(
  {
    /** Digest of the canonical JSON of the FineTuneJob spec. */
    specDigest: Digest,
    /** The job signing key (its keyId is the envelope's keyId for every event of the job). */
    signer: T.Object({ publicKey: PublicKeyB64 }, Strict),
    model: T.Object(
      {
        numLayers: T.Integer({ minimum: 0, maximum: 4096 }),
        /** Base-model digest of every parameter group. */
        groups: GroupMap(Digest),
      },
      Strict,
    ),
    dataset: T.Object(
      {
        rows: T.Integer({ minimum: 0 }),
        /** RFC 6962 Merkle root (hex) over canonical {id, hash} of every row in dataset order. */
        manifestRoot: T.String({ pattern: "^[0-9a-f]{64}$" }),
      },
      Strict,
    ),
    authorities: T.Array(Authority, { maxItems: 1024 }),
    requireCredentials: T.Boolean(),
    /** Envelope for rows without provenance when credentials are not required (absent: such rows are rejected). */
    defaultEnvelope: T.Optional(T.Array(T.String({ minLength: 1, maxLength: 64 }), { minItems: 1, maxItems: 256 })),
    /** Number of trainer ranks; > 1 means every step is closed by a step.committed event. */
    worldSize: T.Integer({ minimum: 1, maximum: 65536 }),
  },
  Strict,
);

export const RowAdmittedBody = T.Object(
  {
    row: RowId,
    hash: Digest,
    /** null: admitted without provenance under the job's defaultEnvelope. */
    authority: T.Union([T.String({ minLength: 1, maxLength: 128 }), T.Null()]),
    /** The authority's Ed25519 signature over the 32 raw bytes of `hash` (base64); null without provenance. */
    credential: T.Union([SignatureB64, T.Null()]),
    /** The row's envelope, expanded to parameter groups (canonical order). */
    groups: T.Array(GroupName, { minItems: 1 }),
  },
  Strict,
);

export const REJECT_CODES = ["unknown_authority", "bad_credential", "missing_credential", "invalid_row"] as const;
export type RejectCode = (typeof REJECT_CODES)[number];

export const RowRejectedBody = T.Object(
  {
    row: RowId,
    hash: Digest,
    authority: T.Union([T.String({ maxLength: 128 }), T.Null()]),
    code: T.Union(REJECT_CODES.map((c) => T.Literal(c))),
    reason: T.String({ maxLength: 1024 }),
  },
  Strict,
);

export const RewardSummary = T.Object(
  {
    count: T.Integer({ minimum: 0 }),
    mean: T.Number(),
    std: T.Number({ minimum: 0 }),
    min: T.Number(),
    max: T.Number(),
  },
  Strict,
);

export const UpdateAppliedBody = T.Object(
  {
    step: T.Integer({ minimum: 0 }),
    rank: T.Integer({ minimum: 0 }),
    /** Row ids whose gradient entered each group in this step (only groups with contributions appear). */
    contributions: GroupMap(T.Array(RowId, { minItems: 1 })),
    /** Per contributing group: L2 norm of the accumulated (masked) gradient and the digest of its bytes. */
    gradients: GroupMap(T.Object({ l2: T.Number({ minimum: 0 }), digest: Digest }, Strict)),
    /** Every group's weight digest before and after the optimizer step. */
    weights: GroupMap(T.Object({ before: Digest, after: Digest }, Strict)),
    reward: RewardSummary,
  },
  Strict,
);

export const StepCommittedBody = T.Object(
  {
    step: T.Integer({ minimum: 0 }),
    /** Every rank's update.applied event hash for this step. */
    ranks: T.Array(T.Object({ rank: T.Integer({ minimum: 0 }), event: Digest }, Strict), { minItems: 1 }),
    /** Every group's weight digest after the step (identical on all ranks). */
    weights: GroupMap(Digest),
  },
  Strict,
);

export const CheckpointSavedBody = T.Object(
  {
    step: T.Integer({ minimum: 0 }),
    name: T.String({ minLength: 1, maxLength: 256 }),
    groups: GroupMap(Digest),
    metrics: T.Optional(T.Record(T.String({ maxLength: 128 }), T.Number())),
  },
  Strict,
);

/**
 * A restart of the job from a checkpoint (or from the base model, `checkpoint: null`) after an attempt that
 * stopped. The chain never forgets: the steps the stopped attempt applied after that checkpoint stay in the
 * ledger and are listed here as abandoned; training goes on from the checkpoint's weights with the next seq, and
 * may repeat the abandoned step numbers.
 */
export const JobResumedBody = T.Object(
  {
    /** The checkpoint resumed from: its checkpoint.saved event (seq and hash), name and step; null: the base model. */
    checkpoint: T.Union([
      T.Object(
        {
          name: T.String({ minLength: 1, maxLength: 256 }),
          step: T.Integer({ minimum: 0 }),
          seq: T.Integer({ minimum: 0 }),
          event: Digest,
        },
        Strict,
      ),
      T.Null(),
    ]),
    /** Every group's digest of the weights restored (measured after loading). */
    groups: GroupMap(Digest),
    /** Steps applied after the checkpoint and discarded with the stopped attempt's weights (ascending). */
    abandonedSteps: T.Array(T.Integer({ minimum: 0 })),
  },
  Strict,
);

export const JOB_FINISH_STATUSES = ["succeeded", "failed", "cancelled"] as const;
export const JobFinishedBody = T.Object(
  {
    status: T.Union(JOB_FINISH_STATUSES.map((s) => T.Literal(s))),
    steps: T.Integer({ minimum: 0 }),
    /** Final-model digest of every group. */
    model: GroupMap(Digest),
  },
  Strict,
);

const envelopeOf = <K extends string, B extends TSchema>(type: K, body: B) =>
  T.Object(
    {
      v: T.Literal(LEDGER_EVENT_VERSION),
      job: JobRef,
      seq: T.Integer({ minimum: 0 }),
      type: T.Literal(type),
      /** RFC 3339 UTC, as Date#toISOString writes it. */
      time: T.String({ pattern: "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,9})?Z$" }),
      prev: T.Union([Digest, T.Null()]),
      body,
      keyId: KeyId,
      sig: SignatureB64,
    },
    Strict,
  );

export const JobStartedEvent = envelopeOf("job.started", JobStartedBody);
export const RowAdmittedEvent = envelopeOf("row.admitted", RowAdmittedBody);
export const RowRejectedEvent = envelopeOf("row.rejected", RowRejectedBody);
export const UpdateAppliedEvent = envelopeOf("update.applied", UpdateAppliedBody);
export const StepCommittedEvent = envelopeOf("step.committed", StepCommittedBody);
export const CheckpointSavedEvent = envelopeOf("checkpoint.saved", CheckpointSavedBody);
export const JobFinishedEvent = envelopeOf("job.finished", JobFinishedBody);
export const JobResumedEvent = envelopeOf("job.resumed", JobResumedBody);

export const LedgerEvent = T.Union([
  JobStartedEvent,
  RowAdmittedEvent,
  RowRejectedEvent,
  UpdateAppliedEvent,
  StepCommittedEvent,
  CheckpointSavedEvent,
  JobFinishedEvent,
  JobResumedEvent,
]);

export type JobStartedBody = Static<typeof JobStartedBody>;
export type RowAdmittedBody = Static<typeof RowAdmittedBody>;
export type RowRejectedBody = Static<typeof RowRejectedBody>;
export type UpdateAppliedBody = Static<typeof UpdateAppliedBody>;
export type StepCommittedBody = Static<typeof StepCommittedBody>;
export type CheckpointSavedBody = Static<typeof CheckpointSavedBody>;
export type JobFinishedBody = Static<typeof JobFinishedBody>;
export type JobResumedBody = Static<typeof JobResumedBody>;
export type RewardSummary = Static<typeof RewardSummary>;
export type LedgerEvent = Static<typeof LedgerEvent>;
export type LedgerEventType = LedgerEvent["type"];

/** Body type of each event type. */
export interface EventBodies {
  "job.started": JobStartedBody;
  "row.admitted": RowAdmittedBody;
  "row.rejected": RowRejectedBody;
  "update.applied": UpdateAppliedBody;
  "step.committed": StepCommittedBody;
  "checkpoint.saved": CheckpointSavedBody;
  "job.finished": JobFinishedBody;
  "job.resumed": JobResumedBody;
}

/** An event before signing. */
export type UnsignedEvent = Omit<LedgerEvent, "sig">;

/**
 * NATS subject of a job's ledger events: rft.ledger.<namespace>.<name>. Kubernetes names may contain '.',
 * which would split a subject token; they are written '_' (never valid in a Kubernetes name, so reversible).
 */
export function ledgerSubject(job: string): string {
  const { namespace, name } = parseJobRef(job);
  return `${LEDGER_SUBJECT_PREFIX}.${namespace}.${name.replaceAll(".", "_")}`;
}

/** The job ("ns/name") of a ledger subject, or null if it is not one. */
export function jobOfSubject(subject: string): string | null {
  const parts = subject.split(".");
  if (parts.length !== 4 || `${parts[0]}.${parts[1]}` !== LEDGER_SUBJECT_PREFIX) return null;
  return `${parts[2]}/${parts[3]!.replaceAll("_", ".")}`;
}

export function parseJobRef(job: string): { namespace: string; name: string } {
  const i = job.indexOf("/");
  if (i <= 0 || i === job.length - 1 || job.indexOf("/", i + 1) >= 0) {
    throw new Error(`job reference ${JSON.stringify(job)} is not <namespace>/<name>`);
  }
  return { namespace: job.slice(0, i), name: job.slice(i + 1) };
}

/**
 * A signed tree head of one job's log (the ledger service signs one periodically; KV bucket RFT_LEDGER_HEADS,
 * key "<namespace>.<name with '.' written '_'>"). `root` is the RFC 6962 Merkle root (hex) of the job's first
 * `size` events (leaf input: each event's canonical JSON). `sig` is the ledger key's Ed25519 signature over
 * the canonical JSON of the head without `sig`.
 */
export const SignedTreeHead = T.Object(
  {
    v: T.Literal(1),
    log: JobRef,
    size: T.Integer({ minimum: 0 }),
    root: T.String({ pattern: "^[0-9a-f]{64}$" }),
    /** Milliseconds since the Unix epoch. */
    timestamp: T.Integer({ minimum: 0 }),
    keyId: KeyId,
    sig: SignatureB64,
  },
  Strict,
);
export type SignedTreeHead = Static<typeof SignedTreeHead>;

/** KV key of a job's latest signed tree head. */
export function headKey(job: string): string {
  const { namespace, name } = parseJobRef(job);
  return `${namespace}.${name.replaceAll(".", "_")}`;
}
