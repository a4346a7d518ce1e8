/**
 * Calls to an OpenAI-compatible endpoint for model graders (chat completions) and cosine similarity
 * (embeddings). The endpoint is the sidecar's configuration, never the grader JSON's, so a user's grader
 * runs unchanged against whatever serves the judge model (OpenAI, vLLM, `rft serve`, ...).
 */
import { readFileSync } from "node:fs";
import type { TokenUsage } from "../../proto/graders.js";

export interface ModelEndpoint {
  baseUrl: string; // e.g. http://127.0.0.1:8000/v1
  apiKey?: string;
  timeoutMs: number;
  maxRetries: number;
}

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
    timeoutMs: Number(env.RFT_GRADER_MODEL_TIMEOUT_MS ?? 60_000),
    maxRetries: Number(env.RFT_GRADER_MODEL_MAX_RETRIES ?? 2),
  };
}

export type CallResult = { ok: true; body: any } | { ok: false; details: string };

/** POSTs JSON with a timeout; retries 429 and 5xx with exponential backoff. Never throws. */
export async function postJson(ep: ModelEndpoint, path: string, body: unknown): Promise<CallResult> {
  let last = "";
  for (let attempt = 0; attempt <= ep.maxRetries; attempt++) {
    if (attempt > 0) await new Promise((r) => setTimeout(r, 200 * 2 ** (attempt - 1)));
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
      const text = await res.text();
      if (res.ok) {
        try {
          return { ok: true, body: JSON.parse(text) };
        } catch {
          return { ok: false, details: `${path}: response is not JSON: ${text.slice(0, 200)}` };
        }
      }
      last = `${path}: HTTP ${res.status}: ${text.slice(0, 500)}`;
      if (res.status !== 429 && res.status < 500) break;
    } catch (err) {
      last = `${path}: ${(err as Error).name === "TimeoutError" ? `timed out after ${ep.timeoutMs} ms` : (err as Error).message}`;
    }
  }
  return { ok: false, details: last };
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
