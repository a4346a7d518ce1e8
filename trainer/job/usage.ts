/**
 * A job's usage as rank 0 reports it in progress messages (`usage`), pure. OpenAI bills "captured forward
 * progress"; here that is:
 *
 * - `trainingSeconds`: wall time from the start of each attempt's run to its newest checkpoint (or to the end
 *   of a succeeded run), summed over the attempts. Time an attempt spent after its last checkpoint (lost to a
 *   crash, a cancel or a failure) is not counted: the next attempt starts again from the totals recorded with
 *   the checkpoint it resumes from.
 * - `trainedTokens`: the tokens the training steps processed: RFT, the completion tokens the policy sampled
 *   for training (`usage.samples.train_completion_tokens_count`, whether or not a group's advantage let them
 *   move the weights; validation samples excluded); SFT, the step's tokens. Counted the same way (only the steps
 *   the checkpoints kept).
 * - `judgeTokens`: per model-grader judge model, the prompt / completion / cached tokens of training and of
 *   validation (the steps' `model_graders_token_usage`), counted the same way. At most MAX_JUDGE_MODELS models
 *   by name; the tokens of any further model are summed under OTHER_MODELS.
 *
 * The totals at each checkpoint are kept in `<checkpoint dir>/usage.json` (UsageRecords) by the pod.
 */

import { type JudgeTokens, type Usage, USAGE_LIMITS, USAGE_OTHER_MODELS } from "../../proto/finetunejob-status.js";

export type { JudgeTokens, Usage };

export const MAX_JUDGE_MODELS = USAGE_LIMITS.maxJudgeModels;
/** The key under which the tokens of judge models past the first MAX_JUDGE_MODELS are summed. */
export const OTHER_MODELS = USAGE_OTHER_MODELS;
/** Longest judge model name kept as a key (a longer one counts under OTHER_MODELS). */
export const MAX_MODEL_NAME = USAGE_LIMITS.maxModelName;

export const emptyUsage = (): Usage => ({ trainingSeconds: 0, trainedTokens: 0, judgeTokens: {} });

const count = (v: unknown) => (typeof v === "number" && Number.isFinite(v) && v > 0 ? Math.floor(v) : 0);
/** Totals stay within the progress message's bounds (they saturate). */
const cap = (n: number) => Math.min(n, USAGE_LIMITS.maxTokens);

const FIELDS: [keyof JudgeTokens, string][] = [
  ["trainPrompt", "train_prompt_tokens"],
  ["trainCompletion", "train_completion_tokens"],
  ["trainCached", "train_cached_tokens"],
  ["evalPrompt", "eval_prompt_tokens"],
  ["evalCompletion", "eval_completion_tokens"],
  ["evalCached", "eval_cached_tokens"],
];

/** Wall-clock seconds added (a negative or non-finite span adds nothing); millisecond precision. */
export function addSeconds(u: Usage, seconds: number): Usage {
  if (!Number.isFinite(seconds) || seconds <= 0) return u;
  const total = Math.round((u.trainingSeconds + seconds) * 1000) / 1000;
  return { ...u, trainingSeconds: Math.min(total, USAGE_LIMITS.maxSeconds) };
}

/** SFT: one step's tokens. */
export function addTokens(u: Usage, tokens: number): Usage {
  return { ...u, trainedTokens: cap(u.trainedTokens + count(tokens)) };
}

/**
 * One RFT step's metrics event `data` added: its training samples' completion tokens and each judge model's
 * tokens. Anything that
 * is not a well-formed count adds nothing; the totals never go down.
 */
export function addStep(u: Usage, data: unknown): Usage {
  const d = (data && typeof data === "object" ? data : {}) as Record<string, unknown>;
  const samples = (d.usage as { samples?: { train_completion_tokens_count?: unknown } } | undefined)?.samples;
  const out: Usage = { ...u, trainedTokens: cap(u.trainedTokens + count(samples?.train_completion_tokens_count)) };
  const per = d.model_graders_token_usage;
  if (!per || typeof per !== "object") return out;
  const judge = { ...u.judgeTokens };
  for (const [model, v] of Object.entries(per as Record<string, unknown>)) {
    if (!v || typeof v !== "object") continue;
    const named = Object.keys(judge).filter((k) => k !== OTHER_MODELS).length;
    const key =
      model in judge ||
      (named < MAX_JUDGE_MODELS && model.length >= 1 && model.length <= MAX_MODEL_NAME && model !== OTHER_MODELS)
        ? model
        : OTHER_MODELS;
    const prev = judge[key];
    const next = {} as JudgeTokens;
    for (const [f, wire] of FIELDS) next[f] = cap((prev?.[f] ?? 0) + count((v as Record<string, unknown>)[wire]));
    judge[key] = next;
  }
  return { ...out, judgeTokens: judge };
}

/** The totals recorded with each checkpoint, by checkpoint name. */
export type UsageRecords = Record<string, { step: number; usage: Usage }>;

/** Records kept (the newest by step): more than the trainer ever retains. */
export const MAX_RECORDS = 64;

/** The records with this checkpoint's totals added (replacing a record of the same name), newest kept. */
export function recordCheckpoint(r: UsageRecords, name: string, step: number, usage: Usage): UsageRecords {
  const all = Object.entries({ ...r, [name]: { step, usage } });
  all.sort((a, b) => b[1].step - a[1].step);
  return Object.fromEntries(all.slice(0, MAX_RECORDS));
}

/**
 * Where an attempt that resumes at `step` (its checkpoint's step; 0 from the base model) starts counting: the
 * totals of the newest record at or before that step, else nothing.
 */
export function resumeBase(r: UsageRecords, step: number): Usage {
  let best: { step: number; usage: Usage } | undefined;
  for (const x of Object.values(r)) if (x.step <= step && (!best || x.step > best.step)) best = x;
  return best ? structuredClone(best.usage) : emptyUsage();
}

/** Records read back from usage.json: anything malformed is dropped (the totals restart lower, never higher). */
export function parseRecords(raw: unknown): UsageRecords {
  if (!raw || typeof raw !== "object") return {};
  const out: UsageRecords = {};
  for (const [name, x] of Object.entries(raw as Record<string, unknown>)) {
    const rec = x as { step?: unknown; usage?: Partial<Usage> } | null;
    const u = rec?.usage;
    if (!rec || typeof rec.step !== "number" || !u || typeof u !== "object") continue;
    let usage = addSeconds(emptyUsage(), Number(u.trainingSeconds));
    usage = addTokens(usage, Number(u.trainedTokens));
    const judge: Record<string, unknown> = {};
    for (const [m, t] of Object.entries(u.judgeTokens ?? {}))
      judge[m] = Object.fromEntries(FIELDS.map(([f, wire]) => [wire, (t as Record<string, unknown>)?.[f]]));
    usage = addStep(usage, { model_graders_token_usage: judge });
    out[name] = { step: count(rec.step), usage };
  }
  return out;
}
