/**
 * Chat completions on the models `rft api` knows (base, fine-tuned, checkpoints): each model id is served by
 * its own `rft serve` child process, started on the first request (a few seconds) and kept; at most
 * `maxResident` at a time (the least recently used one is stopped). A model of an external endpoint
 * (./endpoints.ts) goes to that endpoint with its key instead. Requests are proxied as they are.
 */
import { type ChildProcess, spawn } from "node:child_process";
import type { IncomingMessage, ServerResponse } from "node:http";
import { extname } from "node:path";
import { fileURLToPath } from "node:url";
import type { Logger } from "../proto/log.js";
import { ApiError } from "./errors.js";

const cli = fileURLToPath(new URL(`../cli/rft${extname(fileURLToPath(import.meta.url))}`, import.meta.url));

interface Served {
  child: ChildProcess;
  url: Promise<string>;
  used: number;
}

export interface ModelHostOptions {
  /** The directory of a model id, or undefined. */
  resolve(id: string): string | undefined;
  backend?: string;
  maxResident?: number;
  /** The external endpoint of a model id (base URL up to /v1, bearer key), tried before `resolve`. */
  remote?(id: string): { baseUrl: string; apiKey?: string; servedModel?: string; timeoutMs?: number } | undefined;
  log: Logger;
}

export class ModelHost {
  private readonly served = new Map<string, Served>();

  constructor(readonly o: ModelHostOptions) {}

  private start(id: string, dir: string): Served {
    const env = { ...process.env };
    delete env.RFT_API_KEYS;
    const child = spawn(
      process.execPath,
      [
        ...process.execArgv,
        cli,
        "serve",
        dir,
        "--port",
        "0",
        "--model-id",
        id,
        ...(this.o.backend ? ["--backend", this.o.backend] : []),
      ],
      { env, stdio: ["ignore", "pipe", "pipe"] },
    );
    let err = "";
    child.stderr!.on("data", (d: Buffer) => (err = (err + d.toString()).slice(-2000)));
    const url = new Promise<string>((resolve, reject) => {
      let out = "";
      child.stdout!.on("data", (d: Buffer) => {
        out += d.toString();
        const m = / at (http:\/\/\S+)\n/.exec(out);
        if (m) resolve(m[1]!);
      });
      child.once("error", (e) => {
        this.served.delete(id);
        reject(new Error(`cannot start rft serve for ${id}: ${e.message}`));
      });
      child.once("exit", (code) => {
        this.served.delete(id);
        reject(new Error(`rft serve for ${id} exited (status ${code}): ${err.trim().split("\n").slice(-3).join(" ")}`));
      });
    });
    url.catch(() => undefined);
    this.o.log.info({ model: id, pid: child.pid }, "model server starting");
    return { child, url, used: Date.now() };
  }

  /** The base URL (`…/v1`) of the server of a model id, started when needed. */
  async url(id: string): Promise<string> {
    let s = this.served.get(id);
    if (!s) {
      const dir = this.o.resolve(id);
      if (!dir) throw new ApiError(404, `The model '${id}' does not exist`, "model", "model_not_found");
      const max = this.o.maxResident ?? 2;
      while (this.served.size >= max) {
        const [oldest] = [...this.served.entries()].sort((a, b) => a[1].used - b[1].used)[0]!;
        this.served.get(oldest)!.child.kill("SIGTERM");
        this.served.delete(oldest);
      }
      s = this.start(id, dir);
      this.served.set(id, s);
    }
    s.used = Date.now();
    try {
      return await s.url;
    } catch (e) {
      throw new ApiError(500, (e as Error).message, "model", "model_server_error");
    }
  }

  /** Where a model's chat completions go: an external endpoint (with its key), or its local server. */
  private async target(
    id: string,
  ): Promise<{ url: string; headers: Record<string, string>; servedModel?: string; signal?: AbortSignal }> {
    const headers: Record<string, string> = { "content-type": "application/json" };
    const remote = this.o.remote?.(id);
    if (remote) {
      if (remote.apiKey) headers.authorization = `Bearer ${remote.apiKey}`;
      return {
        url: `${remote.baseUrl}/chat/completions`,
        headers,
        ...(remote.servedModel ? { servedModel: remote.servedModel } : {}),
        // The endpoint's per-request bound (a stream may take longer: 10× it).
        signal: AbortSignal.timeout((remote.timeoutMs ?? 60_000) * 10),
      };
    }
    return { url: `${await this.url(id)}/chat/completions`, headers };
  }

  /** A model endpoint that cannot be reached, as OpenAI's error (never its key). */
  private unreachable(id: string, e: unknown): ApiError {
    return new ApiError(
      502,
      `The model server of '${id}' cannot be reached: ${(e as Error).message}`,
      "model",
      "model_server_error",
    );
  }

  /** One chat completion (JSON), for evals. */
  async chat(body: Record<string, unknown>): Promise<Record<string, unknown>> {
    const t = await this.target(String(body.model));
    const sent = t.servedModel ? { ...body, model: t.servedModel } : body;
    const r = await fetch(t.url, {
      method: "POST",
      headers: t.headers,
      body: JSON.stringify(sent),
      signal: t.signal,
    }).catch((e: unknown) => {
      throw this.unreachable(String(body.model), e);
    });
    const j = (await r.json().catch(() => ({ error: { message: `HTTP ${r.status}, not JSON` } }))) as Record<
      string,
      unknown
    >;
    if (!r.ok) {
      const e = (j.error ?? {}) as { message?: string; param?: string; code?: string };
      throw new ApiError(r.status, e.message ?? "chat completion failed", e.param ?? null, e.code ?? null);
    }
    return j;
  }

  /** `POST /v1/chat/completions`, streamed through unchanged. */
  async proxyChat(
    _req: IncomingMessage,
    res: ServerResponse,
    body: Buffer,
    allowed: (model: string) => boolean,
  ): Promise<void> {
    let model: unknown;
    let parsed: Record<string, unknown>;
    try {
      parsed = JSON.parse(body.toString("utf8")) as Record<string, unknown>;
      model = parsed.model;
    } catch {
      throw new ApiError(400, "We could not parse the JSON body of your request.", null, "invalid_json");
    }
    if (typeof model !== "string")
      throw new ApiError(400, "Missing required parameter: 'model'.", "model", "missing_required_parameter");
    if (!allowed(model)) throw new ApiError(404, `The model '${model}' does not exist`, "model", "model_not_found");
    const t = await this.target(model);
    const sent = t.servedModel ? JSON.stringify({ ...parsed, model: t.servedModel }) : body;
    const r = await fetch(t.url, { method: "POST", headers: t.headers, body: sent, signal: t.signal }).catch(
      (e: unknown) => {
        throw this.unreachable(model as string, e);
      },
    );
    res.writeHead(r.status, { "content-type": r.headers.get("content-type") ?? "application/json" });
    if (r.body) for await (const chunk of r.body) res.write(chunk);
    res.end();
  }

  async close(): Promise<void> {
    await Promise.all(
      [...this.served.values()].map(
        (s) =>
          new Promise<void>((resolve) => {
            if (s.child.exitCode !== null) return resolve();
            s.child.once("exit", () => resolve());
            s.child.kill("SIGTERM");
          }),
      ),
    );
    this.served.clear();
  }
}
