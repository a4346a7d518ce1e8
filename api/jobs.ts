/**
 * Fine-tuning jobs of `rft api --local`: OpenAI's job objects, events and checkpoints over a directory
 * (`<data>/jobs/<id>/`: `job.json`, `manifest.json`, `events.jsonl`, the job's own links to its files, and
 * `out/`, the `rft run` output directory), run one at a time by a child process (api/job-worker.ts) that calls
 * the same `runJob` as `rft run`. A restarted server picks every unfinished job up where its checkpoints are.
 */
import { addStepUsage, type UsageMetrics } from "./usage.js";
import { type ChildProcess, fork } from "node:child_process";
import { createHash, randomInt } from "node:crypto";
import { appendFileSync, copyFileSync, existsSync, linkSync, mkdirSync, readdirSync, readFileSync } from "node:fs";
import { extname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Logger } from "../proto/log.js";
import type { FineTuneJob } from "../proto/finetunejob.js";
import type { CheckpointInfo } from "../trainer/checkpoint/retention.js";
import { DatasetError, LIMITS, parseRftDataset, parseSftDataset } from "../trainer/data/dataset.js";
import { DurableRecord, replaceFileAtomicAsync } from "./durable.js";
import { checkFineTuneJob, JobRequestError, toFineTuneJob } from "./convert.js";
import { ApiError, notFound } from "./errors.js";
import { describeIssues, type FileStore } from "./files.js";
import { ALL_PROJECTS, DEFAULT_PROJECT, visible } from "./http.js";
import { isIdOf, newId, now } from "./ids.js";
import { afterWorker, type Action, decide, FINAL, type JobStatus } from "./job-state.js";
import type { ControlMessage, WorkerMessage } from "./job-worker.js";
import type { EvalStore } from "./evals.js";
import { importValidations, jobEvalRequest } from "./job-evals.js";

export interface JobError {
  code: string;
  message: string;
  param: string | null;
}

/** OpenAI's `fine_tuning.job` (openai-node's FineTuningJob, plus the RFT fields OpenAI returns). */
export interface FineTuningJob {
  object: "fine_tuning.job";
  id: string;
  model: string;
  created_at: number;
  finished_at: number | null;
  fine_tuned_model: string | null;
  organization_id: string;
  result_files: string[];
  status: JobStatus;
  validation_file: string | null;
  training_file: string;
  hyperparameters: Record<string, unknown>;
  trained_tokens: number | null;
  error: JobError | null;
  user_provided_suffix: string | null;
  seed: number;
  estimated_finish: number | null;
  integrations: unknown[];
  metadata: Record<string, string> | null;
  method: Record<string, unknown>;
  /** Training seconds of the core loop (OpenAI's "captured forward progress") and model graders' tokens. */
  usage_metrics: UsageMetrics;
  /** RFT: the eval with one run per validation step (api/job-evals.ts); null for SFT. Absent in cluster mode
   * (not linked there) and on jobs stored before the link existed. */
  eval_id?: string | null;
}

export interface JobEvent {
  object: "fine_tuning.job.event";
  id: string;
  created_at: number;
  level: "info" | "warn" | "error";
  message: string;
  data: unknown;
  type: "message" | "metrics";
}

export interface Checkpoint {
  object: "fine_tuning.job.checkpoint";
  id: string;
  created_at: number;
  fine_tuned_model_checkpoint: string;
  fine_tuning_job_id: string;
  step_number: number;
  metrics: Record<string, number>;
}

interface Stored {
  seq: number;
  job: FineTuningJob;
  /** The API key's project that created it (absent: before projects existed, "default"). */
  project?: string;
}

export interface JobManagerOptions {
  /** `<data>/jobs` */
  dir: string;
  files: FileStore;
  /** A base model's directory, or undefined when the name is not one. */
  baseModel(name: string): string | undefined;
  organization: string;
  /** tfjs backend of the workers (default: the job's, else auto). */
  backend?: string;
  log: Logger;
}

const HYPER_DEFAULTS: Record<string, string[]> = {
  supervised: ["batch_size", "learning_rate_multiplier", "n_epochs"],
  reinforcement: [
    "batch_size",
    "learning_rate_multiplier",
    "n_epochs",
    "eval_interval",
    "eval_samples",
    "compute_multiplier",
  ],
};

