/**
 * The data sources of OpenAI's Evals API (openai-python's `eval_create_params.py`, `evals/run_create_params.py`,
 * `create_eval_completions_run_data_source_param.py`, `create_eval_jsonl_run_data_source_param.py`), checked
 * and turned into what a run does. Pure: every problem is an ApiError 400 naming OpenAI's `param`.
 *
 *  - `data_source_config`: `custom` (item_schema, include_sample_schema). `stored_completions` and `logs` are
 *    refused: they query completions stored on OpenAI's platform, and `rft api` stores none.
 *  - run `data_source`: `jsonl` (given samples), `completions` and `responses` (a local model samples each
 *    datapoint through this server's chat completions; `responses` is mapped onto them: `text.format` →
 *    `response_format`, function tools → chat tools). Sources `file_content` and `file_id`; the
 *    `stored_completions` / `responses` sources are refused like the configs above.
 */
import { parseTemplate, render, type Template, TemplateSyntaxError } from "../grader-sidecar/src/template.js";
import type { SampleInput } from "../grader-sidecar/src/engine.js";
import { ApiError } from "./errors.js";

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => v !== null && typeof v === "object" && !Array.isArray(v);
const bad = (message: string, param: string, code = "invalid_value") => new ApiError(400, message, param, code);
const missing = (param: string) =>
  new ApiError(400, `Missing required parameter: '${param}'.`, param, "missing_required_parameter");

export type RunKind = "jsonl" | "completions" | "responses";
export interface ChatMessage {
  role: string;
  content: string;
}

const NOT_STORED =
  "rft api stores no completions or responses (OpenAI's logs stayed on OpenAI's platform): export them as JSONL rows " +
  "{item, sample} and use data_source_config 'custom' with a 'jsonl' run (given samples), or a 'completions' run " +
  "to sample them again with a local model.";

/** The eval's `data_source_config` as answered (custom: the JSON schema of `item` and, if asked, `sample`). */
export function evalDataSourceConfig(dsc: unknown): Obj {
  if (!isObj(dsc)) throw missing("data_source_config");
  if (dsc.type === "stored_completions" || dsc.type === "logs")
    throw bad(`data_source_config.type '${dsc.type}' is not available: ${NOT_STORED}`, "data_source_config.type");
  if (dsc.type !== "custom") throw bad("data_source_config.type must be 'custom'", "data_source_config.type");
  if (!isObj(dsc.item_schema))
    throw bad("data_source_config.item_schema must be a JSON schema object", "data_source_config.item_schema");
  const withSample = Boolean(dsc.include_sample_schema);
  const sampleSchema = {
    type: "object",
    properties: {
      model: { type: "string" },
      choices: { type: "array" },
      output_text: { type: "string" },
      output_json: { type: "object" },
    },
  };
  return {
    type: "custom",
    schema: {
      type: "object",
      properties: { item: dsc.item_schema, ...(withSample ? { sample: sampleSchema } : {}) },
      required: ["item", ...(withSample ? ["sample"] : [])],
    },
  };
}

/** A run's `data_source` checked; what it samples with (null: given samples). */
export function checkRunDataSource(ds: unknown): { type: RunKind; model: string | null } {
  if (!isObj(ds)) throw missing("data_source");
  const type = ds.type;
  if (type !== "jsonl" && type !== "completions" && type !== "responses")
    throw bad("data_source.type must be 'jsonl', 'completions' or 'responses'", "data_source.type");
  checkSource(ds.source, type);
  if (type === "jsonl") return { type, model: null };
  if (typeof ds.model !== "string" || !ds.model)
    throw bad(`data_source.model is required to sample ${type}`, "data_source.model", "missing_required_parameter");
  if (ds.input_messages === undefined) throw missing("data_source.input_messages");
  checkInputMessages(ds.input_messages);
  if (ds.sampling_params !== undefined) checkSamplingParams(ds.sampling_params, type);
  return { type, model: ds.model };
}

function checkSource(source: unknown, type: RunKind) {
  if (!isObj(source)) throw missing("data_source.source");
  const p = "data_source.source";
  if (source.type === "file_content") {
    if (!Array.isArray(source.content)) throw bad("'content' must be an array of {item, sample}", `${p}.content`);
  } else if (source.type === "file_id") {
    if (typeof source.id !== "string" || !source.id) throw missing(`${p}.id`);
  } else if (source.type === "stored_completions" || source.type === "responses") {
    throw bad(`${p}.type '${source.type}' is not available: ${NOT_STORED}`, `${p}.type`);
  } else {
    const also =
      type === "completions" ? " (or 'stored_completions')" : type === "responses" ? " (or 'responses')" : "";
    throw bad(`${p}.type must be 'file_content' or 'file_id'${also}`, `${p}.type`);
  }
}

