/**
 * The RFT training loop (one rank). At the start the rows are admitted and the hyperparameters resolved
 * (admit.ts). Per step, in named phases: take the step's prompts (a seeded permutation per epoch,
 * schedule.ts), sample K completions each and grade them (rollouts.ts), compute group-relative advantages and
 * drop zero-variance groups (dynamic sampling, advantages.ts), apply the clipped policy-gradient update
 * (updatesPerBatch times, update.ts), and record the step: its signed update.applied and its metrics event
 * (record.ts). Every evalInterval steps: validation → valid_reward_mean → checkpoint (top 3 + latest kept).
 *
 * Exact resume: everything random is derived from (seed, step, …) — the data order from (seed, epoch), the
 * sampling seeds from (seed, step, prompt, k) — so the state to restore is only the weights, the optimizer
 * state and the step. A run paused at step N and resumed gives the same rewards and weights as one that
 * never stopped.
 *
 * Data parallelism (options.collective, N ranks): each rank takes a contiguous share of the step's prompts
 * (trainer/collective/data-parallel.ts), samples them with the same seeds a single rank would use (seeds
 * follow the prompt's global index), grades them with its own grader and computes its masked gradients with
 * the loss weights of the whole step (completion lengths are all-gathered first); the gradients are summed
 * with the ring all-reduce, so every rank applies the same update. Validation is split the same way. Rank 0
 * alone writes events.jsonl, checkpoints and the final model; every rank loads the checkpoint rank 0 names on
 * resume. Each rank signs its own update.applied; rank 0 closes the step with step.committed.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type CheckpointInfo, bestCheckpoint } from "../checkpoint/retention.js";
import { appendOutput, CheckpointStore, replaceFileAtomic } from "../checkpoint/store.js";
import type { Collective } from "../collective/collective.js";
import { commitStep, shardOf } from "../collective/data-parallel.js";
import type { RftRow } from "../data/dataset.js";
import type { AdmittedRow } from "../governance/admission.js";
import { type Digest, DigestCache, groupDigests, groupsOf, trainableGroupsOf } from "../governance/digests.js";
import { jobSigningKey, TrainingLedger } from "../governance/ledger.js";
import { cleanup } from "../model/backend-failure.js";
import { loadHfModel, saveHfModel } from "../model/hf-io.js";
import { adapterNames, loadAdapter, saveAdapter } from "../model/lora.js";
import { type Model, disposeModel } from "../model/model.js";
import { disposeParams, type Params, paramSpecs } from "../model/params.js";
import { Adam } from "../model/train-step.js";
import type { StructuredFormat } from "../sampling/response-format.js";
import { formatConstraint } from "../sampling/structured.js";
import type { ResolvedRft } from "../settings/hyperparameters.js";
import { applyJobLora, type JobLora, saveLoraOutputs } from "../settings/lora.js";
import { type ChainHead, compressRanges, type EventSink, FileSink } from "../../ledger/client.js";
import type { FineTuneJobSpec, ReinforcementHyperparameters } from "../../proto/finetunejob.js";
import { validationFileName } from "../../proto/validation.js";
import { admitTrainingRows } from "./admit.js";
import { mean, stepAdvantages } from "./advantages.js";
import type { StepGrader } from "./grading.js";
import { type GradedSample, type MetricsEvent, metricsEvent } from "./metrics.js";
import {
  completeMetrics,
  gradedSamples,
  graderFailure,
  mergeShares,
  type StepShare,
  stepShare,
  updateAppliedBody,
  validationFileText,
  validationSamples,
} from "./record.js";
import { recordedCheckpoint } from "./resume-point.js";
import { grade, promptIds, type Rollout, sample, sampleRequests } from "./rollouts.js";
import { mixSeed, stepRows } from "./schedule.js";
import { TrainingDivergedError, type UpdateContext, updatePolicy } from "./update.js";

export interface RftJob {
  /** The base model directory (Hugging Face format). */
  modelDir: string;
  train: RftRow[];
  valid: RftRow[];
  /** The job's RFT hyperparameters as written; resolved once the admitted rows are known. */
  hyperparameters: ReinforcementHyperparameters | undefined;
  seed: number;
  /** A response_format was set: samples must parse as JSON. */
  jsonRequired: boolean;
  /** Structured outputs: every sample is decoded under this format's grammar (trainer/sampling/structured.ts). */
  responseFormat?: StructuredFormat | null;
  /** The ledger of the run: the job spec, its reference, where relative key files live, and where events go
   * (default: OUT/ledger/events.jsonl; a pod passes a NATS JetStream publisher). */
  ledger: { spec: FineTuneJobSpec; job: string; baseDir: string; sink?: EventSink };
  /** LoRA adapters instead of a full fine-tune (the base stays frozen; checkpoints hold the adapter). */
  lora?: JobLora | null;
}

