/**
 * The grader engine: validates grader configs and grades samples with them, in process. The gRPC and HTTP
 * servers, `rft grade`, and the trainer (for `rft run`) all use this one engine.
 */
import {
  ERROR_FLAGS,
  type GraderErrors,
  REWARD_ABS_MAX,
  type RunGraderResponse,
  type Sample,
  type SubGraderMetadata,
  type TokenUsage,
} from "../../proto/graders.js";
import { evaluateFormula } from "./formula.js";
import { gradeLabelModel, gradeScoreModel } from "./graders/model.js";
import { fail, type GradeScope, type Outcome } from "./graders/outcome.js";
import { gradePython } from "./graders/python.js";
import { gradeStringCheck } from "./graders/string-check.js";
import { DEFAULT_EMBEDDINGS_MODEL, gradeTextSimilarity } from "./graders/text-similarity.js";
import { addUsage, type ModelEndpoint } from "./model-client.js";
import { PythonSandbox, type PythonSandboxOptions } from "./python/sandbox.js";
import { RenderLimitError } from "./template.js";
import type { SimilarityLimits } from "./similarity/limits.js";
import {
  type Compiled,
  type CompiledSub,
  compileGrader,
  GraderValidationError,
  graderName,
  type ValidateOptions,
} from "./validate.js";

export type { Compiled } from "./validate.js";
export { GraderValidationError } from "./validate.js";

export interface GraderEngineOptions {
  /** Chat-completions endpoint for score_model / label_model (every model; `models` routes by model name). */
  model?: ModelEndpoint;
  /** Judge endpoints by grader `model` (model-client.ts judgeEndpoints); when set, `model` is not used. */
  models?: ModelEndpoint[];
  /** Embeddings endpoint (enables text_similarity `cosine`). */
  embeddings?: { endpoint: ModelEndpoint; model?: string };
  /** Python sandbox settings (the pool starts on the first python grader). */
  python?: PythonSandboxOptions;
  /**
   * How `compile` checks python graders: "run" (default) runs the module body in the sandbox and inspects
   * `grade`; "parse" runs none of the user's code (a static check: syntax, a module-level `grade`, its
   * arity where it is a plain def). "parse" is for processes that hold credentials, like the operator's
   * admission webhook; the grader's first load, in the trainer pod, still runs the full check.
   */
  pythonCheck?: "run" | "parse";
  /** Deadline for one grade; past it the reward is 0 with `unresponsive_reward_error`. Default 150 s. */
  gradeTimeoutMs?: number;
  /** Cost bounds of the local text_similarity metrics (default DEFAULT_SIMILARITY_LIMITS; see README "Limits"). */
  similarityLimits?: SimilarityLimits;
  /** Called after every top-level grade (metrics). */
  onGraded?: (res: RunGraderResponse) => void;
}

/** What a grader sees of a sample, as callers provide it (the trainer, gRPC, HTTP). */
export interface SampleInput {
  output_text: string;
  output_tools?: unknown[];
  choices?: unknown[];
  /** The sample was produced under a response_format: it must parse as JSON. */
  json_required?: boolean;
}

export function emptyErrors(): GraderErrors {
  return {
    formula_parse_error: false,
    sample_parse_error: false,
    truncated_observation_error: false,
    unresponsive_reward_error: false,
    invalid_variable_error: false,
    other_error: false,
    python_grader_server_error: false,
    python_grader_server_error_type: null,
    python_grader_runtime_error: false,
    python_grader_runtime_error_details: null,
    model_grader_server_error: false,
    model_grader_refusal_error: false,
    model_grader_parse_error: false,
    model_grader_server_error_details: null,
  };
}

