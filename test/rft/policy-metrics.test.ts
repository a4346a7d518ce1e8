/**
 * The policy statistics of each step's metrics event (`data.policy`): the clipped-token share, the KL to the
 * reference, the entropy estimate and the gradient norm — what shows a run drifting, collapsing or diverging.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { loadManifest } from "../../trainer/job/manifest.js";
import { runJob } from "../../trainer/job/run-job.js";
import { rftManifest, tempJobDir, tinyModel } from "../helpers/rft-job.js";
import { TEST_BACKEND } from "../helpers/backend.js";

const VARIED = "def grade(sample, item):\n    return min(1.0, len(set(sample['output_text'])) / 8)\n";

test("every step's metrics carry clip_ratio, kl, entropy and grad_norm; kl is 0 at step 1 and grows once trained", async () => {
  const dir = tempJobDir("policy-metrics");
  await tinyModel(join(dir, "model"));
  const file = rftManifest(
    dir,
    { model: "model" },
    {
      nEpochs: 1,
      batchSize: 4,
      samplesPerPrompt: 4,
      maxCompletionTokens: 8,
      evalInterval: 100,
      evalSamples: 1,
      klCoef: 0.1,
      dynamicSampling: false,
      learningRateMultiplier: 100,
      warmupSteps: 0,
    },
  );
  const manifest = loadManifest(file);
  (manifest.job.spec.method.reinforcement!.grader as any).graders.correct.source = VARIED;
  const out = join(dir, "out");
  const r = await runJob({ manifest, outDir: out, backend: TEST_BACKEND, stopAfterStep: 3 });
  assert.equal(r.status, "paused");
  const steps = readFileSync(join(out, "events.jsonl"), "utf8")
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l))
    .filter((e) => e.type === "metrics")
    .map((e) => e.data.policy);
  assert.equal(steps.length, 3);
  for (const p of steps) {
    assert.ok(p.clip_ratio >= 0 && p.clip_ratio <= 1, `clip_ratio ${p.clip_ratio}`);
    assert.ok(p.entropy > 0, `entropy ${p.entropy} (a random byte model is far from deterministic)`);
    assert.ok(p.grad_norm > 0 && Number.isFinite(p.grad_norm), `grad_norm ${p.grad_norm}`);
    assert.ok(p.kl >= 0);
  }
  // Step 1 trains the reference itself (k3 of equal distributions is exactly 0); after updates the policy has
  // moved away from it.
  assert.equal(steps[0].kl, 0);
  assert.ok(steps[2].kl > 0, `kl after two updates: ${steps[2].kl}`);
  // The first update starts from the sampling policy: no token is clipped.
  assert.equal(steps[0].clip_ratio, 0);
});
