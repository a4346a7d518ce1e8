/**
 * The reconcile decision (pure): from a FineTuneJob, the observed trainer Job of its current attempt and
 * the trainers' latest progress, the next status, the actions for the I/O shell, the Events to emit and
 * when to look again. Level-triggered: the same inputs give the same answer, whatever event woke us.
 *
 * Terminal states (Succeeded, Failed, Cancelled) are sticky: once one is True no child is ever created again.
 */
import type {
  CheckpointStatus,
  FineTuneJobStatus,
  ProgressMessage,
  TrainerStatus,
} from "../proto/finetunejob-status.js";
import { getCondition, isTerminal, isTrue, setCondition, stateOf } from "./conditions.js";
import { type FineTuneJobObject, type K8sObject, queueManaged, rankJobName } from "./desired.js";
import { names, POD_FAILURE_POLICY_REASON, QUEUE_LABEL } from "./names.js";

export type Action =
  /** Apply the Secret (if missing), ConfigMap, Service and the attempt's Job (with its suspend flag). */
  | { type: "ensureChildren"; attempt: number }
  | { type: "deleteTrainerJob"; name: string }
  | { type: "control"; action: "pause" | "resume" | "cancel" }
  | { type: "deleteSelf" };

export interface KEvent {
  type: "Normal" | "Warning";
  reason: string;
  message: string;
}

export interface Observed {
  now: Date;
  /**
   * The batch/v1 Job that runs the current attempt's ranks as cached (the attempt's Job, or the Job of its
   * JobSet; undefined: not created yet, or deleted).
   */
  trainerJob?: K8sObject;
  /** The latest progress message of this job (any attempt). */
  progress?: ProgressMessage;
  /** The public key in the job's signing Secret, once it exists. */
  publicKey?: string;
}

export interface Decision {
  status: FineTuneJobStatus;
  actions: Action[];
  events: KEvent[];
  requeueAfterMs?: number;
}

function jobCondition(job: K8sObject | undefined, type: string): boolean {
  return (job?.status?.conditions ?? []).some((c: K8sObject) => c.type === type && c.status === "True");
}

function jobFailureMessage(job: K8sObject): string {
  const c = (job.status?.conditions ?? []).find(
    (x: K8sObject) => (x.type === "Failed" || x.type === "FailureTarget") && x.status === "True",
  );
  return c ? `${c.reason ?? "Failed"}: ${c.message ?? ""}`.trim() : "a trainer rank failed";
}

/** The Job failed by the podFailurePolicy's FailJob rule: a trainer exited with the permanent code. */
function permanentFailure(job: K8sObject): boolean {
  return (job.status?.conditions ?? []).some(
    (c: K8sObject) =>
      (c.type === "Failed" || c.type === "FailureTarget") &&
      c.status === "True" &&
      c.reason === POD_FAILURE_POLICY_REASON,
  );
}

function trainerStatusOf(p: ProgressMessage): TrainerStatus {
  return {
    step: p.step,
    totalSteps: p.totalSteps,
    trainRewardMean: p.trainRewardMean,
    validRewardMean: p.validRewardMean,
    progress: p.totalSteps > 0 ? Math.min(100, Math.floor((100 * p.step) / p.totalSteps)) : 0,
    status: p.status,
    lastUpdated: p.time,
  };
}

/** OpenAI's policy as the trainer applies it: top 3 by valid_reward_mean plus the latest. */
function checkpointsOf(p: ProgressMessage): CheckpointStatus[] {
  return p.checkpoints.slice(0, 8).map((c) => ({
    name: c.name,
    step: c.step,
    validRewardMean: c.validRewardMean,
    path: c.path,
    ...(c.createdAt ? { createdAt: c.createdAt } : {}),
  }));
}

type ConditionType = Parameters<typeof setCondition>[1]["type"];

/** What every phase of one decision reads and writes: the inputs, the status being built, the outputs. */
interface Ctx {
  job: FineTuneJobObject;
  spec: FineTuneJobObject["spec"];
  o: Observed;
  /** o.now as the conditions carry it (seconds). */
  now: string;
  gen: number;
  st: FineTuneJobStatus;
  actions: Action[];
  events: KEvent[];
  requeueAfterMs?: number;
  restartCount: number;
  attempt: number;
  /** The current attempt's trainer workload (Job or JobSet) name, and its rank Job when the cache holds it. */
  jobName: string;
  tj?: K8sObject;
  /** Progress of the current attempt (older attempts may still have messages in flight). */
  progress?: ProgressMessage;
}