export interface RftControl {
  /** Set to finish the current step, checkpoint and stop ("paused"). */
  pause: boolean;
  /** Set to stop after the current step without a final model ("cancelled"). */
  cancel: boolean;
}

export interface RftHooks {
  onEvent?: (e: JobEvent) => void;
  onStep?: (m: MetricsEvent) => void;
  onCheckpoint?: (c: CheckpointInfo) => void;
}

export interface RftOptions {
  job: RftJob;
  grader: StepGrader;
  outDir: string;
  control?: RftControl;
  hooks?: RftHooks;
  /** Sequences per forward/backward pass (memory bound; the update is the same for any value). */
  microBatch?: number;
  /** Activation checkpointing in the training passes (the same update, less activation memory, more compute). */
  activationCheckpointing?: boolean;
  /** Fail the job when this fraction of a step's samples carries grader errors (parse errors excluded)… */
  maxGraderErrorRate?: number;
  /** …for this many steps in a row. */
  graderErrorPatience?: number;
  /** Stop after this step (tests and benchmarks); a later run resumes from the checkpoint. */
  stopAfterStep?: number;
  /** Data parallelism: this rank's connected collective (absent: one rank). Every rank shares `outDir`'s
   * checkpoints (rank 0 writes them). */
  collective?: Collective;
}

export type RftStatus = "succeeded" | "paused" | "cancelled" | "failed";

export interface RftResult {
  status: RftStatus;
  step: number;
  totalSteps: number;
  checkpoints: CheckpointInfo[];
  best: CheckpointInfo | null;
  /** The final model's directory (succeeded only). */
  modelDir?: string;
  error?: string;
  history: { step: number; trainRewardMean: number | null; validRewardMean: number | null }[];
}

export interface JobEvent {
  object: "fine_tuning.job.event";
  id: string;
  created_at: number;
  level: "info" | "warn" | "error";
  type: "message" | "metrics";
  message: string;
  data: Record<string, unknown> | null;
}

const now = () => Math.floor(Date.now() / 1000);

/** What a trained step hands to the end of the step (checkpoint, pause, stop). */
interface StepOutcome {
  trainMean: number | null;
  validMean: number | null;
  evalNow: boolean;
}

export class RftTrainer {
  private model!: Model;
  private ref: Params | null = null;
  private adam!: Adam;
  private store: CheckpointStore;
  private readonly eventsFile: string;
  /** `validation/step-N.jsonl`: each validation's graded samples (proto/validation.ts). */
  private readonly validationDir: string;
  private readonly prompts = new Map<RftRow, number[]>();
  private history: RftResult["history"] = [];
  private errorStreak = 0;
  private ledger!: TrainingLedger;
  /** Ledger group → tensor names, and each group's current weight digest. */
  private groups = new Map<string, string[]>();
  /** Ledger group → the tensors training changes (all of the group's, or its LoRA adapters). */
  private trainable = new Map<string, string[]>();
  /** Under LoRA: the frozen base's hash state per group (each step's digests hash only the adapters). */
  private digestCache: DigestCache | undefined;
  /** Under LoRA the KL reference is the policy's own frozen base (shared tensors, not disposed with it). */
  private refShared = false;
  private digests: Record<string, Digest> = {};
  /** Admission of each training row (rows not admitted never appear in a batch). */
  private admission = new Map<RftRow, AdmittedRow>();
  private trainRows: RftRow[] = [];
  /** Seconds of governance work (digests, signing) in the current step. */
  private governanceSeconds = 0;
  /** Hyperparameters resolved for the admitted rows. */
  private hp!: ResolvedRft;
  private readonly dp: Collective | null;
  private readonly rank: number;
  /** Rank 0 of a multi-rank run: where every rank's ledger events go, and the key step.committed is signed with. */
  private rootLedger: { sink: EventSink; privateKey: import("node:crypto").KeyObject; job: string } | undefined;
  /** The ledger already ends with a succeeded job.finished (a finished job started again): nothing to train. */
  private closed: { steps: number } | null = null;

