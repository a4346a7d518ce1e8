/**
 * `rft api --cluster`, pure: an OpenAI fine-tuning job ⇄ a FineTuneJob object in the API server. The
 * FineTuneJob is the one source of truth: the OpenAI fields the spec does not hold (the job id, the request's
 * model name and file ids, the method as asked, created_at, the project) ride in one annotation written at
 * create time; status, events, checkpoints and `fine_tuned_model` are computed from the operator's status
 * (conditions, trainerStatus, checkpoints) on every read. Actions are merge patches of spec.cancel and
 * spec.suspend, which the operator turns into cancel / checkpoint-and-pause / resume.
 */
import { createHash } from "node:crypto";
import type { FineTuneJob } from "../proto/finetunejob.js";
import type { Condition, FineTuneJobStatus, Usage } from "../proto/finetunejob-status.js";
import type { Checkpoint, FineTuningJob, JobEvent } from "./jobs.js";
import { decide, type Action, type Decision, type JobStatus } from "./job-state.js";
import type { UsageMetrics } from "./usage.js";

/** The annotation holding the job's OpenAI fields (JSON of `OpenAiFields`). */
export const JOB_ANNOTATION = "rft.dev/openai-job";
/** Labels of every FineTuneJob the API creates: who made it, and for which project (list selector). */
export const CREATED_BY_LABEL = "app.kubernetes.io/created-by";
export const CREATED_BY = "rft-api";
export const PROJECT_LABEL = "rft.dev/api-project";
/** The env var of the trainer container that holds the job's dataset token (from the job's dataset Secret). */
export const DATASET_TOKEN_ENV = "RFT_DATASET_TOKEN";
export const DATASET_TOKEN_KEY = "token";
/** The env var of the trainer container naming where rank 0 sends its validation results (./cluster-jobs.ts). */
export const VALIDATION_URL_ENV = "RFT_VALIDATION_URL";

/** The parts of OpenAI's job object that the FineTuneJob's spec cannot give back. */
export interface OpenAiFields {
  id: string;
  model: string;
  training_file: string;
  validation_file: string | null;
  created_at: number;
  suffix: string | null;
  metadata: Record<string, string> | null;
  seed: number;
  hyperparameters: Record<string, unknown>;
  /** The method as answered (type, its hyperparameters with "auto"s), without the grader (the spec has it). */
  method: Record<string, unknown>;
  /** The RFT job's eval (api/job-evals.ts): each validation step the trainer sends back is a run of it. */
  eval_id?: string | null;
}

/** Where a project's jobs run. */
export interface ProjectTarget {
  namespace: string;
  /** A claim in that namespace holding the base models (mounted read-only at the operator's data mount). */
  modelClaim: string;
  /** A claim in that namespace for checkpoints and the final model (else the pods' emptyDir). */
  checkpointClaim?: string;
}

export const ftjName = (id: string) => id.toLowerCase();
/** The job's dataset Secret (token for the dataset URLs); owned by the FineTuneJob, collected with it. */
export const datasetSecretName = (id: string) => `${ftjName(id)}-dataset`;

export interface ClusterJobOptions {
  id: string;
  project: string;
  target: ProjectTarget;
  /** The model's directory on the model claim (relative). */
  modelPath: string;
  /** URLs trainer pods fetch the files from (with `#sha256=` digests the trainer checks). */
  trainingUrl: string;
  validationUrl?: string;
  /** Where the trainer PUTs each validation step's graded samples (`<url>/step-N.jsonl`), for the job's eval. */
  validationUploadUrl?: string;
  fields: OpenAiFields;
  /** Trainer defaults of the installation (image, backend, resources). */
  trainer?: FineTuneJob["spec"]["trainer"];
}

/**
 * The FineTuneJob to create for a converted request (`toFineTuneJob` output): namespace, labels, the
 * annotation, the model claim path, dataset URLs and the token env from the job's dataset Secret.
 */
