/**
 * `rft api`: OpenAI's Files, Fine-tuning jobs (with events, checkpoints, pause/resume/cancel), Evals, Models
 * and Chat Completions over node:http, so code written for OpenAI's SDKs only changes `base_url`. Every `/v1`
 * request needs a bearer key; errors are OpenAI's envelope. The grader endpoints
 * (`/v1/fine_tuning/alpha/graders/*`) are the grader service's own handler.
 */
import { randomBytes } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import type { Logger } from "../proto/log.js";
import { GraderEngine } from "../grader-sidecar/src/engine.js";
import { createHttpServer as createGraderHttp } from "../grader-sidecar/src/http.js";
import { GraderMetrics } from "../grader-sidecar/src/metrics.js";
import type { KubeClient } from "../operator/client.js";
import type { ClusterConfig } from "./cluster-config.js";
import { ClusterJobs } from "./cluster-jobs.js";
import { ClusterServe } from "./cluster-serve.js";
import { ApiError } from "./errors.js";
import { Endpoints } from "./endpoints.js";
import { EvalStore } from "./evals.js";
import { FileStore } from "./files.js";
import { ALL_PROJECTS, type ApiKeys, DEFAULT_PROJECT, readBody, readJson, send } from "./http.js";
import { JobManager } from "./jobs.js";
import { ModelHost } from "./model-host.js";
import type { ModelCatalog } from "./models.js";
import { paginate, parseLimit } from "./pagination.js";

export interface ApiServerOptions {
  /** The durable store: `<data>/files`, `<data>/jobs`, `<data>/evals`. */
  dataDir: string;
  keys: ApiKeys;
  models: ModelCatalog;
  /** organization_id of the job objects and the org part of fine-tuned model names (default "rft"). */
  organization?: string;
  host?: string;
  port?: number;
  backend?: string;
  /** Largest upload (default 512 MiB, OpenAI's per-file limit). */
  maxUploadBytes?: number;
  /** Largest JSON body (default 4 MiB). */
  maxJsonBytes?: number;
  logger: Logger;
  /**
   * Cluster mode: jobs become FineTuneJobs through this client, in the namespace of the key's project (the
   * config's); `models` is unused (the config names the base models on the model claims).
   */
  cluster?: {
    client: KubeClient;
    config: ClusterConfig;
    datasetKey: Buffer;
    pollMs?: number;
    /** How the API reaches a job's model server (default: the Service's cluster DNS name; tests: a relay). */
    serviceUrl?: (namespace: string, service: string) => Promise<string>;
    /** Scale an idle model server to zero after this long (ms; default 15 minutes; 0: never). */
    serveIdleMs?: number;
    /** How long a chat request waits for its model server (ms; default 10 minutes). */
    serveReadyTimeoutMs?: number;
  };
  /** External OpenAI-compatible endpoints: their models are listed, chatted with and sampled by eval runs. */
  endpoints?: Endpoints;
}

export interface RunningApi {
  server: Server;
  url: string;
  jobs: JobManager | ClusterJobs;
  close(): Promise<void>;
}

/** The `model` of a chat request body ("" when it has none: the proxy answers the error). */
function requestedModel(body: Buffer): string {
  try {
    const m = (JSON.parse(body.toString("utf8")) as { model?: unknown }).model;
    return typeof m === "string" ? m : "";
  } catch {
    return "";
  }
}

/** `multipart/form-data` → its fields and its one file (the body is already bounded). */
async function parseMultipart(req: IncomingMessage, body: Buffer) {
  const type = String(req.headers["content-type"] ?? "");
  if (!type.startsWith("multipart/form-data"))
    throw new ApiError(400, "Uploads must be multipart/form-data with 'file' and 'purpose'.", null, "invalid_request");
  let form: FormData;
  try {
    form = await new Request("http://local/", { method: "POST", headers: { "content-type": type }, body }).formData();
  } catch (e) {
    throw new ApiError(400, `Malformed multipart body: ${(e as Error).message}`, null, "invalid_request");
  }
  const file = form.get("file");
  const purpose = form.get("purpose");
  if (!(file instanceof Blob))
    throw new ApiError(400, "Missing required parameter: 'file'.", "file", "missing_required_parameter");
  if (typeof purpose !== "string")
    throw new ApiError(400, "Missing required parameter: 'purpose'.", "purpose", "missing_required_parameter");
  const name = (file as File).name || "upload.jsonl";
  return { purpose, filename: name.slice(0, 255), bytes: new Uint8Array(await file.arrayBuffer()) };
}

/** The project objects created with a key are stored under (the internal all-projects key stores as "default"). */
const owner = (project: string) => (project === ALL_PROJECTS ? DEFAULT_PROJECT : project);