  constructor(private readonly o: RftOptions) {
    mkdirSync(o.outDir, { recursive: true });
    this.store = new CheckpointStore(join(o.outDir, "checkpoints"));
    this.eventsFile = join(o.outDir, "events.jsonl");
    this.validationDir = join(o.outDir, "validation");
    this.dp = o.collective && o.collective.worldSize > 1 ? o.collective : null;
    this.rank = this.dp?.rank ?? 0;
  }

  /** Events, metrics and hooks come from rank 0 only. */
  private get reports(): boolean {
    return this.rank === 0;
  }

  private emit(e: Omit<JobEvent, "object" | "id" | "created_at"> & { id?: string }) {
    const ev: JobEvent = {
      object: "fine_tuning.job.event",
      id: e.id ?? `ftevent-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`,
      created_at: now(),
      ...e,
    } as JobEvent;
    if (!this.reports) return;
    appendOutput(this.eventsFile, `${JSON.stringify(ev)}\n`);
    this.o.hooks?.onEvent?.(ev);
  }

  private info(message: string, data: Record<string, unknown> | null) {
    this.emit({ level: "info", type: "message", message, data });
  }

  private prompt(row: RftRow): number[] {
    let p = this.prompts.get(row);
    if (!p) {
      p = promptIds(this.model, row);
      this.prompts.set(row, p);
    }
    return p;
  }

  // ── Start: the resume point, the policy, the ledger, the rows admitted, the KL reference ──

  /** Loads the base model, or the latest checkpoint's weights and optimizer state. Returns the step reached. */
  private async start(): Promise<number> {
    const { latest, fallback } = await this.resumePoint();
    this.adam = new Adam({ lr: 0, clipNorm: 1 }); // the learning rate is set every step (warm-up)
    if (latest) await this.resumeFromCheckpoint(latest, fallback);
    else await this.startFromBase(fallback);
    await this.loadReference();
    return latest?.step ?? 0;
  }

  /** The checkpoint to resume from (rank 0 picks it; every rank loads the one rank 0 names). */
  private async resumePoint(): Promise<{ latest: CheckpointInfo | null; fallback: string | null }> {
    let latest = this.store.latest();
    let fallback: string | null = null;
    if (this.reports && latest)
      ({ latest, fallback } = await recordedCheckpoint(this.store, latest, {
        ledger: this.o.job.ledger,
        outDir: this.o.outDir,
      }));
    if (!this.dp) return { latest, fallback };
    // Every rank resumes from the checkpoint rank 0 names (they share the checkpoint directory).
    const name = await this.dp.broadcastJson(this.rank === 0 ? (latest?.name ?? null) : null);
    latest = name === null ? null : (this.store.list().find((c) => c.name === name) ?? null);
    if (name !== null && !latest)
      throw new Error(
        `rank ${this.rank} cannot see checkpoint ${name} in ${this.store.dir(name)} (the ranks must share it)`,
      );
    return { latest, fallback };
  }

  private async resumeFromCheckpoint(latest: CheckpointInfo, fallback: string | null) {
    const dir = this.store.dir(latest.name);
    this.model = await this.loadPolicy(dir);
    await this.adam.load(join(dir, "optimizer.safetensors"), this.model);
    const state = JSON.parse(readFileSync(join(dir, "state.json"), "utf8"));
    this.history = state.history ?? [];
    if (this.reports) this.truncateEvents(latest.step);
    if (fallback) this.emit({ level: "warn", type: "message", message: fallback, data: { step: latest.step } });
    await this.openLedgerRanked();
    const r = await this.resumeLedger({ name: latest.name, step: latest.step, head: state.ledger });
    const abandoned = r.abandoned.length
      ? `; steps ${compressRanges(r.abandoned)} of the stopped attempt abandoned`
      : "";
    this.info(`Resuming from checkpoint ${latest.name} (step ${latest.step})${abandoned}`, {
      step: latest.step,
      abandoned_steps: r.abandoned,
    });
  }

