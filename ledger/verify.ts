/**
 * verifyBundle: the auditor's check of a provenance bundle. Pure (no I/O, no clock).
 *
 * It re-derives everything from the signed events and compares: signatures, the hash chain, the Merkle root
 * and the signed tree head, admission (credentials, envelopes), that no row's gradient reached a group outside
 * its envelope, that each group's weights changed only in steps with admitted contributions to it, checkpoints
 * and the final model against the last after-digests, and (optionally) the model on disk and the dataset rows.
 * A job.resumed returns the weights to an earlier checkpoint.saved of the chain (or the base model): the steps
 * applied after it are abandoned, and the next steps may repeat their numbers.
 * Every failure names its check, the event seq and the field.
 *
 * This file holds the entry points, the report and the bundle-level phases (keys, chain, Merkle root, tree
 * head); verify-replay.ts holds the semantic replay, one method per event type.
 */
import type { LedgerEvent, SignedTreeHead } from "../proto/ledger-events.js";
import type { ProvenanceBundle } from "./bundle.js";
import { BUNDLE_FORMAT } from "./bundle.js";
import { canonicalJson } from "./canonical.js";
import { ChainChecker, EventPreparer, type PreparedEvent, type PreparedEvents, prepareEvents } from "./chain.js";
import type { DatasetRow } from "./dataset.js";
import { leafHash, treeHash } from "./merkle.js";
import { compressRanges } from "./resume.js";
import { isCanonicalPublicKey } from "./sign.js";
import { sharedVerifyPool } from "./verify-pool.js";
import {
  type AuthorityReport,
  Replay,
  type ReplayCheck,
  type ReplayContext,
  type ResumeReport,
  safeKeyId,
  short,
} from "./verify-replay.js";

export type { AuthorityReport, ResumeReport };
import { headProgressionError, treeHeadError } from "./tree-head.js";

/** The replay's checks (verify-replay.ts) and the bundle-level ones. */
export type CheckName =
  | ReplayCheck
  | "schema"
  | "signature"
  | "chain"
  | "merkle"
  | "tree-head"
  // Checked by the CLI after the bundle (ledger/model-signing.ts): the OpenSSF model signature and the provenance statement.
  | "model-signature"
  | "provenance";

export interface Failure {
  check: CheckName;
  /** seq of the event concerned (null: not about one event). */
  seq: number | null;
  /** Where: a JSON path inside the event, or a bundle field. */
  field: string;
  reason: string;
}

export interface VerifyReport {
  ok: boolean;
  job: string;
  events: number;
  steps: number;
  rows: { admitted: number; rejected: number };
  authorities: AuthorityReport[];
  /** Rows admitted without provenance (under the job's default envelope), reported like an authority. */
  unattributed: AuthorityReport | null;
  finished: boolean;
  /** Restarts recorded by job.resumed events: the checkpoint returned to and the steps abandoned. */
  resumes: ResumeReport[];
  treeHead: { size: number; root: string; timestamp: number } | null;
  failures: Failure[];
  /** Things that are not failures but limit what was checked. */
  notes: string[];
}

export interface VerifyOptions {
  /** Digests of the final model's parameter groups, as measured from the weights on disk. */
  modelDigests?: Record<string, string>;
  /** The dataset rows (parsed JSONL, in order), to check against the manifest. */
  datasetRows?: DatasetRow[];
  /** Pin the job signing key / ledger key (raw base64 public key or key id) instead of trusting the bundle's. */
  jobKey?: string;
  ledgerKey?: string;
  /** The newest tree head of this job the auditor saw before: the bundle's head must not be older. */
  knownHead?: SignedTreeHead;
  /** Stop collecting after this many failures (default 1000). */
  maxFailures?: number;
}

const CHAIN_FIELD_CHECK: Record<string, CheckName> = { sig: "signature", keyId: "signature" };

/** A bundle without its events and its trailer (merkleRoot, treeHead): what a streaming verifier reads first. */
export type BundleFields = Omit<ProvenanceBundle, "events" | "merkleRoot" | "treeHead">;

/**
 * The auditor's check, one event at a time: `add` each event in order as prepared (EventPreparer: schema,
 * hash, leaf hash, signature validity), then `finish` with the bundle's stated Merkle root and tree head. Only
 * the replay's state is kept (row decisions, checkpoints, the current digests, one leaf hash per event), so a
 * bundle of any length verifies in bounded memory. verifyBundle is this over a bundle in memory.
 */
export interface BundleVerifier {
  /** The next event; `sigKey`: the key its `sigValid` was computed under. */
  add(e: PreparedEvent, sigKey: string | null): void;
  finish(merkleRoot: unknown, treeHead: unknown): VerifyReport;
}

