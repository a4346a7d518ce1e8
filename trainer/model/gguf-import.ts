/**
 * GGUF → Hugging Face directory: `llama.*` metadata → config.json, llama.cpp tensor names → HF names (with
 * llama.cpp's Q/K row permutation undone), dequantized to float32 model.safetensors, and the GGUF vocabulary
 * (`tokenizer.ggml.*`, byte-level BPE) → tokenizer.json + tokenizer_config.json (with the chat template).
 */
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { generationConfig, parseHfConfig, type ModelConfig, newHfConfig, toHfConfig } from "./config.js";
import { canDequantize, SUPPORTED_TYPES } from "./gguf-dequant.js";
import { GgufError, GgufFile, type GgufValue } from "./gguf-read.js";
import { paramSpecs } from "./params.js";
import { writeSafetensorsStreaming } from "./safetensors.js";
import { bpeModel, bytesToUnicode, type TokenizerFiles } from "./tokenizer.js";

export { GgufError } from "./gguf-read.js";

export const SUPPORTED_ARCHITECTURES = ["llama"] as const;

function meta(g: GgufFile, key: string): GgufValue | undefined {
  return g.metadata.get(key);
}

function metaInt(g: GgufFile, key: string, fallback?: number): number {
  const v = meta(g, key);
  if (v === undefined) {
    if (fallback !== undefined) return fallback;
    throw new GgufError(`${g.file}: required metadata "${key}" is missing`);
  }
  if (typeof v !== "number" || !Number.isInteger(v) || v <= 0)
    throw new GgufError(`${g.file}: metadata "${key}" must be a positive integer, got ${JSON.stringify(String(v))}`);
  return v;
}

function metaNum(g: GgufFile, key: string, fallback: number): number {
  const v = meta(g, key);
  if (v === undefined) return fallback;
  if (typeof v !== "number") throw new GgufError(`${g.file}: metadata "${key}" must be a number`);
  return v;
}

function metaStrings(g: GgufFile, key: string): string[] | null {
  const v = meta(g, key);
  if (v === undefined) return null;
  if (!Array.isArray(v) || v.some((s) => typeof s !== "string"))
    throw new GgufError(`${g.file}: metadata "${key}" must be an array of strings`);
  return v as string[];
}

/** The HF config.json object that the file's `llama.*` metadata describes. */
export function ggufHfConfig(g: GgufFile): Record<string, unknown> {
  const arch = meta(g, "general.architecture");
  if (typeof arch !== "string") throw new GgufError(`${g.file}: metadata "general.architecture" is missing`);
  if (!(SUPPORTED_ARCHITECTURES as readonly string[]).includes(arch)) {
    throw new GgufError(
      `${g.file}: unsupported architecture "${arch}" (supported: ${SUPPORTED_ARCHITECTURES.join(", ")})`,
    );
  }
  const p = `${arch}.`;
  const hidden = metaInt(g, p + "embedding_length");
  const heads = metaInt(g, p + "attention.head_count");
  const kvHeads = metaInt(g, p + "attention.head_count_kv", heads);
  const headDim = metaInt(g, p + "attention.key_length", hidden / heads);
  const rotary = metaInt(g, p + "rope.dimension_count", headDim);
  if (rotary !== headDim)
    throw new GgufError(`${g.file}: partial rotary embeddings (${rotary} of ${headDim} dims) are not supported`);
  const scaling = meta(g, p + "rope.scaling.type");
  if (scaling !== undefined && scaling !== "none" && scaling !== "linear")
    throw new GgufError(`${g.file}: unsupported ${p}rope.scaling.type "${String(scaling)}" (supported: none, linear)`);
  const tokens = metaStrings(g, "tokenizer.ggml.tokens");
  const embd = g.tensors.get("token_embd.weight");
  const vocab = metaInt(g, p + "vocab_size", tokens?.length ?? embd?.shape[0]);
  const id = (key: string): number | null => {
    const v = meta(g, key);
    return typeof v === "number" ? v : null;
  };
  const cfg = newHfConfig({
    arch: "llama",
    layers: metaInt(g, p + "block_count"),
    hidden,
    heads,
    kvHeads,
    vocabSize: vocab,
    intermediate: metaInt(g, p + "feed_forward_length"),
    maxContext: metaInt(g, p + "context_length", 2048),
    ropeTheta: metaNum(g, p + "rope.freq_base", 10000),
    tieWordEmbeddings: !g.tensors.has("output.weight"),
    bosTokenId: id("tokenizer.ggml.bos_token_id"),
    eosTokenId: id("tokenizer.ggml.eos_token_id"),
    padTokenId: id("tokenizer.ggml.padding_token_id"),
  });
  cfg["head_dim"] = headDim;
  cfg["rms_norm_eps"] = metaNum(g, p + "attention.layer_norm_rms_epsilon", 1e-5);
  if (scaling === "linear") {
    cfg["rope_scaling"] = { rope_type: "linear", factor: metaNum(g, p + "rope.scaling.factor", 1) };
  }
  return cfg;
}