/** The method's settings as given and its hyperparameters as answered (omitted ones "auto"). */
export function answeredHyperparameters(body: Record<string, unknown>, type: string) {
  const given = (body.method as Record<string, Record<string, unknown>> | undefined)?.[type] ?? {};
  const hyper = {
    ...Object.fromEntries(HYPER_DEFAULTS[type]!.map((k) => [k, "auto"])),
    ...((given.hyperparameters as Record<string, unknown> | undefined) ??
      (type === "supervised" ? (body.hyperparameters as Record<string, unknown> | undefined) : undefined) ??
      {}),
  };
  return { given, hyper };
}

const workerPath = fileURLToPath(new URL(`./job-worker${extname(fileURLToPath(import.meta.url))}`, import.meta.url));

/**
 * When a job will finish at the pace of this run's steps so far (unix seconds), from a metrics event
 * (`data.step`, `data.total_steps`); undefined for other events. Pure.
 */
export function estimatedFinish(
  e: { type: string; data: unknown },
  startedAtMs: number,
  firstStepBefore: number | null,
  nowMs = Date.now(),
): number | undefined {
  const d = e.data as { step?: unknown; total_steps?: unknown } | null;
  if (e.type !== "metrics" || typeof d?.step !== "number" || typeof d.total_steps !== "number") return undefined;
  const done = d.step - (firstStepBefore ?? d.step - 1);
  const perStep = (nowMs - startedAtMs) / Math.max(done, 1);
  return Math.round((nowMs + perStep * Math.max(d.total_steps - d.step, 0)) / 1000);
}

/** Whether a trainer event reports a validation (a step's metrics, or the baseline's message). Pure. */
export function validated(e: { type: string; data?: unknown }): boolean {
  const d = e.data as { valid_reward_mean?: unknown; scores?: { valid_reward_mean?: unknown } } | null | undefined;
  return typeof d?.valid_reward_mean === "number" || typeof d?.scores?.valid_reward_mean === "number";
}

/** The request's training or validation file (400 naming the param unless it is the project's fine-tune file). */
export function requestFile(
  files: FileStore,
  body: Record<string, unknown>,
  param: "training_file" | "validation_file",
  project: string,
) {
  const v = body[param];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "string") throw new ApiError(400, `'${param}' must be a file id`, param, "invalid_value");
  let f: ReturnType<FileStore["get"]>;
  try {
    f = files.get(v, param, project);
  } catch {
    throw new ApiError(400, `invalid ${param}: no such file '${v}'`, param, "file_not_found");
  }
  if (f.purpose !== "fine-tune")
    throw new ApiError(
      400,
      `File ${v} has purpose '${f.purpose}'; ${param} needs a file uploaded with purpose 'fine-tune'.`,
      param,
      "invalid_file_purpose",
    );
  return f;
}

/** A job's copy of a file checked for the job's method: null, or the job error naming each bad line. */
export function checkJobFile(
  files: FileStore,
  type: string,
  param: "training_file" | "validation_file",
  fileId: string,
  path: string,
  max: number,
): JobError | null {
  const name = (() => {
    try {
      return files.get(fileId).filename;
    } catch {
      return fileId;
    }
  })();
  try {
    const text = readFileSync(path, "utf8");
    (type === "reinforcement" ? parseRftDataset : parseSftDataset)(text, name, { maxRows: max });
    return null;
  } catch (e) {
    if (!(e instanceof DatasetError)) throw e;
    return {
      code: param === "training_file" ? "invalid_training_file" : "invalid_validation_file",
      message: `${type === "reinforcement" ? "Reinforcement" : "Supervised"} fine-tuning: ${describeIssues(name, e.issues)}`,
      param,
    };
  }
}

export class JobManager {
  private readonly jobs = new Map<string, Stored>();
  private readonly events = new Map<string, JobEvent[]>();
  private seq = 0;
  private active: { id: string; child: ChildProcess } | null = null;
  private closing = false;
  /** Where RFT jobs' evals live (set by the server once its EvalStore exists). */
  private evals: EvalStore | null = null;

