/**
 * External OpenAI-compatible endpoints (`rft api --endpoints FILE`, api/endpoints.ts): their models are listed,
 * chat completions to them are proxied with the endpoint's key (streamed too), and eval runs sample them, in
 * local mode and in cluster mode (where this server holds no model). The "external provider" here is a second,
 * real `rft api` serving a tiny model behind its own API key: a real OpenAI-compatible server, not a fake.
 */
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import OpenAI, { toFile } from "openai";
import { ApiKeys } from "../../api/http.js";
import { apiEndpoints, EndpointConfigError, loadEndpoints } from "../../api/endpoints.js";
import { ModelCatalog } from "../../api/models.js";
import { startApiServer } from "../../api/server.js";
import { KubeClient } from "../../operator/client.js";
import { createLogger } from "../../proto/log.js";
import { tinyModel } from "../helpers/rft-job.js";
import { KEY, startApi, startApiCli, tempDir, until } from "./helpers.js";

const PROVIDER_KEY = "sk-provider-0123456789abcdef";
const criteria = [
  { type: "string_check", name: "any", input: "{{ sample.output_text }}", reference: "", operation: "ne" },
];

async function provider() {
  const dir = tempDir("provider");
  await tinyModel(join(dir, "tiny"));
  return startApi({ models: { "tiny-7b": join(dir, "tiny") }, keys: [PROVIDER_KEY] });
}

/** An eval whose one run samples `model` over two datapoints; the finished run and its items. */
async function sampledRun(c: OpenAI, model: string) {
  const ev = await c.evals.create({
    data_source_config: { type: "custom", item_schema: { type: "object" }, include_sample_schema: true },
    testing_criteria: criteria as any,
  });
  const file = await c.files.create({
    file: await toFile(Buffer.from('{"item":{"q":"France?"}}\n{"item":{"q":"Peru?"}}\n'), "q.jsonl"),
    purpose: "evals",
  });
  const run = await c.evals.runs.create(ev.id, {
    data_source: {
      type: "completions",
      model,
      source: { type: "file_id", id: file.id },
      input_messages: { type: "template", template: [{ role: "user", content: "Capital of {{ item.q }}" }] },
      sampling_params: { max_completion_tokens: 3, temperature: 0, seed: 1 },
    },
  });
  const done = await until(
    () => c.evals.runs.retrieve(run.id, { eval_id: ev.id }),
    (r) => r.status === "completed" || r.status === "failed",
    "the sampled run",
  );
  const items = (await c.evals.runs.outputItems.list(run.id, { eval_id: ev.id })).data;
  return { done, items };
}

test("rft api --endpoints: an endpoint's models are listed, chatted with (streamed too) and sampled by evals", async () => {
  const up = await provider();
  const dir = tempDir("endpoints");
  const file = join(dir, "endpoints.yaml");
  // The judge-endpoint list of spec.graderEndpoints; `acme-tiny` is what clients say, `tiny-7b` what it serves.
  writeFileSync(
    file,
    `- baseUrl: ${up.url}\n  models: [acme-tiny]\n  servedModel: tiny-7b\n  apiKey: { env: RFT_TEST_PROVIDER_KEY }\n`,
  );
  const host = new URL(up.url).host;
  process.env.RFT_TEST_PROVIDER_KEY = PROVIDER_KEY;
  const api = await startApiCli(["--data", join(dir, "data"), "--endpoints", file]);
  delete process.env.RFT_TEST_PROVIDER_KEY;
  try {
    const c = api.client;
    const models = (await c.models.list()).data;
    assert.deepEqual(
      models.map((m) => [m.id, m.owned_by]),
      [["acme-tiny", host]],
    );
    assert.equal((await c.models.retrieve("acme-tiny")).owned_by, host);

    const messages = [{ role: "user" as const, content: "Capital of France?" }];
    const answer = await c.chat.completions.create({ model: "acme-tiny", messages, max_completion_tokens: 3 });
    assert.equal(answer.model, "tiny-7b"); // the endpoint's answer, as it is
    assert.equal(typeof answer.choices[0]!.message.content, "string");
    assert.ok(answer.usage!.completion_tokens >= 1);
    let streamed = 0;
    for await (const chunk of await c.chat.completions.create({
      model: "acme-tiny",
      messages,
      max_completion_tokens: 3,
      stream: true,
    }))
      streamed += chunk.choices.length;
    assert.ok(streamed >= 1);
    await assert.rejects(
      c.chat.completions.create({ model: "gpt-nothing", messages }),
      (e: unknown) => e instanceof OpenAI.NotFoundError && e.param === "model",
    );

    const { done, items } = await sampledRun(c, "acme-tiny");
    assert.equal(done.status, "completed", JSON.stringify(done.error));
    assert.equal(done.per_model_usage[0]!.invocation_count, 2);
    assert.equal(items.length, 2);
    assert.equal(typeof items[0]!.sample.output[0]!.content, "string");
  } finally {
    await api.stop();
    await up.close();
  }
});

