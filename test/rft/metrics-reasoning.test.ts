/** OpenAI's reasoning-token keys in the step metrics: present (0 for models without a reasoning channel). */
import assert from "node:assert/strict";
import { test } from "node:test";
import { GraderEngine } from "../../grader-sidecar/src/engine.js";
import { metricsEvent } from "../../trainer/rl/metrics.js";

test("usage.samples and the flat keys carry reasoning-token means and counts", async () => {
  const engine = new GraderEngine();
  const g = { type: "string_check", name: "s", input: "{{ sample.output_text }}", reference: "a", operation: "eq" };
  const response = await engine.run(g, {}, { output_text: "a" });
  const timing = { sampling: 0, grading: 0, training: 0, eval: 0, full_iteration: 0 };
  const plain = metricsEvent({
    step: 1,
    totalSteps: 1,
    train: [{ response, completionTokens: 3, truncated: false }],
    valid: [{ response, completionTokens: 3, truncated: false }],
    timing,
    createdAt: 0,
  }).data;
  assert.equal(plain.usage.samples.train_reasoning_tokens_mean, 0);
  assert.equal(plain.usage.samples.valid_reasoning_tokens_count, 0);
  assert.equal(plain.reasoning_tokens_mean, 0);
  const withReasoning = metricsEvent({
    step: 1,
    totalSteps: 1,
    train: [
      { response, completionTokens: 3, truncated: false, reasoningTokens: 4 },
      { response, completionTokens: 3, truncated: false, reasoningTokens: 2 },
    ],
    timing,
    createdAt: 0,
  }).data;
  assert.equal(withReasoning.usage.samples.train_reasoning_tokens_mean, 3);
  assert.equal(withReasoning.usage.samples.train_reasoning_tokens_count, 6);
  assert.equal(withReasoning.reasoning_tokens_mean, 3);
  await engine.close();
});