  constructor(readonly o: JobManagerOptions) {
    mkdirSync(o.dir, { recursive: true });
    for (const id of readdirSync(o.dir)) {
      const f = join(o.dir, id, "job.json");
      if (!existsSync(f)) continue;
      const s = JSON.parse(readFileSync(f, "utf8")) as Stored;
      this.jobs.set(id, s);
      this.seq = Math.max(this.seq, s.seq);
      const ev = join(o.dir, id, "events.jsonl");
      this.events.set(
        id,
        existsSync(ev)
          ? readFileSync(ev, "utf8")
              .split("\n")
              .filter((l) => l.trim())
              .flatMap((l) => {
                try {
                  return [JSON.parse(l) as JobEvent];
                } catch {
                  return []; // a line torn by a crash
                }
              })
          : [],
      );
    }
    // What a stopped server left unfinished: validate again, or queue (training resumes from the checkpoint).
    for (const s of this.jobs.values()) {
      const st = s.job.status;
      if (st === "validating_files") setImmediate(() => this.validate(s.job.id));
      else if (st === "running") this.update(s, { status: "queued" });
      else if (st === "pausing") this.update(s, { status: "paused" });
    }
    setImmediate(() => this.pump());
  }

  private jobDir(id: string) {
    return join(this.o.dir, id);
  }

  /** Links RFT jobs to evals: each new RFT job gets one, and each validation step becomes a run of it. */
  linkEvals(store: EvalStore) {
    this.evals = store;
  }

  /** The job's validation files not yet in its eval become runs (a failure is logged: training goes on). */
  private linkValidations(s: Stored) {
    const evalId = s.job.eval_id;
    if (!evalId || !this.evals) return;
    const name = this.modelName(s.job);
    try {
      importValidations(this.evals, {
        evalId,
        job: s.job,
        dir: join(this.jobDir(s.job.id), "out", "validation"),
        modelOf: (step) => (step === 0 ? s.job.model : `${name}:ckpt-step-${step}`),
      });
    } catch (e) {
      this.o.log.warn({ job: s.job.id, err: String(e) }, "cannot add the validation runs to the job's eval");
    }
  }

  private readonly records = new Map<string, DurableRecord>();

  /** Writes the job record durably (off the event loop); the promise settles once it is on disk. */
  private save(s: Stored): Promise<void> {
    let r = this.records.get(s.job.id);
    if (!r) this.records.set(s.job.id, (r = new DurableRecord(join(this.jobDir(s.job.id), "job.json"))));
    const p = r.write(JSON.stringify(s));
    p.catch((e: unknown) => this.o.log.error({ job: s.job.id, err: String(e) }, "cannot write the job record"));
    return p;
  }

  private update(s: Stored, patch: Partial<FineTuningJob>): Promise<void> {
    Object.assign(s.job, patch);
    return this.save(s);
  }

  private event(id: string, message: string, o: Partial<Pick<JobEvent, "level" | "type" | "data">> = {}) {
    const e: JobEvent = {
      object: "fine_tuning.job.event",
      id: newId("ftevent-"),
      created_at: now(),
      level: o.level ?? "info",
      message,
      data: o.data ?? null,
      type: o.type ?? "message",
    };
    appendFileSync(join(this.jobDir(id), "events.jsonl"), `${JSON.stringify(e)}\n`);
    this.events.get(id)!.push(e);
  }

  private stored(id: string, project: string): Stored {
    const s = isIdOf("ftjob-", id) ? this.jobs.get(id) : undefined;
    if (!s || !visible(s.project, project)) throw notFound("fine-tuning job", id, "fine_tuning_job_id");
    return s;
  }

  get(id: string, project = ALL_PROJECTS): FineTuningJob {
    return this.stored(id, project).job;
  }

  /** Newest first; `metadata` filters on every given pair. */
  list(metadata: Record<string, string> = {}, project = ALL_PROJECTS): FineTuningJob[] {
    return [...this.jobs.values()]
      .filter((s) => visible(s.project, project))
      .sort((a, b) => b.seq - a.seq)
      .map((s) => s.job)
      .filter((j) => Object.entries(metadata).every(([k, v]) => j.metadata?.[k] === v));
  }

  /** Newest first, as OpenAI lists them. */
  listEvents(id: string, project = ALL_PROJECTS): JobEvent[] {
    this.stored(id, project);
    return [...this.events.get(id)!].reverse();
  }

  /** `ft:<base>:<org>:<suffix>:<id>`, as OpenAI names fine-tuned models. */
  modelName(job: FineTuningJob): string {
    return `ft:${job.model}:${this.o.organization}:${job.user_provided_suffix ?? ""}:${job.id.slice(6, 14)}`;
  }

