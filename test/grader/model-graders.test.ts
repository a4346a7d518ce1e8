import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { GraderEngine } from "../../grader-sidecar/src/engine.js";
import { type FakeChatServer, startFakeChatServer } from "../helpers/fake-chat-server.js";

let fake: FakeChatServer;
let engine: GraderEngine;
before(async () => {
  fake = await startFakeChatServer();
  const endpoint = { baseUrl: fake.baseUrl, apiKey: "sk-test-123", timeoutMs: 5000, maxRetries: 2 };
  engine = new GraderEngine({ model: endpoint, embeddings: { endpoint } });
});
after(async () => {
  await engine.close();
  await fake.close();
});

const scoreModel = (prompt: string, extra: object = {}) => ({
  type: "score_model",
  name: "judge",
  model: "gpt-4o-mini",
  input: [
    { role: "system", content: "You grade answers." },
    { role: "user", content: [{ type: "input_text", text: prompt }] },
  ],
  ...extra,
});

test("score_model: result is the reward, clamped to range, with usage and structured output", async () => {
  const res = await engine.run(scoreModel("Answer: {{ sample.output_text }} SCORE=0.8"), {}, { output_text: "Paris" });
  assert.equal(res.reward, 0.8);
  assert.equal(res.metadata.sampled_model_name, "gpt-4o-mini-fake-2025");
  assert.deepEqual(res.metadata.token_usage, {
    prompt_tokens: 100,
    completion_tokens: 20,
    total_tokens: 120,
    cached_tokens: 10,
  });
  assert.deepEqual(Object.keys(res.model_grader_token_usage_per_model), ["gpt-4o-mini-fake-2025"]);
  const req = fake.requests.at(-1)!;
  assert.equal(req.auth, "Bearer sk-test-123");
  assert.equal(req.body.response_format.type, "json_schema");
  assert.deepEqual(req.body.response_format.json_schema.schema.required, ["steps", "result"]);
  assert.equal(req.body.messages[1].content[0].text, "Answer: Paris SCORE=0.8");

  assert.equal((await engine.run(scoreModel("SCORE=7"), {}, { output_text: "" })).reward, 1); // default range [0, 1]
  assert.equal((await engine.run(scoreModel("SCORE=7", { range: [0, 10] }), {}, { output_text: "" })).reward, 7);
  assert.equal((await engine.run(scoreModel("SCORE=-3", { range: [-1, 1] }), {}, { output_text: "" })).reward, -1);
});

test("score_model: sampling params reach the judge", async () => {
  await engine.run(
    scoreModel("SCORE=1", { sampling_params: { temperature: 0.2, seed: 7, max_completions_tokens: 50, top_p: 0.9 } }),
    {},
    { output_text: "" },
  );
  const b = fake.requests.at(-1)!.body;
  assert.equal(b.temperature, 0.2);
  assert.equal(b.seed, 7);
  assert.equal(b.max_completion_tokens, 50);
  assert.equal(b.top_p, 0.9);
});

test("score_model: refusal, unparseable output and server errors are flagged in-band", async () => {
  const refused = await engine.run(scoreModel("REFUSE"), {}, { output_text: "" });
  assert.equal(refused.reward, 0);
  assert.equal(refused.metadata.errors.model_grader_refusal_error, true);

  const garbage = await engine.run(scoreModel("GARBAGE"), {}, { output_text: "" });
  assert.equal(garbage.metadata.errors.model_grader_parse_error, true);
  assert.ok(garbage.metadata.token_usage, "usage is still reported for a judge call that answered");

  const down = await engine.run(scoreModel("FAIL500"), {}, { output_text: "" });
  assert.equal(down.metadata.errors.model_grader_server_error, true);
  assert.match(down.metadata.errors.model_grader_server_error_details ?? "", /HTTP 500/);

  const flaky = await engine.run(scoreModel("FLAKY SCORE=0.5"), {}, { output_text: "" });
  assert.equal(flaky.reward, 0.5, "503 is retried");

  const missing = await engine.run(scoreModel("{{ item.nope }}"), {}, { output_text: "" });
  assert.equal(missing.metadata.errors.invalid_variable_error, true);
});

test("label_model inside multi: passing label → 1; usage summed per model", async () => {
  const label = (text: string) => ({
    type: "label_model",
    name: "tone",
    model: "gpt-4o-mini",
    input: [{ role: "user", content: text }],
    labels: ["polite", "rude"],
    passing_labels: ["polite"],
  });
  const grader = (text: string) => ({
    type: "multi",
    graders: { tone: label(text), score: scoreModel("SCORE=0.5") },
    calculate_output: "tone * score * 2",
  });
  const good = await engine.run(grader("LABEL=polite"), {}, { output_text: "" });
  assert.equal(good.reward, 1);
  assert.deepEqual(good.sub_rewards, { tone: 1, score: 0.5 });
  assert.equal(good.model_grader_token_usage_per_model["gpt-4o-mini-fake-2025"]?.total_tokens, 240);
  assert.equal((await engine.run(grader("LABEL=rude"), {}, { output_text: "" })).reward, 0);
  const bad = await engine.run(grader("LABEL=sarcastic"), {}, { output_text: "" });
  assert.equal(bad.sub_rewards.tone, 0);
  assert.equal(bad.metadata.errors.model_grader_parse_error, true);
});

test("text_similarity cosine uses the embeddings endpoint", async () => {
  const g = {
    type: "text_similarity",
    name: "cos",
    input: "{{ sample.output_text }}",
    reference: "abc",
    evaluation_metric: "cosine",
  };
  assert.ok(Math.abs((await engine.run(g, {}, { output_text: "cab" })).reward - 1) < 1e-12);
  assert.ok((await engine.run(g, {}, { output_text: "xyz" })).reward === 0);
});

test("no endpoint configured → model_grader_server_error naming the setting", async () => {
  const bare = new GraderEngine();
  const res = await bare.run(scoreModel("SCORE=1"), {}, { output_text: "" });
  assert.equal(res.metadata.errors.model_grader_server_error, true);
  assert.match(res.metadata.errors.model_grader_server_error_details ?? "", /RFT_GRADER_BASE_URL/);
  await bare.close();
});
