/**
 * The RFT training loop (one rank). Per step: take the step's prompts (a seeded permutation per epoch), sample
 * K completions each, grade them, compute group-relative advantages, drop zero-variance groups (dynamic
 * sampling), and apply the clipped policy-gradient update (updatesPerBatch times). Every evalInterval steps:
 * validation → valid_reward_mean → checkpoint (top 3 + latest kept).
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
import * as tf from "@tensorflow/tfjs-core";
import type { RunGraderResponse } from "../../proto/graders.js";
import { type CheckpointInfo, bestCheckpoint } from "../checkpoint/retention.js";
import { appendOutput, CheckpointStore, replaceFileAtomic } from "../checkpoint/store.js";
import type { RftRow } from "../data/dataset.js";
import { type ResolvedRft, resolveRft } from "../settings/hyperparameters.js";
import { cleanup, noteWork } from "../model/backend-failure.js";
import { loadHfModel, saveHfModel } from "../model/hf-io.js";
import { type Model, disposeModel } from "../model/model.js";
import { disposeParams, type Params, paramSpecs } from "../model/params.js";
import { Adam } from "../model/train-step.js";
import { type Completion, generate, type SampleRequest } from "../sampling/generate.js";
import type { StructuredFormat } from "../sampling/response-format.js";
import { formatConstraint } from "../sampling/structured.js";
import { parseToolCalls, parseTools, renderChat, rowConversation } from "../sampling/tools.js";
import { type AdmittedRow } from "../governance/admission.js";
import {
  type Digest,
  DigestCache,
  digestTensors,
  groupDigests,
  groupsOf,
  trainableGroupsOf,
} from "../governance/digests.js";
import { applyJobLora, type JobLora, saveLoraOutputs } from "../settings/lora.js";
import { adapterNames, loadAdapter, saveAdapter } from "../model/lora.js";
import { jobSigningKey, ledgerRecords, ledgerTail, TrainingLedger } from "../governance/ledger.js";
import type { EventSink } from "../../ledger/client.js";
import { FileSink } from "../../ledger/client.js";
import type { ChainHead } from "../../ledger/client.js";
import { compressRanges } from "../../ledger/client.js";
import type { Collective } from "../collective/collective.js";
import {
  allReduceGradients,
  commitStep,
  globalShare,
  shardOf,
  type ShareSummary,
} from "../collective/data-parallel.js";
import type { FineTuneJobSpec, ReinforcementHyperparameters } from "../../proto/finetunejob.js";
import { groupAdvantages, isZeroVariance, mean, std, tokenWeights } from "./advantages.js";
import type { SampleInput } from "../../grader-sidecar/src/client.js";
import type { StepGrader } from "./grading.js";
import { completionLogprobs, packSequences } from "./logprobs.js";
import { policyLoss } from "./loss.js";
import { type GradedSample, graderErrorRate, type MetricsEvent, metricsEvent } from "./metrics.js";

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

/** A 32-bit mix of integers (deterministic seeds for sampling and data order). */
export function mixSeed(...xs: number[]): number {
  let h = 0x9e3779b9;
  for (const x of xs) {
    h ^= x >>> 0;
    h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
    h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
    h ^= h >>> 16;
  }
  return h >>> 0;
}

