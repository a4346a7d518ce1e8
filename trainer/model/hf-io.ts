/**
 * Loading and saving Hugging Face model directories: config.json, model.safetensors (or a sharded
 * model.safetensors.index.json), tokenizer.json and tokenizer_config.json (with its chat template).
 */
import { existsSync } from "node:fs";
import { mkdir, readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import * as tf from "@tensorflow/tfjs-core";
import { generationConfig, parseHfConfig, toHfConfig } from "./config.js";
import { createModel, type Model } from "./model.js";
import { internalShape, type Params, paramSpecs } from "./params.js";
import { SafetensorsReader, type StDtype, type TensorToWrite, writeSafetensors } from "./safetensors.js";
import type { TokenizerFiles } from "./tokenizer.js";

export class ModelDirError extends Error {
  override name = "ModelDirError";
}

/** Tensors that checkpoints may carry but the model recomputes. */
const IGNORED = /(^|\.)rotary_emb\.inv_freq$/;

async function readJson(file: string, required: boolean): Promise<Record<string, unknown> | null> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (e) {
    if ((e as { code?: string }).code === "ENOENT" && !required) return null;
    if ((e as { code?: string }).code === "ENOENT") throw new ModelDirError(`${file}: missing`);
    throw new ModelDirError(`${file}: cannot read: ${(e as Error).message}`);
  }
  try {
    const v = JSON.parse(text);
    if (v === null || typeof v !== "object" || Array.isArray(v)) throw new Error("not a JSON object");
    return v as Record<string, unknown>;
  } catch (e) {
    throw new ModelDirError(`${file}: invalid JSON (${(e as Error).message})`);
  }
}

/** Which safetensors file holds which tensor. */
async function weightMap(dir: string): Promise<Map<string, string>> {
  const single = join(dir, "model.safetensors");
  const index = join(dir, "model.safetensors.index.json");
  if (existsSync(index)) {
    const idx = await readJson(index, true);
    const wm = idx?.["weight_map"];
    if (!wm || typeof wm !== "object") throw new ModelDirError(`${index}: no "weight_map" object`);
    const out = new Map<string, string>();
    for (const [name, file] of Object.entries(wm as Record<string, unknown>)) {
      if (typeof file !== "string" || file.includes("/") || file.includes("\\")) {
        throw new ModelDirError(`${index}: weight_map["${name}"] must be a file name in the directory`);
      }
      out.set(name, join(dir, file));
    }
    return out;
  }
  if (existsSync(single)) {
    const r = await SafetensorsReader.open(single);
    await r.close();
    return new Map(r.names().map((n) => [n, single]));
  }
  const files = await readdir(dir).catch(() => [] as string[]);
  const hint = files.some((f) => f.endsWith(".bin") || f.endsWith(".pt"))
    ? " (PyTorch pickle weights are not read: convert them to safetensors)"
    : "";
  throw new ModelDirError(`${dir}: no model.safetensors or model.safetensors.index.json${hint}`);
}

export interface LoadOptions {
  /** Load tokenizer.json / tokenizer_config.json (default true; a directory without them loads without one). */
  tokenizer?: boolean;
}

export interface LoadedModel extends Model {
  /** dtype of the weights on disk (the first tensor's). */
  diskDtype: StDtype;
}

