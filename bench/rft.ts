/**
 * RFT step throughput on the sort-digits example, ours vs Hugging Face TRL's GRPOTrainer on the same CPU.
 *
 *   npx tsx bench/rft.ts [--steps N] [--threads 1,2] [--no-trl] [--rebuild] [--micro-batch N] [--backend B]
 *   npx tsx bench/rft.ts --smollm2 [--steps N] [--threads 1,2] [--backend B] [--model DIR]
 *
 * Builds the warm-started model once into os.tmpdir()/rft-bench-sort-digits (init-model as in run.sh, then
 * the example's sft.yaml through runJob), then runs the example's rft.yaml (8 prompts × 8 samples, 16
 * completion tokens, dapo, temperature 1) for 1 warm-up + N timed steps with no validation inside them (the
 * step-0 baseline validation is reported on its own line), and bench/trl_grpo.py with the same model, data,
 * hyperparameters and reward, with torch on 1 thread and on 2 (our default backend, `auto` → tensorflow, uses
 * every core; wasm is single-threaded). `--backend` picks ours (default: the job's, else `auto`).
 * `--smollm2` runs examples/smollm2-city instead: its rft.yaml (multi grader string_check + python) and
 * train.jsonl on SmolLM2-135M-Instruct, full-parameter, and `bench/trl_grpo.py --task city` with the same reward.
 * Prints steps/s, s/step, CPU s/step (this process and its children: stable when other processes compete for
 * the cores), samples/s, trained tokens/s, our time breakdown (from each step's `timing.step`) and our
 * steps/s as a ratio of TRL's (target ≥ 0.5×). TRL is installed on first run into
 * ~/.cache/rft-bench/venv, a venv that takes torch and transformers from .venv-model-test unchanged.
 */
import { spawnSync } from "node:child_process";
import * as tf from "@tensorflow/tfjs-core";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { availableParallelism, homedir, loadavg } from "node:os";
import { dirname, join } from "node:path";
import { loadManifest } from "../trainer/job/manifest.js";
import { BENCH_WORK, EXAMPLE, ROOT, warmStartedModel } from "./example-model.js";
import { parseBackendName } from "../trainer/model/backend.js";
import { resolveRft } from "../trainer/settings/hyperparameters.js";
import { runJob } from "../trainer/job/run-job.js";
import type { MetricsEvent } from "../trainer/rl/metrics.js";
import { smollm2Dir } from "./smollm2-dir.js";

const root = ROOT;
const arg = (name: string, def: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : def;
};
const steps = Number(arg("steps", "10"));
if (!Number.isInteger(steps) || steps < 1) throw new Error(`--steps: want a positive integer, got ${arg("steps", "")}`);
const threads = arg("threads", "1,2")
  .split(",")
  .map(Number)
  .filter((n) => Number.isInteger(n) && n > 0);
const withTrl = !process.argv.includes("--no-trl");
/** Sequences per forward/backward pass in our update (the trainer's default when not given). */
const microBatch = process.argv.includes("--micro-batch") ? Number(arg("micro-batch", "16")) : undefined;
/** Our backend: `--backend`, else the job's spec.trainer.backend, else `auto` (runJob's default). */
const backendArg = process.argv.includes("--backend") ? parseBackendName(arg("backend", "auto")) : undefined;
/**
 * `--smollm2`: examples/smollm2-city's job (rft.yaml, train.jsonl) on SmolLM2-135M-Instruct
 * (bench/smollm2-dir.ts finds it), full-parameter, with the manifest's hyperparameters unchanged (4 prompts ×
 * 4 samples, 12 tokens, lr 1e-4 × 0.1, dapo with its dynamic sampling) on both sides. `--prompts`,
 * `--samples`, `--lr-multiplier`, `--temperature` and `--dynamic-sampling on|off` override them.
 */
const smollm2 = process.argv.includes("--smollm2");
const example = smollm2 ? join(ROOT, "examples", "smollm2-city") : EXAMPLE;
const ds = arg("dynamic-sampling", "");
const override = {
  batchSize: Number(arg("prompts", "0")) || undefined,
  samplesPerPrompt: Number(arg("samples", "0")) || undefined,
  learningRateMultiplier: Number(arg("lr-multiplier", "0")) || undefined,
  temperature: Number(arg("temperature", "0")) || undefined,
  dynamicSampling: ds === "on" ? true : ds === "off" ? false : undefined,
};
const work = smollm2 ? join(BENCH_WORK, "..", "rft-bench-smollm2") : BENCH_WORK;
let peakRss = 0;
setInterval(() => {
  peakRss = Math.max(peakRss, process.memoryUsage().rss);
}, 50).unref();
const log = (s: string) => process.stdout.write(`${s}\n`);

