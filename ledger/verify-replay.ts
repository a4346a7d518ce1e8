/**
 * The semantic replay of a provenance bundle (verify.ts's bundleVerifier feeds it the well-formed events in
 * order): a state machine over the job's events with one method per event type. It keeps only what later events
 * are checked against — row decisions, the current weight digests, the pending step, checkpoints, the steps in
 * effect — so a bundle of any length replays in bounded memory. `end()` closes the replay: the manifest, the
 * dataset and the model on disk (when given), and the per-authority report.
 */
import { expandEnvelope, parameterGroups, sortGroups } from "../proto/envelope.js";
import type {
  Authority,
  CheckpointSavedBody,
  JobFinishedBody,
  JobResumedBody,
  JobStartedBody,
  LedgerEvent,
  RowAdmittedBody,
  RowRejectedBody,
  StepCommittedBody,
  UpdateAppliedBody,
} from "../proto/ledger-events.js";
import { type ManifestRow, manifestFromEvents, type ProvenanceBundle } from "./bundle.js";
import { canonicalJson } from "./canonical.js";
import type { EncodedEvent } from "./chain.js";
import { manifestRoot, rowContentHash, rowId, verifyRowCredential } from "./dataset.js";
import { keyIdOfRaw } from "./sign.js";
import type { DatasetRow } from "./dataset.js";

/** The checks the replay reports under (a subset of verify.ts's CheckName). */
export type ReplayCheck =
  | "bundle"
  | "keys"
  | "job"
  | "admission"
  | "envelope"
  | "weights"
  | "steps"
  | "checkpoint"
  | "resume"
  | "final-model"
  | "manifest"
  | "dataset";

/** Records one failure (verify.ts routes the replay's into its own phase). */
export type Fail = (check: ReplayCheck, seq: number | null, field: string, reason: string) => void;

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

export interface ResumeReport {
  /** seq of the job.resumed event. */
  seq: number;
  /** The checkpoint returned to (null: the base model). */
  checkpoint: string | null;
  step: number;
  /** Steps applied after that checkpoint and discarded. */
  abandonedSteps: number[];
}

/** The parts of verify.ts's VerifyReport the replay fills in. */
export interface ReplayReport {
  steps: number;
  rows: { admitted: number; rejected: number };
  authorities: AuthorityReport[];
  unattributed: AuthorityReport | null;
  finished: boolean;
  resumes: ResumeReport[];
}

/** What the replay reads (the bundle's fields, the options) and writes (the report, failures, notes). */
export interface ReplayContext {
  bundle: Pick<ProvenanceBundle, "specDigest" | "model" | "keys" | "manifest">;
  opts: { datasetRows?: DatasetRow[]; modelDigests?: Record<string, string> };
  report: ReplayReport;
  fail: Fail;
  notes: string[];
}

interface Usage {
  groups: Set<string>;
  steps: Set<number>;
}

interface RowDecision {
  decision: "admitted" | "rejected";
  groups: Set<string>;
  rep: AuthorityReport | undefined;
  /** The usage record of the row's authority (usageOf(rep)). */
  use: Usage | undefined;
  authority: string | null;
}

/** The step whose update.applied events are being read (closed by step.committed or the next step's events). */
interface PendingStep {
  step: number;
  ranks: Map<number, { seq: number; hash: string }>;
  before: Record<string, { before: string; after: string }>;
  contributed: Set<string>;
  /** Which rank trained each row in this step (a row's gradient must enter the sum once). */
  rowRank: Map<string, number>;
  committed: boolean;
  firstSeq: number;
}

/** A checkpoint.saved event: where the weights may return to. */
interface SavedCheckpoint {
  seq: number;
  name: string;
  step: number;
  groups: Record<string, string>;
  lineageLen: number;
  abandonedBy: number | null;
}

type EventOf<T extends LedgerEvent["type"]> = Extract<LedgerEvent, { type: T }>;

export function safeKeyId(b64: string): string {
  try {
    return keyIdOfRaw(Buffer.from(b64, "base64"));
  } catch {
    return "";
  }
}

