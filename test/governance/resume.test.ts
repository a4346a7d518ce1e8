/**
 * Resuming a governed job never rewrites its ledger: a job that stops after its last checkpoint (a crash, a
 * preempted pod) resumes from that checkpoint, and the chain goes on from the ledger's last durable event with a
 * signed job.resumed naming the checkpoint and the abandoned steps. Locally (the event file, torn last line
 * included) and through NATS JetStream to the ledger service.
 */
import assert from "node:assert/strict";
import { execFile, spawnSync } from "node:child_process";
import { promisify } from "node:util";
import { appendFileSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { exportBundle } from "../../ledger/bundle.js";
import { eventHash, verifyChain } from "../../ledger/chain.js";
import { NatsPublisher, readEventsFile } from "../../ledger/publisher.js";
import { LedgerService } from "../../ledger/service.js";
import { generateKeyPair } from "../../ledger/sign.js";
import { formatReport, verifyBundle } from "../../ledger/verify.js";
import type { LedgerEvent } from "../../proto/ledger-events.js";
import { groupDigests, groupsOf } from "../../trainer/governance/digests.js";
import { loadManifest } from "../../trainer/job/manifest.js";
import { runTrainerPod } from "../../trainer/job/pod.js";
import { runJob } from "../../trainer/job/run-job.js";
import { loadHfModel } from "../../trainer/model/hf-io.js";
import { disposeModel } from "../../trainer/model/model.js";
import { NatsServer } from "../ledger/nats-server.js";
import { rftManifest, tempJobDir, tinyModel } from "../helpers/rft-job.js";

const VARIED = "def grade(sample, item):\n    return min(1.0, len(set(sample['output_text'])) / 8)\n";

/** A 6-step job (24 rows, batch 4) on a 2-layer model; checkpoints every `evalInterval` steps. */
async function sixStepJob(prefix: string, evalInterval: number) {
  const dir = tempJobDir(prefix);
  await tinyModel(join(dir, "model"), { layers: 2 });
  const file = rftManifest(
    dir,
    { model: "model" },
    { nEpochs: 1, batchSize: 4, samplesPerPrompt: 4, maxCompletionTokens: 6, evalInterval, evalSamples: 1 },
  );
  const m = loadManifest(file);
  (m.job.spec.method.reinforcement!.grader as any).graders.correct.source = VARIED;
  const rows = readFileSync(m.paths.trainingFile, "utf8").split("\n").slice(0, 24).join("\n");
  writeFileSync(m.paths.trainingFile, `${rows}\n`);
  return { dir, manifest: m };
}

/** Runs until `step` is applied, then fails as a crash would (after the step's ledger event, before a checkpoint). */
async function crashAfter(o: Parameters<typeof runJob>[0], step: number) {
  await assert.rejects(
    runJob({
      ...o,
      hooks: {
        onStep: (m) => {
          if (m.data.step === step) throw new Error(`simulated crash after step ${step}`);
        },
      },
    }),
    /simulated crash/,
  );
}

async function modelDigests(dir: string): Promise<Record<string, string>> {
  const m = await loadHfModel(dir, { tokenizer: false });
  try {
    return groupDigests(m.params, groupsOf(m.config));
  } finally {
    disposeModel(m);
  }
}

const stepsOf = (evs: LedgerEvent[]) => evs.flatMap((e) => (e.type === "update.applied" ? [e.body.step] : []));
const rft = (...args: string[]) =>
  spawnSync(process.execPath, ["--import", "tsx", "cli/rft.ts", ...args], { encoding: "utf8" });

test("a crash after the last checkpoint: the ledger keeps the abandoned steps, job.resumed follows them, the model is bit for bit", async () => {
  const { dir, manifest } = await sixStepJob("resume-crash", 3);
  const whole = await runJob({ manifest, outDir: join(dir, "whole"), backend: "wasm" });
  assert.equal(whole.status, "succeeded");

  const out = join(dir, "out");
  await crashAfter({ manifest, outDir: out, backend: "wasm" }, 5);
  const file = join(out, "ledger", "events.jsonl");
  const beforeResume = readEventsFile(file);
  assert.deepEqual(stepsOf(beforeResume), [1, 2, 3, 4, 5]);
  // The crash also tore the line being written.
  appendFileSync(file, '{"v":1,"job":"local/');

  const r = await runJob({ manifest, outDir: out, backend: "wasm" });
  assert.equal(r.status, "succeeded");
  const events = readEventsFile(file);
  assert.equal(verifyChain(events).failures.length, 0, "one unbroken chain, seqs without gaps");
  assert.deepEqual(events.slice(0, beforeResume.length), beforeResume, "nothing the first attempt wrote changed");
  const resumed = events[beforeResume.length]!;
  assert.equal(resumed.type, "job.resumed");
  const ckpt = beforeResume.find((e) => e.type === "checkpoint.saved" && e.body.step === 3)!;
  assert.deepEqual(resumed.type === "job.resumed" && resumed.body.checkpoint, {
    name: "step-000003",
    step: 3,
    seq: ckpt.seq,
    event: eventHash(ckpt),
  });
  assert.deepEqual(resumed.type === "job.resumed" && resumed.body.abandonedSteps, [4, 5]);
  assert.deepEqual(
    resumed.type === "job.resumed" && resumed.body.groups,
    ckpt.type === "checkpoint.saved" && ckpt.body.groups,
  );
  assert.deepEqual(stepsOf(events), [1, 2, 3, 4, 5, 4, 5, 6]);
  assert.equal(events.filter((e) => e.type === "job.started").length, 1);

  // Exact resume still holds: the final weights are those of the uninterrupted run.
  const final = await modelDigests(join(out, "model"));
  assert.deepEqual(final, await modelDigests(join(dir, "whole", "model")));
  // The user-facing progress says what happened.
  assert.match(
    readFileSync(join(out, "events.jsonl"), "utf8"),
    /Resuming from checkpoint step-000003 \(step 3\); steps 4-5 of the stopped attempt abandoned/,
  );

  // The auditor's view: export, verify against the delivered model; the report names the resume.
  assert.equal(rft("keys", "generate", "--out", join(dir, "ledger")).status, 0);
  const exp = rft("audit", "export", out, "--key", join(dir, "ledger.key"));
  assert.equal(exp.status, 0, exp.stderr);
  writeFileSync(join(dir, "bundle.json"), exp.stdout);
  const ok = rft("audit", "verify", join(dir, "bundle.json"), "--model", join(out, "model"));
  assert.equal(ok.status, 0, ok.stdout + ok.stderr);
  assert.match(ok.stdout, /steps: 6 /);
  assert.match(
    ok.stdout,
    /resumed 1 time \(2 abandoned steps\):\n\s+event seq \d+: back to step-000003 \(step 3\), abandoned steps: 4-5/,
  );
  assert.match(ok.stdout, /VERIFIED/);

  // Started again once finished: nothing is trained or written (the ledger is closed).
  const again = await runJob({ manifest, outDir: out, backend: "wasm" });
  assert.equal(again.status, "succeeded");
  assert.equal(readEventsFile(file).length, events.length);
});

test("a crash before the first checkpoint restarts from the base model with job.resumed, not a second job.started", async () => {
  const { dir, manifest } = await sixStepJob("resume-base", 100);
  const out = join(dir, "out");
  await crashAfter({ manifest, outDir: out, backend: "wasm" }, 2);
  const r = await runJob({ manifest, outDir: out, backend: "wasm" });
  assert.equal(r.status, "succeeded");
  const events = readEventsFile(join(out, "ledger", "events.jsonl"));
  assert.equal(events.filter((e) => e.type === "job.started").length, 1);
  const resumed = events.find((e) => e.type === "job.resumed");
  assert.ok(resumed?.type === "job.resumed");
  assert.equal(resumed.body.checkpoint, null);
  assert.deepEqual(resumed.body.abandonedSteps, [1, 2]);
  assert.deepEqual(stepsOf(events), [1, 2, 1, 2, 3, 4, 5, 6]);
  const report = verifyBundle(exportBundle(events, generateKeyPair().privateKey), {
    modelDigests: await modelDigests(join(out, "model")),
  });
  assert.deepEqual(report.failures, [], formatReport(report));
  assert.deepEqual(report.resumes, [{ seq: resumed.seq, checkpoint: null, step: 0, abandonedSteps: [1, 2] }]);
});

async function waitFor(what: string, cond: () => boolean | Promise<boolean>, ms = 30_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

test("through NATS: a job stopped mid-run and resumed reaches the ledger service as one chain, every event once", async () => {
  const { dir, manifest } = await sixStepJob("resume-nats", 3);
  const nats = await NatsServer.start();
  const ledgerKey = generateKeyPair();
  const svc = await LedgerService.start({ servers: nats.url, key: ledgerKey.privateKey, headIntervalMs: 100 });
  const job = "team-a/resumed-job";
  const out = join(dir, "out");
  const spoolPath = join(out, "ledger", "spool.jsonl");
  try {
    // Attempt 1 crashes after step 5; its publisher dies without flushing (unacknowledged events stay spooled).
    const pub1 = await NatsPublisher.connect({ servers: nats.url, spoolPath });
    await crashAfter({ manifest, outDir: out, backend: "wasm", ledgerSink: pub1, jobRef: job }, 5);
    await pub1.close();
    // Attempt 2: a new publisher (replaying the spool), resumed from checkpoint step-000003.
    const pub2 = await NatsPublisher.connect({ servers: nats.url, spoolPath });
    const r = await runJob({ manifest, outDir: out, backend: "wasm", ledgerSink: pub2, jobRef: job });
    assert.equal(r.status, "succeeded");
    await pub2.flush();
    await pub2.close();
    await waitFor("job.finished at the ledger", () => svc.state.jobs.get(job)?.events.at(-1)?.type === "job.finished");

    const log = svc.state.jobs.get(job)!;
    assert.deepEqual(
      log.events.map((e) => e.seq),
      log.events.map((_, i) => i),
    );
    assert.equal(new Set(log.hashes).size, log.events.length, "every event once");
    assert.deepEqual(stepsOf(log.events), [1, 2, 3, 4, 5, 4, 5, 6]);
    const text = await svc.metrics.metrics();
    const failures = text
      .split("\n")
      .filter((l) => l.startsWith("rft_ledger_verification_failures_total"))
      .reduce((a, l) => a + Number(l.split(" ").pop()), 0);
    assert.equal(failures, 0, "no conflicts, no chain errors");
    // No event file on the checkpoint volume: the ledger went to NATS.
    assert.equal(readEventsFile(join(out, "ledger", "events.jsonl")).length, 0);

    await waitFor("a head over every event", () => log.head?.size === log.events.length);
    // (asynchronously: the service answers from this process)
    const exp = await promisify(execFile)(process.execPath, [
      "--import",
      "tsx",
      "cli/rft.ts",
      "audit",
      "export",
      "--ledger",
      svc.url,
      "--job",
      job,
    ]);
    writeFileSync(join(dir, "bundle.json"), exp.stdout);
    const ok = rft("audit", "verify", join(dir, "bundle.json"), "--model", join(out, "model"));
    assert.equal(ok.status, 0, ok.stdout + ok.stderr);
    assert.match(ok.stdout, /resumed 1 time \(2 abandoned steps\)/);
    assert.match(ok.stdout, /VERIFIED/);
  } finally {
    await svc.stop();
    await nats.stop();
  }
});

test("a trainer pod with RFT_LEDGER_NATS_URL publishes its ledger to JetStream, spooled on the checkpoint volume", async () => {
  const { dir, manifest } = await sixStepJob("pod-ledger", 3);
  const nats = await NatsServer.start();
  const svc = await LedgerService.start({ servers: nats.url, key: generateKeyPair().privateKey, headIntervalMs: 100 });
  const ckpt = join(dir, "ckpt");
  const env = {
    RFT_LEDGER_NATS_URL: nats.url,
    RFT_CHECKPOINT_DIR: ckpt,
    RFT_JOB_NAMESPACE: "team-b",
    RFT_JOB_NAME: "pod-job",
    RFT_MIN_STEP_MS: "0",
  };
  try {
    const r = await runTrainerPod({ configFile: manifest.file, env, signals: false });
    assert.deepEqual(r, { status: "succeeded", exitCode: 0 });
    const job = "team-b/pod-job";
    await waitFor("job.finished at the ledger", () => svc.state.jobs.get(job)?.events.at(-1)?.type === "job.finished");
    assert.deepEqual(stepsOf(svc.state.jobs.get(job)!.events), [1, 2, 3, 4, 5, 6]);
    assert.equal(
      readEventsFile(join(ckpt, "ledger", "events.jsonl")).length,
      0,
      "no ledger file beside the checkpoints",
    );
    assert.equal(readFileSync(join(ckpt, "ledger", "spool.jsonl"), "utf8"), "", "the spool is empty once acknowledged");
  } finally {
    await svc.stop();
    await nats.stop();
  }
});