// ---------------------------------------------------------------------------------------------------------
// CPU seconds of this process and all its descendants (the python grader workers run in child processes).

const TICK = 100; // USER_HZ; Linux reports /proc times in 1/100 s on every mainstream architecture

function procStat(pid: number | "self"): { ppid: number; ticks: number } | null {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, "utf8");
    const f = s.slice(s.lastIndexOf(")") + 2).split(" "); // fields from 3 (state) on
    // utime 14, stime 15, cutime 16, cstime 17 (1-based) → indexes 11..14 here
    return { ppid: Number(f[1]), ticks: Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]) };
  } catch {
    return null;
  }
}

/** This process's CPU seconds plus those of its live descendants and of the children it reaped. */
function treeCpuSeconds(): number {
  if (!existsSync("/proc/self/stat")) {
    const c = process.cpuUsage();
    return (c.user + c.system) / 1e6;
  }
  const stats = new Map<number, { ppid: number; ticks: number }>();
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    const st = procStat(Number(d));
    if (st) stats.set(Number(d), st);
  }
  const kids = new Map<number, number[]>();
  for (const [pid, st] of stats) kids.set(st.ppid, [...(kids.get(st.ppid) ?? []), pid]);
  let ticks = 0;
  const stack = [process.pid];
  while (stack.length) {
    const pid = stack.pop()!;
    ticks += stats.get(pid)?.ticks ?? 0;
    stack.push(...(kids.get(pid) ?? []));
  }
  return ticks / TICK;
}

// ---------------------------------------------------------------------------------------------------------
// Ours: rft.yaml through runJob, 1 warm-up + N timed steps, no validation inside them.

interface Mark {
  step: number;
  wall: number;
  cpu: number;
  ev: MetricsEvent;
}

interface Figures {
  label: string;
  stepsPerS: number;
  sPerStep: number;
  cpuPerStep: number;
  samplesPerS: number;
  trainTokensPerS: number | null;
  note: string;
}

/** The example's rft.yaml with the overrides (and no validation inside the timed steps). */
function benchManifest(model: string) {
  const manifest = loadManifest(join(example, "rft.yaml"));
  manifest.paths.model = model;
  // SmolLM2 samples ~100× slower than the toy: no step-0 baseline validation (it would take minutes).
  if (smollm2) delete manifest.paths.validationFile;
  const rl = manifest.job.spec.method.reinforcement!;
  const extra = Object.fromEntries(Object.entries(override).filter(([, v]) => v !== undefined));
  // The example's sampling temperature is 0.7 (set in rft.yaml on main's pending change); a manifest without one
  // would sample at the default 1, so the bench gives 0.7 explicitly unless the manifest or --temperature does.
  const temperature = smollm2 && rl.hyperparameters?.temperature === undefined ? { temperature: 0.7 } : {};
  rl.hyperparameters = { ...rl.hyperparameters, ...temperature, ...extra, evalInterval: 1_000_000 };
  return manifest;
}

const samplesPerStep = (() => {
  const hp = benchManifest("-").job.spec.method.reinforcement!.hyperparameters!;
  return Number(hp.batchSize) * Number(hp.samplesPerPrompt);
})();

/** Threads our backend computes on: tensorflow's intra-op pool (TF_NUM_INTRAOP_THREADS, else every core). */
function ourThreads(backend: string): string {
  const n = backend === "tensorflow" ? Number(process.env.TF_NUM_INTRAOP_THREADS) || availableParallelism() : 1;
  return `${n} thread${n > 1 ? "s" : ""}`;
}

