/**
 * `rft api`: the OpenAI-compatible Files / Fine-tuning / Evals / Models API on this machine (api/README.md).
 * `rft api convert JOB.json`: OpenAI's job request JSON → a FineTuneJob manifest (for `kubectl apply`).
 */
import { readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import type { Command } from "commander";
import { stringify } from "yaml";
import { loadJobFile } from "../../api/convert.js";
import { ApiKeys } from "../../api/http.js";
import { ModelCatalog } from "../../api/models.js";
import { loadClusterConfig } from "../../api/cluster-config.js";
import { type Endpoints, loadEndpoints } from "../../api/endpoints.js";
import { type ApiServerOptions, startApiServer } from "../../api/server.js";
import { KubeClient } from "../../operator/client.js";
import { createLogger } from "../../proto/log.js";
import { ManifestError } from "../../trainer/job/manifest.js";

const collect = (v: string, prev: string[]) => [...prev, v];

export function register(program: Command) {
  const api = program
    .command("api")
    .description(
      "serve OpenAI's Files, Fine-tuning jobs, Evals and Models API (jobs run here, or as FineTuneJobs with --cluster)",
    )
    .option("--data <dir>", "where files, jobs and evals are kept (durable)", "rft-api-data")
    .option("--host <addr>", "address to listen on", "127.0.0.1")
    .option("--port <n>", "TCP port (0 = any free port)", "8080")
    .option(
      "--api-key-file <file>",
      "accepted API keys, one 'KEY [PROJECT]' per line (else RFT_API_KEYS, comma-separated)",
    )
    .option("--model <name=dir>", "a base model clients name as NAME (repeatable)", collect, [])
    .option("--models <dir>", "every model directory under DIR, named by its directory name")
    .option(
      "--endpoints <file>",
      "external OpenAI-compatible endpoints whose models are listed, chatted with and sampled by evals (api/endpoints.ts)",
    )
    .option("--org <name>", "organization_id and the org part of fine-tuned model names", "rft")
    .option("--backend <name>", "tfjs backend of the training and serving processes (default: auto)")
    .option("--local", "run jobs on this machine, one at a time, in a child process (the default)")
    .option(
      "--cluster <config>",
      "run each job as a FineTuneJob in the namespace of the key's project (config: projects, models, datasetBaseUrl)",
    )
    .option("--kubeconfig <file>", "cluster mode: the API server's credentials (default: in-cluster, then KUBECONFIG)")
    .option(
      "--dataset-key-file <file>",
      "cluster mode: the key (≥ 32 bytes) trainer pods' dataset tokens derive from (else RFT_API_DATASET_KEY)",
    )
    .option(
      "--serve-idle-minutes <n>",
      "cluster mode: scale a fine-tuned model's server (spec.serve) to zero after N minutes without a chat request (0: never)",
      "15",
    )
    .action(async (o) => {
      const log = createLogger("api");
      let keys: ApiKeys;
      const models = new ModelCatalog();
      let cluster: ApiServerOptions["cluster"];
      let endpoints: Endpoints | undefined;
      try {
        if (o.cluster && o.local) throw new Error("--local and --cluster are exclusive");
        if (o.cluster) cluster = await clusterOptions(o);
        keys = o.apiKeyFile
          ? ApiKeys.fromFile(o.apiKeyFile)
          : new ApiKeys((process.env.RFT_API_KEYS ?? "").split(/[,\n]/));
        for (const m of o.model as string[]) models.addSpec(m);
        if (o.models) models.addDirectory(o.models);
        if (o.endpoints)
          endpoints = loadEndpoints(
            o.endpoints,
            process.env,
            cluster ? Object.keys(cluster.config.models) : models.names(),
          );
      } catch (e) {
        process.stderr.write(`rft api: ${(e as Error).message}\n`);
        process.exitCode = 2;
        return;
      }
      const port = Number(o.port);
      if (!Number.isInteger(port) || port < 0 || port > 65535) {
        process.stderr.write(`rft api: --port wants 0-65535, got ${o.port}\n`);
        process.exitCode = 2;
        return;
      }
      const s = await startApiServer({
        dataDir: resolve(o.data),
        keys,
        models,
        organization: o.org,
        host: o.host,
        port,
        backend: o.backend,
        logger: log,
        ...(cluster ? { cluster } : {}),
        ...(endpoints ? { endpoints } : {}),
      });
      const names = [
        ...(cluster ? Object.keys(cluster.config.models) : models.names()),
        ...(endpoints?.models().map((m) => m.id) ?? []),
      ];
      log.info({ url: s.url, models: names, mode: cluster ? "cluster" : "local" }, "serving");
      process.stdout.write(
        `rft api at ${s.url} (${cluster ? "cluster mode, " : ""}models: ${names.join(", ") || "none"})\n`,
      );
      let stopping = false;
      const stop = () => {
        if (stopping) return;
        stopping = true;
        process.stderr.write("rft api: stopping (a running job checkpoints and resumes at the next start)\n");
        void s.close().then(() => process.exit(0));
      };
      process.on("SIGINT", stop);
      process.on("SIGTERM", stop);
    });

  api
    .command("convert")
    .description("print the FineTuneJob manifest for OpenAI's job request JSON (paths relative to the file)")
    .argument("<job.json>", "OpenAI's fine-tuning job request (model, training_file, method, ...)")
    .action((file: string) => {
      try {
        const text = readFileSync(file, "utf8");
        JSON.parse(text);
      } catch (e) {
        process.stderr.write(`rft api convert: ${file}: ${(e as Error).message}\n`);
        process.exitCode = 2;
        return;
      }
      try {
        const m = loadJobFile(file);
        const job = structuredClone(m.job);
        // Paths relative to the manifest's folder, as `rft run` and the operator resolve them.
        const rel = (p: string) => {
          const base = dirname(resolve(file));
          return p.startsWith(`${base}/`) ? p.slice(base.length + 1) : p;
        };
        job.spec.model = rel(job.spec.model);
        job.spec.trainingFile = rel(job.spec.trainingFile);
        if (job.spec.validationFile) job.spec.validationFile = rel(job.spec.validationFile);
        process.stdout.write(stringify(job));
      } catch (e) {
        if (!(e instanceof ManifestError)) throw e;
        process.stderr.write(`rft api convert: invalid job request\n${e.message}\n`);
        process.exitCode = 2;
      }
    });
}

/** Cluster mode's options: the config, the dataset token key (≥ 32 bytes), the idle scale-down, the client. */
async function clusterOptions(o: {
  cluster: string;
  datasetKeyFile?: string;
  serveIdleMinutes: string;
  kubeconfig?: string;
}): Promise<NonNullable<ApiServerOptions["cluster"]>> {
  const config = loadClusterConfig(o.cluster);
  const raw = o.datasetKeyFile ? readFileSync(o.datasetKeyFile, "utf8") : (process.env.RFT_API_DATASET_KEY ?? "");
  const datasetKey = Buffer.from(raw.trim());
  if (datasetKey.length < 32)
    throw new Error(
      `cluster mode needs a dataset token key of at least 32 bytes (--dataset-key-file or RFT_API_DATASET_KEY); got ${datasetKey.length}`,
    );
  delete process.env.RFT_API_DATASET_KEY;
  const idle = Number(o.serveIdleMinutes);
  if (!Number.isFinite(idle) || idle < 0)
    throw new Error(`--serve-idle-minutes wants a number of minutes ≥ 0, got "${o.serveIdleMinutes}"`);
  return {
    client: await KubeClient.fromKubeconfig(o.kubeconfig),
    config,
    datasetKey,
    serveIdleMs: Math.round(idle * 60_000),
  };
}
