/**
 * What the auditor's documents show, derived from a job's events in one pass (seq order): per authority the
 * rows admitted and rejected (with reasons), the parameter groups its rows reached in which steps, the steps
 * where it was the only contributor and whether every group outside its envelope kept its bytes there; the
 * reward curve, checkpoints and restarts. Used by the HTML/Markdown report, the Annex XI export and the
 * provenance statement. Pure: feed events, then `finish`. Checks nothing: `verify.ts` does that, and the
 * documents show its verdict next to this summary.
 */
import type { LedgerEvent } from "../proto/ledger-events.js";
import { expandEnvelope, sortGroups } from "../proto/envelope.js";
import { encodeEvent } from "./chain.js";
import { manifestRoot } from "./dataset.js";
import { MerkleLog } from "./merkle.js";

export interface Rejection {
  row: string;
  authority: string | null;
  code: string;
  reason: string;
  seq: number;
}

export interface SoleStep {
  step: number;
  seq: number;
  /** Groups outside the authority's envelope. */
  outside: number;
  /** Groups outside its envelope whose digest changed in that step (empty: byte-identical). */
  changedOutside: string[];
}

export interface AuthoritySummary {
  name: string;
  keyId: string;
  lawfulBasis: string;
  envelope: string[];
  /** The envelope expanded to parameter groups. */
  groups: string[];
  admitted: number;
  rejected: number;
  /** RFC 6962 root over canonical {id, hash} of this authority's admitted and rejected rows, in dataset order. */
  manifestRoot: string;
  groupsTouched: string[];
  steps: number[];
  /** Row-contributions (one row reaching one group in one step). */
  contributions: number;
  soleSteps: SoleStep[];
}

export interface StepSummary {
  seq: number;
  step: number;
  rank: number;
  reward: { mean: number; min: number; max: number; count: number };
  /** authority → indexes (into `groups`) of the groups its rows reached. */
  touched: Record<string, number[]>;
  /** Indexes of the groups whose digest changed. */
  changed: number[];
}

export interface AuditSummary {
  job: string;
  specDigest: string | null;
  numLayers: number | null;
  worldSize: number;
  groups: string[];
  base: Record<string, string> | null;
  final: Record<string, string> | null;
  status: string | null;
  startedOn: string | null;
  finishedOn: string | null;
  events: number;
  ledgerMerkleRoot: string;
  dataset: { rows: number; manifestRoot: string | null };
  authorities: AuthoritySummary[];
  /** Rows admitted without provenance (the job's default envelope). */
  unattributed: number;
  rejections: Rejection[];
  steps: StepSummary[];
  checkpoints: { seq: number; step: number; name: string; metrics: Record<string, number> }[];
  resumes: { seq: number; checkpoint: string | null; abandonedSteps: number[] }[];
}

const NONE = "(no provenance)";

export class SummaryBuilder {
  private s: AuditSummary = {
    job: "",
    specDigest: null,
    numLayers: null,
    worldSize: 1,
    groups: [],
    base: null,
    final: null,
    status: null,
    startedOn: null,
    finishedOn: null,
    events: 0,
    ledgerMerkleRoot: "",
    dataset: { rows: 0, manifestRoot: null },
    authorities: [],
    unattributed: 0,
    rejections: [],
    steps: [],
    checkpoints: [],
    resumes: [],
  };
  /** null: the caller has the Merkle root (a bundle's, which the verifier checks), so events are not re-encoded. */
  private log: MerkleLog | null;

  constructor(o: { merkle?: boolean } = {}) {
    this.log = o.merkle === false ? null : new MerkleLog();
  }
  private authorityOf = new Map<string, string>();
  private rowsOf = new Map<string, { id: string; hash: string }[]>();
  private byName = new Map<string, AuthoritySummary & { touched: Set<string>; stepSet: Set<number> }>();
  private groupIndex = new Map<string, number>();

