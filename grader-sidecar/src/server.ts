/**
 * Starts the grader service: gRPC (trainer sidecar) and HTTP (OpenAI-compatible API, metrics, health), both
 * on `host` (127.0.0.1 by default: the trainer reaches its sidecar over the pod's loopback), and optionally a
 * monitoring port (GET /healthz and /metrics only, nothing that grades) on `monitorHost`: in a trainer pod it
 * is the one port bound to the pod IP, for the kubelet's startup probe and Prometheus.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import * as grpc from "@grpc/grpc-js";
import { Gauge } from "prom-client";
import { createLogger, type Logger } from "../../proto/log.js";
import { GraderEngine, type GraderEngineOptions } from "./engine.js";
import { createGrpcServer, GRADER_SERVICE_NAME } from "./grpc.js";
import { createHttpServer } from "./http.js";
import { GraderMetrics } from "./metrics.js";

export interface GraderServiceOptions {
  host?: string; // default 127.0.0.1 (the sidecar shares the pod's network namespace with its trainer)
  grpcPort?: number; // 0 = any free port
  httpPort?: number;
  /** Monitoring port: GET /healthz and /metrics only (undefined: none; 0: any free port). */
  monitorPort?: number;
  /** Address of the monitoring port (default: host). */
  monitorHost?: string;
  concurrency?: number;
  /** gRPC: samples per GradeBatch message and largest message (defaults: GRPC_LIMITS in grpc.ts). */
  maxBatchItems?: number;
  maxMessageBytes?: number;
  /** Distinct grader_name label values in /metrics (default 32; later names are "other"). */
  maxGraderNames?: number;
  /** HTTP: largest request body (default 2 MiB). */
  maxBodyBytes?: number;
  apiKey?: string;
  engine?: GraderEngineOptions;
  logger?: Logger;
}

export interface GraderService {
  grpcPort: number;
  httpPort: number;
  /** The monitoring port (undefined when not served). */
  monitorPort?: number;
  engine: GraderEngine;
  metrics: GraderMetrics;
  close(): Promise<void>;
}

export async function startGraderService(opts: GraderServiceOptions = {}): Promise<GraderService> {
  const host = opts.host ?? "127.0.0.1";
  const logger = opts.logger ?? createLogger("grader");
  const metrics = new GraderMetrics({ maxGraderNames: opts.maxGraderNames });
  const engine = new GraderEngine({ ...opts.engine, onGraded: metrics.observe });

  const pool = (name: string, help: string, pick: (s: NonNullable<ReturnType<GraderEngine["stats"]>>) => number) =>
    new Gauge({
      name,
      help,
      registers: [metrics.registry],
      collect() {
        const s = engine.stats();
        this.set(s ? pick(s) : 0);
      },
    });
  pool("rft_grader_python_workers", "Warm python grader workers.", (s) => s.workers);
  pool("rft_grader_python_busy_workers", "Python grader workers running a grade now.", (s) => s.busy);
  pool("rft_grader_python_queued", "Python grades waiting for a worker.", (s) => s.queued);
  pool(
    "rft_grader_python_worker_restarts",
    "Python grader workers replaced since start (killed, hung or dead).",
    (s) => s.restarts,
  );

  const { server, health } = createGrpcServer({
    engine,
    logger,
    concurrency: opts.concurrency,
    maxBatchItems: opts.maxBatchItems,
    maxMessageBytes: opts.maxMessageBytes,
  });
  const grpcPort = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`${host}:${opts.grpcPort ?? 0}`, grpc.ServerCredentials.createInsecure(), (err, port) =>
      err ? reject(err) : resolve(port),
    ),
  );
  const http = createHttpServer({ engine, metrics, logger, apiKey: opts.apiKey, maxBodyBytes: opts.maxBodyBytes });
  await new Promise<void>((resolve, reject) => {
    http.once("error", reject);
    http.listen(opts.httpPort ?? 0, host, () => resolve());
  });
  const httpPort = (http.address() as AddressInfo).port;
  let monitor: Server | undefined;
  if (opts.monitorPort !== undefined) {
    const m = createServer((req, res) => {
      const path = (req.url ?? "/").split("?")[0];
      if (req.method === "GET" && path === "/healthz") {
        res.setHeader("content-type", "application/json");
        return void res.end('{"status":"ok"}');
      }
      if (req.method === "GET" && path === "/metrics") {
        void metrics.registry.metrics().then(
          (text) => {
            res.setHeader("content-type", metrics.registry.contentType);
            res.end(text);
          },
          () => {
            res.statusCode = 500;
            res.end();
          },
        );
        return;
      }
      res.statusCode = 404;
      res.setHeader("content-type", "text/plain");
      res.end("the monitoring port serves GET /healthz and /metrics only\n");
    });
    monitor = m;
    await new Promise<void>((resolve, reject) => {
      m.once("error", reject);
      m.listen(opts.monitorPort, opts.monitorHost ?? host, () => resolve());
    });
  }
  const monitorPort = monitor ? (monitor.address() as AddressInfo).port : undefined;
  logger.info(
    { grpcPort, httpPort, host, ...(monitor ? { monitorPort, monitorHost: opts.monitorHost ?? host } : {}) },
    "grader service listening",
  );

  return {
    grpcPort,
    httpPort,
    ...(monitorPort !== undefined ? { monitorPort } : {}),
    engine,
    metrics,
    async close() {
      health.setStatus(GRADER_SERVICE_NAME, "NOT_SERVING");
      await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
      await new Promise<void>((resolve) => http.close(() => resolve()));
      http.closeAllConnections();
      if (monitor) {
        const m = monitor;
        await new Promise<void>((resolve) => m.close(() => resolve()));
        m.closeAllConnections();
      }
      await engine.close();
    },
  };
}