export function short(h: string): string {
  const hex = typeof h === "string" && h.startsWith("sha256:") ? h.slice(7) : String(h);
  return `${hex.slice(0, 12)}…`;
}

const newReport = (name: string, lawfulBasis: string, envelope: string[]): AuthorityReport => ({
  name,
  lawfulBasis,
  envelope,
  admitted: 0,
  rejected: 0,
  groupsTouched: [],
  steps: [],
});

export class Replay {
  private readonly js: JobStartedBody;
  private readonly L: number;
  private readonly allGroups: string[];
  private readonly groupSet: Set<string>;
  private readonly seq0: number;
  private readonly fail: Fail;
  private readonly authorities = new Map<string, { a: Authority; groups: Set<string>; rep: AuthorityReport }>();
  private defaultGroups: Set<string> | null = null;
  private readonly unattributed: AuthorityReport;
  /** Per authority (or the unattributed rows): the groups its rows reached, and in which steps. */
  private readonly usage = new Map<AuthorityReport, Usage>();
  private readonly rows = new Map<string, RowDecision>();
  /** The weights as of the last step in effect. */
  private readonly current: Map<string, string>;
  private pending: PendingStep | null = null;
  private lastStep = -1;
  /** The steps in effect: applied, and not abandoned by a job.resumed. */
  private readonly lineage: number[] = [];
  /** checkpoint.saved events by hash. */
  private readonly checkpoints = new Map<string, SavedCheckpoint>();
  private finished: LedgerEvent | null = null;
  private lastSeq: number;
  /** The row events, for the manifest. */
  private readonly rowEvents: LedgerEvent[] = [];

  /** The replay from the job's first well-formed event, which must be job.started (null, with a failure, if not). */
  static start(first: EncodedEvent, ctx: ReplayContext): Replay | null {
    if (first.event.type !== "job.started") {
      ctx.fail("job", null, "events", "no job.started event: nothing else can be checked");
      return null;
    }
    return new Replay(first.event, ctx);
  }

  private constructor(
    first: EventOf<"job.started">,
    private readonly ctx: ReplayContext,
  ) {
    this.js = first.body;
    this.L = this.js.model.numLayers;
    this.allGroups = parameterGroups(this.L);
    this.groupSet = new Set(this.allGroups);
    this.seq0 = first.seq;
    this.lastSeq = first.seq;
    this.fail = ctx.fail;
    this.current = new Map(Object.entries(this.js.model.groups));
    this.unattributed = newReport("(no provenance)", "", this.js.defaultEnvelope ?? []);
    this.checkJobStarted();
  }

  /** The bundle's fields derived from job.started, its group map, its authorities and default envelope. */
  private checkJobStarted(): void {
    const { js, L, seq0, fail } = this;
    const bundle = this.ctx.bundle;
    if (bundle.specDigest !== js.specDigest) fail("bundle", null, "specDigest", "differs from job.started.specDigest");
    if (bundle.model?.numLayers !== L) fail("bundle", null, "model.numLayers", "differs from job.started");
    if (canonicalJson(bundle.model?.base ?? null) !== canonicalJson(js.model.groups))
      fail("bundle", null, "model.base", "differs from job.started.model.groups");
    if (bundle.keys?.job?.publicKey !== js.signer.publicKey)
      fail("keys", seq0, "body.signer.publicKey", "job.started declares a different key than the bundle's job key");
    this.checkGroupMap(js.model.groups, seq0, "body.model.groups", "weights");
    js.authorities.forEach((a, i) => this.declareAuthority(a, `body.authorities.${i}`));
    if (js.defaultEnvelope) {
      try {
        this.defaultGroups = expandEnvelope(js.defaultEnvelope, L);
      } catch (e) {
        fail("job", seq0, "body.defaultEnvelope", (e as Error).message);
      }
    }
  }