/** llama.cpp tensor name for an HF parameter name. */
function ggufName(hf: string): string {
  if (hf === "model.embed_tokens.weight") return "token_embd.weight";
  if (hf === "model.norm.weight") return "output_norm.weight";
  if (hf === "lm_head.weight") return "output.weight";
  const m = /^model\.layers\.(\d+)\.(.+)$/.exec(hf);
  if (!m) throw new Error(`no GGUF name for ${hf}`);
  const rest: Record<string, string> = {
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.bias": "attn_output.bias",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
  };
  const r = rest[m[2]!];
  if (!r) throw new Error(`no GGUF name for ${hf}`);
  return `blk.${m[1]}.${r}`;
}

/**
 * llama.cpp's converter stores each head's Q/K rows interleaved (row 2p+s of a head holds HF row s·hd/2 + p,
 * its rotary pairing); this puts them back in HF's rotate-half order. `data` is row-major [heads·hd, cols].
 */
export function unpermuteQK(data: Float32Array, heads: number, cols: number): Float32Array {
  const rows = data.length / cols;
  const hd = rows / heads;
  const half = hd / 2;
  const out = new Float32Array(data.length);
  for (let h = 0; h < heads; h++) {
    for (let p = 0; p < half; p++) {
      for (let s = 0; s < 2; s++) {
        const src = (h * hd + 2 * p + s) * cols;
        const dst = (h * hd + s * half + p) * cols;
        out.set(data.subarray(src, src + cols), dst);
      }
    }
  }
  return out;
}

/** The tensors to write, in HF names, shapes and order (paramSpecs), each checked against the file. */
export function ggufTensorPlan(g: GgufFile, config: ModelConfig): { name: string; gguf: string; shape: number[] }[] {
  const specs = paramSpecs(config);
  const wanted = new Set(specs.map((s) => ggufName(s.name)));
  const extra = [...g.tensors.keys()].filter((n) => !wanted.has(n));
  if (extra.length) {
    throw new GgufError(
      `${g.file}: tensors a llama model of this config does not have: ${extra.slice(0, 5).join(", ")}${extra.length > 5 ? ` (+${extra.length - 5} more)` : ""}`,
    );
  }
  return specs.map((s) => {
    const name = ggufName(s.name);
    const info = g.tensors.get(name);
    if (!info) throw new GgufError(`${g.file}: tensor "${name}" (${s.name}) is missing`);
    if (info.shape.length !== s.hfShape.length || info.shape.some((d, i) => d !== s.hfShape[i])) {
      throw new GgufError(
        `${g.file}: tensor "${name}" has shape [${info.shape}], the llama.* metadata implies [${s.hfShape}]`,
      );
    }
    return { name: s.name, gguf: name, shape: s.hfShape };
  });
}

/** One planned tensor, dequantized to float32 in HF layout (Q/K rows back in HF order). */
export function ggufTensorData(g: GgufFile, config: ModelConfig, t: { gguf: string; shape: number[] }): Float32Array {
  const { data } = g.readF32(t.gguf);
  const cols = t.shape.length === 2 ? t.shape[1]! : 1;
  if (/\.attn_q\.(weight|bias)$/.test(t.gguf)) return unpermuteQK(data, config.numHeads, cols);
  if (/\.attn_k\.(weight|bias)$/.test(t.gguf)) return unpermuteQK(data, config.numKvHeads, cols);
  return data;
}

/** The llama.cpp pre-tokenizer names (`tokenizer.ggml.pre`) and the split regexes they stand for. */
const LLAMA3_REGEX =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const QWEN2_REGEX =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

