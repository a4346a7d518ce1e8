/**
 * Wires the operator: client, informers (FineTuneJobs; label-selected Jobs, Secrets, ConfigMaps and
 * Services), the work queue, the reconciler, the NATS progress bridge, leader election, and the HTTP server
 * with /metrics, /healthz and /readyz (ready once the caches have synced), and, when configured, the
 * validating admission webhook (served by every replica, leader or not). stop() is the graceful shutdown.
 */
import { createServer, type Server } from "node:http";
import { hostname } from "node:os";
import { STATES } from "../proto/finetunejob-status.js";
import type { Logger } from "../proto/log.js";
import { natsAuthFromCreds, trainerPermissions } from "../proto/nats-auth.js";
import { countRequests, type KObj, KubeClient, paths } from "./client.js";
import { checkpointDir, type FineTuneJobObject, type OperatorSettings } from "./desired.js";
import { Informer } from "./informer.js";
import { LeaderElector } from "./leader.js";
import { CONTROLLER, OperatorMetrics } from "./metrics.js";
import { FIELD_MANAGER, LABEL_JOB, LABEL_MANAGED_BY } from "./names.js";
import { type NatsAuthRef, ensureNatsAuth } from "./nats-bootstrap.js";
import { mintUser } from "./nats-credentials.js";
import { ProgressBridge } from "./progress.js";
import { type Caches, Reconciler } from "./reconciler.js";
import { type GraderValidator, WebhookServer } from "./webhook.js";
import { WorkQueue } from "./workqueue.js";

export interface WebhookOptions {
  /** HTTPS port of the admission webhook (0: any free port). */
  port: number;
  host?: string;
  /** The kubernetes.io/tls Secret (tls.crt, tls.key) with the serving certificate. */
  secretNamespace: string;
  secretName: string;
  /** The grader engine's validation (the operator imports only proto/; the CLI wires the engine). */
  validateGrader?: GraderValidator;
  reloadMs?: number;
}

export interface OperatorOptions {
  kubeconfig?: string;
  /** Watch one namespace only (default: all). */
  namespace?: string;
  settings: OperatorSettings;
  /** NATS URL as the operator reaches it (default: settings.natsUrl). */
  natsUrl?: string;
  workers?: number;
  /** Port for /metrics, /healthz, /readyz (0: any free port). */
  port?: number;
  host?: string;
  leaderElection?: boolean;
  leaseNamespace?: string;
  leaseName?: string;
  identity?: string;
  /** First and longest wait between NATS connection attempts while NATS is unreachable (500 ms, 30 s). */
  natsRetryInitialMs?: number;
  natsRetryMaxMs?: number;
  /** Informer watchdog and relist periods (tests shorten them). */
  watchdogMs?: number;
  relistMs?: number;
  leaseDurationMs?: number;
  renewDeadlineMs?: number;
  retryPeriodMs?: number;
  log: Logger;
  /** Called when the lease is lost (default: exit the process). */
  onLeaseLost?: () => void;
  /** Called after each reconcile with its duration and the API requests it made (the benchmark). */
  onReconcile?: (key: string, seconds: number, requests: number) => void;
  /** Serve the validating admission webhook. */
  webhook?: WebhookOptions;
  /**
   * NATS with authentication: the installation's trust lives in Secrets named by this (made at the first
   * start; operator/nats-bootstrap.ts); the operator connects as its own user and mints one per job.
   */
  natsAuth?: NatsAuthRef;
}

/** A namespaced object's work-queue key. */
const objectKey = (obj: KObj) => `${obj.metadata.namespace}/${obj.metadata.name}`;

export class Operator {
  client!: KubeClient;
  readonly metrics = new OperatorMetrics();
  caches!: Caches;
  queue!: WorkQueue;
  elector?: LeaderElector;
  progress!: ProgressBridge;
  server?: Server;
  webhook?: WebhookServer;
  port = 0;
  private leading = false;
  private stopping = false;

  constructor(readonly o: OperatorOptions) {}

  get isLeader(): boolean {
    return this.leading;
  }

