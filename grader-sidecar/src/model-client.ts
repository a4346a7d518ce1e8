/**
 * Calls to an OpenAI-compatible endpoint for model graders (chat completions) and cosine similarity
 * (embeddings). The endpoint is the sidecar's configuration, never the grader JSON's, so a user's grader
 * runs unchanged against whatever serves the judge model (OpenAI, vLLM, `rft serve`, ...).
 */
import { readFileSync } from "node:fs";
import { isAbsolute, join } from "node:path";
import { Ajv } from "ajv";
import { Type as T } from "@sinclair/typebox";
import { GraderEndpoint } from "../../proto/finetunejob.js";
import type { TokenUsage } from "../../proto/graders.js";

export interface ModelEndpoint {
  baseUrl: string; // e.g. http://127.0.0.1:8000/v1
  apiKey?: string;
  timeoutMs: number;
  /** Retries after the first try, on 429, 5xx, timeouts and connection errors. */
  maxRetries: number;
  /** Grader `model` names routed here; absent: the default endpoint (every model no other one names). */
  models?: string[];
  /** Model name sent instead of the grader's `model` (a local judge serving under another name). */
  servedModel?: string;
  /** Requests in flight at once (absent: no cap). */
  maxConcurrency?: number;
  /** Send OpenAI's json_schema response_format (default true). */
  structuredOutputs?: boolean;
  /** First backoff delay; doubles per retry (default 500 ms). A Retry-After header, when longer, wins. */
  retryBaseMs?: number;
}

export const DEFAULT_MAX_CONCURRENCY = 8;
export const DEFAULT_TIMEOUT_MS = 60_000;
export const DEFAULT_MAX_RETRIES = 3;
/** The largest judge response read (a chat completion is a few kB); past it the call fails, not the process. */
export const RESPONSE_MAX_BYTES = 4 * 1024 * 1024;
/** The longest a Retry-After header makes a retry wait. */
const RETRY_AFTER_MAX_MS = 30_000;

/** Endpoint settings from flags or the environment. The API key comes from a file (mounted Secret) or env. */
export function endpointFromEnv(
  prefix: "RFT_GRADER" | "RFT_GRADER_EMBEDDINGS",
  overrides: { baseUrl?: string; apiKeyFile?: string } = {},
  env: NodeJS.ProcessEnv = process.env,
): ModelEndpoint | undefined {
  const baseUrl =
    overrides.baseUrl ?? env[`${prefix}_BASE_URL`] ?? (prefix === "RFT_GRADER" ? env.OPENAI_BASE_URL : undefined);
  if (!baseUrl) return undefined;
  const keyFile = overrides.apiKeyFile ?? env[`${prefix}_API_KEY_FILE`];
  const apiKey = keyFile
    ? readFileSync(keyFile, "utf8").trim()
    : (env[`${prefix}_API_KEY`] ?? (prefix === "RFT_GRADER" ? env.OPENAI_API_KEY : undefined));
  return {
    baseUrl: baseUrl.replace(/\/+$/, ""),
    apiKey,
    timeoutMs: Number(env.RFT_GRADER_MODEL_TIMEOUT_MS ?? DEFAULT_TIMEOUT_MS),
    maxRetries: Number(env.RFT_GRADER_MODEL_MAX_RETRIES ?? DEFAULT_MAX_RETRIES),
    maxConcurrency: Number(env.RFT_GRADER_MODEL_MAX_CONCURRENCY ?? DEFAULT_MAX_CONCURRENCY),
  };
}

/** A bad judge-endpoint configuration, naming where (`graderEndpoints[1].apiKey.env`). */
export class EndpointConfigError extends Error {}

const checkEndpoints = new Ajv({ allErrors: true, strict: false }).compile(T.Array(GraderEndpoint, { maxItems: 16 }));

/**
 * `spec.graderEndpoints` → endpoints with their keys read: `apiKey.env` from `env`, `apiKey.file` relative to
 * `baseDir`. `apiKey.secretRef` is the operator's to resolve (it becomes an env var of the grader sidecar), so
 * here it is an error saying so. Also checks the routing is unambiguous.
 */