/** verifyBundle with hashing and signatures on the verify pool's threads, in parallel with the rest. */
export async function verifyBundleAsync(bundle: ProvenanceBundle, opts: VerifyOptions = {}): Promise<VerifyReport> {
  if (!Array.isArray(bundle?.events)) return verifyBundle(bundle, opts);
  const { verifier, prep } = preparedVerifier(bundle, opts);
  for (const raw of bundle.events) {
    const wait = prep.addValue(raw);
    if (wait) await wait;
  }
  await prep.finish();
  return verifier.finish(bundle.merkleRoot, bundle.treeHead);
}

/**
 * A bundleVerifier fed in order by an EventPreparer that hashes and checks signatures (under the bundle's job
 * key) on the verify pool: add events to `prep`, await `prep.finish()`, then `verifier.finish(…)`.
 */
export function preparedVerifier(
  fields: BundleFields,
  opts: VerifyOptions,
): { verifier: BundleVerifier; prep: EventPreparer } {
  const key = typeof fields?.keys?.job?.publicKey === "string" ? fields.keys.job.publicKey : null;
  const verifier = bundleVerifier(fields, opts);
  return { verifier, prep: new EventPreparer(key, sharedVerifyPool(), (e) => verifier.add(e, key)) };
}

export function verifyBundle(
  bundle: ProvenanceBundle,
  opts: VerifyOptions = {},
  prepared?: PreparedEvents,
): VerifyReport {
  // Not a bundle, or no list of events: bundleVerifier says which.
  if (!Array.isArray(bundle?.events))
    return bundleVerifier({ ...bundle, events: null } as BundleFields, opts).finish(undefined, undefined);
  const v = bundleVerifier(bundle, opts);
  const p = prepared ?? prepareEvents(bundle.events);
  bundle.events.forEach((raw, i) => {
    const e = { raw, bad: p.schema[i]!, enc: p.encoded[i] ?? null, leaf: p.leaves[i] ?? null, sigValid: p.sigValid[i] };
    v.add(e, p.key);
  });
  return v.finish(bundle.merkleRoot, bundle.treeHead);
}

/** Records one failure. */
type Fail = (check: CheckName, seq: number | null, field: string, reason: string) => void;

/** Failures by phase, reported in this order (each phase in event order), whatever order they are found in. */
class FailureLog {
  readonly keys: Failure[] = [];
  readonly chain: Failure[] = [];
  readonly job: Failure[] = [];
  readonly tree: Failure[] = [];
  readonly replay: Failure[] = [];
  /** Failures past `max` in a phase, counted but not kept. */
  dropped = 0;

  constructor(readonly max: number) {}

  to(list: Failure[]): Fail {
    return (check, seq, field, reason) => {
      if (list.length < this.max) list.push({ check, seq, field, reason });
      else this.dropped++;
    };
  }

  /** The failures in phase order, at most `max` of them. */
  all(): Failure[] {
    return [...this.keys, ...this.chain, ...this.job, ...this.tree, ...this.replay];
  }
}

/** Why `bundle` is not a bundle whose events can be read at all (null: it is one). */
function refusal(bundle: BundleFields): { field: string; reason: string } | null {
  if (!bundle || typeof bundle !== "object" || bundle.format !== BUNDLE_FORMAT)
    return { field: "format", reason: `not a provenance bundle (format must be ${BUNDLE_FORMAT})` };
  const events = (bundle as { events?: unknown }).events;
  if (events !== undefined && !Array.isArray(events)) return { field: "events", reason: "events must be a list" };
  return null;
}

export function bundleVerifier(bundle: BundleFields, opts: VerifyOptions = {}): BundleVerifier {
  const check = new BundleCheck(bundle, opts);
  const refused = refusal(bundle);
  if (!refused) return check.start();
  check.failKeys("bundle", null, refused.field, refused.reason);
  return { add: () => undefined, finish: () => check.done() };
}

/**
 * The checks of one bundle, in phases: its keys (at the start), each event's signature, chain position and job
 * (as it is added), the semantic replay (verify-replay.ts, over the well-formed events), then the Merkle root
 * and the signed tree head (at the finish).
 */
class BundleCheck implements BundleVerifier {
  private readonly log: FailureLog;
  readonly failKeys: Fail;
  private readonly failChain: Fail;
  private readonly failJob: Fail;
  private readonly failTree: Fail;
  private readonly failReplay: Fail;
  private readonly failures: Failure[] = [];
  private readonly notes: string[] = [];
  private readonly report: VerifyReport;
  private ledgerKey: string | null = null;
  private chain!: ChainChecker;
  private readonly leaves: Buffer[] = [];
  /** undefined: no well-formed event yet; null: the first one was not job.started. */
  private replay: Replay | null | undefined;

