/**
 * LoRA in a job: the spec's `method.<type>.lora` applied to the loaded base model (fresh adapters, or a PEFT
 * adapter directory to start from), and the job's outputs (the PEFT adapter, and on request the merged model).
 */
import { join } from "node:path";
import * as tf from "@tensorflow/tfjs-core";
import type { LoraSpec as LoraSpecJson } from "../../proto/finetunejob.js";
import { saveHfModel } from "../model/hf-io.js";
import {
  addAdapters,
  loadAdapter,
  type LoraSettings,
  mergedParams,
  readAdapterConfig,
  resolveLora,
  saveAdapter,
} from "../model/lora.js";
import type { Model } from "../model/model.js";

/** The job's LoRA settings as the trainer takes them: the spec object, its field path, the resolved adapter path. */
export interface JobLora {
  spec: LoraSpecJson;
  /** `spec.method.supervised.lora` or `spec.method.reinforcement.lora` (errors name it). */
  field: string;
  /** `spec.…lora.adapter` resolved against the manifest's folder. */
  adapter?: string;
}

/**
 * Adds the job's adapters to a freshly loaded base model: the starting adapter's weights when the spec names
 * one (its settings fill in what the spec leaves out; a different rank or target list is refused), else fresh
 * ones seeded by the job's seed. Throws LoraConfigError naming the field for settings the model cannot take.
 */
export async function applyJobLora(model: Model, lora: JobLora, seed: number): Promise<LoraSettings> {
  if (lora.adapter) {
    const cfg = await readAdapterConfig(lora.adapter);
    const s = resolveLora(lora.spec, model.config, lora.field, cfg.settings, `${lora.field}.adapter`);
    return loadAdapter(model, lora.adapter, s);
  }
  const s = resolveLora(lora.spec, model.config, lora.field);
  addAdapters(model, s, seed);
  return s;
}

/** Where a LoRA job's outputs go: OUT/adapter (PEFT) and, with `merge`, OUT/model (base + adapter merged). */
export interface LoraOutputs {
  adapterDir: string;
  mergedDir?: string;
}

export async function saveLoraOutputs(
  model: Model,
  outDir: string,
  o: { baseModel: string; merge?: boolean },
): Promise<LoraOutputs> {
  const adapterDir = join(outDir, "adapter");
  await saveAdapter(model, adapterDir, { baseModel: o.baseModel });
  if (!o.merge) return { adapterDir };
  const mergedDir = join(outDir, "model");
  await saveMerged(model, mergedDir);
  return { adapterDir, mergedDir };
}

/** Writes base + adapter merged (W + (α/r)·A·B, float32) as a Hugging Face model directory. */
export async function saveMerged(model: Model, dir: string): Promise<void> {
  const { params, created } = mergedParams(model);
  try {
    const { lora: _lora, ...rest } = model;
    await saveHfModel({ ...rest, params }, dir);
  } finally {
    tf.dispose(created);
  }
}
