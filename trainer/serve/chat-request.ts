/**
 * OpenAI chat-completions requests: validation into what the sampler needs, and OpenAI's error envelope.
 * Pure functions.
 */
import {
  checkJsonSchema,
  parseResponseFormat,
  ResponseFormatError,
  type StructuredFormat,
} from "../sampling/response-format.js";
import {
  type ConversationMessage,
  parseToolCallList,
  parseToolChoice,
  parseTools,
  type ToolChoice,
  type ToolDef,
  ToolsError,
} from "../sampling/tools.js";

export interface ApiErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly param: string | null = null,
    readonly code: string | null = null,
    readonly type = status === 404 ? "invalid_request_error" : status >= 500 ? "server_error" : "invalid_request_error",
  ) {
    super(message);
  }
  body(): ApiErrorBody {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

export interface ChatRequest {
  model: string;
  messages: ConversationMessage[];
  /** Structured outputs (`response_format` json_object / json_schema): decoding is constrained to it. */
  responseFormat: StructuredFormat | null;
  tools: ToolDef[];
  toolChoice: ToolChoice;
  n: number;
  temperature: number;
  topP: number;
  topK: number;
  maxTokens: number | null;
  stop: string[];
  seed: number | null;
  logprobs: boolean;
  topLogprobs: number;
  stream: boolean;
  includeUsage: boolean;
}

const KNOWN = new Set([
  "model",
  "messages",
  "n",
  "temperature",
  "top_p",
  "top_k",
  "max_tokens",
  "max_completion_tokens",
  "stop",
  "seed",
  "logprobs",
  "top_logprobs",
  "stream",
  "stream_options",
  "user",
  "metadata",
  "store",
  "presence_penalty",
  "frequency_penalty",
  "response_format",
  "parallel_tool_calls",
  "tools",
  "tool_choice",
  "service_tier",
]);

const bad = (message: string, param: string | null, code: string | null = "invalid_value") =>
  new ApiError(400, message, param, code);

function numberIn(v: unknown, param: string, lo: number, hi: number, fallback: number): number {
  if (v === undefined || v === null) return fallback;
  if (typeof v !== "number" || !Number.isFinite(v) || v < lo || v > hi)
    throw bad(`Invalid '${param}': expected a number between ${lo} and ${hi}, got ${JSON.stringify(v)}.`, param);
  return v;
}

function intIn(v: unknown, param: string, lo: number, hi: number): number | null {
  if (v === undefined || v === null) return null;
  if (typeof v !== "number" || !Number.isInteger(v) || v < lo || v > hi)
    throw bad(`Invalid '${param}': expected an integer between ${lo} and ${hi}, got ${JSON.stringify(v)}.`, param);
  return v;
}

function messageContent(v: unknown, param: string): string {
  if (typeof v === "string") return v;
  if (Array.isArray(v)) {
    return v
      .map((part, i) => {
        const p = part as { type?: unknown; text?: unknown };
        if (p && p.type === "text" && typeof p.text === "string") return p.text;
        throw bad(`Invalid '${param}[${i}]': only text content parts are supported by this model.`, `${param}[${i}]`);
      })
      .join("");
  }
  throw bad(`Invalid '${param}': expected a string or an array of text parts.`, param);
}

/** Tools, tool-choice and response-format errors as the API's invalid-parameter errors. */
function fromTools<T>(f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (e instanceof ToolsError || e instanceof ResponseFormatError)
      throw bad(`Invalid '${e.path}': ${e.message.slice(e.path.length + 2)}`, e.path);
    throw e;
  }
}

/** The body is an object of known arguments naming the served model. */
function requestObject(body: unknown, servedModel: string): Record<string, unknown> & { model: string } {
  if (body === null || typeof body !== "object" || Array.isArray(body))
    throw bad("The request body must be a JSON object.", null, null);
  const b = body as Record<string, unknown>;
  for (const k of Object.keys(b)) {
    if (!KNOWN.has(k)) throw bad(`Unrecognized request argument supplied: ${k}`, k, "unsupported_parameter");
  }
  if (typeof b["model"] !== "string" || !b["model"])
    throw bad("Missing required parameter: 'model'.", "model", "missing_required_parameter");
  if (b["model"] !== servedModel) {
    throw new ApiError(
      404,
      `The model '${b["model"]}' does not exist; this server serves '${servedModel}'.`,
      "model",
      "model_not_found",
    );
  }
  return b as Record<string, unknown> & { model: string };
}

function parseMessage(m: unknown, i: number): ConversationMessage {
  const r = m as Record<string, unknown>;
  const param = `messages[${i}]`;
  if (!r || typeof r !== "object") throw bad(`Invalid '${param}': expected an object.`, param);
  const role = r["role"];
  if (!["system", "developer", "user", "assistant", "tool"].includes(role as string)) {
    throw bad(
      `Invalid value for '${param}.role': expected one of system, developer, user, assistant, tool.`,
      `${param}.role`,
    );
  }
  const hasCalls = r["tool_calls"] !== undefined && r["tool_calls"] !== null;
  if (hasCalls && role !== "assistant")
    throw bad(`'${param}.tool_calls' is allowed on assistant messages only.`, `${param}.tool_calls`);
  const calls = hasCalls ? fromTools(() => parseToolCallList(r["tool_calls"], `${param}.tool_calls`)) : [];
  if (role === "tool" && typeof r["tool_call_id"] !== "string")
    throw bad(
      `Missing required parameter: '${param}.tool_call_id'.`,
      `${param}.tool_call_id`,
      "missing_required_parameter",
    );
  return {
    role: role === "developer" ? "system" : (role as string),
    content: messageContent(r["content"] ?? "", `${param}.content`),
    ...(calls.length ? { tool_calls: calls } : {}),
    ...(role === "tool" ? { tool_call_id: r["tool_call_id"] as string } : {}),
    ...(typeof r["name"] === "string" ? { name: r["name"] } : {}),
  };
}