  private declareAuthority(a: Authority, field: string): void {
    const { seq0, fail } = this;
    if (this.authorities.has(a.name)) fail("job", seq0, `${field}.name`, `authority ${a.name} declared twice`);
    if (a.keyId !== safeKeyId(a.publicKey))
      fail("keys", seq0, `${field}.keyId`, `is not the SHA-256 of authority ${a.name}'s public key`);
    let groups = new Set<string>();
    try {
      groups = expandEnvelope(a.envelope, this.L);
    } catch (e) {
      fail("job", seq0, `${field}.envelope`, `authority ${a.name}: ${(e as Error).message}`);
    }
    this.authorities.set(a.name, { a, groups, rep: newReport(a.name, a.lawfulBasis, a.envelope) });
  }

  private usageOf(rep: AuthorityReport | undefined): Usage | undefined {
    if (!rep) return undefined;
    let u = this.usage.get(rep);
    if (!u) this.usage.set(rep, (u = { groups: new Set(), steps: new Set() }));
    return u;
  }

  /** The next well-formed event of the chain. */
  add({ event: ev, hash }: EncodedEvent): void {
    const seq = ev.seq;
    this.lastSeq = seq;
    if (ev.type === "row.admitted" || ev.type === "row.rejected") this.rowEvents.push(ev);
    this.checkNotAfterFinish(ev);
    switch (ev.type) {
      case "job.started":
        break; // reported by the chain check
      case "row.admitted":
        return this.rowAdmitted(ev.body, seq);
      case "row.rejected":
        return this.rowRejected(ev.body, seq);
      case "update.applied":
        return this.updateApplied(ev.body, seq, hash);
      case "step.committed":
        return this.stepCommitted(ev.body, seq);
      case "checkpoint.saved":
        return this.checkpointSaved(ev.body, seq, hash);
      case "job.resumed":
        return this.jobResumed(ev.body, seq);
      case "job.finished":
        return this.jobFinished(ev, seq);
    }
  }

  /** Nothing follows job.finished, except a job.resumed after a run that did not succeed. */
  private checkNotAfterFinish(ev: LedgerEvent): void {
    const f = this.finished;
    if (!f) return;
    if (ev.type === "job.resumed" && f.type === "job.finished" && f.body.status !== "succeeded") return;
    const status = f.type === "job.finished" ? ` (${f.body.status})` : "";
    this.fail("job", ev.seq, "type", `${ev.type} after job.finished${status}`);
  }

  /** A row's first decision only; an admission needs its authority's credential and envelope. */
  private alreadyDecided(row: string, seq: number): boolean {
    const prev = this.rows.get(row);
    if (prev) this.fail("admission", seq, "body.row", `row ${row} was already decided (${prev.decision})`);
    return prev !== undefined;
  }

  private rowAdmitted(b: RowAdmittedBody, seq: number): void {
    if (this.alreadyDecided(b.row, seq)) return;
    const { allowed, rep } = b.authority === null ? this.admitUnattributed(b, seq) : this.admitCredentialed(b, seq);
    if (allowed) {
      const declared = sortGroups(allowed, this.L);
      if (canonicalJson(b.groups) !== canonicalJson(declared)) {
        this.fail(
          "envelope",
          seq,
          "body.groups",
          `row ${b.row}'s groups are not the expansion of ${b.authority ?? "the default"} envelope`,
        );
      }
    }
    if (rep) rep.admitted++;
    // Enforce the declared envelope, not the event's claim.
    this.rows.set(b.row, {
      decision: "admitted",
      groups: allowed ?? new Set(),
      rep,
      use: this.usageOf(rep),
      authority: b.authority,
    });
    this.ctx.report.rows.admitted++;
  }

  /** A row admitted without provenance: allowed only without required credentials, under the default envelope. */
  private admitUnattributed(b: RowAdmittedBody, seq: number) {
    const { fail, js } = this;
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
    return { allowed: this.defaultGroups, rep: this.unattributed };
  }