const JSON_START = /^[[{"\d\-tfn]/;

/** Whether a grader runs entirely in this process (no sandbox, no endpoint). */
function isLocal(g: Compiled): boolean {
  if (g.type === "multi") return Object.values(g.graders).every(isLocal);
  return g.type === "string_check" || (g.type === "text_similarity" && g.config.evaluation_metric !== "cosine");
}

/** Builds OpenAI's `sample` namespace. `output_json` is set whenever the text parses as JSON. */
export function buildSample(input: SampleInput): { sample: Sample; parseError: boolean } {
  const sample: Sample = {
    output_text: input.output_text,
    output_tools: input.output_tools ?? [],
    choices: input.choices ?? [
      { index: 0, finish_reason: "stop", message: { role: "assistant", content: input.output_text } },
    ],
  };
  let parsed = false;
  const t = input.output_text.trim();
  if (t.length > 0 && JSON_START.test(t)) {
    try {
      sample.output_json = JSON.parse(t);
      parsed = true;
    } catch {
      // not JSON: output_json stays absent
    }
  }
  return { sample, parseError: Boolean(input.json_required) && !parsed };
}

export class GraderEngine {
  private sandbox?: PythonSandbox;
  private sandboxStart?: Promise<void>;

  constructor(readonly opts: GraderEngineOptions = {}) {}

  private validateOptions(): ValidateOptions {
    return { cosineAvailable: Boolean(this.opts.embeddings) };
  }

  /** Validates a grader config (throws GraderValidationError) and compiles python sources in the sandbox. */
  async compile(raw: unknown, opts: ValidateOptions = {}): Promise<Compiled> {
    const compiled = compileGrader(raw, { ...this.validateOptions(), ...opts });
    const pythons: [string, Extract<Compiled, { type: "python" }>][] =
      compiled.type === "python" ? [["grader", compiled]] : [];
    if (compiled.type === "multi") {
      for (const [k, g] of Object.entries(compiled.graders))
        if (g.type === "python") pythons.push([`grader.graders.${k}`, g]);
    }
    for (const [param, g] of pythons) {
      const check = await (await this.python()).check(g.config.source, { parse: this.opts.pythonCheck === "parse" });
      if (!check.ok) {
        const where = check.line ? ` (line ${check.line})` : "";
        throw new GraderValidationError(`python source does not compile${where}: ${check.error}`, `${param}.source`);
      }
    }
    return compiled;
  }

  private async python(): Promise<PythonSandbox> {
    if (!this.sandbox) {
      this.sandbox = new PythonSandbox(this.opts.python);
      this.sandboxStart = this.sandbox.start();
    }
    await this.sandboxStart;
    return this.sandbox;
  }

  /** Grades one sample. Never throws for grading problems: they are flags in the response. */
  async grade(compiled: Compiled, item: unknown, input: SampleInput): Promise<RunGraderResponse> {
    const started = performance.now();
    const { sample, parseError } = buildSample(input);
    const scope: GradeScope = {
      item: item !== null && typeof item === "object" && !Array.isArray(item) ? (item as Record<string, unknown>) : {},
      sample,
    };
    let outcome: Outcome;
    if (parseError) outcome = parseFailure(compiled);
    else {
      const work = compiled.type === "multi" ? this.gradeMulti(compiled, scope) : this.gradeOne(compiled, scope);
      // Local graders finish in microseconds; only graders that wait on a process or a network get a deadline.
      outcome = isLocal(compiled) ? await work : await this.withDeadline(work);
    }
    outcome = boundReward(compiled, outcome);
    const res = toResponse(compiled, outcome, (performance.now() - started) / 1000);
    this.opts.onGraded?.(res);
    return res;
  }

  /** Validates then grades: what `/graders/run` and `rft grade` do. */
  async run(raw: unknown, item: unknown, input: SampleInput): Promise<RunGraderResponse> {
    return this.grade(await this.compile(raw), item, input);
  }

  stats() {
    return this.sandbox?.stats();
  }

  async close(): Promise<void> {
    await this.sandbox?.close();
  }

  private judges(): readonly ModelEndpoint[] {
    return this.opts.models ?? (this.opts.model ? [this.opts.model] : []);
  }

  private async withDeadline(p: Promise<Outcome>): Promise<Outcome> {
    const ms = this.opts.gradeTimeoutMs ?? 150_000;
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<Outcome>((resolve) => {
      timer = setTimeout(() => resolve(fail({ unresponsive_reward_error: true })), ms);
    });
    try {
      return await Promise.race([p, deadline]);
    } finally {
      clearTimeout(timer);
    }
  }

  private async gradeOne(g: CompiledSub, scope: GradeScope): Promise<Outcome> {
    try {
      switch (g.type) {
        case "string_check":
          return gradeStringCheck(g, scope);
        case "text_similarity": {
          const e = this.opts.embeddings;
          return await gradeTextSimilarity(
            g,
            scope,
            e && { endpoint: e.endpoint, model: e.model ?? DEFAULT_EMBEDDINGS_MODEL },
            this.opts.similarityLimits,
          );
        }
        case "score_model":
          return await gradeScoreModel(g, scope, this.judges());
        case "label_model":
          return await gradeLabelModel(g, scope, this.judges());
        case "python":
          return await gradePython(g, scope, await this.python());
      }
    } catch (err) {
      // A template that renders past RENDER_MAX_CHARS: too long to grade, like an over-long similarity text.
      if (err instanceof RenderLimitError) return fail({ truncated_observation_error: true });
      return fail({ other_error: true });
    }
  }

  private async gradeMulti(g: Extract<Compiled, { type: "multi" }>, scope: GradeScope): Promise<Outcome> {
    const names = Object.keys(g.graders);
    const seconds: number[] = [];
    const outcomes = await Promise.all(
      names.map(async (n, i) => {
        const t0 = performance.now();
        const o = await this.gradeOne(g.graders[n]!, scope);
        seconds[i] = (performance.now() - t0) / 1000;
        return o;
      }),
    );
    const subGraders: Record<string, SubGraderMetadata> = {};
    const subRewards: Record<string, number> = {};
    const errors: Partial<GraderErrors> = {};
    const usage: Record<string, TokenUsage> = {};
    let sampledModel: string | null = null;
    names.forEach((n, i) => {
      const o = outcomes[i]!;
      subRewards[n] = o.reward;
      for (const [k, v] of Object.entries(o.errors)) {
        const key = k as keyof GraderErrors;
        if (v && !errors[key]) (errors as Record<string, unknown>)[key] = v;
      }
      for (const [m, u] of Object.entries(o.usage ?? {})) addUsage(usage, m, u);
      sampledModel ??= o.sampledModel ?? null;
      const threshold = passThreshold(g.graders[n]!);
      subGraders[n] = {
        type: g.graders[n]!.type,
        errors: setFlags(o.errors),
        execution_time: seconds[i]!,
        model_grader_token_usage_per_model: o.usage ?? {},
        ...(threshold !== undefined ? { passed: o.reward >= threshold } : {}),
      };
    });
    let reward = evaluateFormula(g.formula, subRewards);
    if (!Number.isFinite(reward) || Math.abs(reward) > REWARD_ABS_MAX) {
      errors.formula_parse_error = true;
      reward = 0;
    }
    return { reward, errors, subRewards, scores: { ...subRewards }, usage, sampledModel, subGraders };
  }
}

/** A grader's `pass_threshold` (text_similarity, score_model, python: OpenAI's evals field), if it has one. */
function passThreshold(g: Compiled): number | undefined {
  const t = (g.config as { pass_threshold?: unknown }).pass_threshold;
  return typeof t === "number" ? t : undefined;
}

/** The flags of an outcome that are set (a sub-grader's errors, kept small). */
function setFlags(e: Partial<GraderErrors>): Partial<GraderErrors> {
  return Object.fromEntries(Object.entries(e).filter(([, v]) => v !== false && v !== null && v !== undefined));
}

/**
 * A sample that had to be JSON and is not: reward 0, and for multi every sub-grader 0 with the same flag, so a
 * step where every sample fails to parse still reports each sub-grader (at 0) rather than dropping it.
 */
function parseFailure(g: Compiled): Outcome {
  const errors = { sample_parse_error: true };
  if (g.type !== "multi") return fail(errors);
  const names = Object.keys(g.graders);
  const subRewards = Object.fromEntries(names.map((n) => [n, 0]));
  const subGraders = Object.fromEntries(
    names.map((n) => [
      n,
      {
        type: g.graders[n]!.type,
        errors,
        execution_time: 0,
        model_grader_token_usage_per_model: {},
        ...(passThreshold(g.graders[n]!) !== undefined ? { passed: 0 >= passThreshold(g.graders[n]!)! } : {}),
      },
    ]),
  );
  return fail(errors, { subRewards, scores: { ...subRewards }, subGraders });
}

/**
 * No reward leaves the engine as NaN, ±inf or past ±REWARD_ABS_MAX (a step's mean over such rewards is NaN
 * and fails the run): it becomes 0 with the grader's error flag (a formula's for multi, the runtime error for
 * python, other_error otherwise).
 */
function boundReward(g: Compiled, o: Outcome): Outcome {
  if (Number.isFinite(o.reward) && Math.abs(o.reward) <= REWARD_ABS_MAX) return o;
  const why = `the reward ${o.reward} is not a finite number within ±${REWARD_ABS_MAX}`;
  const flag: Partial<GraderErrors> =
    g.type === "multi"
      ? { formula_parse_error: true }
      : g.type === "python"
        ? { python_grader_runtime_error: true, python_grader_runtime_error_details: why }
        : { other_error: true };
  return { ...o, reward: 0, errors: { ...o.errors, ...flag } };
}

function toResponse(g: Compiled, o: Outcome, seconds: number): RunGraderResponse {
  const usage = o.usage ?? {};
  const models = Object.keys(usage);
  const threshold = passThreshold(g);
  let total: TokenUsage | null = null;
  if (models.length > 0) {
    const sum: Record<string, TokenUsage> = {};
    for (const m of models) addUsage(sum, "all", usage[m]!);
    total = sum.all!;
  }
  return {
    reward: o.reward,
    metadata: {
      name: graderName(g.config),
      type: g.type,
      errors: { ...emptyErrors(), ...o.errors },
      execution_time: seconds,
      scores: o.scores ?? {},
      token_usage: total,
      sampled_model_name: o.sampledModel ?? null,
    },
    sub_rewards: o.subRewards ?? {},
    model_grader_token_usage_per_model: usage,
    ...(o.subGraders ? { sub_graders: o.subGraders } : {}),
    ...(threshold !== undefined ? { passed: o.reward >= threshold } : {}),
  };
}

/** The names of the boolean error flags set in a response. */
export function errorFlagsSet(res: RunGraderResponse): string[] {
  return ERROR_FLAGS.filter((f) => res.metadata.errors[f]);
}