const byteLevel = (useRegex: boolean) => ({
  type: "ByteLevel",
  add_prefix_space: false,
  trim_offsets: true,
  use_regex: useRegex,
});
const split = (regex: string) => ({ type: "Split", pattern: { Regex: regex }, behavior: "Isolated", invert: false });

/** Pre-tokenizer for a `tokenizer.ggml.pre` value (llama.cpp's `llama-vocab.cpp` regex lists). */
function preTokenizer(pre: string, file: string): Record<string, unknown> {
  switch (pre) {
    case "default":
    case "gpt2":
    case "gpt-2":
      return byteLevel(true);
    // every single \p{N} its own piece, then GPT-2 (the `Digits(individual_digits)` + `ByteLevel` of these
    // models' tokenizer.json). Written as a Split on \p{N}: @huggingface/tokenizers' Digits matches ASCII
    // digits only (JavaScript's \d), Rust's matches every Unicode numeric character.
    case "smollm":
    case "starcoder":
    case "refact":
    case "codeshell":
      return { type: "Sequence", pretokenizers: [split("\\p{N}"), byteLevel(true)] };
    case "llama3":
    case "llama-v3":
    case "llama-bpe":
    case "smaug-bpe":
    case "dbrx":
    case "falcon3":
      return { type: "Sequence", pretokenizers: [split(LLAMA3_REGEX), byteLevel(false)] };
    case "qwen2":
    case "deepseek-r1-qwen":
      return { type: "Sequence", pretokenizers: [split(QWEN2_REGEX), byteLevel(false)] };
    default:
      throw new GgufError(
        `${file}: unsupported tokenizer.ggml.pre "${pre}" (supported: gpt2, smollm, starcoder, refact, codeshell, llama-bpe, llama3, smaug-bpe, dbrx, falcon3, qwen2, deepseek-r1-qwen)`,
      );
  }
}

const TOKEN_CONTROL = 3;
const TOKEN_USER_DEFINED = 4;

