// Rewards that would overflow a step's mean (issue 13: a python grader returning 1.7e308 turned the reward
// mean into NaN and failed the run on every rerun): NaN, ±inf and |reward| > REWARD_ABS_MAX score 0 with the
// grader's error flag. Real python sandbox.
import assert from "node:assert/strict";
import { after, test } from "node:test";
import { GraderEngine } from "../../grader-sidecar/src/engine.js";
import { REWARD_ABS_MAX } from "../../proto/graders.js";

const engine = new GraderEngine({ python: { size: 1, timeoutMs: 20_000 } });
after(() => engine.close());

const py = (expr: string) => ({
  type: "python",
  name: "py",
  source: `def grade(sample, item):\n    return ${expr}\n`,
});

test("python: a huge, NaN or infinite reward is python_grader_runtime_error, never a number in the mean", async () => {
  const rewards: number[] = [];
  for (const expr of ["1.7e308", "-1.7e308", "1e7", "float('nan')", "float('inf')", "10**400"]) {
    const res = await engine.run(py(expr), {}, { output_text: "x" });
    assert.equal(res.reward, 0, expr);
    assert.equal(res.metadata.errors.python_grader_runtime_error, true, expr);
    assert.equal(typeof res.metadata.errors.python_grader_runtime_error_details, "string", expr);
    rewards.push(res.reward);
  }
  const huge = await engine.run(py("1.7e308"), {}, { output_text: "x" });
  assert.match(huge.metadata.errors.python_grader_runtime_error_details ?? "", /1\.7e\+308.*within ±1e\+06/);
  // The bound itself is a reward.
  const edge = await engine.run(py(String(REWARD_ABS_MAX)), {}, { output_text: "x" });
  assert.equal(edge.reward, REWARD_ABS_MAX);
  assert.equal(edge.metadata.errors.python_grader_runtime_error, false);
  rewards.push(edge.reward, edge.reward);
  const mean = rewards.reduce((a, b) => a + b, 0) / rewards.length;
  assert.ok(Number.isFinite(mean));
});

test("multi: a formula result past the bound is formula_parse_error with reward 0", async () => {
  const res = await engine.run(
    {
      type: "multi",
      graders: { a: py("1000.0") },
      calculate_output: "a * a * a",
    },
    {},
    { output_text: "x" },
  );
  assert.equal(res.reward, 0);
  assert.equal(res.metadata.errors.formula_parse_error, true);
  assert.deepEqual(res.sub_rewards, { a: 1000 });
  const fine = await engine.run(
    { type: "multi", graders: { a: py("1000.0") }, calculate_output: "a * a" },
    {},
    { output_text: "x" },
  );
  assert.equal(fine.reward, 1e6);
});
