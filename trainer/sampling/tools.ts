/**
 * Function calling: OpenAI's `tools` and `tool_calls` through a model's chat template, and tool calls parsed
 * back out of completions. Pure functions.
 *
 * Rendering follows the Hugging Face convention: the template gets `tools` (OpenAI's function definitions as
 * they are), assistant messages carry `tool_calls` with `arguments` as an object, tool results are `tool`
 * messages. A template that never reads `tools` (SmolLM2's, the ChatML one of `rft init-model`) would drop
 * them, so then the definitions go into the system message and calls and results into message text, in the
 * `<tool_call>` convention of Hermes and Qwen2.5 templates: a call is `<tool_call>{"name": …, "arguments":
 * {…}}</tool_call>`. Completions are parsed in that convention (and, for Llama 3.1 style templates, as one bare
 * JSON object `{"name": …, "parameters"|"arguments": …}` naming a declared tool).
 */
import type { ChatTokenizer, ChatMessage as TemplateMessage } from "../model/tokenizer.js";

export interface ToolDef {
  type: "function";
  function: { name: string; description?: string; parameters?: Record<string, unknown>; strict?: boolean };
}

/** OpenAI's tool call (`choices[].message.tool_calls[]`, `sample.output_tools[]`); `arguments` is JSON text. */
export interface ToolCall {
  id: string;
  type: "function";
  function: { name: string; arguments: string };
}

export type ToolChoice = "none" | "auto" | "required" | { name: string };

/** An OpenAI-shaped message on its way to the template (content already flattened to text). */
export interface ConversationMessage {
  role: string;
  content: string | null;
  tool_calls?: ToolCall[];
  tool_call_id?: string;
  name?: string;
}

export class ToolsError extends Error {
  override name = "ToolsError";
  constructor(
    readonly path: string,
    message: string,
  ) {
    super(`${path}: ${message}`);
  }
}

export const MAX_TOOLS = 128;
const NAME = /^[A-Za-z0-9_-]{1,64}$/;
const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === "object" && !Array.isArray(v);

/** Validates OpenAI's `tools` (function tools only). */
export function parseTools(v: unknown, where = "tools"): ToolDef[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) throw new ToolsError(where, "must be an array of tools");
  if (v.length > MAX_TOOLS) throw new ToolsError(where, `at most ${MAX_TOOLS} tools`);
  const names = new Set<string>();
  return v.map((t, i) => {
    const at = `${where}[${i}]`;
    if (!isObject(t) || t["type"] !== "function")
      throw new ToolsError(`${at}.type`, 'must be "function" (the only tool type supported)');
    const f = t["function"];
    if (!isObject(f)) throw new ToolsError(`${at}.function`, "is required");
    const name = f["name"];
    if (typeof name !== "string" || !NAME.test(name))
      throw new ToolsError(`${at}.function.name`, "is required: 1 to 64 letters, digits, '_' or '-'");
    if (names.has(name)) throw new ToolsError(`${at}.function.name`, `"${name}" is declared twice`);
    names.add(name);
    if (f["description"] !== undefined && typeof f["description"] !== "string")
      throw new ToolsError(`${at}.function.description`, "must be a string");
    if (f["parameters"] !== undefined && !isObject(f["parameters"]))
      throw new ToolsError(`${at}.function.parameters`, "must be a JSON Schema object");
    if (f["strict"] !== undefined && typeof f["strict"] !== "boolean")
      throw new ToolsError(`${at}.function.strict`, "must be a boolean");
    return { type: "function", function: f as ToolDef["function"] };
  });
}

