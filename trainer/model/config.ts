/**
 * Model configuration: parsing a Hugging Face `config.json` (Llama / Qwen2 / Mistral-style decoders) into the
 * one shape the decoder understands, and writing it back. Pure functions; every unsupported field is named.
 */

export type Arch = "llama" | "qwen2" | "mistral";

export type RopeScaling =
  | { type: "none" }
  | { type: "linear"; factor: number }
  | {
      type: "llama3";
      factor: number;
      lowFreqFactor: number;
      highFreqFactor: number;
      originalMaxPositionEmbeddings: number;
    };

export interface ModelConfig {
  arch: Arch;
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  rmsNormEps: number;
  ropeTheta: number;
  ropeScaling: RopeScaling;
  /** Longest context the decoder accepts (max_position_embeddings, capped by a sliding window if any). */
  maxContext: number;
  tieWordEmbeddings: boolean;
  /** Bias on q/k/v projections (Qwen2 always; Llama when attention_bias). */
  qkvBias: boolean;
  /** Bias on the output projection (Llama attention_bias only). */
  oBias: boolean;
  bosTokenId: number | null;
  eosTokenIds: number[];
  padTokenId: number | null;
  /** dtype named in the source config (informative: weights are held as float32). */
  sourceDtype: string;
  /** The original config.json, kept so that saving writes back every field we did not interpret. */
  raw: Record<string, unknown>;
}

export class ConfigError extends Error {
  override name = "ConfigError";
}

const ARCH_BY_MODEL_TYPE: Record<string, Arch> = { llama: "llama", qwen2: "qwen2", mistral: "mistral" };
const ARCHITECTURE_CLASS: Record<Arch, string> = {
  llama: "LlamaForCausalLM",
  qwen2: "Qwen2ForCausalLM",
  mistral: "MistralForCausalLM",
};

function num(raw: Record<string, unknown>, key: string, where: string, fallback?: number): number {
  const v = raw[key];
  if (v === undefined || v === null) {
    if (fallback !== undefined) return fallback;
    throw new ConfigError(`${where}: required field "${key}" is missing`);
  }
  if (typeof v !== "number" || !Number.isFinite(v)) throw new ConfigError(`${where}: "${key}" must be a number`);
  return v;
}

function posInt(raw: Record<string, unknown>, key: string, where: string, fallback?: number): number {
  const v = num(raw, key, where, fallback);
  if (!Number.isInteger(v) || v <= 0) throw new ConfigError(`${where}: "${key}" must be a positive integer, got ${v}`);
  return v;
}

function parseRopeScaling(raw: Record<string, unknown>, where: string): { theta: number; scaling: RopeScaling } {
  // transformers ≥ 5 writes `rope_parameters: {rope_type, rope_theta, ...}`; older configs `rope_theta` + `rope_scaling`.
  const params = (raw["rope_parameters"] ?? raw["rope_scaling"] ?? null) as Record<string, unknown> | null;
  let theta = num(raw, "rope_theta", where, 10000);
  if (params && typeof params === "object" && typeof params["rope_theta"] === "number") theta = params["rope_theta"];
  if (params === null) return { theta, scaling: { type: "none" } };
  if (typeof params !== "object") throw new ConfigError(`${where}: "rope_scaling" must be an object or null`);
  const type = String(params["rope_type"] ?? params["type"] ?? "default");
  const field = raw["rope_parameters"] !== undefined ? "rope_parameters" : "rope_scaling";
  if (type === "default") return { theta, scaling: { type: "none" } };
  const factor = Number(params["factor"]);
  if (!(factor > 0)) throw new ConfigError(`${where}: "${field}.factor" must be a positive number`);
  if (type === "linear") return { theta, scaling: { type: "linear", factor } };
  if (type === "llama3") {
    return {
      theta,
      scaling: {
        type: "llama3",
        factor,
        lowFreqFactor: Number(params["low_freq_factor"] ?? 1),
        highFreqFactor: Number(params["high_freq_factor"] ?? 4),
        originalMaxPositionEmbeddings: Number(params["original_max_position_embeddings"] ?? 8192),
      },
    };
  }
  throw new ConfigError(
    `${where}: unsupported "${field}" type "${type}" (supported: default, linear, llama3; not dynamic, yarn, longrope)`,
  );
}