  private async startFromBase(fallback: string | null) {
    const { job } = this.o;
    this.model = await this.loadPolicy(null);
    if (this.reports) writeFileSync(this.eventsFile, "");
    if (fallback) this.emit({ level: "warn", type: "message", message: fallback, data: { step: 0 } });
    await this.openLedgerRanked();
    const r = await this.resumeLedger(null);
    if (r.outcome === "fresh" && this.reports) this.ledger.started(this.digests, this.dp?.worldSize ?? 1);
    if (r.outcome === "resumed")
      this.info(
        `Restarting from the base model: the stopped attempt had no checkpoint${r.abandoned.length ? ` (steps ${compressRanges(r.abandoned)} abandoned)` : ""}`,
        { step: 0, abandoned_steps: r.abandoned },
      );
    for (const r of this.ledger.rejected) {
      this.emit({
        level: "warn",
        type: "message",
        message: `Row ${r.id} rejected (${r.code}): ${r.reason}`,
        data: { row: r.id, code: r.code },
      });
    }
    this.info(
      `Fine-tuning job started: ${job.train.length} training rows, ${job.valid.length} validation rows, ${this.hp.totalSteps} steps`,
      { hyperparameters: this.hp as unknown as Record<string, unknown> },
    );
  }

  /** The frozen KL reference (klCoef > 0): under LoRA the policy's own base tensors, else the base model again. */
  private async loadReference() {
    if (this.hp.klCoef > 0 && this.model.lora) {
      const adapters = new Set(adapterNames(this.model.config, this.model.lora.settings));
      this.ref = new Map([...this.model.params].filter(([n]) => !adapters.has(n)));
      this.refShared = true;
    } else if (this.hp.klCoef > 0) {
      const base = await loadHfModel(this.o.job.modelDir, { tokenizer: false });
      this.ref = base.params;
      base.rope.cos.dispose();
      base.rope.sin.dispose();
    }
  }

  /**
   * The policy: the base model, or a checkpoint's model; under LoRA always the base model (its files are never
   * written) with the job's starting adapters, or the checkpoint's adapter.
   */
  private async loadPolicy(checkpointDir: string | null): Promise<Model> {
    const { job } = this.o;
    const model = await loadHfModel(job.lora || !checkpointDir ? job.modelDir : join(checkpointDir, "model"));
    if (this.o.activationCheckpointing) model.checkpoint = true;
    if (!job.lora) return model;
    try {
      if (checkpointDir) await loadAdapter(model, join(checkpointDir, "adapter"));
      else await applyJobLora(model, job.lora, job.seed);
    } catch (e) {
      disposeModel(model);
      throw e;
    }
    return model;
  }

  private disposeRef() {
    if (this.ref && !this.refShared) disposeParams(this.ref);
    this.ref = null;
  }

  private disposeAll() {
    this.adam.dispose();
    this.disposeRef();
    disposeModel(this.model);
  }

  /**
   * openLedger on every rank of a multi-rank run: rank 0 first (it may create the job's key file in the shared
   * output directory), then the others; each checks it loaded the same weights as rank 0. Rank 0's events go
   * to an explicit sink, so that the other ranks' events can go to the same place. Then the rows are admitted.
   */
  private async openLedgerRanked() {
    const dp = this.dp;
    if (!dp) {
      this.openLedger();
      return this.admit();
    }
    const { job } = this.o;
    if (this.rank === 0) {
      const sink = job.ledger.sink ?? new FileSink(join(this.o.outDir, "ledger", "events.jsonl"));
      this.openLedger(sink);
      this.admit();
      this.rootLedger = {
        sink,
        privateKey: jobSigningKey(job.ledger.spec, job.ledger.baseDir, join(this.o.outDir, "ledger")),
        job: job.ledger.job,
      };
    }
    await dp.barrier();
    if (this.rank !== 0) {
      this.openLedger({ write: () => undefined }); // rank 0 writes every rank's events
      this.admit();
    }
    const theirs = await dp.broadcastJson(this.rank === 0 ? this.digests : null);
    const differ = Object.keys(theirs).filter((g) => theirs[g] !== this.digests[g]);
    if (differ.length)
      throw new Error(`rank ${this.rank} loaded different weights than rank 0 (groups ${differ.join(", ")})`);
  }

