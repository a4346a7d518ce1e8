/**
 * The trainer collective over loopback, against the machine's limit.
 *
 *   npx tsx bench/collective.ts [--sizes 1,4,16,64] [--ranks 2] [--reps 5] [--chunk-kb 1024]
 *                               [--no-rft] [--rft-steps 10] [--rft-rounds 2] [--rft-batch 8,32]
 *
 * 1. All-reduce throughput: N rank processes (one per core) on 127.0.0.1 all-reduce float32 tensors of each
 *    size; per size, 1 warm-up + `reps` timed runs, each timed from a barrier to the slowest rank's finish.
 *    Reported: best and median time, algorithm bandwidth (tensor bytes ÷ time, what a trainer feels) and
 *    its ratio to a plain memcpy of the same bytes in this process (`Uint8Array#set`, best of 5, warm
 *    pages). Target: ≥ 50 % of memcpy at 64 MB, 2 ranks.
 * 2. RFT steps/s with 1 and 2 ranks (`rft run --replicas`) on the sort-digits example (the warm-started
 *    model of bench/example-model.ts, built on first use), no validation: 1 warm-up step + N timed steps,
 *    wall time per step from rank 0's metrics events (it includes waiting for the other rank), and CPU
 *    seconds per step of all the run's processes (the run of 1 step subtracted, so start-up is excluded).
 *    Rounds alternate 1 and 2 ranks. Target: ≥ 1.6× steps/s from 1 to 2 ranks on this 2-core machine. Measured at the example's global
 *    batch (8 prompts) and at a larger one (32 prompts, what one scales out for): a step of the tiny example
 *    model has ~0.25 s of per-op overhead (decode steps, kernel dispatch) that does not shrink when each rank
 *    gets half the prompts.
 */
import { type ChildProcess, fork, spawn, spawnSync } from "node:child_process";
import net from "node:net";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parse, stringify } from "yaml";
import { Collective } from "../trainer/collective/collective.js";
import { freePorts, loopbackPeers } from "../test/collective/ports.js";
import { warmStartedModel } from "./example-model.js";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const arg = (name: string, def: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : def;
};
const log = (s: string) => process.stdout.write(`${s}\n`);
const MB = 1 << 20;

interface WorkerArgs {
  rank: number;
  peers: string[];
  sizes: number[];
  reps: number;
  chunkBytes: number;
}

/** A rank process: all-reduces each size reps+1 times, reports its times (ms) to the parent. */
async function worker(a: WorkerArgs) {
  const c = await Collective.connect({
    rank: a.rank,
    worldSize: a.peers.length,
    peers: a.peers,
    chunkBytes: a.chunkBytes,
    rendezvousTimeoutMs: 60_000,
    secret: "bench-collective-secret-0123456789",
  });
  const out: Record<number, number[]> = {};
  for (const mb of a.sizes) {
    const x = new Float32Array((mb * MB) / 4);
    out[mb] = [];
    for (let i = 0; i <= a.reps; i++) {
      x.fill(a.rank + 1);
      await c.barrier();
      const t0 = performance.now();
      await c.allReduce(x);
      // The slowest rank's finish: every rank's time, max'ed.
      const ts = await c.allGatherJson(performance.now() - t0);
      if (i > 0) out[mb]!.push(Math.max(...ts));
    }
    if (x[0] !== (a.peers.length * (a.peers.length + 1)) / 2) throw new Error(`wrong sum ${x[0]}`);
  }
  // The transport's own ceiling: every rank streams the largest size to its right neighbour over a fresh
  // loopback TCP connection while receiving as much from its left (a 2-rank all-reduce of S bytes moves S bytes
  // each way per rank), counting bytes only: no framing, no reduction.
  const S = Math.max(...a.sizes) * MB;
  const exchange = await tcpCeiling(c, a.rank, S, a.reps, false);
  const exchangeOnread = await tcpCeiling(c, a.rank, S, a.reps, true);
  await c.barrier();
  await c.close();
  process.send!({ ...out, exchange, exchangeOnread });
}

