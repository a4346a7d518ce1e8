/**
 * Fine-tuning jobs of `rft api --cluster`: each OpenAI job is a FineTuneJob created through the Kubernetes
 * API server in the namespace of the API key's project; the operator runs it. Reads map the FineTuneJob back
 * (api/cluster-map.ts, pure); cancel / pause / resume patch spec.cancel / spec.suspend.
 *
 * Training data: the job keeps its own copy of each file on the API's volume (`<data>/jobs/<id>/`), and the
 * FineTuneJob's trainingFile / validationFile are URLs of this server (`/internal/datasets/<id>/<file>` with
 * `#sha256=<digest>`), which trainer pods fetch with the job's token (an HMAC of the job id under the server's
 * dataset key) from a Secret in the job's namespace that the FineTuneJob owns. A token reads only its own
 * job's two files, never anything else of the API.
 *
 * The eval link (as local mode's, api/job-evals.ts): an RFT job with a validation file gets an eval (`eval_id`),
 * and its rank-0 trainer PUTs each validation's graded samples to `/internal/validations/<id>/step-N.jsonl`
 * with the same token (trainer/job/validation-upload.ts); each step becomes a completed run of the eval.
 */
import { createHash, createHmac, randomInt, timingSafeEqual } from "node:crypto";
import {
  appendFileSync,
  copyFileSync,
  createReadStream,
  existsSync,
  linkSync,
  mkdirSync,
  readFileSync,
  statSync,
} from "node:fs";
import type { IncomingMessage, ServerResponse } from "node:http";
import { join } from "node:path";
import type { Logger } from "../proto/log.js";
import { VALIDATION_LIMITS, validationFileName } from "../proto/validation.js";
import { replaceFileAtomic } from "../trainer/checkpoint/store.js";
import { type KubeClient, KubeError, paths } from "../operator/client.js";
import { LIMITS } from "../trainer/data/dataset.js";
import type { ClusterConfig } from "./cluster-config.js";
import {
  actionPatch,
  checkpointsOf,
  clusterFineTuneJob,
  CREATED_BY,
  CREATED_BY_LABEL,
  DATASET_TOKEN_KEY,
  datasetSecretName,
  eventsOf,
  type FineTuneJobObject,
  ftjName,
  jobOf,
  modelName,
  type ObservedStep,
  observedStep,
  type OpenAiFields,
  openAiFields,
  PROJECT_LABEL,
  type ProjectTarget,
  SERVE_TOKEN_KEY,
} from "./cluster-map.js";
import { checkFineTuneJob, JobRequestError, toFineTuneJob } from "./convert.js";
import { ApiError, notFound } from "./errors.js";
import type { EvalStore } from "./evals.js";
import type { FileObject, FileStore } from "./files.js";
import { ALL_PROJECTS, DEFAULT_PROJECT, readBody, send } from "./http.js";
import { importValidations, jobEvalRequest, parseValidationFile } from "./job-evals.js";
import { isIdOf, newId, now } from "./ids.js";
import type { Action } from "./job-state.js";
import {
  answeredHyperparameters,
  type Checkpoint,
  checkJobFile,
  type FineTuningJob,
  type JobEvent,
  requestFile,
} from "./jobs.js";

export interface ClusterJobsOptions {
  /** `<data>/jobs`: the jobs' copies of their files and the steps seen. */
  dir: string;
  files: FileStore;
  client: KubeClient;
  config: ClusterConfig;
  organization: string;
  /** The key dataset tokens are derived from (HMAC-SHA256 of the job id); at least 32 bytes. */
  datasetKey: Buffer;
  log: Logger;
  /** How often every project's jobs are read to record each step's metrics (ms; default 5000, 0: never). */
  pollMs?: number;
}

type DatasetFile = "train.jsonl" | "valid.jsonl";

export class ClusterJobs {
  private readonly steps = new Map<string, ObservedStep[]>();
  private timer: NodeJS.Timeout | undefined;
  private polling: Promise<void> | undefined;
  private evals: EvalStore | undefined;