export async function loadHfModel(dir: string, opts: LoadOptions = {}): Promise<LoadedModel> {
  if (!existsSync(dir)) throw new ModelDirError(`${dir}: no such directory`);
  const cfgFile = join(dir, "config.json");
  const raw = await readJson(cfgFile, true);
  const config = parseHfConfig(raw!, cfgFile);
  const map = await weightMap(dir);
  const specs = paramSpecs(config);
  const expected = new Set(specs.map((s) => s.name));
  const unknown = [...map.keys()].filter(
    (n) => !expected.has(n) && !IGNORED.test(n) && !(config.tieWordEmbeddings && n === "lm_head.weight"),
  );
  if (unknown.length) {
    throw new ModelDirError(
      `${dir}: tensors this ${config.arch} config does not use: ${unknown.slice(0, 5).join(", ")}${unknown.length > 5 ? ` (+${unknown.length - 5} more)` : ""}`,
    );
  }
  const missing = specs.filter((s) => !map.has(s.name)).map((s) => s.name);
  if (missing.length) {
    throw new ModelDirError(
      `${dir}: missing tensors: ${missing.slice(0, 5).join(", ")}${missing.length > 5 ? ` (+${missing.length - 5} more)` : ""}`,
    );
  }
  const readers = new Map<string, SafetensorsReader>();
  const params: Params = new Map();
  let diskDtype: StDtype = "F32";
  try {
    for (const s of specs) {
      const file = map.get(s.name)!;
      let r = readers.get(file);
      if (!r) {
        if (!existsSync(file)) throw new ModelDirError(`${file}: missing (named in model.safetensors.index.json)`);
        r = await SafetensorsReader.open(file);
        readers.set(file, r);
      }
      const { data, shape, dtype } = await r.readF32(s.name);
      if (params.size === 0) diskDtype = dtype;
      if (shape.length !== s.hfShape.length || shape.some((d, i) => d !== s.hfShape[i])) {
        throw new ModelDirError(`${file}: tensor "${s.name}" has shape [${shape}], config.json implies [${s.hfShape}]`);
      }
      params.set(
        s.name,
        s.transposed
          ? tf.tidy(() => tf.transpose(tf.tensor(data, shape, "float32")))
          : tf.tensor(data, shape, "float32"),
      );
    }
  } catch (e) {
    for (const t of params.values()) t.dispose();
    throw e;
  } finally {
    for (const r of readers.values()) await r.close();
  }
  let tokenizerFiles: TokenizerFiles | null = null;
  if (opts.tokenizer !== false) {
    const tj = await readJson(join(dir, "tokenizer.json"), false);
    const tc = await readJson(join(dir, "tokenizer_config.json"), false);
    // transformers 5 writes the chat template beside tokenizer_config.json, as chat_template.jinja.
    const jinja = join(dir, "chat_template.jinja");
    const config = { ...(tc ?? {}) };
    if (config["chat_template"] === undefined && existsSync(jinja)) {
      config["chat_template"] = await readFile(jinja, "utf8");
    }
    if (tj) tokenizerFiles = { tokenizerJson: tj, tokenizerConfig: config };
  }
  const model = createModel(config, params, tokenizerFiles);
  return { ...model, diskDtype };
}

export interface SaveOptions {
  /** dtype to write (default F32). BF16/F16 round to nearest even. */
  dtype?: "F32" | "BF16" | "F16";
}

const TORCH_DTYPE: Record<string, string> = { F32: "float32", BF16: "bfloat16", F16: "float16" };

/** Weights in HF layout (linear weights transposed back to [out, in]), in spec order. */
export async function exportTensors(model: Model): Promise<TensorToWrite[]> {
  const out: TensorToWrite[] = [];
  for (const s of paramSpecs(model.config)) {
    const t = model.params.get(s.name);
    if (!t) throw new ModelDirError(`model has no parameter ${s.name}`);
    const shape = internalShape(s);
    if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
      throw new ModelDirError(`parameter ${s.name} has shape [${t.shape}], want [${shape}]`);
    }
    const hf = s.transposed ? tf.tidy(() => tf.transpose(t)) : t;
    const data = (await hf.data()) as Float32Array;
    if (hf !== t) hf.dispose();
    out.push({ name: s.name, shape: s.hfShape, data: new Float32Array(data) });
  }
  return out;
}

export async function saveHfModel(model: Model, dir: string, opts: SaveOptions = {}): Promise<void> {
  const dtype = opts.dtype ?? "F32";
  await mkdir(dir, { recursive: true });
  await writeSafetensors(join(dir, "model.safetensors"), await exportTensors(model), dtype);
  await writeFile(
    join(dir, "config.json"),
    JSON.stringify(toHfConfig(model.config, TORCH_DTYPE[dtype]!), null, 2) + "\n",
  );
  await writeFile(join(dir, "generation_config.json"), JSON.stringify(generationConfig(model.config), null, 2) + "\n");
  if (model.tokenizer) {
    await writeFile(join(dir, "tokenizer.json"), JSON.stringify(model.tokenizer.files.tokenizerJson) + "\n");
    await writeFile(
      join(dir, "tokenizer_config.json"),
      JSON.stringify(model.tokenizer.files.tokenizerConfig, null, 2) + "\n",
    );
  }
}
