/**
 * `rft run MANIFEST`: run a FineTuneJob (SFT or RFT) on this machine, no cluster needed.
 * `--replicas N` runs N trainer ranks as N local processes (data parallelism over 127.0.0.1): this process
 * spawns them with RFT_RANK / RFT_WORLD_SIZE / RFT_PEERS and waits; rank 0 prints progress and the summary.
 */
import { spawn } from "node:child_process";
import { createServer } from "node:net";
import { resolve } from "node:path";
import asciichart from "asciichart";
import cliProgress from "cli-progress";
import type { Command } from "commander";
import { DatasetError } from "../../trainer/data/dataset.js";
import { ManifestError } from "../../trainer/job/manifest.js";
import { loadJobFile } from "../../api/convert.js";
import { type RunJobResult, runJob } from "../../trainer/job/run-job.js";
import { BackendError, parseBackendName } from "../../trainer/model/backend.js";
import { BackendMemoryError } from "../../trainer/model/backend-failure.js";
import { ModelDirError } from "../../trainer/model/hf-io.js";
import { AdapterDirError, LoraConfigError } from "../../trainer/model/lora.js";
import type { RftControl } from "../../trainer/rl/loop.js";
import { TrainerMetrics } from "../../trainer/rl/prom.js";
import { EndpointConfigError } from "../../grader-sidecar/src/model-client.js";
import { CollectiveError } from "../../trainer/collective/collective.js";
import { CheckpointError, OutputWriteError } from "../../trainer/checkpoint/store.js";
import { GovernanceError } from "../../trainer/governance/ledger.js";
import { LedgerWriteError } from "../../ledger/publisher.js";
import { rankEnv } from "../../trainer/collective/env.js";
import { newCollectiveSecret } from "../../trainer/collective/auth.js";

async function freeLoopbackPorts(n: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: n },
      () =>
        new Promise<import("node:net").Server>((res, rej) => {
          const s = createServer();
          s.once("error", rej);
          s.listen(0, "127.0.0.1", () => res(s));
        }),
    ),
  );
  const ports = servers.map((s) => (s.address() as import("node:net").AddressInfo).port);
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}

/**
 * Runs this same command as N rank processes and waits for them. Ctrl-C / SIGTERM reach rank 0 only (the
 * ranks are in their own process group), and rank 0's pause or cancel holds for all. Exit status: rank 0's,
 * or the first failing rank's.
 */
async function runReplicas(n: number): Promise<number> {
  const peers = (await freeLoopbackPorts(n)).map((p) => `127.0.0.1:${p}`);
  // The ranks authenticate each other with a secret of this run (in the environment, never on a command line).
  const secret = newCollectiveSecret();
  const kids = peers.map((_, rank) =>
    spawn(process.execPath, [...process.execArgv, ...process.argv.slice(1)], {
      env: {
        ...process.env,
        RFT_RANK: String(rank),
        RFT_WORLD_SIZE: String(n),
        RFT_PEERS: peers.join(","),
        RFT_COLLECTIVE_SECRET: secret,
      },
      stdio: rank === 0 ? "inherit" : ["ignore", "ignore", "pipe"],
      detached: true,
    }),
  );
  kids.forEach((k, rank) =>
    k.stderr?.on("data", (d: Buffer) =>
      process.stderr.write(
        d
          .toString()
          .split("\n")
          .filter((l) => l.trim())
          .map((l) => `[rank ${rank}] ${l}\n`)
          .join(""),
      ),
    ),
  );
  const forward = (sig: NodeJS.Signals) => kids[0]!.kill(sig);
  process.on("SIGINT", forward);
  process.on("SIGTERM", forward);
  const killAll = () => kids.forEach((k) => k.exitCode === null && k.kill("SIGKILL"));
  process.once("exit", killAll);
  const codes = await Promise.all(
    kids.map((k) => new Promise<number>((r) => k.once("exit", (code, sig) => r(code ?? (sig ? 128 + 9 : 1))))),
  );
  process.off("SIGINT", forward);
  process.off("SIGTERM", forward);
  const bad = codes.findIndex((c) => c !== 0);
  if (bad >= 0 && codes[0] === 0) process.stderr.write(`rft run: rank ${bad} exited with status ${codes[bad]}\n`);
  return codes[0] !== 0 ? codes[0]! : bad >= 0 ? codes[bad]! : 0;
}

const fmt = (x: number | null | undefined) => (x === null || x === undefined ? "  -  " : x.toFixed(3));

/**
 * asciichart.plot on values rounded to 1e-6: a series whose range is float noise (0.47460937499999970 and
 * …98) makes asciichart's row count overflow float precision and loop forever, so a run that stopped on such
 * a history never printed its summary (nor exited).
 */
function plot(values: number[], o: { height: number }): string {
  return asciichart.plot(
    values.map((v) => Math.round(v * 1e6) / 1e6),
    o,
  );
}

