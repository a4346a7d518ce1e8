/**
 * LoRA adapters (Hu et al. 2021) in PEFT's layout: for a target projection y = x·W (W frozen, held [in, out]),
 * y' = y + (α/r)·(dropout(x)·A)·B with A [in, r] and B [r, out] held transposed like every linear weight
 * (PEFT stores lora_A.weight [r, in] and lora_B.weight [out, r]). A starts as PEFT's kaiming-uniform
 * (U(±1/√in)), B as zeros, so a fresh adapter leaves the model's outputs unchanged.
 *
 * The adapters live in `model.params` beside the base weights, named `<module>.lora_A.weight` /
 * `<module>.lora_B.weight` (e.g. `model.layers.0.self_attn.q_proj.lora_A.weight`); `saveHfModel` writes only
 * the base's tensors, so the base files stay as they were. `model.lora` marks the model as adapted: the
 * decoder then treats every base weight as a constant (no gradient is computed for it), adds the adapters'
 * term, and applies dropout only when a training pass passes a dropout seed.
 *
 * On disk: a PEFT adapter directory, `adapter_config.json` + `adapter_model.safetensors` (F32, tensor names
 * `base_model.model.<module>.lora_A.weight`), which `peft.PeftModel.from_pretrained(base, dir)` loads.
 */
import { existsSync } from "node:fs";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import * as tf from "@tensorflow/tfjs-core";
import type { ModelConfig } from "./config.js";
import { fillNormal, mulberry32, type Params } from "./params.js";
import { SafetensorsReader, type TensorToWrite, writeSafetensors } from "./safetensors.js";

/** The projections an adapter may target, by PEFT's module name (every Llama/Qwen2/Mistral decoder has them). */
export const LORA_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"] as const;
export type LoraModule = (typeof LORA_MODULES)[number];

/** Modules of these architectures that PEFT could name but that are not adaptable here (said so when named). */
const NOT_ADAPTABLE = new Set(["lm_head", "embed_tokens", "input_layernorm", "post_attention_layernorm", "norm"]);

export interface LoraSettings {
  rank: number;
  alpha: number;
  dropout: number;
  targetModules: LoraModule[];
}

/** What the decoder needs of an adapted model. */
export interface LoraState {
  settings: LoraSettings;
  /** α / r. */
  scale: number;
  /** Set by a training pass (dropout is applied only then, with masks derived from this seed). */
  dropoutSeed?: number;
}

/** The spec's `lora` object (proto/finetunejob.ts), all fields optional. */
export interface LoraSpec {
  rank?: number;
  alpha?: number;
  dropout?: number;
  targetModules?: string[];
  /** A PEFT adapter directory to start from. */
  adapter?: string;
  /** Also write the merged model (base + adapter) as a Hugging Face directory. */
  merge?: boolean;
}

export const LORA_DEFAULTS = { rank: 8, alpha: 16, dropout: 0 } as const;

/** A LoRA setting that cannot apply to this model; `field` is the spec path (`spec.method.supervised.lora.rank`). */
export class LoraConfigError extends Error {
  override name = "LoraConfigError";
  constructor(
    readonly field: string,
    reason: string,
  ) {
    super(`${field}: ${reason}`);
  }
}

export const loraName = (module: string, part: "A" | "B") => `${module}.lora_${part}.weight`;
const PARENT: Record<LoraModule, "self_attn" | "mlp"> = {
  q_proj: "self_attn",
  k_proj: "self_attn",
  v_proj: "self_attn",
  o_proj: "self_attn",
  gate_proj: "mlp",
  up_proj: "mlp",
  down_proj: "mlp",
};

/** [in, out] of a target projection. */
export function moduleDims(c: ModelConfig, m: LoraModule): [number, number] {
  const D = c.hiddenSize;
  const q = c.numHeads * c.headDim;
  const kv = c.numKvHeads * c.headDim;
  const F = c.intermediateSize;
  const dims: Record<LoraModule, [number, number]> = {
    q_proj: [D, q],
    k_proj: [D, kv],
    v_proj: [D, kv],
    o_proj: [q, D],
    gate_proj: [D, F],
    up_proj: [D, F],
    down_proj: [F, D],
  };
  return dims[m];
}

