/** The API's pure decisions: status transitions, pagination, request → FineTuneJob params. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { fieldToParam, toFineTuneJob } from "../../api/convert.js";
import { afterWorker, decide, STATUSES } from "../../api/job-state.js";
import { estimatedFinish } from "../../api/jobs.js";
import { paginate, parseLimit } from "../../api/pagination.js";
import { addStepUsage, type UsageMetrics } from "../../api/usage.js";

test("every status × action has one decision; final statuses refuse everything", () => {
  const table = Object.fromEntries(
    STATUSES.map((s) => [
      s,
      (["cancel", "pause", "resume"] as const).map((a) => {
        const d = decide(s, a, "ftjob-x");
        return d.ok ? `${d.next}/${d.effect}` : "error";
      }),
    ]),
  );
  assert.deepEqual(table, {
    validating_files: ["cancelled/dequeue", "error", "error"],
    queued: ["cancelled/dequeue", "paused/dequeue", "error"],
    running: ["cancelled/signal_worker", "pausing/signal_worker", "error"],
    pausing: ["cancelled/signal_worker", "error", "running/signal_worker"],
    paused: ["cancelled/dequeue", "error", "queued/enqueue"],
    succeeded: ["error", "error", "error"],
    failed: ["error", "error", "error"],
    cancelled: ["error", "error", "error"],
  });
  const d = decide("succeeded", "pause", "ftjob-x");
  assert.ok(!d.ok && /ftjob-x has already completed; cannot pause it/.test(d.message));
  assert.equal(afterWorker("cancelled", "succeeded"), "cancelled");
  assert.equal(afterWorker("pausing", "paused"), "paused");
  assert.equal(afterWorker("pausing", "succeeded"), "succeeded");
});

test("cursor pagination: after, limit, has_more, first_id/last_id", () => {
  const xs = ["a", "b", "c", "d", "e"].map((id) => ({ id }));
  const p1 = paginate(xs, null, 2);
  assert.deepEqual(p1, {
    object: "list",
    data: [{ id: "a" }, { id: "b" }],
    has_more: true,
    first_id: "a",
    last_id: "b",
  });
  assert.deepEqual(paginate(xs, "b", 2).data, [{ id: "c" }, { id: "d" }]);
  const last = paginate(xs, "d", 2);
  assert.deepEqual([last.data, last.has_more], [[{ id: "e" }], false]);
  assert.deepEqual(paginate(xs, "zz", 2).data, []);
  assert.equal(parseLimit(null, 20), 20);
  assert.throws(() => parseLimit("0", 20), /between 1 and 100/);
  assert.throws(
    () => parseLimit("abc", 20),
    (e: { param?: string }) => e.param === "limit",
  );
});

test("OpenAI's request names map to the FineTuneJob and its errors back to OpenAI's params", () => {
  const job = toFineTuneJob(
    {
      model: "m",
      training_file: "t",
      hyperparameters: { n_epochs: 3, batch_size: "auto" },
    },
    { name: "j", modelDir: "/m", trainingFile: "/t" },
  );
  assert.deepEqual(job.spec.method, {
    type: "supervised",
    supervised: { hyperparameters: { nEpochs: 3, batchSize: "auto" } },
  });
  assert.equal(
    fieldToParam("spec.method.reinforcement.hyperparameters.learningRateMultiplier"),
    "method.reinforcement.hyperparameters.learning_rate_multiplier",
  );
  assert.equal(fieldToParam("spec.trainingFile"), "training_file");
  assert.equal(
    fieldToParam("spec.method.reinforcement.grader.graders.myGrader.input"),
    "method.reinforcement.grader.graders.myGrader.input",
  );
  assert.equal(
    fieldToParam("spec.method.reinforcement.responseFormat.type"),
    "method.reinforcement.response_format.type",
  );
});

test("estimated_finish follows this run's pace from its first step", () => {
  const m = (step: number) => ({ type: "metrics", data: { step, total_steps: 10 } });
  // 2 steps (3 and 4, the run resumed after step 2) in 20 s: 6 steps left, 60 s more.
  assert.equal(estimatedFinish(m(4), 1_000_000, 2, 1_020_000), 1_080);
  assert.equal(estimatedFinish(m(1), 0, null, 5_000), 50);
  assert.equal(estimatedFinish({ type: "message", data: null }, 0, null), undefined);
});

test("usage_metrics: model graders' tokens are summed over the steps, per judge model; junk adds nothing", () => {
  const step = (model: string, p: number, c: number, ep = 0) => ({
    model_graders_token_usage: {
      [model]: {
        train_prompt_tokens: p,
        train_completion_tokens: c,
        train_cached_tokens: 0,
        eval_prompt_tokens: ep,
        eval_completion_tokens: 0,
        eval_cached_tokens: 0,
      },
    },
  });
  let u: UsageMetrics = { training_seconds: 12 };
  assert.equal(addStepUsage(u, { model_graders_token_usage: {} }), u, "no model grader: usage unchanged");
  u = addStepUsage(u, step("judge", 100, 20));
  u = addStepUsage(u, step("judge", 50, 5, 30));
  u = addStepUsage(u, step("gpt-4.1", 7, 1));
  u = addStepUsage(u, {
    model_graders_token_usage: { judge: { train_prompt_tokens: -5, train_completion_tokens: "x" } },
  });
  u = addStepUsage(u, null);
  assert.equal(u.training_seconds, 12);
  assert.deepEqual(u.model_graders_token_usage, {
    judge: {
      train_prompt_tokens: 150,
      train_completion_tokens: 25,
      train_cached_tokens: 0,
      eval_prompt_tokens: 30,
      eval_completion_tokens: 0,
      eval_cached_tokens: 0,
    },
    "gpt-4.1": {
      train_prompt_tokens: 7,
      train_completion_tokens: 1,
      train_cached_tokens: 0,
      eval_prompt_tokens: 0,
      eval_completion_tokens: 0,
      eval_cached_tokens: 0,
    },
  });
});