/**
 * Times every rank streaming S bytes to its right neighbour while receiving S from its left, over a fresh
 * loopback connection (the receiver dials), counting bytes only. `onread`: the receiver reads into one reused
 * 1 MiB buffer instead of a new buffer per read ('data' events, what the collective's link does).
 */
async function tcpCeiling(c: Collective, rank: number, S: number, reps: number, onread: boolean): Promise<number[]> {
  let got = 0;
  let want = 0;
  let done: (() => void) | null = null;
  const count = (n: number) => {
    got += n;
    if (got >= want && done) done();
  };
  let out: net.Socket | null = null;
  const server = net.createServer((s) => (out = s));
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const ports = await c.allGatherJson((server.address() as net.AddressInfo).port);
  const left = ports[(rank + ports.length - 1) % ports.length]!;
  const inbound = onread
    ? net.connect({
        port: left,
        host: "127.0.0.1",
        onread: { buffer: Buffer.allocUnsafe(MB), callback: (n) => (count(n), true) },
      })
    : net.connect(left, "127.0.0.1").on("data", (d: Buffer) => count(d.length));
  await new Promise((r) => inbound.once("connect", r));
  await c.barrier();
  const src = Buffer.alloc(S, 1);
  const times: number[] = [];
  for (let i = 0; i <= reps; i++) {
    await c.barrier();
    want += S;
    const t0 = performance.now();
    const received = new Promise<void>((resolve) => {
      done = () => {
        done = null;
        resolve();
      };
      if (got >= want) done();
    });
    out!.write(src);
    await received;
    const ts = await c.allGatherJson(performance.now() - t0);
    if (i > 0) times.push(Math.max(...ts));
  }
  inbound.destroy();
  out!.destroy();
  server.close();
  return times;
}

function memcpyMs(bytes: number): number {
  const src = new Uint8Array(bytes).fill(1);
  const dst = new Uint8Array(bytes).fill(2);
  let best = Infinity;
  for (let i = 0; i < 6; i++) {
    const t0 = performance.now();
    dst.set(src);
    const t = performance.now() - t0;
    if (i > 0) best = Math.min(best, t);
  }
  return best;
}

async function allReduceBench() {
  const sizes = arg("sizes", "1,4,16,64").split(",").map(Number);
  const ranks = Number(arg("ranks", "2"));
  const reps = Number(arg("reps", "5"));
  const chunkBytes = Number(arg("chunk-kb", "1024")) * 1024;
  const peers = loopbackPeers(await freePorts(ranks));
  const kids: ChildProcess[] = [];
  const results = await Promise.all(
    peers.map(
      (_, rank) =>
        new Promise<Record<number | "exchange" | "exchangeOnread", number[]>>((res, rej) => {
          const k = fork(fileURLToPath(import.meta.url), ["--worker"], {
            execArgv: ["--import", "tsx"],
            cwd: root,
            stdio: ["ignore", "inherit", "inherit", "ipc"],
          });
          kids.push(k);
          k.once("message", (m) => res(m as Record<number | "exchange" | "exchangeOnread", number[]>));
          k.once("exit", (code) => code !== 0 && rej(new Error(`rank ${rank} exited with ${code}`)));
          k.send({ rank, peers, sizes, reps, chunkBytes } satisfies WorkerArgs);
        }),
    ),
  );
  const maxMb = Math.max(...sizes);
  const exchange = Math.min(...results[0]!.exchange!);
  const exchangeOnread = Math.min(...results[0]!.exchangeOnread!);
  log(`all-reduce, ${ranks} ranks on 127.0.0.1 (one process each), ${chunkBytes / 1024} KiB frames, ${reps} reps`);
  log(
    `loopback TCP ceiling: every rank streams ${maxMb} MB to its neighbour while receiving ${maxMb} MB (no framing, no adds): ${exchange.toFixed(1)} ms best (${((maxMb * MB) / 1e9 / (exchange / 1000)).toFixed(2)} GB/s each way) reading into a new buffer per read, as the link does; ${exchangeOnread.toFixed(1)} ms into one reused 1 MiB buffer`,
  );
  log("| size | best ms | median ms | algbw GB/s | memcpy ms | memcpy GB/s | all-reduce ÷ memcpy |");
  log("|---|---|---|---|---|---|---|");
  for (const mb of sizes) {
    const ts = results[0]![mb]!.slice().sort((a, b) => a - b);
    const best = ts[0]!;
    const med = ts[Math.floor(ts.length / 2)]!;
    const mc = memcpyMs(mb * MB);
    const gb = (ms: number) => (mb * MB) / 1e9 / (ms / 1000);
    log(
      `| ${mb} MB | ${best.toFixed(1)} | ${med.toFixed(1)} | ${gb(best).toFixed(2)} | ${mc.toFixed(2)} | ${gb(mc).toFixed(1)} | ${((mc / best) * 100).toFixed(1)} % |`,
    );
  }
  const best = results[0]![maxMb]!.slice().sort((a, b) => a - b)[0]!;
  log(
    `${maxMb} MB all-reduce ÷ the loopback TCP ceiling: ${((exchange / best) * 100).toFixed(0)} % (the ceiling already costs ${(exchange / memcpyMs(maxMb * MB)).toFixed(1)} memcpys: a send copy and a receive copy per byte)`,
  );
}

