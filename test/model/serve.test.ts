/** `rft serve` through the official `openai` client: non-streaming, streaming, batching, errors. */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import OpenAI from "openai";
import { createRandomModel, disposeModel, type Model } from "../../trainer/model/model.js";
import { parseChatRequest } from "../../trainer/serve/chat-request.js";
import { type RunningServer, startServer } from "../../trainer/serve/server.js";
import { setup } from "./helpers.js";

let model: Model;
let srv: RunningServer;
let client: OpenAI;

before(async () => {
  await setup();
  model = createRandomModel({
    arch: "qwen2",
    layers: 2,
    hidden: 64,
    heads: 4,
    kvHeads: 2,
    vocab: "byte",
    seed: 8,
    std: 0.2,
  });
  srv = await startServer(model, { modelId: "tiny", port: 0, maxTokens: 64 });
  client = new OpenAI({ baseURL: srv.url, apiKey: "unused", maxRetries: 0 });
});

after(async () => {
  await srv.close();
  disposeModel(model);
});

test("GET /v1/models lists the served model", async () => {
  const list = await client.models.list();
  assert.deepEqual(
    list.data.map((m) => m.id),
    ["tiny"],
  );
});

test("chat completion: n, seed, max tokens, logprobs, usage", async () => {
  const req = {
    model: "tiny",
    messages: [{ role: "user" as const, content: "Say something." }],
    n: 2,
    seed: 7,
    max_completion_tokens: 6,
    temperature: 0.8,
    logprobs: true,
    top_logprobs: 2,
  };
  const r = await client.chat.completions.create(req);
  assert.equal(r.object, "chat.completion");
  assert.equal(r.choices.length, 2);
  for (const c of r.choices) {
    assert.equal(c.message.role, "assistant");
    assert.ok(c.finish_reason === "length" || c.finish_reason === "stop");
    const lp = c.logprobs!.content!;
    assert.ok(lp.length <= 6 && lp.length > 0);
    for (const t of lp) {
      assert.ok(t.logprob <= 0);
      assert.equal(t.top_logprobs.length, 2);
      assert.ok(t.top_logprobs[0]!.logprob >= t.logprob - 1e-6 || t.top_logprobs.some((x) => x.token === t.token));
    }
  }
  assert.equal(
    r.usage!.completion_tokens,
    r.choices.reduce((a, c) => a + c.logprobs!.content!.length, 0),
  );
  const again = await client.chat.completions.create(req);
  assert.deepEqual(
    again.choices.map((c) => c.message.content),
    r.choices.map((c) => c.message.content),
    "same seed, same completions",
  );
});

test("streaming (SSE) delivers the same text as the non-streaming call, then finish_reason and usage", async () => {
  const base = { model: "tiny", messages: [{ role: "user" as const, content: "Hi" }], temperature: 0, max_tokens: 12 };
  const whole = await client.chat.completions.create(base);
  const stream = await client.chat.completions.create({
    ...base,
    stream: true,
    stream_options: { include_usage: true },
  });
  let text = "";
  let finish: string | null = null;
  let usage: OpenAI.CompletionUsage | undefined;
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    const ch = chunk.choices[0];
    if (!ch) continue;
    text += ch.delta.content ?? "";
    if (ch.finish_reason) finish = ch.finish_reason;
  }
  assert.equal(text, whole.choices[0]!.message.content);
  assert.equal(finish, whole.choices[0]!.finish_reason);
  assert.equal(usage!.completion_tokens, whole.usage!.completion_tokens);
});

test("concurrent requests share batches", async () => {
  const before = srv.batcher.batchSizes.length;
  await Promise.all(
    Array.from({ length: 6 }, (_, i) =>
      client.chat.completions.create({
        model: "tiny",
        messages: [{ role: "user", content: `q${i}` }],
        max_tokens: 4,
        seed: i,
      }),
    ),
  );
  const sizes = srv.batcher.batchSizes.slice(before);
  assert.equal(
    sizes.reduce((a, b) => a + b, 0),
    6,
  );
  assert.ok(sizes.length < 6, `batches ${sizes}`);
});

