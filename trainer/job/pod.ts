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
 * Validation results: with `RFT_VALIDATION_URL` (`rft api --cluster` sets it) rank 0 sends each validation's
 * graded samples to the API, which records them as runs of the job's eval (./validation-upload.ts).
 *
 * `RFT_MIN_STEP_MS` (optional, from spec.trainer.env) paces training: each step takes at least that long in
 * wall time. For demos and lifecycle tests that must act mid-run whatever the machine's speed.
 */
import { readFileSync, renameSync, writeFileSync } from "node:fs";
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
import type { MetricsEvent } from "../rl/metrics.js";
import { loadManifest } from "./manifest.js";
import { type RankEnv, rankEnv } from "../collective/env.js";
import { runJob } from "./run-job.js";
import { subscribeControl } from "./control.js";
import { DatasetConfigError, fetchDataset, isDatasetUrl } from "./remote-dataset.js";
import { ValidationUploader } from "./validation-upload.js";
import {
  addSeconds,
  addStep,
  addTokens,
  parseRecords,
  recordCheckpoint,
  resumeBase,
  type Usage,
  type UsageRecords,
} from "./usage.js";

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

/**
 * Training files given as URLs (`rft api --cluster`) → local copies under `<outDir>/datasets/` (fetched once
 * with RFT_DATASET_TOKEN, digest-checked); the manifest's paths then name the copies.
 */
async function localDatasets(manifest: ReturnType<typeof loadManifest>, outDir: string, env: NodeJS.ProcessEnv) {
  const spec = manifest.job.spec;
  const o = { token: env.RFT_DATASET_TOKEN || undefined };
  try {
    if (isDatasetUrl(spec.trainingFile))
      manifest.paths.trainingFile = await fetchDataset(spec.trainingFile, join(outDir, "datasets"), "train.jsonl", o);
    if (isDatasetUrl(spec.validationFile))
      manifest.paths.validationFile = await fetchDataset(
        spec.validationFile,
        join(outDir, "datasets"),
        "valid.jsonl",
        o,
      );
  } catch (e) {
    if (e instanceof DatasetConfigError) throw new TrainerPodError(e.message);
    throw e;
  }
}

/** What the pod's environment and config mount say: its rank, the job, where its checkpoints go, the pacing. */
function podSettings(o: TrainerPodOptions) {
  const env = o.env;
  let ranks: RankEnv | null;
  try {
    ranks = rankEnv(env);
  } catch (e) {
    throw new TrainerPodError(e instanceof Error ? e.message : String(e));
  }
  const manifest = loadManifest(o.configFile);
  const name = env.RFT_JOB_NAME ?? manifest.job.metadata.name;
  const minStepMs = Number(env.RFT_MIN_STEP_MS ?? 0);
  if (!Number.isFinite(minStepMs) || minStepMs < 0 || minStepMs > 600_000)
    throw new TrainerPodError(
      `RFT_MIN_STEP_MS must be a number of milliseconds in [0, 600000], got "${env.RFT_MIN_STEP_MS}"`,
    );
  return {
    ranks,
    rank: ranks?.rank ?? 0,
    manifest,
    ns: env.RFT_JOB_NAMESPACE ?? manifest.job.metadata.namespace ?? "default",
    name,
    attempt: env.RFT_ATTEMPT !== undefined ? Number(env.RFT_ATTEMPT) : undefined,
    outDir: env.RFT_CHECKPOINT_DIR ?? join("/var/rft/checkpoints", name),
    minStepMs,
  };
}

type PodSettings = ReturnType<typeof podSettings>;

/** Holds each step until minStepMs have passed since the previous one ended (hooks are synchronous). */
function pacer(minStepMs: number): () => void {
  let stepStarted = Date.now();
  return () => {
    if (minStepMs <= 0) return;
    const wait = stepStarted + minStepMs - Date.now();
    if (wait > 0) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, wait);
    stepStarted = Date.now();
  };
}

/** The job's NATS user (minted by the operator into the job's Secret): its own progress, control and ledger subjects. */
function jobNatsAuth(env: NodeJS.ProcessEnv) {
  return { ...natsAuthOptions(env.RFT_NATS_CREDS || undefined), ...natsTlsOptions(env.RFT_NATS_CA_FILE || undefined) };
}

/** Core NATS for progress and control (RFT_NATS_URL); unreachable: training goes on without reports. */
async function connectProgress(env: NodeJS.ProcessEnv, s: PodSettings): Promise<NatsConnection | undefined> {
  if (!env.RFT_NATS_URL) return undefined;
  try {
    return await connect({
      servers: env.RFT_NATS_URL,
      name: `trainer-${s.ns}-${s.name}-${s.rank}`,
      maxReconnectAttempts: -1,
      ...jobNatsAuth(env),
    });
  } catch (e) {
    log.warn({ err: String(e), url: env.RFT_NATS_URL }, "NATS unreachable: training without progress reports");
    return undefined;
  }
}