  /** A row admitted under a declared authority, with that authority's signature over the row hash. */
  private admitCredentialed(b: RowAdmittedBody, seq: number) {
    const fail = this.fail;
    const auth = this.authorities.get(b.authority!);
    if (!auth) {
      fail("admission", seq, "body.authority", `row ${b.row} admitted under undeclared authority ${b.authority}`);
      return { allowed: null, rep: undefined };
    }
    if (b.credential === null)
      fail("admission", seq, "body.credential", `row ${b.row} admitted under ${b.authority} without a credential`);
    else if (!verifyRowCredential(b.hash, b.credential, auth.a.publicKey)) {
      fail(
        "admission",
        seq,
        "body.credential",
        `the credential of row ${b.row} is not authority ${b.authority}'s signature over the row hash`,
      );
    }
    return { allowed: auth.groups, rep: auth.rep };
  }

  private rowRejected(b: RowRejectedBody, seq: number): void {
    if (this.alreadyDecided(b.row, seq)) return;
    const rep = b.authority === null ? this.unattributed : this.authorities.get(b.authority)?.rep;
    if (rep) rep.rejected++;
    this.rows.set(b.row, { decision: "rejected", groups: new Set(), rep, use: undefined, authority: b.authority });
    this.ctx.report.rows.rejected++;
  }

  private updateApplied(b: UpdateAppliedBody, seq: number, hash: string): void {
    const { fail, js } = this;
    if (this.pending && this.pending.step !== b.step) this.finalize(seq);
    if (!this.pending) {
      if (b.step <= this.lastStep)
        fail(
          "steps",
          seq,
          "body.step",
          `step ${b.step} does not follow step ${this.lastStep} (steps go back only after a job.resumed)`,
        );
      this.pending = {
        step: b.step,
        ranks: new Map(),
        before: {},
        contributed: new Set(),
        rowRank: new Map(),
        committed: false,
        firstSeq: seq,
      };
    }
    const p = this.pending;
    if (p.committed) fail("steps", seq, "body.step", `update.applied for step ${b.step} after its step.committed`);
    if (b.rank >= js.worldSize) fail("steps", seq, "body.rank", `rank ${b.rank} outside world size ${js.worldSize}`);
    if (p.ranks.has(b.rank))
      fail("steps", seq, "body.rank", `a second update.applied from rank ${b.rank} for step ${b.step}`);
    p.ranks.set(b.rank, { seq, hash });
    this.checkContributions(b, seq, p);
    this.checkGradients(b, seq);
    this.checkUpdateWeights(b, seq, p);
  }

  /** Every contribution: a real group, each row trained by one rank, admitted, and inside its envelope. */
  private checkContributions(b: UpdateAppliedBody, seq: number, p: PendingStep): void {
    for (const [g, ids] of Object.entries(b.contributions)) {
      if (!this.groupSet.has(g)) {
        this.fail("envelope", seq, `body.contributions.${g}`, `no such group in a ${this.L}-layer model`);
        continue;
      }
      p.contributed.add(g);
      for (const id of ids) {
        const other = p.rowRank.get(id);
        if (other !== undefined && other !== b.rank)
          this.fail(
            "steps",
            seq,
            `body.contributions.${g}`,
            `row ${id} was trained by rank ${other} and rank ${b.rank} in step ${b.step} (counted twice)`,
          );
        else p.rowRank.set(id, b.rank);
      }
      for (const id of ids) this.checkContribution(b, seq, g, id);
    }
  }

  private checkContribution(b: UpdateAppliedBody, seq: number, g: string, id: string): void {
    const row = this.rows.get(id);
    const field = `body.contributions.${g}`;
    if (!row)
      this.fail("admission", seq, field, `row ${id} contributed to ${g} in step ${b.step} but was never admitted`);
    else if (row.decision === "rejected")
      this.fail("admission", seq, field, `row ${id} was rejected but contributed to ${g} in step ${b.step}`);
    else {
      if (!row.groups.has(g)) {
        this.fail(
          "envelope",
          seq,
          field,
          `row ${id} (authority ${row.authority ?? "none"}) reached group ${g}, outside its envelope, in step ${b.step}`,
        );
      }
      if (row.use) {
        row.use.groups.add(g);
        row.use.steps.add(b.step);
      }
    }
  }

