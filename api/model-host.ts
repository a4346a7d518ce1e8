/**
 * Chat completions on the models `rft api` knows (base, fine-tuned, checkpoints): each model id is served by
 * its own `rft serve` child process, started on the first request (a few seconds) and kept; at most
 * `maxResident` at a time (the least recently used one is stopped). Requests are proxied as they are.
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

  /** One chat completion (JSON), for evals. */
  async chat(body: Record<string, unknown>): Promise<Record<string, unknown>> {
    const url = await this.url(String(body.model));
    const r = await fetch(`${url}/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    const j = (await r.json()) as Record<string, unknown>;
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
    try {
      model = (JSON.parse(body.toString("utf8")) as { model?: unknown }).model;
    } catch {
      throw new ApiError(400, "We could not parse the JSON body of your request.", null, "invalid_json");
    }
    if (typeof model !== "string")
      throw new ApiError(400, "Missing required parameter: 'model'.", "model", "missing_required_parameter");
    if (!allowed(model)) throw new ApiError(404, `The model '${model}' does not exist`, "model", "model_not_found");
    const url = await this.url(model);
    const r = await fetch(`${url}/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body,
    });
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
