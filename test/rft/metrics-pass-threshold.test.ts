/**
 * `pass_threshold` (OpenAI's evals field, accepted in RFT graders) is honoured, not ignored: a grader carrying
 * it reports `passed` per sample, and the step's metrics give its pass rate beside its reward mean. Real engine,
 * local graders (string_check, text_similarity), the pure metrics builder.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { GraderEngine } from "../../grader-sidecar/src/engine.js";
import { metricsEvent } from "../../trainer/rl/metrics.js";

const grader = {
  type: "multi",
  graders: {
    close: {
      type: "text_similarity",
      name: "close",
      input: "{{ sample.output_text }}",
      reference: "{{ item.answer }}",
      evaluation_metric: "fuzzy_match",
      pass_threshold: 0.8,
    },
    exact: {
      type: "string_check",
      name: "exact",
      input: "{{ sample.output_text }}",
      reference: "{{ item.answer }}",
      operation: "eq",
    },
  },
  calculate_output: "close",
};

test("pass_threshold: passed per sample and pass rates per grader in the step metrics", async () => {
  const engine = new GraderEngine();
  const c = await engine.compile(grader);
  const item = { answer: "the quick brown fox" };
  const outs = ["the quick brown fox", "the quick brown fix", "a lazy dog", "zzz"];
  const rs = await Promise.all(outs.map((o) => engine.grade(c, item, { output_text: o })));
  assert.deepEqual(
    rs.map((r) => r.sub_graders?.close?.passed),
    rs.map((r) => r.sub_rewards.close! >= 0.8),
  );
  assert.ok(rs[0]!.sub_graders!.close!.passed && !rs[3]!.sub_graders!.close!.passed);
  assert.equal(rs[0]!.sub_graders!.exact!.passed, undefined, "no threshold, no verdict");

  const ev = metricsEvent({
    step: 1,
    totalSteps: 1,
    train: rs.map((response) => ({ response, completionTokens: 4, truncated: false })),
    timing: { sampling: 0, grading: 0, training: 0, eval: 0, full_iteration: 0 },
    createdAt: 0,
  });
  const close = ev.data.scores.graders.find((g) => g.name === "close") as Record<string, unknown>;
  const want = rs.filter((r) => r.sub_rewards.close! >= 0.8).length / rs.length;
  assert.equal(close.train_pass_rate, want);
  assert.ok(want > 0 && want < 1);
  const exact = ev.data.scores.graders.find((g) => g.name === "exact") as Record<string, unknown>;
  assert.equal("train_pass_rate" in exact, false);
  assert.deepEqual(
    ev.data.scores.graders.map((g) => [g.name, g.type]),
    [
      ["multi", "multi"],
      ["close", "text_similarity"],
      ["exact", "string_check"],
    ],
  );

  // A top-level grader with a threshold: `passed` on the response itself.
  const top = await engine.run(grader.graders.close, item, { output_text: "the quick brown fox" });
  assert.equal(top.passed, true);
  await engine.close();
});