async function runOurs(model: string) {
  const manifest = benchManifest(model);
  const rl = manifest.job.spec.method.reinforcement!;
  const lines = (f: string | undefined) => (f ? readFileSync(f, "utf8").trim().split("\n").length : 0);
  const nTrain = lines(manifest.paths.trainingFile);
  const hp = resolveRft(rl.hyperparameters, nTrain);
  const outDir = join(work, "rft");
  rmSync(outDir, { recursive: true, force: true });

  const marks: Mark[] = [];
  const t0 = performance.now();
  const c0 = treeCpuSeconds();
  let baseline: { wall: number; cpu: number } | null = null;
  const res = await runJob({
    manifest,
    outDir,
    stopAfterStep: 1 + steps,
    microBatch,
    backend: backendArg,
    hooks: {
      onEvent: (e) => {
        if (e.message.startsWith("Baseline validation") && !baseline)
          baseline = { wall: (performance.now() - t0) / 1000, cpu: treeCpuSeconds() - c0 };
      },
      onStep: (ev) => marks.push({ step: ev.data.step, wall: performance.now(), cpu: treeCpuSeconds(), ev }),
    },
  });
  if (marks.length < 1 + steps) throw new Error(`ours: stopped after ${marks.length} steps (${res.status})`);
  const first = marks[0]!;
  const last = marks[steps]!;
  const timed = marks.slice(1, 1 + steps);
  const wall = (last.wall - first.wall) / 1000;
  const cpu = last.cpu - first.cpu;
  const sum = (f: (m: Mark) => number) => timed.reduce((a, m) => a + f(m), 0);
  const t = (m: Mark) => {
    const x = m.ev.data.timing.step as Record<string, number | undefined>;
    return {
      sampling: x.sampling ?? 0,
      grading: x.grading ?? 0,
      training: x.training ?? 0,
      eval: x.eval ?? 0,
      full_iteration: x.full_iteration ?? 0,
    };
  };
  const data = (m: Mark) => m.ev.data as unknown as Record<string, number>;
  const trainedTokens = sum((m) => data(m).trained_tokens ?? 0);
  const sampledTokens = sum((m) => m.ev.data.usage.samples.train_completion_tokens_count);
  const breakdown = {
    sampling: sum((m) => t(m).sampling),
    grading: sum((m) => t(m).grading),
    training: sum((m) => t(m).training),
    eval: sum((m) => t(m).eval),
    full: sum((m) => t(m).full_iteration),
  };
  const figures: Figures = {
    label: `ours (tfjs ${tf.getBackend()}, ${ourThreads(tf.getBackend())}${microBatch ? `, micro-batch ${microBatch}` : ""})`,
    stepsPerS: steps / wall,
    sPerStep: wall / steps,
    cpuPerStep: cpu / steps,
    samplesPerS: (steps * samplesPerStep) / wall,
    trainTokensPerS: trainedTokens / wall,
    note: `trains on kept groups only: ${(sum((m) => data(m).groups_kept ?? 0) / steps).toFixed(1)}/${hp.batchSize} groups/step`,
  };
  const rewards = timed.map((m) => m.ev.data.scores.train_reward_mean ?? 0);
  return {
    figures,
    breakdown,
    wall,
    sampledTokens,
    trainedTokens,
    baseline,
    validRows: lines(manifest.paths.validationFile),
    hp,
    rewardMean: rewards.reduce((a, b) => a + b, 0) / rewards.length,
    perStep: timed.map((m) => t(m).full_iteration),
  };
}

// ---------------------------------------------------------------------------------------------------------
// TRL: bench/trl_grpo.py in a venv that sees .venv-model-test's torch and transformers.

function sh(cmd: string, args: string[], opts: { quiet?: boolean } = {}) {
  const r = spawnSync(cmd, args, { encoding: "utf8", maxBuffer: 256 << 20 });
  if (r.status !== 0 && !opts.quiet) throw new Error(`${cmd} ${args.join(" ")} failed:\n${r.stderr || r.stdout}`);
  return r;
}

