/**
 * OpenAI's fine-tuning job request (`POST /v1/fine_tuning/jobs`, snake_case) → a FineTuneJob (proto/), checked
 * by the same validator as `rft run` manifests; every problem is reported with OpenAI's `param` (a dotted path
 * of the request, e.g. `method.reinforcement.hyperparameters.n_epochs`). Pure apart from reading a file in
 * `loadJobFile`, which lets `rft run` take the request JSON of OpenAI's RFT guide as it is.
 */
import { readFileSync } from "node:fs";
import { basename, dirname, isAbsolute, resolve } from "node:path";
import { LineCounter, parseDocument } from "yaml";
import { API_VERSION, type FineTuneJob, KIND } from "../proto/finetunejob.js";
import { type LoadedManifest, loadManifest, ManifestError, parseManifest } from "../trainer/job/manifest.js";

export interface JobIssue {
  /** OpenAI's param: a dotted path in the request ("" for the whole body). */
  param: string;
  message: string;
}

export class JobRequestError extends Error {
  constructor(readonly issues: JobIssue[]) {
    super(issues.map((i) => (i.param ? `${i.param}: ${i.message}` : i.message)).join("\n"));
  }
}

const TOP_LEVEL = [
  "model",
  "training_file",
  "validation_file",
  "hyperparameters",
  "method",
  "seed",
  "suffix",
  "metadata",
  "integrations",
] as const;

export const camel = (s: string) => s.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());
export const snake = (s: string) => s.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === "object" && !Array.isArray(v);

/** OpenAI's hyperparameter names (and ours, snake_cased) → the FineTuneJob's camelCase; values unchanged. */
function camelKeys(v: unknown): unknown {
  if (!isObject(v)) return v;
  return Object.fromEntries(Object.entries(v).map(([k, x]) => [camel(k), x]));
}

/** Does the request look like OpenAI's job request rather than a FineTuneJob? */
export function isOpenAiJobRequest(v: unknown): v is Record<string, unknown> {
  return isObject(v) && v.apiVersion === undefined && v.kind === undefined && "training_file" in v;
}

export interface ConvertOptions {
  /** metadata.name of the FineTuneJob. */
  name: string;
  /** The base model's directory for the request's `model`. */
  modelDir: string;
  /** The training and validation files' paths. */
  trainingFile: string;
  validationFile?: string;
}

/**
 * The FineTuneJob for a request. Shape problems that the FineTuneJob schema cannot name in OpenAI's terms
 * (unknown top-level arguments, unsupported methods) are thrown here as a JobRequestError.
 */
export function toFineTuneJob(body: Record<string, unknown>, o: ConvertOptions): FineTuneJob {
  const issues: JobIssue[] = [];
  for (const k of Object.keys(body))
    if (!(TOP_LEVEL as readonly string[]).includes(k))
      issues.push({ param: k, message: `Unrecognized request argument supplied: ${k}` });
  if (typeof body.model !== "string" || body.model === "")
    issues.push({ param: "model", message: "Missing required parameter: 'model'." });
  if (typeof body.training_file !== "string" || body.training_file === "")
    issues.push({ param: "training_file", message: "Missing required parameter: 'training_file'." });
  if (Array.isArray(body.integrations) && body.integrations.length > 0)
    issues.push({ param: "integrations", message: "Integrations (wandb) are not supported by this server." });
  const method = body.method === undefined || body.method === null ? { type: "supervised" } : body.method;
  if (!isObject(method)) issues.push({ param: "method", message: "must be an object with a 'type'" });
  const type = isObject(method) ? method.type : undefined;
  if (type === "dpo")
    issues.push({ param: "method.type", message: "DPO is not supported; use 'supervised' or 'reinforcement'." });
  else if (type !== "supervised" && type !== "reinforcement")
    issues.push({ param: "method.type", message: "must be one of 'supervised', 'reinforcement'" });
  if (issues.length > 0) throw new JobRequestError(issues);

  const m = method as Record<string, unknown>;
  const spec: Record<string, unknown> = {
    model: o.modelDir,
    trainingFile: o.trainingFile,
    ...(o.validationFile ? { validationFile: o.validationFile } : {}),
    ...(body.seed !== undefined && body.seed !== null ? { seed: body.seed } : {}),
    ...(body.suffix !== undefined && body.suffix !== null ? { suffix: body.suffix } : {}),
    ...(body.metadata !== undefined && body.metadata !== null ? { metadata: body.metadata } : {}),
  };
  if (type === "supervised") {
    const sup = isObject(m.supervised) ? m.supervised : {};
    // The deprecated top-level `hyperparameters` applies to supervised jobs.
    const hyper = sup.hyperparameters ?? body.hyperparameters;
    const { hyperparameters: _h, ...rest } = sup;
    spec.method = {
      type,
      supervised: { ...rest, ...(hyper !== undefined ? { hyperparameters: camelKeys(hyper) } : {}) },
    };
  } else {
    const r = isObject(m.reinforcement) ? m.reinforcement : {};
    const { hyperparameters, response_format, ...rest } = r;
    spec.method = {
      type,
      reinforcement: {
        ...Object.fromEntries(Object.entries(rest).map(([k, v]) => [camel(k), v])),
        ...(response_format !== undefined ? { responseFormat: response_format } : {}),
        ...(hyperparameters !== undefined ? { hyperparameters: camelKeys(hyperparameters) } : {}),
      },
    };
    if (body.hyperparameters !== undefined)
      throw new JobRequestError([
        {
          param: "hyperparameters",
          message: "top-level 'hyperparameters' apply to supervised jobs; use 'method.reinforcement.hyperparameters'",
        },
      ]);
  }
  return {
    apiVersion: API_VERSION,
    kind: KIND,
    metadata: { name: o.name },
    spec: spec as FineTuneJob["spec"],
  } as FineTuneJob;
}