  /** Digests the loaded weights per ledger group and opens the job's ledger (its signing key, its sink). */
  private openLedger(sink?: EventSink) {
    const { job } = this.o;
    this.groups = groupsOf(this.model.config, this.model.lora?.settings);
    this.trainable = trainableGroupsOf(this.model.config, this.model.lora?.settings);
    this.digestCache = this.model.lora
      ? new DigestCache(new Set(paramSpecs(this.model.config).map((s) => s.name)))
      : undefined;
    this.digests = groupDigests(this.model.params, this.groups, undefined, this.digestCache);
    this.ledger = new TrainingLedger({
      ...job.ledger,
      ...(sink ? { sink } : {}),
      outDir: this.o.outDir,
      numLayers: this.model.config.numLayers,
      rows: job.train.map((r) => r.raw),
    });
  }

  /** Phase "admit": the rows the ledger admitted, and the hyperparameters resolved for them. */
  private admit() {
    const { job } = this.o;
    const a = admitTrainingRows(job.train, this.ledger.admitted, job.hyperparameters);
    this.admission = a.admission;
    this.trainRows = a.trainRows;
    this.hp = a.hp;
  }

  /**
   * Rank 0 continues the job's chain from the ledger's last durable event (TrainingLedger.resumeFrom: a
   * job.resumed naming the checkpoint loaded, or the base model, and the steps abandoned); the outcome holds
   * for every rank (the others take the chain position from rank 0 at each step).
   */
  private async resumeLedger(checkpoint: { name: string; step: number; head: ChainHead } | null) {
    let r: { outcome: "fresh" | "closed" | "resumed"; abandoned: number[]; steps: number } | null = null;
    if (this.reports) {
      const res = await this.ledger.resumeFrom(checkpoint, { ...this.digests });
      r = {
        outcome: res.outcome,
        abandoned: res.event?.type === "job.resumed" ? res.event.body.abandonedSteps : [],
        steps: res.last?.type === "job.finished" ? res.last.body.steps : 0,
      };
    }
    if (this.dp) r = await this.dp.broadcastJson(r);
    if (r!.outcome === "closed") this.closed = { steps: r!.steps };
    return r!;
  }

  /** Keeps only the events up to a step (a resumed run re-emits what came after its checkpoint). */
  private truncateEvents(step: number) {
    if (!existsSync(this.eventsFile)) return;
    const kept = readFileSync(this.eventsFile, "utf8")
      .split("\n")
      .filter((l) => l.trim())
      .filter((l) => {
        const e = JSON.parse(l) as JobEvent;
        const s = (e.data as { step?: number } | null)?.step;
        return s === undefined || s <= step;
      });
    replaceFileAtomic(this.eventsFile, kept.map((l) => `${l}\n`).join(""));
  }

  // ── The phases of a step: sample → grade (rollouts), advantages, update, record ──

  /** Phases "sample" and "grade": k completions per row, graded; adds the time spent to `timing`. */
  private async rollouts(
    rows: RftRow[],
    k: number,
    seedOf: (i: number, j: number) => number,
    timing = { sampling: 0, grading: 0 },
  ): Promise<Rollout[]> {
    const { hp } = this;
    const { jsonRequired, responseFormat } = this.o.job;
    // Compiled once per tokenizer and schema (cached), so this is a lookup after the first step.
    const constraint = responseFormat ? await formatConstraint(this.model, responseFormat) : undefined;
    const { reqs, owners } = sampleRequests(rows, k, {
      prompt: (row) => this.prompt(row),
      seedOf,
      base: {
        maxTokens: hp.maxCompletionTokens,
        sampling: { temperature: hp.temperature, topP: hp.topP, topK: 0 },
        ...(constraint ? { constraint } : {}),
      },
    });
    const t0 = performance.now();
    const completions = await sample(this.model, reqs, rows.length);
    const t1 = performance.now();
    const graded = await grade(this.o.grader, completions, owners, jsonRequired);
    timing.sampling += (t1 - t0) / 1000;
    timing.grading += (performance.now() - t1) / 1000;
    return completions.map((c, i) => ({
      row: owners[i]!,
      prompt: reqs[i]!.promptIds,
      completion: c,
      response: graded[i]!,
    }));
  }

  private updateContext(): UpdateContext {
    return {
      model: this.model,
      ref: this.ref,
      adam: this.adam,
      hp: this.hp,
      dp: this.dp,
      rank: this.rank,
      seed: this.o.job.seed,
      microBatch: this.o.microBatch ?? 16,
      admission: this.admission,
      groups: this.groups,
      trainable: this.trainable,
      digests: this.digests,
      digestCache: this.digestCache,
    };
  }