function trlPython(): string | null {
  const modelTest = join(root, ".venv-model-test", "bin", "python");
  if (!existsSync(modelTest)) {
    log("TRL: skipped — .venv-model-test (torch + transformers) is missing; run scripts/setup.sh");
    return null;
  }
  const venv = join(homedir(), ".cache", "rft-bench", "venv");
  const py = join(venv, "bin", "python");
  if (existsSync(py) && sh(py, ["-c", "import trl, torch, transformers"], { quiet: true }).status === 0) return py;
  log(
    `TRL: first run — installing bench/requirements-trl.txt into ${venv} (torch and transformers from .venv-model-test)`,
  );
  mkdirSync(dirname(venv), { recursive: true });
  sh(modelTest, ["-m", "venv", venv]); // the same interpreter, so its site-packages fit
  const site = (p: string) => sh(p, ["-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.trim();
  writeFileSync(join(site(py), "_rft_model_test.pth"), `${site(modelTest)}\n`);
  // Pin what .venv-model-test has, so pip never replaces torch or transformers.
  const pins = sh(modelTest, [
    "-c",
    'from importlib.metadata import version as v; print(f\'torch=={v("torch")}\\ntransformers=={v("transformers")}\')',
  ]).stdout;
  const constraints = join(dirname(venv), "constraints.txt");
  writeFileSync(constraints, pins);
  const t0 = performance.now();
  sh(py, [
    "-m",
    "pip",
    "install",
    "-q",
    "--disable-pip-version-check",
    "-c",
    constraints,
    "-r",
    join(root, "bench", "requirements-trl.txt"),
  ]);
  log(`TRL: installed in ${((performance.now() - t0) / 1000).toFixed(0)} s`);
  return py;
}

interface TrlResult {
  threads: number;
  steps_per_s: number;
  seconds_per_step: number;
  cpu_seconds_per_step: number;
  samples_per_s: number;
  train_tokens_per_s: number | null;
  completion_tokens_per_step: number | null;
  breakdown_s_per_step: { generation: number; reward: number; other_scoring: number; training: number };
  reward_mean: number | null;
  frac_reward_zero_std: number | null;
  versions: { trl: string; torch: string; transformers: string };
  peak_rss_mib?: number;
}

function runTrl(py: string, model: string, hp: ReturnType<typeof resolveRft>, nThreads: number): TrlResult {
  const r = sh(py, [
    join(root, "bench", "trl_grpo.py"),
    "--model", model,
    "--task", smollm2 ? "city" : "sort-digits",
    "--train", join(example, "train.jsonl"),
    "--out", join(work, `trl-${nThreads}`),
    "--steps", String(steps),
    "--warmup", "1",
    "--threads", String(nThreads),
    "--lr", String(hp.learningRate),
    "--prompts", String(hp.batchSize),
    "--generations", String(hp.samplesPerPrompt),
    "--max-completion", String(hp.maxCompletionTokens),
    "--temperature", String(hp.temperature),
  ]); // prettier-ignore
  const line = r.stdout.split("\n").find((l) => l.startsWith("TRL_RESULT "));
  if (!line) throw new Error(`trl_grpo.py printed no result:\n${r.stdout}\n${r.stderr}`);
  return JSON.parse(line.slice("TRL_RESULT ".length)) as TrlResult;
}

// ---------------------------------------------------------------------------------------------------------

function table(rows: string[][]) {
  const w = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  for (const [k, r] of rows.entries()) {
    log(r.map((c, i) => (i === 0 ? c.padEnd(w[i]!) : c.padStart(w[i]!))).join("  "));
    if (k === 0) log(w.map((n) => "-".repeat(n)).join("  "));
  }
}

const f2 = (x: number) => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2));
const f3 = (x: number) => x.toFixed(3);

const load = () =>
  loadavg()
    .map((x) => x.toFixed(2))
    .join(" ");
log(
  `RFT bench: ${smollm2 ? "smollm2-city on SmolLM2-135M-Instruct (full-parameter)" : "sort-digits"}, 1 warm-up + ${steps} timed steps each (work dir ${work}); load ${load()} on ${availableParallelism()} cores`,
);
const model = smollm2
  ? await smollm2Dir()
  : await warmStartedModel({ rebuild: process.argv.includes("--rebuild"), log });
const rssBefore = process.memoryUsage().rss;
const ours = await runOurs(model);
const oursPeakRss = peakRss;
const hp = ours.hp;
log(
  `job: ${hp.batchSize} prompts × ${hp.samplesPerPrompt} samples, maxCompletionTokens ${hp.maxCompletionTokens}, ` +
    `loss ${hp.loss}, temperature ${hp.temperature}, lr ${hp.learningRate}, clip ${hp.clipEpsilon.low}/${hp.clipEpsilon.high}`,
);

log(`load after ours: ${load()}`);

const trl: { threads: number; r: TrlResult }[] = [];
if (withTrl) {
  const py = trlPython();
  if (py)
    for (const n of threads) {
      trl.push({ threads: n, r: runTrl(py, model, hp, n) });
      log(`load after TRL ${n}t: ${load()}`);
    }
}