  constructor(
    private readonly bundle: BundleFields,
    private readonly opts: VerifyOptions,
  ) {
    this.log = new FailureLog(opts.maxFailures ?? 1000);
    this.failKeys = this.log.to(this.log.keys);
    this.failChain = this.log.to(this.log.chain);
    this.failJob = this.log.to(this.log.job);
    this.failTree = this.log.to(this.log.tree);
    this.failReplay = this.log.to(this.log.replay);
    this.report = {
      ok: false,
      job: typeof bundle?.job === "string" ? bundle.job : "?",
      events: 0,
      steps: 0,
      rows: { admitted: 0, rejected: 0 },
      authorities: [],
      unattributed: null,
      finished: false,
      resumes: [],
      treeHead: null,
      failures: this.failures,
      notes: this.notes,
    };
  }

  /** Checks the bundle's keys and readies the chain check (signatures under the bundle's job key). */
  start(): this {
    this.ledgerKey = this.checkKey("ledger", this.opts.ledgerKey);
    const jobKey = this.checkKey("job", this.opts.jobKey);
    this.chain = new ChainChecker(jobKey, (f) => {
      const check: CheckName = f.reason.startsWith("schema:") ? "schema" : (CHAIN_FIELD_CHECK[f.field] ?? "chain");
      this.failChain(check, f.seq, f.field, f.reason);
    });
    return this;
  }

  /** keys.<which>: present, its keyId the SHA-256 of the key, and the pinned key when one is given. */
  private checkKey(which: "ledger" | "job", pin: string | undefined): string | null {
    const entry = this.bundle.keys?.[which];
    const key = entry?.publicKey;
    if (typeof key !== "string") {
      this.failKeys("keys", null, `keys.${which}.publicKey`, "missing");
      return null;
    }
    if (!isCanonicalPublicKey(key)) {
      this.failKeys("keys", null, `keys.${which}.publicKey`, "is not the base64 of a 32-byte Ed25519 public key");
      return null;
    }
    if (entry!.keyId !== safeKeyId(key))
      this.failKeys("keys", null, `keys.${which}.keyId`, `is not the SHA-256 of keys.${which}.publicKey`);
    if (pin && !keyMatches(key, pin))
      this.failKeys(
        "keys",
        null,
        `keys.${which}.publicKey`,
        `the bundle's ${which} key is not the pinned ${which} key`,
      );
    return key;
  }

  add(e: PreparedEvent, sigKey: string | null): void {
    const { bundle } = this;
    const index = this.report.events++;
    this.chain.add(e.raw, e.bad, e.enc, e.sigValid, sigKey);
    const ev = e.raw as { job?: unknown; seq?: unknown } | null;
    if (ev && typeof ev === "object" && ev.job !== bundle.job)
      this.failJob(
        "chain",
        typeof ev.seq === "number" ? ev.seq : null,
        "job",
        `event of job ${String(ev.job)} in a bundle of ${bundle.job} (index ${index})`,
      );
    this.leaves.push(e.leaf ?? leafHash(Buffer.from(safeCanonical(e.raw))));
    // The replay of the job's semantics over the well-formed events.
    if (!e.enc) return;
    if (this.replay === undefined) this.replay = Replay.start(e.enc, this.replayContext());
    else this.replay?.add(e.enc);
  }

  private replayContext(): ReplayContext {
    const { bundle, opts, report, notes } = this;
    return { bundle, opts, report, notes, fail: this.failReplay };
  }

  finish(merkleRoot: unknown, treeHead: unknown): VerifyReport {
    const root = treeHash(this.leaves).toString("hex");
    if (merkleRoot !== root)
      this.failTree(
        "merkle",
        null,
        "merkleRoot",
        `bundle states root ${short(merkleRoot as string)}, the events hash to ${short(root)}`,
      );
    if (this.ledgerKey !== null) this.checkTreeHead(treeHead as SignedTreeHead, root, this.ledgerKey);
    if (this.replay === undefined)
      this.failReplay("job", null, "events", "no job.started event: nothing else can be checked");
    this.replay?.end();
    return this.done();
  }

  /** The signed tree head: the ledger's signature, this job's log, the bundle's size and root. */
  private checkTreeHead(head: SignedTreeHead, root: string, ledgerKey: string): void {
    const fail = this.failTree;
    const n = this.leaves.length;
    const e = treeHeadError(head, ledgerKey);
    if (e) return fail("tree-head", null, "treeHead", e);
    this.report.treeHead = { size: head.size, root: head.root, timestamp: head.timestamp };
    if (head.log !== this.bundle.job)
      fail("tree-head", null, "treeHead.log", `head is for log ${head.log}, not ${this.bundle.job}`);
    if (head.size !== n) {
      fail(
        "tree-head",
        null,
        "treeHead.size",
        head.size < n
          ? `signed tree head covers ${head.size} events but the bundle holds ${n} (stale or replayed head)`
          : `signed tree head covers ${head.size} events but the bundle holds only ${n} (events missing)`,
      );
    } else if (head.root !== root) {
      fail(
        "tree-head",
        null,
        "treeHead.root",
        `signed root ${short(head.root)} is not the root of the bundle's events ${short(root)}`,
      );
    }
    if (this.opts.knownHead) this.checkKnownHead(this.opts.knownHead, head, ledgerKey);
  }

