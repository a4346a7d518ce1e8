/**
 * A diverged update (NaN or infinite gradients) fails the job with a message that says what happened and what
 * to change, before the optimizer applies it: the last checkpoint and the ledger stay as the step before left
 * them, and the ledger still verifies.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { exportBundle } from "../../ledger/bundle.js";
import { readEventsFile } from "../../ledger/publisher.js";
import { generateKeyPair } from "../../ledger/sign.js";
import { formatReport, verifyBundle } from "../../ledger/verify.js";
import { loadManifest } from "../../trainer/job/manifest.js";
import { runJob } from "../../trainer/job/run-job.js";
import { rftManifest, tempJobDir, tinyModel } from "../helpers/rft-job.js";
import { TEST_BACKEND } from "../helpers/backend.js";

/** Rewards that vary on a random model's outputs, so every step trains. */
const VARIED = "def grade(sample, item):\n    return min(1.0, len(set(sample['output_text'])) / 8)\n";

test("an absurd learning rate: the job fails with 'training diverged at step N', its checkpoint and ledger intact", async () => {
  const dir = tempJobDir("diverge");
  await tinyModel(join(dir, "model"));
  const file = rftManifest(
    dir,
    { model: "model" },
    {
      nEpochs: 1,
      batchSize: 4,
      samplesPerPrompt: 4,
      maxCompletionTokens: 8,
      evalInterval: 1,
      evalSamples: 1,
      warmupSteps: 0,
      dynamicSampling: false,
    },
  );
  const manifest = loadManifest(file);
  const rft = manifest.job.spec.method.reinforcement!;
  (rft.grader as any).graders.correct.source = VARIED;
  // Far beyond what a manifest accepts (at most 100): the first update throws the weights so far that the
  // next step's activations overflow, the way a real run diverges, only at once.
  rft.hyperparameters = { ...rft.hyperparameters, learningRateMultiplier: 1e12 };
  const out = join(dir, "out");
  const r = await runJob({ manifest, outDir: out, backend: TEST_BACKEND });

  assert.equal(r.status, "failed");
  assert.ok(r.method === "reinforcement");
  const m = /^training diverged at step (\d+): the gradient norm is (NaN|Infinity|-Infinity)/.exec(r.error ?? "");
  assert.ok(m, `the error says the run diverged: ${r.error}`);
  const diverged = Number(m[1]);
  assert.ok(diverged >= 2, "step 1 (finite gradients, huge update) trains; a later one diverges");
  assert.match(r.error!, /lower learning_rate_multiplier \(now 1000000000000\)/i);
  assert.equal(r.step, diverged - 1, "the result names the last step applied");

  // The job's events say so, as its last error.
  const events = readFileSync(join(out, "events.jsonl"), "utf8")
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l));
  const last = events.at(-1);
  assert.equal(last.level, "error");
  assert.match(last.message, /^Job failed: training diverged at step/);

  // The last checkpoint is the step before, and the ledger ends with job.finished "failed" after it; no
  // update.applied of the diverged step was ever signed.
  assert.equal(r.checkpoints.at(-1)?.step, diverged - 1);
  const ledger = readEventsFile(join(out, "ledger", "events.jsonl"));
  const end = ledger.at(-1)!;
  assert.ok(end.type === "job.finished");
  assert.equal(end.body.status, "failed");
  assert.equal(end.body.steps, diverged - 1);
  const applied = ledger.filter((e) => e.type === "update.applied").map((e) => (e.body as { step: number }).step);
  assert.deepEqual(
    applied,
    Array.from({ length: diverged - 1 }, (_, i) => i + 1),
  );
  const report = verifyBundle(exportBundle(ledger, generateKeyPair().privateKey));
  assert.deepEqual(report.failures, [], formatReport(report));
});
