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
 */
import { expandEnvelope, parameterGroups, sortGroups } from "../proto/envelope.js";
import type { JobResumedBody, LedgerEvent, SignedTreeHead, UpdateAppliedBody } from "../proto/ledger-events.js";
import type { ProvenanceBundle } from "./bundle.js";
import { BUNDLE_FORMAT, manifestFromEvents } from "./bundle.js";
import { canonicalJson } from "./canonical.js";
import {
  ChainChecker,
  type EncodedEvent,
  EventPreparer,
  type PreparedEvent,
  type PreparedEvents,
  prepareEvents,
} from "./chain.js";
import { type DatasetRow, manifestRoot, rowContentHash, rowId, verifyRowCredential } from "./dataset.js";
import { leafHash, treeHash } from "./merkle.js";
import { compressRanges } from "./resume.js";
import { sharedVerifyPool } from "./verify-pool.js";
import { keyIdOfRaw } from "./sign.js";
import { headProgressionError, treeHeadError } from "./tree-head.js";

export type CheckName =
  | "bundle"
  | "keys"
  | "schema"
  | "signature"
  | "chain"
  | "merkle"
  | "tree-head"
  | "job"
  | "admission"
  | "envelope"
  | "weights"
  | "steps"
  | "checkpoint"
  | "resume"
  | "final-model"
  | "manifest"
  | "dataset"
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

