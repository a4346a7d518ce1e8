/**
 * OpenAI-shaped per-step metrics events (`fine_tuning.job.event`, type "metrics"), built from the grader
 * responses of a step. Pure. Field names follow shared/reference/openai-rft-api.md §8.2 so dashboards and
 * scripts written against OpenAI's events read ours unchanged.
 */
import { ERROR_FLAGS, type RunGraderResponse } from "../../proto/graders.js";
import { mean } from "./advantages.js";

export interface GradedSample {
  response: RunGraderResponse;
  completionTokens: number;
  truncated: boolean;
}

export interface StepTiming {
  sampling: number;
  grading: number;
  training: number;
  eval: number;
  full_iteration: number;
}

export interface MetricsEventInput {
  step: number;
  totalSteps: number;
  train: GradedSample[];
  valid?: GradedSample[];
  timing: StepTiming;
  createdAt: number;
}

interface GraderRef {
  name: string;
  type: string;
  reward: (r: RunGraderResponse) => number;
}

/** The top-level grader plus, for multi, each sub-grader (by its key in `graders`). */
function graderRefs(sample: RunGraderResponse | undefined): GraderRef[] {
  if (!sample) return [];
  const top: GraderRef = { name: sample.metadata.name, type: sample.metadata.type, reward: (r) => r.reward };
  const subs = Object.keys(sample.sub_rewards).map((k) => ({
    name: k,
    type: "sub_grader",
    reward: (r: RunGraderResponse) => r.sub_rewards[k] ?? 0,
  }));
  return [top, ...subs];
}

const round = (x: number) => Math.round(x * 1e6) / 1e6;

function errorStats(prefix: "train" | "valid", samples: GradedSample[]) {
  const out: Record<string, number> = {};
  for (const flag of ERROR_FLAGS) {
    const count = samples.filter((s) => s.response.metadata.errors[flag]).length;
    out[`${prefix}_${flag}_count`] = count;
    out[`${prefix}_${flag}_mean`] = samples.length ? round(count / samples.length) : 0;
  }
  return out;
}

function usageByModel(samples: GradedSample[]) {
  const by = new Map<string, { prompt: number[]; completion: number[]; cached: number }>();
  for (const s of samples) {
    for (const [model, u] of Object.entries(s.response.model_grader_token_usage_per_model)) {
      const e = by.get(model) ?? { prompt: [], completion: [], cached: 0 };
      e.prompt.push(u.prompt_tokens);
      e.completion.push(u.completion_tokens);
      e.cached += u.cached_tokens;
      by.set(model, e);
    }
  }
  return by;
}