function context(job: FineTuneJobObject, o: Observed): Ctx {
  const st: FineTuneJobStatus = structuredClone(job.status ?? {});
  const restartCount = st.restartCount ?? 0;
  const attempt = st.attempt ?? restartCount;
  const jobName = names.trainerJob(job.metadata.name, attempt);
  return {
    job,
    spec: job.spec,
    o,
    now: o.now.toISOString().replace(/\.\d{3}Z$/, "Z"),
    gen: job.metadata.generation ?? 0,
    st,
    actions: [],
    events: [],
    restartCount,
    attempt,
    jobName,
    tj: o.trainerJob?.metadata?.name === rankJobName(job, attempt) ? o.trainerJob : undefined,
    progress:
      o.progress && (o.progress.attempt === undefined || o.progress.attempt === attempt) ? o.progress : undefined,
  };
}

/** Sets a condition; true when its status or reason changed (the moment to emit an Event). */
function set(c: Ctx, type: ConditionType, status: "True" | "False", reason: string, message: string): boolean {
  const before = getCondition(c.st.conditions, type);
  c.st.conditions = setCondition(c.st.conditions, { type, status, reason, message }, c.gen, c.now);
  return before?.status !== status || before?.reason !== reason;
}

/** The decision as it stands; `requeue` carries the requeue-after the phase computed. */
function decision(c: Ctx, requeue: boolean): Decision {
  const d: Decision = { status: c.st, actions: c.actions, events: c.events };
  return requeue ? { ...d, requeueAfterMs: c.requeueAfterMs } : d;
}

/** Status is up to date with this generation: observedGeneration and the display state. */
function settle(c: Ctx): void {
  c.st.observedGeneration = c.gen;
  c.st.state = stateOf(c.st.conditions);
}

/** The latest progress into status (trainerStatus, checkpoints, usage, CheckpointSaved) and the ledger's public key. */
function observeProgress(c: Ctx): void {
  const { st, o } = c;
  if (o.progress && o.progress.step >= (st.trainerStatus?.step ?? 0)) {
    st.trainerStatus = trainerStatusOf(o.progress);
    if (o.progress.checkpoints.length) st.checkpoints = checkpointsOf(o.progress);
  }
  // The current attempt's usage: the trainer sums it over attempts (from the totals its checkpoint recorded).
  if (c.progress?.usage) st.usage = structuredClone(c.progress.usage);
  const newest = st.checkpoints?.reduce<CheckpointStatus | undefined>(
    (a, x) => (!a || x.step > a.step ? x : a),
    undefined,
  );
  if (newest) {
    st.conditions = setCondition(
      st.conditions,
      {
        type: "CheckpointSaved",
        status: "True",
        reason: "CheckpointSaved",
        message: `step ${newest.step}: ${newest.path}`,
      },
      c.gen,
      c.now,
    );
  }
  if (o.publicKey) st.ledger = { ...(st.ledger ?? {}), publicKey: o.publicKey };
}

/** A finished job: completion time, a pending suspend cleared, the TTL (delete now, or look again when due). */
function finish(c: Ctx): void {
  const { st, spec, o } = c;
  st.completionTime ??= c.now;
  // A job that finished while a suspend was pending (the trainer completed first) is not suspended.
  if (isTrue(st.conditions, "Suspended")) set(c, "Suspended", "False", "Finished", "the job finished");
  settle(c);
  if (spec.ttlSecondsAfterFinished !== undefined) {
    const due = Date.parse(st.completionTime) + spec.ttlSecondsAfterFinished * 1000;
    if (due <= o.now.getTime()) c.actions.push({ type: "deleteSelf" });
    else c.requeueAfterMs = due - o.now.getTime();
  }
}

/** Terminal states are sticky: nothing but the TTL, never a child again. */
function whenTerminal(c: Ctx): Decision | undefined {
  if (!isTerminal(c.st.conditions)) return undefined;
  finish(c);
  return decision(c, true);
}

function whenCancelled(c: Ctx): Decision | undefined {
  if (!c.spec.cancel) return undefined;
  c.actions.push({ type: "control", action: "cancel" });
  if (c.tj) c.actions.push({ type: "deleteTrainerJob", name: c.jobName });
  set(c, "Cancelled", "True", "CancelRequested", "spec.cancel is true: training stopped");
  set(c, "Running", "False", "Cancelled", "the job was cancelled");
  c.events.push({ type: "Normal", reason: "Cancelled", message: "spec.cancel is true: training stopped" });
  finish(c);
  return decision(c, false);
}