/** CPU seconds of the children this process has waited for (utime + stime of reaped descendants). */
function childCpu(): number {
  const f = readFileSync("/proc/self/stat", "utf8");
  const x = f.slice(f.lastIndexOf(")") + 2).split(" ");
  return (Number(x[13]) + Number(x[14])) / 100; // cutime, cstime (fields 16, 17), in 1/100 s
}

/**
 * `rft run --replicas n` on the example: rank 0's wall seconds per step (full_iteration, warm-up step
 * excluded) and the CPU seconds of all processes for the whole run.
 */
function rftJob(model: string, replicas: number, batch: number): string {
  const dir = mkdtempSync(join(tmpdir(), `rft-bench-replicas-${replicas}-`));
  const example = join(root, "examples", "sort-digits");
  const job = parse(readFileSync(join(example, "rft.yaml"), "utf8"));
  job.spec.model = model;
  job.spec.trainingFile = join(example, "train.jsonl");
  delete job.spec.validationFile; // no validation: steps only
  job.spec.method.reinforcement.hyperparameters.evalInterval = 100_000;
  job.spec.method.reinforcement.hyperparameters.batchSize = batch;
  writeFileSync(join(dir, "rft.yaml"), stringify(job));
  return dir;
}

const rftArgs = (dir: string, replicas: number, steps: number) =>
  ["--import", "tsx", "cli/rft.ts", "run", join(dir, "rft.yaml"), "--out", join(dir, "out"), "--no-progress"].concat([
    "--replicas",
    String(replicas),
    "--stop-after",
    String(steps + 1),
  ]);
const rftEnv = () => ({ ...process.env, RFT_LOG_LEVEL: "silent" });

/** Wall seconds per step (full_iteration) of a finished run, the warm-up step excluded. */
function stepWalls(dir: string): number[] {
  return readFileSync(join(dir, "out", "events.jsonl"), "utf8")
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l))
    .filter((e) => e.type === "metrics" && e.data.step > 1)
    .map((e) => e.data.timing.step.full_iteration as number);
}

function rftSteps(model: string, replicas: number, steps: number, batch: number): { wall: number[]; cpu: number } {
  const dir = rftJob(model, replicas, batch);
  const cpu0 = childCpu();
  const r = spawnSync(process.execPath, rftArgs(dir, replicas, steps), { cwd: root, encoding: "utf8", env: rftEnv() });
  if (r.status !== 0) throw new Error(`rft run --replicas ${replicas} failed:\n${r.stderr}`);
  return { wall: stepWalls(dir), cpu: childCpu() - cpu0 };
}