  constructor(readonly o: ClusterJobsOptions) {
    if (o.datasetKey.length < 32) throw new Error("the dataset token key must have at least 32 bytes");
    mkdirSync(o.dir, { recursive: true });
    const ms = o.pollMs ?? 5000;
    if (ms > 0) {
      this.timer = setInterval(() => {
        this.polling ??= this.list({}, ALL_PROJECTS)
          .then(() => undefined)
          .catch((e: unknown) => o.log.warn({ err: String(e) }, "cannot read the FineTuneJobs"))
          .finally(() => (this.polling = undefined));
      }, ms);
      this.timer.unref();
    }
  }

  /** The project's target, or 403 when the installation gives the key's project no namespace. */
  private target(project: string): ProjectTarget {
    const t = Object.hasOwn(this.o.config.projects, project) ? this.o.config.projects[project] : undefined;
    if (!t)
      throw new ApiError(
        403,
        `Project '${project}' has no namespace in this installation (the API's cluster config lists projects).`,
        null,
        "project_not_configured",
      );
    return t;
  }

  /** The configured projects a key's reads cover (a project without a namespace has no jobs: 404s, empty lists). */
  private readable(project: string): string[] {
    const all = Object.keys(this.o.config.projects);
    return project === ALL_PROJECTS ? all : all.filter((p) => p === project);
  }

  private jobDir(id: string) {
    return join(this.o.dir, id);
  }

  /** RFT jobs with a validation file get an eval, and each validation step their trainer sends a run of it. */
  linkEvals(store: EvalStore) {
    this.evals = store;
  }

  /** The dataset token of a job (what its Secret holds). */
  token(id: string): string {
    return createHmac("sha256", this.o.datasetKey).update(`dataset/${id}`).digest("hex");
  }

  /** The bearer token of a job's model server (its Secret's `serve-token`; another derivation of the same key). */
  serveToken(id: string): string {
    return createHmac("sha256", this.o.datasetKey).update(`serve/${id}`).digest("hex");
  }

  /** Every FineTuneJob of the project the API created, with its OpenAI fields. */
  async objects(project = ALL_PROJECTS): Promise<{ o: FineTuneJobObject; f: OpenAiFields }[]> {
    const out: { o: FineTuneJobObject; f: OpenAiFields }[] = [];
    for (const p of this.readable(project)) {
      const ns = this.target(p).namespace;
      const q = new URLSearchParams({ labelSelector: `${CREATED_BY_LABEL}=${CREATED_BY},${PROJECT_LABEL}=${p}` });
      let items: FineTuneJobObject[];
      try {
        items = (await this.o.client.get<{ items: FineTuneJobObject[] }>(`${paths.ftj(ns)}?${q}`)).items;
      } catch (e) {
        throw this.kubeFailure(e, "list the FineTuneJobs");
      }
      for (const o of items) {
        const f = openAiFields(o);
        if (f) out.push({ o, f });
      }
    }
    return out;
  }

  /** One FineTuneJob as it is now (after a patch; the caller found it through `objects`). */
  async reread(o: FineTuneJobObject): Promise<FineTuneJobObject> {
    try {
      return await this.o.client.get<FineTuneJobObject>(paths.ftj(o.metadata.namespace!, o.metadata.name));
    } catch (e) {
      throw this.kubeFailure(e, "read the FineTuneJob");
    }
  }

  /** A merge patch of a FineTuneJob (spec.serve). */
  async patch(o: FineTuneJobObject, patch: unknown): Promise<FineTuneJobObject> {
    try {
      return await this.o.client.mergePatch<FineTuneJobObject>(
        paths.ftj(o.metadata.namespace!, o.metadata.name),
        patch,
      );
    } catch (e) {
      throw this.kubeFailure(e, "patch the FineTuneJob");
    }
  }

  /** Base models (the cluster config's names) every project may fine-tune. */
  baseModels(): string[] {
    return Object.keys(this.o.config.models);
  }