/** The ledger on JetStream (RFT_LEDGER_NATS_URL): rank 0 writes every rank's events (trainer/rl/loop.ts). */
async function connectLedger(env: NodeJS.ProcessEnv, s: PodSettings): Promise<NatsPublisher | undefined> {
  if (!env.RFT_LEDGER_NATS_URL || s.rank !== 0) return undefined;
  return NatsPublisher.connect({
    servers: env.RFT_LEDGER_NATS_URL,
    spoolPath: join(s.outDir, "ledger", "spool.jsonl"),
    name: `trainer-ledger-${s.ns}-${s.name}`,
    ...(env.RFT_NATS_CREDS || env.RFT_NATS_CA_FILE ? { auth: jobNatsAuth(env) } : {}),
  });
}

/** Waits (up to a minute) for JetStream to acknowledge the spooled events, then closes the publisher. */
async function flushLedger(ledger: NatsPublisher | undefined, outDir: string): Promise<void> {
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
}

/** Rank 0's Prometheus metrics on RFT_METRICS_PORT (all interfaces). */
async function startMetrics(env: NodeJS.ProcessEnv, s: PodSettings) {
  if (!env.RFT_METRICS_PORT || s.rank !== 0) return { metrics: undefined, server: undefined };
  const port = Number(env.RFT_METRICS_PORT);
  if (!Number.isInteger(port) || port < 1 || port > 65535)
    throw new TrainerPodError(`RFT_METRICS_PORT must be a port number, got "${env.RFT_METRICS_PORT}"`);
  const metrics = new TrainerMetrics(s.name);
  return { metrics, server: await metrics.serve(port, "0.0.0.0") };
}

/**
 * Rank 0's usage (trainer/job/usage.ts): the totals counted since the run's resume point, recorded with each
 * checkpoint in `<checkpoint dir>/usage.json`; `captured` is what the checkpoints kept (what is reported).
 */
class UsageMeter {
  private records: UsageRecords = {};
  private live?: Usage;
  private kept?: Usage;
  private mark = Date.now();
  private readonly file: string;

  constructor(outDir: string) {
    this.file = join(outDir, "usage.json");
    try {
      this.records = parseRecords(JSON.parse(readFileSync(this.file, "utf8")));
    } catch {
      this.records = {}; // none yet (a fresh run), or unreadable: counting restarts from zero
    }
  }

  /** The run resumed at `step` (known at its first step, checkpoint or end): the totals start from its record. */
  private begin(step: number): Usage {
    if (!this.live) {
      this.live = resumeBase(this.records, step);
      this.kept = this.live;
    }
    this.live = addSeconds(this.live, (Date.now() - this.mark) / 1000);
    this.mark = Date.now();
    return this.live;
  }

  step(step: number, data: unknown): void {
    this.live = addStep(this.begin(step - 1), data);
  }

  sftStep(step: number, tokens: number): void {
    this.live = addTokens(this.begin(step - 1), tokens);
  }

  checkpoint(name: string, step: number): void {
    const u = this.begin(step);
    this.kept = u;
    this.records = recordCheckpoint(this.records, name, step, u);
    try {
      writeFileSync(`${this.file}.tmp`, JSON.stringify(this.records));
      renameSync(`${this.file}.tmp`, this.file);
    } catch (e) {
      log.warn({ err: String(e), file: this.file }, "cannot record usage with the checkpoint");
    }
  }

  /** A succeeded run: everything up to now is kept. */
  finish(step: number): Usage {
    this.kept = this.begin(step);
    return this.kept;
  }

  get captured(): Usage | undefined {
    return this.kept;
  }
}

const iso = (unixSeconds: number) => new Date(unixSeconds * 1000).toISOString().replace(/\.\d{3}Z$/, "Z");

/** Rank 0's progress messages on core NATS: the last step's figures and the retained checkpoints. */
class ProgressReporter {
  private readonly checkpoints: CheckpointInfo[] = [];
  private last: Omit<ProgressMessage, "status" | "time" | "checkpoints">;
  readonly usage: UsageMeter;

  constructor(
    private readonly nc: NatsConnection | undefined,
    private readonly s: PodSettings,
  ) {
    this.usage = new UsageMeter(s.outDir);
    this.last = {
      step: 0,
      totalSteps: 0,
      trainRewardMean: null,
      validRewardMean: null,
      rank: s.rank,
      attempt: s.attempt ?? 0,
    };
  }

  publish(status: ProgressMessage["status"], extra: Partial<ProgressMessage> = {}) {
    if (!this.nc || this.s.rank !== 0) return;
    const keep = retained(this.checkpoints);
    const msg: ProgressMessage = {
      ...this.last,
      status,
      checkpoints: this.checkpoints
        .filter((c) => keep.has(c.name))
        .map((c) => ({
          name: c.name,
          step: c.step,
          validRewardMean: c.validRewardMean,
          path: join(this.s.outDir, "checkpoints", c.name),
          ...(Number.isFinite(c.createdAt) ? { createdAt: iso(c.createdAt) } : {}),
        })),
      ...(this.usage.captured ? { usage: this.usage.captured } : {}),
      time: new Date().toISOString().replace(/\.\d{3}Z$/, "Z"),
      ...extra,
    };
    this.nc.publish(progressSubject(this.s.ns, this.s.name), new TextEncoder().encode(JSON.stringify(msg)));
  }

