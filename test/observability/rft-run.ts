/**
 * A local `rft run` of a tiny sort-digits RFT job serving Prometheus metrics (`--metrics-port`), as the
 * observability tests scrape it: the CLI in a child process, a random 1-layer model, bounded waits.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { freePort } from "../k8s/cluster.js";
import { REPO_ROOT } from "../k8s/binaries.js";
import { rftManifest, tempJobDir, tinyModel } from "../helpers/rft-job.js";

export interface RftRun {
  dir: string;
  metricsPort: number;
  child: ChildProcess;
  /** stderr so far (one line per step with --no-progress). */
  log(): string;
  /** Waits until the log matches, the process exits, or the time is up (then throws with the log). */
  waitForLog(re: RegExp, timeoutMs: number): Promise<void>;
  /** GET /metrics text. */
  metrics(): Promise<string>;
  /** SIGTERM (pause after the current step), then SIGKILL after 20 s; resolves the exit code. */
  stop(): Promise<number | null>;
}

export interface RftRunOptions {
  /** Replaces the python sub-grader's source ("correct" of the example's multi grader). */
  pythonGrader?: string;
  hyperparameters?: Record<string, unknown>;
  trainRows?: number;
  validRows?: number;
}

export async function startRftRun(name: string, o: RftRunOptions = {}): Promise<RftRun> {
  const dir = tempJobDir(name);
  await tinyModel(join(dir, "model"));
  const file = rftManifest(
    dir,
    { model: "model" },
    {
      nEpochs: 1,
      batchSize: 8,
      samplesPerPrompt: 2,
      maxCompletionTokens: 4,
      evalInterval: 2,
      evalSamples: 1,
      ...o.hyperparameters,
    },
  );
  const cut = (f: string, n?: number) => {
    if (n === undefined) return;
    const p = join(dir, f);
    writeFileSync(p, readFileSync(p, "utf8").split("\n").filter(Boolean).slice(0, n).join("\n") + "\n");
  };
  cut("train.jsonl", o.trainRows);
  cut("valid.jsonl", o.validRows ?? 8);
  if (o.pythonGrader !== undefined) {
    const { parse, stringify } = await import("yaml");
    const job = parse(readFileSync(file, "utf8"));
    job.spec.method.reinforcement.grader.graders.correct.source = o.pythonGrader;
    writeFileSync(file, stringify(job));
  }
  const metricsPort = await freePort();
  const child = spawn(
    process.execPath,
    [
      "--import",
      "tsx",
      "cli/rft.ts",
      "run",
      file,
      "--out",
      join(dir, "out"),
      "--no-progress",
      "--metrics-port",
      String(metricsPort),
    ],
    { cwd: REPO_ROOT, env: { ...process.env, RFT_LOG_LEVEL: "silent" }, stdio: ["ignore", "pipe", "pipe"] },
  );
  let stderr = "";
  child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
  child.stdout!.on("data", (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  return {
    dir,
    metricsPort,
    child,
    log: () => stderr,
    async waitForLog(re, timeoutMs) {
      const deadline = Date.now() + timeoutMs;
      while (!re.test(stderr)) {
        if (child.exitCode !== null) throw new Error(`rft run exited ${child.exitCode} before ${re}:\n${stderr}`);
        if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${re}:\n${stderr}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    },
    async metrics() {
      const r = await fetch(`http://127.0.0.1:${metricsPort}/metrics`);
      if (r.status !== 200) throw new Error(`/metrics: HTTP ${r.status}`);
      return r.text();
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGTERM");
        const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
        const code = await exited;
        clearTimeout(timer);
        return code;
      }
      return child.exitCode;
    },
  };
}