export async function startApiServer(o: ApiServerOptions): Promise<RunningApi> {
  const log = o.logger;
  const organization = o.organization ?? "rft";
  const files = new FileStore(join(o.dataDir, "files"));
  const cluster = o.cluster
    ? new ClusterJobs({
        dir: join(o.dataDir, "jobs"),
        files,
        client: o.cluster.client,
        config: o.cluster.config,
        organization,
        datasetKey: o.cluster.datasetKey,
        pollMs: o.cluster.pollMs,
        log,
      })
    : undefined;
  const local = cluster
    ? undefined
    : new JobManager({
        dir: join(o.dataDir, "jobs"),
        files,
        baseModel: (n) => o.models.dir(n),
        organization,
        backend: o.backend,
        log,
      });
  const jobs: JobManager | ClusterJobs = cluster ?? local!;
  const clusterServe = cluster
    ? new ClusterServe({
        jobs: cluster,
        organization,
        log,
        ...(o.cluster!.serviceUrl ? { serviceUrl: o.cluster!.serviceUrl } : {}),
        ...(o.cluster!.serveIdleMs !== undefined ? { idleMs: o.cluster!.serveIdleMs } : {}),
        ...(o.cluster!.serveReadyTimeoutMs !== undefined ? { readyTimeoutMs: o.cluster!.serveReadyTimeoutMs } : {}),
      })
    : undefined;
  /** A model this server can serve chat completions for (local mode only: cluster jobs' models are the cluster's). */
  const modelDir = (id: string, project?: string) => local?.modelDir(id, project);
  const endpoints = o.endpoints ?? new Endpoints();
  const host = new ModelHost({
    backend: o.backend,
    log,
    resolve: (id) => modelDir(id),
    remote: (id) => endpoints.of(id),
  });
  /** A model a project may chat with or sample: an endpoint's, or one this server serves. */
  const chatModel = (id: string, project?: string) =>
    endpoints.of(id) !== undefined || modelDir(id, project) !== undefined;
  const metrics = new GraderMetrics({ defaultMetrics: false });
  const engine = new GraderEngine({ onGraded: metrics.observe });
  const graderHttp = createGraderHttp({ engine, metrics, logger: log });
  // Model graders of eval criteria call this server's own chat completions (any model it knows) with a key of
  // this process only.
  const internalKey = `sk-internal-${randomBytes(24).toString("hex")}`;
  o.keys.allow(internalKey);
  const self = { baseUrl: "", apiKey: internalKey, timeoutMs: 300_000, maxRetries: 0 };
  const evals = new EvalStore({
    dir: join(o.dataDir, "evals"),
    files,
    host,
    log,
    modelEndpoint: self,
    // Cluster mode: a job's fine-tuned model or checkpoint (`ft:…`) is sampled on its own server (spec.serve);
    // whether the project has it is known when the run samples it.
    modelVisible: (m, p) => chatModel(m, p) || (clusterServe !== undefined && m.startsWith("ft:")),
    ...(clusterServe
      ? {
          chat: (body: Record<string, unknown>, project: string | undefined) =>
            endpoints.of(String(body.model))
              ? host.chat(body)
              : clusterServe.chat(body, project ?? DEFAULT_PROJECT, cluster!.baseModels()),
        }
      : {}),
  });
  (local ?? cluster)?.linkEvals(evals); // RFT jobs get an eval, and each validation step a run of it
  const maxJson = o.maxJsonBytes ?? 4 << 20;
  const maxUpload = o.maxUploadBytes ?? 512 << 20;

  async function route(req: IncomingMessage, res: ServerResponse, url: URL, project: string): Promise<void> {
    const path = url.pathname.replace(/\/+$/, "");
    const q = url.searchParams;
    const m = req.method ?? "GET";
    const seg = path.split("/").slice(2).map(decodeURIComponent); // after "/v1"
    const is = (method: string, ...parts: (string | null)[]) =>
      m === method && seg.length === parts.length && parts.every((p, i) => p === null || p === seg[i]);

    // Files
    if (is("POST", "files")) {
      const u = await parseMultipart(req, await readBody(req, maxUpload));
      const f = files.create(u.purpose, u.filename, u.bytes, owner(project));
      log.info({ file: f.id, purpose: f.purpose, bytes: f.bytes }, "file uploaded");
      return send(res, 200, f);
    }
    if (is("GET", "files")) {
      const order = q.get("order") ?? "desc";
      if (order !== "asc" && order !== "desc")
        throw new ApiError(400, "Invalid 'order': expected 'asc' or 'desc'.", "order", "invalid_value");
      return send(
        res,
        200,
        paginate(
          files.list(q.get("purpose"), order, project),
          q.get("after"),
          parseLimit(q.get("limit"), 10_000, 10_000),
        ),
      );
    }
    if (is("GET", "files", null)) return send(res, 200, files.get(seg[1]!, null, project));
    if (is("DELETE", "files", null)) return send(res, 200, files.delete(seg[1]!, project));
    if (is("GET", "files", null, "content")) {
      const bytes = files.content(seg[1]!, project);
      res.writeHead(200, { "content-type": "application/octet-stream", "content-length": bytes.length });
      return void res.end(bytes);
    }

    // Fine-tuning jobs
    if (is("POST", "fine_tuning", "jobs"))
      return send(res, 200, await jobs.create(await readJson(req, maxJson), owner(project)));
    if (is("GET", "fine_tuning", "jobs")) {
      const metadata: Record<string, string> = {};
      for (const [k, v] of q) {
        const mk = /^metadata\[(.+)\]$/.exec(k);
        if (mk) metadata[mk[1]!] = v;
      }
      return send(
        res,
        200,
        paginate(await jobs.list(metadata, project), q.get("after"), parseLimit(q.get("limit"), 20)),
      );
    }
    if (is("GET", "fine_tuning", "jobs", null)) return send(res, 200, await jobs.get(seg[2]!, project));
    for (const action of ["cancel", "pause", "resume"] as const)
      if (is("POST", "fine_tuning", "jobs", null, action))
        return send(res, 200, await jobs.act(seg[2]!, action, project));
    if (is("GET", "fine_tuning", "jobs", null, "events"))
      return send(
        res,
        200,
        paginate(await jobs.listEvents(seg[2]!, project), q.get("after"), parseLimit(q.get("limit"), 20)),
      );
    if (is("GET", "fine_tuning", "jobs", null, "checkpoints")) {
      const list = (await jobs.checkpoints(seg[2]!, project)).map((c) => {
        const { dir: _d, ...rest } = c as typeof c & { dir?: string };
        return rest;
      });
      return send(res, 200, paginate(list, q.get("after"), parseLimit(q.get("limit"), 10)));
    }
    if (seg[0] === "fine_tuning" && seg[1] === "alpha" && seg[2] === "graders") {
      graderHttp.emit("request", req, res);
      return;
    }

    // Models and chat completions (a served local model per fine-tuned model or checkpoint, on demand)
    const baseNames = cluster ? cluster.baseModels() : o.models.names();
    if (is("GET", "models")) {
      const data = [
        ...baseNames.map((id) => ({ id, object: "model", created: o.models.created, owned_by: organization })),
        ...(await jobs.fineTunedModels(project)).map((x) => ({
          id: x.id,
          object: "model",
          created: x.created,
          owned_by: organization,
        })),
        ...endpoints
          .models()
          .map((x) => ({ id: x.id, object: "model", created: o.models.created, owned_by: x.owned_by })),
      ];
      return send(res, 200, { object: "list", data });
    }
    if (is("GET", "models", null)) {
      const id = seg[1]!;
      const ft = (await jobs.fineTunedModels(project)).find((x) => x.id === id);
      if (!ft && !baseNames.includes(id) && !chatModel(id, project))
        throw new ApiError(404, `The model '${id}' does not exist`, "model", "model_not_found");
      const owner = endpoints.models().find((x) => x.id === id)?.owned_by ?? organization;
      return send(res, 200, { id, object: "model", created: ft?.created ?? o.models.created, owned_by: owner });
    }
    if (is("POST", "chat", "completions")) {
      const body = await readBody(req, maxJson);
      // An endpoint's model goes there, in either mode; in cluster mode the rest go to the job's own server
      // (spec.serve), started on the first request.
      if (clusterServe && !endpoints.of(requestedModel(body)))
        return clusterServe.proxyChat(res, body, project, baseNames);
      return host.proxyChat(req, res, body, (x) => chatModel(x, project));
    }

    // Evals
    if (seg[0] === "evals") return evals.route(m, seg.slice(1), q, req, res, maxJson, project);

    throw new ApiError(
      404,
      `Unknown request URL: ${m} ${url.pathname}. Please check the URL for typos.`,
      null,
      "unknown_url",
    );
  }

  const server = createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://localhost");
    const fail = (e: unknown) => {
      const err =
        e instanceof ApiError ? e : new ApiError(500, "The server had an error while processing your request.");
      if (!(e instanceof ApiError)) log.error({ err: e, path: url.pathname }, "request failed");
      if (res.headersSent) return void res.end();
      // Drain what the client still sends so it reads our answer instead of a reset connection.
      req.resume();
      send(res, err.status, err.body());
    };
    if (req.method === "GET" && url.pathname === "/healthz") return send(res, 200, { status: "ok" });
    // Trainer pods fetch their job's files here with the job's own token (cluster mode only).
    if (cluster && url.pathname.startsWith("/internal/datasets/")) return cluster.serveDataset(req, res, url.pathname);
    // ... and send back each validation's graded samples, for the job's eval (cluster mode only).
    if (cluster && url.pathname.startsWith("/internal/validations/"))
      return void cluster.receiveValidation(req, res, url.pathname).catch(fail);
    let project: string;
    try {
      if (!url.pathname.startsWith("/v1/"))
        throw new ApiError(404, `Unknown request URL: ${req.method} ${url.pathname}.`, null, "unknown_url");
      project = o.keys.check(req);
    } catch (e) {
      return fail(e);
    }
    route(req, res, url, project).catch(fail);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(o.port ?? 8080, o.host ?? "127.0.0.1", () => resolve());
  });
  const addr = server.address() as AddressInfo;
  const url = `http://${addr.address.includes(":") ? `[${addr.address}]` : addr.address}:${addr.port}/v1`;
  self.baseUrl = url;
  return {
    server,
    jobs,
    url,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
      await jobs.close();
      clusterServe?.close();
      await host.close();
      await engine.close();
      await evals.close();
    },
  };
}