  /** A gradient exactly for each contributed group. */
  private checkGradients(b: UpdateAppliedBody, seq: number): void {
    for (const g of Object.keys(b.gradients)) {
      if (!(g in b.contributions))
        this.fail(
          "envelope",
          seq,
          `body.gradients.${g}`,
          `a gradient for ${g}, which had no admitted contribution in step ${b.step}`,
        );
    }
    for (const g of Object.keys(b.contributions)) {
      if (!(g in b.gradients)) this.fail("weights", seq, `body.gradients.${g}`, `missing for contributed group ${g}`);
    }
  }

  /** Every group's before-digest is the current one; the ranks agree on the after-digests. */
  private checkUpdateWeights(b: UpdateAppliedBody, seq: number, p: PendingStep): void {
    const fail = this.fail;
    for (const g of this.allGroups) {
      const w = b.weights[g];
      if (!w) {
        fail("weights", seq, `body.weights.${g}`, "missing (every group's before/after digest is required)");
        continue;
      }
      if (w.before !== this.current.get(g)) {
        fail(
          "weights",
          seq,
          `body.weights.${g}.before`,
          `before-digest of ${g} in step ${b.step} is not its digest after step ${this.lastStep < 0 ? "(base model)" : this.lastStep}`,
        );
      }
      const prev = p.before[g];
      if (!prev) p.before[g] = { before: w.before, after: w.after };
      else if (prev.after !== w.after)
        fail("weights", seq, `body.weights.${g}.after`, `ranks disagree on ${g} after step ${b.step}`);
    }
    for (const g of Object.keys(b.weights))
      if (!this.groupSet.has(g)) fail("weights", seq, `body.weights.${g}`, `no such group in a ${this.L}-layer model`);
  }