export function resolveEndpoints(
  specs: unknown,
  o: { env?: NodeJS.ProcessEnv; baseDir?: string; where?: string } = {},
): ModelEndpoint[] {
  const where = o.where ?? "graderEndpoints";
  if (!checkEndpoints(specs)) {
    const e = checkEndpoints.errors![0]!;
    const path = where + e.instancePath.replace(/\/(\d+)/g, "[$1]").replaceAll("/", ".");
    const what = e.keyword === "additionalProperties" ? `unknown field "${e.params.additionalProperty}"` : e.message;
    throw new EndpointConfigError(`${path}: ${what}`);
  }
  const env = o.env ?? process.env;
  const seen = new Map<string, number>();
  let defaults = -1;
  return (specs as GraderEndpoint[]).map((s, i) => {
    const at = `${where}[${i}]`;
    for (const m of s.models ?? []) {
      if (seen.has(m))
        throw new EndpointConfigError(`${at}.models: "${m}" is already served by ${where}[${seen.get(m)}]`);
      seen.set(m, i);
    }
    if (!s.models) {
      if (defaults >= 0)
        throw new EndpointConfigError(`${at}: a second default endpoint (no models), after ${where}[${defaults}]`);
      defaults = i;
    }
    // secretRef is the cluster's (the operator turns it into apiKey.env of the sidecar); env or file is this
    // process's. Both may be set, so one manifest runs in either place.
    const k = s.apiKey ?? {};
    if (k.env !== undefined && k.file !== undefined)
      throw new EndpointConfigError(`${at}.apiKey: set env or file, not both`);
    let apiKey: string | undefined;
    if (k.secretRef && k.env === undefined && k.file === undefined)
      throw new EndpointConfigError(
        `${at}.apiKey.secretRef: a Secret is read in a cluster (the operator gives it to the grader sidecar); here add apiKey.env or apiKey.file`,
      );
    if (k.env !== undefined) {
      apiKey = env[k.env];
      if (!apiKey) throw new EndpointConfigError(`${at}.apiKey.env: the environment variable ${k.env} is not set`);
    }
    if (k.file !== undefined) {
      const file = isAbsolute(k.file) || !o.baseDir ? k.file : join(o.baseDir, k.file);
      try {
        apiKey = readFileSync(file, "utf8").trim();
      } catch (err) {
        throw new EndpointConfigError(`${at}.apiKey.file: cannot read ${file}: ${(err as Error).message}`);
      }
    }
    return {
      baseUrl: s.baseUrl.replace(/\/+$/, ""),
      ...(apiKey ? { apiKey } : {}),
      ...(s.models ? { models: s.models } : {}),
      ...(s.servedModel ? { servedModel: s.servedModel } : {}),
      timeoutMs: Math.round((s.timeoutSeconds ?? DEFAULT_TIMEOUT_MS / 1000) * 1000),
      maxRetries: s.maxRetries ?? DEFAULT_MAX_RETRIES,
      maxConcurrency: s.maxConcurrency ?? DEFAULT_MAX_CONCURRENCY,
      structuredOutputs: s.structuredOutputs ?? true,
    };
  });
}

/**
 * The judge endpoints of a process: `spec.graderEndpoints` (a manifest's, or else the RFT_GRADER_ENDPOINTS JSON
 * the operator gives the sidecar), then, when none of them is the default, `fallback` (the single endpoint of
 * --model-base-url / RFT_GRADER_BASE_URL: `endpointFromEnv`).
 */
export function judgeEndpoints(
  o: { specs?: unknown; baseDir?: string; env?: NodeJS.ProcessEnv; where?: string; fallback?: ModelEndpoint } = {},
): ModelEndpoint[] {
  const env = o.env ?? process.env;
  let specs = o.specs;
  let where = o.where;
  if (specs === undefined && env.RFT_GRADER_ENDPOINTS) {
    where = "RFT_GRADER_ENDPOINTS";
    try {
      specs = JSON.parse(env.RFT_GRADER_ENDPOINTS);
    } catch (err) {
      throw new EndpointConfigError(`RFT_GRADER_ENDPOINTS: not JSON: ${(err as Error).message}`);
    }
  }
  const eps =
    specs === undefined
      ? []
      : resolveEndpoints(specs, { env, ...(o.baseDir ? { baseDir: o.baseDir } : {}), ...(where ? { where } : {}) });
  if (o.fallback && !eps.some((e) => !e.models)) eps.push(o.fallback);
  return eps;
}

/** The endpoint serving a grader's `model`: the one naming it, else the default one. */
export function pickEndpoint(eps: readonly ModelEndpoint[], model: string): ModelEndpoint | undefined {
  return eps.find((e) => e.models?.includes(model)) ?? eps.find((e) => !e.models);
}

