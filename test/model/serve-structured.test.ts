/**
 * `rft serve` with structured outputs and tools, through the official `openai` client: response_format
 * json_schema / json_object (every choice validates with ajv), forced and free tool calls returned as
 * OpenAI's `tool_calls` (streaming too), a multi-turn conversation with tool results, and errors naming the
 * parameter. The model is a random tiny one: without the grammar it writes no JSON at all.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { Ajv } from "ajv";
import OpenAI from "openai";
import { createRandomModel, disposeModel, type Model } from "../../trainer/model/model.js";
import { type RunningServer, startServer } from "../../trainer/serve/server.js";
import { setup } from "./helpers.js";

let model: Model;
let srv: RunningServer;
let client: OpenAI;
const ajv = new Ajv({ strict: false });

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
  srv = await startServer(model, { modelId: "tiny", port: 0, maxTokens: 400 });
  client = new OpenAI({ baseURL: srv.url, apiKey: "unused", maxRetries: 0 });
});

after(async () => {
  await srv.close();
  disposeModel(model);
});

const ANSWER = {
  type: "object",
  properties: {
    compliant: { type: "string", enum: ["yes", "no"] },
    explanation: { type: "string", maxLength: 16 },
    confidence: { type: "integer", minimum: 0, maximum: 10 },
  },
  required: ["compliant", "explanation", "confidence"],
  additionalProperties: false,
};

const WEATHER = {
  type: "function" as const,
  function: {
    name: "get_weather",
    description: "Current weather in a city",
    parameters: {
      type: "object",
      properties: { city: { type: "string", maxLength: 12 }, unit: { type: "string", enum: ["c", "f"] } },
      required: ["city", "unit"],
      additionalProperties: false,
    },
    strict: true,
  },
};

const user = (content: string) => [{ role: "user" as const, content }];

test("response_format json_schema: every choice is JSON of the schema", async () => {
  const validate = ajv.compile(ANSWER);
  const r = await client.chat.completions.create({
    model: "tiny",
    messages: user("Is data encrypted at rest?"),
    n: 4,
    seed: 3,
    temperature: 1.3,
    response_format: { type: "json_schema", json_schema: { name: "answer", strict: true, schema: ANSWER } },
  });
  assert.equal(r.choices.length, 4);
  for (const c of r.choices) {
    assert.equal(c.finish_reason, "stop");
    const v = JSON.parse(c.message.content!) as unknown;
    assert.ok(validate(v), `${c.message.content}: ${ajv.errorsText(validate.errors)}`);
  }
  // json_object: an object, whatever its keys; a small token limit cuts it ("length").
  const o = await client.chat.completions.create({
    model: "tiny",
    messages: user("JSON please"),
    seed: 1,
    max_completion_tokens: 4,
    response_format: { type: "json_object" },
  });
  assert.equal(o.choices[0]!.finish_reason, "length");
  assert.ok(o.choices[0]!.message.content!.startsWith("{"));
  // The same request without the format: the random model writes no JSON.
  const free = await client.chat.completions.create({
    model: "tiny",
    messages: user("Is data encrypted at rest?"),
    seed: 3,
    max_completion_tokens: 30,
  });
  assert.throws(() => JSON.parse(free.choices[0]!.message.content!));
});

test("tool_choice forcing a function: tool_calls in OpenAI's shape, arguments valid for its parameters", async () => {
  const validate = ajv.compile(WEATHER.function.parameters);
  const r = await client.chat.completions.create({
    model: "tiny",
    messages: user("Weather in Oslo?"),
    n: 3,
    seed: 5,
    tools: [WEATHER],
    tool_choice: { type: "function", function: { name: "get_weather" } },
  });
  for (const c of r.choices) {
    assert.equal(c.finish_reason, "tool_calls");
    assert.equal(c.message.content, null);
    const calls = c.message.tool_calls!;
    assert.equal(calls.length, 1);
    const call = calls[0]!;
    assert.equal(call.type, "function");
    assert.match(call.id, /^call_[0-9a-f]{24}$/);
    assert.ok(call.type === "function" && call.function.name === "get_weather");
    const args = JSON.parse(call.type === "function" ? call.function.arguments : "") as unknown;
    assert.ok(validate(args), `${JSON.stringify(args)}: ${ajv.errorsText(validate.errors)}`);
  }
  // Streaming: the call arrives as a tool_calls delta, then finish_reason "tool_calls".
  const stream = await client.chat.completions.create({
    model: "tiny",
    messages: user("Weather in Oslo?"),
    seed: 5,
    tools: [WEATHER],
    tool_choice: "required",
    stream: true,
  });
  const deltas: OpenAI.Chat.Completions.ChatCompletionChunk.Choice.Delta.ToolCall[] = [];
  let finish: string | null = null;
  for await (const ch of stream) {
    const c = ch.choices[0];
    if (c?.delta.tool_calls) deltas.push(...c.delta.tool_calls);
    if (c?.finish_reason) finish = c.finish_reason;
  }
  assert.equal(finish, "tool_calls");
  assert.equal(deltas.length, 1);
  assert.equal(deltas[0]!.function?.name, "get_weather");
  assert.ok(validate(JSON.parse(deltas[0]!.function!.arguments!)));
});

test("a conversation with a tool call and its result is accepted; tool_choice none leaves the tools out", async () => {
  const r = await client.chat.completions.create({
    model: "tiny",
    seed: 2,
    max_completion_tokens: 8,
    tools: [WEATHER],
    messages: [
      { role: "user", content: "Weather in Oslo?" },
      {
        role: "assistant",
        content: null,
        tool_calls: [
          {
            id: "call_1",
            type: "function",
            function: { name: "get_weather", arguments: '{"city":"Oslo","unit":"c"}' },
          },
        ],
      },
      { role: "tool", tool_call_id: "call_1", content: "4C, rain" },
    ],
  });
  assert.equal(r.choices.length, 1);
  assert.ok(typeof r.choices[0]!.message.content === "string");
  // The prompt with tools declared is longer than with tool_choice "none" (which drops them).
  const withTools = await client.chat.completions.create({
    model: "tiny",
    messages: user("hi"),
    max_completion_tokens: 1,
    tools: [WEATHER],
  });
  const none = await client.chat.completions.create({
    model: "tiny",
    messages: user("hi"),
    max_completion_tokens: 1,
    tools: [WEATHER],
    tool_choice: "none",
  });
  assert.ok(withTools.usage!.prompt_tokens > none.usage!.prompt_tokens + 100);
});

test("bad tools, tool_choice and response_format name the parameter", async () => {
  const bad = async (body: Record<string, unknown>, param: string, re: RegExp) => {
    const res = await fetch(`${srv.url}/chat/completions`, {
      method: "POST",
      body: JSON.stringify({ model: "tiny", messages: user("x"), ...body }),
    });
    assert.equal(res.status, 400);
    const e = ((await res.json()) as { error: { message: string; param: string } }).error;
    assert.equal(e.param, param);
    assert.match(e.message, re);
  };
  await bad({ tools: [{ type: "retrieval" }] }, "tools[0].type", /must be "function"/);
  await bad(
    { tools: [WEATHER], tool_choice: { type: "function", function: { name: "nope" } } },
    "tool_choice.function.name",
    /not one of the tools/,
  );
  await bad({ tool_choice: "required" }, "tool_choice", /needs tools/);
  await bad(
    {
      tools: [
        {
          ...WEATHER,
          function: {
            ...WEATHER.function,
            parameters: { type: "object", properties: { a: { type: "string", format: "uri" } } },
          },
        },
      ],
      tool_choice: "required",
    },
    "tools[0].function.parameters.properties.a.format",
    /must be one of/,
  );
  await bad(
    {
      response_format: {
        type: "json_schema",
        json_schema: {
          name: "x",
          strict: true,
          schema: { type: "object", properties: { a: { type: "string" } }, additionalProperties: false },
        },
      },
    },
    "response_format.json_schema.schema.required",
    /must list every property/,
  );
  await bad({ messages: [{ role: "tool", content: "x" }] }, "messages[0].tool_call_id", /tool_call_id/);
});