export function metricsEvent(x: MetricsEventInput) {
  const refs = graderRefs(x.train[0]?.response ?? x.valid?.[0]?.response);
  const trainMean = x.train.length ? round(mean(x.train.map((s) => s.response.reward))) : null;
  const validMean = x.valid?.length ? round(mean(x.valid.map((s) => s.response.reward))) : null;
  const tokensMean = (ss: GradedSample[]) => (ss.length ? round(mean(ss.map((s) => s.completionTokens))) : 0);
  const trainUsage = usageByModel(x.train);
  const validUsage = usageByModel(x.valid ?? []);
  const models = new Set([...trainUsage.keys(), ...validUsage.keys()]);
  const top = refs[0];
  const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);

  const data = {
    step: x.step,
    total_steps: x.totalSteps,
    scores: {
      train_reward_mean: trainMean,
      ...(validMean !== null ? { valid_reward_mean: validMean } : {}),
      graders: refs.map((g) => ({
        name: g.name,
        type: g.type,
        train_reward_mean: x.train.length ? round(mean(x.train.map((s) => g.reward(s.response)))) : null,
        ...(x.valid?.length ? { valid_reward_mean: round(mean(x.valid.map((s) => g.reward(s.response)))) } : {}),
      })),
    },
    usage: {
      samples: {
        train_samples_count: x.train.length,
        valid_samples_count: x.valid?.length ?? 0,
        train_completion_tokens_mean: tokensMean(x.train),
        train_completion_tokens_count: sum(x.train.map((s) => s.completionTokens)),
        valid_completion_tokens_mean: tokensMean(x.valid ?? []),
        valid_completion_tokens_count: sum((x.valid ?? []).map((s) => s.completionTokens)),
        train_truncated_mean: x.train.length ? round(x.train.filter((s) => s.truncated).length / x.train.length) : 0,
      },
      graders: [...models].map((model) => {
        const t = trainUsage.get(model);
        const v = validUsage.get(model);
        return {
          name: top?.name,
          type: top?.type,
          model,
          train_prompt_tokens_mean: t ? round(mean(t.prompt)) : 0,
          train_prompt_tokens_count: t ? sum(t.prompt) : 0,
          train_completion_tokens_mean: t ? round(mean(t.completion)) : 0,
          train_completion_tokens_count: t ? sum(t.completion) : 0,
          valid_prompt_tokens_mean: v ? round(mean(v.prompt)) : 0,
          valid_prompt_tokens_count: v ? sum(v.prompt) : 0,
          valid_completion_tokens_mean: v ? round(mean(v.completion)) : 0,
          valid_completion_tokens_count: v ? sum(v.completion) : 0,
        };
      }),
    },
    errors: {
      graders: top
        ? [
            {
              name: top.name,
              type: top.type,
              ...errorStats("train", x.train),
              ...(x.valid?.length ? errorStats("valid", x.valid) : {}),
            },
          ]
        : [],
    },
    timing: {
      step: Object.fromEntries(Object.entries(x.timing).map(([k, v]) => [k, round(v)])),
      graders: top
        ? [
            {
              name: top.name,
              type: top.type,
              train_execution_latency_mean: x.train.length
                ? round(mean(x.train.map((s) => s.response.metadata.execution_time)))
                : 0,
              valid_execution_latency_mean: x.valid?.length
                ? round(mean(x.valid.map((s) => s.response.metadata.execution_time)))
                : 0,
            },
          ]
        : [],
    },
    // OpenAI's flat duplicates.
    train_mean_reward: trainMean,
    full_valid_mean_reward: validMean,
    full_valid_mean_parse_error: x.valid?.length
      ? round(x.valid.filter((s) => s.response.metadata.errors.sample_parse_error).length / x.valid.length)
      : null,
    completion_tokens_mean: tokensMean(x.train),
    mean_unresponsive_rewards: x.train.length
      ? round(x.train.filter((s) => s.response.metadata.errors.unresponsive_reward_error).length / x.train.length)
      : 0,
  };
  const parts = [`Step ${x.step}/${x.totalSteps}`, `train mean reward=${trainMean?.toFixed(2) ?? "n/a"}`];
  if (validMean !== null) parts.push(`full validation mean reward=${validMean.toFixed(2)}`);
  if (data.full_valid_mean_parse_error !== null)
    parts.push(`full validation mean parse error=${data.full_valid_mean_parse_error.toFixed(2)}`);
  return {
    object: "fine_tuning.job.event" as const,
    id: `ftevent-step-${x.step}`,
    created_at: x.createdAt,
    level: "info" as const,
    type: "metrics" as const,
    message: parts.join(", "),
    data,
  };
}

export type MetricsEvent = ReturnType<typeof metricsEvent>;

/**
 * Fraction of a step's samples whose grading failed (any error flag but sample_parse_error, which is the
 * model's fault and common early in training), for the job's failure threshold.
 */
export function graderErrorRate(samples: GradedSample[]): number {
  if (samples.length === 0) return 0;
  const failed = samples.filter((s) =>
    ERROR_FLAGS.some((f) => f !== "sample_parse_error" && s.response.metadata.errors[f]),
  );
  return failed.length / samples.length;
}