  /** The kept checkpoints, newest first. */
  checkpoints(id: string, project = ALL_PROJECTS): (Checkpoint & { dir: string })[] {
    const job = this.get(id, project);
    const index = join(this.jobDir(id), "out", "checkpoints", "index.json");
    if (!existsSync(index)) return [];
    const infos = JSON.parse(readFileSync(index, "utf8")) as CheckpointInfo[];
    return infos
      .slice()
      .sort((a, b) => b.step - a.step || b.createdAt - a.createdAt)
      .map((c) => ({
        object: "fine_tuning.job.checkpoint",
        id: `ftckpt_${createHash("sha256").update(`${id}/${c.name}`).digest("hex").slice(0, 24)}`,
        created_at: c.createdAt,
        fine_tuned_model_checkpoint: `${this.modelName(job)}:ckpt-step-${c.step}${c.reason === "pause" ? "-pause" : ""}`,
        fine_tuning_job_id: id,
        step_number: c.step,
        metrics: {
          step: c.step,
          ...(c.trainRewardMean !== null ? { train_reward_mean: c.trainRewardMean } : {}),
          ...(c.validRewardMean !== null ? { valid_reward_mean: c.validRewardMean } : {}),
        },
        dir: join(this.jobDir(id), "out", "checkpoints", c.name, "model"),
      }));
  }

  /** Fine-tuned models (succeeded jobs) and their checkpoints, with their directories. */
  fineTunedModels(project = ALL_PROJECTS): { id: string; created: number; dir: string }[] {
    return this.list({}, project).flatMap((j) => [
      ...(j.status === "succeeded" && j.fine_tuned_model
        ? [
            {
              id: j.fine_tuned_model,
              created: j.finished_at ?? j.created_at,
              dir: join(this.jobDir(j.id), "out", "model"),
            },
          ]
        : []),
      ...this.checkpoints(j.id).map((c) => ({ id: c.fine_tuned_model_checkpoint, created: c.created_at, dir: c.dir })),
    ]);
  }

  /** A base model (every project's) or a fine-tuned model or checkpoint of the project's jobs. */
  modelDir(name: string, project = ALL_PROJECTS): string | undefined {
    return this.o.baseModel(name) ?? this.fineTunedModels(project).find((m) => m.id === name)?.dir;
  }

  /** Validates the request (400 with OpenAI's param on any problem) and starts validating its files. */
  async create(body: Record<string, unknown>, project = DEFAULT_PROJECT): Promise<FineTuningJob> {
    const model = typeof body.model === "string" ? body.model : "";
    const modelDir = model ? this.modelDir(model, project) : undefined;
    if (model && !modelDir)
      throw new ApiError(
        400,
        `Model ${model} is not available for fine-tuning or does not exist.`,
        "model",
        "model_not_available",
      );
    const fileOf = (param: "training_file" | "validation_file") => requestFile(this.o.files, body, param, project);
    const train = typeof body.training_file === "string" ? fileOf("training_file") : undefined;
    const valid = fileOf("validation_file");
    const id = newId("ftjob-");
    const dir = this.jobDir(id);
    let spec: FineTuneJob;
    try {
      spec = toFineTuneJob(body, {
        name: id.toLowerCase(),
        modelDir: modelDir ?? "",
        trainingFile: join(dir, "train.jsonl"),
        ...(valid ? { validationFile: join(dir, "valid.jsonl") } : {}),
      });
      if (spec.spec.seed === undefined) spec.spec.seed = randomInt(0, 2 ** 31 - 1);
      checkFineTuneJob(spec);
    } catch (e) {
      if (!(e instanceof JobRequestError)) throw e;
      const first = e.issues[0]!;
      throw new ApiError(400, e.message, first.param || null, "invalid_value");
    }
    mkdirSync(dir, { recursive: true });
    // The job keeps its own links to the files: deleting them from the Files API never breaks a resume.
    const keep = (fileId: string, to: string) => {
      try {
        linkSync(this.o.files.path(fileId), to);
      } catch {
        copyFileSync(this.o.files.path(fileId), to);
      }
    };
    keep(train!.id, join(dir, "train.jsonl"));
    if (valid) keep(valid.id, join(dir, "valid.jsonl"));
    const manifest = replaceFileAtomicAsync(join(dir, "manifest.json"), JSON.stringify(spec, null, 2));
    const type = spec.spec.method.type;
    const { given, hyper } = answeredHyperparameters(body, type);
    const job: FineTuningJob = {
      object: "fine_tuning.job",
      id,
      model,
      created_at: now(),
      finished_at: null,
      fine_tuned_model: null,
      organization_id: this.o.organization,
      result_files: [],
      status: "validating_files",
      validation_file: valid?.id ?? null,
      training_file: train!.id,
      hyperparameters: type === "supervised" ? hyper : {},
      trained_tokens: null,
      error: null,
      user_provided_suffix: (body.suffix as string | undefined) ?? null,
      seed: spec.spec.seed!,
      estimated_finish: null,
      integrations: [],
      metadata: (body.metadata as Record<string, string> | undefined) ?? null,
      method: { type, [type]: { ...given, hyperparameters: hyper } },
      usage_metrics: { training_seconds: 0 },
      eval_id: null,
    };
    const grader = spec.spec.method.reinforcement?.grader;
    if (type === "reinforcement" && grader && this.evals)
      job.eval_id = (await this.evals.create(jobEvalRequest(id, grader), project, false)).id;
    const s = { seq: ++this.seq, job, project };
    this.jobs.set(id, s);
    this.events.set(id, []);
    this.event(id, `Validating training file: ${train!.id}${valid ? ` and validation file: ${valid.id}` : ""}`);
    // Answered once the job and its manifest are on disk: an acknowledged job survives a crash.
    await Promise.all([this.save(s), manifest]);
    setImmediate(() => this.validate(id));
    return structuredClone(job);
  }