export interface AdapterSpec {
  /** The adapted projection, e.g. `model.layers.3.mlp.up_proj`. */
  module: string;
  layer: number;
  target: LoraModule;
  /** The governance group of the projection (`layers.3.mlp`). */
  group: string;
  in: number;
  out: number;
}

/** Every adapted projection, in model order (layer, then the order of LORA_MODULES). */
export function adapterSpecs(c: ModelConfig, s: LoraSettings): AdapterSpec[] {
  const out: AdapterSpec[] = [];
  for (let l = 0; l < c.numLayers; l++) {
    for (const m of LORA_MODULES) {
      if (!s.targetModules.includes(m)) continue;
      const [i, o] = moduleDims(c, m);
      const parent = PARENT[m];
      out.push({
        module: `model.layers.${l}.${parent}.${m}`,
        layer: l,
        target: m,
        group: `layers.${l}.${parent === "self_attn" ? "attention" : "mlp"}`,
        in: i,
        out: o,
      });
    }
  }
  return out;
}

/** Names of the adapter tensors of a model (A and B of every adapted projection). */
export function adapterNames(c: ModelConfig, s: LoraSettings): string[] {
  return adapterSpecs(c, s).flatMap((a) => [loraName(a.module, "A"), loraName(a.module, "B")]);
}

/** Governance group → its adapter tensors (groups without adapters are absent). */
export function adapterGroups(c: ModelConfig, s: LoraSettings): Map<string, string[]> {
  const g = new Map<string, string[]>();
  for (const a of adapterSpecs(c, s)) {
    const list = g.get(a.group) ?? [];
    list.push(loraName(a.module, "A"), loraName(a.module, "B"));
    g.set(a.group, list);
  }
  return g;
}

/**
 * The spec's settings resolved against a model (defaults filled in), or a LoraConfigError naming the field:
 * a module the architecture does not have or that is not adaptable, a repeated module, a rank larger than
 * the smallest dimension of a targeted projection (a rank-r product cannot exceed it), a bad alpha/dropout.
 * `base` (an adapter to start from) supplies what the spec leaves out; what it gives must agree.
 */
export function resolveLora(
  spec: LoraSpec,
  c: ModelConfig,
  field: string,
  base?: LoraSettings,
  baseWhere = "the adapter",
): LoraSettings {
  const targets = spec.targetModules ?? base?.targetModules ?? [...LORA_MODULES];
  if (!Array.isArray(targets) || targets.length === 0)
    throw new LoraConfigError(`${field}.targetModules`, "must list at least one module");
  const seen = new Set<string>();
  targets.forEach((m, i) => {
    const f = `${field}.targetModules[${i}]`;
    if (seen.has(m)) throw new LoraConfigError(f, `${JSON.stringify(m)} is listed twice`);
    seen.add(m);
    if (!(LORA_MODULES as readonly string[]).includes(m)) {
      const why = NOT_ADAPTABLE.has(m)
        ? "is not adaptable here (only the attention and MLP projections are)"
        : `is not a module of a ${c.arch} model`;
      throw new LoraConfigError(f, `${JSON.stringify(m)} ${why}; expected one of ${LORA_MODULES.join(", ")}`);
    }
  });
  const rank = spec.rank ?? base?.rank ?? LORA_DEFAULTS.rank;
  if (!Number.isInteger(rank) || rank < 1) throw new LoraConfigError(`${field}.rank`, "must be a positive integer");
  for (const m of targets as LoraModule[]) {
    const [i, o] = moduleDims(c, m);
    if (rank > Math.min(i, o))
      throw new LoraConfigError(
        `${field}.rank`,
        `${rank} is larger than ${m}'s smallest dimension (${i}×${o} in this model): at most ${Math.min(i, o)}`,
      );
  }
  const alpha = spec.alpha ?? base?.alpha ?? (spec.rank !== undefined ? 2 * rank : LORA_DEFAULTS.alpha);
  if (!(Number.isFinite(alpha) && alpha > 0)) throw new LoraConfigError(`${field}.alpha`, "must be a positive number");
  const dropout = spec.dropout ?? base?.dropout ?? LORA_DEFAULTS.dropout;
  if (!(dropout >= 0 && dropout < 1)) throw new LoraConfigError(`${field}.dropout`, "must be in [0, 1)");
  const settings: LoraSettings = { rank, alpha, dropout, targetModules: targets as LoraModule[] };
  if (base) {
    const sameTargets =
      base.targetModules.length === settings.targetModules.length &&
      base.targetModules.every((m) => settings.targetModules.includes(m));
    if (!sameTargets)
      throw new LoraConfigError(
        `${field}.targetModules`,
        `[${settings.targetModules.join(", ")}] differs from ${baseWhere}'s target_modules [${base.targetModules.join(", ")}]`,
      );
    if (base.rank !== rank)
      throw new LoraConfigError(`${field}.rank`, `${rank} differs from ${baseWhere}'s r = ${base.rank}`);
  }
  return settings;
}