const ROLES = ["user", "assistant", "system", "developer"];

/** Text content parts: the Responses API's and chat completions' ("text", in an item's own messages). */
const TEXT_PARTS = ["input_text", "output_text", "text"];

/** A template message's text: a string, a text part, or a list of them. */
function contentText(c: unknown, param: string): string {
  if (typeof c === "string") return c;
  const parts = Array.isArray(c) ? c : [c];
  return parts
    .map((x, i) => {
      const at = Array.isArray(c) ? `${param}[${i}]` : param;
      if (typeof x === "string") return x;
      if (isObj(x) && TEXT_PARTS.includes(String(x.type)) && typeof x.text === "string") return x.text;
      const t = isObj(x) ? String(x.type) : typeof x;
      throw bad(`${at}: content of type '${t}' is not supported here (text only: the local models read text)`, at);
    })
    .join("");
}

function checkInputMessages(im: unknown) {
  const p = "data_source.input_messages";
  if (!isObj(im) || (im.type !== "template" && im.type !== "item_reference"))
    throw bad(`${p} must be a template or an item_reference`, `${p}.type`);
  if (im.type === "item_reference") {
    if (typeof im.item_reference !== "string" || !/^item\.[\w.]+$/.test(im.item_reference))
      throw bad(
        `${p}.item_reference must name a list of messages in the item, e.g. 'item.input_trajectory'`,
        `${p}.item_reference`,
      );
    return;
  }
  if (!Array.isArray(im.template) || im.template.length === 0)
    throw bad(`${p}.template must be a non-empty list of messages`, `${p}.template`);
  im.template.forEach((m, i) => templateMessage(m, `${p}.template[${i}]`));
}

/** One template message checked: its role and its content parsed as a template of the `item` namespace. */
function templateMessage(m: unknown, at: string): { role: string; content: Template } {
  if (!isObj(m)) throw bad(`${at} must be a message {role, content}`, at);
  if (m.type !== undefined && m.type !== "message") throw bad(`${at}.type must be 'message'`, `${at}.type`);
  if (typeof m.role !== "string" || !ROLES.includes(m.role))
    throw bad(`${at}.role must be one of ${ROLES.join(", ")}`, `${at}.role`);
  if (m.content === undefined) throw missing(`${at}.content`);
  let t: Template;
  try {
    t = parseTemplate(contentText(m.content, `${at}.content`));
  } catch (e) {
    if (!(e instanceof TemplateSyntaxError)) throw e;
    throw bad(`${at}.content: ${e.message}`, `${at}.content`);
  }
  const ref = t.parts.find((x) => typeof x !== "string" && x.namespace !== "item");
  if (ref && typeof ref !== "string")
    throw bad(
      `${at}.content: {{ ${ref.source} }}: input messages may only reference the item namespace`,
      `${at}.content`,
    );
  return { role: m.role, content: t };
}

const COMMON_PARAMS = ["temperature", "top_p", "seed", "max_completion_tokens", "reasoning_effort", "tools"];

function checkSamplingParams(sp: unknown, type: "completions" | "responses") {
  const p = "data_source.sampling_params";
  if (!isObj(sp)) throw bad(`${p} must be an object`, p);
  const known = [...COMMON_PARAMS, type === "completions" ? "response_format" : "text"];
  for (const k of Object.keys(sp))
    if (!known.includes(k)) throw bad(`${p}.${k} is not a ${type} sampling param`, `${p}.${k}`);
  const num = (k: string, lo: number, hi: number, int = false) => {
    const v = sp[k];
    if (v === undefined || v === null) return;
    if (typeof v !== "number" || v < lo || v > hi || (int && !Number.isInteger(v)))
      throw bad(`${p}.${k} must be ${int ? "an integer" : "a number"} in [${lo}, ${hi}]`, `${p}.${k}`);
  };
  num("temperature", 0, 2);
  num("top_p", 0, 1);
  num("seed", -(2 ** 53), 2 ** 53, true);
  num("max_completion_tokens", 1, 1 << 20, true);
  const format = type === "completions" ? sp.response_format : isObj(sp.text) ? sp.text.format : sp.text;
  const fp = type === "completions" ? `${p}.response_format` : `${p}.text.format`;
  if (format !== undefined && (!isObj(format) || !["text", "json_object", "json_schema"].includes(String(format.type))))
    throw bad(`${fp}.type must be 'text', 'json_object' or 'json_schema'`, `${fp}.type`);
  if (sp.tools !== undefined) chatTools(sp.tools, type);
}

