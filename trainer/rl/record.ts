/**
 * Phase "record": what a step leaves behind — the body of its signed `update.applied`, the samples and counts
 * its metrics event is built from, and the grader-failure rule (fail after `patience` steps in a row with too
 * many grader errors), and a validation's graded samples as the lines of `validation/step-N.jsonl`. Pure.
 */
import { VALIDATION_LIMITS, type ValidationOmitted, type ValidationSample } from "../../proto/validation.js";
import { mean, std } from "./advantages.js";
import { type GradedSample, graderErrorRate, type MetricsEvent } from "./metrics.js";
import { gradedSample, type Rollout } from "./rollouts.js";
import type { LossSums, StepUpdate } from "./update.js";

/** The body of a rank's update.applied for a step. */
export function updateAppliedBody(step: number, rank: number, trained: StepUpdate, rewards: number[]) {
  return {
    step,
    rank,
    contributions: trained.contributions,
    gradients: trained.gradients,
    weights: Object.fromEntries(
      Object.keys(trained.before).map((g) => [g, { before: trained.before[g]!, after: trained.after[g]! }]),
    ),
    reward: {
      count: rewards.length,
      mean: rewards.length ? mean(rewards) : 0,
      std: std(rewards),
      min: rewards.length ? Math.min(...rewards) : 0,
      max: rewards.length ? Math.max(...rewards) : 0,
    },
  };
}

/** What the metrics see of a rollout. */
export function gradedSamples(rolls: Rollout[]): GradedSample[] {
  return rolls.map((r) => ({
    response: r.response,
    completionTokens: r.completion.tokens.length,
    truncated: r.completion.finishReason === "length",
  }));
}

/** One rank's share of a step's metrics (all-gathered with several ranks). */
export interface StepShare {
  train: GradedSample[];
  kept: number;
  tokens: number;
  loss: LossSums;
  /** Σ over the sampled completion tokens of −log π_old (the entropy estimate), and their count. */
  negLogp: { sum: number; tokens: number };
}

export function stepShare(rolls: Rollout[], kept: number, trained: StepUpdate): StepShare {
  let sum = 0;
  let tokens = 0;
  for (const r of rolls)
    for (const lp of r.completion.logprobs) {
      sum -= lp;
      tokens++;
    }
  return { train: gradedSamples(rolls), kept, tokens: trained.tokens, loss: trained.loss, negLogp: { sum, tokens } };
}

/** Every rank's shares as one (prompt order = rank order). */
export function mergeShares(shares: StepShare[]): StepShare {
  const add = (f: (s: StepShare) => number) => shares.reduce((a, s) => a + f(s), 0);
  return {
    train: shares.flatMap((s) => s.train),
    kept: add((s) => s.kept),
    tokens: add((s) => s.tokens),
    loss: { tokens: add((s) => s.loss.tokens), clipped: add((s) => s.loss.clipped), kl: add((s) => s.loss.kl) },
    negLogp: { sum: add((s) => s.negLogp.sum), tokens: add((s) => s.negLogp.tokens) },
  };
}

const round = (x: number) => Math.round(x * 1e6) / 1e6;

/**
 * The policy statistics of a step's metrics: the fraction of trained tokens whose ratio was clipped, the mean
 * k3 KL to the reference (0 without one), and the policy's entropy estimated as the mean −log π of the sampled
 * tokens (the sampler's log-probs are the model's own at temperature 1, so this is the Monte Carlo entropy at
 * temperature 1 and top_p 1), and the gradient norm of the step's last update (before clipping to 1; the same
 * on every rank). Null when the step had no such tokens (or no update).
 */
function policyStats(s: Pick<StepShare, "loss" | "negLogp">, gradNorm: number | null) {
  const per = (x: number, n: number) => (n > 0 ? round(x / n) : null);
  return {
    clip_ratio: per(s.loss.clipped, s.loss.tokens),
    kl: per(s.loss.kl, s.loss.tokens),
    entropy: per(s.negLogp.sum, s.negLogp.tokens),
    grad_norm: gradNorm === null ? null : round(gradNorm),
  };
}