/** Adds fresh adapters to a model (A: U(±1/√in), B: zeros; seeded), marking it adapted. */
export function addAdapters(
  model: { config: ModelConfig; params: Params; lora?: LoraState },
  s: LoraSettings,
  seed = 0,
) {
  if (model.lora) throw new Error("the model already has adapters");
  const rand = mulberry32(seed ^ 0x10fa);
  for (const a of adapterSpecs(model.config, s)) {
    const bound = 1 / Math.sqrt(a.in);
    const data = new Float32Array(a.in * s.rank);
    for (let i = 0; i < data.length; i++) data[i] = (2 * rand() - 1) * bound;
    model.params.set(loraName(a.module, "A"), tf.tensor(data, [a.in, s.rank], "float32"));
    model.params.set(loraName(a.module, "B"), tf.zeros([s.rank, a.out], "float32"));
  }
  model.lora = { settings: s, scale: s.alpha / s.rank };
}

/** Random B too (tests: a fresh adapter's B is zero, so it would not show in the outputs). */
export function randomizeAdapters(
  model: { config: ModelConfig; params: Params; lora?: LoraState },
  seed: number,
  std = 0.05,
) {
  const rand = mulberry32(seed);
  for (const a of adapterSpecs(model.config, model.lora!.settings)) {
    const name = loraName(a.module, "B");
    const data = new Float32Array(model.lora!.settings.rank * a.out);
    fillNormal(data, std, rand);
    model.params.get(name)!.dispose();
    model.params.set(name, tf.tensor(data, [model.lora!.settings.rank, a.out], "float32"));
  }
}

/** Removes the adapters from a model (its base weights are untouched). */
export function removeAdapters(model: { config: ModelConfig; params: Params; lora?: LoraState }) {
  if (!model.lora) return;
  for (const n of adapterNames(model.config, model.lora.settings)) {
    model.params.get(n)?.dispose();
    model.params.delete(n);
  }
  delete model.lora;
}

const PEFT_PREFIX = "base_model.model.";

export interface AdapterDirOptions {
  /** `base_model_name_or_path` written into adapter_config.json. */
  baseModel?: string;
}