log("");
const rows: string[][] = [
  ["", "steps/s", "s/step", "CPU s/step", "samples/s", "train tok/s", "ours ÷ this (steps/s)", "ours ÷ this (CPU)"],
];
const o = ours.figures;
rows.push([
  o.label,
  f3(o.stepsPerS),
  f2(o.sPerStep),
  f2(o.cpuPerStep),
  f2(o.samplesPerS),
  f2(o.trainTokensPerS ?? 0),
  "",
  "",
]);
for (const { threads: n, r } of trl)
  rows.push([
    `TRL GRPOTrainer (torch, ${n} thread${n > 1 ? "s" : ""})`,
    f3(r.steps_per_s),
    f2(r.seconds_per_step),
    f2(r.cpu_seconds_per_step),
    f2(r.samples_per_s),
    r.train_tokens_per_s === null ? "-" : f2(r.train_tokens_per_s),
    `${(o.stepsPerS / r.steps_per_s).toFixed(2)}×`,
    `${(r.cpu_seconds_per_step / o.cpuPerStep).toFixed(2)}×`,
  ]);
table(rows);
log(
  `(target: ours ≥ ${smollm2 ? "1.0" : "0.5"}× TRL's steps/s; "CPU" compares CPU s/step, > 1 means we use less CPU per step)`,
);
log(`ours: ${o.note}; train tok/s counts completion tokens trained on (TRL: all ${samplesPerStep} samples)`);

log("");
log("where a step goes (s/step; fractions of the step)");
const b = ours.breakdown;
const bRows: string[][] = [["", "sampling", "grading", "training", "eval", "other", "step"]];
const frac = (x: number, of: number) => `${f2(x / steps)} (${((100 * x) / of).toFixed(0)}%)`;
bRows.push([
  "ours (timing.step)",
  frac(b.sampling, ours.wall),
  frac(b.grading, ours.wall),
  frac(b.training, ours.wall),
  frac(b.eval, ours.wall),
  frac(ours.wall - b.full, ours.wall),
  f2(ours.wall / steps),
]);
for (const { threads: n, r } of trl) {
  const x = r.breakdown_s_per_step;
  const all = r.seconds_per_step;
  const p = (v: number) => `${f2(v)} (${((100 * v) / all).toFixed(0)}%)`;
  bRows.push([
    `TRL, ${n} thread${n > 1 ? "s" : ""}`,
    p(x.generation),
    p(x.reward),
    p(x.training),
    "-",
    p(x.other_scoring),
    f2(all),
  ]);
}
table(bRows);
const sp = [...ours.perStep].sort((a, c) => a - c);
log(
  `ours: sampled ${f2(ours.sampledTokens / steps)} completion tokens/step (${f2(ours.sampledTokens / b.sampling)} tok/s while sampling), ` +
    `trained ${f2(ours.trainedTokens / steps)}/step (${f2(ours.trainedTokens / b.training)} tok/s while training); ` +
    `step min/median/max ${f2(sp[0]!)}/${f2(sp[Math.floor(sp.length / 2)]!)}/${f2(sp[sp.length - 1]!)} s; train reward mean ${f3(ours.rewardMean)}`,
);
for (const { threads: n, r } of trl)
  log(
    `TRL ${n}t: ${r.completion_tokens_per_step === null ? "-" : f2(r.completion_tokens_per_step)} completion tokens/step, ` +
      `zero-std groups ${r.frac_reward_zero_std === null ? "-" : (100 * r.frac_reward_zero_std).toFixed(0)}% (trained on anyway), ` +
      `reward mean ${r.reward_mean === null ? "-" : f3(r.reward_mean)}`,
  );
if (ours.baseline) {
  const bl = ours.baseline as { wall: number; cpu: number };
  log(
    `ours, outside the timed steps: model load + step-0 baseline validation (${ours.validRows} rows × ${hp.evalSamples} samples) ` +
      `${f2(bl.wall)} s, ${f2(bl.cpu)} CPU s`,
  );
}
log(
  `peak RSS: ours ${(oursPeakRss / 2 ** 20).toFixed(0)} MiB (this process; ${(rssBefore / 2 ** 20).toFixed(0)} MiB before the job)` +
    trl.map(({ threads: n, r }) => `, TRL ${n}t ${r.peak_rss_mib?.toFixed(0) ?? "-"} MiB`).join(""),
);
if (trl[0]) {
  const v = trl[0].r.versions;
  log(`versions: trl ${v.trl}, torch ${v.torch}, transformers ${v.transformers}; node ${process.version}`);
}
process.exit(0);