  /** validating_files → queued (or failed, naming each bad line). */
  private validate(id: string) {
    const s = this.jobs.get(id);
    if (!s || s.job.status !== "validating_files") return;
    const type = s.job.method.type as string;
    const check = (param: "training_file" | "validation_file", path: string, max: number) =>
      checkJobFile(this.o.files, type, param, s.job[param]!, path, max);
    const dir = this.jobDir(id);
    const rft = type === "reinforcement";
    const error =
      check("training_file", join(dir, "train.jsonl"), rft ? LIMITS.rftTrain : LIMITS.sftTrain) ??
      (s.job.validation_file
        ? check("validation_file", join(dir, "valid.jsonl"), rft ? LIMITS.rftValid : LIMITS.sftValid)
        : null);
    if (error) {
      this.update(s, { status: "failed", error, finished_at: now() });
      this.event(id, error.message, { level: "error" });
      return;
    }
    this.update(s, { status: "queued" });
    this.event(id, "Files validated, moving job to queued state");
    this.pump();
  }

  /** Starts the oldest queued job when no job is running. */
  private pump() {
    if (this.active || this.closing) return;
    const next = [...this.jobs.values()].filter((s) => s.job.status === "queued").sort((a, b) => a.seq - b.seq)[0];
    if (next) this.start(next);
  }