/** The sampling params' tools as chat tools (responses' flat function tools get the chat nesting). */
function chatTools(tools: unknown, type: "completions" | "responses"): Obj[] {
  const p = "data_source.sampling_params.tools";
  if (!Array.isArray(tools)) throw bad(`${p} must be a list of function tools`, p);
  return tools.map((t, i) => {
    if (!isObj(t) || t.type !== "function")
      throw bad(`${p}[${i}].type must be 'function' (only function tools run here)`, `${p}[${i}].type`);
    const fn = type === "completions" ? t.function : t;
    if (!isObj(fn) || typeof fn.name !== "string")
      throw bad(
        `${p}[${i}] needs a function name`,
        type === "completions" ? `${p}[${i}].function.name` : `${p}[${i}].name`,
      );
    const { type: _t, ...rest } = fn as Obj;
    return { type: "function", function: type === "completions" ? fn : rest };
  });
}

/** The response_format of the chat request for the run's format (responses: `text.format`, flat → nested). */
function responseFormat(ds: Obj, sp: Obj): Obj | undefined {
  if (ds.type === "completions") return isObj(sp.response_format) ? sp.response_format : undefined;
  const f = isObj(sp.text) ? sp.text.format : undefined;
  if (!isObj(f)) return undefined;
  if (f.type !== "json_schema") return { type: f.type };
  const { type: _t, ...schema } = f;
  return { type: "json_schema", json_schema: schema };
}

/**
 * A datapoint's chat messages: the template rendered with its `item`, or the item's own list of messages.
 * Throws an Error (the datapoint's error, not the run's) when the item lacks what they reference.
 */
export function inputMessages(im: Obj, item: Obj): ChatMessage[] {
  if (im.type === "item_reference") {
    const path = String(im.item_reference)
      .replace(/^item\./, "")
      .split(".");
    const v = path.reduce<unknown>((o, k) => (isObj(o) ? o[k] : undefined), item);
    if (!Array.isArray(v) || !v.every((m) => isObj(m) && typeof m.role === "string"))
      throw new Error(`${String(im.item_reference)} is not a list of messages in this item`);
    return v.map((m: Obj) => ({ role: String(m.role), content: contentText(m.content ?? "", "content") }));
  }
  return (im.template as unknown[]).map((m, i) => {
    const t = templateMessage(m, `data_source.input_messages.template[${i}]`);
    const r = render(t.content, { item, sample: {} });
    if (r.missing.length) throw new Error(`the item has no ${r.missing.map((x) => `{{ ${x} }}`).join(", ")}`);
    return { role: t.role, content: r.text };
  });
}

/** The chat completions request that samples one datapoint of a completions / responses run. */
export function chatRequest(ds: Obj, messages: ChatMessage[]): Obj {
  const sp = isObj(ds.sampling_params) ? ds.sampling_params : {};
  const rf = responseFormat(ds, sp);
  const body: Obj = { model: ds.model, messages };
  for (const k of ["temperature", "top_p", "seed", "max_completion_tokens"]) if (sp[k] != null) body[k] = sp[k];
  if (rf) body.response_format = rf;
  if (sp.tools !== undefined) body.tools = chatTools(sp.tools, ds.type as "completions" | "responses");
  return body;
}

/** What a chat answer is to the criteria (OpenAI's `sample` namespace) and to the output item. */
export function sampledOutput(ds: Obj, request: Obj, answer: Obj): { graded: SampleInput; sample: Obj } {
  const choice = ((answer.choices as Obj[] | undefined) ?? [])[0] ?? {};
  const msg = isObj(choice.message) ? choice.message : {};
  const text = typeof msg.content === "string" ? msg.content : "";
  const tools = Array.isArray(msg.tool_calls) ? msg.tool_calls : [];
  const rf = request.response_format as Obj | undefined;
  const u = (answer.usage ?? {}) as Obj;
  const sp = isObj(ds.sampling_params) ? ds.sampling_params : {};
  return {
    graded: {
      output_text: text,
      output_tools: tools,
      choices: answer.choices as unknown[],
      json_required: rf !== undefined && rf.type !== "text",
    },
    sample: {
      model: ds.model,
      input: request.messages,
      output: [{ role: "assistant", content: text, ...(tools.length ? { tool_calls: tools } : {}) }],
      finish_reason: choice.finish_reason,
      usage: { ...u, cached_tokens: 0 },
      error: null,
      temperature: sp.temperature ?? 1,
      top_p: sp.top_p ?? 1,
      seed: sp.seed ?? 0,
      max_completion_tokens: sp.max_completion_tokens ?? 512,
    },
  };
}