  add(ev: LedgerEvent): void {
    const s = this.s;
    s.events++;
    s.job = ev.job;
    this.log?.appendData(encodeEvent(ev).bytes);
    switch (ev.type) {
      case "job.started": {
        const b = ev.body;
        s.specDigest = b.specDigest;
        s.numLayers = b.model.numLayers;
        s.worldSize = b.worldSize;
        s.base = b.model.groups;
        s.groups = sortGroups(Object.keys(b.model.groups), b.model.numLayers);
        s.groups.forEach((g, i) => this.groupIndex.set(g, i));
        s.startedOn = ev.time;
        s.dataset = { rows: b.dataset.rows, manifestRoot: b.dataset.manifestRoot };
        for (const a of b.authorities) {
          let groups: string[];
          try {
            groups = sortGroups(expandEnvelope(a.envelope, b.model.numLayers), b.model.numLayers);
          } catch {
            groups = []; // the verifier reports a bad envelope
          }
          const rep = {
            name: a.name,
            keyId: a.keyId,
            lawfulBasis: a.lawfulBasis,
            envelope: a.envelope,
            groups,
            admitted: 0,
            rejected: 0,
            manifestRoot: "",
            groupsTouched: [],
            steps: [],
            contributions: 0,
            soleSteps: [],
            touched: new Set<string>(),
            stepSet: new Set<number>(),
          };
          this.byName.set(a.name, rep);
          this.rowsOf.set(a.name, []);
        }
        break;
      }
      case "row.admitted":
      case "row.rejected": {
        const name = ev.body.authority ?? NONE;
        const rep = this.byName.get(name);
        this.rowsOf.get(name)?.push({ id: ev.body.row, hash: ev.body.hash });
        if (ev.type === "row.admitted") {
          this.authorityOf.set(ev.body.row, name);
          if (rep) rep.admitted++;
          else if (ev.body.authority === null) s.unattributed++;
        } else {
          if (rep) rep.rejected++;
          const b = ev.body;
          s.rejections.push({ row: b.row, authority: b.authority, code: b.code, reason: b.reason, seq: ev.seq });
        }
        break;
      }
      case "update.applied": {
        const b = ev.body;
        const touched: Record<string, Set<number>> = {};
        for (const [g, rows] of Object.entries(b.contributions)) {
          const gi = this.groupIndex.get(g) ?? -1;
          for (const row of rows) {
            const a = this.authorityOf.get(row) ?? NONE;
            (touched[a] ??= new Set()).add(gi);
            const rep = this.byName.get(a);
            if (rep) {
              rep.contributions++;
              rep.touched.add(g);
              rep.stepSet.add(b.step);
            }
          }
        }
        const changed = Object.entries(b.weights)
          .filter(([, w]) => w.before !== w.after)
          .map(([g]) => this.groupIndex.get(g) ?? -1);
        const contributors = Object.keys(touched);
        if (contributors.length === 1) {
          const rep = this.byName.get(contributors[0]!);
          if (rep) {
            const inside = new Set(rep.groups);
            const outside = s.groups.filter((g) => !inside.has(g));
            rep.soleSteps.push({
              step: b.step,
              seq: ev.seq,
              outside: outside.length,
              changedOutside: outside.filter((g) => b.weights[g] && b.weights[g]!.before !== b.weights[g]!.after),
            });
          }
        }
        s.steps.push({
          seq: ev.seq,
          step: b.step,
          rank: b.rank,
          reward: { mean: b.reward.mean, min: b.reward.min, max: b.reward.max, count: b.reward.count },
          touched: Object.fromEntries(Object.entries(touched).map(([a, set]) => [a, [...set].sort((x, y) => x - y)])),
          changed,
        });
        break;
      }
      case "checkpoint.saved":
        s.checkpoints.push({ seq: ev.seq, step: ev.body.step, name: ev.body.name, metrics: ev.body.metrics ?? {} });
        break;
      case "job.resumed":
        s.final = null;
        s.status = null;
        s.resumes.push({
          seq: ev.seq,
          checkpoint: ev.body.checkpoint?.name ?? null,
          abandonedSteps: ev.body.abandonedSteps,
        });
        break;
      case "job.finished":
        s.final = ev.body.model;
        s.status = ev.body.status;
        s.finishedOn = ev.time;
        break;
      default:
        break;
    }
  }

  /** `merkleRoot`: the bundle's (when built with `merkle: false`). */
  finish(merkleRoot?: string): AuditSummary {
    const s = this.s;
    s.ledgerMerkleRoot = this.log ? this.log.root().toString("hex") : (merkleRoot ?? "");
    const order = new Map(s.groups.map((g, i) => [g, i]));
    s.authorities = [...this.byName.values()].map(({ touched, stepSet, ...rep }) => ({
      ...rep,
      manifestRoot: manifestRoot(this.rowsOf.get(rep.name) ?? []),
      groupsTouched: [...touched].sort((a, b) => (order.get(a) ?? 0) - (order.get(b) ?? 0)),
      steps: [...stepSet].sort((a, b) => a - b),
    }));
    return s;
  }
}

export function summarize(events: Iterable<LedgerEvent>): AuditSummary {
  const b = new SummaryBuilder();
  for (const e of events) b.add(e);
  return b.finish();
}

/** Steps applied: one update event per rank each (a resumed job may apply a step number twice: both count, as both happened). */
export function stepsApplied(s: AuditSummary): number {
  return s.steps.filter((x) => x.rank === 0).length;
}