  async create(body: Record<string, unknown>, project = DEFAULT_PROJECT): Promise<FineTuningJob> {
    const target = this.target(project);
    const { model, modelPath } = this.requestModel(body);
    const train =
      typeof body.training_file === "string" ? requestFile(this.o.files, body, "training_file", project) : undefined;
    const valid = requestFile(this.o.files, body, "validation_file", project);
    const id = newId("ftjob-");
    const converted = convertRequest(body, id, modelPath, valid !== undefined);
    const type = converted.spec.method.type;
    const digests = this.stageFiles(id, type, train!, valid);
    const fields = openAiFieldsOf(body, { id, model, type, seed: converted.spec.seed!, train: train!, valid });
    const grader = converted.spec.method.reinforcement?.grader as Record<string, unknown> | undefined;
    if (type === "reinforcement" && grader && valid && this.evals)
      fields.eval_id = (await this.evals.create(jobEvalRequest(id, grader), project, false)).id;
    const base = this.o.config.datasetBaseUrl;
    const url = (f: DatasetFile) => `${base}/internal/datasets/${id}/${f}#sha256=${digests[f]}`;
    const ftj = clusterFineTuneJob(converted, {
      id,
      project,
      target,
      modelPath: modelPath!,
      trainingUrl: url("train.jsonl"),
      ...(valid ? { validationUrl: url("valid.jsonl") } : {}),
      ...(fields.eval_id ? { validationUploadUrl: `${base}/internal/validations/${id}` } : {}),
      fields,
      ...(this.o.config.trainer ? { trainer: this.o.config.trainer } : {}),
    });
    const created = await this.createInCluster(id, target.namespace, ftj);
    this.o.log.info({ job: id, namespace: target.namespace, project }, "FineTuneJob created");
    return jobOf(created, fields, this.o.organization);
  }

  /** The request's `model`: one of the cluster config's base models (400 `model_not_available` otherwise). */
  private requestModel(body: Record<string, unknown>): { model: string; modelPath: string | undefined } {
    const model = typeof body.model === "string" ? body.model : "";
    const modelPath = Object.hasOwn(this.o.config.models, model) ? this.o.config.models[model] : undefined;
    if (model && !modelPath)
      throw new ApiError(
        400,
        `Model ${model} is not available for fine-tuning or does not exist.`,
        "model",
        "model_not_available",
      );
    return { model, modelPath };
  }

  /**
   * Links (or copies) the job's files into its directory, where the dataset URL serves them, and checks them for
   * the job's method before anything is created in the cluster: a bad line is a 400 naming it. The files' digests.
   */
  private stageFiles(id: string, type: string, train: FileObject, valid: FileObject | undefined) {
    const dir = this.jobDir(id);
    mkdirSync(dir, { recursive: true });
    const digests: Record<string, string> = {};
    const rft = type === "reinforcement";
    const parts = [
      ["train.jsonl", "training_file", train, rft ? LIMITS.rftTrain : LIMITS.sftTrain],
      ["valid.jsonl", "validation_file", valid, rft ? LIMITS.rftValid : LIMITS.sftValid],
    ] as const;
    for (const [f, param, file, limit] of parts) {
      if (!file) continue;
      const to = join(dir, f);
      try {
        linkSync(this.o.files.path(file.id), to);
      } catch {
        copyFileSync(this.o.files.path(file.id), to);
      }
      digests[f] = createHash("sha256").update(readFileSync(to)).digest("hex");
      const error = checkJobFile(this.o.files, type, param, file.id, to, limit);
      if (error) throw new ApiError(400, error.message, error.param, error.code);
    }
    return digests;
  }

  /** Creates the FineTuneJob, then its dataset Secret (owned by it); a job left without its token is cancelled. */
  private async createInCluster(
    id: string,
    ns: string,
    ftj: ReturnType<typeof clusterFineTuneJob>,
  ): Promise<FineTuneJobObject> {
    let created: FineTuneJobObject;
    try {
      created = await this.o.client.request<FineTuneJobObject>("POST", paths.ftj(ns), ftj);
    } catch (e) {
      throw this.kubeFailure(e, "create the FineTuneJob");
    }
    try {
      await this.o.client.request("POST", paths.core("secrets", ns), {
        apiVersion: "v1",
        kind: "Secret",
        metadata: {
          name: datasetSecretName(id),
          namespace: ns,
          labels: { [CREATED_BY_LABEL]: CREATED_BY },
          ownerReferences: [
            { apiVersion: ftj.apiVersion, kind: ftj.kind, name: created.metadata.name, uid: created.metadata.uid },
          ],
        },
        type: "Opaque",
        stringData: { [DATASET_TOKEN_KEY]: this.token(id), [SERVE_TOKEN_KEY]: this.serveToken(id) },
      });
    } catch (e) {
      // Without its token the job could never read its data: cancel it (the API may not delete jobs).
      await this.o.client
        .mergePatch(paths.ftj(ns, created.metadata.name), { spec: { cancel: true } })
        .catch(() => undefined);
      throw this.kubeFailure(e, "create the job's dataset Secret");
    }
    return created;
  }

