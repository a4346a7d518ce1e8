/**
 * Resolves `auto` and omitted hyperparameters to numbers, from the dataset sizes. Pure; the rules are the
 * documented contract (README, "Hyperparameters"), so a job's effective settings are predictable.
 */
import type { LossType, ReinforcementHyperparameters, SupervisedHyperparameters } from "../../proto/finetunejob.js";

/** Base learning rates; the job's learningRateMultiplier scales them. */
export const BASE_LEARNING_RATE = { supervised: 1e-3, reinforcement: 1e-4 } as const;

export interface ResolvedRft {
  nEpochs: number;
  batchSize: number; // prompts per step
  learningRate: number;
  learningRateMultiplier: number;
  evalInterval: number;
  evalSamples: number;
  computeMultiplier: number;
  reasoningEffort: "default" | "low" | "medium" | "high";
  samplesPerPrompt: number;
  maxCompletionTokens: number;
  temperature: number;
  topP: number;
  loss: LossType;
  clipEpsilon: { low: number; high: number };
  klCoef: number;
  updatesPerBatch: number;
  dynamicSampling: boolean;
  warmupSteps: number;
  stepsPerEpoch: number;
  totalSteps: number;
}

export interface ResolvedSft {
  nEpochs: number;
  batchSize: number;
  learningRate: number;
  learningRateMultiplier: number;
  evalInterval: number;
  stepsPerEpoch: number;
  totalSteps: number;
}

const clamp = (x: number, lo: number, hi: number) => Math.min(hi, Math.max(lo, x));
const pick = <V>(v: V | "auto" | undefined, auto: V): V => (v === undefined || v === "auto" ? auto : v);

const COMPLETION_TOKENS = { default: 256, low: 128, medium: 256, high: 512 } as const;

export function resolveRft(h: ReinforcementHyperparameters = {}, nTrain: number): ResolvedRft {
  const batchSize = Math.min(nTrain, pick(h.batchSize, clamp(Math.ceil(nTrain / 50), 4, 64)));
  const stepsPerEpoch = Math.ceil(nTrain / batchSize);
  // auto epochs: enough passes for about 100 steps, at most 10 epochs.
  const nEpochs = pick(h.nEpochs, clamp(Math.ceil(100 / stepsPerEpoch), 1, 10));
  const totalSteps = stepsPerEpoch * nEpochs;
  const computeMultiplier = pick(h.computeMultiplier, 1);
  const reasoningEffort = h.reasoningEffort ?? "default";
  const loss = h.loss ?? "dapo";
  const learningRateMultiplier = pick(h.learningRateMultiplier, 1);
  return {
    nEpochs,
    batchSize,
    learningRateMultiplier,
    learningRate: BASE_LEARNING_RATE.reinforcement * learningRateMultiplier,
    evalInterval: pick(h.evalInterval, Math.max(1, Math.round(totalSteps / 10))),
    evalSamples: pick(h.evalSamples, 2),
    computeMultiplier,
    reasoningEffort,
    samplesPerPrompt: h.samplesPerPrompt ?? clamp(Math.round(4 * computeMultiplier), 2, 256),
    maxCompletionTokens: h.maxCompletionTokens ?? COMPLETION_TOKENS[reasoningEffort],
    temperature: h.temperature ?? 1,
    topP: h.topP ?? 1,
    loss,
    clipEpsilon: h.clipEpsilon ?? (loss === "dapo" ? { low: 0.2, high: 0.28 } : { low: 0.2, high: 0.2 }),
    klCoef: h.klCoef ?? 0,
    updatesPerBatch: h.updatesPerBatch ?? 1,
    dynamicSampling: h.dynamicSampling ?? loss === "dapo",
    warmupSteps: h.warmupSteps ?? Math.min(10, Math.ceil(0.05 * totalSteps)),
    stepsPerEpoch,
    totalSteps,
  };
}

export function resolveSft(h: SupervisedHyperparameters = {}, nTrain: number): ResolvedSft {
  const batchSize = Math.min(nTrain, pick(h.batchSize, clamp(Math.ceil(nTrain / 100), 4, 32)));
  const stepsPerEpoch = Math.ceil(nTrain / batchSize);
  const nEpochs = pick(h.nEpochs, 3);
  const totalSteps = stepsPerEpoch * nEpochs;
  const learningRateMultiplier = pick(h.learningRateMultiplier, 1);
  return {
    nEpochs,
    batchSize,
    learningRateMultiplier,
    learningRate: BASE_LEARNING_RATE.supervised * learningRateMultiplier,
    evalInterval: pick(h.evalInterval, Math.max(1, Math.round(totalSteps / 10))),
    stepsPerEpoch,
    totalSteps,
  };
}