  async start(): Promise<void> {
    const o = this.o;
    this.client = await KubeClient.fromKubeconfig(o.kubeconfig);
    const nats = o.natsAuth ? await ensureNatsAuth(this.client, o.natsAuth, o.log) : undefined;
    const settings: OperatorSettings = { ...o.settings, natsAuth: nats !== undefined };
    this.caches = this.makeCaches();
    this.progress = this.makeProgress(nats);
    const mintJobCreds = nats
      ? (ns: string, name: string) =>
          mintUser(nats.trust, `trainer-${ns}-${name}`, (k) => trainerPermissions(ns, name, k)).creds
      : undefined;
    const reconciler = new Reconciler(this.client, this.caches, this.progress, settings, o.log, mintJobCreds);
    this.queue = this.makeQueue(reconciler);
    await this.startServer();
    if (o.webhook) await this.startWebhook(o.webhook);
    this.progress.start();
    for (const inf of Object.values(this.caches)) inf.start();
    if (o.leaderElection === false) await this.begin();
    else this.elect();
  }

  /** Queues a job's key while this replica leads. */
  private enqueue(key: string) {
    if (this.leading) this.queue.add(key);
  }

  /** The informers: FineTuneJobs, and the children the operator manages (each change queues its job). */
  private makeCaches(): Caches {
    const o = this.o;
    const owner = (obj: KObj) => {
      const job = obj.metadata?.labels?.[LABEL_JOB];
      if (job) this.enqueue(`${obj.metadata.namespace}/${job}`);
    };
    const selector = `${LABEL_MANAGED_BY}=${FIELD_MANAGER}`;
    const mk = (
      path: string,
      onChange: (obj: KObj) => void,
      labelSelector?: string,
      onResync?: (objs: KObj[]) => void,
    ) =>
      new Informer(this.client, {
        path,
        labelSelector,
        onChange,
        onResync,
        watchdogMs: o.watchdogMs,
        relistMs: o.relistMs,
        log: o.log,
      });
    const ns = o.namespace;
    return {
      ftj: mk(
        paths.ftj(ns),
        (obj) => this.enqueue(objectKey(obj)),
        undefined,
        (objs) => objs.forEach((x) => this.enqueue(objectKey(x))),
      ),
      jobs: mk(paths.job(ns), owner, selector),
      secrets: mk(paths.core("secrets", ns), owner, selector),
      configMaps: mk(paths.core("configmaps", ns), owner, selector),
      services: mk(paths.core("services", ns), owner, selector),
    };
  }

  /** The NATS progress bridge: what each job's trainers report wakes its reconcile. */
  private makeProgress(nats: Awaited<ReturnType<typeof ensureNatsAuth>> | undefined): ProgressBridge {
    const o = this.o;
    return new ProgressBridge({
      url: o.natsUrl ?? o.settings.natsUrl,
      auth: {
        ...(nats ? natsAuthFromCreds(nats.operatorUser.creds, "the operator's NATS user") : {}),
        ...(o.settings.natsCaPem ? { tls: { ca: o.settings.natsCaPem } } : {}),
      },
      wake: (k, ms) => this.leading && this.queue.addAfter(k, ms),
      expect: (k) => {
        const [ns, name] = k.split("/") as [string, string];
        const obj = this.caches.ftj.get(ns, name) as FineTuneJobObject | undefined;
        if (!obj?.spec) return undefined;
        return {
          attempt: obj.status?.attempt ?? obj.status?.restartCount ?? 0,
          replicas: obj.spec.replicas ?? 1,
          outputDir: checkpointDir(obj),
        };
      },
      onDrop: (reason) => this.metrics.messagesDropped.inc({ subject: "progress", reason }),
      log: o.log,
      retryInitialMs: o.natsRetryInitialMs,
      retryMaxMs: o.natsRetryMaxMs,
    });
  }

  /** The work queue: each reconcile timed, counted (result, API requests) and reported to onReconcile. */
  private makeQueue(reconciler: Reconciler): WorkQueue {
    const o = this.o;
    return new WorkQueue(
      async (k) => {
        const end = this.metrics.reconcileTime.startTimer({ controller: CONTROLLER });
        const counted = { requests: 0 };
        try {
          const r = await countRequests(counted, () => reconciler.reconcile(k));
          this.metrics.reconcileTotal.inc({
            controller: CONTROLLER,
            result: r?.requeueAfterMs !== undefined ? "requeue_after" : "success",
          });
          return r;
        } catch (e) {
          this.metrics.reconcileTotal.inc({ controller: CONTROLLER, result: "error" });
          this.metrics.reconcileErrors.inc({ controller: CONTROLLER });
          o.log.warn({ job: k, err: String(e) }, "reconcile failed");
          throw e;
        } finally {
          const seconds = end();
          this.metrics.apiRequests.inc(counted.requests);
          o.onReconcile?.(k, seconds, counted.requests);
        }
      },
      { workers: o.workers ?? 4, metrics: this.metrics.queueMetrics(), qps: 200, burst: 500 },
    );
  }