/** Starts the next attempt: the current Job goes, the next one's children are applied. */
function nextAttempt(c: Ctx): void {
  c.st.attempt = c.attempt + 1;
  c.st.trainerJob = names.trainerJob(c.job.metadata.name, c.attempt + 1);
  c.actions.push({ type: "deleteTrainerJob", name: c.jobName });
  c.actions.push({ type: "ensureChildren", attempt: c.attempt + 1 });
  // With Kueue the next attempt's workload is admitted anew.
  if (queueManaged(c.job) && getCondition(c.st.conditions, "Admitted")) queued(c, false);
}

/**
 * The trainer checkpointed and exited 0 (pause message or SIGTERM) without finishing: the next attempt resumes
 * from that checkpoint (suspended if spec.suspend); no retry budget is used.
 */
function whenPaused(c: Ctx): Decision | undefined {
  if (!(c.tj && jobCondition(c.tj, "Complete") && c.progress?.status === "paused")) return undefined;
  const preempted = queueManaged(c.job) && c.tj.spec?.suspend === true && !c.spec.suspend;
  nextAttempt(c);
  if (preempted) preempt(c);
  else if (c.spec.suspend) {
    set(c, "Suspended", "True", "Suspended", "spec.suspend is true: trainers checkpointed and stopped");
    set(c, "Running", "False", "Suspended", "the job is suspended");
  } else set(c, "Running", "False", "Restarting", "the trainer paused: resuming from its checkpoint");
  settle(c);
  return decision(c, false);
}

/**
 * Every rank exited 0: the Job's outcome decides, not a progress message (core NATS does not say who published
 * one, and `rft trainer` exits 1 whenever it reports "failed", which fails the Job instead).
 */
function whenCompleted(c: Ctx): Decision | undefined {
  if (!(c.tj && jobCondition(c.tj, "Complete"))) return undefined;
  const { st } = c;
  if (c.progress?.fineTunedModel) st.fineTunedModel = c.progress.fineTunedModel;
  set(c, "Succeeded", "True", "TrainerCompleted", `training finished at step ${st.trainerStatus?.step ?? "?"}`);
  set(c, "Running", "False", "Completed", "training finished");
  c.events.push({
    type: "Normal",
    reason: "Succeeded",
    message: `training finished (${st.fineTunedModel ?? "no model path"})`,
  });
  finish(c);
  return decision(c, true);
}

/** The Job failed: a configuration error is final, otherwise a gang restart while the budget lasts. */
function whenFailed(c: Ctx): Decision | undefined {
  const tj = c.tj;
  if (!(tj && (jobCondition(tj, "Failed") || jobCondition(tj, "FailureTarget")))) return undefined;
  const why = jobFailureMessage(tj);
  if (permanentFailure(tj)) return configError(c, why);
  if (c.restartCount < (c.spec.backoffLimit ?? 3)) return gangRestart(c, why);
  return budgetSpent(c, why);
}

/** Exit code 2: the trainer rejected its configuration. A restart would fail the same way. */
function configError(c: Ctx, why: string): Decision {
  set(c, "Failed", "True", "TrainerConfigError", `a trainer exited with a configuration error (not retried): ${why}`);
  set(c, "Running", "False", "Failed", "the trainer rejected its configuration");
  c.events.push({
    type: "Warning",
    reason: "TrainerConfigError",
    message: `a trainer exited with a configuration error; not retried (see the trainer container's log): ${why}`,
  });
  finish(c);
  return decision(c, true);
}

/** Budget first (it is in status, so it survives operator restarts), then the next attempt. */
function gangRestart(c: Ctx, why: string): Decision {
  const { restartCount } = c;
  const limit = c.spec.backoffLimit ?? 3;
  c.st.restartCount = restartCount + 1;
  c.st.attempt = c.attempt + 1;
  set(
    c,
    "Running",
    "False",
    "Restarting",
    `gang restart ${restartCount + 1}/${limit} from the last checkpoint: ${why}`,
  );
  c.events.push({
    type: "Warning",
    reason: "GangRestart",
    message: `a trainer rank failed (${why}); restarting all ranks from the last checkpoint (${restartCount + 1}/${limit})`,
  });
  nextAttempt(c);
  settle(c);
  return decision(c, false);
}