/**
 * The machine's own limit for 2 ranks: two independent single-rank runs, each with half the batch, at the same
 * time. Their mean s/step is what a rank's share of the work costs while another process computes beside it
 * (shared caches, memory bandwidth, the host); no collective can beat it.
 */
async function rftPair(model: string, steps: number, batch: number): Promise<number> {
  const dirs = [rftJob(model, 1, batch / 2), rftJob(model, 1, batch / 2)];
  await Promise.all(
    dirs.map(
      (dir) =>
        new Promise<void>((res, rej) =>
          spawn(process.execPath, rftArgs(dir, 1, steps), { cwd: root, env: rftEnv(), stdio: "ignore" }).once(
            "exit",
            (code) => (code === 0 ? res() : rej(new Error(`rft run (pair) exited with ${code}`))),
          ),
        ),
    ),
  );
  const walls = dirs.flatMap(stepWalls);
  return walls.reduce((a, b) => a + b, 0) / walls.length;
}

async function rftBench() {
  const model = await warmStartedModel({ log });
  const steps = Number(arg("rft-steps", "10"));
  const rounds = Number(arg("rft-rounds", "2"));
  for (const batch of arg("rft-batch", "8,32").split(",").map(Number)) {
    log(
      `\nRFT steps/s on sort-digits (rft.yaml: ${batch} prompts × 8 samples per step, 16 tokens), ${steps} timed steps after 1 warm-up,`,
    );
    log(`rft run --replicas N (N processes, wasm, 1 thread each); ${rounds} rounds, alternating`);
    log(
      "CPU s/step: all processes of the run (ranks, python grader workers), from a run of 1 step subtracted from a run",
    );
    log(
      "of 1 + N steps, so start-up is excluded; equal CPU s/step for 1 and 2 ranks = the work splits without overhead.",
    );
    log("| replicas | wall s/step (each round) | steps/s (best round) | speed-up | CPU s/step (each round) |");
    log("|---|---|---|---|---|");
    const wall: Record<number, number[]> = { 1: [], 2: [] };
    const cpu: Record<number, number[]> = { 1: [], 2: [] };
    const pair: number[] = [];
    for (let i = 0; i < rounds; i++) {
      for (const n of [1, 2]) {
        const start = rftSteps(model, n, 0, batch);
        const run = rftSteps(model, n, steps, batch);
        wall[n]!.push(run.wall.reduce((a, b) => a + b, 0) / run.wall.length);
        cpu[n]!.push((run.cpu - start.cpu) / steps);
      }
      pair.push(await rftPair(model, steps, batch));
    }
    const best = (n: number) => Math.min(...wall[n]!);
    for (const n of [1, 2])
      log(
        `| ${n} | ${wall[n]!.map((t) => t.toFixed(3)).join(", ")} | ${(1 / best(n)).toFixed(2)} | ${(best(1) / best(n)).toFixed(2)}× | ${cpu[n]!.map((t) => t.toFixed(3)).join(", ")} |`,
      );
    const ceiling = best(1) / Math.min(...pair);
    log(
      `machine limit: two independent 1-rank runs of ${batch / 2} prompts at once take ${pair.map((t) => t.toFixed(3)).join(", ")} s/step (alone: one rank's share costs less), so 2 ranks can gain at most ${ceiling.toFixed(2)}× here; they gained ${(best(1) / best(2)).toFixed(2)}× = ${((best(1) / best(2) / ceiling) * 100).toFixed(0)} % of it`,
    );
  }
}

if (process.argv.includes("--worker")) {
  process.once("message", (a) =>
    worker(a as WorkerArgs).catch((e) => {
      process.stderr.write(`${(e as Error).stack}\n`);
      process.exit(1);
    }),
  );
} else {
  await allReduceBench();
  if (!process.argv.includes("--no-rft")) await rftBench();
}
