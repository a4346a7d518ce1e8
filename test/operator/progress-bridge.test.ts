/**
 * The operator's NATS progress bridge on its own (no Kubernetes): a real nats-server, the bridge's `expect` and
 * `wake` callbacks recorded, Date on a fake clock (node:test's mock timers; the NATS client's own timers stay
 * real) so the wake rate limit is checked at exact instants. Connects in the background once NATS comes up; keeps
 * the latest good message per job; wakes at most once per interval, a final status at once; drops and counts
 * each kind of bad message; nothing of an attempt after its "succeeded"; control messages on the job's subject.
 * progress.test.ts runs the same bridge inside the operator against the harness.
 */
import assert from "node:assert/strict";
import { Writable } from "node:stream";
import { after, before, mock, test } from "node:test";
import { connect, type NatsConnection } from "nats";
import { pino } from "pino";
import { type DropReason, ProgressBridge } from "../../operator/progress.js";
import { controlSubject, progressSubject } from "../../proto/finetunejob-status.js";
import { freePort, NatsServer } from "../ledger/nats-server.js";

const DIR = "/data/rft/ns/job";
const good = {
  step: 3,
  totalSteps: 10,
  trainRewardMean: 0.25,
  validRewardMean: null,
  checkpoints: [{ name: "step-000003", step: 3, validRewardMean: 0.5, path: `${DIR}/checkpoints/step-000003` }],
  status: "running",
  rank: 0,
  attempt: 2,
  time: "2026-01-01T00:00:00Z",
};

let nats: NatsServer;
let nc: NatsConnection;
let bridge: ProgressBridge;
const wakes: string[] = [];
const drops: DropReason[] = [];
const warnings: string[] = [];
const wakeWaiters: (() => void)[] = [];

async function nextWake(): Promise<string> {
  const n = wakes.length;
  while (wakes.length === n) await new Promise<void>((r) => wakeWaiters.push(r));
  return wakes[wakes.length - 1]!;
}

const pub = (subject: string, body: unknown) =>
  nc.publish(subject, new TextEncoder().encode(typeof body === "string" ? body : JSON.stringify(body)));

before(async () => {
  mock.timers.enable({ apis: ["Date"], now: 1_000_000 });
  const port = await freePort(); // nothing listens yet
  bridge = new ProgressBridge({
    url: `nats://127.0.0.1:${port}`,
    wake: (key, delayMs) => {
      wakes.push(`${key} +${delayMs}`);
      for (const w of wakeWaiters.splice(0)) w();
    },
    expect: (key) => (["ns/job", "ns/job2"].includes(key) ? { attempt: 2, replicas: 2, outputDir: DIR } : undefined),
    onDrop: (reason) => drops.push(reason),
    log: pino(
      { level: "warn" },
      new Writable({
        write(chunk, _enc, cb) {
          warnings.push(JSON.parse(chunk.toString()).msg);
          cb();
        },
      }),
    ),
    retryInitialMs: 20,
    retryMaxMs: 100,
  });
  bridge.start();
  assert.equal(bridge.connected, false);
  nats = await NatsServer.start(port);
  await bridge.waitConnected();
  nc = await connect({ servers: nats.url });
});

after(async () => {
  mock.timers.reset();
  await bridge?.close();
  await nc?.close();
  await nats?.kill();
});

test("NATS down at start: one warning line, then it connects in the background", () => {
  assert.equal(bridge.connected, true);
  assert.equal(warnings.filter((w) => /is not reachable/.test(w)).length, 1, warnings.join("\n"));
});