  step(m: MetricsEvent) {
    if (this.s.rank === 0) this.usage.step(m.data.step, m.data);
    const valid = (m.data.scores as { valid_reward_mean?: number }).valid_reward_mean;
    this.last = {
      ...this.last,
      step: m.data.step,
      totalSteps: m.data.total_steps,
      trainRewardMean: m.data.scores.train_reward_mean,
      validRewardMean: valid ?? this.last.validRewardMean,
    };
    this.publish("running");
  }

  checkpoint(c: CheckpointInfo) {
    if (this.s.rank === 0) this.usage.checkpoint(c.name, c.step);
    const i = this.checkpoints.findIndex((x) => x.name === c.name);
    if (i >= 0) this.checkpoints[i] = c;
    else this.checkpoints.push(c);
    if (c.validRewardMean !== null) this.last = { ...this.last, validRewardMean: c.validRewardMean };
    this.publish("running");
  }

  sftStep(step: number, total: number, tokens: number) {
    if (this.s.rank === 0) this.usage.sftStep(step, tokens);
    this.last = { ...this.last, step, totalSteps: total };
    this.publish("running");
  }

  /** The run's end: its checkpoints, last step and status (with the model or the error). */
  finished(r: {
    status: ProgressMessage["status"];
    step: number;
    totalSteps: number;
    checkpoints: CheckpointInfo[];
    modelDir?: string;
    error?: string;
  }) {
    for (const c of r.checkpoints) if (!this.checkpoints.some((x) => x.name === c.name)) this.checkpoints.push(c);
    this.last = { ...this.last, step: r.step, totalSteps: r.totalSteps };
    if (r.status === "succeeded" && this.s.rank === 0) this.usage.finish(r.step);
    this.publish(r.status, {
      ...(r.modelDir ? { fineTunedModel: r.modelDir } : {}),
      ...(r.error ? { error: r.error.slice(0, 1000) } : {}),
    });
  }
}

export async function runTrainerPod(o: TrainerPodOptions): Promise<TrainerPodResult> {
  const env = o.env;
  const s = podSettings(o);
  const { name } = s;
  const control: RftControl = { pause: false, cancel: false };
  const pace = pacer(s.minStepMs);
  const nc = await connectProgress(env, s);
  const ledger = await connectLedger(env, s);
  const { metrics, server: metricsServer } = await startMetrics(env, s);
  if (nc)
    subscribeControl(nc, { namespace: s.ns, name }, control, log, (reason) =>
      metrics?.controlDropped.inc({ job: name, reason }),
    );
  const progress = new ProgressReporter(nc, s);
  const uploads =
    env.RFT_VALIDATION_URL && s.rank === 0
      ? new ValidationUploader({
          url: env.RFT_VALIDATION_URL.replace(/\/+$/, ""),
          token: env.RFT_DATASET_TOKEN || undefined,
          dir: join(s.outDir, "validation"),
          log,
        })
      : undefined;
  const onSignal = () => {
    log.info("SIGTERM: finishing the current step, checkpointing, pausing");
    control.pause = true;
  };
  if (o.signals !== false) {
    process.on("SIGTERM", onSignal);
    process.on("SIGINT", onSignal);
  }
  progress.publish("running");
  try {
    await localDatasets(s.manifest, s.outDir, env);
    const result = await runJob({
      manifest: s.manifest,
      outDir: s.outDir,
      graderAddr: env.RFT_GRADER_ADDR,
      control,
      ranks: s.ranks,
      jobRef: `${s.ns}/${name}`,
      ...(ledger ? { ledgerSink: ledger } : {}),
      hooks: {
        onStep: (m) => {
          metrics?.observeStep(m, m.data.total_steps);
          progress.step(m);
          uploads?.sync(); // the step's validation file, if it had one, is written before its metrics event
          pace();
        },
        onCheckpoint: (c) => {
          metrics?.checkpoints.inc({ job: name });
          progress.checkpoint(c);
        },
        onSftStep: (e, total) => progress.sftStep(e.step, total, e.tokens),
      },
    });
    await uploads?.flush(); // before the final status: a client that sees "succeeded" finds every step's run
    if (result.method === "supervised") {
      if (s.rank === 0) progress.usage.finish(result.totalSteps);
      progress.publish("succeeded", { fineTunedModel: result.modelDir });
      return { status: "succeeded", exitCode: 0 };
    }
    progress.finished(result);
    log.info({ status: result.status, step: result.step }, "trainer finished");
    return { status: result.status, exitCode: result.status === "failed" ? 1 : 0 };
  } catch (e) {
    progress.publish("failed", { error: String(e instanceof Error ? e.message : e).slice(0, 1000) });
    throw e;
  } finally {
    process.off("SIGTERM", onSignal);
    process.off("SIGINT", onSignal);
    await flushLedger(ledger, s.outDir);
    await nc?.drain().catch(() => {});
    metricsServer?.close();
  }
}
