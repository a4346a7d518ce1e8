/**
 * Ledger figures (run: npx tsx bench/ledger.ts [--events N] [--ingest N] [--gov-steps N]):
 *  1. events/s ingested with full verification by the ledger service from a real nats-server (events are
 *     published to RFT_LEDGER first, then the service is started and timed until all are in its Merkle log);
 *  2. the same decisions in process (LedgerState + prepareBatch, no NATS);
 *  3. time to verify a provenance bundle file of N events (default 100,000), written as `rft audit export` writes
 *     it, in both forms (JSONL and the JSON document), counting everything the user of `rft audit verify` waits
 *     for: the CLI process from start to exit (startup, reading, parsing, every check), with its CPU time and
 *     peak RSS;
 *  4. the governance overhead per training step of the example (examples/sort-digits rft.yaml on the
 *     warm-started model of bench/example-model.ts): the trainer's `timing.step.governance` against the step.
 * Targets (issue 5): ingest ≥ 5,000 events/s; 100k-event bundle verified in < 10 s; governance ≤ 5 % of a step.
 * Printed first: Ed25519 verify alone, one thread, node:crypto (OpenSSL) vs libsodium, and which one the pool uses.
 */
import { spawn } from "node:child_process";
import { verify as cryptoVerify } from "node:crypto";
import {
  closeSync,
  createWriteStream,
  existsSync,
  fsyncSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { createRequire } from "node:module";
import { join } from "node:path";
import { connect } from "nats";
import { exportBundle } from "../ledger/bundle.js";
import { bundleJsonlLines, bundleJsonText, writeLines } from "../ledger/bundle-file.js";
import { encodeEvent } from "../ledger/chain.js";
import { ensureLedgerStream } from "../ledger/nats.js";
import { LedgerService } from "../ledger/service.js";
import { generateKeyPair, rawPublicKey } from "../ledger/sign.js";
import { LedgerState, prepareBatch } from "../ledger/state.js";
import { sharedVerifyPool } from "../ledger/verify-pool.js";
import { ledgerSubject } from "../proto/ledger-events.js";
import { loadManifest } from "../trainer/job/manifest.js";
import { runJob } from "../trainer/job/run-job.js";
import { NatsServer } from "../test/ledger/nats-server.js";
import { syntheticJob } from "../test/ledger/synthetic.js";
import { BENCH_WORK, EXAMPLE, warmStartedModel } from "./example-model.js";

const arg = (name: string, dflt: number) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const TOTAL = arg("--events", 100_000);
const INGEST = Math.min(arg("--ingest", 20_000), TOTAL);
const GOV_STEPS = arg("--gov-steps", 20);
if (TOTAL < 2 * 500 + 10) throw new Error("--events must be at least 1,010");
const fmt = (n: number) => Math.round(n).toLocaleString("en-US");

console.log(
  `ledger bench: node ${process.version}, ${cpus().length} CPUs (${cpus()[0]?.model}), load ${loadavg()
    .map((x) => x.toFixed(2))
    .join(" ")}`,
);

let t = performance.now();
const rowsPerAuthority = 500;
const steps = Math.ceil((TOTAL - 2 * rowsPerAuthority - 3) / 1.01) + 2; // + a checkpoint every 100 steps
const job = syntheticJob({
  job: "bench/run-1",
  numLayers: 4,
  rowsPerAuthority,
  steps,
  rowsPerStep: 8,
  checkpointEvery: 100,
  unfinished: true,
});
const events = job.events.slice(0, TOTAL);
if (events.length < TOTAL) throw new Error(`generated only ${events.length} events`);
const bytes = events.map((e) => encodeEvent(e).bytes);
const avg = bytes.reduce((s, b) => s + b.length, 0) / bytes.length;
console.log(
  `generated and signed ${fmt(events.length)} events (4-layer model, 15 parameter groups, ${fmt(avg)} bytes/event avg) in ${((performance.now() - t) / 1000).toFixed(1)} s`,
);

// Ed25519 verify alone, one thread, over one update.applied event's signing bytes (2,000 verifications each)
{
  const probe = encodeEvent(events.find((e) => e.type === "update.applied")!);
  const sig = Buffer.from(probe.event.sig, "base64");
  const pub = job.jobKey.publicKey;
  const raw = rawPublicKey(pub);
  const perVerify = (verify: () => boolean) => {
    for (let i = 0; i < 200; i++) verify();
    const t0 = performance.now();
    for (let i = 0; i < 2000; i++) if (!verify()) throw new Error("the probe event does not verify");
    return ((performance.now() - t0) * 1000) / 2000;
  };
  const openssl = perVerify(() => cryptoVerify(null, probe.signing, pub, sig));
  let libsodium: string;
  try {
    const sodium = createRequire(import.meta.url)("sodium-native") as {
      crypto_sign_verify_detached(sig: Uint8Array, message: Uint8Array, publicKey: Uint8Array): boolean;
    };
    const us = perVerify(() => sodium.crypto_sign_verify_detached(sig, probe.signing, raw));
    libsodium = `${us.toFixed(1)} µs (${(openssl / us).toFixed(2)}× faster)`;
  } catch (e) {
    libsodium = `cannot load (${(e as Error).message})`;
  }
  const pool = sharedVerifyPool();
  console.log(
    `Ed25519 verify, one thread, ${fmt(probe.signing.length)}-byte signing bytes: node:crypto (OpenSSL) ${openssl.toFixed(1)} µs, libsodium ${libsodium}; the verify pool uses ${pool ? await pool.ed25519Ready() : "no workers (libuv's thread pool, node:crypto)"}`,
  );
}

// 1. the service, from a real nats-server
{
  const nats = await NatsServer.start();
  const nc = await connect({ servers: nats.url });
  await ensureLedgerStream(await nc.jetstreamManager());
  const js = nc.jetstream();
  const subject = ledgerSubject(job.job);
  for (let i = 0; i < INGEST; i += 1000)
    await Promise.all(bytes.slice(i, Math.min(i + 1000, INGEST)).map((b) => js.publish(subject, b)));
  await nc.close();
  t = performance.now();
  const svc = await LedgerService.start({ servers: nats.url, key: generateKeyPair().privateKey, logLevel: "silent" });
  while ((svc.state.jobs.get(job.job)?.log.size ?? 0) < INGEST) {
    await new Promise((r) => setTimeout(r, 5));
  }
  const s = (performance.now() - t) / 1000;
  console.log(
    `1. ledger service ingest from nats-server (verify schema + Ed25519 + chain, Merkle append, ack): ${fmt(INGEST)} events in ${s.toFixed(2)} s = ${fmt(INGEST / s)} events/s (target ≥ 5,000: ${(INGEST / s / 5000).toFixed(2)}×; load ${loadavg()[0]!.toFixed(2)})`,
  );
  await svc.stop();
  await nats.stop();
}

// 2. the same decisions in process
{
  const state = new LedgerState();
  const subject = ledgerSubject(job.job);
  t = performance.now();
  for (let i = 0; i < INGEST; i += 512) {
    const batch = bytes.slice(i, Math.min(i + 512, INGEST)).map((data) => ({ subject, data }));
    for (const p of await prepareBatch(state, batch)) state.ingest(p);
  }
  const s = (performance.now() - t) / 1000;
  if (state.jobs.get(job.job)?.log.size !== INGEST) throw new Error("in-process ingest lost events");
  console.log(`2. in-process ingest (same checks, no NATS): ${fmt(INGEST / s)} events/s`);
}

// 3. a bundle of TOTAL events, as files (what `rft audit export` writes and `rft audit verify` reads)
/**
 * The `rft` users run: the compiled CLI (package.json "bin", built by `npm ci`), when dist/ is at least as new as
 * every source it is built from; else the sources through tsx (slower to start: it transpiles).
 */
const RFT = (() => {
  const stale = (dir: string): string | null => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) {
        const s = stale(p);
        if (s) return s;
      } else if (e.name.endsWith(".ts") && !e.name.endsWith(".d.ts")) {
        const js = join("dist", p.replace(/\.ts$/, ".js"));
        if (!existsSync(js) || statSync(js).mtimeMs < statSync(p).mtimeMs) return p;
      }
    }
    return null;
  };
  const why = existsSync("dist/cli/rft.js") ? ["cli", "ledger", "proto"].map(stale).find((x) => x) : "dist/cli/rft.js";
  if (!why) {
    console.log("rft CLI timed: dist/cli/rft.js (the installed `rft`)");
    return ["dist/cli/rft.js"];
  }
  console.log(`rft CLI timed: cli/rft.ts through tsx (dist is missing or older than ${why}: \`npm run build\`)`);
  return ["--import", "tsx", "cli/rft.ts"];
})();
{
  // As `rft audit export` sees them: events read back from a run's events.jsonl (canonical lines).
  const exported = exportBundle(
    bytes.map((b) => JSON.parse(b.toString("utf8"))),
    generateKeyPair().privateKey,
  );
  const dir = mkdtempSync(join(tmpdir(), "rft-ledger-bench-"));
  try {
    const files = {
      jsonl: join(dir, "bundle.jsonl"),
      json: join(dir, "bundle.json"),
    };
    const out = createWriteStream(files.jsonl);
    await writeLines(out, bundleJsonlLines(exported));
    await new Promise<void>((r) => out.end(() => r()));
    writeFileSync(files.json, bundleJsonText(exported));
    // The files at rest, as an auditor receives them: written back to disk (no writeback during the timing).
    for (const path of Object.values(files)) {
      const fd = openSync(path, "r+");
      fsyncSync(fd);
      closeSync(fd);
    }
    for (const [form, path] of Object.entries(files)) {
      const size = statSync(path).size;
      const load = loadavg()[0]!.toFixed(2);
      // What the auditor waits for: the `rft audit verify` process, start to exit (this process stays idle).
      const r = await measured(process.execPath, [...RFT, "audit", "verify", path]);
      if (r.status !== 0 || !/VERIFIED/.test(r.stdout))
        throw new Error(`bundle did not verify: ${r.stdout}${r.stderr}`);
      const s = r.seconds;
      const cpu =
        r.cpuSeconds === null
          ? ""
          : `, CPU ${r.cpuSeconds.toFixed(1)} s = ${(r.cpuSeconds / s).toFixed(2)} of ${cpus().length} cores`;
      const rss = r.peakRssMB === null ? "" : `, peak RSS ${fmt(r.peakRssMB)} MB`;
      console.log(
        `3${form === "jsonl" ? "a" : "b"}. \`rft audit verify\` of a ${fmt(events.length)}-event bundle, ${form === "jsonl" ? "JSONL (the streamed form)" : "JSON document"} (${(size / 1e6).toFixed(0)} MB): ${s.toFixed(2)} s for the whole process (start, read, parse, every check) = ${fmt(events.length / s)} events/s (target < 10 s: ${(10 / s).toFixed(2)}×; load ${load}${cpu}${rss})`,
      );
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
// 4. the governance overhead per training step of the example: hashing the touched groups and signing the
// step's ledger event (the trainer's `timing.step.governance`, part of `training`), against the whole step
{
  const model = await warmStartedModel({ log: () => undefined });
  const manifest = loadManifest(join(EXAMPLE, "rft.yaml"));
  manifest.paths.model = model;
  const rl = manifest.job.spec.method.reinforcement!;
  rl.hyperparameters = { ...rl.hyperparameters, evalInterval: 1_000_000 }; // no validation inside the steps
  const outDir = join(BENCH_WORK, "ledger-governance");
  rmSync(outDir, { recursive: true, force: true });
  const per: { governance: number; step: number }[] = [];
  const res = await runJob({
    manifest,
    outDir,
    stopAfterStep: 1 + GOV_STEPS,
    hooks: {
      onStep: (ev) => {
        const t = ev.data.timing.step as Record<string, number | undefined>;
        per.push({ governance: t.governance ?? NaN, step: t.full_iteration ?? NaN });
      },
    },
  });
  const timed = per.slice(1); // the first step warms up
  if (timed.length < GOV_STEPS || timed.some((x) => !Number.isFinite(x.governance)))
    throw new Error(`governance bench: ${timed.length} steps with timings (${res.status})`);
  const gov = timed.map((x) => x.governance * 1000).sort((a, b) => a - b);
  const meanGov = gov.reduce((a, b) => a + b, 0) / gov.length;
  const meanStep = timed.reduce((a, x) => a + x.step, 0) / timed.length;
  const share = meanGov / 1000 / meanStep;
  console.log(
    `4. governance overhead per training step (examples/sort-digits rft.yaml, ${GOV_STEPS} steps after 1 warm-up; hash the touched groups + sign update.applied): mean ${meanGov.toFixed(2)} ms (p50 ${gov[Math.floor(gov.length / 2)]!.toFixed(2)}, max ${gov.at(-1)!.toFixed(2)}) of a ${meanStep.toFixed(3)} s step = ${(share * 100).toFixed(2)} % (target ≤ 5 %: ${(0.05 / share).toFixed(1)}×)`,
  );
}

/**
 * Runs a command to its exit: wall time, and (Linux, from /proc, sampled every 50 ms, so the last ≤ 50 ms are
 * missing) its peak RSS (VmHWM) and CPU time (user + system).
 */
async function measured(cmd: string, args: string[]) {
  const t0 = performance.now();
  const child = spawn(cmd, args, { env: { ...process.env, RFT_LOG_LEVEL: "silent" } });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
  child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
  const m = { peakRssMB: null as number | null, cpuSeconds: null as number | null };
  const sample = () => {
    try {
      const status = readFileSync(`/proc/${child.pid}/status`, "utf8");
      const hwm = /VmHWM:\s+(\d+) kB/.exec(status);
      if (hwm) m.peakRssMB = Number(hwm[1]) / 1024;
      // utime and stime are fields 14 and 15 of /proc/PID/stat (after the command name in parentheses).
      const stat = readFileSync(`/proc/${child.pid}/stat`, "utf8");
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      m.cpuSeconds = (Number(f[11]) + Number(f[12])) / 100;
    } catch {
      // not Linux, or the process has gone
    }
  };
  const timer = setInterval(sample, 50);
  const status = await new Promise<number | null>((r) => child.on("exit", (code) => r(code)));
  clearInterval(timer);
  return { status, stdout, stderr, seconds: (performance.now() - t0) / 1000, ...m };
}

console.log(
  `load after: ${loadavg()
    .map((x) => x.toFixed(2))
    .join(" ")}`,
);