/** Validates `tool_choice` against the declared tools (default: "auto" with tools, "none" without). */
export function parseToolChoice(v: unknown, tools: ToolDef[], where = "tool_choice"): ToolChoice {
  if (v === undefined || v === null) return tools.length ? "auto" : "none";
  if (v === "none" || v === "auto" || v === "required") {
    if (v === "required" && tools.length === 0) throw new ToolsError(where, '"required" needs tools');
    return v;
  }
  const name = isObject(v) && v["type"] === "function" && isObject(v["function"]) ? v["function"]["name"] : undefined;
  if (typeof name !== "string")
    throw new ToolsError(where, 'must be "none", "auto", "required" or {"type": "function", "function": {"name": …}}');
  if (!tools.some((t) => t.function.name === name))
    throw new ToolsError(`${where}.function.name`, `"${name}" is not one of the tools`);
  return { name };
}

/** Validates an assistant message's `tool_calls` (OpenAI's shape). */
export function parseToolCallList(v: unknown, where: string): ToolCall[] {
  if (!Array.isArray(v)) throw new ToolsError(where, "must be an array of tool calls");
  return v.map((c, i) => {
    const at = `${where}[${i}]`;
    if (!isObject(c)) throw new ToolsError(at, "must be an object");
    if (c["type"] !== undefined && c["type"] !== "function") throw new ToolsError(`${at}.type`, 'must be "function"');
    const f = c["function"];
    if (!isObject(f) || typeof f["name"] !== "string") throw new ToolsError(`${at}.function.name`, "is required");
    const args = f["arguments"] ?? "{}";
    if (typeof args !== "string") throw new ToolsError(`${at}.function.arguments`, "must be a string (JSON text)");
    return {
      id: typeof c["id"] === "string" ? c["id"] : `call_${i}`,
      type: "function",
      function: { name: f["name"], arguments: args },
    };
  });
}

/** Whether a chat template reads the `tools` variable (Hugging Face's tool-use convention). */
export function templateReadsTools(template: string | null): boolean {
  return template !== null && /\btools\b/.test(template);
}

/** A call as the `<tool_call>` convention writes it. */
function callJson(c: ToolCall): string {
  return JSON.stringify({ name: c.function.name, arguments: argumentsValue(c.function.arguments) });
}

/** `arguments` as the template wants it: the parsed object (Hugging Face), or the text when it is not JSON. */
function argumentsValue(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return text;
  }
}

/** The system-message block that declares tools to a template that does not read `tools`. */
export function toolsPreamble(tools: ToolDef[]): string {
  return [
    "# Tools",
    "",
    "You can call the functions declared between <tools> and </tools> below, one JSON signature per line:",
    "<tools>",
    ...tools.map((t) => JSON.stringify(t)),
    "</tools>",
    "",
    "To call one, answer with its name and arguments as a JSON object between <tool_call> and </tool_call>:",
    "<tool_call>",
    '{"name": "<function name>", "arguments": {<arguments as JSON>}}',
    "</tool_call>",
  ].join("\n");
}

/**
 * Messages and `tools` for `applyChatTemplate`. With a template that reads `tools`, tool calls and results
 * go in Hugging Face's fields; otherwise into the text, as the module comment says.
 */
export function templateInput(
  messages: ConversationMessage[],
  tools: ToolDef[],
  readsTools: boolean,
): { messages: TemplateMessage[]; tools?: ToolDef[] } {
  if (readsTools) {
    return {
      messages: messages.map((m) => ({
        role: m.role,
        content: m.content ?? "",
        ...(m.tool_calls?.length
          ? {
              tool_calls: m.tool_calls.map((c) => ({
                id: c.id,
                type: "function",
                function: { name: c.function.name, arguments: argumentsValue(c.function.arguments) },
              })),
            }
          : {}),
        ...(m.tool_call_id !== undefined ? { tool_call_id: m.tool_call_id } : {}),
        ...(m.name !== undefined ? { name: m.name } : {}),
      })),
      ...(tools.length ? { tools } : {}),
    };
  }
  const out: TemplateMessage[] = messages.map((m) => {
    const calls = (m.tool_calls ?? []).map((c) => `<tool_call>\n${callJson(c)}\n</tool_call>`);
    if (m.role === "tool") return { role: "tool", content: `<tool_response>\n${m.content ?? ""}\n</tool_response>` };
    return { role: m.role, content: [m.content ?? "", ...calls].filter((s) => s !== "").join("\n") };
  });
  if (tools.length) {
    const preamble = toolsPreamble(tools);
    if (out[0]?.role === "system") out[0] = { role: "system", content: `${out[0].content}\n\n${preamble}` };
    else out.unshift({ role: "system", content: preamble });
  }
  return { messages: out };
}

