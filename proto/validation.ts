/**
 * The graded samples of one validation, as the trainer leaves them next to the step's metrics event
 * (`<out>/validation/step-N.jsonl`, N = 0 for the baseline): one `ValidationSample` per line, in row order
 * (eval_samples per row), written atomically once the validation is graded. Bounded: each sample's text is cut
 * at `VALIDATION_LIMITS.textChars`, and past `VALIDATION_LIMITS.fileBytes` the remaining samples are left out
 * and the last line is a `ValidationOmitted` saying how many. `rft api` turns each file into an eval run of
 * the job's eval (`api/job-evals.ts`); anyone else can read them with `jq`.
 */
import type { RunGraderResponse } from "./graders.js";

export const VALIDATION_LIMITS = {
  /** A step file's size; the samples past it are left out (counted in the last line). */
  fileBytes: 16 * 1024 * 1024,
  /** A sample's output text (and each tool call's arguments) in characters. */
  textChars: 32 * 1024,
} as const;

export interface ValidationSample {
  step: number;
  /** The row's 1-based line in the validation file, and the sample's index among the row's eval_samples. */
  line: number;
  sample_index: number;
  /** The prompt as sampled: the row's messages (and its tools, if any). */
  messages: unknown[];
  tools?: unknown[];
  /** The grading context (`item`): the row as graders see it. */
  item: Record<string, unknown>;
  /** What the graders saw (OpenAI's `sample`): text (cut at textChars), parsed tool calls, finish reason. */
  output_text: string;
  output_tools: unknown[];
  finish_reason: string;
  completion_tokens: number;
  seed: number;
  /** The sampling settings of the validation (the job's resolved hyperparameters). */
  sampling: { temperature: number; top_p: number; max_completion_tokens: number };
  /** The grader's answer: reward, sub_rewards (a multi grader's per-sub-grader scores), errors, judge usage. */
  grader: RunGraderResponse;
}

export interface ValidationOmitted {
  omitted: number;
  limit_bytes: number;
}

export const validationFileName = (step: number) => `step-${step}.jsonl`;
