/**
 * The trainer pod's entry logic (`rft trainer`): reads the resolved job config from the ConfigMap mount,
 * grades through the grader sidecar on localhost, checkpoints to the checkpoint volume (resuming from it),
 * publishes progress on core NATS `rft.jobs.<ns>.<name>.progress` and obeys `rft.jobs.<ns>.<name>.control`
 * (pause / resume / cancel). SIGTERM pauses: the current step finishes, a checkpoint is written, exit 0.
 * Needs no Kubernetes API rights. With RFT_WORLD_SIZE > 1 (spec.replicas) this pod is one data-parallel rank
 * (trainer/collective: RFT_RANK, RFT_PEERS); rank 0 alone reports progress, and its pause or cancel holds for
 * every rank. Exit codes: 0 finished or paused, 1 failed, 2 a configuration error (never worth a retry).
 *
 * Ledger: with `RFT_LEDGER_NATS_URL` (set by the operator when the ledger service runs: `--ledger-nats`, Helm
 * `ledger.enabled`) rank 0 publishes the signed ledger events to JetStream (NatsPublisher), spooled first to
 * `<checkpoint dir>/ledger/spool.jsonl` so that nothing is lost across NATS outages or restarts; without it the
 * events go to `<checkpoint dir>/ledger/events.jsonl`. Either way a restarted pod continues the chain from its
 * last durable event (job.resumed).
 *
 * Metrics: with `RFT_METRICS_PORT` (the operator sets 9400, the container port named `metrics` that the
 * chart's PodMonitor scrapes) rank 0 serves the trainer's Prometheus metrics (trainer/rl/prom.ts: rewards,
 * steps, grader errors, step timings; label `job` = the FineTuneJob's name) on `/metrics`, all interfaces.
 *
 * `RFT_MIN_STEP_MS` (optional, from spec.trainer.env) paces training: each step takes at least that long in
 * wall time. For demos and lifecycle tests that must act mid-run whatever the machine's speed.
 */
import { join } from "node:path";
import { connect, type NatsConnection } from "nats";
import { natsAuthOptions, natsTlsOptions } from "../../proto/nats-auth.js";
import { NatsPublisher } from "../../ledger/client.js";
import { type ProgressMessage, progressSubject } from "../../proto/finetunejob-status.js";
import { createLogger } from "../../proto/log.js";
import type { CheckpointInfo } from "../checkpoint/retention.js";
import { retained } from "../checkpoint/retention.js";
import { TrainerMetrics } from "../rl/prom.js";
import type { RftControl } from "../rl/loop.js";
import { loadManifest } from "./manifest.js";
import { type RankEnv, rankEnv } from "../collective/env.js";
import { runJob } from "./run-job.js";
import { subscribeControl } from "./control.js";

const log = createLogger("trainer-pod");

export interface TrainerPodOptions {
  configFile: string;
  env: NodeJS.ProcessEnv;
  /** Install SIGTERM/SIGINT handlers (the CLI does; tests calling in process may not). */
  signals?: boolean;
}

export class TrainerPodError extends Error {}

export interface TrainerPodResult {
  status: string;
  exitCode: number;
}