  private start(s: Stored) {
    const id = s.job.id;
    const dir = this.jobDir(id);
    const resuming = existsSync(join(dir, "out", "checkpoints", "index.json"));
    this.update(s, { status: "running" });
    this.event(id, resuming ? "Fine-tuning job resumed from its last checkpoint" : "Fine-tuning job started");
    const env = { ...process.env };
    delete env.RFT_API_KEYS; // the trainer never needs the API's keys
    const child = fork(
      workerPath,
      [join(dir, "manifest.json"), join(dir, "out"), ...(this.o.backend ? [this.o.backend] : [])],
      { execArgv: process.execArgv, env, stdio: ["ignore", "ignore", "pipe", "ipc"] },
    );
    this.active = { id, child };
    let stderr = "";
    child.stderr!.on("data", (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
    let ended = false;
    const startedAt = Date.now();
    let startStep: number | null = null;
    child.on("message", (m: WorkerMessage) => {
      if (m.type === "event") {
        const e = m.event;
        this.event(id, e.message, {
          level: e.level as JobEvent["level"],
          type: e.type === "metrics" ? "metrics" : "message",
          data: e.data ?? null,
        });
        if (validated(e)) this.linkValidations(s);
        if (e.type === "metrics") {
          const usage = addStepUsage(s.job.usage_metrics, e.data);
          if (usage !== s.job.usage_metrics) void this.update(s, { usage_metrics: usage });
        }
        const eta = estimatedFinish(e, startedAt, startStep);
        if (eta !== undefined) {
          if (startStep === null) startStep = (e.data as { step: number }).step - 1;
          void this.update(s, { estimated_finish: eta });
        }
      } else if (this.closing) {
        ended = true; // the server is stopping: the job stays "running" and is queued again at the next start
      } else if (m.type === "result") {
        ended = true;
        this.finishRun(s, m.status, m.error, m.trainingSeconds);
      } else if (m.type === "error") {
        ended = true;
        this.finishRun(s, "failed", m.message, 0);
      }
    });
    child.on("error", (e) => {
      // The process could not start (or be signalled): the job fails with the reason; "exit" may never come.
      if (ended) return;
      ended = true;
      this.finishRun(s, "failed", `cannot run the trainer process: ${e.message}`, 0);
      if (this.active?.child === child) {
        this.active = null;
        this.pump();
      }
    });
    child.on("exit", (code, signal) => {
      if (!ended && !this.closing) {
        const why = `the trainer process exited (${signal ?? `status ${code}`}) before the job ended${stderr.trim() ? `: ${stderr.trim().split("\n").slice(-5).join("\n")}` : ""}`;
        this.finishRun(s, "failed", why, 0);
      }
      if (this.active?.child === child) this.active = null;
      this.pump();
    });
    this.o.log.info({ job: id, pid: child.pid }, "job worker started");
  }

  private finishRun(
    s: Stored,
    result: "succeeded" | "paused" | "cancelled" | "failed",
    error: string | undefined,
    secs: number,
  ) {
    const id = s.job.id;
    this.linkValidations(s); // any step a missed event left out
    const training = { ...s.job.usage_metrics, training_seconds: s.job.usage_metrics.training_seconds + secs };
    let status = afterWorker(s.job.status, result);
    if (status === "paused" && s.job.status === "running") status = "queued"; // resumed while pausing
    if (status === "succeeded") {
      const name = this.modelName(s.job);
      this.update(s, {
        status,
        fine_tuned_model: name,
        finished_at: now(),
        usage_metrics: training,
        estimated_finish: null,
      });
      this.event(id, `New fine-tuned model created: ${name}`);
      this.event(id, "The job has successfully completed");
    } else if (status === "failed") {
      const message = error ?? "training failed";
      this.update(s, {
        status,
        finished_at: now(),
        usage_metrics: training,
        error: { code: "training_failed", message, param: null },
      });
      this.event(id, `Fine-tuning job failed: ${message}`, { level: "error" });
    } else if (status === "paused") {
      this.update(s, { status, usage_metrics: training });
      this.event(id, "Fine-tuning job paused; resume continues from the checkpoint written now");
    } else {
      this.update(s, { status, usage_metrics: training });
    }
  }

  /** cancel / pause / resume: 400 for a transition the job's status does not allow. */
  async act(id: string, action: Action, project = ALL_PROJECTS): Promise<FineTuningJob> {
    const s = this.stored(id, project);
    const d = decide(s.job.status, action, id);
    if (!d.ok) throw new ApiError(400, d.message, null, "invalid_job_status");
    const worker = this.active?.id === id ? this.active.child : null;
    if (d.effect === "signal_worker" && worker?.connected) {
      const msg: ControlMessage = { pause: d.next === "pausing", cancel: d.next === "cancelled" };
      worker.send(msg);
    }
    const saved = this.update(s, { status: d.next, ...(FINAL.includes(d.next) ? { finished_at: now() } : {}) });
    if (action === "cancel") this.event(id, "Fine-tuning job cancelled");
    else if (d.next === "paused") this.event(id, "Fine-tuning job paused");
    else if (d.next === "pausing") this.event(id, "Pausing: finishing the current step, then writing a checkpoint");
    else this.event(id, "Fine-tuning job resumed");
    const answer = structuredClone(s.job); // the job as the action left it (a resumed job starts just after)
    await saved;
    if (d.effect === "enqueue") this.pump();
    return answer;
  }

  /** Stops the running worker (it checkpoints and exits); its job resumes when a server starts again. */
  async close(): Promise<void> {
    this.closing = true;
    const a = this.active;
    const flush = () => Promise.all([...this.records.values()].map((r) => r.idle()));
    if (!a) return void (await flush());
    await new Promise<void>((resolve) => {
      if (a.child.exitCode !== null) return resolve();
      a.child.once("exit", () => resolve());
      if (a.child.connected) a.child.send({ pause: true, cancel: false } satisfies ControlMessage);
      setTimeout(() => a.child.kill("SIGKILL"), 60_000).unref();
    });
    await flush();
  }
}