function parseMessages(msgs: unknown): ConversationMessage[] {
  if (!Array.isArray(msgs))
    throw bad("Missing required parameter: 'messages'.", "messages", "missing_required_parameter");
  if (msgs.length === 0)
    throw bad("Invalid 'messages': empty array. Expected an array with minimum length 1.", "messages", "empty_array");
  return msgs.map(parseMessage);
}

/** tools, tool_choice and response_format; a forced call must be one the decoder can enforce. */
function parseToolUse(b: Record<string, unknown>) {
  const tools = fromTools(() => parseTools(b["tools"]));
  const toolChoice = fromTools(() => parseToolChoice(b["tool_choice"], tools));
  const responseFormat = fromTools(() => parseResponseFormat(b["response_format"]));
  if (responseFormat && (toolChoice === "required" || typeof toolChoice === "object"))
    throw bad("'response_format' cannot be combined with a forced tool call ('tool_choice').", "tool_choice");
  if (toolChoice === "required" || typeof toolChoice === "object") {
    // A forced call is decoded under its parameters' schema: it must be one the decoder enforces.
    tools.forEach((t, i) => {
      if (t.function.parameters && (toolChoice === "required" || toolChoice.name === t.function.name))
        fromTools(() =>
          checkJsonSchema(t.function.parameters, `tools[${i}].function.parameters`, t.function.strict ?? false),
        );
    });
  }
  return { tools, toolChoice, responseFormat };
}

function parseStop(s: unknown): string[] {
  if (typeof s === "string") return [s];
  if (Array.isArray(s)) {
    if (s.length > 4 || !s.every((x) => typeof x === "string"))
      throw bad("Invalid 'stop': expected a string or an array of up to 4 strings.", "stop");
    return s as string[];
  }
  if (s !== undefined && s !== null)
    throw bad("Invalid 'stop': expected a string or an array of up to 4 strings.", "stop");
  return [];
}

/** Penalties (0 only), stop, token limit, log-probs, seed and stream, checked in that order. */
function parseGeneration(b: Record<string, unknown>) {
  for (const p of ["presence_penalty", "frequency_penalty"]) {
    if (b[p] !== undefined && b[p] !== null && b[p] !== 0)
      throw bad(`'${p}' is not supported by this model (only 0).`, p, "unsupported_parameter");
  }
  const stop = parseStop(b["stop"]);
  const maxTokens =
    intIn(b["max_completion_tokens"], "max_completion_tokens", 1, 1 << 20) ??
    intIn(b["max_tokens"], "max_tokens", 1, 1 << 20);
  const logprobs = b["logprobs"] === true;
  if (b["logprobs"] !== undefined && b["logprobs"] !== null && typeof b["logprobs"] !== "boolean")
    throw bad("Invalid 'logprobs': expected a boolean.", "logprobs");
  const topLogprobs = intIn(b["top_logprobs"], "top_logprobs", 0, 20) ?? 0;
  if (topLogprobs > 0 && !logprobs)
    throw bad("Invalid 'top_logprobs': 'logprobs' must be true to use it.", "top_logprobs");
  const seed =
    b["seed"] === undefined || b["seed"] === null
      ? null
      : intIn(b["seed"], "seed", Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER);
  if (b["stream"] !== undefined && b["stream"] !== null && typeof b["stream"] !== "boolean")
    throw bad("Invalid 'stream': expected a boolean.", "stream");
  return { stop, maxTokens, logprobs, topLogprobs, seed };
}

/** Validates a parsed JSON body; `servedModel` is the one model id this server answers to. */
export function parseChatRequest(body: unknown, servedModel: string): ChatRequest {
  const b = requestObject(body, servedModel);
  const messages = parseMessages(b["messages"]);
  const { tools, toolChoice, responseFormat } = parseToolUse(b);
  const { stop, maxTokens, logprobs, topLogprobs, seed } = parseGeneration(b);
  const so = b["stream_options"] as { include_usage?: unknown } | undefined | null;
  return {
    model: b.model,
    messages,
    responseFormat,
    tools,
    toolChoice,
    n: intIn(b["n"], "n", 1, 128) ?? 1,
    temperature: numberIn(b["temperature"], "temperature", 0, 2, 1),
    topP: numberIn(b["top_p"], "top_p", 0, 1, 1),
    topK: intIn(b["top_k"], "top_k", 0, 1 << 30) ?? 0,
    maxTokens,
    stop,
    seed,
    logprobs,
    topLogprobs,
    stream: b["stream"] === true,
    includeUsage: so?.include_usage === true,
  };
}