export function clusterFineTuneJob(converted: FineTuneJob, o: ClusterJobOptions): FineTuneJob {
  const spec = structuredClone(converted.spec);
  spec.model = o.modelPath;
  spec.trainingFile = o.trainingUrl;
  if (o.validationUrl) spec.validationFile = o.validationUrl;
  else delete spec.validationFile;
  spec.storage = {
    modelClaim: o.target.modelClaim,
    ...(o.target.checkpointClaim ? { checkpointClaim: o.target.checkpointClaim } : {}),
  };
  const trainer = structuredClone(o.trainer ?? {});
  trainer.env = [
    ...((trainer.env as Record<string, unknown>[] | undefined) ?? []),
    {
      name: DATASET_TOKEN_ENV,
      valueFrom: { secretKeyRef: { name: datasetSecretName(o.id), key: DATASET_TOKEN_KEY } },
    },
    ...(o.validationUploadUrl ? [{ name: VALIDATION_URL_ENV, value: o.validationUploadUrl }] : []),
  ];
  spec.trainer = trainer;
  return {
    apiVersion: converted.apiVersion,
    kind: converted.kind,
    metadata: {
      name: ftjName(o.id),
      namespace: o.target.namespace,
      labels: { [CREATED_BY_LABEL]: CREATED_BY, [PROJECT_LABEL]: o.project },
      annotations: { [JOB_ANNOTATION]: JSON.stringify(o.fields) },
    },
    spec,
  };
}

/** A FineTuneJob as read from the API server. */
export interface FineTuneJobObject {
  metadata: {
    name: string;
    namespace?: string;
    uid?: string;
    creationTimestamp?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
  };
  spec: FineTuneJob["spec"];
  status?: FineTuneJobStatus;
}

/** The OpenAI fields of an object the API created, or undefined for any other FineTuneJob. */
export function openAiFields(o: FineTuneJobObject): OpenAiFields | undefined {
  if (o.metadata.labels?.[CREATED_BY_LABEL] !== CREATED_BY) return undefined;
  const raw = o.metadata.annotations?.[JOB_ANNOTATION];
  if (!raw) return undefined;
  try {
    const f = JSON.parse(raw) as OpenAiFields;
    return typeof f.id === "string" && ftjName(f.id) === o.metadata.name ? f : undefined;
  } catch {
    return undefined;
  }
}

const cond = (o: FineTuneJobObject, type: string): Condition | undefined =>
  o.status?.conditions?.find((c) => c.type === type);
const isTrue = (o: FineTuneJobObject, type: string) => cond(o, type)?.status === "True";
const secs = (t: string | undefined) => (t ? Math.floor(Date.parse(t) / 1000) : null);

/**
 * OpenAI's status of a FineTuneJob: the operator's terminal conditions first, then what the API asked for
 * (spec.cancel: cancelled at once, as OpenAI answers; spec.suspend: pausing until the operator reports
 * Suspended), then Running, else queued.
 */
export function statusOf(o: FineTuneJobObject): JobStatus {
  if (isTrue(o, "Cancelled")) return "cancelled";
  if (isTrue(o, "Failed")) return "failed";
  if (isTrue(o, "Succeeded")) return "succeeded";
  if (o.spec.cancel) return "cancelled";
  if (o.spec.suspend) return isTrue(o, "Suspended") || !o.status?.startTime ? "paused" : "pausing";
  if (isTrue(o, "Running")) return "running";
  return "queued";
}

/** `ft:<base>:<org>:<suffix>:<8 characters of the id>`, as local mode and OpenAI name fine-tuned models. */
export const modelName = (f: OpenAiFields, org: string) =>
  `ft:${f.model}:${org}:${f.suffix ?? ""}:${f.id.slice(6, 14)}`;

/** OpenAI's job object of a FineTuneJob the API created. */
export function jobOf(o: FineTuneJobObject, f: OpenAiFields, org: string): FineTuningJob {
  const status = statusOf(o);
  const failed = cond(o, "Failed");
  const finishedCond = cond(o, status === "succeeded" ? "Succeeded" : status === "failed" ? "Failed" : "Cancelled");
  const final = status === "succeeded" || status === "failed" || status === "cancelled";
  return {
    object: "fine_tuning.job",
    id: f.id,
    model: f.model,
    created_at: f.created_at,
    finished_at: final ? (secs(o.status?.completionTime) ?? secs(finishedCond?.lastTransitionTime) ?? null) : null,
    fine_tuned_model: status === "succeeded" ? modelName(f, org) : null,
    organization_id: org,
    result_files: [],
    status,
    validation_file: f.validation_file,
    training_file: f.training_file,
    hyperparameters: f.hyperparameters,
    trained_tokens: o.status?.usage?.trainedTokens ?? null,
    error:
      status === "failed"
        ? { code: "training_failed", message: failed?.message || failed?.reason || "training failed", param: null }
        : null,
    user_provided_suffix: f.suffix,
    seed: f.seed,
    estimated_finish: estimate(o, status),
    integrations: [],
    metadata: f.metadata,
    method: f.method,
    usage_metrics: usageOf(o.status?.usage),
    eval_id: f.eval_id ?? null,
  };
}

