/**
 * Runs a FineTuneJob manifest on this machine: validates the datasets, then SFT or RFT into an output
 * directory (`events.jsonl`, `checkpoints/`, `model/`). Shared by `rft run` and the trainer pod entry point.
 */
import { appendFileSync, mkdirSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { type BackendChoice, useBackend } from "../model/backend.js";
import { backendFailure, cleanup, noteWork } from "../model/backend-failure.js";
import { saveHfModel } from "../model/hf-io.js";
import { loadHfModel } from "../model/hf-io.js";
import { disposeModel } from "../model/model.js";
import { LIMITS, readRftDataset, readSftDataset } from "../data/dataset.js";
import { grpcGrader, inProcessGrader } from "../rl/grading.js";
import { endpointFromEnv, judgeEndpoints } from "../../grader-sidecar/src/client.js";
import { type RftControl, type RftHooks, type RftResult, RftTrainer } from "../rl/loop.js";
import { runSft, type SftStepEvent, toSftExample } from "../sft/sft.js";
import { parseResponseFormat } from "../sampling/response-format.js";
import { resolveSft } from "../settings/hyperparameters.js";
import { applyJobLora, type JobLora, saveLoraOutputs } from "../settings/lora.js";
import type { EventSink } from "../../ledger/client.js";
import type { LoadedManifest } from "./manifest.js";
import { Collective } from "../collective/collective.js";
import type { RankEnv } from "../collective/env.js";

export interface RunJobOptions {
  manifest: LoadedManifest;
  outDir: string;
  /** Default: spec.trainer.backend, else "auto" (tensorflow when it loads, else wasm with a notice). */
  backend?: BackendChoice;
  /** Grade through a grader sidecar at host:port instead of in process. */
  graderAddr?: string;
  control?: RftControl;
  hooks?: RftHooks & { onSftStep?: (e: SftStepEvent, totalSteps: number) => void };
  stopAfterStep?: number;
  microBatch?: number;
  /** Activation checkpointing: each layer keeps only its inputs for the backward pass and recomputes the rest. */
  activationCheckpointing?: boolean;
  /** Where ledger events go (default: OUT/ledger/events.jsonl); pods pass a NATS JetStream publisher. */
  ledgerSink?: EventSink;
  /** The job reference in the ledger (default: "<namespace or local>/<name>"). */
  jobRef?: string;
  /** Data parallelism: this process is one rank of several (trainer/collective/env.ts reads it from
   * RFT_RANK / RFT_WORLD_SIZE / RFT_PEERS). Every rank gets the same manifest and output directory. */
  ranks?: RankEnv | null;
}

export interface SftRunResult {
  status: "succeeded";
  method: "supervised";
  steps: SftStepEvent[];
  totalSteps: number;
  /** The trained model: the merged model with LoRA `merge`, the PEFT adapter with LoRA alone. */
  modelDir: string;
  /** LoRA: the PEFT adapter directory. */
  adapterDir?: string;
}

/** The job's LoRA settings (null: a full fine-tune). */
export function jobLora(o: Pick<RunJobOptions, "manifest">): JobLora | null {
  const { job, paths } = o.manifest;
  const type = job.spec.method.type;
  const spec = job.spec.method[type]?.lora;
  if (!spec) return null;
  return {
    spec,
    field: `spec.method.${type}.lora`,
    ...(paths.loraAdapter ? { adapter: paths.loraAdapter } : {}),
  };
}

export type RunJobResult = (RftResult & { method: "reinforcement" }) | SftRunResult;

/**
 * Runs the job. A fatal backend failure (the wasm backend out of memory) is thrown as a BackendMemoryError
 * naming the first failure and the work in progress, whatever later symptom reached the top.
 */
export async function runJob(o: RunJobOptions): Promise<RunJobResult> {
  try {
    return await runJobOnce(o);
  } catch (e) {
    throw backendFailure(e) ?? e;
  }
}

async function runJobOnce(o: RunJobOptions): Promise<RunJobResult> {
  const { job, paths } = o.manifest;
  const spec = job.spec;
  if (o.microBatch !== undefined && !(Number.isInteger(o.microBatch) && o.microBatch >= 1))
    throw new RangeError(`micro-batch: want a positive integer, got ${o.microBatch}`);
  await useBackend(o.backend ?? spec.trainer?.backend ?? "auto");
  noteWork(`loading the model ${paths.model}`);
  mkdirSync(o.outDir, { recursive: true });
  if (o.ranks && o.ranks.worldSize > 1 && spec.method.type !== "reinforcement")
    throw new Error(`replicas > 1 (world size ${o.ranks.worldSize}) is supported for reinforcement jobs only`);
  return spec.method.type === "supervised" ? runSupervised(o) : runReinforcement(o);
}

/** An SFT step's metrics event (events.jsonl): the training loss, and the validation loss when measured. */
function sftStepEvent(e: { step: number; trainLoss: number; validLoss?: number }, totalSteps: number) {
  return {
    object: "fine_tuning.job.event",
    id: `ftevent-step-${e.step}`,
    created_at: Math.floor(Date.now() / 1000),
    level: "info",
    type: "metrics",
    message: `Step ${e.step}/${totalSteps}: training loss=${e.trainLoss.toFixed(4)}${e.validLoss !== undefined ? `, validation loss=${e.validLoss.toFixed(4)}` : ""}`,
    data: {
      step: e.step,
      total_steps: totalSteps,
      train_loss: e.trainLoss,
      ...(e.validLoss !== undefined ? { valid_loss: e.validLoss } : {}),
    },
  };
}

async function runSupervised(o: RunJobOptions): Promise<RunJobResult> {
  const { job, paths } = o.manifest;
  const spec = job.spec;
  const seed = spec.seed ?? 0;
  const train = readSftDataset(paths.trainingFile, { maxRows: LIMITS.sftTrain });
  const valid = paths.validationFile ? readSftDataset(paths.validationFile, { maxRows: LIMITS.sftValid }) : [];
  const hp = resolveSft(spec.method.supervised?.hyperparameters, train.length);
  const model = await loadHfModel(paths.model);
  if (o.activationCheckpointing) model.checkpoint = true;
  const lora = jobLora(o);
  const eventsFile = join(o.outDir, "events.jsonl");
  try {
    if (lora) await applyJobLora(model, lora, seed);
    writeFileSync(eventsFile, "");
    const res = await runSft(model, {
      train: train.map((r) => toSftExample(r, paths.trainingFile)),
      validation: valid.map((r) => toSftExample(r, paths.validationFile)),
      nEpochs: hp.nEpochs,
      batchSize: hp.batchSize,
      learningRate: hp.learningRate,
      evalInterval: hp.evalInterval,
      seed,
      onStep: (e) => {
        appendFileSync(eventsFile, `${JSON.stringify(sftStepEvent(e, hp.totalSteps))}\n`);
        o.hooks?.onSftStep?.(e, hp.totalSteps);
      },
    });
    const done = { status: "succeeded", method: "supervised", steps: res.steps, totalSteps: hp.totalSteps } as const;
    if (lora) {
      const out = await saveLoraOutputs(model, o.outDir, { baseModel: paths.model, merge: lora.spec.merge });
      return { ...done, modelDir: out.mergedDir ?? out.adapterDir, adapterDir: out.adapterDir };
    }
    const modelDir = join(o.outDir, "model");
    await saveHfModel(model, modelDir);
    return { ...done, modelDir };
  } finally {
    cleanup(() => disposeModel(model));
  }
}

async function runReinforcement(o: RunJobOptions): Promise<RunJobResult> {
  const { job, paths } = o.manifest;
  const spec = job.spec;
  const seed = spec.seed ?? 0;
  const rft = spec.method.reinforcement!;
  const train = readRftDataset(paths.trainingFile, { maxRows: LIMITS.rftTrain });
  const valid = paths.validationFile ? readRftDataset(paths.validationFile, { maxRows: LIMITS.rftValid }) : [];
  // In process, model graders reach the judges of spec.graderEndpoints (keys from env or files), else the one
  // of RFT_GRADER_BASE_URL; through a sidecar, the sidecar has them (the operator passes them to it).
  const grader = o.graderAddr
    ? await grpcGrader(o.graderAddr, rft.grader)
    : await inProcessGrader(rft.grader, {
        models: judgeEndpoints({
          specs: spec.graderEndpoints,
          baseDir: dirname(resolve(o.manifest.file)),
          where: `${o.manifest.file}: spec.graderEndpoints`,
          fallback: endpointFromEnv("RFT_GRADER"),
        }),
      });
  const jobRef = o.jobRef ?? `${job.metadata.namespace ?? "local"}/${job.metadata.name}`;
  let collective: Collective | undefined;
  try {
    if (o.ranks && o.ranks.worldSize > 1) collective = await Collective.connect({ job: jobRef, ...o.ranks });
    const trainer = new RftTrainer({
      job: {
        modelDir: paths.model,
        train,
        valid,
        hyperparameters: rft.hyperparameters,
        seed,
        jsonRequired: Boolean(rft.responseFormat && rft.responseFormat.type !== "text"),
        responseFormat: parseResponseFormat(rft.responseFormat, "spec.method.reinforcement.responseFormat"),
        lora: jobLora(o),
        ledger: {
          spec,
          job: jobRef,
          baseDir: dirname(resolve(o.manifest.file)),
          ...(o.ledgerSink ? { sink: o.ledgerSink } : {}),
        },
      },
      grader,
      outDir: o.outDir,
      control: o.control,
      hooks: o.hooks,
      stopAfterStep: o.stopAfterStep,
      microBatch: o.microBatch,
      activationCheckpointing: o.activationCheckpointing,
      collective,
    });
    return { ...(await trainer.run()), method: "reinforcement" };
  } finally {
    await collective?.close();
    await grader.close();
  }
}
