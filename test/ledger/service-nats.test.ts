/**
 * The ledger service and publisher against a real nats-server (started here, random port, temp store):
 * end to end, NATS restarted mid-stream, ledger restarted mid-stream, forged events.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { connect } from "nats";
import { bundleJsonText, verifyBundleFile } from "../../ledger/bundle-file.js";
import { encodeEvent, nextEvent } from "../../ledger/chain.js";
import { verifyConsistency, verifyInclusion } from "../../ledger/merkle.js";
import { FileSink, NatsPublisher, readEventsFile } from "../../ledger/publisher.js";
import { LedgerService } from "../../ledger/service.js";
import { generateKeyPair, keyId, publicKeyB64 } from "../../ledger/sign.js";
import { headProgressionError, treeHeadError } from "../../ledger/tree-head.js";
import { verifyBundle } from "../../ledger/verify.js";
import { type LedgerEvent, ledgerSubject } from "../../proto/ledger-events.js";
import { NatsServer } from "./nats-server.js";
import { syntheticJob } from "./synthetic.js";

let tmp: string;
before(() => {
  tmp = mkdtempSync(join(tmpdir(), "rft-ledger-test-"));
});
after(() => rmSync(tmp, { recursive: true, force: true }));

async function waitFor(what: string, cond: () => boolean | Promise<boolean>, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}
const get = async (url: string) => {
  const r = await fetch(url);
  return { status: r.status, body: (await r.json()) as any };
};
async function metric(svc: LedgerService, name: string, label = ""): Promise<number> {
  const text = await svc.metrics.metrics();
  let sum = 0;
  for (const line of text.split("\n"))
    if (line.startsWith(name) && line.includes(label)) sum += Number(line.split(" ").pop());
  return sum;
}
const sizeOf = (svc: LedgerService, job: string) => svc.state.jobs.get(job)?.log.size ?? 0;

test("end to end: publish, verify, Merkle log, signed heads in KV, audit API, bundle", async () => {
  const nats = await NatsServer.start();
  const ledgerKey = generateKeyPair();
  const svc = await LedgerService.start({ servers: nats.url, key: ledgerKey.privateKey, headIntervalMs: 100 });
  const pub = await NatsPublisher.connect({ servers: nats.url, spoolPath: join(tmp, "e2e.spool") });
  try {
    const job = syntheticJob({ job: "team-a/e2e.v1", steps: 8, sink: pub });
    await pub.flush();
    await waitFor("all events", () => sizeOf(svc, job.job) === job.events.length);
    await waitFor("a head", () => svc.state.jobs.get(job.job)!.head?.size === job.events.length);
    const base = `${svc.url}/v1/jobs/team-a/e2e.v1`;

    const head = (await get(`${base}/head`)).body;
    assert.equal(treeHeadError(head, publicKeyB64(ledgerKey.publicKey)), null);
    // The head is in the KV bucket too.
    const nc = await connect({ servers: nats.url });
    const kv = await nc.jetstream().views.kv("RFT_LEDGER_HEADS");
    const stored = JSON.parse(Buffer.from((await kv.get("team-a.e2e_v1"))!.value).toString());
    assert.deepEqual(stored, head);
    await nc.close();

    const evs = (await get(`${base}/events?from=3&limit=2`)).body;
    assert.deepEqual(evs.events, job.events.slice(3, 5));
    const inc = (await get(`${base}/inclusion?seq=5`)).body;
    assert.equal(inc.root, head.root);
    const leaf = Buffer.from(inc.leafHash, "hex");
    assert.ok(
      verifyInclusion(
        5,
        inc.size,
        leaf,
        inc.proof.map((h: string) => Buffer.from(h, "hex")),
        Buffer.from(head.root, "hex"),
      ),
    );
    const cons = (await get(`${base}/consistency?from=7&to=${head.size}`)).body;
    assert.ok(
      verifyConsistency(
        7,
        head.size,
        cons.proof.map((h: string) => Buffer.from(h, "hex")),
        Buffer.from(cons.root1, "hex"),
        Buffer.from(head.root, "hex"),
      ),
    );
    assert.equal((await get(`${base}/inclusion?seq=999`)).status, 400);
    assert.equal((await get(`${svc.url}/v1/jobs/team-a/nope/head`)).status, 404);

    // The streamed form of the same bundle verifies too.
    const jsonl = await fetch(`${base}/bundle?format=jsonl`);
    assert.equal(jsonl.status, 200);
    writeFileSync(join(tmp, "e2e.jsonl"), Buffer.from(await jsonl.arrayBuffer()));
    assert.ok((await verifyBundleFile(join(tmp, "e2e.jsonl"))).ok);
    // The JSON document is streamed too, laid out as `rft audit export` writes it (events last but the trailer).
    const docRes = await fetch(`${base}/bundle`);
    assert.equal(docRes.headers.get("content-type"), "application/json");
    const doc = await docRes.text();
    assert.equal(doc, bundleJsonText(JSON.parse(doc)));
    const bundle = (await get(`${base}/bundle`)).body;
    const report = verifyBundle(bundle, {
      modelDigests: job.finalModel,
      datasetRows: job.dataset,
      ledgerKey: keyId(ledgerKey.publicKey),
    });
    assert.deepEqual(report.failures, []);
    // The auditor's report of the same bundle, served as a self-contained page.
    const page = await fetch(`${base}/report`);
    assert.equal(page.status, 200);
    assert.match(page.headers.get("content-type") ?? "", /^text\/html/);
    const html = await page.text();
    assert.match(html, /id="verdict">VERIFIED: every check passed</);
    assert.match(html, /<h3>clinic-a<\/h3>/);
    assert.match(html, /<td>#\d+<\/td><td>clinic-a<\/td><td>bad_credential<\/td>/);
    assert.match(await (await fetch(`${base}/report?format=md`)).text(), /^# Training audit: team-a\/e2e\.v1/);
    assert.equal((await fetch(`${base}/report?format=pdf`)).status, 400);
    assert.equal(await metric(svc, "rft_ledger_events_ingested_total"), job.events.length);
    assert.equal(await metric(svc, "rft_ledger_verification_failures_total"), 0);
  } finally {
    await pub.close();
    await svc.stop();
    await nats.stop();
  }
});

test("NATS restarted mid-stream: no event is lost", async () => {
  const nats = await NatsServer.start();
  const svc = await LedgerService.start({ servers: nats.url, key: generateKeyPair().privateKey, headIntervalMs: 100 });
  const spool = join(tmp, "restart.spool");
  const pub = await NatsPublisher.connect({ servers: nats.url, spoolPath: spool, ackTimeoutMs: 1000 });
  try {
    const job = syntheticJob({ job: "team-a/nats-restart", steps: 300, checkpointEvery: 50 });
    const n = job.events.length;
    const half = Math.floor(n / 2);
    for (const ev of job.events.slice(0, half)) pub.write(ev);
    await pub.flush();
    await nats.kill(); // SIGKILL, no clean shutdown
    for (const ev of job.events.slice(half, half + 50)) pub.write(ev); // NATS is down: these only reach the spool
    await new Promise((r) => setTimeout(r, 300));
    assert.ok(pub.backlog >= 50, `backlog ${pub.backlog}`);
    assert.ok(readEventsFile(spool).length >= 50, "unacknowledged events are on disk");
    await nats.startProcess();
    for (const ev of job.events.slice(half + 50)) pub.write(ev);
    await pub.flush();
    assert.equal(readFileSync(spool, "utf8"), "", "the spool is empty once everything is acknowledged");
    await waitFor("all events after the restart", () => sizeOf(svc, job.job) === n);
    const j = svc.state.jobs.get(job.job)!;
    assert.deepEqual(
      j.events.map((e) => e.seq),
      [...Array(n).keys()],
    );
    assert.equal(await metric(svc, "rft_ledger_verification_failures_total"), 0);
    await svc.signHeads();
    const bundle = (await get(`${svc.url}/v1/jobs/team-a/nats-restart/bundle`)).body;
    assert.ok(verifyBundle(bundle).ok);
  } finally {
    await pub.close();
    await svc.stop();
    await nats.stop();
  }
});

test("ledger restarted mid-stream: resumes from its durable consumer without duplicates", async () => {
  const nats = await NatsServer.start();
  const ledgerKey = generateKeyPair();
  const pub = await NatsPublisher.connect({ servers: nats.url, spoolPath: join(tmp, "ledger-restart.spool") });
  const job = syntheticJob({ job: "team-b/ledger-restart", steps: 200 });
  const n = job.events.length;
  const half = Math.floor(n / 2);
  let svc = await LedgerService.start({ servers: nats.url, key: ledgerKey.privateKey, headIntervalMs: 100 });
  try {
    for (const ev of job.events.slice(0, half)) pub.write(ev);
    await pub.flush();
    await waitFor("first half", () => sizeOf(svc, job.job) === half);
    await svc.signHeads();
    const headA = svc.state.jobs.get(job.job)!.head!;
    await svc.stop();

    for (const ev of job.events.slice(half)) pub.write(ev); // published while the ledger is down
    await pub.flush();

    svc = await LedgerService.start({ servers: nats.url, key: ledgerKey.privateKey, headIntervalMs: 100 });
    assert.equal(sizeOf(svc, job.job), half, "state rebuilt from the stream up to the ack floor");
    assert.deepEqual(svc.state.jobs.get(job.job)!.head, headA, "the last signed head is restored from KV");
    await waitFor("second half", () => sizeOf(svc, job.job) === n);
    const j = svc.state.jobs.get(job.job)!;
    assert.deepEqual(
      j.events.map((e) => e.seq),
      [...Array(n).keys()],
    );
    assert.deepEqual(j.events, job.events);
    assert.equal(await metric(svc, "rft_ledger_events_ingested_total"), n - half, "only new events are ingested");
    assert.equal(await metric(svc, "rft_ledger_verification_failures_total"), 0);
    await svc.signHeads();
    const headB = j.head!;
    assert.equal(headProgressionError(headA, headB, j.log.consistencyProof(headA.size, headB.size)), null);
  } finally {
    await pub.close();
    await svc.stop();
    await nats.stop();
  }
});

test("forged events (wrong key, unregistered job key, garbage) are rejected and counted", async () => {
  const nats = await NatsServer.start();
  const jobKey = generateKeyPair();
  const svc = await LedgerService.start({
    servers: nats.url,
    key: generateKeyPair().privateKey,
    headIntervalMs: 100,
    keyRegistry: { "team-c/*": publicKeyB64(jobKey.publicKey) },
  });
  const nc = await connect({ servers: nats.url });
  const js = nc.jetstream();
  const send = (ev: LedgerEvent, subject = ledgerSubject(ev.job)) => js.publish(subject, encodeEvent(ev).bytes);
  try {
    const job = syntheticJob({ job: "team-c/forge", steps: 2, jobKey });
    for (const ev of job.events.slice(0, 5)) await send(ev);
    await waitFor("first events", () => sizeOf(svc, job.job) === 5);

    // The next event, signed by another key (keyId claims the job key).
    const mallory = generateKeyPair();
    const head = { job: job.job, seq: 5, prev: encodeEvent(job.events[4]!).hash };
    const forged = nextEvent(
      head,
      "checkpoint.saved",
      { step: 0, name: "evil", groups: {} },
      job.events[5]!.time,
      mallory.privateKey,
      keyId(jobKey.publicKey),
    ).event;
    await send(forged);
    // A job started with a key that is not the registered one.
    const rogue = syntheticJob({ job: "team-c/rogue", steps: 1, jobKey: mallory });
    await send(rogue.events[0]!);
    // An event on another job's subject, and a payload that is not JSON.
    await send(job.events[5]!, ledgerSubject("team-c/other"));
    await js.publish(ledgerSubject(job.job), new TextEncoder().encode("{not json"));

    await waitFor("4 rejections", async () => (await metric(svc, "rft_ledger_verification_failures_total")) === 4);
    assert.equal(await metric(svc, "rft_ledger_verification_failures_total", 'reason="signature"'), 1);
    assert.equal(await metric(svc, "rft_ledger_verification_failures_total", 'reason="key"'), 1);
    assert.equal(await metric(svc, "rft_ledger_verification_failures_total", 'reason="subject"'), 1);
    assert.equal(await metric(svc, "rft_ledger_verification_failures_total", 'reason="malformed"'), 1);
    assert.ok(!svc.state.jobs.has("team-c/rogue"));

    // The genuine history continues past the forgery.
    for (const ev of job.events.slice(5)) await send(ev);
    await waitFor("all genuine events", () => sizeOf(svc, job.job) === job.events.length);
    assert.deepEqual(svc.state.jobs.get(job.job)!.events, job.events);
  } finally {
    await nc.close();
    await svc.stop();
    await nats.stop();
  }
});

test("FileSink writes the same canonical JSONL the ledger ingests", () => {
  const path = join(tmp, "local", "events.jsonl");
  const sink = new FileSink(path);
  const job = syntheticJob({ steps: 2, sink });
  const lines = readFileSync(path, "utf8").trimEnd().split("\n");
  assert.equal(lines.length, job.events.length);
  for (const [i, l] of lines.entries()) assert.equal(l, encodeEvent(job.events[i]!).bytes.toString());
  assert.deepEqual(readEventsFile(path), job.events);
});

test("NatsPublisher.lastEvent: the job's last event from the stream, skipping a foreign message on the subject", async () => {
  const nats = await NatsServer.start();
  const spoolPath = join(tmp, "last.spool");
  const pub = await NatsPublisher.connect({ servers: nats.url, spoolPath });
  try {
    const job = syntheticJob({ job: "team-a/last-event", steps: 3, sink: pub });
    const signer = publicKeyB64(job.jobKey.publicKey);
    await pub.flush();
    assert.equal(await pub.lastEvent("team-a/other", signer), null, "no events for another job");
    assert.deepEqual(await pub.lastEvent(job.job, signer), job.events.at(-1), "last by subject");
    // Someone else publishes on the job's subject: not an event of the job's key, so it is skipped.
    const nc = await connect({ servers: nats.url });
    const forged = syntheticJob({ job: job.job, steps: 1 }).events.at(-1)!;
    await nc.jetstream().publish(ledgerSubject(job.job), encodeEvent(forged).bytes);
    await nc.jetstream().publish(ledgerSubject(job.job), new TextEncoder().encode("garbage"));
    await nc.close();
    assert.deepEqual(await pub.lastEvent(job.job, signer), job.events.at(-1), "scanned past the foreign messages");
  } finally {
    await pub.close();
    await nats.stop();
  }
});
