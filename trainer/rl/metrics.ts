/**
 * OpenAI-shaped per-step metrics events (`fine_tuning.job.event`, type "metrics"), built from the grader
 * responses of a step. Pure. Field names follow shared/reference/openai-rft-api.md §8.2 so dashboards and
 * scripts written against OpenAI's events read ours unchanged.
 */
import { ERROR_FLAGS, type ErrorFlag, type GraderErrors, type RunGraderResponse } from "../../proto/graders.js";
import { mean } from "./advantages.js";

export interface GradedSample {
  response: RunGraderResponse;
  completionTokens: number;
  truncated: boolean;
  /** Tokens of a separate reasoning channel; the models trained here have none (absent = 0). */
  reasoningTokens?: number;
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
  /** A sub-grader's key in `graders`; absent for the top-level grader. */
  sub?: string;
  reward: (r: RunGraderResponse) => number;
}

/**
 * The top-level grader plus, for multi, each sub-grader (by its key in `graders`, typed as its own type) seen
 * in any sample of the step: a step where every sample failed to parse still lists them (the engine reports
 * each at 0).
 */
function graderRefs(samples: GradedSample[]): GraderRef[] {
  const first = samples[0]?.response;
  if (!first) return [];
  const top: GraderRef = { name: first.metadata.name, type: first.metadata.type, reward: (r) => r.reward };
  const subs = new Map<string, string>();
  for (const s of samples)
    for (const k of Object.keys(s.response.sub_rewards)) {
      const t = s.response.sub_graders?.[k]?.type;
      if (!subs.has(k) || (subs.get(k) === "unknown" && t)) subs.set(k, t ?? "unknown");
    }
  return [
    top,
    ...[...subs].map(([k, type]) => ({
      name: k,
      type,
      sub: k,
      reward: (r: RunGraderResponse) => r.sub_rewards[k] ?? 0,
    })),
  ];
}

const round = (x: number) => Math.round(x * 1e6) / 1e6;

const GENERIC_FLAGS: readonly ErrorFlag[] = [
  "sample_parse_error",
  "invalid_variable_error",
  "other_error",
  "truncated_observation_error",
  "unresponsive_reward_error",
];
/** The error keys of a grader type (OpenAI's events emit only the keys relevant to the grader). */
function flagsOf(type: string): readonly ErrorFlag[] {
  if (type === "python") return [...GENERIC_FLAGS, "python_grader_server_error", "python_grader_runtime_error"];
  if (type === "score_model" || type === "label_model")
    return [...GENERIC_FLAGS, "model_grader_server_error", "model_grader_refusal_error", "model_grader_parse_error"];
  if (type === "string_check" || type === "text_similarity") return GENERIC_FLAGS;
  return ERROR_FLAGS;
}

/** A grader's own view of a sample: the response for the top grader, its sub_graders entry for a sub-grader. */
function partOf(g: GraderRef, r: RunGraderResponse) {
  if (!g.sub)
    return {
      errors: r.metadata.errors as Partial<GraderErrors>,
      time: r.metadata.execution_time,
      usage: r.model_grader_token_usage_per_model,
    };
  const m = r.sub_graders?.[g.sub];
  return m ? { errors: m.errors, time: m.execution_time, usage: m.model_grader_token_usage_per_model } : undefined;
}

function errorStats(g: GraderRef, prefix: "train" | "valid", samples: GradedSample[]) {
  const parts = samples.map((s) => partOf(g, s.response)).filter((p) => p !== undefined);
  const out: Record<string, number> = {};
  for (const flag of g.sub ? flagsOf(g.type) : ERROR_FLAGS) {
    const count = parts.filter((p) => p.errors[flag]).length;
    out[`${prefix}_${flag}_count`] = count;
    out[`${prefix}_${flag}_mean`] = parts.length ? round(count / parts.length) : 0;
  }
  return out;
}

/** For a grader with `pass_threshold`: the fraction of samples whose reward reached it (OpenAI's evals pass rate). */
function passRates(g: GraderRef, train: GradedSample[], valid: GradedSample[]) {
  const rate = (ss: GradedSample[]) => {
    const ps = ss
      .map((s) => (g.sub ? s.response.sub_graders?.[g.sub]?.passed : s.response.passed))
      .filter((p) => p !== undefined);
    return ps.length ? round(ps.filter(Boolean).length / ps.length) : undefined;
  };
  const t = rate(train);
  const v = rate(valid);
  return { ...(t !== undefined ? { train_pass_rate: t } : {}), ...(v !== undefined ? { valid_pass_rate: v } : {}) };
}

function latencyMean(g: GraderRef, samples: GradedSample[]): number {
  const ts = samples.map((s) => partOf(g, s.response)?.time).filter((t) => t !== undefined);
  return ts.length ? round(mean(ts)) : 0;
}

function usageByModel(samples: GradedSample[], g?: GraderRef) {
  const by = new Map<string, { prompt: number[]; completion: number[]; cached: number }>();
  for (const s of samples) {
    const usage = g ? partOf(g, s.response)?.usage : s.response.model_grader_token_usage_per_model;
    for (const [model, u] of Object.entries(usage ?? {})) {
      const e = by.get(model) ?? { prompt: [], completion: [], cached: 0 };
      e.prompt.push(u.prompt_tokens);
      e.completion.push(u.completion_tokens);
      e.cached += u.cached_tokens;
      by.set(model, e);
    }
  }
  return by;
}