/** Writes the model's adapters as a PEFT adapter directory. */
export async function saveAdapter(
  model: { config: ModelConfig; params: Params; lora?: LoraState },
  dir: string,
  o: AdapterDirOptions = {},
): Promise<void> {
  const lora = model.lora;
  if (!lora) throw new Error("the model has no adapters to save");
  const s = lora.settings;
  const tensors: TensorToWrite[] = [];
  for (const a of adapterSpecs(model.config, s)) {
    for (const part of ["A", "B"] as const) {
      const t = model.params.get(loraName(a.module, part))!;
      const data = tf.tidy(() => tf.transpose(t).dataSync() as Float32Array);
      tensors.push({
        name: PEFT_PREFIX + loraName(a.module, part),
        shape: part === "A" ? [s.rank, a.in] : [a.out, s.rank],
        data: new Float32Array(data),
      });
    }
  }
  await mkdir(dir, { recursive: true });
  await writeSafetensors(join(dir, "adapter_model.safetensors"), tensors, "F32");
  const config = {
    peft_type: "LORA",
    task_type: "CAUSAL_LM",
    base_model_name_or_path: o.baseModel ?? null,
    r: s.rank,
    lora_alpha: s.alpha,
    lora_dropout: s.dropout,
    target_modules: [...s.targetModules],
    bias: "none",
    fan_in_fan_out: false,
    inference_mode: true,
    init_lora_weights: true,
    use_rslora: false,
    use_dora: false,
    modules_to_save: null,
    layers_to_transform: null,
    layers_pattern: null,
    rank_pattern: {},
    alpha_pattern: {},
    revision: null,
  };
  await writeFile(join(dir, "adapter_config.json"), JSON.stringify(config, null, 2) + "\n");
}

export class AdapterDirError extends Error {
  override name = "AdapterDirError";
}

export function isAdapterDir(dir: string): boolean {
  return existsSync(join(dir, "adapter_config.json"));
}

export interface AdapterConfig {
  settings: LoraSettings;
  baseModel: string | null;
}

/** Reads adapter_config.json; refuses what this runtime does not compute the way PEFT would. */
export async function readAdapterConfig(dir: string): Promise<AdapterConfig> {
  const file = join(dir, "adapter_config.json");
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(await readFile(file, "utf8")) as Record<string, unknown>;
  } catch (e) {
    throw new AdapterDirError(`${file}: ${(e as Error).message}`);
  }
  const bad = (field: string, why: string) => new AdapterDirError(`${file}: ${field}: ${why}`);
  if (raw.peft_type !== "LORA") throw bad("peft_type", `${JSON.stringify(raw.peft_type)} is not supported (LORA only)`);
  for (const [k, ok] of [
    ["use_dora", (v: unknown) => !v],
    ["use_rslora", (v: unknown) => !v],
    ["fan_in_fan_out", (v: unknown) => !v],
    ["bias", (v: unknown) => v === undefined || v === "none"],
    ["modules_to_save", (v: unknown) => v === undefined || v === null || (Array.isArray(v) && v.length === 0)],
    ["layers_to_transform", (v: unknown) => v === undefined || v === null],
    ["rank_pattern", (v: unknown) => v === undefined || v === null || Object.keys(v as object).length === 0],
    ["alpha_pattern", (v: unknown) => v === undefined || v === null || Object.keys(v as object).length === 0],
  ] as const) {
    if (!ok(raw[k])) throw bad(k, `${JSON.stringify(raw[k])} is not supported`);
  }
  const r = raw.r;
  if (!Number.isInteger(r) || (r as number) < 1) throw bad("r", "must be a positive integer");
  const alpha = raw.lora_alpha ?? 8;
  if (typeof alpha !== "number" || !(alpha > 0)) throw bad("lora_alpha", "must be a positive number");
  const dropout = raw.lora_dropout ?? 0;
  if (typeof dropout !== "number" || !(dropout >= 0 && dropout < 1)) throw bad("lora_dropout", "must be in [0, 1)");
  let targets = raw.target_modules;
  if (typeof targets === "string") targets = [targets];
  if (!Array.isArray(targets) || targets.some((t) => typeof t !== "string"))
    throw bad("target_modules", "must be a list of module names");
  const unknown = (targets as string[]).filter((t) => !(LORA_MODULES as readonly string[]).includes(t));
  if (unknown.length) throw bad("target_modules", `${unknown.join(", ")}: not adaptable here`);
  return {
    settings: { rank: r as number, alpha, dropout, targetModules: targets as LoraModule[] },
    baseModel: typeof raw.base_model_name_or_path === "string" ? raw.base_model_name_or_path : null,
  };
}

