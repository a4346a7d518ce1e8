/**
 * NATS with identities, against a real nats-server configured the way the chart configures it (operator JWT
 * mode: nats.conf includes the auth.conf the operator writes). Every role gets only its subjects: a job's
 * trainer cannot publish another job's progress or ledger events, send control, touch the stream or the key
 * registry; the operator cannot publish ledger events nor delete the stream; the ledger cannot forge events
 * nor write job keys; an anonymous client cannot connect. And the ledger trusts only keys the operator
 * registered: no first event claims a job.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { connect, type NatsConnection } from "nats";
import { encodeEvent } from "../../ledger/chain.js";
import { jobKeysBucket } from "../../ledger/nats.js";
import { NatsPublisher } from "../../ledger/publisher.js";
import { LedgerService } from "../../ledger/service.js";
import { generateKeyPair, publicKeyB64 } from "../../ledger/sign.js";
import {
  type MintedUser,
  mintUser,
  newTrust,
  type NatsTrust,
  serverAuthConfig,
} from "../../operator/nats-credentials.js";
import { ProgressBridge } from "../../operator/progress.js";
import { controlSubject, progressSubject } from "../../proto/finetunejob-status.js";
import { createLogger } from "../../proto/log.js";
import { LEDGER_STREAM, ledgerSubject } from "../../proto/ledger-events.js";
import {
  jobKeyName,
  ledgerPermissions,
  natsAuthFromCreds,
  natsTlsOptions,
  operatorPermissions,
  trainerPermissions,
} from "../../proto/nats-auth.js";
import { NatsServer } from "./nats-server.js";
import { syntheticJob } from "./synthetic.js";

let trust: NatsTrust;
let nats: NatsServer;
let tmp: string;
let ledger: LedgerService;
let ledgerUser: MintedUser;
let operatorUser: MintedUser;
const trainer = (ns: string, name: string) =>
  mintUser(trust, `trainer-${ns}-${name}`, (k) => trainerPermissions(ns, name, k));

/** A connection as `user` that records the permission violations the server reports to it. */
async function as(user: MintedUser): Promise<{ nc: NatsConnection; violations: string[] }> {
  const nc = await connect({ servers: nats.url, ...natsAuthFromCreds(user.creds) });
  const violations: string[] = [];
  void (async () => {
    for await (const s of nc.status())
      if (s.type === "error" && s.permissionContext)
        violations.push(`${s.permissionContext.operation} ${s.permissionContext.subject}`);
  })();
  return { nc, violations };
}

