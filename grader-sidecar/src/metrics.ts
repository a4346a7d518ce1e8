/** Prometheus metrics of the grader service (prom-client). Names follow Prometheus conventions: rft_grader_*. */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import type { RunGraderResponse } from "../../proto/graders.js";
import { errorFlagsSet } from "./engine.js";

/** Distinct `grader_name` label values kept (README "Limits"); later names are counted under OTHER_GRADER_NAME. */
export const DEFAULT_MAX_GRADER_NAMES = 32;
export const OTHER_GRADER_NAME = "other";
/** Longest `grader_name` label value; longer names are cut (the name is caller-controlled). */
export const GRADER_NAME_LABEL_MAX = 64;

export class GraderMetrics {
  /**
   * The grader names that have their own label value: the first `maxGraderNames` seen. Grader names come from
   * callers, so an unbounded label set would grow /metrics and memory without limit (every series is kept).
   */
  private readonly names = new Set<string>();
  private readonly maxGraderNames: number;
  readonly registry = new Registry();
  readonly requests = new Counter({
    name: "rft_grader_requests_total",
    help: "Samples graded, by grader type and name.",
    labelNames: ["grader_type", "grader_name"],
    registers: [this.registry],
  });
  readonly duration = new Histogram({
    name: "rft_grader_duration_seconds",
    help: "Time to grade one sample, by grader type and name.",
    labelNames: ["grader_type", "grader_name"],
    buckets: [0.00001, 0.0001, 0.001, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120],
    registers: [this.registry],
  });
  readonly errors = new Counter({
    name: "rft_grader_errors_total",
    help: "Grades that set an OpenAI error flag, by grader type, name and flag.",
    labelNames: ["grader_type", "grader_name", "error"],
    registers: [this.registry],
  });
  readonly rewards = new Histogram({
    name: "rft_grader_reward",
    help: "Rewards returned, by grader type and name.",
    labelNames: ["grader_type", "grader_name"],
    buckets: [0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1],
    registers: [this.registry],
  });
  readonly invalid = new Counter({
    name: "rft_grader_invalid_configs_total",
    help: "Grader configs rejected by validation.",
    registers: [this.registry],
  });
  readonly modelTokens = new Counter({
    name: "rft_grader_model_tokens_total",
    help: "Judge tokens of model graders (score_model, label_model, cosine embeddings), by judge model and kind.",
    labelNames: ["model", "kind"],
    registers: [this.registry],
  });
  /** Judge model names with their own label value (the first maxGraderNames; they come from the judge's answer). */
  private readonly models = new Set<string>();
  readonly inFlight = new Gauge({
    name: "rft_grader_in_flight",
    help: "Samples being graded now.",
    registers: [this.registry],
  });

  constructor(opts: { defaultMetrics?: boolean; maxGraderNames?: number } = {}) {
    this.maxGraderNames = opts.maxGraderNames ?? DEFAULT_MAX_GRADER_NAMES;
    if (opts.defaultMetrics ?? true) collectDefaultMetrics({ register: this.registry });
  }

  /** The label value for a grader name: itself (cut to GRADER_NAME_LABEL_MAX) while the set has room, else "other". */
  graderNameLabel(name: string): string {
    const cut = name.length > GRADER_NAME_LABEL_MAX ? name.slice(0, GRADER_NAME_LABEL_MAX) : name;
    if (this.names.has(cut)) return cut;
    if (this.names.size >= this.maxGraderNames) return OTHER_GRADER_NAME;
    this.names.add(cut);
    return cut;
  }

  observe = (res: RunGraderResponse) => {
    const labels = { grader_type: res.metadata.type, grader_name: this.graderNameLabel(res.metadata.name) };
    this.requests.inc(labels);
    this.duration.observe(labels, res.metadata.execution_time);
    this.rewards.observe(labels, res.reward);
    for (const error of errorFlagsSet(res)) this.errors.inc({ ...labels, error });
    for (const [name, u] of Object.entries(res.model_grader_token_usage_per_model)) {
      const model = this.modelLabel(name);
      if (u.prompt_tokens) this.modelTokens.inc({ model, kind: "prompt" }, u.prompt_tokens);
      if (u.completion_tokens) this.modelTokens.inc({ model, kind: "completion" }, u.completion_tokens);
      if (u.cached_tokens) this.modelTokens.inc({ model, kind: "cached" }, u.cached_tokens);
    }
  };

  private modelLabel(name: string): string {
    const cut = name.slice(0, GRADER_NAME_LABEL_MAX);
    if (this.models.has(cut)) return cut;
    if (this.models.size >= this.maxGraderNames) return OTHER_GRADER_NAME;
    this.models.add(cut);
    return cut;
  }
}