  /** The validating admission webhook, its TLS pair read from a Secret (and reloaded). */
  private async startWebhook(w: WebhookOptions): Promise<void> {
    const secretPath = paths.core("secrets", w.secretNamespace, w.secretName);
    this.webhook = new WebhookServer({
      port: w.port,
      host: w.host,
      reloadMs: w.reloadMs,
      validateGrader: w.validateGrader,
      log: this.o.log,
      loadTls: async () => {
        const data = (await this.client.get(secretPath)).data ?? {};
        const pem = (k: string) => {
          if (!data[k]) throw new Error(`Secret ${w.secretNamespace}/${w.secretName} has no ${k}`);
          return Buffer.from(data[k], "base64").toString("utf8");
        };
        return { cert: pem("tls.crt"), key: pem("tls.key") };
      },
    });
    await this.webhook.start();
  }

  /** Leading: once every cache has synced, the queue starts with every FineTuneJob in it. */
  private async begin(): Promise<void> {
    await Promise.all(Object.values(this.caches).map((c) => c.waitForSync()));
    this.leading = true;
    this.metrics.leader.set({ name: CONTROLLER }, 1);
    this.queue.start();
    for (const obj of this.caches.ftj.list()) this.queue.add(objectKey(obj));
    this.o.log.info("controller started");
  }

  /** Leader election on a Lease: begin() when this replica wins it; onLeaseLost (default: exit) when it loses it. */
  private elect(): void {
    const o = this.o;
    this.elector = new LeaderElector(this.client, {
      namespace: o.leaseNamespace ?? "default",
      name: o.leaseName ?? "rft-operator.rft.dev",
      identity: o.identity ?? `${hostname()}_${process.pid}_${Math.random().toString(36).slice(2, 8)}`,
      leaseDurationMs: o.leaseDurationMs,
      renewDeadlineMs: o.renewDeadlineMs,
      retryPeriodMs: o.retryPeriodMs,
      onStarted: () => void this.begin(),
      onLost: () => {
        this.leading = false;
        this.metrics.leader.set({ name: CONTROLLER }, 0);
        (o.onLeaseLost ?? (() => process.exit(1)))();
      },
      log: o.log,
    });
    this.elector.start();
  }

  private async startServer(): Promise<void> {
    this.server = createServer((req, res) => {
      const url = req.url ?? "/";
      if (url === "/healthz") return void res.end("ok");
      if (url === "/readyz") {
        const ready = !this.stopping && Object.values(this.caches).every((c) => c.synced);
        res.statusCode = ready ? 200 : 503;
        return void res.end(ready ? "ok" : "caches not synced");
      }
      if (url === "/metrics") {
        const counts = Reconciler.countStates(this.caches.ftj.list());
        for (const s of STATES) this.metrics.jobs.set({ state: s }, counts[s] ?? 0);
        void this.metrics.registry.metrics().then((text) => {
          res.setHeader("content-type", this.metrics.registry.contentType);
          res.end(text);
        });
        return;
      }
      res.statusCode = 404;
      res.end();
    });
    await new Promise<void>((r) => this.server!.listen(this.o.port ?? 8080, this.o.host ?? "127.0.0.1", r));
    const addr = this.server.address();
    this.port = typeof addr === "object" && addr ? addr.port : 0;
  }

  /** Graceful shutdown: stop taking work, finish in-flight reconciles, release the lease, close. */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    this.leading = false;
    await this.queue?.stop();
    await this.elector?.stop();
    await this.webhook?.stop();
    for (const c of Object.values(this.caches ?? {})) c.stop();
    await this.progress?.close();
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
    this.server?.closeAllConnections?.();
    this.client?.close();
  }
}
