/**
 * `rft api --cluster`: chat completions on a job's fine-tuned model or one of its checkpoints. The first request
 * for a model sets the FineTuneJob's spec.serve (that model, 1 replica, the job's token Secret); the operator runs
 * `rft serve` behind the Service `<job>-serve` (operator/serving.ts); the request waits until the job's Serving
 * condition is True for that model (at most `readyTimeoutMs`, then OpenAI's 503), and is proxied there with the
 * job's bearer token, streamed through unchanged. After `idleMs` without a request the API scales the server to
 * zero (spec.serve.replicas 0); the next request scales it up again.
 *
 * Base models are not served in cluster mode (400 `unsupported_in_cluster_mode`); an unknown model is a 404.
 */
import type { ServerResponse } from "node:http";
import type { Logger } from "../proto/log.js";
import type { ClusterJobs } from "./cluster-jobs.js";
import { type FineTuneJobObject, type OpenAiFields, servedModelOf, servePatch } from "./cluster-map.js";
import { ApiError } from "./errors.js";

/** The port of a `<job>-serve` Service (operator/serving.ts SERVE_PORT). */
export const SERVE_PORT = 8000;

export interface ClusterServeOptions {
  jobs: ClusterJobs;
  organization: string;
  log: Logger;
  /** The base URL (no `/v1`) of a Service: default its cluster DNS name, `http://<service>.<ns>.svc:8000`. */
  serviceUrl?: (namespace: string, service: string) => Promise<string>;
  /** How long a request waits for the server to become ready (default 10 minutes). */
  readyTimeoutMs?: number;
  /** Scale a server to zero after this long without a request (default 15 minutes; 0: never). */
  idleMs?: number;
  /** How often the server's readiness is read while waiting (default 1 s). */
  pollMs?: number;
}

const clusterDns = async (ns: string, service: string) => `http://${service}.${ns}.svc:${SERVE_PORT}`;

const ready = (o: FineTuneJobObject, served: string) =>
  o.status?.serve?.model === served &&
  o.status?.conditions?.some((c) => c.type === "Serving" && c.status === "True") === true;

export class ClusterServe {
  /** Jobs (ns/name) this process serves: when they were last used, and the requests in flight (never idle). */
  private readonly used = new Map<string, { o: FineTuneJobObject; at: number; inflight: number }>();
  private readonly timer: NodeJS.Timeout | undefined;

  constructor(private readonly o: ClusterServeOptions) {
    const idle = o.idleMs ?? 15 * 60_000;
    if (idle > 0) {
      this.timer = setInterval(() => void this.scaleIdle(idle), Math.min(60_000, idle));
      this.timer.unref();
      void this.adopt();
    }
  }

  /**
   * The servers running when this process starts (an earlier API process started them): each counts as used
   * now, so the idle clock scales it down too. A failure to list them only leaves them running.
   */
  private async adopt(): Promise<void> {
    try {
      for (const { o } of await this.o.jobs.objects()) {
        const key = `${o.metadata.namespace}/${o.metadata.name}`;
        if (o.spec.serve && (o.spec.serve.replicas ?? 1) > 0 && !this.used.has(key))
          this.used.set(key, { o, at: Date.now(), inflight: 0 });
      }
    } catch (e) {
      this.o.log.warn({ err: String(e) }, "cannot list the running model servers: an API restart leaves them up");
    }
  }

  /** The job and what spec.serve must name for an OpenAI model id; 400 for a base model, 404 for anything else. */
  private async find(model: string, project: string, baseModels: string[]) {
    if (baseModels.includes(model))
      throw new ApiError(
        400,
        `The base model '${model}' is not served in cluster mode: use a fine-tuned model or checkpoint of one of your jobs.`,
        "model",
        "unsupported_in_cluster_mode",
      );
    for (const { o, f } of await this.o.jobs.objects(project)) {
      const served = servedModelOf(o, f, this.o.organization, model);
      if (served) return { o, f, served };
    }
    throw new ApiError(404, `The model '${model}' does not exist`, "model", "model_not_found");
  }

