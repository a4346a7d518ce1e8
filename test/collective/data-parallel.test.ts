/**
 * Data-parallel RFT: 2 ranks with global batch B against 1 rank with batch B (same seed), the multi-rank
 * ledger (every rank's update.applied, rank 0's step.committed) verified as a whole, and the layout helpers.
 */
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { exportBundle } from "../../ledger/bundle.js";
import { readEventsFile } from "../../ledger/publisher.js";
import { eventHash } from "../../ledger/chain.js";
import { generateKeyPair, loadPrivateKey } from "../../ledger/sign.js";
import { EventWriter } from "../../ledger/writer.js";
import type { LedgerEvent } from "../../proto/ledger-events.js";
import { verifyBundle } from "../../ledger/verify.js";
import { globalShare, shardOf } from "../../trainer/collective/data-parallel.js";
import { loadManifest } from "../../trainer/job/manifest.js";
import { runJob } from "../../trainer/job/run-job.js";
import { SafetensorsReader } from "../../trainer/model/safetensors.js";
import { rftManifest, tempJobDir, tinyModel } from "../helpers/rft-job.js";
import { freePorts, loopbackPeers } from "./ports.js";

/** A random model scores 0 on the example's grader; this one gives its random outputs varied rewards. */
const VARIED = "def grade(sample, item):\n    return min(1.0, len(set(sample['output_text'])) / 8)\n";

async function weights(dir: string): Promise<Map<string, Buffer>> {
  const r = await SafetensorsReader.open(join(dir, "model.safetensors"));
  const out = new Map<string, Buffer>();
  for (const n of r.names()) out.set(n, Buffer.from((await r.readF32(n)).data.buffer));
  await r.close();
  return out;
}

const metrics = (dir: string) =>
  readFileSync(join(dir, "events.jsonl"), "utf8")
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l))
    .filter((e) => e.type === "metrics")
    .map((e) => ({
      step: e.data.step,
      train: e.data.scores.train_reward_mean,
      valid: e.data.scores.valid_reward_mean,
      samples: e.data.usage.samples.train_samples_count,
      tokens: e.data.trained_tokens,
    }));

test("shards and the agreed gradient layout", () => {
  assert.deepEqual(
    [0, 1, 2].map((r) => shardOf(8, 3, r)),
    [
      { lo: 0, hi: 2 },
      { lo: 2, hi: 5 },
      { lo: 5, hi: 8 },
    ],
  );
  const tensors = new Map([
    ["a", ["a.w"]],
    ["b", ["b.w", "b.v"]],
    ["c", ["c.w"]],
  ]);
  const g = globalShare(
    [
      { lengths: [3, 4], parts: [["b", "c"]] },
      { lengths: [], parts: [] },
      { lengths: [5], parts: [["a"], ["b", "c"]] },
    ],
    2,
    tensors,
  );
  assert.deepEqual(g, { lengths: [3, 4, 5], offset: 2, names: ["b.w", "b.v", "c.w", "a.w"] });
});