  /**
   * Validation at `step` (0: the baseline): every validation row sampled eval_samples times with the same
   * seeds each time, graded; rank 0 writes the graded samples to `validation/step-N.jsonl` (before the step's
   * metrics event, so whoever reads the event finds the file).
   */
  private async validate(step: number): Promise<GradedSample[]> {
    const { job } = this.o;
    // With several ranks each validates its share of the rows and all get every sample, in row order.
    const { lo, hi } = this.dp
      ? shardOf(job.valid.length, this.dp.worldSize, this.rank)
      : { lo: 0, hi: job.valid.length };
    // The same seeds at every validation: differences between evaluations come from the weights, not the dice.
    const seedOf = (i: number, j: number) => mixSeed(job.seed, 0x7a11d, lo + i, j);
    const { hp } = this;
    const k = hp.evalSamples;
    const rolls = await this.rollouts(job.valid.slice(lo, hi), k, seedOf);
    const mine = {
      graded: gradedSamples(rolls),
      records: validationSamples(rolls, {
        step,
        k,
        jsonRequired: job.jsonRequired,
        seedOf,
        sampling: { temperature: hp.temperature, top_p: hp.topP, max_completion_tokens: hp.maxCompletionTokens },
      }),
    };
    const all = this.dp ? await this.dp.allGatherJson(mine) : [mine];
    if (this.reports) {
      mkdirSync(this.validationDir, { recursive: true });
      const text = validationFileText(all.flatMap((a) => a.records));
      replaceFileAtomic(join(this.validationDir, validationFileName(step)), text);
    }
    return all.flatMap((a) => a.graded);
  }

  /** This rank's prompts of a step, and the index of its first one in the whole step. */
  private stepPrompts(step: number): { rows: RftRow[]; lo: number } {
    const { hp, dp } = this;
    const allRows = stepRows(step, this.trainRows.length, hp, this.o.job.seed).map((i) => this.trainRows[i]!);
    const { lo, hi } = dp ? shardOf(allRows.length, dp.worldSize, this.rank) : { lo: 0, hi: allRows.length };
    return { rows: allRows.slice(lo, hi), lo };
  }

  /**
   * One training step: sample → grade → advantages → update → record (the signed update.applied, the metrics
   * event, the grader-failure rule). Returns the result of a job that fails here, else what the end of the
   * step needs.
   */
  private async trainStep(step: number): Promise<StepOutcome | RftResult> {
    const { job } = this.o;
    const { hp } = this;
    const t0 = performance.now();
    const { rows, lo } = this.stepPrompts(step);
    const split = { sampling: 0, grading: 0 };
    // Sampling seeds follow each prompt's index in the whole step.
    const rolls = await this.rollouts(rows, hp.samplesPerPrompt, (i, j) => mixSeed(job.seed, step, lo + i, j), split);
    const tGraded = performance.now();
    const { kept, advantages } = stepAdvantages(rolls, hp.samplesPerPrompt, hp);
    let trained;
    try {
      trained = await updatePolicy(this.updateContext(), kept, advantages, step);
    } catch (e) {
      if (!(e instanceof TrainingDivergedError)) throw e;
      return this.failed(step - 1, e.message);
    }
    this.governanceSeconds += trained.governanceSeconds;
    const tSign = performance.now();
    const body = updateAppliedBody(
      step,
      this.rank,
      trained,
      rolls.map((r) => r.response.reward),
    );
    if (this.dp)
      await commitStep({ c: this.dp, ledger: this.ledger, root: this.rootLedger, body, after: trained.after });
    else this.ledger.updateApplied(body);
    if (this.reports) this.ledger.sync(); // the step's events, one fsync
    const tTrained = performance.now();
    this.governanceSeconds += (tTrained - tSign) / 1000;
    const share = await this.gatherShare(stepShare(rolls, kept.length, trained));
    const evalNow = job.valid.length > 0 && (step % hp.evalInterval === 0 || step === hp.totalSteps);
    const valid = evalNow ? await this.validate(step) : undefined;
    const tEval = performance.now();
    const timing = {
      sampling: split.sampling,
      grading: split.grading,
      training: (tTrained - tGraded) / 1000,
      eval: (tEval - tTrained) / 1000,
      full_iteration: (tEval - t0) / 1000,
    };
    const ev = this.recordMetrics(step, share, valid, timing, trained.gradNorm);
    const trainMean = ev.data.scores.train_reward_mean;
    const validMean = valid ? mean(valid.map((s) => s.response.reward)) : null;
    this.history.push({ step, trainRewardMean: trainMean, validRewardMean: validMean });
    const failure = graderFailure(share.train, this.errorStreak, {
      maxRate: this.o.maxGraderErrorRate ?? 0.5,
      patience: this.o.graderErrorPatience ?? 3,
    });
    this.errorStreak = failure.streak;
    if (failure.error) return this.failed(step, failure.error);
    return { trainMean, validMean, evalNow };
  }