test("cluster mode holds no model, yet chat and eval runs reach an endpoint's model", async () => {
  const up = await provider();
  const dir = tempDir("endpoints-cluster");
  // A kubeconfig of an API server that is not there: chat and evals never need it.
  writeFileSync(
    join(dir, "kubeconfig"),
    JSON.stringify({
      apiVersion: "v1",
      kind: "Config",
      clusters: [{ name: "c", cluster: { server: "https://127.0.0.1:1", "insecure-skip-tls-verify": true } }],
      users: [{ name: "u", user: { token: "t" } }],
      contexts: [{ name: "x", context: { cluster: "c", user: "u" } }],
      "current-context": "x",
    }),
  );
  const endpoints = apiEndpoints([{ baseUrl: up.url, models: ["tiny-7b"], apiKey: { env: "K" } }], {
    where: "endpoints.yaml",
    env: { K: PROVIDER_KEY },
  });
  const api = await startApiServer({
    dataDir: join(dir, "data"),
    keys: new ApiKeys([KEY]),
    models: new ModelCatalog(),
    port: 0,
    logger: createLogger("api-test", "silent"),
    endpoints,
    cluster: {
      client: await KubeClient.fromKubeconfig(join(dir, "kubeconfig")),
      config: {
        projects: { default: { namespace: "team-a", modelClaim: "models" } },
        models: { base: "base" },
        datasetBaseUrl: "http://api.example:8080",
      },
      datasetKey: Buffer.alloc(32, 1),
      pollMs: 0,
    },
  });
  const c = new OpenAI({ baseURL: api.url, apiKey: KEY, maxRetries: 0 });
  try {
    const messages = [{ role: "user" as const, content: "hi" }];
    const answer = await c.chat.completions.create({ model: "tiny-7b", messages, max_completion_tokens: 2 });
    assert.equal(answer.object, "chat.completion");
    await assert.rejects(
      c.chat.completions.create({ model: "base", messages }),
      (e: unknown) => e instanceof OpenAI.BadRequestError && e.code === "unsupported_in_cluster_mode",
    );
    const { done, items } = await sampledRun(c, "tiny-7b");
    assert.equal(done.status, "completed", JSON.stringify(done.error));
    assert.equal(items.length, 2);
  } finally {
    await api.close();
    await up.close();
  }
});

test("the endpoints file: spec.graderEndpoints' list, every endpoint naming its models; keys only from env or a file", () => {
  const bad = (v: unknown, env: NodeJS.ProcessEnv = {}) => {
    try {
      apiEndpoints(v, { where: "e.yaml", env, baseModels: ["base"] });
    } catch (e) {
      assert.ok(e instanceof EndpointConfigError);
      return e.message;
    }
    assert.fail("accepted");
  };
  const url = "http://x/v1";
  assert.match(bad([{ baseUrl: url }]), /^e\.yaml\[0\]\.models: rft api routes a model to an endpoint by its id only/);
  assert.equal(bad([{ baseUrl: url, models: ["base"] }]), 'e.yaml[0].models: "base" is a base model of this server');
  assert.equal(
    bad([{ baseUrl: url, models: ["m"], apiKey: { env: "NOPE" } }]),
    "e.yaml[0].apiKey.env: the environment variable NOPE is not set",
  );
  assert.equal(bad([{ baseUrl: url, models: ["m"], key: "sk-1" }]), 'e.yaml[0]: unknown field "key"');
  assert.equal(
    bad([
      { baseUrl: url, models: ["m"] },
      { baseUrl: "http://y/v1", models: ["m"] },
    ]),
    'e.yaml[1].models: "m" is already served by e.yaml[0]',
  );
  // A key file resolves beside the endpoints file.
  const dir = tempDir("endpoints-file");
  writeFileSync(join(dir, "key"), "sk-from-file\n");
  writeFileSync(join(dir, "e.yaml"), "- baseUrl: https://llm.example/v1/\n  models: [m]\n  apiKey: { file: key }\n");
  const e = loadEndpoints(join(dir, "e.yaml"), {}).of("m")!;
  assert.deepEqual([e.baseUrl, e.apiKey], ["https://llm.example/v1", "sk-from-file"]);
});
