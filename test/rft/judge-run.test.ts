/**
 * `rft run` (runJob in process) reaches the judge of spec.graderEndpoints with the key from the environment:
 * a multi of string_check + score_model trains with the score_model part in the reward, and the step's metrics
 * event reports each sub-grader under its own type, its judge tokens, and model_graders_token_usage. The judge
 * is the named fake (a fixed score), since a real tiny model's judgement would be random.
 */
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { parse, stringify } from "yaml";
import { EndpointConfigError } from "../../grader-sidecar/src/model-client.js";
import { loadManifest } from "../../trainer/job/manifest.js";
import { runJob } from "../../trainer/job/run-job.js";
import { useBackend } from "../../trainer/model/backend.js";
import { type FakeChatServer, startFakeChatServer } from "../helpers/fake-chat-server.js";
import { rftManifest, tempJobDir, tinyModel } from "../helpers/rft-job.js";

let fake: FakeChatServer;
before(async () => {
  await useBackend("wasm");
  fake = await startFakeChatServer();
});
after(() => fake.close());

const hyper = {
  nEpochs: 1,
  batchSize: 2,
  samplesPerPrompt: 2,
  dynamicSampling: false,
  maxCompletionTokens: 4,
  evalInterval: 100,
  evalSamples: 1,
};

const grader = {
  type: "multi",
  name: "answer-and-judge",
  graders: {
    fmt: { type: "string_check", name: "fmt", input: "{{ sample.output_text }}", reference: "never", operation: "eq" },
    judge: {
      type: "score_model",
      name: "judge",
      model: "gpt-4o-2024-08-06",
      input: [{ role: "user", content: "Grade: {{ sample.output_text }} SCORE=0.75" }],
    },
  },
  calculate_output: "fmt + judge",
};

async function job(name: string, extra: Record<string, unknown> = {}) {
  const dir = tempJobDir(name);
  await tinyModel(join(dir, "model"));
  const file = rftManifest(
    dir,
    {
      model: "model",
      graderEndpoints: [
        { models: ["gpt-4o-2024-08-06"], baseUrl: fake.baseUrl, apiKey: { env: "RFT_TEST_JUDGE_KEY" } },
      ],
    },
    hyper,
  );
  const doc = parse(readFileSync(file, "utf8"));
  doc.spec.method.reinforcement.grader = grader;
  Object.assign(doc.spec.method.reinforcement, extra);
  writeFileSync(file, stringify(doc));
  return { dir, file };
}

function metrics(out: string) {
  return readFileSync(join(out, "events.jsonl"), "utf8")
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l))
    .filter((e) => e.type === "metrics");
}

test("rft run grades with the judge of spec.graderEndpoints, key from env; metrics per sub-grader", async () => {
  process.env.RFT_TEST_JUDGE_KEY = "sk-judge-run";
  const { dir, file } = await job("judge");
  const out = join(dir, "out");
  const before = fake.requests.length;
  const res = await runJob({ manifest: loadManifest(file), outDir: out, stopAfterStep: 1 });
  assert.equal(res.status, "paused");
  const calls = fake.requests.slice(before);
  assert.ok(calls.length >= 4, `the judge was called per sample (${calls.length})`);
  assert.ok(calls.every((r) => r.auth === "Bearer sk-judge-run"));

  const [ev] = metrics(out);
  const d = ev.data;
  assert.equal(d.scores.train_reward_mean, 0.75, "the score_model part is the reward");
  const byName = Object.fromEntries(d.scores.graders.map((g: any) => [g.name, g]));
  assert.deepEqual(
    d.scores.graders.map((g: any) => [g.name, g.type]),
    [
      ["answer-and-judge", "multi"],
      ["fmt", "string_check"],
      ["judge", "score_model"],
    ],
  );
  assert.equal(byName.judge.train_reward_mean, 0.75);
  const judged = "gpt-4o-2024-08-06-fake-2025";
  assert.deepEqual(
    d.usage.graders.map((g: any) => [g.name, g.type, g.model, g.train_prompt_tokens_mean]),
    [["judge", "score_model", judged, 100]],
  );
  const n = d.usage.samples.train_samples_count;
  assert.equal(n, 4);
  assert.deepEqual(d.model_graders_token_usage[judged], {
    train_prompt_tokens: 100 * n,
    train_completion_tokens: 20 * n,
    train_cached_tokens: 10 * n,
    eval_prompt_tokens: 0,
    eval_completion_tokens: 0,
    eval_cached_tokens: 0,
  });
  const errs = Object.fromEntries(d.errors.graders.map((g: any) => [g.name, g]));
  assert.equal(errs.judge.train_model_grader_server_error_count, 0);
  assert.ok(!("train_python_grader_runtime_error_count" in errs.judge), "only the keys of the grader's type");
  assert.ok(!("train_model_grader_server_error_count" in errs.fmt));
  assert.deepEqual(
    d.timing.graders.map((g: any) => g.name),
    ["answer-and-judge", "fmt", "judge"],
  );
});

test("a judge key that is not there stops rft run before training, naming the field", async () => {
  const { dir, file } = await job("nokey");
  delete process.env.RFT_TEST_JUDGE_KEY;
  await assert.rejects(
    runJob({ manifest: loadManifest(file), outDir: join(dir, "out"), stopAfterStep: 1 }),
    (e: Error) =>
      e instanceof EndpointConfigError &&
      /job\.yaml: spec\.graderEndpoints\[0\]\.apiKey\.env: the environment variable RFT_TEST_JUDGE_KEY is not set/.test(
        e.message,
      ),
  );
});