  /** A Kubernetes API refusal as OpenAI's error: the API server's message, never our credentials. */
  private kubeFailure(e: unknown, what: string): ApiError {
    if (e instanceof KubeError && (e.status === 422 || e.status === 400))
      return new ApiError(
        400,
        `The cluster refused the job: ${String(e.body.message ?? e.message)}`,
        null,
        "invalid_value",
      );
    this.o.log.error({ err: String(e) }, `cannot ${what}`);
    if (e instanceof KubeError && e.status === 403)
      return new ApiError(500, `The server may not ${what} in the project's namespace (RBAC).`, null, "server_error");
    return new ApiError(500, `The server could not ${what}.`, null, "server_error");
  }

  private async object(id: string, project: string): Promise<{ o: FineTuneJobObject; f: OpenAiFields }> {
    if (!isIdOf("ftjob-", id)) throw notFound("fine-tuning job", id, "fine_tuning_job_id");
    for (const p of this.readable(project)) {
      const t = this.target(p);
      let o: FineTuneJobObject | undefined;
      try {
        o = await this.o.client.getOptional<FineTuneJobObject>(paths.ftj(t.namespace, ftjName(id)));
      } catch (e) {
        throw this.kubeFailure(e, "read the FineTuneJob");
      }
      const f = o && openAiFields(o);
      if (o && f && f.id === id && o.metadata.labels?.[PROJECT_LABEL] === p) {
        this.record(id, o);
        return { o, f };
      }
    }
    throw notFound("fine-tuning job", id, "fine_tuning_job_id");
  }

  /** Remembers a step not seen before (durably), so events list every step's metrics. */
  private record(id: string, o: FineTuneJobObject) {
    const s = observedStep(o);
    if (!s) return;
    let seen = this.steps.get(id);
    if (!seen) {
      const file = join(this.jobDir(id), "steps.jsonl");
      seen = existsSync(file)
        ? readFileSync(file, "utf8")
            .split("\n")
            .flatMap((l) => {
              try {
                return l.trim() ? [JSON.parse(l) as ObservedStep] : [];
              } catch {
                return []; // a line torn by a crash
              }
            })
        : [];
      this.steps.set(id, seen);
    }
    if (seen.some((x) => x.step === s.step)) return;
    seen.push(s);
    if (existsSync(this.jobDir(id))) appendFileSync(join(this.jobDir(id), "steps.jsonl"), `${JSON.stringify(s)}\n`);
  }

  async get(id: string, project = ALL_PROJECTS): Promise<FineTuningJob> {
    const { o, f } = await this.object(id, project);
    return jobOf(o, f, this.o.organization);
  }

  /** Newest first; `metadata` filters on every given pair. */
  async list(metadata: Record<string, string> = {}, project = ALL_PROJECTS): Promise<FineTuningJob[]> {
    const out: FineTuningJob[] = [];
    for (const { o, f } of await this.objects(project)) {
      this.record(f.id, o);
      out.push(jobOf(o, f, this.o.organization));
    }
    return out
      .filter((j) => Object.entries(metadata).every(([k, v]) => j.metadata?.[k] === v))
      .sort((a, b) => b.created_at - a.created_at || (a.id < b.id ? 1 : -1));
  }

  async listEvents(id: string, project = ALL_PROJECTS): Promise<JobEvent[]> {
    const { o, f } = await this.object(id, project);
    return eventsOf(o, f, this.o.organization, this.steps.get(id) ?? []);
  }

  async checkpoints(id: string, project = ALL_PROJECTS): Promise<Checkpoint[]> {
    const { o, f } = await this.object(id, project);
    return checkpointsOf(o, f, this.o.organization);
  }

  /** Fine-tuned models of the project's succeeded jobs (served by the cluster's own means, not this server). */
  async fineTunedModels(project = ALL_PROJECTS): Promise<{ id: string; created: number }[]> {
    return (await this.list({}, project))
      .filter((j) => j.status === "succeeded" && j.fine_tuned_model)
      .map((j) => ({ id: j.fine_tuned_model!, created: j.finished_at ?? j.created_at }));
  }

