/**
 * A small Kubernetes REST client for the harness itself (the process kubelet and the cluster's readiness
 * checks): JSON requests over node:https with the cluster's CA and a client certificate, and a watch loop that
 * re-lists on 410 Gone. The operator uses @kubernetes/client-node; the harness does not, so a bug in one
 * cannot hide a bug in the other.
 */

import type { IncomingMessage } from "node:http";
import https from "node:https";

export interface Credentials {
  server: string;
  ca: string;
  cert: string;
  key: string;
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly body: { reason?: string; message?: string } & Record<string, unknown>,
    what: string,
  ) {
    super(`${what}: ${status} ${body.reason ?? ""} ${body.message ?? ""}`.trim());
  }
}

/** Kubernetes objects are read as loose JSON in the harness. */
export type KObject = Record<string, any>;

export interface WatchEvent {
  type: "ADDED" | "MODIFIED" | "DELETED" | "BOOKMARK" | "ERROR";
  object: KObject;
}

export class Api {
  private readonly agent: https.Agent;
  private readonly base: URL;

  constructor(readonly creds: Credentials) {
    this.base = new URL(creds.server);
    this.agent = new https.Agent({ keepAlive: true, ca: creds.ca, cert: creds.cert, key: creds.key, maxSockets: 16 });
  }

  close(): void {
    this.agent.destroy();
  }

  private open(method: string, path: string, body: unknown, contentType: string | undefined, timeoutMs: number) {
    return new Promise<IncomingMessage>((resolve, reject) => {
      const data = body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body);
      const req = https.request(
        {
          host: this.base.hostname,
          port: this.base.port,
          path,
          method,
          agent: this.agent,
          headers: {
            accept: "application/json",
            ...(data !== undefined
              ? { "content-type": contentType ?? "application/json", "content-length": Buffer.byteLength(data) }
              : {}),
          },
        },
        resolve,
      );
      req.setTimeout(timeoutMs, () => req.destroy(new Error(`${method} ${path}: no answer in ${timeoutMs} ms`)));
      req.on("error", reject);
      if (data !== undefined) req.write(data);
      req.end();
    });
  }

  async request<T = KObject>(method: string, path: string, body?: unknown, contentType?: string): Promise<T> {
    const res = await this.open(method, path, body, contentType, 30_000);
    const chunks: Buffer[] = [];
    for await (const c of res) chunks.push(c as Buffer);
    const text = Buffer.concat(chunks).toString("utf8");
    let parsed: KObject;
    try {
      parsed = text ? JSON.parse(text) : {};
    } catch {
      parsed = { message: text };
    }
    if ((res.statusCode ?? 500) >= 300) throw new ApiError(res.statusCode ?? 500, parsed, `${method} ${path}`);
    return parsed as T;
  }

  get<T = KObject>(path: string): Promise<T> {
    return this.request<T>("GET", path);
  }
  post<T = KObject>(path: string, body: unknown): Promise<T> {
    return this.request<T>("POST", path, body);
  }
  put<T = KObject>(path: string, body: unknown): Promise<T> {
    return this.request<T>("PUT", path, body);
  }
  delete<T = KObject>(path: string, body?: unknown): Promise<T> {
    return this.request<T>("DELETE", path, body);
  }
  mergePatch<T = KObject>(path: string, body: unknown): Promise<T> {
    return this.request<T>("PATCH", path, body, "application/merge-patch+json");
  }
  strategicPatch<T = KObject>(path: string, body: unknown): Promise<T> {
    return this.request<T>("PATCH", path, body, "application/strategic-merge-patch+json");
  }

  /** GET that answers undefined for 404. */
  async getOptional<T = KObject>(path: string): Promise<T | undefined> {
    try {
      return await this.get<T>(path);
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) return undefined;
      throw e;
    }
  }

  /**
   * List then watch a collection until `signal` aborts: `onList` gets the full list (first and after every
   * 410 or broken watch that cannot resume), `onEvent` each event after it. Reconnects with a short backoff.
   */
  async listWatch(
    path: string,
    query: Record<string, string>,
    onList: (items: KObject[]) => void,
    onEvent: (e: WatchEvent) => void,
    signal: AbortSignal,
  ): Promise<void> {
    let rv = "";
    let backoff = 200;
    while (!signal.aborted) {
      try {
        if (!rv) {
          const list = await this.get(`${path}?${new URLSearchParams(query)}`);
          rv = list.metadata.resourceVersion;
          onList(list.items ?? []);
        }
        const q = new URLSearchParams({
          ...query,
          watch: "1",
          resourceVersion: rv,
          allowWatchBookmarks: "true",
          timeoutSeconds: "300",
        });
        const res = await this.open("GET", `${path}?${q}`, undefined, undefined, 330_000);
        if ((res.statusCode ?? 500) >= 300) {
          res.resume();
          if (res.statusCode === 410) rv = "";
          throw new Error(`watch ${path}: ${res.statusCode}`);
        }
        const abort = () => res.destroy();
        signal.addEventListener("abort", abort, { once: true });
        let buf = "";
        try {
          for await (const chunk of res) {
            buf += (chunk as Buffer).toString("utf8");
            let nl = buf.indexOf("\n");
            while (nl >= 0) {
              const line = buf.slice(0, nl).trim();
              buf = buf.slice(nl + 1);
              nl = buf.indexOf("\n");
              if (!line) continue;
              const ev = JSON.parse(line) as WatchEvent;
              if (ev.type === "ERROR") {
                if (ev.object?.code === 410) rv = "";
                throw new Error(`watch ${path}: ${ev.object?.message ?? "error"}`);
              }
              rv = ev.object?.metadata?.resourceVersion ?? rv;
              if (ev.type !== "BOOKMARK") onEvent(ev);
            }
          }
        } finally {
          signal.removeEventListener("abort", abort);
        }
        backoff = 200;
      } catch {
        if (signal.aborted) return;
        await new Promise((r) => setTimeout(r, backoff));
        backoff = Math.min(backoff * 2, 5_000);
      }
    }
  }
}