/** The order of the training rows in an epoch: a Fisher–Yates shuffle seeded by (seed, epoch). */
export function epochOrder(n: number, seed: number, epoch: number): number[] {
  const order = Array.from({ length: n }, (_, i) => i);
  let s = mixSeed(seed, epoch, 0x5eed);
  for (let i = n - 1; i > 0; i--) {
    s = mixSeed(s, i);
    const j = s % (i + 1);
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  return order;
}

/** The training rows of a step (1-based): its epoch's permutation, sliced. */
export function stepRows(
  step: number,
  nTrain: number,
  hp: Pick<ResolvedRft, "batchSize" | "stepsPerEpoch">,
  seed: number,
) {
  const epoch = Math.floor((step - 1) / hp.stepsPerEpoch);
  const k = (step - 1) % hp.stepsPerEpoch;
  return epochOrder(nTrain, seed, epoch).slice(k * hp.batchSize, (k + 1) * hp.batchSize);
}

/** Learning rate at a step: linear warm-up, then constant. */
export function learningRateAt(step: number, hp: Pick<ResolvedRft, "learningRate" | "warmupSteps">): number {
  return hp.warmupSteps > 0 && step <= hp.warmupSteps ? (hp.learningRate * step) / hp.warmupSteps : hp.learningRate;
}

/** Renders a row's messages and tools with the model's chat template (developer turns as system turns). */
export function promptIds(model: Model, row: Pick<RftRow, "messages" | "tools">): number[] {
  const tok = model.tokenizer;
  if (!tok) throw new Error("the model has no tokenizer (tokenizer.json) to render prompts with");
  return tok.encode(renderChat(tok, rowConversation(row.messages), parseTools(row.tools), true));
}

/**
 * What graders see of a completion (OpenAI's `sample`): with the row's `tools`, the tool calls parsed from it
 * (`output_tools`, ids `call_0`, `call_1`, … so a resumed run grades alike) and the text around them as
 * `output_text`; `choices[0]` carries the finish reason ("length" when the token limit cut it).
 */
export function gradedSample(c: Completion, row: Pick<RftRow, "tools">, jsonRequired: boolean): SampleInput {
  const tools = parseTools(row.tools);
  const { content, toolCalls } = parseToolCalls(c.text, tools, (k) => `call_${k}`);
  const finish = c.finishReason === "stop" && toolCalls.length ? "tool_calls" : c.finishReason;
  return {
    output_text: toolCalls.length ? (content ?? "") : c.text,
    output_tools: toolCalls,
    choices: [
      {
        index: 0,
        finish_reason: finish,
        message: { role: "assistant", content, ...(toolCalls.length ? { tool_calls: toolCalls } : {}) },
      },
    ],
    json_required: jsonRequired,
  };
}

interface Rollout {
  row: RftRow;
  prompt: number[];
  completion: Completion;
  response: RunGraderResponse;
}

const now = () => Math.floor(Date.now() / 1000);

export class RftTrainer {
  private model!: Model;
  private ref: Params | null = null;
  private adam!: Adam;
  private store: CheckpointStore;
  private readonly eventsFile: string;
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

  private prompt(row: RftRow): number[] {
    let p = this.prompts.get(row);
    if (!p) {
      p = promptIds(this.model, row);
      this.prompts.set(row, p);
    }
    return p;
  }

  /** Loads the base model, or the latest checkpoint's weights and optimizer state. Returns the step reached. */
  private async start(): Promise<number> {
    const { job } = this.o;
    const dp = this.dp;
    let latest = this.store.latest();
    let fallback: string | null = null;
    if (this.reports && latest) ({ latest, fallback } = await this.recordedCheckpoint(latest));
    if (dp) {
      // Every rank resumes from the checkpoint rank 0 names (they share the checkpoint directory).
      const name = await dp.broadcastJson(this.rank === 0 ? (latest?.name ?? null) : null);
      latest = name === null ? null : (this.store.list().find((c) => c.name === name) ?? null);
      if (name !== null && !latest)
        throw new Error(
          `rank ${this.rank} cannot see checkpoint ${name} in ${this.store.dir(name)} (the ranks must share it)`,
        );
    }
    this.adam = new Adam({ lr: 0, clipNorm: 1 }); // the learning rate is set every step (warm-up)
    if (latest) {
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
      this.emit({
        level: "info",
        type: "message",
        message: `Resuming from checkpoint ${latest.name} (step ${latest.step})${abandoned}`,
        data: { step: latest.step, abandoned_steps: r.abandoned },
      });
    } else {
      this.model = await this.loadPolicy(null);
      if (this.reports) writeFileSync(this.eventsFile, "");
      if (fallback) this.emit({ level: "warn", type: "message", message: fallback, data: { step: 0 } });
      await this.openLedgerRanked();
      const r = await this.resumeLedger(null);
      if (r.outcome === "fresh" && this.reports) this.ledger.started(this.digests, dp?.worldSize ?? 1);
      if (r.outcome === "resumed")
        this.emit({
          level: "info",
          type: "message",
          message: `Restarting from the base model: the stopped attempt had no checkpoint${r.abandoned.length ? ` (steps ${compressRanges(r.abandoned)} abandoned)` : ""}`,
          data: { step: 0, abandoned_steps: r.abandoned },
        });
      for (const r of this.ledger.rejected) {
        this.emit({
          level: "warn",
          type: "message",
          message: `Row ${r.id} rejected (${r.code}): ${r.reason}`,
          data: { row: r.id, code: r.code },
        });
      }
      this.emit({
        level: "info",
        type: "message",
        message: `Fine-tuning job started: ${job.train.length} training rows, ${job.valid.length} validation rows, ${this.hp.totalSteps} steps`,
        data: { hyperparameters: this.hp as unknown as Record<string, unknown> },
      });
    }
    if (this.hp.klCoef > 0 && this.model.lora) {
      const adapters = new Set(adapterNames(this.model.config, this.model.lora.settings));
      this.ref = new Map([...this.model.params].filter(([n]) => !adapters.has(n)));
      this.refShared = true;
    } else if (this.hp.klCoef > 0) {
      const base = await loadHfModel(job.modelDir, { tokenizer: false });
      this.ref = base.params;
      base.rope.cos.dispose();
      base.rope.sin.dispose();
    }
    return latest?.step ?? 0;
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

  /**
   * The checkpoint to resume from: the latest one whose checkpoint.saved the ledger still holds. A ledger that
   * lost its tail (events that never reached the disk before a crash of the machine, or a restored backup) ends
   * before the latest checkpoint's event: resuming from it would point the chain at events that are not there,
   * so the run falls back to the last checkpoint the ledger fully records (or the base model), removes the
   * checkpoints it no longer records (their steps are trained again), and says so in one line (`fallback`).
   */
  private async recordedCheckpoint(
    latest: CheckpointInfo,
  ): Promise<{ latest: CheckpointInfo | null; fallback: string | null }> {
    const { job } = this.o;
    const { sink, last } = await ledgerTail({ ...job.ledger, outDir: this.o.outDir });
    const headOf = (c: CheckpointInfo): ChainHead | undefined => {
      try {
        return (JSON.parse(readFileSync(join(this.store.dir(c.name), "state.json"), "utf8")) as { ledger?: ChainHead })
          .ledger;
      } catch {
        return undefined;
      }
    };
    if (await ledgerRecords(sink, last, job.ledger.job, headOf(latest))) return { latest, fallback: null };
    const dropped: string[] = [];
    let chosen: CheckpointInfo | null = null;
    for (const c of this.store.list().sort((a, b) => b.step - a.step)) {
      let ok: boolean;
      try {
        this.store.verify(c.name);
        ok = await ledgerRecords(sink, last, job.ledger.job, headOf(c));
      } catch {
        ok = false; // a damaged checkpoint is never the resume point
      }
      if (ok) {
        chosen = c;
        break;
      }
      dropped.push(c.name);
    }
    const expected = headOf(latest);
    const where = last ? `ends at seq ${last.seq}` : "holds no events";
    const fallback =
      `The ledger ${where}, short of checkpoint ${latest.name}'s checkpoint.saved` +
      `${expected ? ` (seq ${expected.seq - 1})` : ""}: its tail was lost; resuming from ` +
      `${chosen ? `checkpoint ${chosen.name} (step ${chosen.step})` : "the base model"}, the last state it records` +
      ` (checkpoints ${dropped.join(", ")} removed)`;
    for (const name of dropped) this.store.remove(name);
    return { latest: chosen, fallback };
  }

  /**
   * openLedger on every rank of a multi-rank run: rank 0 first (it may create the job's key file in the shared
   * output directory), then the others; each checks it loaded the same weights as rank 0. Rank 0's events go
   * to an explicit sink, so that the other ranks' events can go to the same place.
   */
  private async openLedgerRanked() {
    const dp = this.dp;
    if (!dp) return this.openLedger();
    const { job } = this.o;
    if (this.rank === 0) {
      const sink = job.ledger.sink ?? new FileSink(join(this.o.outDir, "ledger", "events.jsonl"));
      this.openLedger(sink);
      this.rootLedger = {
        sink,
        privateKey: jobSigningKey(job.ledger.spec, job.ledger.baseDir, join(this.o.outDir, "ledger")),
        job: job.ledger.job,
      };
    }
    await dp.barrier();
    if (this.rank !== 0) this.openLedger({ write: () => undefined }); // rank 0 writes every rank's events
    const theirs = await dp.broadcastJson(this.rank === 0 ? this.digests : null);
    const differ = Object.keys(theirs).filter((g) => theirs[g] !== this.digests[g]);
    if (differ.length)
      throw new Error(`rank ${this.rank} loaded different weights than rank 0 (groups ${differ.join(", ")})`);
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

  /** Admits the training rows and opens the ledger; digests the loaded weights. */
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
    this.admission = new Map(this.ledger.admitted.map((a) => [job.train[a.index]!, a]));
    this.trainRows = this.ledger.admitted.map((a) => job.train[a.index]!);
    if (this.trainRows.length === 0)
      throw new Error("no training row was admitted (see the row.rejected events in the ledger)");
    this.hp = resolveRft(job.hyperparameters, this.trainRows.length);
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

  /** Samples k completions per row and grades them; adds the time spent to `timing`. */
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
    const reqs: SampleRequest[] = [];
    const owners: RftRow[] = [];
    rows.forEach((row, i) => {
      for (let j = 0; j < k; j++) {
        reqs.push({
          promptIds: this.prompt(row),
          maxTokens: hp.maxCompletionTokens,
          sampling: { temperature: hp.temperature, topP: hp.topP, topK: 0 },
          seed: seedOf(i, j),
          ...(constraint ? { constraint } : {}),
        });
        owners.push(row);
      }
    });
    const t0 = performance.now();
    noteWork(`sampling (${reqs.length} samples of ${rows.length} prompts, up to ${hp.maxCompletionTokens} tokens)`);
    const completions: Completion[] = [];
    const chunk = 64;
    for (let i = 0; i < reqs.length; i += chunk)
      completions.push(...(await generate(this.model, reqs.slice(i, i + chunk))));
    const t1 = performance.now();
    const graded = await this.o.grader.grade(
      completions.map((c, i) => ({ item: owners[i]!.item, sample: gradedSample(c, owners[i]!, jsonRequired) })),
    );
    timing.sampling += (t1 - t0) / 1000;
    timing.grading += (performance.now() - t1) / 1000;
    return completions.map((c, i) => ({
      row: owners[i]!,
      prompt: reqs[i]!.promptIds,
      completion: c,
      response: graded[i]!,
    }));
  }

  /**
   * One policy update on the kept groups, masked per envelope: the samples are split by their row's envelope,
   * and each part's gradient is taken only with respect to the parameters of the groups in its envelope (the
   * other parameters are constants of that part's loss). A parameter no part may touch gets no gradient and
   * is left to the optimizer untouched: its bytes and its optimizer state stay as they were.
   * Returns what the ledger records of the step.
   */
  private async update(rollouts: Rollout[], advantages: number[], step: number) {
    const { hp, dp } = this;
    const keep = rollouts.map((r, i) => ({ r, a: advantages[i]! })).filter((x) => x.r.completion.tokens.length > 0);
    const contributions: Record<string, Set<string>> = {};
    const gradients: Record<string, { l2: number; digest: Digest }> = {};
    const before = { ...this.digests };
    const lengths = keep.map((x) => x.r.completion.tokens.length);
    // With several ranks: the step's lengths and envelope parts from every rank, so that the loss weights are
    // those of the whole step and every rank packs the same gradient layout.
    let global: ReturnType<typeof globalShare> | null = null;
    if (dp) {
      const parts: string[][] = [];
      const seen = new Set<string>();
      for (const x of keep) {
        const groups = this.admission.get(x.r.row)!.groups;
        if (!seen.has(groups.join(","))) {
          seen.add(groups.join(","));
          parts.push(groups);
        }
      }
      global = globalShare(await dp.allGatherJson<ShareSummary>({ lengths, parts }), this.rank, this.trainable);
    }
    const globalCount = global ? global.lengths.length : keep.length;
    if (globalCount === 0) return { sequences: 0, tokens: 0, contributions: {}, gradients, before, after: before };
    const weights = global
      ? tokenWeights(global.lengths, hp.loss, hp.maxCompletionTokens).slice(global.offset, global.offset + keep.length)
      : tokenWeights(lengths, hp.loss, hp.maxCompletionTokens);
    const micro = this.o.microBatch ?? 16;
    const padId = this.model.tokenizer?.padId ?? this.model.config.padTokenId ?? 0;
    // Parts by envelope (the groups a row may reach), in a stable order.
    const parts = new Map<string, { groups: string[]; idx: number[] }>();
    keep.forEach((x, i) => {
      const groups = this.admission.get(x.r.row)!.groups;
      const key = groups.join(",");
      const part = parts.get(key) ?? { groups, idx: [] };
      part.idx.push(i);
      parts.set(key, part);
      // Only the groups with trainable tensors take a contribution: under LoRA the frozen base groups, and a group
      // without tensors of its own (lm_head of a model with tied embeddings), receive no gradient (and the verifier
      // asks a gradient of every contributed group).
      for (const g of groups)
        if (this.trainable.get(g)!.length > 0) (contributions[g] ??= new Set()).add(this.admission.get(x.r.row)!.id);
    });
    const touched = Object.keys(contributions);
    // The groups whose weights change: this rank's, or with several ranks every rank's (their tensors are
    // global.names).
    const changed = global
      ? [...this.trainable.keys()].filter((g) => this.trainable.get(g)!.some((n) => global.names.includes(n)))
      : touched;
    // What the ledger records of this rank's gradient (Σ over the updates): its L2 norm and digest per group.
    // With one update per batch they are read from the update's own gradients before the optimizer consumes
    // them; only several updates keep a running sum (a copy of every touched tensor).
    const summarize = (grad: Map<string, tf.Tensor>) => {
      const t = performance.now();
      for (const g of touched) {
        const names = this.trainable.get(g)!;
        const l2 = Math.sqrt(tf.tidy(() => tf.addN(names.map((n) => tf.sum(tf.square(grad.get(n)!)))).dataSync()[0]!));
        gradients[g] = { l2, digest: digestTensors(names, (n) => grad.get(n)!) };
      }
      this.governanceSeconds += (performance.now() - t) / 1000;
    };
    const stepGrad = new Map<string, tf.Tensor>(); // Σ over updates of this rank's gradient (several updates)
    for (let u = 0; u < hp.updatesPerBatch; u++) {
      let grads = new Map<string, tf.Tensor>();
      for (const { groups, idx } of parts.values()) {
        const names = groups.flatMap((g) => this.trainable.get(g)!);
        if (names.length === 0) continue;
        for (let s = 0; s < idx.length; s += micro) {
          const ids = idx.slice(s, s + micro);
          noteWork(
            `training step ${step}, micro-batch ${s / micro + 1}/${Math.ceil(idx.length / micro)} (${ids.length} sequences, --micro-batch ${micro})`,
          );
          const g = this.partGradients(
            ids.map((i) => keep[i]!),
            ids.map((i) => weights[i]!),
            names,
            padId,
            mixSeed(this.o.job.seed, step, u, this.rank, s, names.length),
          );
          g.forEach((t, k) => {
            const prev = grads.get(names[k]!);
            grads.set(names[k]!, prev ? tf.add(prev, t) : t);
            if (prev) tf.dispose([prev, t]);
          });
        }
      }
      if (hp.updatesPerBatch === 1) summarize(grads);
      else
        for (const [n, g] of grads) {
          const prev = stepGrad.get(n);
          stepGrad.set(n, prev ? tf.add(prev, g) : tf.clone(g));
          prev?.dispose();
        }
      if (dp && global) {
        const shapes = new Map(global.names.map((n) => [n, this.model.params.get(n)!.shape]));
        grads = await allReduceGradients(dp, global.names, shapes, grads);
      }
      noteWork(`the optimizer step of step ${step}`);
      this.adam.opts.lr = learningRateAt(step, hp);
      this.adam.step(this.model, grads);
    }
    if (stepGrad.size) summarize(stepGrad);
    tf.dispose([...stepGrad.values()]);
    const tGov = performance.now(); // governance work: weight digests of the changed groups
    Object.assign(this.digests, groupDigests(this.model.params, this.groups, changed, this.digestCache));
    this.governanceSeconds += (performance.now() - tGov) / 1000;
    const c = Object.fromEntries(Object.entries(contributions).map(([g, ids]) => [g, [...ids].sort()]));
    return {
      sequences: keep.length,
      tokens: lengths.reduce((a, b) => a + b, 0),
      contributions: c,
      gradients,
      before,
      after: { ...this.digests },
    };
  }

  /** Gradients of one micro-batch's loss with respect to `names` (the other parameters are constants). */
  private partGradients(
    part: { r: Rollout; a: number }[],
    weights: number[],
    names: string[],
    padId: number,
    dropoutSeed: number,
  ): tf.Tensor[] {
    const { hp } = this;
    const batch = packSequences(
      part.map((x) => ({ prompt: x.r.prompt, completion: x.r.completion.tokens })),
      padId,
    );
    const perRow = (f: (i: number) => number) => Float32Array.from(batch.seqOfRow, (b) => f(b));
    const old = Float32Array.from(part.flatMap((x) => x.r.completion.logprobs));
    return tf.tidy(() => {
      const R = batch.rows.length;
      const oldLogp = tf.tensor2d(old, [R, 1]);
      const mask = tf.ones([R, 1]) as tf.Tensor2D;
      const adv = tf.tensor1d(perRow((b) => part[b]!.a));
      const w = tf.tensor1d(perRow((b) => weights[b]!));
      const refLogp = this.ref
        ? (tf.reshape(completionLogprobs(this.model, this.ref, batch), [R, 1]) as tf.Tensor2D)
        : undefined;
      // LoRA dropout (when set) with masks of this micro-batch's seed; never in sampling or the reference.
      const policy = this.model.lora ? { ...this.model, lora: { ...this.model.lora, dropoutSeed } } : this.model;
      const f = (...ws: tf.Tensor[]) => {
        const params = new Map(this.model.params);
        names.forEach((n, i) => params.set(n, ws[i]!));
        const logp = tf.reshape(completionLogprobs(policy, params, batch), [R, 1]) as tf.Tensor2D;
        return policyLoss(
          { logp, oldLogp, refLogp, mask, advantages: adv, weights: w },
          { clipLow: hp.clipEpsilon.low, clipHigh: hp.clipEpsilon.high, klCoef: hp.klCoef },
        ).loss;
      };
      return tf.grads(f)(names.map((n) => this.model.params.get(n)!));
    });
  }

  private async validate(): Promise<GradedSample[]> {
    const { job } = this.o;
    // With several ranks each validates its share of the rows and all get every sample, in row order.
    const { lo, hi } = this.dp
      ? shardOf(job.valid.length, this.dp.worldSize, this.rank)
      : { lo: 0, hi: job.valid.length };
    // The same seeds at every validation: differences between evaluations come from the weights, not the dice.
    const rolls = await this.rollouts(job.valid.slice(lo, hi), this.hp.evalSamples, (i, j) =>
      mixSeed(job.seed, 0x7a11d, lo + i, j),
    );
    const mine = rolls.map((r) => ({
      response: r.response,
      completionTokens: r.completion.tokens.length,
      truncated: r.completion.finishReason === "length",
    }));
    return this.dp ? (await this.dp.allGatherJson(mine)).flat() : mine;
  }

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
    this.emit({
      level: "info",
      type: "message",
      message: `Checkpoint ${info.name} saved at step ${step}${valid !== null ? ` (valid_reward_mean=${valid.toFixed(3)})` : ""}`,
      data: { step, checkpoint: info.name, valid_reward_mean: valid, train_reward_mean: train },
    });
    this.o.hooks?.onCheckpoint?.(info);
    return info;
  }

  /** The final model: OUT/model, or under LoRA the merged model (with `merge`) else the adapter, OUT/adapter. */
  private finalModelDir(): string {
    const lora = this.o.job.lora;
    return join(this.o.outDir, lora && !lora.spec.merge ? "adapter" : "model");
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
    const { job } = this.o;
    const dp = this.dp;
    const localControl = this.o.control ?? { pause: false, cancel: false };
    let control: RftControl = localControl;
    let step = await this.start();
    const { hp } = this;
    if (this.closed) {
      // Started again after it finished (e.g. a crash between job.finished and exit): the final model is on disk.
      const modelDir = this.finalModelDir();
      this.adam.dispose();
      this.disposeRef();
      disposeModel(this.model);
      const marker = job.lora && !job.lora.spec.merge ? "adapter_config.json" : "config.json";
      if (!existsSync(join(modelDir, marker)))
        throw new Error(`the ledger records that the job finished, but its final model is missing from ${modelDir}`);
      this.emit({
        level: "info",
        type: "message",
        message: "The job had already completed (its ledger ends with job.finished)",
        data: { step: this.closed.steps, model: modelDir },
      });
      const checkpoints = this.store.list();
      return {
        status: "succeeded",
        step: this.closed.steps,
        totalSteps: hp.totalSteps,
        checkpoints,
        best: bestCheckpoint(checkpoints),
        history: this.history,
        modelDir,
      };
    }
    if (step === 0 && job.valid.length > 0) {
      // The baseline: what the starting model scores, so every later validation has a reference point.
      const base = mean((await this.validate()).map((s) => s.response.reward));
      this.history.push({ step: 0, trainRewardMean: null, validRewardMean: base });
      this.emit({
        level: "info",
        type: "message",
        message: `Baseline validation (step 0): valid_reward_mean=${base.toFixed(3)}`,
        data: { step: 0, valid_reward_mean: base },
      });
    }
    const result = (status: RftStatus, extra: Partial<RftResult> = {}): RftResult => {
      const checkpoints = this.store.list();
      return {
        status,
        step,
        totalSteps: hp.totalSteps,
        checkpoints,
        best: bestCheckpoint(checkpoints),
        history: this.history,
        ...extra,
      };
    };
    try {
      while (step < hp.totalSteps) {
        // Rank 0's pause / cancel requests hold for every rank.
        if (dp) control = await dp.broadcastJson(this.rank === 0 ? { ...localControl } : null);
        if (control.cancel) {
          this.emit({ level: "info", type: "message", message: "Job cancelled", data: { step } });
          if (this.reports) this.ledger.finished({ status: "cancelled", steps: step, model: { ...this.digests } });
          return result("cancelled");
        }
        step++;
        const t0 = performance.now();
        const allRows = stepRows(step, this.trainRows.length, hp, job.seed).map((i) => this.trainRows[i]!);
        // This rank's prompts; sampling seeds follow each prompt's index in the whole step.
        const { lo, hi } = dp ? shardOf(allRows.length, dp.worldSize, this.rank) : { lo: 0, hi: allRows.length };
        const rows = allRows.slice(lo, hi);
        const split = { sampling: 0, grading: 0 };
        const rolls = await this.rollouts(
          rows,
          hp.samplesPerPrompt,
          (i, j) => mixSeed(job.seed, step, lo + i, j),
          split,
        );
        const tGraded = performance.now();
        // Group-relative advantages; zero-variance groups carry no signal and are dropped (dynamic sampling).
        const advantages: number[] = [];
        const kept: Rollout[] = [];
        for (let g = 0; g < rows.length; g++) {
          const group = rolls.slice(g * hp.samplesPerPrompt, (g + 1) * hp.samplesPerPrompt);
          const rewards = group.map((r) => r.response.reward);
          if (hp.dynamicSampling && isZeroVariance(rewards)) continue;
          kept.push(...group);
          advantages.push(...groupAdvantages(rewards, hp.loss));
        }
        const trained = await this.update(kept, advantages, step);
        const rewards = rolls.map((r) => r.response.reward);
        const tSign = performance.now();
        const body = {
          step,
          rank: this.rank,
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
        if (dp) await commitStep({ c: dp, ledger: this.ledger, root: this.rootLedger, body, after: trained.after });
        else this.ledger.updateApplied(body);
        if (this.reports) this.ledger.sync(); // the step's events, one fsync
        const tTrained = performance.now();
        this.governanceSeconds += (tTrained - tSign) / 1000;
        const mine: GradedSample[] = rolls.map((r) => ({
          response: r.response,
          completionTokens: r.completion.tokens.length,
          truncated: r.completion.finishReason === "length",
        }));
        // With several ranks: every rank's samples (in prompt order) and counts, for the step's metrics.
        let train = mine;
        let keptSamples = kept.length;
        let trainedTokens = trained.tokens;
        if (dp) {
          const all = await dp.allGatherJson({ train: mine, kept: kept.length, tokens: trained.tokens });
          train = all.flatMap((a) => a.train);
          keptSamples = all.reduce((a, x) => a + x.kept, 0);
          trainedTokens = all.reduce((a, x) => a + x.tokens, 0);
        }
        let valid: GradedSample[] | undefined;
        const evalNow = job.valid.length > 0 && (step % hp.evalInterval === 0 || step === hp.totalSteps);
        if (evalNow) valid = await this.validate();
        const tEval = performance.now();
        const ev = metricsEvent({
          step,
          totalSteps: hp.totalSteps,
          train,
          valid,
          createdAt: now(),
          timing: {
            sampling: split.sampling,
            grading: split.grading,
            training: (tTrained - tGraded) / 1000,
            eval: (tEval - tTrained) / 1000,
            full_iteration: (tEval - t0) / 1000,
          },
        });
        // Included in `training`: hashing the touched groups and signing the step's ledger event.
        (ev.data.timing.step as Record<string, number>).governance = this.governanceSeconds;
        this.governanceSeconds = 0;
        (ev.data as Record<string, unknown>).groups_kept = keptSamples / hp.samplesPerPrompt;
        (ev.data as Record<string, unknown>).trained_tokens = trainedTokens;
        if (dp) (ev.data as Record<string, unknown>).replicas = dp.worldSize;
        if (this.reports) {
          appendOutput(this.eventsFile, `${JSON.stringify(ev)}\n`);
          this.o.hooks?.onStep?.(ev);
        }
        const trainMean = ev.data.scores.train_reward_mean;
        const validMean = valid ? mean(valid.map((s) => s.response.reward)) : null;
        this.history.push({ step, trainRewardMean: trainMean, validRewardMean: validMean });

        const rate = graderErrorRate(train);
        this.errorStreak = rate > (this.o.maxGraderErrorRate ?? 0.5) ? this.errorStreak + 1 : 0;
        if (this.errorStreak >= (this.o.graderErrorPatience ?? 3)) {
          const examples = train
            .filter((s) => s.response.metadata.errors.python_grader_runtime_error_details)
            .slice(0, 3);
          const details = examples
            .map((s) => s.response.metadata.errors.python_grader_runtime_error_details)
            .join("\n---\n");
          const error = `grader errors on ${(rate * 100).toFixed(0)}% of samples for ${this.errorStreak} steps in a row${details ? `; sample tracebacks:\n${details}` : ""}`;
          this.emit({ level: "error", type: "message", message: `Job failed: ${error}`, data: { step } });
          if (this.reports) this.ledger.finished({ status: "failed", steps: step, model: { ...this.digests } });
          return result("failed", { error });
        }
        if (evalNow) await this.checkpointRanked(step, "eval", trainMean, validMean);
        if (control.pause && step < hp.totalSteps) {
          if (!evalNow) await this.checkpointRanked(step, "pause", trainMean, null);
          this.emit({ level: "info", type: "message", message: `Job paused at step ${step}`, data: { step } });
          return result("paused");
        }
        if (this.o.stopAfterStep !== undefined && step >= this.o.stopAfterStep && step < hp.totalSteps) {
          if (!evalNow) await this.checkpointRanked(step, "pause", trainMean, null);
          return result("paused");
        }
        await new Promise((r) => setImmediate(r)); // let signals and progress output through
      }
      const modelDir = this.finalModelDir();
      if (this.reports) {
        if (job.lora)
          await saveLoraOutputs(this.model, this.o.outDir, { baseModel: job.modelDir, merge: job.lora.spec.merge });
        else await saveHfModel(this.model, modelDir);
        this.ledger.finished({ status: "succeeded", steps: step, model: { ...this.digests } });
      }
      await dp?.barrier(); // every rank returns once the final model is on disk
      this.emit({
        level: "info",
        type: "message",
        message: "The job has successfully completed",
        data: { step, model: modelDir },
      });
      return result("succeeded", { modelDir });
    } finally {
      cleanup(() => {
        this.adam.dispose();
        this.disposeRef();
        disposeModel(this.model);
      });
    }
  }
}