function budgetSpent(c: Ctx, why: string): Decision {
  const limit = c.spec.backoffLimit ?? 3;
  set(
    c,
    "Failed",
    "True",
    "BackoffLimitExceeded",
    `${c.restartCount} gang restarts used (backoffLimit ${limit}); last: ${why}`,
  );
  set(c, "Running", "False", "Failed", "the retry budget is spent");
  c.events.push({
    type: "Warning",
    reason: "BackoffLimitExceeded",
    message: `failed after ${c.restartCount} restarts: ${why}`,
  });
  finish(c);
  return decision(c, true);
}

/**
 * Past activeDeadlineSeconds since the last resume or readmission (not while suspended or queued, nor in the
 * reconcile that resumes).
 */
function whenPastDeadline(c: Ctx): Decision | undefined {
  const { spec, st } = c;
  const suspended = spec.suspend === true;
  const resuming = !suspended && isTrue(st.conditions, "Suspended");
  // Waiting in Kueue's queue (first admission, or after a preemption) does not count either.
  const queued = getCondition(st.conditions, "Admitted")?.status === "False";
  const since = st.lastResumeTime ?? st.startTime;
  if (spec.activeDeadlineSeconds === undefined || suspended || resuming || queued || !since) return undefined;
  if (Date.parse(since) + spec.activeDeadlineSeconds * 1000 > c.o.now.getTime()) return undefined;
  c.actions.push({ type: "control", action: "cancel" });
  if (c.tj) c.actions.push({ type: "deleteTrainerJob", name: c.jobName });
  set(
    c,
    "Failed",
    "True",
    "DeadlineExceeded",
    `the job ran longer than activeDeadlineSeconds (${spec.activeDeadlineSeconds})`,
  );
  set(c, "Running", "False", "Failed", "deadline exceeded");
  c.events.push({
    type: "Warning",
    reason: "DeadlineExceeded",
    message: `activeDeadlineSeconds ${spec.activeDeadlineSeconds} exceeded`,
  });
  finish(c);
  return decision(c, true);
}

/** Not finished: ensure the children (the Job's suspend follows the spec), then suspend or run. */
function whileActive(c: Ctx): Decision {
  const { jobName } = c;
  c.actions.push({ type: "ensureChildren", attempt: c.attempt });
  c.st.trainerJob = jobName;
  if (
    set(
      c,
      "Created",
      "True",
      "ChildrenCreated",
      `signing Secret, ConfigMap, headless Service and Job ${jobName} applied`,
    )
  ) {
    c.events.push({ type: "Normal", reason: "Created", message: `created the children (Job ${jobName})` });
  }
  if (c.spec.suspend === true) suspend(c);
  else run(c);
  settle(c);
  return decision(c, true);
}

function suspend(c: Ctx): void {
  // A queued Job that has no pods (never admitted, or preempted and gone) is deleted: Kueue would admit it and
  // start it while the FineTuneJob is suspended. The resume creates it again and it queues anew.
  if (queueManaged(c.job) && c.tj && c.tj.spec?.suspend === true && (c.tj.status?.active ?? 0) === 0) {
    c.actions.push({ type: "deleteTrainerJob", name: c.jobName });
  }
  if (set(c, "Suspended", "True", "Suspended", "spec.suspend is true: trainers checkpointed and stopped")) {
    c.actions.push({ type: "control", action: "pause" });
    c.events.push({
      type: "Normal",
      reason: "Suspended",
      message: "pausing: trainers checkpoint, then the Job is suspended",
    });
  }
  set(c, "Running", "False", "Suspended", "the job is suspended");
}

/** Resume bookkeeping, the deadline's requeue, and GradersReady / Running from the Job's pod counts. */
function run(c: Ctx): void {
  const { st, spec } = c;
  if (isTrue(st.conditions, "Suspended")) {
    set(c, "Suspended", "False", "Resumed", "spec.suspend is false: resuming from the last checkpoint");
    st.lastResumeTime = c.now;
    c.actions.push({ type: "control", action: "resume" });
    c.events.push({ type: "Normal", reason: "Resumed", message: "resuming from the last checkpoint" });
  } else if (!getCondition(st.conditions, "Suspended")) {
    set(c, "Suspended", "False", "NotSuspended", "the job is not suspended");
  }
  if (!admitted(c)) return;
  if (!st.startTime) {
    st.startTime = c.now;
    st.lastResumeTime = c.now;
  }
  if (spec.activeDeadlineSeconds !== undefined) {
    const from = Date.parse((st.lastResumeTime ?? st.startTime)!);
    c.requeueAfterMs = Math.max(0, from + spec.activeDeadlineSeconds * 1000 - c.o.now.getTime());
  }
  podConditions(c);
}