  /** Closes a multi-rank step: every rank's update.applied, by hash, and their common after-digests. */
  private stepCommitted(b: StepCommittedBody, seq: number): void {
    const fail = this.fail;
    const p = this.pending;
    if (!p || p.step !== b.step) {
      fail("steps", seq, "body.step", `step.committed for step ${b.step}, which has no update.applied`);
      return;
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
    for (const g of this.allGroups) {
      if (b.weights[g] === undefined) fail("weights", seq, `body.weights.${g}`, "missing");
      else if (p.before[g] && b.weights[g] !== p.before[g]!.after)
        fail("weights", seq, `body.weights.${g}`, `is not the ranks' after-digest for step ${b.step}`);
    }
    p.committed = true;
    this.finalize(seq);
  }

  /** Closes the pending step; `abandoned`: a job.resumed cut it short (it need not be complete). */
  private finalize(closingSeq: number, abandoned = false): void {
    const p = this.pending;
    if (!p) return;
    this.pending = null;
    const { js, fail } = this;
    if (js.worldSize > 1 && !p.committed && !abandoned) {
      fail("steps", closingSeq, "type", `step ${p.step} was not closed by step.committed (world size ${js.worldSize})`);
    }
    if (js.worldSize > 1 && p.ranks.size !== js.worldSize && !abandoned) {
      fail(
        "steps",
        p.firstSeq,
        "body.rank",
        `step ${p.step} has update.applied from ${p.ranks.size} of ${js.worldSize} ranks`,
      );
    }
    for (const g of this.allGroups) {
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
      this.current.set(g, w.after);
    }
    this.lastStep = p.step;
    this.lineage.push(p.step);
  }

  private checkpointSaved(b: CheckpointSavedBody, seq: number, hash: string): void {
    this.finalize(seq);
    const { fail, lastStep } = this;
    if (b.step !== lastStep)
      fail("checkpoint", seq, "body.step", `checkpoint of step ${b.step}, but the last applied step is ${lastStep}`);
    for (const [g, d] of Object.entries(b.groups)) {
      if (!this.groupSet.has(g))
        fail("checkpoint", seq, `body.groups.${g}`, `no such group in a ${this.L}-layer model`);
      else if (this.current.get(g) !== d)
        fail("checkpoint", seq, `body.groups.${g}`, `checkpoint digest is not the weights after step ${lastStep}`);
    }
    this.checkpoints.set(hash, {
      seq,
      name: b.name,
      step: b.step,
      groups: b.groups,
      lineageLen: this.lineage.length,
      abandonedBy: null,
    });
  }

  /** The weights return to a checkpoint of this chain (or the base model); the steps after it are abandoned. */
  private jobResumed(b: JobResumedBody, seq: number): void {
    this.finalize(seq, true);
    this.finished = null;
    const c = b.checkpoint;
    this.checkGroupMap(b.groups, seq, "body.groups", "resume");
    const base = { seq: this.seq0, name: "(base model)", step: 0, groups: this.js.model.groups, lineageLen: 0 };
    const target = c ? this.resumeTarget(b, seq) : base;
    if (!target) {
      this.ctx.report.resumes.push({ seq, checkpoint: c?.name ?? null, step: c?.step ?? 0, abandonedSteps: [] });
      return;
    }
    for (const g of this.allGroups) {
      if (b.groups[g] !== undefined && b.groups[g] !== target.groups[g])
        this.fail(
          "resume",
          seq,
          `body.groups.${g}`,
          `restored digest of ${g} is not ${c ? `checkpoint ${target.name}'s (seq ${target.seq})` : "the base model's"}`,
        );
    }
    const abandoned = this.lineage.slice(target.lineageLen);
    if (canonicalJson(b.abandonedSteps) !== canonicalJson(abandoned))
      this.fail(
        "resume",
        seq,
        "body.abandonedSteps",
        `lists [${b.abandonedSteps.join(", ")}], but the steps applied after ${c ? `checkpoint ${target.name}` : "the base model"} are [${abandoned.join(", ")}]`,
      );
    for (const k of this.checkpoints.values()) if (k.seq > target.seq && k.abandonedBy === null) k.abandonedBy = seq;
    // The weights are the checkpoint's, as its own event recorded them.
    this.lineage.length = target.lineageLen;
    for (const g of this.allGroups) if (target.groups[g] !== undefined) this.current.set(g, target.groups[g]!);
    this.lastStep = c ? target.step : -1;
    this.ctx.report.resumes.push({ seq, checkpoint: c ? c.name : null, step: target.step, abandonedSteps: abandoned });
  }

  /** The checkpoint.saved a job.resumed names: in this chain before it, as named, and not abandoned itself. */
  private resumeTarget(b: JobResumedBody, seq: number): SavedCheckpoint | undefined {
    const c = b.checkpoint!;
    const fail = this.fail;
    const saved = this.checkpoints.get(c.event);
    if (!saved) {
      fail(
        "resume",
        seq,
        "body.checkpoint.event",
        `names checkpoint ${c.name} (step ${c.step}) by a checkpoint.saved event ${short(c.event)} that is not in this chain before it`,
      );
      return undefined;
    }
    if (saved.seq !== c.seq)
      fail("resume", seq, "body.checkpoint.seq", `is ${c.seq}, but that checkpoint.saved event is seq ${saved.seq}`);
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
    return saved;
  }

  private jobFinished(ev: EventOf<"job.finished">, seq: number): void {
    this.finalize(seq);
    this.finished = ev;
    const b: JobFinishedBody = ev.body;
    this.checkGroupMap(b.model, seq, "body.model", "final-model");
    for (const g of this.allGroups) {
      if (b.model[g] !== undefined && b.model[g] !== this.current.get(g)) {
        this.fail(
          "final-model",
          seq,
          `body.model.${g}`,
          `final digest of ${g} is not its after-digest of the last step that changed it`,
        );
      }
    }
    if (b.steps !== this.lineage.length)
      this.fail(
        "steps",
        seq,
        "body.steps",
        `job.finished reports ${b.steps} steps, the ledger holds ${this.lineage.length}${this.ctx.report.resumes.length ? " (not counting abandoned ones)" : ""}`,
      );
  }

  /** The job.finished in effect (none after a job.resumed). */
  private get finishEvent(): EventOf<"job.finished"> | null {
    return this.finished?.type === "job.finished" ? this.finished : null;
  }

  /** After the last event: the bundle's final model and manifest, the dataset and model on disk, the report. */
  end(): void {
    const { report } = this.ctx;
    this.finalize(this.lastSeq);
    report.steps = this.lineage.length;
    report.finished = this.finished !== null;
    const fin = this.finishEvent;
    if (canonicalJson(this.ctx.bundle.model?.final ?? null) !== canonicalJson(fin?.body.model ?? null))
      this.fail(
        "bundle",
        null,
        "model.final",
        fin ? "differs from job.finished.model" : "the ledger has no job.finished in effect (the job is not finished)",
      );
    const derived = manifestFromEvents(this.rowEvents);
    this.checkManifest(derived);
    if (this.ctx.opts.datasetRows) this.checkDataset(derived);
    if (this.ctx.opts.modelDigests) this.checkModelOnDisk(this.ctx.opts.modelDigests);
    this.fillReport();
  }

  /** The bundle's manifest is the row events', and (once every row is decided) hashes to the committed root. */
  private checkManifest(derived: ManifestRow[]): void {
    const { bundle, notes } = this.ctx;
    const { js, seq0, fail } = this;
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
    } else if (this.finished || derived.length > js.dataset.rows) {
      fail(
        "manifest",
        seq0,
        "body.dataset.rows",
        `the dataset has ${js.dataset.rows} rows but ${derived.length} have an admission decision`,
      );
    } else {
      notes.push(`${js.dataset.rows - derived.length} rows not yet decided: the manifest root is checked when all are`);
    }
  }