/** A counting semaphore: at most `max` holders; the rest wait in arrival order. */
class Limiter {
  private active = 0;
  private readonly waiting: (() => void)[] = [];
  constructor(readonly max: number) {}
  async run<R>(f: () => Promise<R>): Promise<R> {
    if (this.active >= this.max) await new Promise<void>((r) => this.waiting.push(r));
    else this.active++;
    try {
      return await f();
    } finally {
      const next = this.waiting.shift();
      if (next) next();
      else this.active--;
    }
  }
}
const limiters = new WeakMap<ModelEndpoint, Limiter>();
function limiterOf(ep: ModelEndpoint): Limiter | undefined {
  if (!ep.maxConcurrency) return undefined;
  let l = limiters.get(ep);
  if (!l) limiters.set(ep, (l = new Limiter(ep.maxConcurrency)));
  return l;
}

export type CallResult = { ok: true; body: any } | { ok: false; details: string; timedOut?: boolean };

/** The body as text, or null past `max` bytes (reading stops there). */
async function boundedText(res: Response, max: number): Promise<string | null> {
  if (!res.body) return "";
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    size += chunk.byteLength;
    if (size > max) {
      await res.body.cancel().catch(() => {});
      return null;
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString("utf8");
}

/** Retry-After (seconds or an HTTP date) in ms, or 0. */
function retryAfterMs(h: string | null): number {
  if (!h) return 0;
  const s = Number(h);
  const ms = Number.isFinite(s) ? s * 1000 : Date.parse(h) - Date.now();
  return Number.isFinite(ms) && ms > 0 ? Math.min(ms, RETRY_AFTER_MAX_MS) : 0;
}

/**
 * POSTs JSON with a timeout per try, at most `maxConcurrency` requests of an endpoint in flight; retries 429,
 * 5xx, timeouts and connection errors with exponential backoff (or the server's Retry-After). Never throws.
 */
export async function postJson(ep: ModelEndpoint, path: string, body: unknown): Promise<CallResult> {
  let last = "";
  let timedOut = false;
  let wait = 0;
  let tries = 0;
  for (let attempt = 0; attempt <= ep.maxRetries; attempt++) {
    tries++;
    if (attempt > 0) {
      const backoff = (ep.retryBaseMs ?? 500) * 2 ** (attempt - 1);
      await new Promise((r) => setTimeout(r, Math.max(backoff, wait)));
    }
    wait = 0;
    const once = async (): Promise<CallResult | "retry" | "stop"> => {
      try {
        const res = await fetch(ep.baseUrl + path, {
          method: "POST",
          headers: {
            "content-type": "application/json",
            ...(ep.apiKey ? { authorization: `Bearer ${ep.apiKey}` } : {}),
          },
          body: JSON.stringify(body),
          signal: AbortSignal.timeout(ep.timeoutMs),
        });
        const text = await boundedText(res, RESPONSE_MAX_BYTES);
        timedOut = false;
        if (text === null) {
          last = `${path}: the response is larger than ${RESPONSE_MAX_BYTES} bytes`;
          return "stop";
        }
        if (res.ok) {
          try {
            return { ok: true, body: JSON.parse(text) };
          } catch {
            return { ok: false, details: `${path}: response is not JSON: ${text.slice(0, 200)}` };
          }
        }
        last = `${path}: HTTP ${res.status}: ${text.slice(0, 500)}`;
        wait = retryAfterMs(res.headers.get("retry-after"));
        return res.status === 429 || res.status >= 500 ? "retry" : "stop";
      } catch (err) {
        timedOut = (err as Error).name === "TimeoutError";
        last = `${path}: ${timedOut ? `timed out after ${ep.timeoutMs} ms` : (err as Error).message}`;
        return "retry";
      }
    };
    const limiter = limiterOf(ep);
    const r = limiter ? await limiter.run(once) : await once();
    if (r === "stop") break;
    if (r !== "retry") return r;
  }
  const tried = tries > 1 ? ` (${tries} tries)` : "";
  return { ok: false, details: last + tried, ...(timedOut ? { timedOut } : {}) };
}

export function usageOf(u: any): TokenUsage {
  const prompt = Number(u?.prompt_tokens ?? 0);
  const completion = Number(u?.completion_tokens ?? 0);
  return {
    prompt_tokens: prompt,
    completion_tokens: completion,
    total_tokens: Number(u?.total_tokens ?? prompt + completion),
    cached_tokens: Number(u?.prompt_tokens_details?.cached_tokens ?? u?.cached_tokens ?? 0),
  };
}

export function addUsage(into: Record<string, TokenUsage>, model: string, u: TokenUsage) {
  into[model] ??= { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0, cached_tokens: 0 };
  const t = into[model];
  t.prompt_tokens += u.prompt_tokens;
  t.completion_tokens += u.completion_tokens;
  t.total_tokens += u.total_tokens;
  t.cached_tokens += u.cached_tokens;
}
