/** The official `openai` npm client, pointed at our HTTP server: every grader type through run and validate. */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import OpenAI from "openai";
import { type GraderService, startGraderService } from "../../grader-sidecar/src/server.js";
import { type FakeChatServer, startFakeChatServer } from "../helpers/fake-chat-server.js";

let svc: GraderService;
let fake: FakeChatServer;
let client: OpenAI;
before(async () => {
  fake = await startFakeChatServer();
  const endpoint = { baseUrl: fake.baseUrl, timeoutMs: 5000, maxRetries: 1 };
  svc = await startGraderService({ apiKey: "sk-local", engine: { model: endpoint, python: { size: 1 } } });
  client = new OpenAI({ apiKey: "sk-local", baseURL: `http://127.0.0.1:${svc.httpPort}/v1`, maxRetries: 0 });
});
after(async () => {
  await svc.close();
  await fake.close();
});

const graders: Record<string, any> = {
  string_check: {
    type: "string_check",
    name: "exact",
    input: "{{ sample.output_text }}",
    reference: "{{ item.answer }}",
    operation: "eq",
  },
  text_similarity: {
    type: "text_similarity",
    name: "fuzzy",
    input: "{{ sample.output_text }}",
    reference: "{{ item.answer }}",
    evaluation_metric: "fuzzy_match",
  },
  python: {
    type: "python",
    name: "py",
    source: "def grade(sample, item):\n    return 1.0 if sample['output_text'] == item['answer'] else 0.25\n",
  },
  score_model: {
    type: "score_model",
    name: "judge",
    model: "gpt-4o-mini",
    input: [{ role: "user", content: "Grade {{ sample.output_text }} SCORE=0.6" }],
  },
  multi: {
    type: "multi",
    name: "combo",
    graders: {
      exact: {
        type: "string_check",
        name: "exact",
        input: "{{ sample.output_text }}",
        reference: "{{ item.answer }}",
        operation: "eq",
      },
      tone: {
        type: "label_model",
        name: "tone",
        model: "gpt-4o-mini",
        input: [{ role: "user", content: "LABEL=ok" }],
        labels: ["ok", "bad"],
        passing_labels: ["ok"],
      },
      rouge: {
        type: "text_similarity",
        name: "rouge",
        input: "{{ sample.output_text }}",
        reference: "{{ item.answer }}",
        evaluation_metric: "rouge_l",
      },
    },
    calculate_output: "(exact + tone + rouge) / 3",
  },
};

test("graders.run works for every grader type", async () => {
  const want: Record<string, number> = { string_check: 1, text_similarity: 1, python: 1, score_model: 0.6, multi: 1 };
  for (const [type, grader] of Object.entries(graders)) {
    const res = await client.fineTuning.alpha.graders.run({ grader, model_sample: "Paris", item: { answer: "Paris" } });
    assert.equal(res.reward, want[type], `${type} reward`);
    assert.equal(res.metadata.type, type);
    assert.equal(res.metadata.errors.other_error, false);
  }
  const wrong = await client.fineTuning.alpha.graders.run({
    grader: graders.python,
    model_sample: "Rome",
    item: { answer: "Paris" },
  });
  assert.equal(wrong.reward, 0.25);
  const multi = await client.fineTuning.alpha.graders.run({
    grader: graders.multi,
    model_sample: "Rome",
    item: { answer: "Paris" },
  });
  assert.deepEqual(Object.keys(multi.sub_rewards).sort(), ["exact", "rouge", "tone"]);
  assert.equal(multi.sub_rewards.exact, 0);
  assert.equal(multi.sub_rewards.tone, 1);
});

test("graders.run fills output_json from a JSON model_sample", async () => {
  const res = await client.fineTuning.alpha.graders.run({
    grader: {
      type: "string_check",
      name: "j",
      input: "{{ sample.output_json.city }}",
      reference: "Paris",
      operation: "eq",
    },
    model_sample: '{"city": "Paris"}',
  });
  assert.equal(res.reward, 1);
});