/**
 * Loads a PEFT adapter directory into a model (replacing adapters it has, or adding them). Every tensor the
 * settings imply must be present with its shape; a tensor they do not imply is refused (it would be ignored).
 */
export async function loadAdapter(
  model: { config: ModelConfig; params: Params; lora?: LoraState },
  dir: string,
  settings?: LoraSettings,
): Promise<LoraSettings> {
  const cfg = await readAdapterConfig(dir);
  const s = settings ?? cfg.settings;
  const file = join(dir, "adapter_model.safetensors");
  if (!existsSync(file)) throw new AdapterDirError(`${file}: missing (PyTorch .bin adapters are not read)`);
  const r = await SafetensorsReader.open(file);
  const loaded = new Map<string, tf.Tensor>();
  try {
    const specs = adapterSpecs(model.config, s);
    const want = new Set<string>();
    for (const a of specs) {
      for (const part of ["A", "B"] as const) {
        // PEFT writes `…lora_A.weight`; older versions and some tools keep the adapter name (`lora_A.default.weight`).
        const names = [PEFT_PREFIX + loraName(a.module, part), `${PEFT_PREFIX}${a.module}.lora_${part}.default.weight`];
        const name = names.find((n) => r.header.entries.has(n));
        if (!name) throw new AdapterDirError(`${file}: missing tensor ${names[0]}`);
        want.add(name);
        const { data, shape } = await r.readF32(name);
        const hf = part === "A" ? [s.rank, a.in] : [a.out, s.rank];
        if (shape.length !== 2 || shape[0] !== hf[0] || shape[1] !== hf[1])
          throw new AdapterDirError(`${file}: tensor ${name} has shape [${shape}], the model implies [${hf}]`);
        loaded.set(
          loraName(a.module, part),
          tf.tidy(() => tf.transpose(tf.tensor(data, shape, "float32"))),
        );
      }
    }
    const extra = r.names().filter((n) => !want.has(n));
    if (extra.length)
      throw new AdapterDirError(
        `${file}: tensors this adapter config does not use: ${extra.slice(0, 3).join(", ")}${extra.length > 3 ? ` (+${extra.length - 3})` : ""}`,
      );
  } catch (e) {
    tf.dispose([...loaded.values()]);
    throw e;
  } finally {
    await r.close();
  }
  removeAdapters(model);
  for (const [n, t] of loaded) model.params.set(n, t);
  model.lora = { settings: s, scale: s.alpha / s.rank };
  return s;
}

/**
 * The merged weights: W' = W + (α/r)·A·B for every adapted projection (float32), the other base tensors
 * as they are (shared, not copied). The result has no adapters.
 */
export function mergedParams(model: { config: ModelConfig; params: Params; lora?: LoraState }): {
  params: Params;
  created: tf.Tensor[];
} {
  const lora = model.lora;
  if (!lora) throw new Error("the model has no adapters to merge");
  const params: Params = new Map();
  const adapters = new Set(adapterNames(model.config, lora.settings));
  for (const [n, t] of model.params) if (!adapters.has(n)) params.set(n, t);
  const created: tf.Tensor[] = [];
  for (const a of adapterSpecs(model.config, lora.settings)) {
    const w = `${a.module}.weight`;
    const m = tf.tidy(() =>
      tf.add(
        model.params.get(w)!,
        tf.mul(
          tf.matMul(model.params.get(loraName(a.module, "A"))!, model.params.get(loraName(a.module, "B"))!),
          lora.scale,
        ),
      ),
    );
    params.set(w, m);
    created.push(m);
  }
  return { params, created };
}
