/**
 * A step where every sample fails its required JSON parse (a response_format job whose samples are not JSON)
 * still lists each sub-grader of a multi, typed as its own type, at 0 with sample_parse_error: the engine reports
 * them (sub_rewards, sub_graders) and the metrics builder keeps them. Real engine, the pure metrics builder.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { GraderEngine } from "../../grader-sidecar/src/engine.js";
import { metricsEvent } from "../../trainer/rl/metrics.js";

const grader = {
  type: "multi",
  name: "security",
  graders: {
    compliant: {
      type: "string_check",
      name: "compliant",
      input: "{{ sample.output_json.compliant }}",
      reference: "{{ item.compliant }}",
      operation: "eq",
    },
    explanation: {
      type: "score_model",
      name: "explanation",
      model: "gpt-4o-2024-08-06",
      input: [{ role: "user", content: "{{ sample.output_json.explanation }}" }],
    },
  },
  calculate_output: "0.6 * compliant + 0.4 * explanation",
};

test("every sample unparseable: sub-graders still reported at 0, with their types and the flag", async () => {
  const engine = new GraderEngine(); // no judge needed: nothing reaches it
  const c = await engine.compile(grader);
  const rs = await Promise.all(
    ["not json", "{broken", "yes"].map((t) =>
      engine.grade(c, { compliant: "yes" }, { output_text: t, json_required: true }),
    ),
  );
  for (const r of rs) {
    assert.equal(r.metadata.errors.sample_parse_error, true);
    assert.deepEqual(r.sub_rewards, { compliant: 0, explanation: 0 });
    assert.equal(r.sub_graders?.explanation?.type, "score_model");
    assert.equal(r.sub_graders?.explanation?.errors.sample_parse_error, true);
  }
  const d = metricsEvent({
    step: 1,
    totalSteps: 1,
    train: rs.map((response) => ({ response, completionTokens: 5, truncated: false })),
    timing: { sampling: 0, grading: 0, training: 0, eval: 0, full_iteration: 0 },
    createdAt: 0,
  }).data;
  assert.deepEqual(
    d.scores.graders.map((g) => [g.name, g.type, g.train_reward_mean]),
    [
      ["security", "multi", 0],
      ["compliant", "string_check", 0],
      ["explanation", "score_model", 0],
    ],
  );
  const errs = d.errors.graders.find((g) => g.name === "explanation") as Record<string, unknown>;
  assert.equal(errs.train_sample_parse_error_mean, 1);
  assert.equal(errs.train_model_grader_server_error_count, 0);
  await engine.close();
});