/** The architecture of a config's model_type, once the fields this decoder cannot run are ruled out. */
function supportedArch(raw: Record<string, unknown>, where: string): Arch {
  if (raw === null || typeof raw !== "object" || Array.isArray(raw))
    throw new ConfigError(`${where}: not a JSON object`);
  const modelType = raw["model_type"];
  if (typeof modelType !== "string") throw new ConfigError(`${where}: required field "model_type" is missing`);
  const arch = ARCH_BY_MODEL_TYPE[modelType];
  if (!arch) {
    throw new ConfigError(`${where}: unsupported model_type "${modelType}" (supported: llama, qwen2, mistral)`);
  }
  const unsupported: string[] = [];
  const act = raw["hidden_act"] ?? "silu";
  if (act !== "silu") unsupported.push(`hidden_act="${String(act)}" (only silu)`);
  if (raw["mlp_bias"] === true) unsupported.push("mlp_bias=true");
  if (raw["quantization_config"] !== undefined) unsupported.push("quantization_config (quantized weights)");
  // pretraining_tp ≠ 1 is numerically the same model (transformers only slices the matmuls differently): accepted.
  if (unsupported.length) throw new ConfigError(`${where}: unsupported fields: ${unsupported.join(", ")}`);
  return arch;
}

/** Heads, KV heads and the head dimension, checked against each other. */
function attentionShape(raw: Record<string, unknown>, where: string, hiddenSize: number) {
  const numHeads = posInt(raw, "num_attention_heads", where);
  const numKvHeads = posInt(raw, "num_key_value_heads", where, numHeads);
  if (numHeads % numKvHeads !== 0) {
    throw new ConfigError(
      `${where}: num_attention_heads (${numHeads}) must be a multiple of num_key_value_heads (${numKvHeads})`,
    );
  }
  const headDim = raw["head_dim"] == null ? hiddenSize / numHeads : posInt(raw, "head_dim", where);
  if (!Number.isInteger(headDim) || headDim % 2 !== 0)
    throw new ConfigError(`${where}: head_dim must be an even integer, got ${headDim}`);
  return { numHeads, numKvHeads, headDim };
}

/** Parses a Hugging Face config.json object. `where` names the file in error messages. */
export function parseHfConfig(raw: Record<string, unknown>, where = "config.json"): ModelConfig {
  const arch = supportedArch(raw, where);
  const hiddenSize = posInt(raw, "hidden_size", where);
  const { numHeads, numKvHeads, headDim } = attentionShape(raw, where, hiddenSize);
  const { theta, scaling } = parseRopeScaling(raw, where);

  let maxContext = posInt(raw, "max_position_embeddings", where, 2048);
  // A sliding window larger than the context never applies; a smaller one caps the context (full attention
  // within the window is exactly what sliding-window attention computes there).
  const useSliding = arch === "mistral" ? raw["sliding_window"] != null : raw["use_sliding_window"] === true;
  if (useSliding) {
    const w = posInt(raw, "sliding_window", where);
    maxContext = Math.min(maxContext, w);
  }
  const eos = raw["eos_token_id"];
  const eosTokenIds = Array.isArray(eos) ? eos.map(Number) : typeof eos === "number" ? [eos] : [];
  const attentionBias = raw["attention_bias"] === true;
  const dtype = String(raw["dtype"] ?? raw["torch_dtype"] ?? "float32");
  return {
    arch,
    vocabSize: posInt(raw, "vocab_size", where),
    hiddenSize,
    intermediateSize: posInt(raw, "intermediate_size", where),
    numLayers: posInt(raw, "num_hidden_layers", where),
    numHeads,
    numKvHeads,
    headDim,
    rmsNormEps: num(raw, "rms_norm_eps", where, 1e-6),
    ropeTheta: theta,
    ropeScaling: scaling,
    maxContext,
    tieWordEmbeddings: raw["tie_word_embeddings"] === true,
    qkvBias: arch === "qwen2" ? true : attentionBias,
    oBias: arch === "qwen2" ? false : attentionBias,
    bosTokenId: typeof raw["bos_token_id"] === "number" ? raw["bos_token_id"] : null,
    eosTokenIds,
    padTokenId: typeof raw["pad_token_id"] === "number" ? raw["pad_token_id"] : null,
    sourceDtype: dtype,
    raw,
  };
}