  /** cancel / pause / resume: a merge patch of the FineTuneJob's spec (400 for a transition not allowed). */
  async act(id: string, action: Action, project = ALL_PROJECTS): Promise<FineTuningJob> {
    const { o, f } = await this.object(id, project);
    const { decision, patch } = actionPatch(o, id, action);
    if (!decision.ok) throw new ApiError(400, decision.message, null, "invalid_job_status");
    let patched: FineTuneJobObject;
    try {
      patched = await this.o.client.mergePatch<FineTuneJobObject>(
        paths.ftj(o.metadata.namespace!, o.metadata.name),
        patch,
      );
    } catch (e) {
      throw this.kubeFailure(e, `${action} the FineTuneJob`);
    }
    this.o.log.info({ job: id, action }, "FineTuneJob patched");
    return jobOf(patched, f, this.o.organization);
  }

  /** A request's bearer token is the job's own (constant time). */
  private jobToken(req: IncomingMessage, id: string): boolean {
    const given = Buffer.from(/^Bearer (\S+)$/.exec(String(req.headers.authorization ?? ""))?.[1] ?? "");
    const want = Buffer.from(this.token(id));
    return given.length === want.length && timingSafeEqual(given, want);
  }

  /**
   * `PUT /internal/validations/<job id>/step-<N>.jsonl` with the job's token: one validation's graded samples
   * from the job's rank-0 trainer (proto/validation.ts), bounded in size and checked line by line. The first
   * copy of a step is kept (a resent one is acknowledged and ignored); the step becomes a run of the job's
   * eval at once. 204 when stored; 400 naming the line of a malformed file; 401, 404, 413 otherwise.
   */
  async receiveValidation(req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
    const m = /^\/internal\/validations\/([A-Za-z0-9_-]+)\/step-(\d{1,9})\.jsonl$/.exec(path);
    const deny = (status: number, message: string, code: string | null = null) => {
      req.resume();
      send(res, status, { error: { message, type: "invalid_request_error", param: null, code } });
    };
    if (req.method !== "PUT" || !m || !isIdOf("ftjob-", m[1]!)) return deny(404, "Not found.");
    const id = m[1]!;
    const step = Number(m[2]);
    if (!this.jobToken(req, id)) return deny(401, "A job's dataset token is required.");
    if (!existsSync(this.jobDir(id))) return deny(404, "Not found.");
    let text: string;
    try {
      text = (await readBody(req, VALIDATION_LIMITS.fileBytes + (256 << 10))).toString("utf8");
    } catch (e) {
      if (e instanceof ApiError) return send(res, e.status, e.body());
      throw e;
    }
    const bad = checkValidationFile(text, step);
    if (bad)
      return send(res, 400, {
        error: { message: bad, type: "invalid_request_error", param: null, code: "invalid_file" },
      });
    const dir = join(this.jobDir(id), "validation");
    const file = join(dir, validationFileName(step));
    mkdirSync(dir, { recursive: true });
    if (!existsSync(file)) replaceFileAtomic(file, text);
    this.importSteps(id, dir).catch((e: unknown) =>
      this.o.log.warn({ job: id, err: String(e) }, "cannot add the validation runs to the job's eval"),
    );
    res.writeHead(204);
    res.end();
  }

  /** The job's stored validation steps not yet in its eval become runs of it. */
  private async importSteps(id: string, dir: string): Promise<void> {
    if (!this.evals) return;
    const { f } = await this.object(id, ALL_PROJECTS);
    if (!f.eval_id) return;
    const name = modelName(f, this.o.organization);
    importValidations(this.evals, {
      evalId: f.eval_id,
      job: { id, seed: f.seed, validation_file: f.validation_file },
      dir,
      modelOf: (s) => (s === 0 ? f.model : `${name}:ckpt-step-${s}`),
    });
  }