export async function runTrainerPod(o: TrainerPodOptions): Promise<TrainerPodResult> {
  const env = o.env;
  let ranks: RankEnv | null;
  try {
    ranks = rankEnv(env);
  } catch (e) {
    throw new TrainerPodError(e instanceof Error ? e.message : String(e));
  }
  const rank = ranks?.rank ?? 0;
  const manifest = loadManifest(o.configFile);
  const ns = env.RFT_JOB_NAMESPACE ?? manifest.job.metadata.namespace ?? "default";
  const name = env.RFT_JOB_NAME ?? manifest.job.metadata.name;
  const attempt = env.RFT_ATTEMPT !== undefined ? Number(env.RFT_ATTEMPT) : undefined;
  const outDir = env.RFT_CHECKPOINT_DIR ?? join("/var/rft/checkpoints", name);
  const control: RftControl = { pause: false, cancel: false };
  const minStepMs = Number(env.RFT_MIN_STEP_MS ?? 0);
  if (!Number.isFinite(minStepMs) || minStepMs < 0 || minStepMs > 600_000)
    throw new TrainerPodError(
      `RFT_MIN_STEP_MS must be a number of milliseconds in [0, 600000], got "${env.RFT_MIN_STEP_MS}"`,
    );
  let stepStarted = Date.now();
  /** Holds the step until minStepMs have passed since the previous one ended (hooks are synchronous). */
  const pace = () => {
    const wait = stepStarted + minStepMs - Date.now();
    if (wait > 0) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, wait);
    stepStarted = Date.now();
  };

  // The job's NATS user (minted by the operator into the job's Secret): its own progress, control and ledger
  // subjects only.
  const natsAuth = {
    ...natsAuthOptions(env.RFT_NATS_CREDS || undefined),
    ...natsTlsOptions(env.RFT_NATS_CA_FILE || undefined),
  };
  let nc: NatsConnection | undefined;
  if (env.RFT_NATS_URL) {
    try {
      nc = await connect({
        servers: env.RFT_NATS_URL,
        name: `trainer-${ns}-${name}-${rank}`,
        maxReconnectAttempts: -1,
        ...natsAuth,
      });
    } catch (e) {
      log.warn({ err: String(e), url: env.RFT_NATS_URL }, "NATS unreachable: training without progress reports");
    }
  }
  // The ledger: rank 0 writes every rank's events (trainer/rl/loop.ts).
  let ledger: NatsPublisher | undefined;
  if (env.RFT_LEDGER_NATS_URL && rank === 0) {
    ledger = await NatsPublisher.connect({
      servers: env.RFT_LEDGER_NATS_URL,
      spoolPath: join(outDir, "ledger", "spool.jsonl"),
      name: `trainer-ledger-${ns}-${name}`,
      ...(env.RFT_NATS_CREDS || env.RFT_NATS_CA_FILE ? { auth: natsAuth } : {}),
    });
  }
  const flushLedger = async () => {
    if (!ledger) return;
    const timeoutMs = 60_000;
    let timer: NodeJS.Timeout | undefined;
    const done = await Promise.race([
      ledger.flush().then(() => true),
      new Promise<boolean>((r) => (timer = setTimeout(() => r(false), timeoutMs))),
    ]);
    clearTimeout(timer);
    if (!done)
      log.error(
        { backlog: ledger.backlog, spool: join(outDir, "ledger", "spool.jsonl") },
        "ledger events not acknowledged by JetStream; they stay spooled for the next trainer start",
      );
    await ledger.close().catch(() => {});
  };

  let metrics: TrainerMetrics | undefined;
  let metricsServer: import("node:http").Server | undefined;
  if (env.RFT_METRICS_PORT && rank === 0) {
    const port = Number(env.RFT_METRICS_PORT);
    if (!Number.isInteger(port) || port < 1 || port > 65535)
      throw new TrainerPodError(`RFT_METRICS_PORT must be a port number, got "${env.RFT_METRICS_PORT}"`);
    metrics = new TrainerMetrics(name);
    metricsServer = await metrics.serve(port, "0.0.0.0");
  }

  if (nc)
    subscribeControl(nc, { namespace: ns, name }, control, log, (reason) =>
      metrics?.controlDropped.inc({ job: name, reason }),
    );

  const checkpoints: CheckpointInfo[] = [];
  let last: Omit<ProgressMessage, "status" | "time" | "checkpoints"> = {
    step: 0,
    totalSteps: 0,
    trainRewardMean: null,
    validRewardMean: null,
    rank,
    attempt: attempt ?? 0,
  };
  const publish = (status: ProgressMessage["status"], extra: Partial<ProgressMessage> = {}) => {
    if (!nc || rank !== 0) return;
    const keep = retained(checkpoints);
    const msg: ProgressMessage = {
      ...last,
      status,
      checkpoints: checkpoints
        .filter((c) => keep.has(c.name))
        .map((c) => ({
          name: c.name,
          step: c.step,
          validRewardMean: c.validRewardMean,
          path: join(outDir, "checkpoints", c.name),
        })),
      time: new Date().toISOString().replace(/\.\d{3}Z$/, "Z"),
      ...extra,
    };
    nc.publish(progressSubject(ns, name), new TextEncoder().encode(JSON.stringify(msg)));
  };

  const onSignal = () => {
    log.info("SIGTERM: finishing the current step, checkpointing, pausing");
    control.pause = true;
  };
  if (o.signals !== false) {
    process.on("SIGTERM", onSignal);
    process.on("SIGINT", onSignal);
  }
  publish("running");
  try {
    const result = await runJob({
      manifest,
      outDir,
      graderAddr: env.RFT_GRADER_ADDR,
      control,
      ranks,
      jobRef: `${ns}/${name}`,
      ...(ledger ? { ledgerSink: ledger } : {}),
      hooks: {
        onStep: (m) => {
          metrics?.observeStep(m, m.data.total_steps);
          const valid = (m.data.scores as { valid_reward_mean?: number }).valid_reward_mean;
          last = {
            ...last,
            step: m.data.step,
            totalSteps: m.data.total_steps,
            trainRewardMean: m.data.scores.train_reward_mean,
            validRewardMean: valid ?? last.validRewardMean,
          };
          publish("running");
          if (minStepMs > 0) pace();
        },
        onCheckpoint: (c) => {
          metrics?.checkpoints.inc({ job: name });
          const i = checkpoints.findIndex((x) => x.name === c.name);
          if (i >= 0) checkpoints[i] = c;
          else checkpoints.push(c);
          if (c.validRewardMean !== null) last = { ...last, validRewardMean: c.validRewardMean };
          publish("running");
        },
        onSftStep: (e, total) => {
          last = { ...last, step: e.step, totalSteps: total };
          publish("running");
        },
      },
    });
    if (result.method === "supervised") {
      publish("succeeded", { fineTunedModel: result.modelDir });
      return { status: "succeeded", exitCode: 0 };
    }
    for (const c of result.checkpoints) if (!checkpoints.some((x) => x.name === c.name)) checkpoints.push(c);
    last = { ...last, step: result.step, totalSteps: result.totalSteps };
    publish(result.status, {
      ...(result.modelDir ? { fineTunedModel: result.modelDir } : {}),
      ...(result.error ? { error: result.error.slice(0, 1000) } : {}),
    });
    log.info({ status: result.status, step: result.step }, "trainer finished");
    return { status: result.status, exitCode: result.status === "failed" ? 1 : 0 };
  } catch (e) {
    publish("failed", { error: String(e instanceof Error ? e.message : e).slice(0, 1000) });
    throw e;
  } finally {
    process.off("SIGTERM", onSignal);
    process.off("SIGINT", onSignal);
    await flushLedger();
    await nc?.drain().catch(() => {});
    metricsServer?.close();
  }
}
