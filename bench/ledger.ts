/**
 * Ledger figures (run: npx tsx bench/ledger.ts [--events N] [--ingest N]):
 *  1. events/s ingested with full verification by the ledger service from a real nats-server (events are
 *     published to RFT_LEDGER first, then the service is started and timed until all are in its Merkle log);
 *  2. the same decisions in process (LedgerState + prepareBatch, no NATS);
 *  3. time to verify a provenance bundle of N events (default 100,000) with verifyBundleAsync, after JSON.parse.
 * Targets (issue 5): ingest ≥ 5,000 events/s; 100k-event bundle verified in < 10 s.
 */
import { cpus, loadavg } from "node:os";
import { connect } from "nats";
import { exportBundle } from "../ledger/bundle.js";
import { encodeEvent } from "../ledger/chain.js";
import { ensureLedgerStream } from "../ledger/nats.js";
import { LedgerService } from "../ledger/service.js";
import { generateKeyPair } from "../ledger/sign.js";
import { LedgerState, prepareBatch } from "../ledger/state.js";
import { verifyBundleAsync } from "../ledger/verify.js";
import { ledgerSubject } from "../proto/ledger-events.js";
import { NatsServer } from "../test/ledger/nats-server.js";
import { syntheticJob } from "../test/ledger/synthetic.js";

const arg = (name: string, dflt: number) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const TOTAL = arg("--events", 100_000);
const INGEST = Math.min(arg("--ingest", 20_000), TOTAL);
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
    `1. ledger service ingest from nats-server (verify schema + Ed25519 + chain, Merkle append, ack): ${fmt(INGEST)} events in ${s.toFixed(2)} s = ${fmt(INGEST / s)} events/s (target ≥ 5,000)`,
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

// 3. a bundle of TOTAL events
{
  const bundle = exportBundle(events, generateKeyPair().privateKey);
  const text = JSON.stringify(bundle);
  t = performance.now();
  const parsed = JSON.parse(text);
  const parse = (performance.now() - t) / 1000;
  t = performance.now();
  const report = await verifyBundleAsync(parsed);
  const verify = (performance.now() - t) / 1000;
  if (!report.ok) throw new Error(`bundle did not verify: ${JSON.stringify(report.failures.slice(0, 3))}`);
  console.log(
    `3. verify a ${fmt(events.length)}-event bundle (${(text.length / 1e6).toFixed(0)} MB): ${verify.toFixed(2)} s (+ ${parse.toFixed(2)} s JSON.parse) (target < 10 s)`,
  );
}
console.log(
  `load after: ${loadavg()
    .map((x) => x.toFixed(2))
    .join(" ")}`,
);