/** Tool calls in a completion, and the text around them (null when nothing else is left). */
export function parseToolCalls(
  text: string,
  tools: ToolDef[],
  idOf: (i: number) => string,
): { content: string | null; toolCalls: ToolCall[] } {
  const declared = new Set(tools.map((t) => t.function.name));
  const calls: ToolCall[] = [];
  const asCall = (json: string): ToolCall | null => {
    let v: unknown;
    try {
      v = JSON.parse(json);
    } catch {
      return null;
    }
    if (!isObject(v) || typeof v["name"] !== "string" || !declared.has(v["name"])) return null;
    const args = v["arguments"] ?? v["parameters"] ?? {};
    return {
      id: idOf(calls.length),
      type: "function",
      function: { name: v["name"], arguments: typeof args === "string" ? args : JSON.stringify(args) },
    };
  };
  if (declared.size === 0) return { content: text, toolCalls: [] };
  const rest = text.replace(/<tool_call>\s*([\s\S]*?)\s*<\/tool_call>/g, (whole, json: string) => {
    const c = asCall(json);
    if (!c) return whole;
    calls.push(c);
    return "";
  });
  if (calls.length === 0) {
    const bare = asCall(text.trim());
    if (bare) return { content: null, toolCalls: [bare] };
  }
  const content = rest.trim();
  return { content: calls.length && content === "" ? null : calls.length ? content : text, toolCalls: calls };
}

/**
 * The JSON Schema a forced call's JSON must match (`tool_choice` "required" or one named tool): an object
 * with the tool's name and its parameters (any object when a tool declares none).
 */
export function toolCallSchema(tools: ToolDef[], choice: ToolChoice): Record<string, unknown> {
  const chosen = typeof choice === "object" ? tools.filter((t) => t.function.name === choice.name) : tools;
  const one = (t: ToolDef) => ({
    type: "object",
    properties: { name: { const: t.function.name }, arguments: t.function.parameters ?? { type: "object" } },
    required: ["name", "arguments"],
    additionalProperties: false,
  });
  return chosen.length === 1 ? one(chosen[0]!) : { anyOf: chosen.map(one) };
}

/** Renders a conversation (with its tools) through a tokenizer's chat template. */
export function renderChat(
  tok: ChatTokenizer,
  messages: ConversationMessage[],
  tools: ToolDef[],
  addGenerationPrompt: boolean,
): string {
  const input = templateInput(messages, tools, templateReadsTools(tok.templateSource));
  return tok.applyChatTemplate(input.messages, addGenerationPrompt, input.tools);
}

/** Text of a message's content (string, or text parts joined; other parts contribute nothing). */
export function contentText(content: unknown): string {
  if (typeof content === "string") return content;
  if (Array.isArray(content))
    return content.map((p: { text?: unknown }) => (typeof p?.text === "string" ? p.text : "")).join("");
  return "";
}

/** A validated dataset row's messages (developer turns as system turns) for `renderChat`. */
export function rowConversation(
  messages: { role: string; content: unknown; tool_calls?: unknown[]; tool_call_id?: string; name?: string }[],
): ConversationMessage[] {
  return messages.map((m, i) => ({
    role: m.role === "developer" ? "system" : m.role,
    content: contentText(m.content),
    ...(m.tool_calls !== undefined ? { tool_calls: parseToolCallList(m.tool_calls, `messages[${i}].tool_calls`) } : {}),
    ...(m.tool_call_id !== undefined ? { tool_call_id: m.tool_call_id } : {}),
    ...(m.name !== undefined ? { name: m.name } : {}),
  }));
}
