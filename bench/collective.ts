/**
 * The trainer collective over loopback, against the machine's limit.
 *
 *   npx tsx bench/collective.ts [--sizes 1,4,16,64] [--ranks 2] [--reps 5] [--chunk-kb 1024] [--no-rft] [--rft-steps N]
 *
 * 1. All-reduce throughput: N rank processes (one per core) on 127.0.0.1 all-reduce float32 tensors of each
 *    size; per size, 1 warm-up + `reps` timed runs, each timed from a barrier to the slowest rank's finish.
 *    Reported: best and median time, algorithm bandwidth (tensor bytes ÷ time, what a trainer feels) and
 *    its ratio to a plain memcpy of the same bytes in this process (`Uint8Array#set`, best of 5, warm
 *    pages). Target: ≥ 50 % of memcpy at 64 MB, 2 ranks.
 * 2. RFT steps/s with 1 and 2 ranks (`rft run --replicas`) on the sort-digits example (bench/rft.ts builds the
 *    warm-started model; this reuses it): 1 warm-up step + N timed steps, timed from the first step's end
 *    to the last step's end in the metrics events. Target: ≥ 1.6× from 1 to 2 ranks on this 2-core machine.
 */
import { type ChildProcess, fork } from "node:child_process";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { Collective } from "../trainer/collective/collective.js";
import { freePorts, loopbackPeers } from "../test/collective/ports.js";

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
  await c.barrier();
  await c.close();
  process.send!(out);
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
        new Promise<Record<number, number[]>>((res, rej) => {
          const k = fork(fileURLToPath(import.meta.url), ["--worker"], {
            execArgv: ["--import", "tsx"],
            cwd: root,
            stdio: ["ignore", "inherit", "inherit", "ipc"],
          });
          kids.push(k);
          k.once("message", (m) => res(m as Record<number, number[]>));
          k.once("exit", (code) => code !== 0 && rej(new Error(`rank ${rank} exited with ${code}`)));
          k.send({ rank, peers, sizes, reps, chunkBytes } satisfies WorkerArgs);
        }),
    ),
  );
  log(`all-reduce, ${ranks} ranks on 127.0.0.1 (one process each), ${chunkBytes / 1024} KiB frames, ${reps} reps`);
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
}
