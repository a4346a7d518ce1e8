/**
 * `microBatch` (rft run --micro-batch) changes memory, not the update: one step at micro-batch 4 gives the
 * gradient of the default (16, one pass) within float tolerance. And an RL step leaks no tensors: the count stays flat
 * across steps (Adam's state is made in the first).
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { before, test } from "node:test";
import * as tf from "@tensorflow/tfjs-core";
import { loadManifest } from "../../trainer/job/manifest.js";
import { runJob } from "../../trainer/job/run-job.js";
import { useBackend } from "../../trainer/model/backend.js";
import { rftManifest, tempJobDir, tinyModel } from "../helpers/rft-job.js";

before(() => useBackend("wasm"));

/** A random model scores 0 on the example's grader; this one gives its random outputs varied rewards. */
const VARIED = "def grade(sample, item):\n    return min(1.0, len(set(sample['output_text'])) / 8)\n";

function manifest(dir: string) {
  const m = loadManifest(join(dir, "job.yaml"));
  (m.job.spec.method.reinforcement!.grader as any).graders.correct.source = VARIED;
  return m;
}

// Two samples per prompt, every group kept, micro-batches of 4: every pass holds two prompts. (A pass whose
// sequences all share one prompt sometimes gives non-finite log-probs on wasm: reproduced on main's code,
// see the closing note of issue 20.)
const hyper = {
  nEpochs: 1,
  batchSize: 4,
  samplesPerPrompt: 2,
  dynamicSampling: false,
  maxCompletionTokens: 8,
  evalInterval: 100,
  evalSamples: 1,
};

/** One step; the ledger's per-group gradient L2 norms of it (update.applied). */
async function oneStep(dir: string, microBatch: number | undefined, name: string) {
  const out = join(dir, name);
  const res = await runJob({
    manifest: manifest(dir),
    outDir: out,
    stopAfterStep: 1,
    ...(microBatch !== undefined && { microBatch }),
  });
  assert.equal(res.status, "paused");
  const ev = readFileSync(join(out, "ledger", "events.jsonl"), "utf8")
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l))
    .find((e) => e.type === "update.applied");
  const grads = ev.body.gradients as Record<string, { l2: number }>;
  return new Map(Object.entries(grads).map(([g, v]) => [g, v.l2]));
}

test("micro-batch 4 gives the default micro-batch's gradient within float tolerance", async () => {
  const dir = tempJobDir("micro");
  await tinyModel(join(dir, "model"));
  rftManifest(dir, { model: "model" }, hyper);
  const a = await oneStep(dir, undefined, "default");
  const b = await oneStep(dir, 4, "mb4");
  assert.ok(a.size > 0);
  assert.deepEqual([...a.keys()], [...b.keys()]);
  for (const [g, l2] of a) {
    assert.ok(l2 > 0, `group ${g} got a gradient`);
    assert.ok(Math.abs(l2 - b.get(g)!) <= 1e-4 * l2, `group ${g}: ${l2} vs ${b.get(g)}`);
  }
});

test("an RL step leaks no tensors: the count is flat across steps", async () => {
  const dir = tempJobDir("leak");
  await tinyModel(join(dir, "model"));
  rftManifest(dir, { model: "model" }, hyper);
  const counts: number[] = [];
  const start = tf.memory().numTensors;
  const res = await runJob({
    manifest: manifest(dir),
    outDir: join(dir, "out"),
    stopAfterStep: 4,
    microBatch: 4,
    hooks: { onStep: () => counts.push(tf.memory().numTensors) },
  });
  assert.equal(res.status, "paused");
  assert.equal(counts.length, 4);
  assert.equal(new Set(counts).size, 1, `tensors after each step: ${counts.join(", ")}`);
  assert.equal(tf.memory().numTensors, start, "everything freed when the job returns");
});