  /** With several ranks: every rank's samples (in prompt order) and counts, for the step's metrics. */
  private async gatherShare(mine: StepShare): Promise<StepShare> {
    return this.dp ? mergeShares(await this.dp.allGatherJson(mine)) : mine;
  }

  /** The step's metrics event, written by rank 0 (events.jsonl and the onStep hook). */
  private recordMetrics(
    step: number,
    share: StepShare,
    valid: GradedSample[] | undefined,
    timing: Parameters<typeof metricsEvent>[0]["timing"],
    gradNorm: number | null,
  ): MetricsEvent {
    const ev = completeMetrics(
      metricsEvent({ step, totalSteps: this.hp.totalSteps, train: share.train, valid, createdAt: now(), timing }),
      {
        share,
        gradNorm,
        governanceSeconds: this.governanceSeconds,
        samplesPerPrompt: this.hp.samplesPerPrompt,
        replicas: this.dp ? this.dp.worldSize : null,
      },
    );
    this.governanceSeconds = 0;
    if (this.reports) {
      appendOutput(this.eventsFile, `${JSON.stringify(ev)}\n`);
      this.o.hooks?.onStep?.(ev);
    }
    return ev;
  }

  // ── Checkpoints and the job's end ──

  /** Rank 0 writes the checkpoint; the others wait for it (a rank that resumes must find it complete). */
  private async checkpointRanked(
    step: number,
    reason: CheckpointInfo["reason"],
    train: number | null,
    valid: number | null,
  ) {
    if (this.reports) await this.checkpoint(step, reason, train, valid);
    await this.dp?.barrier();
  }

  private async checkpoint(step: number, reason: CheckpointInfo["reason"], train: number | null, valid: number | null) {
    const name = `step-${String(step).padStart(6, "0")}${reason === "eval" ? "" : `-${reason}`}`;
    const metrics: Record<string, number> = {};
    if (valid !== null) metrics.valid_reward_mean = valid;
    if (train !== null) metrics.train_reward_mean = train;
    // Recorded before the files are written: the checkpoint's state carries the chain position after it.
    this.ledger.checkpointSaved({ step, name, groups: { ...this.digests }, metrics });
    const info = await this.store.save({
      info: { step, validRewardMean: valid, trainRewardMean: train, createdAt: now(), reason },
      write: async (dir) => {
        if (this.model.lora) await saveAdapter(this.model, join(dir, "adapter"), { baseModel: this.o.job.modelDir });
        else await saveHfModel(this.model, join(dir, "model"));
        await this.adam.save(join(dir, "optimizer.safetensors"));
        writeFileSync(
          join(dir, "state.json"),
          JSON.stringify({ step, seed: this.o.job.seed, history: this.history, ledger: this.ledger.head }),
        );
      },
    });
    this.info(
      `Checkpoint ${info.name} saved at step ${step}${valid !== null ? ` (valid_reward_mean=${valid.toFixed(3)})` : ""}`,
      { step, checkpoint: info.name, valid_reward_mean: valid, train_reward_mean: train },
    );
    this.o.hooks?.onCheckpoint?.(info);
    return info;
  }

  /** The final model: OUT/model, or under LoRA the merged model (with `merge`) else the adapter, OUT/adapter. */
  private finalModelDir(): string {
    const lora = this.o.job.lora;
    return join(this.o.outDir, lora && !lora.spec.merge ? "adapter" : "model");
  }

  private result(status: RftStatus, step: number, extra: Partial<RftResult> = {}): RftResult {
    const checkpoints = this.store.list();
    return {
      status,
      step,
      totalSteps: this.hp.totalSteps,
      checkpoints,
      best: bestCheckpoint(checkpoints),
      history: this.history,
      ...extra,
    };
  }