function summary(r: RunJobResult, outDir: string): string {
  const lines: string[] = [];
  if (r.method === "supervised") {
    const last = r.steps.at(-1);
    lines.push(`SFT ${r.status}: ${r.steps.length} steps, final training loss ${fmt(last?.trainLoss)}`);
    const losses = r.steps.map((s) => s.trainLoss);
    if (losses.length > 1) lines.push("training loss:", plot(downsample(losses, 60), { height: 8 }));
    lines.push(`model:  ${r.modelDir}`);
  } else {
    lines.push(`RFT ${r.status} at step ${r.step}/${r.totalSteps}${r.error ? `: ${r.error}` : ""}`);
    const valid = r.history.filter((h) => h.validRewardMean !== null);
    const train = r.history.flatMap((h) => (h.trainRewardMean === null ? [] : [h.trainRewardMean])); // step 0 is validation only
    if (train.length > 1) lines.push("train reward per step:", plot(downsample(train, 60), { height: 8 }));
    if (valid.length > 1) {
      lines.push(
        "valid reward per evaluation:",
        plot(
          valid.map((h) => h.validRewardMean!),
          { height: 6 },
        ),
      );
    }
    if (valid.length)
      lines.push(`valid reward: ${valid.map((h) => `step ${h.step}: ${fmt(h.validRewardMean)}`).join(", ")}`);
    if (r.best) lines.push(`best checkpoint: ${r.best.name} (valid_reward_mean ${fmt(r.best.validRewardMean)})`);
    lines.push(
      `checkpoints: ${r.checkpoints.map((c) => c.name).join(", ") || "none"}  (in ${resolve(outDir, "checkpoints")})`,
    );
    if (r.modelDir) lines.push(`model:  ${r.modelDir}`);
    if (r.status === "paused") lines.push("paused: run the same command again to resume from the last checkpoint");
  }
  lines.push(`events: ${resolve(outDir, "events.jsonl")}`);
  return lines.join("\n");
}

function downsample(xs: number[], n: number): number[] {
  if (xs.length <= n) return xs;
  return Array.from({ length: n }, (_, i) => xs[Math.floor((i * xs.length) / n)]!);
}