const PREEMPTED_MESSAGE =
  "Kueue suspended the gang (preempted or evicted): the trainers checkpoint, and the job resumes from that checkpoint once Kueue admits it again";

/** Kueue took the gang's quota back: Admitted and Running False with reason Preempted (once, with an Event). */
function preempt(c: Ctx): void {
  if (set(c, "Admitted", "False", "Preempted", PREEMPTED_MESSAGE)) {
    c.events.push({ type: "Normal", reason: "Preempted", message: PREEMPTED_MESSAGE });
  }
  set(c, "Running", "False", "Preempted", PREEMPTED_MESSAGE);
}

/**
 * Kueue's admission of a queued job (always true without Kueue). Kueue owns the rank Job's `spec.suspend`:
 * suspended means waiting for quota (reason Queued) or, after the gang had been admitted, preempted; unsuspended
 * means the whole gang was admitted at once. A readmission restarts the deadline's clock.
 */
function admitted(c: Ctx): boolean {
  if (!queueManaged(c.job)) return true;
  const prev = getCondition(c.st.conditions, "Admitted");
  const replicas = c.spec.replicas ?? 1;
  if (c.tj && c.tj.spec?.suspend !== true) {
    if (prev?.status === "True") return true;
    const again = prev?.reason === "Preempted";
    const message = again
      ? `Kueue admitted the gang again (${replicas} rank(s)): resuming from the last checkpoint`
      : `Kueue admitted the gang (${replicas} rank(s) at once)`;
    if (set(c, "Admitted", "True", again ? "Readmitted" : "Admitted", message)) {
      c.events.push({ type: "Normal", reason: again ? "Readmitted" : "Admitted", message });
      if (again) c.st.lastResumeTime = c.now;
    }
    return true;
  }
  if (!c.tj) {
    if (!prev) queued(c, true);
  } else if (prev?.status === "True" || prev?.reason === "Preempted") preempt(c);
  else queued(c, true);
  return false;
}

/** The attempt's workload waits in its Kueue queue (Admitted False, and Running False when `running`). */
function queued(c: Ctx, running: boolean): void {
  const queue = c.job.metadata.labels?.[QUEUE_LABEL];
  const message = `waiting for Kueue to admit all ${c.spec.replicas ?? 1} rank(s) at once (LocalQueue ${queue})`;
  set(c, "Admitted", "False", "Queued", message);
  if (running) set(c, "Running", "False", "Queued", message);
}

function podConditions(c: Ctx): void {
  const { st, tj, progress } = c;
  const ready = tj?.status?.ready ?? 0;
  const active = tj?.status?.active ?? 0;
  const replicas = c.spec.replicas ?? 1;
  // A pod is ready only once its trainer runs, which the grader's startup probe gates.
  if (ready >= replicas) {
    set(c, "GradersReady", "True", "StartupProbeSucceeded", `${replicas} grader sidecar(s) passed their startup probe`);
  } else if (getCondition(st.conditions, "GradersReady") || active > 0) {
    set(c, "GradersReady", "False", "Waiting", `${ready}/${replicas} trainer pods ready (grader startup probe)`);
  }
  if (active >= replicas && (ready >= replicas || (progress && progress.status === "running"))) {
    if (set(c, "Running", "True", "Running", `${replicas} trainer rank(s) running`)) {
      c.events.push({ type: "Normal", reason: "Running", message: `${replicas} trainer rank(s) running` });
    }
  } else if (!isTrue(st.conditions, "Running") || active < replicas) {
    const prevReason = getCondition(st.conditions, "Running")?.reason;
    const reason = prevReason === "Restarting" && active < replicas ? "Restarting" : "Starting";
    set(c, "Running", "False", reason, `${active}/${replicas} trainer pods active, ${ready} ready`);
  }
}

/**
 * The decision, phase by phase: the first phase that applies answers (terminal, cancel, the trainer Job's
 * outcome — paused, completed, failed —, the deadline); otherwise the job is active.
 */
export function decide(job: FineTuneJobObject, o: Observed): Decision {
  const c = context(job, o);
  observeProgress(c);
  return (
    whenTerminal(c) ??
    whenCancelled(c) ??
    whenPaused(c) ??
    whenCompleted(c) ??
    whenFailed(c) ??
    whenPastDeadline(c) ??
    whileActive(c)
  );
}

/** True when the status differs in anything but ordering noise (write status only when it changed). */
export function statusChanged(a: FineTuneJobStatus | undefined, b: FineTuneJobStatus): boolean {
  return JSON.stringify(a ?? {}) !== JSON.stringify(b);
}