  /** The job fails after `step` (the last step applied): an error event and job.finished "failed". */
  private failed(step: number, error: string): RftResult {
    this.emit({ level: "error", type: "message", message: `Job failed: ${error}`, data: { step } });
    if (this.reports) this.ledger.finished({ status: "failed", steps: step, model: { ...this.digests } });
    return this.result("failed", step, { error });
  }

  /** Started again after it finished (e.g. a crash between job.finished and exit): the final model is on disk. */
  private alreadyFinished(): RftResult {
    const { job } = this.o;
    const modelDir = this.finalModelDir();
    this.disposeAll();
    const marker = job.lora && !job.lora.spec.merge ? "adapter_config.json" : "config.json";
    if (!existsSync(join(modelDir, marker)))
      throw new Error(`the ledger records that the job finished, but its final model is missing from ${modelDir}`);
    this.info("The job had already completed (its ledger ends with job.finished)", {
      step: this.closed!.steps,
      model: modelDir,
    });
    return this.result("succeeded", this.closed!.steps, { modelDir });
  }

  /** The baseline: what the starting model scores, so every later validation has a reference point. */
  private async baseline() {
    const base = mean((await this.validate(0)).map((s) => s.response.reward));
    this.history.push({ step: 0, trainRewardMean: null, validRewardMean: base });
    this.info(`Baseline validation (step 0): valid_reward_mean=${base.toFixed(3)}`, {
      step: 0,
      valid_reward_mean: base,
    });
  }

  /** After a step: the evaluation checkpoint, then a pause or a stop (with a checkpoint when none was written). */
  private async endOfStep(step: number, control: RftControl, s: StepOutcome): Promise<RftResult | null> {
    const { hp } = this;
    if (s.evalNow) await this.checkpointRanked(step, "eval", s.trainMean, s.validMean);
    const pause = control.pause && step < hp.totalSteps;
    const stop = this.o.stopAfterStep !== undefined && step >= this.o.stopAfterStep && step < hp.totalSteps;
    if (!pause && !stop) return null;
    if (!s.evalNow) await this.checkpointRanked(step, "pause", s.trainMean, null);
    if (pause) this.info(`Job paused at step ${step}`, { step });
    return this.result("paused", step);
  }

  /** The final model (rank 0 writes it), job.finished, and the last event. */
  private async succeeded(step: number): Promise<RftResult> {
    const { job } = this.o;
    const modelDir = this.finalModelDir();
    if (this.reports) {
      if (job.lora)
        await saveLoraOutputs(this.model, this.o.outDir, { baseModel: job.modelDir, merge: job.lora.spec.merge });
      else await saveHfModel(this.model, modelDir);
      this.ledger.finished({ status: "succeeded", steps: step, model: { ...this.digests } });
    }
    await this.dp?.barrier(); // every rank returns once the final model is on disk
    this.info("The job has successfully completed", { step, model: modelDir });
    return this.result("succeeded", step, { modelDir });
  }

  async run(): Promise<RftResult> {
    try {
      return await this.runRanked();
    } catch (e) {
      // A rank that fails outside a collective tells the others at once (they fail instead of waiting).
      if (this.dp && !this.dp.error) this.dp.abort((e as Error).message);
      throw e;
    }
  }

  private async runRanked(): Promise<RftResult> {
    const localControl = this.o.control ?? { pause: false, cancel: false };
    let step = await this.start();
    if (this.closed) return this.alreadyFinished();
    if (step === 0 && this.o.job.valid.length > 0) await this.baseline();
    try {
      while (step < this.hp.totalSteps) {
        // Rank 0's pause / cancel requests hold for every rank.
        const control = this.dp
          ? await this.dp.broadcastJson(this.rank === 0 ? { ...localControl } : null)
          : localControl;
        if (control.cancel) {
          this.info("Job cancelled", { step });
          if (this.reports) this.ledger.finished({ status: "cancelled", steps: step, model: { ...this.digests } });
          return this.result("cancelled", step);
        }
        step++;
        const outcome = await this.trainStep(step);
        if ("status" in outcome) return outcome;
        const end = await this.endOfStep(step, control, outcome);
        if (end) return end;
        await new Promise((r) => setImmediate(r)); // let signals and progress output through
      }
      return await this.succeeded(step);
    } finally {
      cleanup(() => this.disposeAll());
    }
  }
}