async function waitFor(what: string, cond: () => boolean | Promise<boolean>, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

async function metric(svc: LedgerService, name: string, label = ""): Promise<number> {
  let sum = 0;
  for (const line of (await svc.metrics.metrics()).split("\n"))
    if (line.startsWith(name) && line.includes(label)) sum += Number(line.split(" ").pop());
  return sum;
}

before(async () => {
  tmp = mkdtempSync(join(tmpdir(), "rft-nats-auth-"));
  trust = newTrust();
  nats = await NatsServer.start(undefined, { auth: serverAuthConfig(trust) });
  ledgerUser = mintUser(trust, "rft-ledger", ledgerPermissions);
  operatorUser = mintUser(trust, "rft-operator", operatorPermissions);
  ledger = await LedgerService.start({
    servers: nats.url,
    key: generateKeyPair().privateKey,
    headIntervalMs: 100,
    keyRegistry: "kv",
    auth: natsAuthFromCreds(ledgerUser.creds),
  });
});
after(async () => {
  await ledger?.stop();
  await nats?.stop();
  rmSync(tmp, { recursive: true, force: true });
});

test("an anonymous client, or a user signed by another account, cannot connect", async () => {
  await assert.rejects(connect({ servers: nats.url }), /Authorization Violation/);
  const stranger = mintUser(newTrust(), "stranger", (k) => trainerPermissions("team-a", "job-1", k));
  await assert.rejects(connect({ servers: nats.url, ...natsAuthFromCreds(stranger.creds) }), /Authorization Violation/);
});

test("a job's trainer publishes its own progress and ledger events, and nothing of another job", async () => {
  const op = await as(operatorUser);
  const a = await as(trainer("team-a", "job-1"));
  const seen: string[] = [];
  const sub = op.nc.subscribe("rft.jobs.*.*.progress");
  void (async () => {
    for await (const m of sub) seen.push(m.subject);
  })();
  await op.nc.flush();
  try {
    a.nc.publish(progressSubject("team-a", "job-1"), "{}");
    a.nc.publish(progressSubject("team-a", "job-2"), "{}"); // another job's progress
    a.nc.publish(progressSubject("team-b", "job-1"), "{}"); // same name, another namespace
    a.nc.publish(controlSubject("team-a", "job-1"), '{"action":"cancel"}'); // only the operator sends control
    a.nc.subscribe(controlSubject("team-a", "job-2")); // another job's control
    await a.nc.flush();
    await waitFor("the allowed progress message", () => seen.length >= 1);
    await waitFor("4 violations", () => a.violations.length >= 4);
    assert.deepEqual(seen, [progressSubject("team-a", "job-1")]);
    assert.match(a.violations.join("\n"), /^publish rft\.jobs\.team-a\.job-2\.progress$/m);
    assert.match(a.violations.join("\n"), /^publish rft\.jobs\.team-a\.job-1\.control$/m);
    assert.match(a.violations.join("\n"), /^subscription rft\.jobs\.team-a\.job-2\.control$/m);

    // Ledger: its own subject is acknowledged by JetStream; another job's is refused.
    const js = a.nc.jetstream();
    const ack = await js.publish(ledgerSubject("team-a/job-1"), "x");
    assert.equal(ack.stream, LEDGER_STREAM);
    await assert.rejects(js.publish(ledgerSubject("team-a/job-2"), "x", { timeout: 2000 }), /Permissions Violation/);
    // No JetStream API: not the stream, not the consumer, not the buckets.
    await assert.rejects(a.nc.jetstreamManager(), /Permissions Violation/);
    await assert.rejects(
      a.nc.request(`$JS.API.STREAM.DELETE.${LEDGER_STREAM}`, "", { timeout: 2000 }),
      /Permissions Violation/,
    );
    await assert.rejects(
      js.publish(`$KV.RFT_JOB_KEYS.${jobKeyName("team-a", "job-1")}`, "{}", { timeout: 2000 }),
      /Permissions Violation/,
    );
    await assert.rejects(
      js.publish("$KV.RFT_LEDGER_HEADS.team-a.job-1", "{}", { timeout: 2000 }),
      /Permissions Violation/,
    );
  } finally {
    await a.nc.close();
    await op.nc.close();
  }
});

test("the operator may not publish ledger events nor manage the stream; the ledger may not forge events or keys", async () => {
  const op = await as(operatorUser);
  const led = await as(ledgerUser);
  try {
    await assert.rejects(
      op.nc.jetstream().publish(ledgerSubject("team-a/job-1"), "x", { timeout: 2000 }),
      /Permissions Violation/,
    );
    await assert.rejects(
      op.nc.request(`$JS.API.STREAM.DELETE.${LEDGER_STREAM}`, "", { timeout: 2000 }),
      /Permissions Violation/,
    );
    await assert.rejects(
      led.nc.jetstream().publish(ledgerSubject("team-a/job-1"), "x", { timeout: 2000 }),
      /Permissions Violation/,
    );
    await assert.rejects(
      led.nc.jetstream().publish(`$KV.RFT_JOB_KEYS.${jobKeyName("team-a", "x")}`, "{}", { timeout: 2000 }),
      /Permissions Violation/,
    );
    led.nc.publish(controlSubject("team-a", "job-1"), '{"action":"cancel"}');
    await led.nc.flush();
    await waitFor("the ledger's control violation", () => led.violations.length >= 1);
    // The ledger does manage the stream (it made it).
    const info = await (await led.nc.jetstreamManager()).streams.info(LEDGER_STREAM);
    assert.equal(info.config.allow_direct, true);
  } finally {
    await op.nc.close();
    await led.nc.close();
  }
});

test("only the key the operator registered starts a job: no first event claims one", async () => {
  const bridge = new ProgressBridge({
    url: nats.url,
    auth: natsAuthFromCreds(operatorUser.creds),
    wake: () => {},
    expect: () => undefined,
    log: createLogger("test"),
  });
  bridge.start();
  await bridge.waitConnected();
  const jobKey = generateKeyPair();
  const base = { uid: "u-1", registeredAt: new Date().toISOString() };
  try {
    assert.equal(
      await bridge.registerJobKey({
        namespace: "team-r",
        name: "good",
        publicKey: publicKeyB64(jobKey.publicKey),
        ...base,
      }),
      "registered",
    );
    // Write-once: the same key again is fine, another key is a conflict (and changes nothing).
    assert.equal(
      await bridge.registerJobKey({
        namespace: "team-r",
        name: "good",
        publicKey: publicKeyB64(jobKey.publicKey),
        ...base,
      }),
      "exists",
    );
    const other = publicKeyB64(generateKeyPair().publicKey);
    assert.equal(
      await bridge.registerJobKey({ namespace: "team-r", name: "good", publicKey: other, ...base }),
      "conflict",
    );

    // The real trainer, with its job's user, through the publisher (spool, acks, resume read of its subject).
    const good = syntheticJob({ job: "team-r/good", steps: 2, jobKey });
    const pub = await NatsPublisher.connect({
      servers: nats.url,
      spoolPath: join(tmp, "good.spool"),
      auth: natsAuthFromCreds(trainer("team-r", "good").creds),
    });
    for (const ev of good.events) pub.write(ev);
    await pub.flush();
    assert.equal((await pub.lastEvent("team-r/good", publicKeyB64(jobKey.publicKey)))?.seq, good.events.length - 1);
    await pub.close();
    await waitFor(
      "the registered job's log",
      () => ledger.state.jobs.get("team-r/good")?.log.size === good.events.length,
    );

    // A job whose user exists but whose key was never registered: its job.started is rejected, no log is made.
    const before = await metric(ledger, "rft_ledger_verification_failures_total", 'reason="key"');
    const stray = syntheticJob({ job: "team-r/unregistered", steps: 1 });
    const t = await as(trainer("team-r", "unregistered"));
    await t.nc.jetstream().publish(ledgerSubject("team-r/unregistered"), encodeEvent(stray.events[0]!).bytes);
    await waitFor(
      "the rejection",
      async () => (await metric(ledger, "rft_ledger_verification_failures_total", 'reason="key"')) > before,
    );
    assert.equal(ledger.state.jobs.has("team-r/unregistered"), false);
    await t.nc.close();

    // The registry is what the operator wrote.
    const led = await as(ledgerUser);
    const kv = await jobKeysBucket(led.nc, { bindOnly: true });
    const rec = JSON.parse(Buffer.from((await kv.get(jobKeyName("team-r", "good")))!.value).toString());
    assert.equal(rec.publicKey, publicKeyB64(jobKey.publicKey));
    await led.nc.close();
  } finally {
    await bridge.close();
  }
});

test("rft nats init writes a trust whose auth.conf a real nats-server accepts", async () => {
  const { spawnSync } = await import("node:child_process");
  const dir = join(tmp, "init");
  const r = spawnSync(process.execPath, ["--import", "tsx", "cli/rft.ts", "nats", "init", "--dir", dir], {
    encoding: "utf8",
  });
  assert.equal(r.status, 0, r.stderr);
  const { readFileSync } = await import("node:fs");
  const s = await NatsServer.start(undefined, { auth: readFileSync(join(dir, "auth.conf"), "utf8") });
  try {
    const creds = spawnSync(
      process.execPath,
      ["--import", "tsx", "cli/rft.ts", "nats", "creds", "--trust", join(dir, "trust.json"), "--job", "team-a/j"],
      { encoding: "utf8" },
    );
    assert.equal(creds.status, 0, creds.stderr);
    writeFileSync(join(dir, "j.creds"), creds.stdout);
    const nc = await connect({ servers: s.url, ...natsAuthFromCreds(creds.stdout) });
    nc.publish(progressSubject("team-a", "j"), "{}");
    await nc.flush();
    await nc.close();
    const lc = await connect({ servers: s.url, ...natsAuthFromCreds(readFileSync(join(dir, "ledger.creds"), "utf8")) });
    await lc.jetstreamManager();
    await lc.close();
  } finally {
    await s.stop();
  }
});

test("with TLS, a client verifies the server against the chart's CA; without the CA it cannot connect", async () => {
  const { execFileSync } = await import("node:child_process");
  const d = join(tmp, "tls");
  const { mkdirSync } = await import("node:fs");
  mkdirSync(d, { recursive: true });
  const ssl = (...a: string[]) => execFileSync("openssl", a, { cwd: d, stdio: "pipe" });
  /** A P-256 key NAME.key and either a self-signed CA NAME.crt or a request NAME.csr. */
  const ec = (name: string, cn: string, ca: boolean) =>
    ssl(
      "req",
      ...(ca ? ["-x509", "-days", "2"] : []),
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:P-256",
      "-nodes",
      "-keyout",
      `${name}.key`,
      "-out",
      `${name}.${ca ? "crt" : "csr"}`,
      "-subj",
      `/CN=${cn}`,
    );
  ec("ca", "rft-nats-ca", true);
  ec("tls", "localhost", false);
  ec("other", "another-ca", true);
  writeFileSync(join(d, "san.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n");
  ssl(
    "x509",
    "-req",
    "-in",
    "tls.csr",
    "-CA",
    "ca.crt",
    "-CAkey",
    "ca.key",
    "-CAcreateserial",
    "-out",
    "tls.crt",
    "-days",
    "2",
    "-extfile",
    "san.ext",
  );
  const s = await NatsServer.start(undefined, {
    auth: serverAuthConfig(trust),
    tls: { certFile: join(d, "tls.crt"), keyFile: join(d, "tls.key") },
  });
  try {
    const user = natsAuthFromCreds(trainer("team-t", "j").creds);
    const nc = await connect({ servers: s.url, ...user, ...natsTlsOptions(join(d, "ca.crt")) });
    nc.publish(progressSubject("team-t", "j"), "{}");
    await nc.flush();
    assert.equal(nc.info?.tls_required, true);
    await nc.close();
    // Plain text, or TLS against another CA, is refused.
    await assert.rejects(connect({ servers: s.url, ...user }));
    await assert.rejects(connect({ servers: s.url, ...user, ...natsTlsOptions(join(d, "other.crt")) }));
    assert.throws(() => natsTlsOptions(join(d, "tls.key")), /not a PEM certificate/);
  } finally {
    await s.stop();
  }
});