test("graders.validate echoes the normalised grader; invalid graders get OpenAI's 400 envelope", async () => {
  for (const grader of Object.values(graders)) {
    const res = await client.fineTuning.alpha.graders.validate({ grader });
    assert.equal((res.grader as any).type, grader.type);
  }
  await assert.rejects(
    client.fineTuning.alpha.graders.validate({ grader: { ...graders.string_check, operation: "equals" } }),
    (err: any) => {
      assert.equal(err.status, 400);
      assert.equal(err.error?.param ?? err.param, "grader.operation");
      assert.match(err.message, /must be one of eq, ne/);
      return true;
    },
  );
  await assert.rejects(
    client.fineTuning.alpha.graders.run({
      grader: { ...graders.multi, calculate_output: "exact +" },
      model_sample: "x",
    }),
    (err: any) => err.status === 400 && /formula ended/.test(err.message) && err.code === "formula_parse_error",
  );
  await assert.rejects(
    client.fineTuning.alpha.graders.validate({
      grader: { type: "python", name: "one_arg", source: "def grade(sample):\n  return 1\n" },
    }),
    (err: any) => err.status === 400 && err.param === "grader.source",
  );
});

test("the HTTP API requires the configured API key; /healthz and /metrics answer", async () => {
  const stranger = new OpenAI({ apiKey: "sk-wrong", baseURL: `http://127.0.0.1:${svc.httpPort}/v1`, maxRetries: 0 });
  await assert.rejects(
    stranger.fineTuning.alpha.graders.run({ grader: graders.string_check, model_sample: "x" }),
    (e: any) => e.status === 401,
  );
  const health = await fetch(`http://127.0.0.1:${svc.httpPort}/healthz`);
  assert.equal(health.status, 200);
  const metrics = await (await fetch(`http://127.0.0.1:${svc.httpPort}/metrics`)).text();
  assert.match(metrics, /rft_grader_requests_total\{grader_type="string_check",grader_name="exact"\} \d+/);
  assert.match(metrics, /rft_grader_duration_seconds_bucket/);
  assert.match(metrics, /rft_grader_invalid_configs_total [1-9]/);
});

test("malformed requests get precise errors", async () => {
  const post = (body: string) =>
    fetch(`http://127.0.0.1:${svc.httpPort}/v1/fine_tuning/alpha/graders/run`, {
      method: "POST",
      headers: { authorization: "Bearer sk-local", "content-type": "application/json" },
      body,
    });
  const notJson = await post("{grader:");
  assert.equal(notJson.status, 400);
  assert.match(((await notJson.json()) as any).error.message, /not valid JSON/);
  const noSample = await post(JSON.stringify({ grader: graders.string_check }));
  assert.equal(((await noSample.json()) as any).error.param, "model_sample");
  const tooBig = await post(
    JSON.stringify({ grader: graders.string_check, model_sample: "x".repeat(3 * 1024 * 1024) }),
  );
  assert.equal(tooBig.status, 413);
});

test("a deeply nested calculate_output is a 400 formula_parse_error naming the position, not a 500", async () => {
  const grader = {
    type: "multi",
    graders: { a: graders.string_check },
    calculate_output: `${"(".repeat(2000)}a${")".repeat(2000)}`,
  };
  for (const call of [
    () => client.fineTuning.alpha.graders.validate({ grader } as any),
    () => client.fineTuning.alpha.graders.run({ grader, model_sample: "x", item: { answer: "x" } } as any),
  ]) {
    await assert.rejects(call(), (e: unknown) => {
      assert.ok(e instanceof OpenAI.APIError);
      assert.equal(e.status, 400);
      assert.equal(e.code, "formula_parse_error");
      assert.equal(e.param, "grader.calculate_output");
      assert.match(e.message, /nests deeper than 100 levels .* at position 100/);
      return true;
    });
  }
});