test("2 ranks with global batch B = 1 rank with batch B, bit for bit (weights, rewards, ledger digests); the 2-rank ledger verifies", async () => {
  const dir = tempJobDir("dp-equiv");
  await tinyModel(join(dir, "model"));
  // B = 4 prompts × 4 samples per step, 3 steps; dynamic sampling off so every group trains.
  const file = rftManifest(
    dir,
    { model: "model" },
    {
      nEpochs: 1,
      batchSize: 4,
      samplesPerPrompt: 4,
      maxCompletionTokens: 8,
      evalInterval: 3,
      evalSamples: 1,
      dynamicSampling: false,
      loss: "dapo",
    },
  );
  const rows = (f: string, n: number) =>
    writeFileSync(join(dir, f), `${readFileSync(join(dir, f), "utf8").split("\n").slice(0, n).join("\n")}\n`);
  rows("train.jsonl", 12);
  rows("valid.jsonl", 6);
  const manifest = loadManifest(file);
  (manifest.job.spec.method.reinforcement!.grader as any).graders.correct.source = VARIED;

  // One rank, accumulating the step's gradient over two micro-batches of 8 sequences (each rank's share
  // below): the single-rank sum is g₀ + g₁, the 2-rank all-reduce g₀ + g₁ too (float addition is
  // commutative), so the weights must match bit for bit.
  const one = await runJob({ manifest, outDir: join(dir, "one"), backend: "wasm", microBatch: 8 });
  assert.equal(one.status, "succeeded");
  const peers = loopbackPeers(await freePorts(2));
  const two = await Promise.all(
    [0, 1].map((rank) =>
      runJob({
        manifest,
        outDir: join(dir, "two"),
        backend: "wasm",
        microBatch: 8,
        ranks: {
          rank,
          worldSize: 2,
          peers,
          secret: "data-parallel-test-secret-0123",
          rendezvousTimeoutMs: 30_000,
          opTimeoutMs: 120_000,
        },
      }),
    ),
  );
  for (const r of two) assert.equal(r.status, "succeeded");

  assert.deepEqual(metrics(join(dir, "two")), metrics(join(dir, "one")), "same rewards, samples and tokens per step");
  // Each validation's graded samples (the baseline and step 3): rank 0 writes every rank's, in row order.
  const validation = (run: string, step: number) =>
    readFileSync(join(dir, run, "validation", `step-${step}.jsonl`), "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l))
      .map((v) => [v.line, v.sample_index, v.seed, v.output_text, v.grader.reward, v.grader.sub_rewards]);
  for (const step of [0, 3]) {
    assert.equal(validation("one", step).length, 6);
    assert.deepEqual(validation("two", step), validation("one", step), `validation/step-${step}.jsonl`);
  }
  const a = await weights(join(dir, "one", "model"));
  const b = await weights(join(dir, "two", "model"));
  const base = await weights(join(dir, "model"));
  for (const [n, w] of a) assert.ok(w.equals(b.get(n)!), `${n} differs between 1 and 2 ranks`);
  assert.ok(
    [...a].some(([n, w]) => !w.equals(base.get(n)!)),
    "training changed the weights",
  );

  // The ledgers: the same weight digests after every step and at the end.
  const ev1 = readEventsFile(join(dir, "one", "ledger", "events.jsonl"));
  const ev2 = readEventsFile(join(dir, "two", "ledger", "events.jsonl"));
  const after1 = ev1
    .filter((e) => e.type === "update.applied")
    .map((e) => Object.fromEntries(Object.entries((e.body as any).weights).map(([g, w]) => [g, (w as any).after])));
  const committed = ev2.filter((e) => e.type === "step.committed");
  assert.equal(committed.length, 3);
  assert.deepEqual(
    committed.map((e) => (e.body as any).weights),
    after1,
  );
  const fin = (evs: typeof ev1) => evs.find((e) => e.type === "job.finished")!.body;
  assert.deepEqual(fin(ev2), fin(ev1));
  assert.equal((ev2[0]!.body as any).worldSize, 2);
  // Each step: rank 0's and rank 1's update.applied, then step.committed naming both; rows split between them.
  for (const c of committed) {
    const step = (c.body as any).step;
    const ups = ev2.filter((e) => e.type === "update.applied" && (e.body as any).step === step);
    assert.deepEqual(
      ups.map((e) => (e.body as any).rank),
      [0, 1],
    );
    const rowsOf = (e: (typeof ups)[0]) => new Set(Object.values((e.body as any).contributions).flat());
    const [r0, r1] = ups.map(rowsOf);
    assert.ok(r0!.size > 0 && r1!.size > 0);
    assert.ok(
      [...r0!].every((id) => !r1!.has(id)),
      "a row trained on two ranks in one step",
    );
  }

  // The auditor: the 2-rank bundle verifies as a whole…
  const ledgerKey = generateKeyPair().privateKey;
  const report = verifyBundle(exportBundle(ev2, ledgerKey));
  assert.ok(report.ok, JSON.stringify(report.failures, null, 1));
  assert.equal(report.steps, 3);

  // …and a validly signed ledger that misstates the ranks does not. `resign` rebuilds the chain with the job's
  // key after an edit (step.committed's hashes follow the re-signed events), so only the edit is wrong.
  const jobKey = loadPrivateKey(readFileSync(join(dir, "two", "ledger", "job-key.pem"), "utf8"));
  const resign = (edit: (e: LedgerEvent) => LedgerEvent | null): LedgerEvent[] => {
    const w = new EventWriter({ job: ev2[0]!.job, privateKey: jobKey });
    const hashes = new Map<string, string>();
    const out: LedgerEvent[] = [];
    for (const e0 of ev2) {
      const e = edit(structuredClone(e0));
      if (!e) continue;
      if (e.type === "step.committed") for (const r of (e.body as any).ranks) r.event = hashes.get(r.event) ?? r.event;
      const n = w.append(e.type, e.body as never);
      hashes.set(eventHash(e0), eventHash(n));
      out.push(n);
    }
    return out;
  };
  const failures = (evs: LedgerEvent[]) =>
    verifyBundle(exportBundle(evs, ledgerKey)).failures.map((f) => `${f.check}: ${f.reason}`);
  const isStep2 = (e: LedgerEvent, type: string, rank?: number) =>
    e.type === type && (e.body as any).step === 2 && (rank === undefined || (e.body as any).rank === rank);

  // A step.committed that names rank 0 twice and leaves out rank 1.
  const twice = failures(
    resign((e) => {
      if (isStep2(e, "step.committed")) (e.body as any).ranks[1] = { ...(e.body as any).ranks[0] };
      return e;
    }),
  );
  assert.ok(
    twice.some((f) => /lists rank 0 twice/.test(f)),
    twice.join("\n"),
  );
  assert.ok(
    twice.some((f) => /omits rank 1/.test(f)),
    twice.join("\n"),
  );
  // A step whose rank 1 never reported.
  const missing = failures(resign((e) => (isStep2(e, "update.applied", 1) ? null : e)));
  assert.ok(
    missing.some((f) => /step 2 has update.applied from 1 of 2 ranks/.test(f)),
    missing.join("\n"),
  );
  assert.ok(
    missing.some((f) => /rank 1 has no update.applied for step 2/.test(f)),
    missing.join("\n"),
  );
  // Rank 1 claims a row rank 0 trained in the same step.
  const r0 = ev2.find((e) => isStep2(e, "update.applied", 0))!;
  const [g0, ids0] = Object.entries((r0.body as any).contributions)[0]! as [string, string[]];
  const double = failures(
    resign((e) => {
      if (isStep2(e, "update.applied", 1)) {
        const c = (e.body as any).contributions;
        c[g0] = [...new Set([...(c[g0] ?? []), ids0[0]!])].sort();
        (e.body as any).gradients[g0] ??= (r0.body as any).gradients[g0];
      }
      return e;
    }),
  );
  assert.ok(
    double.some((f) => new RegExp(`row ${ids0[0]} was trained by rank 0 and rank 1 in step 2`).test(f)),
    double.join("\n"),
  );
});