test("bad requests get OpenAI's error envelope", async () => {
  const bad = async (body: Record<string, unknown>, status: number, param: string | null, re: RegExp) => {
    const res = await fetch(`${srv.url}/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    assert.equal(res.status, status);
    const j = (await res.json()) as {
      error: { message: string; type: string; param: string | null; code: string | null };
    };
    assert.equal(j.error.type, "invalid_request_error");
    assert.equal(j.error.param, param);
    assert.match(j.error.message, re);
  };
  const msgs = [{ role: "user", content: "x" }];
  await bad({ model: "tiny" }, 400, "messages", /Missing required parameter: 'messages'/);
  await bad({ model: "nope", messages: msgs }, 404, "model", /'nope' does not exist/);
  await bad({ model: "tiny", messages: msgs, temperature: 3 }, 400, "temperature", /between 0 and 2/);
  await bad({ model: "tiny", messages: msgs, n: 0 }, 400, "n", /integer between 1 and 128/);
  await bad({ model: "tiny", messages: msgs, stop: ["a", "b", "c", "d", "e"] }, 400, "stop", /up to 4/);
  await bad({ model: "tiny", messages: msgs, bogus: 1 }, 400, "bogus", /Unrecognized request argument supplied: bogus/);
  await bad({ model: "tiny", messages: [{ role: "wizard", content: "x" }] }, 400, "messages[0].role", /role/);
  await bad({ model: "tiny", messages: msgs, top_logprobs: 3 }, 400, "top_logprobs", /'logprobs' must be true/);
  const raw = await fetch(`${srv.url}/chat/completions`, { method: "POST", body: "{not json" });
  assert.equal(raw.status, 400);
  assert.match(((await raw.json()) as { error: { message: string } }).error.message, /parse the JSON body/);
  await assert.rejects(
    client.chat.completions.create({ model: "tiny", messages: [], max_tokens: 2 }),
    (e: unknown) => e instanceof OpenAI.BadRequestError && /empty array/.test(e.message),
  );
  // Structured outputs are accepted (test/model/serve-structured.test.ts); an unsupported schema is named.
  assert.equal(
    parseChatRequest({ model: "tiny", messages: msgs, response_format: { type: "json_object" } }, "tiny").responseFormat
      ?.type,
    "json_object",
  );
  assert.throws(
    () =>
      parseChatRequest(
        {
          model: "tiny",
          messages: msgs,
          response_format: { type: "json_schema", json_schema: { name: "x", schema: { type: "object", not: {} } } },
        },
        "tiny",
      ),
    /Invalid 'response_format\.json_schema\.schema\.not': unsupported schema keyword "not"/,
  );
});

test("a client that hangs up stops its generation; a prompt that cannot fit is refused before tokenizing", async () => {
  const before = srv.batcher.cancelled;
  const ac = new AbortController();
  const res = await fetch(`${srv.url}/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      model: "tiny",
      messages: [{ role: "user", content: "tell me everything" }],
      max_tokens: 64,
      temperature: 0,
      stream: true,
    }),
    signal: ac.signal,
  });
  const reader = res.body!.getReader();
  await reader.read(); // the first chunk: generation has begun
  ac.abort();
  const end = Date.now() + 20_000;
  while (srv.batcher.cancelled === before && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
  assert.equal(srv.batcher.cancelled, before + 1, "the hung-up request's sample was stopped");
  // The server still answers.
  const ok = await client.chat.completions.create({
    model: "tiny",
    messages: [{ role: "user", content: "hi" }],
    max_tokens: 2,
  });
  assert.equal(ok.choices.length, 1);

  const huge = "x".repeat(model.config.maxContext * 64);
  await assert.rejects(
    client.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: huge }], max_tokens: 2 }),
    (e: unknown) =>
      e instanceof OpenAI.BadRequestError && e.code === "context_length_exceeded" && /characters long/.test(e.message),
  );
});

test("with an API key every endpoint but /healthz requires the bearer token (401 in OpenAI's shape)", async () => {
  const key = "sk-serve-test-0123456789";
  const locked = await startServer(model, { modelId: "tiny", port: 0, maxTokens: 8, apiKey: key });
  try {
    const base = locked.url.replace(/\/v1$/, "");
    assert.deepEqual(await (await fetch(`${base}/healthz`)).json(), { status: "ok" });
    for (const auth of [undefined, "Bearer wrong", `Basic ${key}`, key]) {
      const r = await fetch(`${locked.url}/models`, auth ? { headers: { authorization: auth } } : {});
      assert.equal(r.status, 401, String(auth));
      assert.equal(((await r.json()) as { error: { code: string } }).error.code, "invalid_api_key");
    }
    const wrong = new OpenAI({ baseURL: locked.url, apiKey: "nope", maxRetries: 0 });
    await assert.rejects(
      wrong.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: "hi" }], max_tokens: 2 }),
      OpenAI.AuthenticationError,
    );
    const right = new OpenAI({ baseURL: locked.url, apiKey: key, maxRetries: 0 });
    assert.deepEqual(
      (await right.models.list()).data.map((m) => m.id),
      ["tiny"],
    );
    const r = await right.chat.completions.create({
      model: "tiny",
      messages: [{ role: "user", content: "hi" }],
      max_tokens: 2,
    });
    assert.equal(r.choices.length, 1);
    // Without a key the server stays open, and /healthz answers there too.
    assert.equal((await fetch(`${srv.url.replace(/\/v1$/, "")}/healthz`)).status, 200);
  } finally {
    await locked.close();
  }
});
