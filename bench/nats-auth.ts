/**
 * What NATS identities cost (run: npx tsx bench/nats-auth.ts [--events N]), side by side in one run on two
 * real nats-servers, one without client authentication and one in operator (JWT) mode as the chart runs it:
 *  1. a trainer's publisher: N signed ledger events through NatsPublisher (fsynced spool, JetStream acks),
 *     events/s;
 *  2. the ledger service: ingest of those N events with full verification (and, with authentication, the
 *     job's key read from RFT_JOB_KEYS), events/s.
 * Each mode runs twice, interleaved, and the better run counts. Connection setup (one JWT check, a nonce
 * signature) happens once per process and is not in these figures.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { NatsPublisher } from "../ledger/publisher.js";
import { LedgerService } from "../ledger/service.js";
import { generateKeyPair, publicKeyB64 } from "../ledger/sign.js";
import { mintUser, newTrust, serverAuthConfig } from "../operator/nats-credentials.js";
import { ProgressBridge } from "../operator/progress.js";
import { createLogger } from "../proto/log.js";
import { ledgerPermissions, natsAuthFromCreds, operatorPermissions, trainerPermissions } from "../proto/nats-auth.js";
import { NatsServer } from "../test/ledger/nats-server.js";
import { syntheticJob } from "../test/ledger/synthetic.js";

const i = process.argv.indexOf("--events");
const N = i > 0 ? Number(process.argv[i + 1]) : 5000;
const fmt = (n: number) => Math.round(n).toLocaleString("en-US");
const tmp = mkdtempSync(join(tmpdir(), "rft-bench-nats-auth-"));
console.log(`nats-auth bench: node ${process.version}, ${cpus().length} CPUs, load ${loadavg()[0]!.toFixed(2)}`);

async function run(auth: boolean): Promise<{ publish: number; ingest: number }> {
  const trust = newTrust();
  const nats = await NatsServer.start(undefined, auth ? { auth: serverAuthConfig(trust) } : {});
  const as = (u: ReturnType<typeof mintUser>) => (auth ? natsAuthFromCreds(u.creds) : undefined);
  const jobKey = generateKeyPair();
  const steps = Math.max(1, Math.ceil(N / 6));
  const job = syntheticJob({ job: `team-a/bench-${auth ? "auth" : "open"}`, steps, jobKey });
  const events = job.events.slice(0, N);
  // The ledger makes the stream and the key bucket; the operator registers the job's key.
  const svc0 = await LedgerService.start({
    servers: nats.url,
    key: generateKeyPair().privateKey,
    logLevel: "silent",
    ...(auth ? { keyRegistry: "kv" as const, auth: as(mintUser(trust, "ledger", ledgerPermissions)) } : {}),
  });
  await svc0.stop();
  if (auth) {
    const bridge = new ProgressBridge({
      url: nats.url,
      auth: as(mintUser(trust, "operator", operatorPermissions)),
      wake: () => {},
      expect: () => undefined,
      log: createLogger("bench"),
    });
    bridge.start();
    await bridge.waitConnected();
    await bridge.registerJobKey({
      namespace: "team-a",
      name: "bench-auth",
      uid: "u",
      publicKey: publicKeyB64(jobKey.publicKey),
      registeredAt: new Date().toISOString(),
    });
    await bridge.close();
  }
  const pub = await NatsPublisher.connect({
    servers: nats.url,
    spoolPath: join(tmp, `${auth}.spool`),
    ...(auth ? { auth: as(mintUser(trust, "trainer", (k) => trainerPermissions("team-a", "bench-auth", k))) } : {}),
  });
  let t = performance.now();
  for (const ev of events) pub.write(ev);
  await pub.flush();
  const publish = events.length / ((performance.now() - t) / 1000);
  await pub.close();
  t = performance.now();
  const svc = await LedgerService.start({
    servers: nats.url,
    key: generateKeyPair().privateKey,
    logLevel: "silent",
    durable: "bench",
    ...(auth ? { keyRegistry: "kv" as const, auth: as(mintUser(trust, "ledger", ledgerPermissions)) } : {}),
  });
  while ((svc.state.jobs.get(job.job)?.log.size ?? 0) < events.length) await new Promise((r) => setTimeout(r, 5));
  const ingest = events.length / ((performance.now() - t) / 1000);
  await svc.stop();
  await nats.stop();
  return { publish, ingest };
}

// Interleaved (open, auth, auth, open), best of two each: the first run also warms the JIT and the disk.
const runs = [await run(false), await run(true), await run(true), await run(false)];
const best = (rs: { publish: number; ingest: number }[]) => ({
  publish: Math.max(...rs.map((r) => r.publish)),
  ingest: Math.max(...rs.map((r) => r.ingest)),
});
const open = best([runs[0]!, runs[3]!]);
const authed = best([runs[1]!, runs[2]!]);
const row = (what: string, a: number, b: number) =>
  console.log(
    `${what}: no auth ${fmt(a)} events/s, JWT users ${fmt(b)} events/s (${((b / a - 1) * 100).toFixed(1)} %)`,
  );
row(`1. publisher (${fmt(N)} events, fsynced spool, JetStream acks)`, open.publish, authed.publish);
row("2. ledger service ingest (verify + Merkle + ack)", open.ingest, authed.ingest);
rmSync(tmp, { recursive: true, force: true });
process.exit(0);