/** tokenizer.json + tokenizer_config.json for a byte-level BPE vocabulary (`tokenizer.ggml.model = gpt2`). */
export function ggufTokenizer(g: GgufFile): TokenizerFiles {
  const model = meta(g, "tokenizer.ggml.model");
  if (model !== "gpt2") {
    throw new GgufError(
      `${g.file}: unsupported tokenizer.ggml.model ${JSON.stringify(model ?? null)} (supported: gpt2, byte-level BPE)`,
    );
  }
  const tokens = metaStrings(g, "tokenizer.ggml.tokens");
  if (!tokens) throw new GgufError(`${g.file}: metadata "tokenizer.ggml.tokens" is missing`);
  const merges = metaStrings(g, "tokenizer.ggml.merges") ?? [];
  const typesRaw = meta(g, "tokenizer.ggml.token_type");
  const types = Array.isArray(typesRaw) ? (typesRaw as number[]) : [];
  const pre = meta(g, "tokenizer.ggml.pre");
  const alphabet = new Set(bytesToUnicode());
  const byteMap = bytesToUnicode();
  const enc = new TextEncoder();
  const vocab: Record<string, number> = {};
  tokens.forEach((t, i) => {
    // Byte-level vocabularies spell every token in the byte alphabet; respell any that is not.
    const spelled = [...t].every((ch) => alphabet.has(ch)) ? t : [...enc.encode(t)].map((b) => byteMap[b]).join("");
    vocab[spelled] = i;
  });
  const added = tokens
    .map((content, id) => ({ content, id, type: types[id] }))
    .filter((t) => t.type === TOKEN_CONTROL || t.type === TOKEN_USER_DEFINED)
    .map((t) => ({
      id: t.id,
      content: t.content,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: t.type === TOKEN_CONTROL,
    }));
  const idOf = (key: string): number | null => {
    const v = meta(g, key);
    if (v === undefined) return null;
    if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v >= tokens.length)
      throw new GgufError(
        `${g.file}: metadata "${key}" = ${String(v)} is not a token id (vocabulary of ${tokens.length})`,
      );
    return v;
  };
  const tok = (key: string): string | null => {
    const i = idOf(key);
    return i === null ? null : tokens[i]!;
  };
  const bos = tok("tokenizer.ggml.bos_token_id");
  const addBos = meta(g, "tokenizer.ggml.add_bos_token") === true && bos !== null;
  const tokenizerJson = {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: null,
    pre_tokenizer: preTokenizer(typeof pre === "string" ? pre : "default", g.file),
    post_processor: {
      type: "TemplateProcessing",
      single: [...(addBos ? [{ SpecialToken: { id: bos, type_id: 0 } }] : []), { Sequence: { id: "A", type_id: 0 } }],
      pair: [
        ...(addBos ? [{ SpecialToken: { id: bos, type_id: 0 } }] : []),
        { Sequence: { id: "A", type_id: 0 } },
        ...(addBos ? [{ SpecialToken: { id: bos, type_id: 1 } }] : []),
        { Sequence: { id: "B", type_id: 1 } },
      ],
      special_tokens: addBos ? { [bos!]: { id: bos, ids: [idOf("tokenizer.ggml.bos_token_id")], tokens: [bos] } } : {},
    },
    decoder: byteLevel(true),
    model: bpeModel(
      vocab,
      merges.map((m) => {
        const i = m.indexOf(" ");
        if (i <= 0) throw new GgufError(`${g.file}: tokenizer.ggml.merges entry ${JSON.stringify(m)} is not "a b"`);
        return [m.slice(0, i), m.slice(i + 1)];
      }),
    ),
  };
  const addedDecoder: Record<string, unknown> = {};
  for (const { id, ...rest } of added) addedDecoder[String(id)] = rest;
  const template = meta(g, "tokenizer.chat_template");
  const tokenizerConfig: Record<string, unknown> = {
    tokenizer_class: "PreTrainedTokenizerFast",
    added_tokens_decoder: addedDecoder,
    bos_token: bos,
    eos_token: tok("tokenizer.ggml.eos_token_id"),
    pad_token: tok("tokenizer.ggml.padding_token_id"),
    unk_token: tok("tokenizer.ggml.unknown_token_id"),
    add_bos_token: addBos,
    add_eos_token: false,
    clean_up_tokenization_spaces: false,
    model_max_length: metaInt(g, `${String(meta(g, "general.architecture"))}.context_length`, 2048),
  };
  if (typeof template === "string") tokenizerConfig["chat_template"] = template;
  return { tokenizerJson, tokenizerConfig };
}

export interface ImportResult {
  config: ModelConfig;
  /** ggml tensor types in the file and how many tensors of each. */
  types: Record<string, number>;
  tensors: number;
}

/**
 * Imports a GGUF file into an HF directory: config.json, model.safetensors (float32), generation_config.json,
 * tokenizer.json and tokenizer_config.json. Throws GgufError naming the file and the problem.
 */
export async function importGguf(file: string, outDir: string): Promise<ImportResult> {
  const g = GgufFile.open(file);
  try {
    for (const t of g.tensors.values()) {
      if (!canDequantize(t.type)) {
        throw new GgufError(
          `${file}: tensor "${t.name}" has type ${t.typeName}, which is not supported (supported: ${SUPPORTED_TYPES.join(", ")})`,
        );
      }
    }
    const raw = ggufHfConfig(g);
    const config = parseHfConfig(raw, `${file} (llama.* metadata)`);
    const tokenizer = ggufTokenizer(g);
    const plan = ggufTensorPlan(g, config);
    const types: Record<string, number> = {};
    for (const t of g.tensors.values()) types[t.typeName] = (types[t.typeName] ?? 0) + 1;
    await mkdir(outDir, { recursive: true });
    await writeSafetensorsStreaming(join(outDir, "model.safetensors"), plan, (i) =>
      ggufTensorData(g, config, plan[i]!),
    );
    await writeFile(join(outDir, "config.json"), JSON.stringify(toHfConfig(config, "float32"), null, 2) + "\n");
    await writeFile(join(outDir, "generation_config.json"), JSON.stringify(generationConfig(config), null, 2) + "\n");
    await writeFile(join(outDir, "tokenizer.json"), JSON.stringify(tokenizer.tokenizerJson) + "\n");
    await writeFile(join(outDir, "tokenizer_config.json"), JSON.stringify(tokenizer.tokenizerConfig, null, 2) + "\n");
    return { config, types, tensors: plan.length };
  } finally {
    g.close();
  }
}