/** OpenAI's `usage_metrics` (the shape local mode answers, api/usage.ts) from the trainers' status.usage. */
export function usageOf(u: Usage | undefined): UsageMetrics {
  if (!u) return { training_seconds: 0 };
  const models = Object.entries(u.judgeTokens);
  return {
    training_seconds: Math.round(u.trainingSeconds),
    ...(models.length
      ? {
          model_graders_token_usage: Object.fromEntries(
            models.map(([m, t]) => [
              m,
              {
                train_prompt_tokens: t.trainPrompt,
                train_completion_tokens: t.trainCompletion,
                train_cached_tokens: t.trainCached,
                eval_prompt_tokens: t.evalPrompt,
                eval_completion_tokens: t.evalCompletion,
                eval_cached_tokens: t.evalCached,
              },
            ]),
          ),
        }
      : {}),
  };
}

/** When the run ends at the pace so far (from startTime and trainerStatus), while running. */
function estimate(o: FineTuneJobObject, status: JobStatus): number | null {
  const ts = o.status?.trainerStatus;
  const start = secs(o.status?.lastResumeTime ?? o.status?.startTime);
  const at = secs(ts?.lastUpdated);
  if (status !== "running" || !ts || !start || !at || ts.step <= 0 || ts.totalSteps <= ts.step) return null;
  return Math.round(at + ((at - start) / ts.step) * (ts.totalSteps - ts.step));
}

const stableId = (prefix: string, ...parts: (string | number)[]) =>
  `${prefix}${createHash("sha256").update(parts.join("/")).digest("hex").slice(0, 24)}`;

/** A metrics event observed at some step (the API records each new step it sees; see ClusterJobs). */
export interface ObservedStep {
  step: number;
  total_steps: number;
  train_reward_mean: number | null;
  valid_reward_mean: number | null;
  /** unix seconds */
  at: number;
}

/** The step of a FineTuneJob's trainerStatus as an ObservedStep (undefined before the first step). */
export function observedStep(o: FineTuneJobObject): ObservedStep | undefined {
  const ts = o.status?.trainerStatus;
  if (!ts || ts.step <= 0) return undefined;
  return {
    step: ts.step,
    total_steps: ts.totalSteps,
    train_reward_mean: ts.trainRewardMean ?? null,
    valid_reward_mean: ts.validRewardMean ?? null,
    at: secs(ts.lastUpdated) ?? 0,
  };
}

/** A step's metrics event data in OpenAI's RFT shape (`scores`, and the flat legacy names), as local mode's. */
function metricsData(s: ObservedStep) {
  return {
    step: s.step,
    total_steps: s.total_steps,
    scores: {
      train_reward_mean: s.train_reward_mean,
      ...(s.valid_reward_mean !== null ? { valid_reward_mean: s.valid_reward_mean } : {}),
    },
    train_mean_reward: s.train_reward_mean,
    ...(s.valid_reward_mean !== null ? { full_valid_mean_reward: s.valid_reward_mean } : {}),
  };
}

const fmt = (v: number | null) => (v === null ? "n/a" : v.toFixed(4));

/**
 * The job's events, newest first, from its status and the steps seen so far: created, files validated,
 * started, each step's metrics, paused, checkpoint saved, the fine-tuned model, the final state. Ids are
 * stable (a hash of job, kind and key), so a client polling with `after` sees each event once.
 */