/** Adds the loop's own fields to a metrics event: governance time, kept groups, trained tokens, policy stats. */
export function completeMetrics(
  ev: MetricsEvent,
  o: {
    share: StepShare;
    gradNorm: number | null;
    governanceSeconds: number;
    samplesPerPrompt: number;
    replicas: number | null;
  },
): MetricsEvent {
  // Included in `training`: hashing the touched groups and signing the step's ledger event.
  (ev.data.timing.step as Record<string, number>).governance = o.governanceSeconds;
  const data = ev.data as Record<string, unknown>;
  data.groups_kept = o.share.kept / o.samplesPerPrompt;
  data.trained_tokens = o.share.tokens;
  data.policy = policyStats(o.share, o.gradNorm);
  if (o.replicas !== null) data.replicas = o.replicas;
  return ev;
}

/**
 * The grader-failure rule: the streak of steps whose grader error rate exceeded `maxRate`, and the job's
 * error once it reaches `patience` (with up to 3 sample tracebacks).
 */
export function graderFailure(
  train: GradedSample[],
  streak: number,
  o: { maxRate: number; patience: number },
): { streak: number; error: string | null } {
  const rate = graderErrorRate(train);
  const next = rate > o.maxRate ? streak + 1 : 0;
  if (next < o.patience) return { streak: next, error: null };
  const details = train
    .filter((s) => s.response.metadata.errors.python_grader_runtime_error_details)
    .slice(0, 3)
    .map((s) => s.response.metadata.errors.python_grader_runtime_error_details)
    .join("\n---\n");
  const error = `grader errors on ${(rate * 100).toFixed(0)}% of samples for ${next} steps in a row${details ? `; sample tracebacks:\n${details}` : ""}`;
  return { streak: next, error };
}

const cut = (s: string, n: number) => (s.length > n ? s.slice(0, n) : s);

/**
 * A validation's rollouts (row-major, `k` per row) as the records of its step file: prompt, item, what the
 * graders saw and what they answered. `seedOf(i, j)` is the seed of row i's sample j.
 */
export function validationSamples(
  rolls: Rollout[],
  o: {
    step: number;
    k: number;
    jsonRequired: boolean;
    seedOf: (i: number, j: number) => number;
    sampling: ValidationSample["sampling"];
  },
): ValidationSample[] {
  const n = VALIDATION_LIMITS.textChars;
  return rolls.map((r, p) => {
    const seen = gradedSample(r.completion, r.row, o.jsonRequired);
    const i = Math.floor(p / o.k);
    const j = p % o.k;
    const finish = (seen.choices?.[0] as { finish_reason?: string } | undefined)?.finish_reason;
    return {
      step: o.step,
      line: r.row.line,
      sample_index: j,
      messages: r.row.messages,
      ...(r.row.tools ? { tools: r.row.tools } : {}),
      item: r.row.item,
      output_text: cut(seen.output_text, n),
      output_tools: (seen.output_tools ?? []).map((t) => cutToolCall(t, n)),
      finish_reason: finish ?? r.completion.finishReason,
      completion_tokens: r.completion.tokens.length,
      seed: o.seedOf(i, j),
      sampling: o.sampling,
      grader: r.response,
    };
  });
}

function cutToolCall(t: unknown, n: number): unknown {
  const f = (t as { function?: { arguments?: unknown } }).function;
  if (typeof f?.arguments !== "string" || f.arguments.length <= n) return t;
  return { ...(t as object), function: { ...f, arguments: f.arguments.slice(0, n) } };
}

/**
 * The text of a step file: one JSON line per sample while the file stays under `limitBytes`; the samples past
 * it are left out and counted in a last `{"omitted", "limit_bytes"}` line.
 */
export function validationFileText(samples: ValidationSample[], limitBytes = VALIDATION_LIMITS.fileBytes): string {
  const lines: string[] = [];
  let bytes = 0;
  for (const [i, s] of samples.entries()) {
    const line = `${JSON.stringify(s)}\n`;
    const size = Buffer.byteLength(line);
    if (bytes + size > limitBytes - 128) {
      const tail: ValidationOmitted = { omitted: samples.length - i, limit_bytes: limitBytes };
      lines.push(`${JSON.stringify(tail)}\n`);
      break;
    }
    lines.push(line);
    bytes += size;
  }
  return lines.join("");
}
