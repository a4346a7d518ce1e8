import assert from "node:assert/strict";
import { test } from "node:test";
import { resolveRft, resolveSft } from "../../trainer/settings/hyperparameters.js";

test("RFT auto hyperparameters follow the documented rules", () => {
  const r = resolveRft({}, 200);
  assert.equal(r.batchSize, 4); // ceil(200/50) = 4
  assert.equal(r.stepsPerEpoch, 50);
  assert.equal(r.nEpochs, 2); // enough epochs for ~100 steps
  assert.equal(r.totalSteps, 100);
  assert.equal(r.evalInterval, 10);
  assert.equal(r.samplesPerPrompt, 4);
  assert.equal(r.loss, "dapo");
  assert.deepEqual(r.clipEpsilon, { low: 0.2, high: 0.28 });
  assert.equal(r.dynamicSampling, true);
  assert.equal(r.maxCompletionTokens, 256);
  assert.equal(r.warmupSteps, 5);
});

test("RFT explicit values win; compute multiplier and reasoning effort scale exploration", () => {
  const r = resolveRft(
    {
      batchSize: 16,
      nEpochs: 3,
      computeMultiplier: 2,
      reasoningEffort: "high",
      loss: "grpo",
      learningRateMultiplier: 10,
    },
    64,
  );
  assert.equal(r.batchSize, 16);
  assert.equal(r.totalSteps, 12);
  assert.equal(r.samplesPerPrompt, 8);
  assert.equal(r.maxCompletionTokens, 512);
  assert.deepEqual(r.clipEpsilon, { low: 0.2, high: 0.2 });
  assert.equal(r.dynamicSampling, false);
  assert.ok(Math.abs(r.learningRate - 1e-3) < 1e-15);
  assert.equal(resolveRft({ batchSize: 64 }, 10).batchSize, 10, "a batch is never larger than the dataset");
});

test("SFT auto hyperparameters", () => {
  const s = resolveSft({}, 1000);
  assert.equal(s.batchSize, 10);
  assert.equal(s.nEpochs, 3);
  assert.equal(s.totalSteps, 300);
});
