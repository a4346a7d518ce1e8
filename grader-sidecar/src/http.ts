/**
 * OpenAI-compatible HTTP API of the grader service:
 *   POST /v1/fine_tuning/alpha/graders/run       RunGraderRequest  → RunGraderResponse
 *   POST /v1/fine_tuning/alpha/graders/validate  {grader}          → {grader} (normalised)
 *   GET  /metrics (Prometheus), GET /healthz
 * Errors use OpenAI's envelope {"error": {"message", "type", "param", "code"}}.
 */
import { timingSafeEqual } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { Logger } from "../../proto/log.js";
import { type GraderEngine, GraderValidationError } from "./engine.js";
import type { GraderMetrics } from "./metrics.js";

export interface HttpOptions {
  engine: GraderEngine;
  metrics: GraderMetrics;
  logger: Logger;
  /** When set, requests to /v1 must carry `Authorization: Bearer <apiKey>`. */
  apiKey?: string;
  /** Largest accepted request body (default 2 MiB: a 256 kB python grader plus its item). */
  maxBodyBytes?: number;
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type = "invalid_request_error",
    readonly param: string | null = null,
    readonly code: string | null = null,
  ) {
    super(message);
  }
}

function send(res: ServerResponse, status: number, body: unknown, contentType = "application/json") {
  const text = typeof body === "string" ? body : JSON.stringify(body);
  res.writeHead(status, { "content-type": contentType, "content-length": Buffer.byteLength(text) });
  res.end(text);
}

function tooLarge(limit: number): HttpError {
  return new HttpError(
    413,
    `request body is larger than ${limit} bytes`,
    "invalid_request_error",
    null,
    "request_too_large",
  );
}

async function readJson(req: IncomingMessage, limit: number): Promise<Record<string, unknown>> {
  // A declared length past the limit is refused before reading anything.
  if (Number(req.headers["content-length"] ?? 0) > limit) throw tooLarge(limit);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > limit) throw tooLarge(limit);
    chunks.push(chunk as Buffer);
  }
  let body: unknown;
  try {
    body = JSON.parse(Buffer.concat(chunks).toString("utf8"));
  } catch (err) {
    throw new HttpError(400, `request body is not valid JSON: ${(err as Error).message}`);
  }
  if (body === null || typeof body !== "object" || Array.isArray(body)) {
    throw new HttpError(400, "request body must be a JSON object");
  }
  return body as Record<string, unknown>;
}

function authorized(req: IncomingMessage, apiKey: string): boolean {
  const given = Buffer.from(String(req.headers.authorization ?? ""));
  const want = Buffer.from(`Bearer ${apiKey}`);
  return given.length === want.length && timingSafeEqual(given, want);
}

export function createHttpServer(opts: HttpOptions): Server {
  const limit = opts.maxBodyBytes ?? 2 * 1024 * 1024;
  const { engine, metrics, logger } = opts;

  async function route(req: IncomingMessage, res: ServerResponse) {
    const path = (req.url ?? "/").split("?")[0];
    if (req.method === "GET" && path === "/healthz") return send(res, 200, { status: "ok" });
    if (req.method === "GET" && path === "/metrics") {
      return send(res, 200, await metrics.registry.metrics(), metrics.registry.contentType);
    }
    if (path?.startsWith("/v1/") && opts.apiKey && !authorized(req, opts.apiKey)) {
      throw new HttpError(
        401,
        "missing or wrong API key (Authorization: Bearer ...)",
        "invalid_request_error",
        null,
        "invalid_api_key",
      );
    }
    if (path === "/v1/fine_tuning/alpha/graders/run" || path === "/v1/fine_tuning/alpha/graders/validate") {
      if (req.method !== "POST") throw new HttpError(405, `${req.method} is not allowed on ${path}; use POST`);
      const body = await readJson(req, limit);
      if (body.grader === undefined)
        throw new HttpError(400, "missing required parameter: 'grader'", "invalid_request_error", "grader");
      if (path.endsWith("/validate")) {
        const compiled = await engine.compile(body.grader);
        return send(res, 200, { grader: compiled.config });
      }
      const sample = body.model_sample;
      if (typeof sample !== "string") {
        throw new HttpError(
          400,
          "'model_sample' must be a string (the raw model output)",
          "invalid_request_error",
          "model_sample",
        );
      }
      const item =
        body.item ?? (body.reference_answer !== undefined ? { reference_answer: body.reference_answer } : {});
      if (item === null || typeof item !== "object" || Array.isArray(item)) {
        throw new HttpError(400, "'item' must be a JSON object", "invalid_request_error", "item");
      }
      const compiled = await engine.compile(body.grader);
      return send(res, 200, await engine.grade(compiled, item, { output_text: sample }));
    }
    throw new HttpError(404, `no route for ${req.method} ${path}`, "invalid_request_error", null, "not_found");
  }

  return createServer((req, res) => {
    route(req, res).catch((err: unknown) => {
      if (err instanceof GraderValidationError) {
        metrics.invalid.inc();
        return send(res, 400, {
          error: { message: err.message, type: "invalid_request_error", param: err.param, code: err.code },
        });
      }
      if (err instanceof HttpError) {
        return send(res, err.status, {
          error: { message: err.message, type: err.type, param: err.param, code: err.code },
        });
      }
      logger.error({ err }, "grader http request failed");
      send(res, 500, { error: { message: "internal error", type: "server_error", param: null, code: null } });
    });
  });
}