test("wakes: the first at once, then at most one per 2 s; a final status at once; nothing after succeeded", async () => {
  const s = progressSubject("ns", "job");
  pub(s, good);
  assert.equal(await nextWake(), "ns/job +0");
  pub(s, { ...good, step: 4 });
  assert.equal(await nextWake(), "ns/job +2000", "the next wake is due 2 s after the last");
  mock.timers.tick(2500);
  pub(s, { ...good, step: 5 });
  assert.equal(await nextWake(), "ns/job +1500", "2 s after the wake scheduled for +2000");
  pub(s, { ...good, step: 10, status: "succeeded", fineTunedModel: `${DIR}/model` });
  assert.equal(await nextWake(), "ns/job +0");
  assert.equal(bridge.get("ns/job")?.status, "succeeded");

  pub(s, { ...good, step: 10, status: "failed", error: "forged" }); // same attempt, after its "succeeded"
  pub(progressSubject("ns", "job2"), good); // a sentinel: the bridge reads messages in order
  assert.equal(await nextWake(), "ns/job2 +0");
  assert.deepEqual(drops, ["after_final"]);
  assert.equal(bridge.get("ns/job")?.status, "succeeded");
});

test("each kind of bad message is dropped and counted, and reconcile is never woken by one", async () => {
  drops.length = 0;
  const s = progressSubject("ns", "job");
  const { checkpoints: _, ...noCheckpoints } = good;
  pub(s, "x".repeat(70 * 1024)); // too_large
  pub("rft.jobs.NS!.job.progress", good); // bad_subject
  pub(s, "{not json"); // not_json
  pub(s, noCheckpoints); // schema
  pub(progressSubject("ns", "other"), good); // unknown_job
  pub(s, { ...good, attempt: 1 }); // wrong_attempt
  pub(s, { ...good, rank: 2 }); // bad_rank
  pub(s, { ...good, step: 11 }); // step_past_total
  pub(s, { ...good, status: "succeeded", fineTunedModel: "/etc/shadow" }); // path_outside_output
  pub(s, { ...good, checkpoints: [{ ...good.checkpoints[0], path: `${DIR}/../other/x` }] }); // path_outside_output
  const judge = { trainPrompt: 1, trainCompletion: 1, trainCached: 0, evalPrompt: 0, evalCompletion: 0, evalCached: 0 };
  const usage = { trainingSeconds: 4.5, trainedTokens: 10, judgeTokens: { "gpt-4o": judge } };
  pub(s, { ...good, usage: { ...usage, trainingSeconds: -1 } }); // schema
  pub(s, { ...good, usage: { ...usage, judgeTokens: { ["m".repeat(257)]: judge } } }); // schema
  const many = Object.fromEntries(Array.from({ length: 18 }, (_, i) => [`m${i}`, judge]));
  pub(s, { ...good, usage: { ...usage, judgeTokens: many } }); // schema
  pub(s, { ...good, usage: { ...usage, judgeTokens: { m: { ...judge, extra: 1 } } } }); // schema
  pub(s, { ...good, checkpoints: [{ ...good.checkpoints[0], createdAt: "yesterday" }] }); // schema
  const before = wakes.length;
  const createdAt = "2026-01-01T00:00:00Z";
  const sentinel = { ...good, step: 7, status: "paused", usage, checkpoints: [{ ...good.checkpoints[0], createdAt }] };
  pub(progressSubject("ns", "job2"), sentinel); // the sentinel (with usage and a checkpoint time: kept)
  assert.equal(await nextWake(), "ns/job2 +0");
  assert.equal(wakes.length, before + 1, "only the sentinel woke a job");
  assert.deepEqual(drops, [
    "too_large",
    "bad_subject",
    "not_json",
    "schema",
    "unknown_job",
    "wrong_attempt",
    "bad_rank",
    "step_past_total",
    "path_outside_output",
    "path_outside_output",
    "schema",
    "schema",
    "schema",
    "schema",
    "schema",
  ]);
  assert.equal(bridge.get("ns/job")?.step, 10, "still the succeeded message");
  assert.deepEqual(bridge.get("ns/job2")?.usage, usage);
  assert.equal(bridge.get("ns/job2")?.checkpoints[0]?.createdAt, createdAt);
});

test("control messages go to the job's control subject as {action}", async () => {
  const sub = nc.subscribe(controlSubject("ns", "job"), { max: 1 });
  await nc.flush();
  bridge.control("ns", "job", "pause");
  for await (const m of sub) assert.deepEqual(JSON.parse(new TextDecoder().decode(m.data)), { action: "pause" });
});