export function register(program: Command) {
  program
    .command("run")
    .description("run a FineTuneJob manifest locally (SFT or RFT); resumes from the last checkpoint in --out")
    .argument("<manifest>", "FineTuneJob YAML or JSON, or OpenAI's fine-tuning job request JSON")
    .option("--out <dir>", "output directory (events.jsonl, checkpoints/, model/)", "rft-out")
    .option(
      "--backend <name>",
      "tfjs backend: auto (default: spec.trainer.backend, else tensorflow if installed, else wasm) | wasm | cpu | tensorflow | webgpu",
    )
    .option("--grader-addr <host:port>", "grade through a running grader sidecar (rft grader) instead of in process")
    .option("--metrics-port <port>", "serve Prometheus /metrics on this port while training")
    .option("--stop-after <step>", "pause after this step (resume later with the same command)")
    .option("--no-progress", "no progress bar (one line per step instead)")
    .option("--replicas <n>", "train with N data-parallel ranks, one local process each (RFT jobs)", "1")
    .option(
      "--micro-batch <n>",
      "RFT: sequences per forward/backward pass (default 16); smaller needs less memory, same update",
    )
    .option(
      "--activation-checkpointing",
      "recompute each layer's activations in the backward pass: less memory, about one more forward pass of compute",
    )
    .action(async (file: string, o) => {
      const microBatch = o.microBatch === undefined ? undefined : Number(o.microBatch);
      if (microBatch !== undefined && !(Number.isInteger(microBatch) && microBatch >= 1)) {
        process.stderr.write(`rft run: --micro-batch wants a positive integer, got ${o.microBatch}\n`);
        process.exitCode = 2;
        return;
      }
      const replicas = Number(o.replicas);
      if (!Number.isInteger(replicas) || replicas < 1) {
        process.stderr.write(`rft run: --replicas wants a positive integer, got ${o.replicas}\n`);
        process.exitCode = 2;
        return;
      }
      // The parent of N ranks only spawns and waits; each rank runs this command with RFT_RANK set.
      if (replicas > 1 && process.env.RFT_RANK === undefined) {
        process.exitCode = await runReplicas(replicas);
        return;
      }
      let ranks: ReturnType<typeof rankEnv>;
      try {
        ranks = rankEnv(process.env);
      } catch (err) {
        process.stderr.write(`rft run: ${(err as Error).message}\n`);
        process.exitCode = 2;
        return;
      }
      const rank = ranks?.rank ?? 0;
      let manifest: ReturnType<typeof loadJobFile>;
      try {
        // A FineTuneJob, or OpenAI's job request JSON (api/convert.ts).
        manifest = loadJobFile(file);
      } catch (err) {
        if (err instanceof ManifestError) {
          process.stderr.write(`rft run: invalid manifest\n${err.message}\n`);
          process.exitCode = 2;
          return;
        }
        throw err;
      }
      const name = manifest.job.metadata.name;
      const metrics = new TrainerMetrics(name);
      const server = o.metricsPort !== undefined && rank === 0 ? await metrics.serve(Number(o.metricsPort)) : undefined;
      const control: RftControl = { pause: false, cancel: false };
      let interrupts = 0;
      const onSignal = (sig: string) => {
        interrupts++;
        if (interrupts === 1 && sig !== "SIGQUIT") {
          control.pause = true;
          process.stderr.write(
            `\n${sig}: finishing the current step, then checkpointing and pausing (again to cancel)\n`,
          );
        } else {
          control.cancel = true;
          process.stderr.write(`\n${sig}: cancelling after the current step\n`);
        }
      };
      process.on("SIGINT", () => onSignal("SIGINT"));
      process.on("SIGTERM", () => onSignal("SIGTERM"));

      const tty = Boolean(process.stderr.isTTY) && o.progress !== false && rank === 0;
      const bar = tty
        ? new cliProgress.SingleBar(
            {
              format: "{bar} step {value}/{total} | train {train} | valid {valid} | ETA {eta_formatted}",
              hideCursor: true,
            },
            cliProgress.Presets.shades_classic,
          )
        : null;
      let lastValid: number | null = null;
      const line = (s: string) => (bar || rank !== 0 ? undefined : process.stderr.write(`${s}\n`));
      try {
        const result = await runJob({
          manifest,
          outDir: o.out,
          backend: o.backend ? parseBackendName(o.backend) : undefined,
          graderAddr: o.graderAddr,
          control,
          stopAfterStep: o.stopAfter !== undefined ? Number(o.stopAfter) : undefined,
          microBatch,
          activationCheckpointing: o.activationCheckpointing === true,
          ranks,
          hooks: {
            onEvent: (e) => e.type === "message" && line(e.message),
            onStep: (m) => {
              metrics.observeStep(m, m.data.total_steps);
              const v = (m.data.scores as { valid_reward_mean?: number }).valid_reward_mean;
              if (v !== undefined) lastValid = v;
              if (bar) {
                if (!bar.getTotal()) bar.start(m.data.total_steps, 0, { train: "-", valid: "-" });
                bar.update(m.data.step, { train: fmt(m.data.scores.train_reward_mean), valid: fmt(lastValid) });
              } else line(m.message);
            },
            onCheckpoint: () => metrics.checkpoints.inc({ job: name }),
            onSftStep: (e, total) => {
              if (bar) {
                if (!bar.getTotal()) bar.start(total, 0, { train: "-", valid: "-" });
                bar.update(e.step, { train: e.trainLoss.toFixed(3), valid: fmt(e.validLoss) });
              } else
                line(
                  `Step ${e.step}/${total}: training loss=${e.trainLoss.toFixed(4)}${e.validLoss !== undefined ? `, validation loss=${e.validLoss.toFixed(4)}` : ""}`,
                );
            },
          },
        });
        bar?.stop();
        if (rank === 0) process.stdout.write(`${summary(result, o.out)}\n`);
        if (result.status === "failed") process.exitCode = 1;
        if (result.status === "cancelled") process.exitCode = 130;
      } catch (err) {
        bar?.stop();
        if (err instanceof BackendMemoryError) {
          // One line that says what to change; the state of the backend is lost, nothing else can run.
          process.stderr.write(`rft run: ${err.message}\n`);
          process.exitCode = 1;
        } else if (
          err instanceof DatasetError ||
          err instanceof ModelDirError ||
          err instanceof BackendError ||
          err instanceof LoraConfigError ||
          err instanceof AdapterDirError
        ) {
          process.stderr.write(`rft run: ${err.message}\n`);
          process.exitCode = 2;
        } else if (
          err instanceof CheckpointError ||
          err instanceof LedgerWriteError ||
          err instanceof OutputWriteError ||
          err instanceof GovernanceError
        ) {
          // A full disk, a damaged checkpoint or ledger: one line naming the file. What was durable before it
          // (the last checkpoint, the fsynced ledger) is kept; free space and run the same command to resume.
          process.stderr.write(`rft run: ${err.message}\n`);
          process.exitCode = 1;
        } else if (err instanceof CollectiveError) {
          // Another rank died or stalled (or this one could not join): restart the same command to resume from
          // the last checkpoint.
          process.stderr.write(`rft run: ${err.message}\n`);
          process.exitCode = 1;
        } else if (err instanceof EndpointConfigError) {
          // spec.graderEndpoints that cannot be used here (a key not set): fix the manifest or the environment.
          process.stderr.write(`rft run: ${err.message}\n`);
          process.exitCode = 2;
        } else throw err;
      } finally {
        server?.close();
      }
    });
}