export interface AuthorityReport {
  name: string;
  lawfulBasis: string;
  envelope: string[];
  admitted: number;
  rejected: number;
  /** Groups its rows' gradients reached (canonical order). */
  groupsTouched: string[];
  /** Steps in which its rows contributed. */
  steps: number[];
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

export interface ResumeReport {
  /** seq of the job.resumed event. */
  seq: number;
  /** The checkpoint returned to (null: the base model). */
  checkpoint: string | null;
  step: number;
  /** Steps applied after that checkpoint and discarded. */
  abandonedSteps: number[];
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

/** The semantic replay's two entry points (see startReplay). */
interface Replay {
  add(e: EncodedEvent): void;
  end(): void;
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

export function bundleVerifier(bundle: BundleFields, opts: VerifyOptions = {}): BundleVerifier {
  const max = opts.maxFailures ?? 1000;
  let dropped = 0;
  /** Failures by phase, reported in this order (each phase in event order), whatever order they are found in. */
  const phases = {
    keys: [] as Failure[],
    chain: [] as Failure[],
    job: [] as Failure[],
    tree: [] as Failure[],
    replay: [] as Failure[],
  };
  const failTo = (list: Failure[]) => (check: CheckName, seq: number | null, field: string, reason: string) => {
    if (list.length < max) list.push({ check, seq, field, reason });
    else dropped++;
  };
  const failKeys = failTo(phases.keys);
  const failChain = failTo(phases.chain);
  const failJob = failTo(phases.job);
  const failTree = failTo(phases.tree);
  const fail = failTo(phases.replay);
  const failures: Failure[] = [];
  const notes: string[] = [];
  const report: VerifyReport = {
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
    failures,
    notes,
  };
  const refuse = (field: string, reason: string): BundleVerifier => {
    failKeys("bundle", null, field, reason);
    return { add: () => undefined, finish: () => done() };
  };

  // ---- bundle shape and keys
  if (!bundle || typeof bundle !== "object" || bundle.format !== BUNDLE_FORMAT)
    return refuse("format", `not a provenance bundle (format must be ${BUNDLE_FORMAT})`);
  const events = (bundle as { events?: unknown }).events;
  if (events !== undefined && !Array.isArray(events)) return refuse("events", "events must be a list");
  const ledgerKey = bundle.keys?.ledger?.publicKey;
  if (typeof ledgerKey !== "string") failKeys("keys", null, "keys.ledger.publicKey", "missing");
  else {
    if (bundle.keys.ledger.keyId !== safeKeyId(ledgerKey))
      failKeys("keys", null, "keys.ledger.keyId", "is not the SHA-256 of keys.ledger.publicKey");
    if (opts.ledgerKey && !keyMatches(ledgerKey, opts.ledgerKey)) {
      failKeys("keys", null, "keys.ledger.publicKey", "the bundle's ledger key is not the pinned ledger key");
    }
  }
  const jobKey = bundle.keys?.job?.publicKey;
  if (typeof jobKey !== "string") failKeys("keys", null, "keys.job.publicKey", "missing");
  else {
    if (bundle.keys.job!.keyId !== safeKeyId(jobKey))
      failKeys("keys", null, "keys.job.keyId", "is not the SHA-256 of keys.job.publicKey");
    if (opts.jobKey && !keyMatches(jobKey, opts.jobKey))
      failKeys("keys", null, "keys.job.publicKey", "the bundle's job key is not the pinned job key");
  }

  // ---- signatures, chain (the events' own job is checked here too)
  const chain = new ChainChecker(typeof jobKey === "string" ? jobKey : null, (f) => {
    const check: CheckName = f.reason.startsWith("schema:") ? "schema" : (CHAIN_FIELD_CHECK[f.field] ?? "chain");
    failChain(check, f.seq, f.field, f.reason);
  });
  const leaves: Buffer[] = [];
  let replay: Replay | null | undefined;

  return {
    add(e: PreparedEvent, sigKey: string | null): void {
      const index = report.events++;
      chain.add(e.raw, e.bad, e.enc, e.sigValid, sigKey);
      const ev = e.raw as { job?: unknown; seq?: unknown } | null;
      if (ev && typeof ev === "object" && ev.job !== bundle.job)
        failJob(
          "chain",
          typeof ev.seq === "number" ? ev.seq : null,
          "job",
          `event of job ${String(ev.job)} in a bundle of ${bundle.job} (index ${index})`,
        );
      leaves.push(e.leaf ?? leafHash(Buffer.from(safeCanonical(e.raw))));
      // ---- replay of the job's semantics over the well-formed events
      if (!e.enc) return;
      if (replay === undefined) replay = startReplay(e.enc);
      else replay?.add(e.enc);
    },
    finish(merkleRoot: unknown, treeHead: unknown): VerifyReport {
      merkleAndHead(merkleRoot, treeHead as SignedTreeHead);
      if (replay === undefined) fail("job", null, "events", "no job.started event: nothing else can be checked");
      replay?.end();
      return done();
    },
  };

  function done(): VerifyReport {
    const all = [...phases.keys, ...phases.chain, ...phases.job, ...phases.tree, ...phases.replay];
    failures.push(...all.slice(0, max));
    dropped += all.length - failures.length;
    if (dropped > 0) notes.push(`${dropped} further failures not listed`);
    report.ok = failures.length === 0;
    return report;
  }

  // ---- Merkle root and signed tree head
  function merkleAndHead(merkleRoot: unknown, head: SignedTreeHead): void {
    const fail = failTree;
    const root = treeHash(leaves).toString("hex");
    if (merkleRoot !== root)
      fail(
        "merkle",
        null,
        "merkleRoot",
        `bundle states root ${short(merkleRoot as string)}, the events hash to ${short(root)}`,
      );
    if (typeof ledgerKey === "string") {
      const e = treeHeadError(head, ledgerKey);
      if (e) fail("tree-head", null, "treeHead", e);
      else {
        report.treeHead = { size: head.size, root: head.root, timestamp: head.timestamp };
        if (head.log !== bundle.job)
          fail("tree-head", null, "treeHead.log", `head is for log ${head.log}, not ${bundle.job}`);
        if (head.size !== leaves.length) {
          fail(
            "tree-head",
            null,
            "treeHead.size",
            head.size < leaves.length
              ? `signed tree head covers ${head.size} events but the bundle holds ${leaves.length} (stale or replayed head)`
              : `signed tree head covers ${head.size} events but the bundle holds only ${leaves.length} (events missing)`,
          );
        } else if (head.root !== root) {
          fail(
            "tree-head",
            null,
            "treeHead.root",
            `signed root ${short(head.root)} is not the root of the bundle's events ${short(root)}`,
          );
        }
        if (opts.knownHead) {
          const k = opts.knownHead;
          const kErr = treeHeadError(k, ledgerKey);
          if (kErr) fail("tree-head", null, "knownHead", `the previously seen head does not verify: ${kErr}`);
          else if (k.size > leaves.length) {
            fail(
              "tree-head",
              null,
              "treeHead",
              `rollback: a head of size ${k.size} was seen before, the bundle holds ${leaves.length} events`,
            );
          } else {
            const progression = headProgressionError(k, head, []);
            if (
              progression &&
              !progression.startsWith("no consistency proof") &&
              !progression.startsWith("inconsistent")
            ) {
              fail("tree-head", null, "treeHead", progression);
            }
            if (treeHash(leaves, 0, k.size).toString("hex") !== k.root) {
              fail(
                "tree-head",
                null,
                "treeHead",
                `the bundle's first ${k.size} events do not hash to the previously seen root (history rewritten)`,
              );
            }
          }
        }
      }
    }
  }

  /** The replay of the job's semantics, from its first well-formed event (which must be job.started). */
  function startReplay(firstEncoded: EncodedEvent): Replay | null {
    const first = firstEncoded.event;
    if (first.type !== "job.started") {
      fail("job", null, "events", "no job.started event: nothing else can be checked");
      return null;
    }
    const js = first.body;
    const L = js.model.numLayers;
    const allGroups = parameterGroups(L);
    const groupSet = new Set(allGroups);
    const seq0 = first.seq;

    // bundle fields derived from job.started
    if (bundle.specDigest !== js.specDigest) fail("bundle", null, "specDigest", "differs from job.started.specDigest");
    if (bundle.model?.numLayers !== L) fail("bundle", null, "model.numLayers", "differs from job.started");
    if (canonicalJson(bundle.model?.base ?? null) !== canonicalJson(js.model.groups))
      fail("bundle", null, "model.base", "differs from job.started.model.groups");
    if (bundle.keys?.job?.publicKey !== js.signer.publicKey)
      fail("keys", seq0, "body.signer.publicKey", "job.started declares a different key than the bundle's job key");
    checkGroupMap(js.model.groups, seq0, "body.model.groups", "weights");

    // authorities
    const authorities = new Map<
      string,
      { a: (typeof js.authorities)[number]; groups: Set<string>; rep: AuthorityReport }
    >();
    js.authorities.forEach((a, i) => {
      const field = `body.authorities.${i}`;
      if (authorities.has(a.name)) fail("job", seq0, `${field}.name`, `authority ${a.name} declared twice`);
      if (a.keyId !== safeKeyId(a.publicKey))
        fail("keys", seq0, `${field}.keyId`, `is not the SHA-256 of authority ${a.name}'s public key`);
      let groups = new Set<string>();
      try {
        groups = expandEnvelope(a.envelope, L);
      } catch (e) {
        fail("job", seq0, `${field}.envelope`, `authority ${a.name}: ${(e as Error).message}`);
      }
      const rep: AuthorityReport = {
        name: a.name,
        lawfulBasis: a.lawfulBasis,
        envelope: a.envelope,
        admitted: 0,
        rejected: 0,
        groupsTouched: [],
        steps: [],
      };
      authorities.set(a.name, { a, groups, rep });
    });
    let defaultGroups: Set<string> | null = null;
    if (js.defaultEnvelope) {
      try {
        defaultGroups = expandEnvelope(js.defaultEnvelope, L);
      } catch (e) {
        fail("job", seq0, "body.defaultEnvelope", (e as Error).message);
      }
    }
    const unattributed: AuthorityReport = {
      name: "(no provenance)",
      lawfulBasis: "",
      envelope: js.defaultEnvelope ?? [],
      admitted: 0,
      rejected: 0,
      groupsTouched: [],
      steps: [],
    };
    /** Per authority (or the unattributed rows): the groups its rows reached, and in which steps. */
    const usage = new Map<AuthorityReport, { groups: Set<string>; steps: Set<number> }>();
    const usageOf = (rep: AuthorityReport | undefined) => {
      if (!rep) return undefined;
      let u = usage.get(rep);
      if (!u) usage.set(rep, (u = { groups: new Set(), steps: new Set() }));
      return u;
    };

    // rows
    const rows = new Map<
      string,
      {
        decision: "admitted" | "rejected";
        groups: Set<string>;
        rep: AuthorityReport | undefined;
        /** The usage record of the row's authority (usageOf(rep)). */
        use: { groups: Set<string>; steps: Set<number> } | undefined;
        authority: string | null;
      }
    >();

    // weights
    const current = new Map(Object.entries(js.model.groups));
    let pending: {
      step: number;
      ranks: Map<number, { seq: number; hash: string }>;
      before: Record<string, { before: string; after: string }>;
      contributed: Set<string>;
      /** Which rank trained each row in this step (a row's gradient must enter the sum once). */
      rowRank: Map<string, number>;
      committed: boolean;
      firstSeq: number;
    } | null = null;
    let lastStep = -1;
    /** The steps in effect: applied, and not abandoned by a job.resumed. */
    const lineage: number[] = [];
    /** checkpoint.saved events by hash: where the weights may return to. */
    const checkpoints = new Map<
      string,
      {
        seq: number;
        name: string;
        step: number;
        groups: Record<string, string>;
        lineageLen: number;
        abandonedBy: number | null;
      }
    >();
    let finished: LedgerEvent | null = null;

    /** Closes the pending step; `abandoned`: a job.resumed cut it short (it need not be complete). */
    const finalize = (closingSeq: number, abandoned = false) => {
      if (!pending) return;
      const p = pending;
      pending = null;
      if (js.worldSize > 1 && !p.committed && !abandoned) {
        fail(
          "steps",
          closingSeq,
          "type",
          `step ${p.step} was not closed by step.committed (world size ${js.worldSize})`,
        );
      }
      if (js.worldSize > 1 && p.ranks.size !== js.worldSize && !abandoned) {
        fail(
          "steps",
          p.firstSeq,
          "body.rank",
          `step ${p.step} has update.applied from ${p.ranks.size} of ${js.worldSize} ranks`,
        );
      }
      for (const g of allGroups) {
        const w = p.before[g];
        if (!w) continue;
        if (!p.contributed.has(g) && w.after !== w.before) {
          fail(
            "weights",
            p.firstSeq,
            `body.weights.${g}.after`,
            `group ${g} changed in step ${p.step} without any admitted contribution to it`,
          );
        }
        current.set(g, w.after);
      }
      lastStep = p.step;
      lineage.push(p.step);
    };

    let lastSeq = seq0;
    /** The row events, for the manifest. */
    const rowEvents: LedgerEvent[] = [];
    return { add, end };

    function add({ event: ev, hash }: EncodedEvent): void {
      const seq = ev.seq;
      lastSeq = seq;
      if (ev.type === "row.admitted" || ev.type === "row.rejected") rowEvents.push(ev);
      if (
        finished &&
        !(ev.type === "job.resumed" && finished.type === "job.finished" && finished.body.status !== "succeeded")
      )
        fail(
          "job",
          seq,
          "type",
          `${ev.type} after job.finished${finished.type === "job.finished" ? ` (${finished.body.status})` : ""}`,
        );
      switch (ev.type) {
        case "job.started":
          break; // reported by the chain check
        case "row.admitted": {
          const b = ev.body;
          if (rows.has(b.row)) {
            fail("admission", seq, "body.row", `row ${b.row} was already decided (${rows.get(b.row)!.decision})`);
            break;
          }
          let allowed: Set<string> | null = null;
          let rep: AuthorityReport | undefined;
          if (b.authority === null) {
            if (js.requireCredentials)
              fail(
                "admission",
                seq,
                "body.authority",
                `row ${b.row} admitted without provenance although credentials are required`,
              );
            if (b.credential !== null) fail("admission", seq, "body.credential", "a credential without an authority");
            if (!js.defaultEnvelope)
              fail(
                "admission",
                seq,
                "body.authority",
                `row ${b.row} admitted without provenance, and the job declares no default envelope`,
              );
            allowed = defaultGroups;
            rep = unattributed;
          } else {
            const auth = authorities.get(b.authority);
            if (!auth)
              fail(
                "admission",
                seq,
                "body.authority",
                `row ${b.row} admitted under undeclared authority ${b.authority}`,
              );
            else {
              rep = auth.rep;
              allowed = auth.groups;
              if (b.credential === null)
                fail(
                  "admission",
                  seq,
                  "body.credential",
                  `row ${b.row} admitted under ${b.authority} without a credential`,
                );
              else if (!verifyRowCredential(b.hash, b.credential, auth.a.publicKey)) {
                fail(
                  "admission",
                  seq,
                  "body.credential",
                  `the credential of row ${b.row} is not authority ${b.authority}'s signature over the row hash`,
                );
              }
            }
          }
          if (allowed) {
            const declared = sortGroups(allowed, L);
            if (canonicalJson(b.groups) !== canonicalJson(declared)) {
              fail(
                "envelope",
                seq,
                "body.groups",
                `row ${b.row}'s groups are not the expansion of ${b.authority ?? "the default"} envelope`,
              );
            }
          }
          if (rep) rep.admitted++;
          // Enforce the declared envelope, not the event's claim.
          rows.set(b.row, {
            decision: "admitted",
            groups: allowed ?? new Set(),
            rep,
            use: usageOf(rep),
            authority: b.authority,
          });
          report.rows.admitted++;
          break;
        }
        case "row.rejected": {
          const b = ev.body;
          if (rows.has(b.row)) {
            fail("admission", seq, "body.row", `row ${b.row} was already decided (${rows.get(b.row)!.decision})`);
            break;
          }
          const rep = b.authority === null ? unattributed : authorities.get(b.authority)?.rep;
          if (rep) rep.rejected++;
          rows.set(b.row, { decision: "rejected", groups: new Set(), rep, use: undefined, authority: b.authority });
          report.rows.rejected++;
          break;
        }
        case "update.applied": {
          const b = ev.body;
          if (pending && pending.step !== b.step) finalize(seq);
          if (!pending) {
            if (b.step <= lastStep)
              fail(
                "steps",
                seq,
                "body.step",
                `step ${b.step} does not follow step ${lastStep} (steps go back only after a job.resumed)`,
              );
            pending = {
              step: b.step,
              ranks: new Map(),
              before: {},
              contributed: new Set(),
              rowRank: new Map(),
              committed: false,
              firstSeq: seq,
            };
          }
          const p = pending;
          if (p.committed)
            fail("steps", seq, "body.step", `update.applied for step ${b.step} after its step.committed`);
          if (b.rank >= js.worldSize)
            fail("steps", seq, "body.rank", `rank ${b.rank} outside world size ${js.worldSize}`);
          if (p.ranks.has(b.rank))
            fail("steps", seq, "body.rank", `a second update.applied from rank ${b.rank} for step ${b.step}`);
          p.ranks.set(b.rank, { seq, hash });
          update(b, seq, p);
          break;
        }
        case "step.committed": {
          const b = ev.body;
          const p = pending;
          if (!p || p.step !== b.step) {
            fail("steps", seq, "body.step", `step.committed for step ${b.step}, which has no update.applied`);
            break;
          }
          const seen = new Set<number>();
          for (const [k, r] of b.ranks.entries()) {
            if (seen.has(r.rank)) fail("steps", seq, `body.ranks.${k}.rank`, `lists rank ${r.rank} twice`);
            seen.add(r.rank);
            const mine = p.ranks.get(r.rank);
            if (!mine) fail("steps", seq, `body.ranks.${k}`, `rank ${r.rank} has no update.applied for step ${b.step}`);
            else if (mine.hash !== r.event)
              fail(
                "steps",
                seq,
                `body.ranks.${k}.event`,
                `is not the hash of rank ${r.rank}'s update.applied (seq ${mine.seq})`,
              );
          }
          for (const r of p.ranks.keys()) if (!seen.has(r)) fail("steps", seq, "body.ranks", `omits rank ${r}`);
          for (const g of allGroups) {
            if (b.weights[g] === undefined) fail("weights", seq, `body.weights.${g}`, "missing");
            else if (p.before[g] && b.weights[g] !== p.before[g]!.after)
              fail("weights", seq, `body.weights.${g}`, `is not the ranks' after-digest for step ${b.step}`);
          }
          p.committed = true;
          finalize(seq);
          break;
        }
        case "checkpoint.saved": {
          finalize(seq);
          const b = ev.body;
          if (b.step !== lastStep)
            fail(
              "checkpoint",
              seq,
              "body.step",
              `checkpoint of step ${b.step}, but the last applied step is ${lastStep}`,
            );
          for (const [g, d] of Object.entries(b.groups)) {
            if (!groupSet.has(g)) fail("checkpoint", seq, `body.groups.${g}`, `no such group in a ${L}-layer model`);
            else if (current.get(g) !== d)
              fail(
                "checkpoint",
                seq,
                `body.groups.${g}`,
                `checkpoint digest is not the weights after step ${lastStep}`,
              );
          }
          checkpoints.set(hash, {
            seq,
            name: b.name,
            step: b.step,
            groups: b.groups,
            lineageLen: lineage.length,
            abandonedBy: null,
          });
          break;
        }
        case "job.resumed": {
          finalize(seq, true);
          finished = null;
          resumed(ev.body, seq);
          break;
        }
        case "job.finished": {
          finalize(seq);
          finished = ev;
          const b = ev.body;
          checkGroupMap(b.model, seq, "body.model", "final-model");
          for (const g of allGroups) {
            if (b.model[g] !== undefined && b.model[g] !== current.get(g)) {
              fail(
                "final-model",
                seq,
                `body.model.${g}`,
                `final digest of ${g} is not its after-digest of the last step that changed it`,
              );
            }
          }
          if (b.steps !== lineage.length)
            fail(
              "steps",
              seq,
              "body.steps",
              `job.finished reports ${b.steps} steps, the ledger holds ${lineage.length}${report.resumes.length ? " (not counting abandoned ones)" : ""}`,
            );
          break;
        }
      }
    }

    function end(): void {
      finalize(lastSeq);
      report.steps = lineage.length;
      report.finished = finished !== null;
      const fin = finished?.type === "job.finished" ? finished : null;
      if (canonicalJson(bundle.model?.final ?? null) !== canonicalJson(fin?.body.model ?? null))
        fail(
          "bundle",
          null,
          "model.final",
          fin
            ? "differs from job.finished.model"
            : "the ledger has no job.finished in effect (the job is not finished)",
        );

      // ---- the manifest
      const derived = manifestFromEvents(rowEvents);
      const stated = Array.isArray(bundle.manifest?.rows) ? bundle.manifest.rows : [];
      if (stated.length !== derived.length)
        fail("manifest", null, "manifest.rows", `lists ${stated.length} rows, the events decide ${derived.length}`);
      for (let i = 0; i < Math.min(stated.length, derived.length); i++) {
        if (canonicalJson(stated[i]) !== canonicalJson(derived[i])) {
          fail("manifest", derived[i]!.seq, `manifest.rows.${i}`, `differs from the row event (row ${derived[i]!.id})`);
        }
      }
      if (bundle.manifest?.root !== js.dataset.manifestRoot)
        fail("manifest", null, "manifest.root", "differs from job.started.dataset.manifestRoot");
      if (derived.length === js.dataset.rows) {
        const r = manifestRoot(derived);
        if (r !== js.dataset.manifestRoot) {
          fail(
            "manifest",
            seq0,
            "body.dataset.manifestRoot",
            `the row events (ids and hashes, in order) hash to ${short(r)}, not the committed root`,
          );
        }
      } else if (finished || derived.length > js.dataset.rows) {
        fail(
          "manifest",
          seq0,
          "body.dataset.rows",
          `the dataset has ${js.dataset.rows} rows but ${derived.length} have an admission decision`,
        );
      } else {
        notes.push(
          `${js.dataset.rows - derived.length} rows not yet decided: the manifest root is checked when all are`,
        );
      }

      // ---- the dataset, when given
      if (opts.datasetRows) {
        const ds = opts.datasetRows;
        if (ds.length !== derived.length)
          fail("dataset", null, "dataset", `has ${ds.length} rows, the manifest ${derived.length}`);
        for (let i = 0; i < Math.min(ds.length, derived.length); i++) {
          const row = ds[i]!;
          const m = derived[i]!;
          const id = rowId(row, i);
          if (id !== m.id) fail("dataset", m.seq, `dataset[${i}].id`, `row id ${id}, the manifest says ${m.id}`);
          const h = rowContentHash(row);
          if (h !== m.hash)
            fail(
              "dataset",
              m.seq,
              `dataset[${i}]`,
              `content hash ${short(h)} differs from the manifest's ${short(m.hash)} (row ${m.id})`,
            );
          const prov = row.provenance as { authority?: unknown; credential?: unknown } | undefined;
          const auth = typeof prov?.authority === "string" ? prov.authority : null;
          if (auth !== m.authority)
            fail(
              "dataset",
              m.seq,
              `dataset[${i}].provenance.authority`,
              `is ${auth ?? "absent"}, the manifest says ${m.authority ?? "none"}`,
            );
        }
      }

      // ---- the final model, when given
      if (opts.modelDigests) {
        const fin = finished?.type === "job.finished" ? finished : null;
        if (!fin)
          fail("final-model", null, "events", "no job.finished event in effect: the final model cannot be checked");
        else {
          for (const g of allGroups) {
            const want = fin.body.model[g];
            const got = opts.modelDigests[g];
            if (got === undefined)
              fail("final-model", fin.seq, `body.model.${g}`, `the model on disk has no group ${g}`);
            else if (got !== want)
              fail(
                "final-model",
                fin.seq,
                `body.model.${g}`,
                `the model on disk differs from the ledger in group ${g} (${short(got)} vs ${short(want ?? "")})`,
              );
          }
          for (const g of Object.keys(opts.modelDigests))
            if (!groupSet.has(g))
              fail("final-model", fin.seq, "body.model", `the model on disk has an extra group ${g}`);
        }
      }

      // ---- report
      for (const { rep } of authorities.values()) report.authorities.push(rep);
      const all = [...report.authorities, unattributed];
      for (const rep of all) {
        rep.groupsTouched = sortGroups(usage.get(rep)?.groups ?? [], L);
        rep.steps = [...(usage.get(rep)?.steps ?? [])].sort((a, b) => a - b);
      }
      if (unattributed.admitted + unattributed.rejected > 0) report.unattributed = unattributed;
      if (!finished) notes.push("the job has no job.finished event (still running, or the bundle is cut short)");
    }

    function resumed(b: JobResumedBody, seq: number): void {
      const c = b.checkpoint;
      let target: { seq: number; name: string; step: number; groups: Record<string, string>; lineageLen: number } = {
        seq: seq0,
        name: "(base model)",
        step: 0,
        groups: js.model.groups,
        lineageLen: 0,
      };
      checkGroupMap(b.groups, seq, "body.groups", "resume");
      if (c) {
        const saved = checkpoints.get(c.event);
        if (!saved) {
          fail(
            "resume",
            seq,
            "body.checkpoint.event",
            `names checkpoint ${c.name} (step ${c.step}) by a checkpoint.saved event ${short(c.event)} that is not in this chain before it`,
          );
          return abandonAll();
        }
        if (saved.seq !== c.seq)
          fail(
            "resume",
            seq,
            "body.checkpoint.seq",
            `is ${c.seq}, but that checkpoint.saved event is seq ${saved.seq}`,
          );
        if (saved.name !== c.name)
          fail(
            "resume",
            seq,
            "body.checkpoint.name",
            `is ${c.name}, but checkpoint.saved seq ${saved.seq} saved ${saved.name}`,
          );
        if (saved.step !== c.step)
          fail(
            "resume",
            seq,
            "body.checkpoint.step",
            `is ${c.step}, but checkpoint ${saved.name} is of step ${saved.step}`,
          );
        if (saved.abandonedBy !== null)
          fail(
            "resume",
            seq,
            "body.checkpoint.event",
            `checkpoint ${saved.name} (seq ${saved.seq}) was saved by an attempt abandoned at seq ${saved.abandonedBy}`,
          );
        target = saved;
      }
      for (const g of allGroups) {
        if (b.groups[g] !== undefined && b.groups[g] !== target.groups[g])
          fail(
            "resume",
            seq,
            `body.groups.${g}`,
            `restored digest of ${g} is not ${c ? `checkpoint ${target.name}'s (seq ${target.seq})` : "the base model's"}`,
          );
      }
      const abandoned = lineage.slice(target.lineageLen);
      if (canonicalJson(b.abandonedSteps) !== canonicalJson(abandoned))
        fail(
          "resume",
          seq,
          "body.abandonedSteps",
          `lists [${b.abandonedSteps.join(", ")}], but the steps applied after ${c ? `checkpoint ${target.name}` : "the base model"} are [${abandoned.join(", ")}]`,
        );
      for (const k of checkpoints.values()) if (k.seq > target.seq && k.abandonedBy === null) k.abandonedBy = seq;
      // The weights are the checkpoint's, as its own event recorded them.
      lineage.length = target.lineageLen;
      for (const g of allGroups) if (target.groups[g] !== undefined) current.set(g, target.groups[g]!);
      lastStep = c ? target.step : -1;
      report.resumes.push({ seq, checkpoint: c ? c.name : null, step: target.step, abandonedSteps: abandoned });

      function abandonAll(): void {
        report.resumes.push({ seq, checkpoint: c?.name ?? null, step: c?.step ?? 0, abandonedSteps: [] });
      }
    }

    function update(b: UpdateAppliedBody, seq: number, p: NonNullable<typeof pending>): void {
      for (const [g, ids] of Object.entries(b.contributions)) {
        if (!groupSet.has(g)) {
          fail("envelope", seq, `body.contributions.${g}`, `no such group in a ${L}-layer model`);
          continue;
        }
        p.contributed.add(g);
        for (const id of ids) {
          const other = p.rowRank.get(id);
          if (other !== undefined && other !== b.rank)
            fail(
              "steps",
              seq,
              `body.contributions.${g}`,
              `row ${id} was trained by rank ${other} and rank ${b.rank} in step ${b.step} (counted twice)`,
            );
          else p.rowRank.set(id, b.rank);
        }
        for (const id of ids) {
          const row = rows.get(id);
          if (!row)
            fail(
              "admission",
              seq,
              `body.contributions.${g}`,
              `row ${id} contributed to ${g} in step ${b.step} but was never admitted`,
            );
          else if (row.decision === "rejected")
            fail(
              "admission",
              seq,
              `body.contributions.${g}`,
              `row ${id} was rejected but contributed to ${g} in step ${b.step}`,
            );
          else {
            if (!row.groups.has(g)) {
              fail(
                "envelope",
                seq,
                `body.contributions.${g}`,
                `row ${id} (authority ${row.authority ?? "none"}) reached group ${g}, outside its envelope, in step ${b.step}`,
              );
            }
            if (row.use) {
              row.use.groups.add(g);
              row.use.steps.add(b.step);
            }
          }
        }
      }
      for (const g of Object.keys(b.gradients)) {
        if (!(g in b.contributions))
          fail(
            "envelope",
            seq,
            `body.gradients.${g}`,
            `a gradient for ${g}, which had no admitted contribution in step ${b.step}`,
          );
      }
      for (const g of Object.keys(b.contributions)) {
        if (!(g in b.gradients)) fail("weights", seq, `body.gradients.${g}`, `missing for contributed group ${g}`);
      }
      for (const g of allGroups) {
        const w = b.weights[g];
        if (!w) {
          fail("weights", seq, `body.weights.${g}`, "missing (every group's before/after digest is required)");
          continue;
        }
        if (w.before !== current.get(g)) {
          fail(
            "weights",
            seq,
            `body.weights.${g}.before`,
            `before-digest of ${g} in step ${b.step} is not its digest after step ${lastStep < 0 ? "(base model)" : lastStep}`,
          );
        }
        const prev = p.before[g];
        if (!prev) p.before[g] = { before: w.before, after: w.after };
        else if (prev.after !== w.after)
          fail("weights", seq, `body.weights.${g}.after`, `ranks disagree on ${g} after step ${b.step}`);
      }
      for (const g of Object.keys(b.weights))
        if (!groupSet.has(g)) fail("weights", seq, `body.weights.${g}`, `no such group in a ${L}-layer model`);
    }

    function checkGroupMap(map: Record<string, string>, seq: number, field: string, check: CheckName): void {
      for (const g of allGroups) if (map[g] === undefined) fail(check, seq, `${field}.${g}`, "missing");
      for (const g of Object.keys(map))
        if (!groupSet.has(g)) fail(check, seq, `${field}.${g}`, `no such group in a ${L}-layer model`);
    }
  }
}

function safeKeyId(b64: string): string {
  try {
    return keyIdOfRaw(Buffer.from(b64, "base64"));
  } catch {
    return "";
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
function short(h: string): string {
  const hex = typeof h === "string" && h.startsWith("sha256:") ? h.slice(7) : String(h);
  return `${hex.slice(0, 12)}…`;
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
