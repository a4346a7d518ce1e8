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
import type { FineTuneJobObject, K8sObject } from "./desired.js";
import { names, POD_FAILURE_POLICY_REASON } from "./names.js";

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
  /** The current attempt's batch/v1 Job as cached (undefined: not created yet, or deleted). */
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
  }));
}

export function decide(job: FineTuneJobObject, o: Observed): Decision {
  const now = o.now.toISOString().replace(/\.\d{3}Z$/, "Z");
  const gen = job.metadata.generation ?? 0;
  const spec = job.spec;
  const prev = job.status ?? {};
  const st: FineTuneJobStatus = structuredClone(prev);
  const actions: Action[] = [];
  const events: KEvent[] = [];
  let requeueAfterMs: number | undefined;
  const set = (
    type: Parameters<typeof setCondition>[1]["type"],
    status: "True" | "False",
    reason: string,
    message: string,
  ) => {
    const before = getCondition(st.conditions, type);
    st.conditions = setCondition(st.conditions, { type, status, reason, message }, gen, now);
    return before?.status !== status || before?.reason !== reason;
  };
  const restartCount = st.restartCount ?? 0;
  const attempt = st.attempt ?? restartCount;
  const jobName = names.trainerJob(job.metadata.name, attempt);
  const tj = o.trainerJob?.metadata?.name === jobName ? o.trainerJob : undefined;
  // Progress of the current attempt (older attempts may still have messages in flight).
  const progress =
    o.progress && (o.progress.attempt === undefined || o.progress.attempt === attempt) ? o.progress : undefined;
  if (o.progress && o.progress.step >= (st.trainerStatus?.step ?? 0)) {
    st.trainerStatus = trainerStatusOf(o.progress);
    if (o.progress.checkpoints.length) st.checkpoints = checkpointsOf(o.progress);
  }
  const newest = st.checkpoints?.reduce<CheckpointStatus | undefined>(
    (a, c) => (!a || c.step > a.step ? c : a),
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
      gen,
      now,
    );
  }
  if (o.publicKey) st.ledger = { ...(st.ledger ?? {}), publicKey: o.publicKey };

  const finish = () => {
    st.completionTime ??= now;
    // A job that finished while a suspend was pending (the trainer completed first) is not suspended.
    if (isTrue(st.conditions, "Suspended")) set("Suspended", "False", "Finished", "the job finished");
    st.observedGeneration = gen;
    st.state = stateOf(st.conditions);
    if (spec.ttlSecondsAfterFinished !== undefined) {
      const due = Date.parse(st.completionTime) + spec.ttlSecondsAfterFinished * 1000;
      if (due <= o.now.getTime()) actions.push({ type: "deleteSelf" });
      else requeueAfterMs = due - o.now.getTime();
    }
  };

  // --- terminal: sticky, never recreate children -------------------------------------------------------------
  if (isTerminal(st.conditions)) {
    finish();
    return { status: st, actions, events, requeueAfterMs };
  }

  // --- cancel ----------------------------------------------------------------------------------------------
  if (spec.cancel) {
    actions.push({ type: "control", action: "cancel" });
    if (tj) actions.push({ type: "deleteTrainerJob", name: jobName });
    set("Cancelled", "True", "CancelRequested", "spec.cancel is true: training stopped");
    set("Running", "False", "Cancelled", "the job was cancelled");
    events.push({ type: "Normal", reason: "Cancelled", message: "spec.cancel is true: training stopped" });
    finish();
    return { status: st, actions, events };
  }

  // --- the trainer Job's outcome -----------------------------------------------------------------------------
  if (tj && jobCondition(tj, "Complete") && progress?.status === "paused") {
    // The trainer checkpointed and exited 0 (pause message or SIGTERM) without finishing: the next attempt
    // resumes from that checkpoint (suspended if spec.suspend); no retry budget is used.
    st.attempt = attempt + 1;
    st.trainerJob = names.trainerJob(job.metadata.name, attempt + 1);
    actions.push({ type: "deleteTrainerJob", name: jobName });
    actions.push({ type: "ensureChildren", attempt: attempt + 1 });
    if (spec.suspend) {
      set("Suspended", "True", "Suspended", "spec.suspend is true: trainers checkpointed and stopped");
      set("Running", "False", "Suspended", "the job is suspended");
    } else set("Running", "False", "Restarting", "the trainer paused: resuming from its checkpoint");
    st.observedGeneration = gen;
    st.state = stateOf(st.conditions);
    return { status: st, actions, events };
  }
  if (tj && jobCondition(tj, "Complete")) {
    // Every rank exited 0: the Job's outcome decides, not a progress message (core NATS does not say who
    // published one, and `rft trainer` exits 1 whenever it reports "failed", which fails the Job instead).
    if (progress?.fineTunedModel) st.fineTunedModel = progress.fineTunedModel;
    set("Succeeded", "True", "TrainerCompleted", `training finished at step ${st.trainerStatus?.step ?? "?"}`);
    set("Running", "False", "Completed", "training finished");
    events.push({
      type: "Normal",
      reason: "Succeeded",
      message: `training finished (${st.fineTunedModel ?? "no model path"})`,
    });
    finish();
    return { status: st, actions, events, requeueAfterMs };
  }
  if (tj && (jobCondition(tj, "Failed") || jobCondition(tj, "FailureTarget"))) {
    const why = jobFailureMessage(tj);
    const limit = spec.backoffLimit ?? 3;
    if (permanentFailure(tj)) {
      // Exit code 2: the trainer rejected its configuration. A restart would fail the same way.
      set("Failed", "True", "TrainerConfigError", `a trainer exited with a configuration error (not retried): ${why}`);
      set("Running", "False", "Failed", "the trainer rejected its configuration");
      events.push({
        type: "Warning",
        reason: "TrainerConfigError",
        message: `a trainer exited with a configuration error; not retried (see the trainer container's log): ${why}`,
      });
      finish();
      return { status: st, actions, events, requeueAfterMs };
    }
    if (restartCount < limit) {
      // Budget first (it is in status, so it survives operator restarts), then the next attempt.
      st.restartCount = restartCount + 1;
      st.attempt = attempt + 1;
      set(
        "Running",
        "False",
        "Restarting",
        `gang restart ${restartCount + 1}/${limit} from the last checkpoint: ${why}`,
      );
      events.push({
        type: "Warning",
        reason: "GangRestart",
        message: `a trainer rank failed (${why}); restarting all ranks from the last checkpoint (${restartCount + 1}/${limit})`,
      });
      actions.push({ type: "deleteTrainerJob", name: jobName });
      actions.push({ type: "ensureChildren", attempt: attempt + 1 });
      st.trainerJob = names.trainerJob(job.metadata.name, attempt + 1);
      st.observedGeneration = gen;
      st.state = stateOf(st.conditions);
      return { status: st, actions, events };
    }
    set(
      "Failed",
      "True",
      "BackoffLimitExceeded",
      `${restartCount} gang restarts used (backoffLimit ${limit}); last: ${why}`,
    );
    set("Running", "False", "Failed", "the retry budget is spent");
    events.push({
      type: "Warning",
      reason: "BackoffLimitExceeded",
      message: `failed after ${restartCount} restarts: ${why}`,
    });
    finish();
    return { status: st, actions, events, requeueAfterMs };
  }

  // --- deadline ------------------------------------------------------------------------------------------------
  const suspended = spec.suspend === true;
  // (Not while suspended, nor in the reconcile that resumes: the clock restarts at the resume.)
  const resuming = !suspended && isTrue(st.conditions, "Suspended");
  if (spec.activeDeadlineSeconds !== undefined && !suspended && !resuming && (st.lastResumeTime ?? st.startTime)) {
    const from = Date.parse((st.lastResumeTime ?? st.startTime)!);
    const due = from + spec.activeDeadlineSeconds * 1000;
    if (due <= o.now.getTime()) {
      actions.push({ type: "control", action: "cancel" });
      if (tj) actions.push({ type: "deleteTrainerJob", name: jobName });
      set(
        "Failed",
        "True",
        "DeadlineExceeded",
        `the job ran longer than activeDeadlineSeconds (${spec.activeDeadlineSeconds})`,
      );
      set("Running", "False", "Failed", "deadline exceeded");
      events.push({
        type: "Warning",
        reason: "DeadlineExceeded",
        message: `activeDeadlineSeconds ${spec.activeDeadlineSeconds} exceeded`,
      });
      finish();
      return { status: st, actions, events, requeueAfterMs };
    }
  }

  // --- children, suspend/resume, running -------------------------------------------------------------------
  actions.push({ type: "ensureChildren", attempt });
  st.trainerJob = jobName;
  if (
    set("Created", "True", "ChildrenCreated", `signing Secret, ConfigMap, headless Service and Job ${jobName} applied`)
  ) {
    events.push({ type: "Normal", reason: "Created", message: `created the children (Job ${jobName})` });
  }
  if (suspended) {
    if (set("Suspended", "True", "Suspended", "spec.suspend is true: trainers checkpointed and stopped")) {
      actions.push({ type: "control", action: "pause" });
      events.push({
        type: "Normal",
        reason: "Suspended",
        message: "pausing: trainers checkpoint, then the Job is suspended",
      });
    }
    set("Running", "False", "Suspended", "the job is suspended");
  } else {
    if (isTrue(st.conditions, "Suspended")) {
      set("Suspended", "False", "Resumed", "spec.suspend is false: resuming from the last checkpoint");
      st.lastResumeTime = now;
      actions.push({ type: "control", action: "resume" });
      events.push({ type: "Normal", reason: "Resumed", message: "resuming from the last checkpoint" });
    } else if (!getCondition(st.conditions, "Suspended")) {
      set("Suspended", "False", "NotSuspended", "the job is not suspended");
    }
    if (!st.startTime) {
      st.startTime = now;
      st.lastResumeTime = now;
    }
    if (spec.activeDeadlineSeconds !== undefined) {
      const from = Date.parse((st.lastResumeTime ?? st.startTime)!);
      requeueAfterMs = Math.max(0, from + spec.activeDeadlineSeconds * 1000 - o.now.getTime());
    }
    const ready = tj?.status?.ready ?? 0;
    const active = tj?.status?.active ?? 0;
    const replicas = spec.replicas ?? 1;
    // A pod is ready only once its trainer runs, which the grader's startup probe gates.
    if (ready >= replicas) {
      set("GradersReady", "True", "StartupProbeSucceeded", `${replicas} grader sidecar(s) passed their startup probe`);
    } else if (getCondition(st.conditions, "GradersReady") || active > 0) {
      set("GradersReady", "False", "Waiting", `${ready}/${replicas} trainer pods ready (grader startup probe)`);
    }
    if (active >= replicas && (ready >= replicas || (progress && progress.status === "running"))) {
      if (set("Running", "True", "Running", `${replicas} trainer rank(s) running`)) {
        events.push({ type: "Normal", reason: "Running", message: `${replicas} trainer rank(s) running` });
      }
    } else if (!isTrue(st.conditions, "Running") || active < replicas) {
      const prevReason = getCondition(st.conditions, "Running")?.reason;
      const reason = prevReason === "Restarting" && active < replicas ? "Restarting" : "Starting";
      set("Running", "False", reason, `${active}/${replicas} trainer pods active, ${ready} ready`);
    }
  }
  st.observedGeneration = gen;
  st.state = stateOf(st.conditions);
  return { status: st, actions, events, requeueAfterMs };
}

/** True when the status differs in anything but ordering noise (write status only when it changed). */
export function statusChanged(a: FineTuneJobStatus | undefined, b: FineTuneJobStatus): boolean {
  return JSON.stringify(a ?? {}) !== JSON.stringify(b);
}
