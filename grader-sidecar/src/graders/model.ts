/**
 * score_model and label_model: render the grader's messages, ask the judge for OpenAI's structured output
 * `{ result, steps: [{ description, conclusion }] }`, and turn it into a reward (score clamped to `range`;
 * label → 1 when it is a passing label). Failures are reported in-band with OpenAI's flags.
 */
import type { LabelModelGrader, ScoreModelGrader, TokenUsage } from "../../../proto/graders.js";
import { type ModelEndpoint, pickEndpoint, postJson, usageOf } from "../model-client.js";
import { render, type Template } from "../template.js";
import type { CompiledMessage } from "../validate.js";
import { fail, type GradeScope, type Outcome } from "./outcome.js";

const STEPS = {
  type: "array",
  items: {
    type: "object",
    properties: { description: { type: "string" }, conclusion: { type: "string" } },
    required: ["description", "conclusion"],
    additionalProperties: false,
  },
};

function responseFormat(result: object) {
  return {
    type: "json_schema",
    json_schema: {
      name: "grader_output",
      strict: true,
      schema: {
        type: "object",
        properties: { steps: STEPS, result },
        required: ["steps", "result"],
        additionalProperties: false,
      },
    },
  };
}

/** Renders messages to Chat Completions shape; returns the template references that resolved to nothing. */
export function renderMessages(msgs: CompiledMessage[], scope: GradeScope) {
  const missing: string[] = [];
  const out = msgs.map((m) => {
    if (!Array.isArray(m.content)) {
      const r = render(m.content, scope);
      missing.push(...r.missing);
      return { role: m.role, content: r.text };
    }
    const parts = m.content.map((c) => {
      const raw = c.raw as Record<string, any>;
      const text = (t: Template) => {
        const r = render(t, scope);
        missing.push(...r.missing);
        return r.text;
      };
      if (c.text) return { type: "text", text: text(c.text) };
      if (c.imageUrl) return { type: "image_url", image_url: { url: text(c.imageUrl), detail: raw.detail ?? "auto" } };
      return {
        type: "input_audio",
        input_audio: { data: c.audioData ? text(c.audioData) : raw.input_audio.data, format: raw.input_audio.format },
      };
    });
    return { role: m.role, content: parts };
  });
  return { messages: out, missing };
}

function samplingParams(p: ScoreModelGrader["sampling_params"]) {
  if (!p) return {};
  const out: Record<string, unknown> = {};
  if (p.seed != null) out.seed = p.seed;
  if (p.top_p != null) out.top_p = p.top_p;
  if (p.temperature != null) out.temperature = p.temperature;
  if (p.max_completions_tokens != null) out.max_completion_tokens = p.max_completions_tokens;
  if (p.reasoning_effort != null) out.reasoning_effort = p.reasoning_effort;
  return out;
}

type Judged = { ok: true; result: unknown; usage: TokenUsage; model: string } | { ok: false; outcome: Outcome };

/** The judge's JSON: the whole content, or (servers without structured outputs) the object inside a code fence. */
function parseJudged(content: string, lenient: boolean): unknown {
  try {
    return JSON.parse(content);
  } catch (err) {
    if (!lenient) throw err;
    const start = content.indexOf("{");
    const end = content.lastIndexOf("}");
    if (start < 0 || end < start) throw err;
    return JSON.parse(content.slice(start, end + 1));
  }
}

async function judge(
  endpoints: readonly ModelEndpoint[],
  model: string,
  msgs: CompiledMessage[],
  scope: GradeScope,
  result: object,
  extra: Record<string, unknown>,
): Promise<Judged> {
  const { messages, missing } = renderMessages(msgs, scope);
  if (missing.length) return { ok: false, outcome: fail({ invalid_variable_error: true }) };
  const endpoint = pickEndpoint(endpoints, model);
  if (!endpoint) {
    const details = `no judge endpoint serves model "${model}": set spec.graderEndpoints, or --model-base-url / RFT_GRADER_BASE_URL`;
    return {
      ok: false,
      outcome: fail({ model_grader_server_error: true, model_grader_server_error_details: details }),
    };
  }
  const structured = endpoint.structuredOutputs ?? true;
  const res = await postJson(endpoint, "/chat/completions", {
    model: endpoint.servedModel ?? model,
    messages,
    ...(structured ? { response_format: responseFormat(result) } : {}),
    ...extra,
  });
  if (!res.ok) {
    return {
      ok: false,
      outcome: fail({ model_grader_server_error: true, model_grader_server_error_details: res.details }),
    };
  }
  const usage = usageOf(res.body?.usage);
  const sampled = String(res.body?.model ?? model);
  const partial = { usage: { [sampled]: usage }, sampledModel: sampled };
  const msg = res.body?.choices?.[0]?.message;
  if (msg?.refusal) return { ok: false, outcome: fail({ model_grader_refusal_error: true }, partial) };
  let parsed: any;
  try {
    parsed = parseJudged(String(msg?.content ?? ""), !structured);
  } catch {
    return { ok: false, outcome: fail({ model_grader_parse_error: true }, partial) };
  }
  if (parsed === null || typeof parsed !== "object" || !("result" in parsed)) {
    return { ok: false, outcome: fail({ model_grader_parse_error: true }, partial) };
  }
  return { ok: true, result: parsed.result, usage, model: sampled };
}

export async function gradeScoreModel(
  g: { config: ScoreModelGrader; messages: CompiledMessage[]; range: [number, number] },
  scope: GradeScope,
  endpoints: readonly ModelEndpoint[],
): Promise<Outcome> {
  const j = await judge(
    endpoints,
    g.config.model,
    g.messages,
    scope,
    { type: "number" },
    samplingParams(g.config.sampling_params),
  );
  if (!j.ok) return j.outcome;
  const extra = { usage: { [j.model]: j.usage }, sampledModel: j.model };
  const value = typeof j.result === "number" ? j.result : Number.NaN;
  if (!Number.isFinite(value)) return fail({ model_grader_parse_error: true }, extra);
  const [lo, hi] = g.range;
  return { reward: Math.min(hi, Math.max(lo, value)), errors: {}, ...extra };
}

export async function gradeLabelModel(
  g: { config: LabelModelGrader; messages: CompiledMessage[] },
  scope: GradeScope,
  endpoints: readonly ModelEndpoint[],
): Promise<Outcome> {
  const j = await judge(endpoints, g.config.model, g.messages, scope, { type: "string", enum: g.config.labels }, {});
  if (!j.ok) return j.outcome;
  const extra = { usage: { [j.model]: j.usage }, sampledModel: j.model };
  if (typeof j.result !== "string" || !g.config.labels.includes(j.result)) {
    return fail({ model_grader_parse_error: true }, extra);
  }
  return { reward: g.config.passing_labels.includes(j.result) ? 1 : 0, errors: {}, ...extra };
}