  /** The dataset rows given match the manifest: ids, content hashes, authorities. */
  private checkDataset(derived: ManifestRow[]): void {
    const ds = this.ctx.opts.datasetRows!;
    const fail = this.fail;
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

  /** The model on disk has the final digests of job.finished, group by group. */
  private checkModelOnDisk(digests: Record<string, string>): void {
    const fail = this.fail;
    const fin = this.finishEvent;
    if (!fin) {
      fail("final-model", null, "events", "no job.finished event in effect: the final model cannot be checked");
      return;
    }
    for (const g of this.allGroups) {
      const want = fin.body.model[g];
      const got = digests[g];
      if (got === undefined) fail("final-model", fin.seq, `body.model.${g}`, `the model on disk has no group ${g}`);
      else if (got !== want)
        fail(
          "final-model",
          fin.seq,
          `body.model.${g}`,
          `the model on disk differs from the ledger in group ${g} (${short(got)} vs ${short(want ?? "")})`,
        );
    }
    for (const g of Object.keys(digests))
      if (!this.groupSet.has(g))
        fail("final-model", fin.seq, "body.model", `the model on disk has an extra group ${g}`);
  }

  private fillReport(): void {
    const { report, notes } = this.ctx;
    for (const { rep } of this.authorities.values()) report.authorities.push(rep);
    for (const rep of [...report.authorities, this.unattributed]) {
      rep.groupsTouched = sortGroups(this.usage.get(rep)?.groups ?? [], this.L);
      rep.steps = [...(this.usage.get(rep)?.steps ?? [])].sort((a, b) => a - b);
    }
    if (this.unattributed.admitted + this.unattributed.rejected > 0) report.unattributed = this.unattributed;
    if (!this.finished) notes.push("the job has no job.finished event (still running, or the bundle is cut short)");
  }

  private checkGroupMap(map: Record<string, string>, seq: number, field: string, check: ReplayCheck): void {
    for (const g of this.allGroups) if (map[g] === undefined) this.fail(check, seq, `${field}.${g}`, "missing");
    for (const g of Object.keys(map))
      if (!this.groupSet.has(g)) this.fail(check, seq, `${field}.${g}`, `no such group in a ${this.L}-layer model`);
  }
}
