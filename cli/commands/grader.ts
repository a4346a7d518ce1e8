/** `rft grader`: run the grader service (the trainer's sidecar; also the OpenAI-compatible grader API). */
import { readFileSync } from "node:fs";
import type { Command } from "commander";
import { EndpointConfigError, endpointFromEnv, judgeEndpoints } from "../../grader-sidecar/src/model-client.js";
import { startGraderService } from "../../grader-sidecar/src/server.js";

const int = (v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new Error(`expected a non-negative integer, got "${v}"`);
  return n;
};

export function register(program: Command) {
  program
    .command("grader")
    .description("run the grader service: gRPC GraderService + OpenAI-compatible HTTP /v1/fine_tuning/alpha/graders/*")
    .option(
      "--host <host>",
      "address of the gRPC and HTTP ports (default 127.0.0.1; any other address is an explicit choice: they carry no credentials unless --api-key-file)",
      process.env.RFT_GRADER_HOST ?? "127.0.0.1",
    )
    .option("--grpc-port <port>", "gRPC port", int, Number(process.env.RFT_GRADER_GRPC_PORT ?? 50051))
    .option(
      "--http-port <port>",
      "HTTP port (API, /metrics, /healthz)",
      int,
      Number(process.env.RFT_GRADER_HTTP_PORT ?? 8081),
    )
    .option(
      "--monitor-port <port>",
      "also serve GET /healthz and /metrics (only) on this port (env RFT_GRADER_MONITOR_PORT; default: off)",
      int,
      process.env.RFT_GRADER_MONITOR_PORT !== undefined ? Number(process.env.RFT_GRADER_MONITOR_PORT) : undefined,
    )
    .option(
      "--monitor-host <host>",
      "address of the monitoring port (default: --host; in a trainer pod 0.0.0.0, for the kubelet's probe and Prometheus)",
      process.env.RFT_GRADER_MONITOR_HOST,
    )
    .option(
      "--concurrency <n>",
      "samples graded at once per GradeBatch stream",
      int,
      Number(process.env.RFT_GRADER_CONCURRENCY ?? 64),
    )
    .option(
      "--max-batch-items <n>",
      "samples accepted in one GradeBatch message (more: RESOURCE_EXHAUSTED)",
      int,
      Number(process.env.RFT_GRADER_MAX_BATCH_ITEMS ?? 4096),
    )
    .option(
      "--metrics-max-grader-names <n>",
      'distinct grader_name label values in /metrics (later names are "other")',
      int,
      Number(process.env.RFT_GRADER_METRICS_MAX_GRADER_NAMES ?? 32),
    )
    .option(
      "--python-workers <n>",
      "warm python grader workers",
      int,
      Number(process.env.RFT_GRADER_PYTHON_WORKERS ?? 2),
    )
    .option(
      "--python-timeout-ms <ms>",
      "time limit of one python grade",
      int,
      Number(process.env.RFT_GRADER_PYTHON_TIMEOUT_MS ?? 120_000),
    )
    .option(
      "--python-memory-mb <mb>",
      "memory limit of a python worker",
      int,
      Number(process.env.RFT_GRADER_PYTHON_MEMORY_MB ?? 2048),
    )
    .option(
      "--model-base-url <url>",
      "OpenAI-compatible endpoint for score_model/label_model (env RFT_GRADER_BASE_URL)",
    )
    .option("--model-api-key-file <file>", "file holding that endpoint's API key (env RFT_GRADER_API_KEY_FILE)")
    // Judge endpoints by model: env RFT_GRADER_ENDPOINTS, spec.graderEndpoints as JSON (the operator sets it,
    // with each Secret's key in the env var its apiKey.env names).
    .option("--embeddings-base-url <url>", "endpoint for text_similarity cosine (env RFT_GRADER_EMBEDDINGS_BASE_URL)")
    .option("--embeddings-model <model>", "embeddings model for cosine", "text-embedding-3-large")
    .option("--api-key-file <file>", "require this bearer token on the HTTP API (env RFT_GRADER_SERVER_API_KEY_FILE)")
    .action(async (o) => {
      const keyFile = o.apiKeyFile ?? process.env.RFT_GRADER_SERVER_API_KEY_FILE;
      const embeddings = endpointFromEnv("RFT_GRADER_EMBEDDINGS", { baseUrl: o.embeddingsBaseUrl });
      let judges;
      try {
        judges = judgeEndpoints({
          fallback: endpointFromEnv("RFT_GRADER", { baseUrl: o.modelBaseUrl, apiKeyFile: o.modelApiKeyFile }),
        });
      } catch (err) {
        if (!(err instanceof EndpointConfigError)) throw err;
        process.stderr.write(`rft grader: ${err.message}\n`);
        process.exit(2);
      }
      const svc = await startGraderService({
        host: o.host,
        grpcPort: o.grpcPort,
        httpPort: o.httpPort,
        ...(o.monitorPort !== undefined ? { monitorPort: o.monitorPort } : {}),
        ...(o.monitorHost ? { monitorHost: o.monitorHost } : {}),
        concurrency: o.concurrency,
        maxBatchItems: o.maxBatchItems,
        maxGraderNames: o.metricsMaxGraderNames,
        apiKey: keyFile ? readFileSync(keyFile, "utf8").trim() : undefined,
        engine: {
          models: judges,
          embeddings: embeddings && { endpoint: embeddings, model: o.embeddingsModel },
          python: { size: o.pythonWorkers, timeoutMs: o.pythonTimeoutMs, memoryBytes: o.pythonMemoryMb * 1024 * 1024 },
          gradeTimeoutMs: o.pythonTimeoutMs + 30_000,
        },
      });
      const stop = async () => {
        await svc.close();
        process.exit(0);
      };
      process.once("SIGTERM", stop);
      process.once("SIGINT", stop);
    });
}