  /**
   * `GET /internal/datasets/<job id>/<train.jsonl|valid.jsonl>` with `Authorization: Bearer <the job's
   * token>`: the job's copy of the file, for its trainer pods. Anything else is a 404 (no oracle for ids).
   */
  serveDataset(req: IncomingMessage, res: ServerResponse, path: string): void {
    const m = /^\/internal\/datasets\/([A-Za-z0-9_-]+)\/(train\.jsonl|valid\.jsonl)$/.exec(path);
    const deny = (status: number, message: string) => {
      res.writeHead(status, { "content-type": "application/json" });
      res.end(JSON.stringify({ error: { message, type: "invalid_request_error", param: null, code: null } }));
    };
    if (req.method !== "GET" || !m || !isIdOf("ftjob-", m[1]!)) return deny(404, "Not found.");
    const [, id, file] = m;
    if (!this.jobToken(req, id!)) return deny(401, "A job's dataset token is required.");
    const p = join(this.jobDir(id!), file!);
    if (!existsSync(p)) return deny(404, "Not found.");
    res.writeHead(200, { "content-type": "application/jsonl", "content-length": statSync(p).size });
    createReadStream(p).pipe(res);
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.polling;
  }
}

/**
 * What is wrong with an uploaded validation file of step `step` (undefined: nothing): each line a JSON sample
 * of that step with a numeric reward, or the last line's omitted count.
 */
export function checkValidationFile(text: string, step: number): string | undefined {
  const lines = text.split("\n");
  for (const [i, line] of lines.entries()) {
    if (!line.trim()) continue;
    let v: unknown;
    try {
      v = JSON.parse(line);
    } catch {
      return `line ${i + 1}: not JSON`;
    }
    const o = v as Record<string, unknown> | null;
    if (!o || typeof o !== "object" || Array.isArray(o)) return `line ${i + 1}: not a JSON object`;
    if ("omitted" in o) {
      if (!Number.isInteger(o.omitted)) return `line ${i + 1}: "omitted" must be an integer`;
      continue;
    }
    if (o.step !== step) return `line ${i + 1}: "step" must be ${step}`;
    if (!Number.isInteger(o.line) || (o.line as number) < 1) return `line ${i + 1}: "line" must be a positive integer`;
    if (typeof o.output_text !== "string") return `line ${i + 1}: "output_text" must be a string`;
    if (!Array.isArray(o.messages) || !Array.isArray(o.output_tools))
      return `line ${i + 1}: "messages" and "output_tools" must be arrays`;
    if (!o.item || typeof o.item !== "object") return `line ${i + 1}: "item" must be an object`;
    const g = o.grader as Record<string, unknown> | undefined;
    if (!g || typeof g !== "object" || typeof g.reward !== "number" || typeof g.metadata !== "object" || !g.metadata)
      return `line ${i + 1}: "grader" must be a grader response (reward, metadata)`;
  }
  try {
    parseValidationFile(text);
  } catch (e) {
    return String(e);
  }
  return undefined;
}

/** The OpenAI request as a FineTuneJob (its files named as the trainer's local copies); 400 with the `param`. */
function convertRequest(body: Record<string, unknown>, id: string, modelPath: string | undefined, hasValid: boolean) {
  try {
    const converted = toFineTuneJob(body, {
      name: ftjName(id),
      modelDir: modelPath ?? "",
      trainingFile: "train.jsonl",
      ...(hasValid ? { validationFile: "valid.jsonl" } : {}),
    });
    if (converted.spec.seed === undefined) converted.spec.seed = randomInt(0, 2 ** 31 - 1);
    checkFineTuneJob(converted);
    return converted;
  } catch (e) {
    if (!(e instanceof JobRequestError)) throw e;
    throw new ApiError(400, e.message, e.issues[0]!.param || null, "invalid_value");
  }
}

/** What the API answers that the FineTuneJob does not hold (kept in its annotations). */
function openAiFieldsOf(
  body: Record<string, unknown>,
  j: { id: string; model: string; type: string; seed: number; train: FileObject; valid: FileObject | undefined },
): OpenAiFields {
  const { given, hyper } = answeredHyperparameters(body, j.type);
  const { grader: _g, ...givenRest } = given;
  return {
    id: j.id,
    model: j.model,
    training_file: j.train.id,
    validation_file: j.valid?.id ?? null,
    created_at: now(),
    suffix: (body.suffix as string | undefined) ?? null,
    metadata: (body.metadata as Record<string, string> | undefined) ?? null,
    seed: j.seed,
    hyperparameters: j.type === "supervised" ? hyper : {},
    method: { type: j.type, [j.type]: { ...givenRest, hyperparameters: hyper } },
  };
}