const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);

/** usage.graders: one entry per (model grader, judge model), sub-graders of a multi each on their own. */
function graderUsage(refs: GraderRef[], train: GradedSample[], valid: GradedSample[]) {
  const own = refs.length > 1 ? refs.slice(1) : refs;
  return own.flatMap((g) => {
    const t = usageByModel(train, g);
    const v = usageByModel(valid, g);
    return [...new Set([...t.keys(), ...v.keys()])].map((model) => {
      const tm = t.get(model);
      const vm = v.get(model);
      return {
        name: g.name,
        type: g.type,
        model,
        train_prompt_tokens_mean: tm ? round(mean(tm.prompt)) : 0,
        train_prompt_tokens_count: tm ? sum(tm.prompt) : 0,
        train_completion_tokens_mean: tm ? round(mean(tm.completion)) : 0,
        train_completion_tokens_count: tm ? sum(tm.completion) : 0,
        valid_prompt_tokens_mean: vm ? round(mean(vm.prompt)) : 0,
        valid_prompt_tokens_count: vm ? sum(vm.prompt) : 0,
        valid_completion_tokens_mean: vm ? round(mean(vm.completion)) : 0,
        valid_completion_tokens_count: vm ? sum(vm.completion) : 0,
      };
    });
  });
}

/** OpenAI's flat `model_graders_token_usage`: judge tokens per model, train and eval (validation) totals. */
function modelGradersTokenUsage(train: GradedSample[], valid: GradedSample[]) {
  const t = usageByModel(train);
  const v = usageByModel(valid);
  return Object.fromEntries(
    [...new Set([...t.keys(), ...v.keys()])].map((model) => {
      const tm = t.get(model);
      const vm = v.get(model);
      return [
        model,
        {
          train_prompt_tokens: tm ? sum(tm.prompt) : 0,
          train_completion_tokens: tm ? sum(tm.completion) : 0,
          train_cached_tokens: tm?.cached ?? 0,
          eval_prompt_tokens: vm ? sum(vm.prompt) : 0,
          eval_completion_tokens: vm ? sum(vm.completion) : 0,
          eval_cached_tokens: vm?.cached ?? 0,
        },
      ];
    }),
  );
}

const tokensMean = (ss: GradedSample[]) => (ss.length ? round(mean(ss.map((s) => s.completionTokens))) : 0);
const reasoning = (ss: GradedSample[]) => ss.map((s) => s.reasoningTokens ?? 0);
const reasoningMean = (ss: GradedSample[]) => (ss.length ? round(mean(reasoning(ss))) : 0);

/** usage.samples: samples and completion tokens of the step (and of its validation). */
function samplesUsage(train: GradedSample[], valid: GradedSample[] | undefined) {
  const v = valid ?? [];
  return {
    train_samples_count: train.length,
    valid_samples_count: valid?.length ?? 0,
    train_completion_tokens_mean: tokensMean(train),
    train_completion_tokens_count: sum(train.map((s) => s.completionTokens)),
    valid_completion_tokens_mean: tokensMean(v),
    valid_completion_tokens_count: sum(v.map((s) => s.completionTokens)),
    train_truncated_mean: train.length ? round(train.filter((s) => s.truncated).length / train.length) : 0,
    train_reasoning_tokens_mean: reasoningMean(train),
    train_reasoning_tokens_count: sum(reasoning(train)),
    valid_reasoning_tokens_mean: reasoningMean(v),
    valid_reasoning_tokens_count: sum(reasoning(v)),
  };
}

export function metricsEvent(x: MetricsEventInput) {
  const refs = graderRefs([...x.train, ...(x.valid ?? [])]);
  const trainMean = x.train.length ? round(mean(x.train.map((s) => s.response.reward))) : null;
  const validMean = x.valid?.length ? round(mean(x.valid.map((s) => s.response.reward))) : null;
  const valid = x.valid ?? [];

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
        ...passRates(g, x.train, valid),
      })),
    },
    usage: {
      samples: samplesUsage(x.train, x.valid),
      graders: graderUsage(refs, x.train, valid),
    },
    errors: {
      graders: refs.map((g) => ({
        name: g.name,
        type: g.type,
        ...errorStats(g, "train", x.train),
        ...(valid.length ? errorStats(g, "valid", valid) : {}),
      })),
    },
    timing: {
      step: Object.fromEntries(Object.entries(x.timing).map(([k, v]) => [k, round(v)])),
      graders: refs.map((g) => ({
        name: g.name,
        type: g.type,
        train_execution_latency_mean: latencyMean(g, x.train),
        valid_execution_latency_mean: latencyMean(g, valid),
      })),
    },
    // OpenAI's flat duplicates.
    train_mean_reward: trainMean,
    full_valid_mean_reward: validMean,
    full_valid_mean_parse_error: x.valid?.length
      ? round(x.valid.filter((s) => s.response.metadata.errors.sample_parse_error).length / x.valid.length)
      : null,
    completion_tokens_mean: tokensMean(x.train),
    reasoning_tokens_mean: reasoningMean(x.train),
    valid_reasoning_tokens_mean: reasoningMean(valid),
    mean_unresponsive_rewards: x.train.length
      ? round(x.train.filter((s) => s.response.metadata.errors.unresponsive_reward_error).length / x.train.length)
      : 0,
    model_graders_token_usage: modelGradersTokenUsage(x.train, valid),
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
