/**
 * Phases "sample" and "grade": a step's (or a validation's) prompts rendered with the chat template, K
 * completions sampled per prompt with the seeds the caller derives, and each completion graded as OpenAI's
 * `sample`. The trainer times the two phases separately.
 */
import type { RunGraderResponse } from "../../proto/graders.js";
import type { SampleInput } from "../../grader-sidecar/src/client.js";
import type { RftRow } from "../data/dataset.js";
import { noteWork } from "../model/backend-failure.js";
import type { Model } from "../model/model.js";
import { type Completion, generate, type SampleRequest } from "../sampling/generate.js";
import { parseToolCalls, parseTools, renderChat, rowConversation } from "../sampling/tools.js";
import type { StepGrader } from "./grading.js";

/** One sampled and graded completion of a row. */
export interface Rollout {
  row: RftRow;
  prompt: number[];
  completion: Completion;
  response: RunGraderResponse;
}

/** Renders a row's messages and tools with the model's chat template (developer turns as system turns). */
export function promptIds(model: Model, row: Pick<RftRow, "messages" | "tools">): number[] {
  const tok = model.tokenizer;
  if (!tok) throw new Error("the model has no tokenizer (tokenizer.json) to render prompts with");
  return tok.encode(renderChat(tok, rowConversation(row.messages), parseTools(row.tools), true));
}

/**
 * What graders see of a completion (OpenAI's `sample`): with the row's `tools`, the tool calls parsed from it
 * (`output_tools`, ids `call_0`, `call_1`, … so a resumed run grades alike) and the text around them as
 * `output_text`; `choices[0]` carries the finish reason ("length" when the token limit cut it).
 */
export function gradedSample(c: Completion, row: Pick<RftRow, "tools">, jsonRequired: boolean): SampleInput {
  const tools = parseTools(row.tools);
  const { content, toolCalls } = parseToolCalls(c.text, tools, (k) => `call_${k}`);
  const finish = c.finishReason === "stop" && toolCalls.length ? "tool_calls" : c.finishReason;
  return {
    output_text: toolCalls.length ? (content ?? "") : c.text,
    output_tools: toolCalls,
    choices: [
      {
        index: 0,
        finish_reason: finish,
        message: { role: "assistant", content, ...(toolCalls.length ? { tool_calls: toolCalls } : {}) },
      },
    ],
    json_required: jsonRequired,
  };
}

/** The sampling requests of `rows`, k per row, with the row each belongs to. */
export function sampleRequests(
  rows: readonly RftRow[],
  k: number,
  o: {
    prompt: (row: RftRow) => number[];
    seedOf: (i: number, j: number) => number;
    base: Omit<SampleRequest, "promptIds" | "seed">;
  },
): { reqs: SampleRequest[]; owners: RftRow[] } {
  const reqs: SampleRequest[] = [];
  const owners: RftRow[] = [];
  rows.forEach((row, i) => {
    for (let j = 0; j < k; j++) {
      reqs.push({ promptIds: o.prompt(row), ...o.base, seed: o.seedOf(i, j) });
      owners.push(row);
    }
  });
  return { reqs, owners };
}

/** Phase "sample": generates the requests' completions, 64 sequences per batch. */
export async function sample(model: Model, reqs: SampleRequest[], nPrompts: number): Promise<Completion[]> {
  noteWork(`sampling (${reqs.length} samples of ${nPrompts} prompts, up to ${reqs[0]?.maxTokens ?? 0} tokens)`);
  const completions: Completion[] = [];
  const chunk = 64;
  for (let i = 0; i < reqs.length; i += chunk) completions.push(...(await generate(model, reqs.slice(i, i + chunk))));
  return completions;
}

/** Phase "grade": every completion graded against its row's item. */
export async function grade(
  grader: StepGrader,
  completions: Completion[],
  owners: RftRow[],
  jsonRequired: boolean,
): Promise<RunGraderResponse[]> {
  return grader.grade(
    completions.map((c, i) => ({ item: owners[i]!.item, sample: gradedSample(c, owners[i]!, jsonRequired) })),
  );
}
