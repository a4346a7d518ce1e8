/**
 * The operator's Kubernetes client: credentials from @kubernetes/client-node's KubeConfig (in-cluster,
 * KUBECONFIG or a file), requests over one shared keep-alive HTTPS agent, every PATCH with an explicit
 * content type (server-side apply or merge patch: client-node's generated patch calls default to JSON
 * Patch), a watch stream reader, and a request counter for metrics and the benchmark.
 */
import { AsyncLocalStorage } from "node:async_hooks";
import type { IncomingMessage } from "node:http";
import https from "node:https";
import { KubeConfig } from "@kubernetes/client-node";
import { FIELD_MANAGER } from "./names.js";

export type KObj = Record<string, any>;

export class KubeError extends Error {
  constructor(
    readonly status: number,
    readonly body: KObj,
    what: string,
  ) {
    super(`${what}: ${status} ${body.reason ?? ""} ${body.message ?? ""}`.trim());
  }
}

export const isNotFound = (e: unknown) => e instanceof KubeError && e.status === 404;
export const isConflict = (e: unknown) => e instanceof KubeError && e.status === 409;

const requestScope = new AsyncLocalStorage<{ requests: number }>();

/** Runs fn, counting in `counter` the API requests it makes (only those: concurrent work has its own scope). */
export function countRequests<T>(counter: { requests: number }, fn: () => Promise<T>): Promise<T> {
  return requestScope.run(counter, fn);
}

export class KubeClient {
  requests = 0;
  readonly server: URL;
  private opts: https.RequestOptions = {};
  private agent!: https.Agent;

  private constructor(readonly kc: KubeConfig) {
    const cluster = kc.getCurrentCluster();
    if (!cluster) throw new Error("kubeconfig has no current cluster");
    this.server = new URL(cluster.server);
  }

  static async fromKubeconfig(file?: string): Promise<KubeClient> {
    const kc = new KubeConfig();
    if (file) kc.loadFromFile(file);
    else kc.loadFromDefault();
    const c = new KubeClient(kc);
    const opts: https.RequestOptions = {};
    await kc.applyToHTTPSOptions(opts);
    c.opts = opts;
    c.agent = new https.Agent({
      keepAlive: true,
      maxSockets: 32,
      ca: opts.ca,
      cert: opts.cert,
      key: opts.key,
      rejectUnauthorized: opts.rejectUnauthorized,
    });
    return c;
  }

  close(): void {
    this.agent.destroy();
  }

  open(
    method: string,
    path: string,
    body?: unknown,
    contentType?: string,
    timeoutMs = 30_000,
  ): Promise<IncomingMessage> {
    this.requests++;
    const scope = requestScope.getStore();
    if (scope) scope.requests++;
    const data = body === undefined ? undefined : JSON.stringify(body);
    return new Promise((resolve, reject) => {
      const req = https.request(
        {
          host: this.server.hostname,
          port: this.server.port || 443,
          path,
          method,
          agent: this.agent,
          headers: {
            ...((this.opts.headers as Record<string, string>) ?? {}),
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

  async request<T = KObj>(method: string, path: string, body?: unknown, contentType?: string): Promise<T> {
    const res = await this.open(method, path, body, contentType);
    const chunks: Buffer[] = [];
    for await (const c of res) chunks.push(c as Buffer);
    const text = Buffer.concat(chunks).toString("utf8");
    let parsed: KObj;
    try {
      parsed = text ? JSON.parse(text) : {};
    } catch {
      parsed = { message: text };
    }
    if ((res.statusCode ?? 500) >= 300) throw new KubeError(res.statusCode ?? 500, parsed, `${method} ${path}`);
    return parsed as T;
  }

  get<T = KObj>(path: string): Promise<T> {
    return this.request<T>("GET", path);
  }

  async getOptional<T = KObj>(path: string): Promise<T | undefined> {
    try {
      return await this.get<T>(path);
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw e;
    }
  }

  /** Server-side apply under the operator's field manager, with force (we own what we apply). */
  apply<T = KObj>(path: string, obj: unknown, fieldManager = FIELD_MANAGER): Promise<T> {
    const q = new URLSearchParams({ fieldManager, force: "true" });
    return this.request<T>("PATCH", `${path}?${q}`, obj, "application/apply-patch+yaml");
  }

  mergePatch<T = KObj>(path: string, patch: unknown): Promise<T> {
    return this.request<T>("PATCH", path, patch, "application/merge-patch+json");
  }

  /** POST that treats 409 AlreadyExists as success (answers undefined then). */
  async create<T = KObj>(path: string, obj: unknown): Promise<T | undefined> {
    try {
      return await this.request<T>("POST", path, obj);
    } catch (e) {
      if (isConflict(e)) return undefined;
      throw e;
    }
  }

  /** DELETE that treats 404 as success. */
  async delete(path: string, propagationPolicy: "Background" | "Foreground" = "Background"): Promise<void> {
    try {
      await this.request("DELETE", path, { kind: "DeleteOptions", apiVersion: "v1", propagationPolicy });
    } catch (e) {
      if (!isNotFound(e)) throw e;
    }
  }
}

/** REST paths of the kinds the operator touches. */
export const paths = {
  ftj: (ns?: string, name?: string) =>
    `/apis/rft.dev/v1alpha1${ns ? `/namespaces/${ns}` : ""}/finetunejobs${name ? `/${name}` : ""}`,
  job: (ns?: string, name?: string) => `/apis/batch/v1${ns ? `/namespaces/${ns}` : ""}/jobs${name ? `/${name}` : ""}`,
  core: (kind: "secrets" | "configmaps" | "services" | "events" | "pods", ns?: string, name?: string) =>
    `/api/v1${ns ? `/namespaces/${ns}` : ""}/${kind}${name ? `/${name}` : ""}`,
  networkPolicy: (ns: string, name?: string) =>
    `/apis/networking.k8s.io/v1/namespaces/${ns}/networkpolicies${name ? `/${name}` : ""}`,
  /** JobSets (jobset.x-k8s.io/v1alpha2; spec.workloadKind JobSet). */
  jobSet: (ns: string, name?: string) =>
    `/apis/jobset.x-k8s.io/v1alpha2/namespaces/${ns}/jobsets${name ? `/${name}` : ""}`,
  /** Deployments (spec.serve's server). */
  deployment: (ns: string, name?: string) => `/apis/apps/v1/namespaces/${ns}/deployments${name ? `/${name}` : ""}`,
  lease: (ns: string, name?: string) => `/apis/coordination.k8s.io/v1/namespaces/${ns}/leases${name ? `/${name}` : ""}`,
};