export interface NewConfigOptions {
  arch: "llama" | "qwen2";
  layers: number;
  hidden: number;
  heads: number;
  kvHeads: number;
  vocabSize: number;
  intermediate?: number;
  maxContext?: number;
  ropeTheta?: number;
  tieWordEmbeddings?: boolean;
  bosTokenId?: number | null;
  eosTokenId?: number | null;
  padTokenId?: number | null;
}

/** A fresh HF-style config.json object for `init-model` and tests. */
export function newHfConfig(o: NewConfigOptions): Record<string, unknown> {
  if (o.hidden % o.heads !== 0) throw new ConfigError(`hidden (${o.hidden}) must be a multiple of heads (${o.heads})`);
  if (o.heads % o.kvHeads !== 0)
    throw new ConfigError(`heads (${o.heads}) must be a multiple of kv-heads (${o.kvHeads})`);
  // SwiGLU convention: ~8/3 × hidden, rounded up to a multiple of 32.
  const intermediate = o.intermediate ?? Math.ceil((o.hidden * 8) / 3 / 32) * 32;
  const base: Record<string, unknown> = {
    architectures: [ARCHITECTURE_CLASS[o.arch]],
    model_type: o.arch,
    vocab_size: o.vocabSize,
    hidden_size: o.hidden,
    intermediate_size: intermediate,
    num_hidden_layers: o.layers,
    num_attention_heads: o.heads,
    num_key_value_heads: o.kvHeads,
    head_dim: o.hidden / o.heads,
    hidden_act: "silu",
    max_position_embeddings: o.maxContext ?? 2048,
    rms_norm_eps: 1e-6,
    rope_theta: o.ropeTheta ?? 10000,
    tie_word_embeddings: o.tieWordEmbeddings ?? o.arch === "qwen2",
    bos_token_id: o.bosTokenId ?? null,
    eos_token_id: o.eosTokenId ?? null,
    pad_token_id: o.padTokenId ?? null,
    initializer_range: 0.02,
    use_cache: true,
    dtype: "float32",
  };
  if (o.arch === "llama") Object.assign(base, { attention_bias: false, mlp_bias: false });
  else Object.assign(base, { use_sliding_window: false, sliding_window: null, max_window_layers: o.layers });
  return base;
}

/** The config.json to write for a model: the source fields, with the dtype we write. */
export function toHfConfig(c: ModelConfig, dtype: string): Record<string, unknown> {
  const out: Record<string, unknown> = { ...c.raw, dtype };
  delete out["torch_dtype"];
  return out;
}

/** generation_config.json: the special token ids of the config. */
export function generationConfig(c: ModelConfig): Record<string, unknown> {
  const gen: Record<string, unknown> = { _from_model_config: true };
  if (c.bosTokenId !== null) gen["bos_token_id"] = c.bosTokenId;
  if (c.eosTokenIds.length) gen["eos_token_id"] = c.eosTokenIds.length === 1 ? c.eosTokenIds[0] : c.eosTokenIds;
  if (c.padTokenId !== null) gen["pad_token_id"] = c.padTokenId;
  return gen;
}

/** Inverse RoPE frequencies (length headDim/2), after the config's scaling rule. */
export function ropeInvFreq(c: ModelConfig): Float64Array {
  const half = c.headDim / 2;
  const inv = new Float64Array(half);
  for (let i = 0; i < half; i++) inv[i] = 1 / c.ropeTheta ** ((2 * i) / c.headDim);
  const s = c.ropeScaling;
  if (s.type === "linear") for (let i = 0; i < half; i++) inv[i] /= s.factor;
  if (s.type === "llama3") {
    const lowWavelen = s.originalMaxPositionEmbeddings / s.lowFreqFactor;
    const highWavelen = s.originalMaxPositionEmbeddings / s.highFreqFactor;
    for (let i = 0; i < half; i++) {
      const wavelen = (2 * Math.PI) / inv[i]!;
      if (wavelen > lowWavelen) inv[i] = inv[i]! / s.factor;
      else if (wavelen >= highWavelen) {
        const smooth =
          (s.originalMaxPositionEmbeddings / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
        inv[i] = (1 - smooth) * (inv[i]! / s.factor) + smooth * inv[i]!;
      }
    }
  }
  return inv;
}