export function eventsOf(o: FineTuneJobObject, f: OpenAiFields, org: string, steps: ObservedStep[]): JobEvent[] {
  const out: (JobEvent & { order: number })[] = [];
  const add = (key: string, at: number | null, message: string, extra: Partial<JobEvent> = {}) =>
    out.push({
      object: "fine_tuning.job.event",
      id: stableId("ftevent-", f.id, key),
      created_at: at ?? f.created_at,
      level: "info",
      message,
      data: null,
      type: "message",
      ...extra,
      order: out.length,
    });
  add("created", f.created_at, `Created fine-tuning job: ${f.id}`);
  add("validated", f.created_at, "Files validated, moving job to queued state");
  const started = secs(o.status?.startTime);
  if (started) add("started", started, "Fine-tuning job started");
  const seen = [...steps];
  const last = observedStep(o);
  if (last && !seen.some((s) => s.step === last.step)) seen.push(last);
  for (const s of seen.sort((a, b) => a.step - b.step))
    add(
      `step-${s.step}`,
      s.at,
      `Step ${s.step}/${s.total_steps}: training reward=${fmt(s.train_reward_mean)}, validation reward=${fmt(s.valid_reward_mean)}`,
      { type: "metrics", data: metricsData(s) },
    );
  const ck = cond(o, "CheckpointSaved");
  if (ck?.status === "True") add(`ckpt-${ck.lastTransitionTime}`, secs(ck.lastTransitionTime), ck.message);
  const susp = cond(o, "Suspended");
  if (susp?.status === "True")
    add(`paused-${susp.lastTransitionTime}`, secs(susp.lastTransitionTime), "Fine-tuning job paused");
  const status = statusOf(o);
  const job = jobOf(o, f, org);
  if (status === "succeeded") {
    add("model", job.finished_at, `New fine-tuned model created: ${job.fine_tuned_model}`);
    add("succeeded", job.finished_at, "The job has successfully completed");
  } else if (status === "failed") {
    add("failed", job.finished_at, `Fine-tuning job failed: ${job.error!.message}`, { level: "error" });
  } else if (status === "cancelled") {
    add("cancelled", job.finished_at ?? secs(cond(o, "Cancelled")?.lastTransitionTime), "Fine-tuning job cancelled");
  }
  return out.sort((a, b) => b.created_at - a.created_at || b.order - a.order).map(({ order: _o, ...e }) => e);
}

/** The kept checkpoints the operator reports, newest first, named as local mode names them. */
export function checkpointsOf(o: FineTuneJobObject, f: OpenAiFields, org: string): Checkpoint[] {
  const at = secs(o.status?.trainerStatus?.lastUpdated) ?? f.created_at;
  return [...(o.status?.checkpoints ?? [])]
    .sort((a, b) => b.step - a.step)
    .map((c) => ({
      object: "fine_tuning.job.checkpoint",
      id: stableId("ftckpt_", f.id, c.name),
      // When the trainer saved it; a trainer that does not say: the last progress update.
      created_at: secs(c.createdAt) ?? at,
      fine_tuned_model_checkpoint: `${modelName(f, org)}:ckpt-step-${c.step}${c.name.endsWith("-pause") ? "-pause" : ""}`,
      fine_tuning_job_id: f.id,
      step_number: c.step,
      metrics: {
        step: c.step,
        ...(typeof c.validRewardMean === "number" ? { valid_reward_mean: c.validRewardMean } : {}),
      },
    }));
}

/** The key of the job's dataset Secret that holds the bearer token of its model server (spec.serve). */
export const SERVE_TOKEN_KEY = "serve-token";

/**
 * What spec.serve must name to serve an OpenAI model id of this job: "final" for its `fine_tuned_model` (once
 * succeeded), a checkpoint's name for its `fine_tuned_model_checkpoint`; undefined when the id is not this
 * job's.
 */
export function servedModelOf(o: FineTuneJobObject, f: OpenAiFields, org: string, model: string): string | undefined {
  const name = modelName(f, org);
  if (!model.startsWith(name)) return undefined;
  if (model === name) return statusOf(o) === "succeeded" ? "final" : undefined;
  return (o.status?.checkpoints ?? []).find(
    (c) => model === `${name}:ckpt-step-${c.step}${c.name.endsWith("-pause") ? "-pause" : ""}`,
  )?.name;
}

/** The merge patch that serves `served` (1 replica) for OpenAI model id `model`, with the job's token Secret. */
export function servePatch(id: string, served: string, model: string, replicas = 1) {
  return {
    spec: {
      serve: {
        model: served,
        replicas,
        modelId: model,
        tokenSecretRef: { name: datasetSecretName(id), key: SERVE_TOKEN_KEY },
      },
    },
  };
}

/**
 * cancel / pause / resume as a merge patch of the FineTuneJob's spec, checked with the same status machine as
 * local mode (a wrong transition is OpenAI's 400).
 */
export function actionPatch(
  o: FineTuneJobObject,
  id: string,
  action: Action,
): { decision: Decision; patch?: { spec: { cancel?: boolean; suspend?: boolean } } } {
  const decision = decide(statusOf(o), action, id);
  if (!decision.ok) return { decision };
  if (action === "cancel") return { decision, patch: { spec: { cancel: true } } };
  return { decision, patch: { spec: { suspend: action === "pause" } } };
}