  /** A head the auditor saw before: it verifies, the bundle is not older, and its history is the bundle's. */
  private checkKnownHead(k: SignedTreeHead, head: SignedTreeHead, ledgerKey: string): void {
    const fail = this.failTree;
    const n = this.leaves.length;
    const kErr = treeHeadError(k, ledgerKey);
    if (kErr) return fail("tree-head", null, "knownHead", `the previously seen head does not verify: ${kErr}`);
    if (k.size > n)
      return fail(
        "tree-head",
        null,
        "treeHead",
        `rollback: a head of size ${k.size} was seen before, the bundle holds ${n} events`,
      );
    const progression = headProgressionError(k, head, []);
    if (progression && !progression.startsWith("no consistency proof") && !progression.startsWith("inconsistent")) {
      fail("tree-head", null, "treeHead", progression);
    }
    if (treeHash(this.leaves, 0, k.size).toString("hex") !== k.root) {
      fail(
        "tree-head",
        null,
        "treeHead",
        `the bundle's first ${k.size} events do not hash to the previously seen root (history rewritten)`,
      );
    }
  }

  done(): VerifyReport {
    const all = this.log.all();
    this.failures.push(...all.slice(0, this.log.max));
    const dropped = this.log.dropped + all.length - this.failures.length;
    if (dropped > 0) this.notes.push(`${dropped} further failures not listed`);
    this.report.ok = this.failures.length === 0;
    return this.report;
  }
}

function keyMatches(b64: string, pin: string): boolean {
  return pin === b64 || pin === safeKeyId(b64);
}
function safeCanonical(v: unknown): string {
  try {
    return canonicalJson(v);
  } catch {
    return String(v);
  }
}

/** Human-readable report (what `rft audit verify` prints). */
export function formatReport(r: VerifyReport): string {
  const lines: string[] = [];
  lines.push(`provenance bundle of job ${r.job}`);
  lines.push(
    `  events: ${r.events}   steps: ${r.steps}   rows admitted: ${r.rows.admitted}   rejected: ${r.rows.rejected}   finished: ${r.finished ? "yes" : "no"}`,
  );
  if (r.treeHead)
    lines.push(
      `  signed tree head: size ${r.treeHead.size}, root ${r.treeHead.root.slice(0, 16)}…, ${new Date(r.treeHead.timestamp).toISOString()}`,
    );
  const reps = r.unattributed ? [...r.authorities, r.unattributed] : r.authorities;
  for (const a of reps) {
    lines.push(`  authority ${a.name}${a.lawfulBasis ? ` (lawful basis: ${a.lawfulBasis})` : ""}`);
    lines.push(`    envelope: ${a.envelope.join(", ") || "-"}`);
    lines.push(`    rows admitted: ${a.admitted}, rejected: ${a.rejected}`);
    lines.push(`    groups touched: ${a.groupsTouched.length ? compressGroups(a.groupsTouched) : "none"}`);
    lines.push(`    steps: ${a.steps.length ? compressRanges(a.steps) : "none"}`);
  }
  if (r.resumes.length) {
    const n = r.resumes.length;
    const steps = r.resumes.reduce((a, x) => a + x.abandonedSteps.length, 0);
    lines.push(`  resumed ${n} time${n === 1 ? "" : "s"} (${steps} abandoned step${steps === 1 ? "" : "s"}):`);
    for (const x of r.resumes)
      lines.push(
        `    event seq ${x.seq}: back to ${x.checkpoint ?? "the base model"} (step ${x.step}), abandoned steps: ${x.abandonedSteps.length ? compressRanges(x.abandonedSteps) : "none"}`,
      );
  }
  for (const n of r.notes) lines.push(`  note: ${n}`);
  if (r.ok) lines.push("VERIFIED: every check passed");
  else {
    lines.push(`FAILED: ${r.failures.length} check(s) failed`);
    for (const f of r.failures)
      lines.push(`  [${f.check}] ${f.seq === null ? "bundle" : `event seq ${f.seq}`}, ${f.field}: ${f.reason}`);
  }
  return lines.join("\n");
}

function compressGroups(gs: string[]): string {
  return gs.length > 12 ? `${gs.slice(0, 12).join(", ")}, … (${gs.length} groups)` : gs.join(", ");
}

export type { LedgerEvent };