  /** spec.serve set for this model (1 replica) unless it already is; then the job once its server is ready. */
  private async serving(o: FineTuneJobObject, f: OpenAiFields, served: string, model: string) {
    const s = o.spec.serve;
    if (!(s && s.model === served && s.modelId === model && (s.replicas ?? 1) >= 1)) {
      o = await this.o.jobs.patch(o, servePatch(f.id, served, model));
      this.o.log.info({ job: f.id, model: served }, "serving the job's model (spec.serve)");
    }
    const deadline = Date.now() + (this.o.readyTimeoutMs ?? 10 * 60_000);
    for (;;) {
      if (ready(o, served)) return o;
      const c = o.status?.conditions?.find((x) => x.type === "Serving");
      if (c?.reason === "NoModel" && (c.observedGeneration ?? 0) >= (o.metadata as { generation?: number }).generation!)
        throw new ApiError(503, `The model '${model}' cannot be served: ${c.message}`, "model", "model_not_available");
      if (Date.now() >= deadline)
        throw new ApiError(
          503,
          `The model '${model}' is still starting (${c?.message ?? "waiting for the operator"}); retry shortly.`,
          "model",
          "model_not_ready",
        );
      await new Promise((r) => setTimeout(r, this.o.pollMs ?? 1000));
      o = await this.o.jobs.reread(o);
    }
  }

  /** A chat request on its model's server (started if need be), counted in flight (never idle) meanwhile. */
  private async withServer<T>(
    model: unknown,
    body: Buffer | string,
    project: string,
    baseModels: string[],
    answer: (r: Response) => Promise<T>,
  ): Promise<T> {
    if (typeof model !== "string" || !model)
      throw new ApiError(400, "Missing required parameter: 'model'.", "model", "missing_required_parameter");
    const { o, f, served } = await this.find(model, project, baseModels);
    const key = `${o.metadata.namespace}/${o.metadata.name}`;
    const use = this.used.get(key) ?? { o, at: Date.now(), inflight: 0 };
    use.inflight++;
    this.used.set(key, use);
    try {
      return await answer(await this.post(body, model, f, await this.serving(o, f, served, model)));
    } finally {
      use.inflight--;
      use.at = Date.now();
    }
  }

  /** `POST /v1/chat/completions` on a fine-tuned model or checkpoint id, proxied to the job's server. */
  async proxyChat(res: ServerResponse, body: Buffer, project: string, baseModels: string[]): Promise<void> {
    let model: unknown;
    try {
      model = (JSON.parse(body.toString("utf8")) as { model?: unknown }).model;
    } catch {
      throw new ApiError(400, "We could not parse the JSON body of your request.", null, "invalid_json");
    }
    await this.withServer(model, body, project, baseModels, async (r) => {
      res.writeHead(r.status, { "content-type": r.headers.get("content-type") ?? "application/json" });
      if (r.body) for await (const chunk of r.body) res.write(chunk);
      res.end();
    });
  }

  /** One chat completion (JSON) on a fine-tuned model or checkpoint of `project`: eval runs sampling it. */
  async chat(body: Record<string, unknown>, project: string, baseModels: string[]): Promise<Record<string, unknown>> {
    return this.withServer(body.model, JSON.stringify(body), project, baseModels, async (r) => {
      const j = (await r.json().catch(() => ({}))) as Record<string, unknown>;
      if (!r.ok) {
        const e = (j.error ?? {}) as { message?: string; param?: string; code?: string };
        throw new ApiError(r.status, e.message ?? `HTTP ${r.status}`, e.param ?? null, e.code ?? null);
      }
      return j;
    });
  }

  private async post(body: Buffer | string, model: string, f: OpenAiFields, live: FineTuneJobObject) {
    const base = await (this.o.serviceUrl ?? clusterDns)(live.metadata.namespace!, live.status!.serve!.service);
    try {
      return await fetch(`${base}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${this.o.jobs.serveToken(f.id)}` },
        body,
      });
    } catch (e) {
      throw new ApiError(
        503,
        `The model server of '${model}' is not reachable: ${(e as Error).message}`,
        "model",
        "model_not_ready",
      );
    }
  }

  /** Servers idle for `idleMs` go to zero replicas (spec.serve stays, so the next request scales them up). */
  private async scaleIdle(idleMs: number): Promise<void> {
    for (const [key, u] of this.used) {
      if (u.inflight > 0 || Date.now() - u.at < idleMs) continue;
      this.used.delete(key);
      try {
        const o = await this.o.jobs.reread(u.o);
        if (this.used.has(key)) continue; // a request came in meanwhile
        if (o.spec.serve && (o.spec.serve.replicas ?? 1) > 0) {
          await this.o.jobs.patch(o, { spec: { serve: { replicas: 0 } } });
          this.o.log.info({ job: key }, "model server idle: scaled to zero");
        }
      } catch (e) {
        this.o.log.warn({ job: key, err: String(e) }, "cannot scale an idle model server to zero");
      }
    }
  }

  close(): void {
    clearInterval(this.timer);
  }
}