/** A FineTuneJob validator field (`spec.method.reinforcement.hyperparameters.nEpochs`) → OpenAI's param. */
export function fieldToParam(field: string): string {
  const segs = field.replace(/^spec\.?/, "").split(".");
  const out: string[] = [];
  let inGrader = false;
  for (const s of segs) {
    if (s === "") continue;
    out.push(inGrader ? s : s === "responseFormat" ? "response_format" : snake(s));
    if (s.startsWith("grader")) inGrader = true;
  }
  return out.join(".");
}

const snakeQuoted = (msg: string) => msg.replace(/"([a-z]+[A-Z][A-Za-z0-9]*)"/g, (_, w: string) => `"${snake(w)}"`);

/**
 * Checks a converted job with the manifest validator. Returns the loaded manifest, or throws a JobRequestError
 * whose params are the request's.
 */
export function checkFineTuneJob(job: FineTuneJob, label = "request"): LoadedManifest {
  try {
    return parseManifest(JSON.stringify(job), label);
  } catch (e) {
    if (!(e instanceof ManifestError)) throw e;
    throw new JobRequestError(e.issues.map((i) => ({ param: fieldToParam(i.field), message: snakeQuoted(i.message) })));
  }
}

/** The line of a dotted param in a JSON/YAML text (1 when it is not found). */
function lineOf(text: string, param: string): number {
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc });
  const path = param.split(".").filter((s) => s !== "");
  for (let n = path.length; n >= 0; n--) {
    const node = doc.getIn(path.slice(0, n), true) as { range?: [number, number, number] } | undefined;
    if (node && typeof node === "object" && node.range) return lc.linePos(node.range[0]).line;
  }
  return 1;
}

/**
 * A job file for `rft run`: a FineTuneJob manifest (YAML or JSON), or OpenAI's job request JSON, whose
 * `model`, `training_file` and `validation_file` are then paths (relative to the file's folder): a model
 * directory and two JSONL files. Problems in a request name its file, line and param.
 */
export function loadJobFile(file: string): LoadedManifest {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch {
    return loadManifest(file); // the manifest loader words the error
  }
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    return parseManifest(text, file);
  }
  if (!isOpenAiJobRequest(body)) return parseManifest(text, file);
  const base = dirname(resolve(file));
  const abs = (p: unknown) => (typeof p !== "string" ? "" : isAbsolute(p) ? p : resolve(base, p));
  const name =
    basename(file)
      .replace(/\.[^.]*$/, "")
      .toLowerCase()
      .replace(/[^a-z0-9.-]+/g, "-")
      .replace(/^[^a-z0-9]+|[^a-z0-9]+$/g, "") || "job";
  try {
    const job = toFineTuneJob(body, {
      name,
      modelDir: abs(body.model),
      trainingFile: abs(body.training_file),
      validationFile: typeof body.validation_file === "string" ? abs(body.validation_file) : undefined,
    });
    const loaded = checkFineTuneJob(job, file);
    return { ...loaded, file };
  } catch (e) {
    if (!(e instanceof JobRequestError)) throw e;
    throw new ManifestError(
      file,
      e.issues.map((i) => ({ line: lineOf(text, i.param), field: i.param, message: i.message })),
    );
  }
}
