/**
 * Function calling through chat templates (trainer/sampling/tools.ts): a template that reads `tools` gets
 * Hugging Face's fields (tools, tool_calls with object arguments, tool messages); one that does not gets
 * them in text; tool calls are parsed out of completions in the <tool_call> and bare-JSON conventions.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { byteLevelTokenizer, ChatTokenizer } from "../../trainer/model/tokenizer.js";
import {
  parseToolCalls,
  parseToolChoice,
  parseTools,
  renderChat,
  templateReadsTools,
  toolCallSchema,
} from "../../trainer/sampling/tools.js";

const WEATHER = { type: "function" as const, function: { name: "get_weather", parameters: { type: "object" } } };
const id = (i: number) => `call_${i}`;

/** A template in the style of Qwen2.5's: tools in the system turn, calls and results in the conventional tags. */
const TOOL_TEMPLATE =
  "{%- if tools %}<|im_start|>system\n{% for t in tools %}{{ t.function.name }};{% endfor %}<|im_end|>\n{%- endif %}" +
  "{%- for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}" +
  "{%- if m.tool_calls %}{% for c in m.tool_calls %}[call {{ c.function.name }} city={{ c.function.arguments.city }}]{% endfor %}{% endif %}" +
  "{%- if m.tool_call_id %}(for {{ m.tool_call_id }}){% endif %}<|im_end|>\n{%- endfor %}" +
  "{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

const conversation = [
  { role: "user", content: "Weather in Oslo?" },
  {
    role: "assistant",
    content: "",
    tool_calls: [
      { id: "c1", type: "function" as const, function: { name: "get_weather", arguments: '{"city":"Oslo"}' } },
    ],
  },
  { role: "tool", content: "4C", tool_call_id: "c1" },
];

test("a template that reads tools gets Hugging Face's fields: tools, tool_calls with object arguments, tool_call_id", () => {
  const files = byteLevelTokenizer();
  const tok = new ChatTokenizer({
    ...files,
    tokenizerConfig: { ...files.tokenizerConfig, chat_template: TOOL_TEMPLATE },
  });
  assert.equal(templateReadsTools(tok.templateSource), true);
  const text = renderChat(tok, conversation, [WEATHER], true);
  assert.equal(
    text,
    // ("{%-" trims the newline after each turn)
    "<|im_start|>system\nget_weather;<|im_end|><|im_start|>user\nWeather in Oslo?<|im_end|>" +
      "<|im_start|>assistant\n[call get_weather city=Oslo]<|im_end|><|im_start|>tool\n4C(for c1)<|im_end|><|im_start|>assistant\n",
  );
});

test("a template that ignores tools (ChatML) gets them as text in the <tool_call> convention", () => {
  const tok = new ChatTokenizer(byteLevelTokenizer());
  assert.equal(templateReadsTools(tok.templateSource), false);
  const text = renderChat(tok, [{ role: "system", content: "Be brief." }, ...conversation], [WEATHER], true);
  assert.match(text, /^<\|im_start\|>system\nBe brief\.\n\n# Tools\n/);
  assert.match(
    text,
    /<tools>\n\{"type":"function","function":\{"name":"get_weather","parameters":\{"type":"object"\}\}\}\n<\/tools>/,
  );
  assert.match(
    text,
    /<\|im_start\|>assistant\n<tool_call>\n\{"name":"get_weather","arguments":\{"city":"Oslo"\}\}\n<\/tool_call><\|im_end\|>/,
  );
  assert.match(
    text,
    /<\|im_start\|>tool\n<tool_response>\n4C\n<\/tool_response><\|im_end\|>\n<\|im_start\|>assistant\n$/,
  );
  // No tools: the conversation renders as before.
  assert.equal(
    renderChat(tok, [{ role: "user", content: "hi" }], [], true),
    tok.applyChatTemplate([{ role: "user", content: "hi" }], true),
  );
});

test("tool calls parsed from completions", () => {
  const tools = parseTools([WEATHER, { type: "function", function: { name: "get_time" } }]);
  // Hermes/Qwen tags, two calls, text around them.
  const two = parseToolCalls(
    'Checking.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>\n<tool_call>{"name":"get_time","arguments":{}}</tool_call>',
    tools,
    id,
  );
  assert.deepEqual(two.toolCalls, [
    { id: "call_0", type: "function", function: { name: "get_weather", arguments: '{"city":"Oslo"}' } },
    { id: "call_1", type: "function", function: { name: "get_time", arguments: "{}" } },
  ]);
  assert.equal(two.content, "Checking.");
  // Llama 3.1 style: one bare JSON object with "parameters".
  assert.deepEqual(parseToolCalls(' {"name": "get_time", "parameters": {"tz": "UTC"}} ', tools, id), {
    content: null,
    toolCalls: [{ id: "call_0", type: "function", function: { name: "get_time", arguments: '{"tz":"UTC"}' } }],
  });
  // Not calls: undeclared names, broken JSON, no tools declared; the text is kept as it is.
  for (const text of [
    '<tool_call>{"name": "rm", "arguments": {}}</tool_call>',
    "<tool_call>{oops</tool_call>",
    '{"name": "x"}',
  ]) {
    assert.deepEqual(parseToolCalls(text, tools, id), { content: text, toolCalls: [] });
  }
  assert.deepEqual(parseToolCalls('{"name": "get_time"}', [], id), { content: '{"name": "get_time"}', toolCalls: [] });
});

test("tools and tool_choice are validated naming the field; a forced call's schema", () => {
  assert.throws(
    () => parseTools([{ type: "function", function: { name: "a b" } }]),
    /tools\[0\]\.function\.name: is required/,
  );
  assert.throws(() => parseTools([WEATHER, WEATHER]), /tools\[1\]\.function\.name: "get_weather" is declared twice/);
  assert.throws(() => parseTools({}), /tools: must be an array/);
  assert.equal(parseToolChoice(undefined, []), "none");
  assert.equal(parseToolChoice(undefined, [WEATHER]), "auto");
  assert.deepEqual(parseToolChoice({ type: "function", function: { name: "get_weather" } }, [WEATHER]), {
    name: "get_weather",
  });
  assert.throws(() => parseToolChoice("always", [WEATHER]), /tool_choice: must be/);
  assert.deepEqual(toolCallSchema([WEATHER], "required"), {
    type: "object",
    properties: { name: { const: "get_weather" }, arguments: { type: "object" } },
    required: ["name", "arguments"],
    additionalProperties: false,
  });
  const two = toolCallSchema([WEATHER, { type: "function", function: { name: "t" } }], "required");
  assert.equal((two["anyOf"] as unknown[]).length, 2);
});
