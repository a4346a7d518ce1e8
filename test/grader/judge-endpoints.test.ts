/**
 * Judge endpoints (spec.graderEndpoints): routing by the grader's `model`, keys from env/file, the concurrency
 * cap, retries (429 with Retry-After, 5xx), timeouts as model_grader_server_error, and configuration errors that
 * name the field. A real OpenAI-compatible server (`rft serve` of a tiny random model) is the judge for the
 * plumbing; the named fake (test/helpers/fake-chat-server.ts) where the answer must be a known score.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { GraderEngine } from "../../grader-sidecar/src/engine.js";
import {
  EndpointConfigError,
  endpointFromEnv,
  judgeEndpoints,
  resolveEndpoints,
} from "../../grader-sidecar/src/model-client.js";
import { createRandomModel, disposeModel, type Model } from "../../trainer/model/model.js";
import { type RunningServer, startServer } from "../../trainer/serve/server.js";
import { useTestBackend } from "../helpers/backend.js";
import { type FakeChatServer, startFakeChatServer } from "../helpers/fake-chat-server.js";

let fake: FakeChatServer;
let model: Model;
let serve: RunningServer;
before(async () => {
  fake = await startFakeChatServer();
  await useTestBackend();
  model = createRandomModel({ arch: "llama", layers: 1, hidden: 32, heads: 2, kvHeads: 1, vocab: "byte", seed: 3 });
  serve = await startServer(model, { modelId: "tiny-judge", port: 0, maxTokens: 16 });
});
after(async () => {
  await serve.close();
  disposeModel(model);
  await fake.close();
});

const judge = (model: string, prompt: string) => ({
  type: "score_model",
  name: "judge",
  model,
  input: [
    { role: "system", content: "Grade the answer from 0 to 1." },
    { role: "user", content: `Answer: {{ sample.output_text }} ${prompt}` },
  ],
});

test("rft serve as the judge: the request reaches it under its served name and its tokens are counted", async () => {
  const engine = new GraderEngine({
    models: resolveEndpoints([
      {
        models: ["gpt-4o-2024-08-06"],
        baseUrl: serve.url,
        servedModel: "tiny-judge",
        structuredOutputs: false,
        maxConcurrency: 2,
      },
    ]),
  });
  const grader = {
    type: "multi",
    graders: {
      exact: {
        type: "string_check",
        name: "exact",
        input: "{{ sample.output_text }}",
        reference: "4",
        operation: "eq",
      },
      quality: judge("gpt-4o-2024-08-06", ""),
    },
    calculate_output: "exact + quality",
  };
  const res = await engine.run(grader, {}, { output_text: "4" });
  assert.equal(res.metadata.sampled_model_name, "tiny-judge");
  const u = res.model_grader_token_usage_per_model["tiny-judge"];
  assert.ok(
    u && u.prompt_tokens > 0 && u.completion_tokens > 0,
    JSON.stringify(res.model_grader_token_usage_per_model),
  );
  assert.equal(
    res.metadata.errors.model_grader_server_error,
    false,
    String(res.metadata.errors.model_grader_server_error_details),
  );
  // A random model's text is no judgement: 0 with the parse flag, the string_check part still counted.
  if (res.sub_rewards.quality === 0) assert.equal(res.sub_graders?.quality?.errors.model_grader_parse_error, true);
  assert.equal(res.sub_rewards.exact, 1);
  assert.equal(res.sub_graders?.quality?.type, "score_model");
  assert.deepEqual(
    res.sub_graders?.quality?.model_grader_token_usage_per_model,
    res.model_grader_token_usage_per_model,
  );
  await engine.close();
});

test("rft serve counts the prompt once however many choices (n), as OpenAI does", async () => {
  const ask = async (n: number) => {
    const r = await fetch(`${serve.url}/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "tiny-judge", messages: [{ role: "user", content: "Hi" }], n, max_tokens: 2 }),
    });
    return ((await r.json()) as { usage: { prompt_tokens: number; total_tokens: number; completion_tokens: number } })
      .usage;
  };
  const one = await ask(1);
  const three = await ask(3);
  assert.equal(three.prompt_tokens, one.prompt_tokens);
  assert.equal(three.total_tokens, three.prompt_tokens + three.completion_tokens);
});

test("routing by model name, served model, key from env and from a file", async () => {
  const dir = mkdtempSync(join(tmpdir(), "rft-judge-"));
  writeFileSync(join(dir, "key.txt"), "sk-from-file\n");
  const eps = resolveEndpoints(
    [
      { models: ["gpt-4.1-mini"], baseUrl: fake.baseUrl, apiKey: { env: "JUDGE_KEY_A" }, servedModel: "local-a" },
      { baseUrl: `${fake.baseUrl}/`, apiKey: { file: "key.txt" } },
    ],
    { env: { JUDGE_KEY_A: "sk-from-env" }, baseDir: dir },
  );
  const engine = new GraderEngine({ models: eps });
  const a = await engine.run(judge("gpt-4.1-mini", "SCORE=0.25"), {}, { output_text: "x" });
  assert.equal(a.reward, 0.25);
  let req = fake.requests.at(-1)!;
  assert.equal(req.auth, "Bearer sk-from-env");
  assert.equal(req.body.model, "local-a");
  assert.equal(req.body.response_format.type, "json_schema");
  const b = await engine.run(judge("o3-mini", "SCORE=0.5"), {}, { output_text: "x" });
  assert.equal(b.reward, 0.5);
  req = fake.requests.at(-1)!;
  assert.equal(req.auth, "Bearer sk-from-file");
  assert.equal(req.body.model, "o3-mini");
  await engine.close();
});

test("no endpoint for a model: model_grader_server_error naming the model and the setting", async () => {
  const engine = new GraderEngine({ models: resolveEndpoints([{ models: ["a"], baseUrl: fake.baseUrl }]) });
  const r = await engine.run(judge("b", "SCORE=1"), {}, { output_text: "x" });
  assert.equal(r.metadata.errors.model_grader_server_error, true);
  assert.match(r.metadata.errors.model_grader_server_error_details ?? "", /model "b".*graderEndpoints/);
});

test("the concurrency cap holds requests in flight to maxConcurrency", async () => {
  const fresh = await startFakeChatServer();
  const engine = new GraderEngine({ models: resolveEndpoints([{ baseUrl: fresh.baseUrl, maxConcurrency: 2 }]) });
  const c = await engine.compile(judge("m", "SLOW SCORE=1"));
  const rs = await Promise.all(Array.from({ length: 8 }, () => engine.grade(c, {}, { output_text: "x" })));
  assert.deepEqual(
    rs.map((r) => r.reward),
    Array(8).fill(1),
  );
  assert.equal(fresh.requests.length, 8);
  assert.equal(fresh.maxConcurrent, 2);
  await fresh.close();
});

test("429 with Retry-After and 5xx are retried; a timeout is model_grader_server_error after every try", async () => {
  const engine = new GraderEngine({
    models: [{ baseUrl: fake.baseUrl, timeoutMs: 200, maxRetries: 1, retryBaseMs: 10 }],
  });
  const limited = await engine.run(judge("m", "LIMIT429 SCORE=0.5"), {}, { output_text: "x" });
  assert.equal(limited.reward, 0.5, JSON.stringify(limited.metadata.errors));
  const flaky = await engine.run(judge("m", "FLAKY SCORE=0.75"), {}, { output_text: "x" });
  assert.equal(flaky.reward, 0.75);
  const before = fake.requests.length;
  const hung = await engine.run(judge("m", "HANG SCORE=1"), {}, { output_text: "x" });
  assert.equal(hung.reward, 0);
  assert.equal(hung.metadata.errors.model_grader_server_error, true);
  assert.match(hung.metadata.errors.model_grader_server_error_details ?? "", /timed out after 200 ms \(2 tries\)/);
  assert.equal(fake.requests.length - before, 2);
  const huge = await engine.run(judge("m", "HUGE"), {}, { output_text: "x" });
  assert.match(huge.metadata.errors.model_grader_server_error_details ?? "", /larger than 4194304 bytes/);
  const down = await engine.run(judge("m", "FAIL500"), {}, { output_text: "x" });
  assert.match(down.metadata.errors.model_grader_server_error_details ?? "", /HTTP 500.*\(2 tries\)/);
});

test("configuration errors name the field", () => {
  const bad = (specs: unknown, env: NodeJS.ProcessEnv = {}) => {
    assert.throws(() => resolveEndpoints(specs, { env }), EndpointConfigError);
    try {
      resolveEndpoints(specs, { env });
    } catch (e) {
      return (e as Error).message;
    }
    return "";
  };
  assert.match(bad([{ baseUrl: "ftp://x" }]), /graderEndpoints\[0\]\.baseUrl/);
  assert.match(bad([{ baseUrl: "http://x", modle: "y" }]), /graderEndpoints\[0\]: unknown field "modle"/);
  assert.match(
    bad([
      { baseUrl: "http://a", models: ["m"] },
      { baseUrl: "http://b", models: ["m"] },
    ]),
    /graderEndpoints\[1\]\.models: "m" is already served by graderEndpoints\[0\]/,
  );
  assert.match(bad([{ baseUrl: "http://a" }, { baseUrl: "http://b" }]), /graderEndpoints\[1\]: a second default/);
  assert.match(
    bad([{ baseUrl: "http://a", apiKey: { env: "NOPE" } }]),
    /apiKey\.env: the environment variable NOPE is not set/,
  );
  assert.match(
    bad([{ baseUrl: "http://a", apiKey: { secretRef: { name: "s", key: "k" } } }]),
    /apiKey\.secretRef: a Secret is read in a cluster/,
  );
  // secretRef beside env: the cluster uses the Secret, this process the env var.
  const [ep] = resolveEndpoints([{ baseUrl: "http://a", apiKey: { secretRef: { name: "s", key: "k" }, env: "K" } }], {
    env: { K: "sk-1" },
  });
  assert.equal(ep!.apiKey, "sk-1");
});

test("judgeEndpoints: RFT_GRADER_ENDPOINTS JSON, and RFT_GRADER_BASE_URL as the default when none is", () => {
  const env = {
    RFT_GRADER_ENDPOINTS: JSON.stringify([
      { models: ["m"], baseUrl: "http://a/v1", apiKey: { env: "RFT_GRADER_ENDPOINT_0_API_KEY" } },
    ]),
    RFT_GRADER_ENDPOINT_0_API_KEY: "sk-secret",
    RFT_GRADER_BASE_URL: "http://fallback/v1",
  };
  const eps = judgeEndpoints({ env, fallback: endpointFromEnv("RFT_GRADER", {}, env) });
  assert.deepEqual(
    eps.map((e) => [e.baseUrl, e.models, e.apiKey]),
    [
      ["http://a/v1", ["m"], "sk-secret"],
      ["http://fallback/v1", undefined, undefined],
    ],
  );
  assert.throws(() => judgeEndpoints({ env: { RFT_GRADER_ENDPOINTS: "{" } }), /RFT_GRADER_ENDPOINTS: not JSON/);
  assert.throws(
    () => judgeEndpoints({ env: { RFT_GRADER_ENDPOINTS: '[{"baseUrl":"http://a","apiKey":{"env":"X"}}]' } }),
    /RFT_GRADER_ENDPOINTS\[0\]\.apiKey\.env/,
  );
});

test("rft grade --endpoints FILE: key file beside it; a missing key exits 2 naming the field", async () => {
  const rft = (...args: string[]) =>
    new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve) => {
      const p = spawn(process.execPath, ["--import", "tsx", "cli/rft.ts", ...args], {
        env: { ...process.env, RFT_LOG_LEVEL: "silent" },
      });
      let stdout = "";
      let stderr = "";
      p.stdout.on("data", (d) => (stdout += d));
      p.stderr.on("data", (d) => (stderr += d));
      p.on("close", (status) => resolve({ status, stdout, stderr }));
    });
  const dir = mkdtempSync(join(tmpdir(), "rft-judge-cli-"));
  writeFileSync(join(dir, "judge.key"), "sk-cli\n");
  writeFileSync(
    join(dir, "endpoints.json"),
    JSON.stringify([{ models: ["gpt-4o-mini"], baseUrl: fake.baseUrl, apiKey: { file: "judge.key" } }]),
  );
  const g = JSON.stringify(judge("gpt-4o-mini", "SCORE=0.3"));
  const ok = await rft("grade", "--grader", g, "--sample", "x", "--endpoints", join(dir, "endpoints.json"));
  assert.equal(ok.status, 0, ok.stderr);
  assert.equal(JSON.parse(ok.stdout).reward, 0.3);
  assert.equal(fake.requests.at(-1)!.auth, "Bearer sk-cli");
  const bad = await rft(
    "grade",
    "--grader",
    g,
    "--sample",
    "x",
    "--endpoints",
    JSON.stringify([{ baseUrl: fake.baseUrl, apiKey: { env: "RFT_TEST_NOT_SET" } }]),
  );
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /--endpoints\[0\]\.apiKey\.env: the environment variable RFT_TEST_NOT_SET is not set/);
});
