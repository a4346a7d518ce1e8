/**
 * A job's `usage_metrics`: training seconds (OpenAI's "captured forward progress") and, summed over the steps'
 * metrics events, the model graders' tokens per judge model (the events' `model_graders_token_usage`). Pure.
 */

/** One judge model's tokens, as in a metrics event's `model_graders_token_usage`. */
export interface GraderTokens {
  train_prompt_tokens: number;
  train_completion_tokens: number;
  train_cached_tokens: number;
  eval_prompt_tokens: number;
  eval_completion_tokens: number;
  eval_cached_tokens: number;
}

export interface UsageMetrics {
  training_seconds: number;
  /** Present once a step graded with a model grader. */
  model_graders_token_usage?: Record<string, GraderTokens>;
}

const FIELDS = [
  "train_prompt_tokens",
  "train_completion_tokens",
  "train_cached_tokens",
  "eval_prompt_tokens",
  "eval_completion_tokens",
  "eval_cached_tokens",
] as const;

const count = (v: unknown) => (typeof v === "number" && Number.isFinite(v) && v > 0 ? Math.floor(v) : 0);

/**
 * The usage after one more metrics event (its `data`): each model's tokens added to the totals so far. Anything
 * that is not a well-formed count (a torn or foreign event) adds nothing; the totals never go down.
 */
export function addStepUsage(usage: UsageMetrics, data: unknown): UsageMetrics {
  const step = (data as { model_graders_token_usage?: unknown } | null)?.model_graders_token_usage;
  if (!step || typeof step !== "object") return usage;
  const models = Object.entries(step as Record<string, unknown>).filter(([, v]) => v && typeof v === "object");
  if (models.length === 0) return usage;
  const total: Record<string, GraderTokens> = { ...usage.model_graders_token_usage };
  for (const [model, v] of models) {
    const prev = total[model];
    const next = {} as GraderTokens;
    for (const f of FIELDS) next[f] = (prev?.[f] ?? 0) + count((v as Record<string, unknown>)[f]);
    total[model] = next;
  }
  return { ...usage, model_graders_token_usage: total };
}
