/** Prometheus metrics of a training run (prom-client), updated from the per-step metrics events. */
import { createServer, type Server } from "node:http";
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import { ERROR_FLAGS } from "../../proto/graders.js";
import type { MetricsEvent } from "./metrics.js";

export class TrainerMetrics {
  readonly registry = new Registry();
  private readonly labels: { job: string };
  readonly step = new Gauge({
    name: "rft_step",
    help: "Last completed training step.",
    labelNames: ["job"],
    registers: [this.registry],
  });
  readonly totalSteps = new Gauge({
    name: "rft_total_steps",
    help: "Training steps of the job.",
    labelNames: ["job"],
    registers: [this.registry],
  });
  readonly trainReward = new Gauge({
    name: "rft_train_reward_mean",
    help: "Mean reward of the last step's samples.",
    labelNames: ["job"],
    registers: [this.registry],
  });
  readonly validReward = new Gauge({
    name: "rft_valid_reward_mean",
    help: "Mean reward of the last validation.",
    labelNames: ["job"],
    registers: [this.registry],
  });
  readonly clipRatio = new Gauge({
    name: "rft_policy_clip_ratio",
    help: "Fraction of the last step's trained tokens whose probability ratio was clipped.",
    labelNames: ["job"],
    registers: [this.registry],
  });
  readonly kl = new Gauge({
    name: "rft_policy_kl",
    help: "Mean k3 KL to the reference model over the last step's trained tokens (0 without kl_coef).",
    labelNames: ["job"],
    registers: [this.registry],
  });
  readonly entropy = new Gauge({
    name: "rft_policy_entropy",
    help: "Policy entropy of the last step, estimated as the mean negative log-prob of its sampled tokens (nats).",
    labelNames: ["job"],
    registers: [this.registry],
  });
  readonly gradNorm = new Gauge({
    name: "rft_grad_norm",
    help: "Global gradient norm of the last step's update, before clipping to 1.",
    labelNames: ["job"],
    registers: [this.registry],
  });
  readonly controlDropped = new Counter({
    name: "rft_trainer_control_messages_dropped_total",
    help: "Control messages the trainer dropped as malformed (too large, not JSON, not a known action).",
    labelNames: ["job", "reason"],
    registers: [this.registry],
  });
  readonly stepSeconds = new Histogram({
    name: "rft_step_duration_seconds",
    help: "Time per training step, by phase (sampling, grading, training, eval, full_iteration).",
    labelNames: ["job", "phase"],
    buckets: [0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600],
    registers: [this.registry],
  });
  readonly samples = new Counter({
    name: "rft_samples_total",
    help: "Completions sampled for training.",
    labelNames: ["job"],
    registers: [this.registry],
  });
  readonly completionTokens = new Counter({
    name: "rft_completion_tokens_total",
    help: "Tokens sampled for training.",
    labelNames: ["job"],
    registers: [this.registry],
  });
  readonly trainedTokens = new Counter({
    name: "rft_trained_tokens_total",
    help: "Completion tokens that contributed to updates.",
    labelNames: ["job"],
    registers: [this.registry],
  });
  readonly graderErrors = new Counter({
    name: "rft_grader_sample_errors_total",
    help: "Training samples whose grade carried an error flag, by flag.",
    labelNames: ["job", "error"],
    registers: [this.registry],
  });
  readonly gradedSamples = new Counter({
    name: "rft_graded_samples_total",
    help: "Training samples graded.",
    labelNames: ["job"],
    registers: [this.registry],
  });
  readonly checkpoints = new Counter({
    name: "rft_checkpoints_total",
    help: "Checkpoints written.",
    labelNames: ["job"],
    registers: [this.registry],
  });
  readonly lastStepTime = new Gauge({
    name: "rft_last_step_timestamp_seconds",
    help: "Unix time of the last completed step (alerts on stalled jobs).",
    labelNames: ["job"],
    registers: [this.registry],
  });

  constructor(job: string, opts: { defaultMetrics?: boolean } = {}) {
    this.labels = { job };
    if (opts.defaultMetrics ?? true) collectDefaultMetrics({ register: this.registry });
  }

  observeStep(e: MetricsEvent, totalSteps: number) {
    const l = this.labels;
    const d = e.data;
    this.step.set(l, d.step);
    this.totalSteps.set(l, totalSteps);
    if (d.scores.train_reward_mean !== null) this.trainReward.set(l, d.scores.train_reward_mean);
    if ("valid_reward_mean" in d.scores && typeof d.scores.valid_reward_mean === "number")
      this.validReward.set(l, d.scores.valid_reward_mean);
    this.observePolicy((d as { policy?: Record<string, number | null> }).policy);
    for (const [phase, secs] of Object.entries(d.timing.step))
      this.stepSeconds.observe({ ...l, phase }, secs as number);
    const errs = d.errors.graders[0] as Record<string, unknown> | undefined;
    this.samples.inc(l, d.usage.samples.train_samples_count);
    this.gradedSamples.inc(l, d.usage.samples.train_samples_count);
    this.completionTokens.inc(l, d.usage.samples.train_completion_tokens_count);
    this.trainedTokens.inc(l, Number((d as Record<string, unknown>).trained_tokens ?? 0));
    for (const flag of ERROR_FLAGS) {
      const c = Number(errs?.[`train_${flag}_count`] ?? 0);
      if (c > 0) this.graderErrors.inc({ ...l, error: flag }, c);
    }
    this.lastStepTime.set(l, e.created_at);
  }

  /** The step's policy statistics (absent or null: the step had no trained tokens; the gauges keep their value). */
  private observePolicy(p: Record<string, number | null> | undefined) {
    const set = (g: Gauge, v: number | null | undefined) => {
      if (typeof v === "number") g.set(this.labels, v);
    };
    set(this.clipRatio, p?.clip_ratio);
    set(this.kl, p?.kl);
    set(this.entropy, p?.entropy);
    set(this.gradNorm, p?.grad_norm);
  }

  /** Serves /metrics on a port (0 = any); resolves to the server. */
  async serve(port: number, host = "127.0.0.1"): Promise<Server> {
    const server = createServer(async (req, res) => {
      if (req.url === "/metrics") {
        res.writeHead(200, { "content-type": this.registry.contentType });
        res.end(await this.registry.metrics());
      } else if (req.url === "/healthz") {
        res.writeHead(200).end("ok");
      } else res.writeHead(404).end();
    });
    await new Promise<void>((r) => server.listen(port, host, r));
    return server;
  }
}
