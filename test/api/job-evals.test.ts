/**
 * The RFT job ⇄ eval link through the official openai client against `rft api` (local mode, a tiny model named
 * as OpenAI's RFT base model): the job answers with `eval_id`, and once it has succeeded the eval has one run
 * per validation (the baseline and every eval_interval step) whose output items are the validation's samples,
 * with scores whose mean is the step's `valid_reward_mean`. And the step files' bound (pure).
 */
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { toFile } from "openai";
import { parseValidationFile } from "../../api/job-evals.js";
import type { ValidationSample } from "../../proto/validation.js";
import { validationFileText } from "../../trainer/rl/record.js";
import { tinyModel } from "../helpers/rft-job.js";
import { BASE, jobRequest, TRAIN, VALID } from "./guide.js";
import { startApi, tempDir, until } from "./helpers.js";

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

test("an RFT job's eval: one run per validation step, its items scored as the step's metrics", async () => {
  const dir = tempDir("job-evals");
  await tinyModel(join(dir, "base"));
  const api = await startApi({ models: { [BASE]: join(dir, "base") } });
  try {
    const c = api.client;
    const upload = async (lines: string[], name: string) =>
      c.files.create({ file: await toFile(Buffer.from(`${lines.join("\n")}\n`), name), purpose: "fine-tune" });
    const train = await upload(TRAIN, "train.jsonl");
    const valid = await upload(VALID, "valid.jsonl");
    const job = (await c.fineTuning.jobs.create(jobRequest(train.id, valid.id) as any)) as any;
    assert.match(job.eval_id, /^eval_[A-Za-z0-9]{24}$/);
    const ev = await c.evals.retrieve(job.eval_id);
    assert.deepEqual(ev.metadata, { fine_tuning_job_id: job.id });
    assert.equal((ev.testing_criteria[0] as { name: string }).name, "combo"); // the job's grader

    const done = await until(
      () => c.fineTuning.jobs.retrieve(job.id),
      (j) => ["succeeded", "failed", "cancelled"].includes(j.status),
      "the job to finish",
    );
    assert.equal(done.status, "succeeded", JSON.stringify(done.error));
    assert.equal((done as any).eval_id, job.eval_id);

    // Each validation's score, from the job's events: the baseline message (step 0) and the metrics events.
    const expected = new Map<number, number>();
    for await (const e of c.fineTuning.jobs.listEvents(job.id)) {
      const d = e.data as { step?: number; valid_reward_mean?: number; scores?: { valid_reward_mean?: number } };
      if (e.type === "metrics" && d.scores?.valid_reward_mean !== undefined)
        expected.set(d.step!, d.scores.valid_reward_mean);
      if (/^Baseline validation/.test(e.message)) expected.set(0, d.valid_reward_mean!);
    }
    assert.deepEqual([...expected.keys()].sort(), [0, 1, 2]);

    const runs = [];
    for await (const r of c.evals.runs.list(job.eval_id)) runs.push(r);
    assert.deepEqual(
      runs.map((r) => [r.name, r.status, r.metadata]),
      [0, 1, 2].map((n) => [`${job.id} step ${n}`, "completed", { fine_tuning_job_id: job.id, step: String(n) }]),
    );
    for (const [n, run] of runs.entries()) {
      const items = [];
      for await (const it of c.evals.runs.outputItems.list(run.id, { eval_id: job.eval_id })) items.push(it);
      assert.equal(items.length, VALID.length); // eval_samples 1
      assert.equal(run.result_counts.total, items.length);
      assert.equal(
        run.result_counts.passed + run.result_counts.failed + run.result_counts.errored,
        run.result_counts.total,
      );
      assert.equal(run.per_testing_criteria_results[0]!.testing_criteria, "combo");
      const scores = items.map((i) => i.results[0]!.score);
      assert.ok(Math.abs(mean(scores) - expected.get(n)!) < 1e-6, `step ${n}: ${scores} vs ${expected.get(n)}`);
      assert.equal(run.model, n === 0 ? BASE : `${done.fine_tuned_model}:ckpt-step-${n}`);
      // What was sampled and how it was graded, per datapoint.
      const first = items.find((i) => i.datasource_item_id === 0)!;
      const row = JSON.parse(VALID[0]!);
      assert.deepEqual(first.sample.input, row.messages);
      assert.equal(first.datasource_item.compliant, row.compliant);
      assert.equal(typeof first.sample.output[0]!.content, "string");
      const meta = first.results[0]!.metadata as { sub_rewards: Record<string, number> };
      assert.deepEqual(Object.keys(meta.sub_rewards).sort(), ["label", "why"]);
    }
    // The trainer's own record of each validation (`rft run`'s output directory).
    const file = join(api.dataDir, "jobs", job.id, "out", "validation", "step-2.jsonl");
    assert.ok(existsSync(file));
    assert.equal(parseValidationFile(readFileSync(file, "utf8")).samples.length, VALID.length);
  } finally {
    await api.close();
  }
});

test("a validation step file stays under its size limit and says how many samples it left out", () => {
  const sample = (line: number): ValidationSample => ({
    step: 3,
    line,
    sample_index: 0,
    messages: [{ role: "user", content: "x".repeat(400) }],
    item: { answer: "a" },
    output_text: "a",
    output_tools: [],
    finish_reason: "stop",
    completion_tokens: 1,
    seed: 1,
    sampling: { temperature: 1, top_p: 1, max_completion_tokens: 8 },
    grader: {
      reward: 1,
      metadata: {} as ValidationSample["grader"]["metadata"],
      sub_rewards: {},
      model_grader_token_usage_per_model: {},
    },
  });
  const all = Array.from({ length: 10 }, (_, i) => sample(i + 1));
  const text = validationFileText(all, 2048);
  assert.ok(Buffer.byteLength(text) <= 2048, `${Buffer.byteLength(text)} bytes`);
  const parsed = parseValidationFile(text);
  assert.ok(parsed.samples.length >= 1 && parsed.samples.length < 10);
  assert.equal(parsed.omitted, 10 - parsed.samples.length);
  assert.deepEqual(parseValidationFile(validationFileText(all)).samples, all);
});
