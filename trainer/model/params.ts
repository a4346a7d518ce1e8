/**
 * Parameter naming, shapes and groups. Names are the Hugging Face tensor names; inside the model, linear
 * weights are held transposed ([in, out]) so the forward pass is a plain matMul. Groups are what the
 * governance work masks updates by: `embeddings`, `layers.N.attention`, `layers.N.mlp`, `layers.N.norms`,
 * `final_norm`, `lm_head`.
 */
import * as tf from "@tensorflow/tfjs-core";
import type { ModelConfig } from "./config.js";

export interface ParamSpec {
  /** Hugging Face tensor name, e.g. `model.layers.0.self_attn.q_proj.weight`. */
  name: string;
  /** Shape as stored in safetensors (HF layout: linear weights [out, in]). */
  hfShape: number[];
  /** True for linear weights, held as [in, out] inside the model. */
  transposed: boolean;
  group: string;
  kind: "embedding" | "linear" | "bias" | "norm";
}

export type Params = Map<string, tf.Tensor>;

export function paramSpecs(c: ModelConfig): ParamSpec[] {
  const D = c.hiddenSize;
  const qDim = c.numHeads * c.headDim;
  const kvDim = c.numKvHeads * c.headDim;
  const F = c.intermediateSize;
  const specs: ParamSpec[] = [
    {
      name: "model.embed_tokens.weight",
      hfShape: [c.vocabSize, D],
      transposed: false,
      group: "embeddings",
      kind: "embedding",
    },
  ];
  for (let l = 0; l < c.numLayers; l++) {
    const p = `model.layers.${l}`;
    const attn = `layers.${l}.attention`;
    const lin = (name: string, out: number, inp: number, group: string): ParamSpec => ({
      name,
      hfShape: [out, inp],
      transposed: true,
      group,
      kind: "linear",
    });
    specs.push(lin(`${p}.self_attn.q_proj.weight`, qDim, D, attn));
    if (c.qkvBias)
      specs.push({ name: `${p}.self_attn.q_proj.bias`, hfShape: [qDim], transposed: false, group: attn, kind: "bias" });
    specs.push(lin(`${p}.self_attn.k_proj.weight`, kvDim, D, attn));
    if (c.qkvBias)
      specs.push({
        name: `${p}.self_attn.k_proj.bias`,
        hfShape: [kvDim],
        transposed: false,
        group: attn,
        kind: "bias",
      });
    specs.push(lin(`${p}.self_attn.v_proj.weight`, kvDim, D, attn));
    if (c.qkvBias)
      specs.push({
        name: `${p}.self_attn.v_proj.bias`,
        hfShape: [kvDim],
        transposed: false,
        group: attn,
        kind: "bias",
      });
    specs.push(lin(`${p}.self_attn.o_proj.weight`, D, qDim, attn));
    if (c.oBias)
      specs.push({ name: `${p}.self_attn.o_proj.bias`, hfShape: [D], transposed: false, group: attn, kind: "bias" });
    const mlp = `layers.${l}.mlp`;
    specs.push(lin(`${p}.mlp.gate_proj.weight`, F, D, mlp));
    specs.push(lin(`${p}.mlp.up_proj.weight`, F, D, mlp));
    specs.push(lin(`${p}.mlp.down_proj.weight`, D, F, mlp));
    const norms = `layers.${l}.norms`;
    specs.push({ name: `${p}.input_layernorm.weight`, hfShape: [D], transposed: false, group: norms, kind: "norm" });
    specs.push({
      name: `${p}.post_attention_layernorm.weight`,
      hfShape: [D],
      transposed: false,
      group: norms,
      kind: "norm",
    });
  }
  specs.push({ name: "model.norm.weight", hfShape: [D], transposed: false, group: "final_norm", kind: "norm" });
  if (!c.tieWordEmbeddings) {
    specs.push({
      name: "lm_head.weight",
      hfShape: [c.vocabSize, D],
      transposed: true,
      group: "lm_head",
      kind: "linear",
    });
  }
  return specs;
}

/** Group name → the tensor names in it, in model order. (With tied embeddings there is no `lm_head` group.) */
export function parameterGroups(c: ModelConfig): Map<string, string[]> {
  const groups = new Map<string, string[]>();
  for (const s of paramSpecs(c)) {
    const list = groups.get(s.group) ?? [];
    list.push(s.name);
    groups.set(s.group, list);
  }
  return groups;
}

/** Total parameter count. */
export function countParams(c: ModelConfig): number {
  return paramSpecs(c).reduce((n, s) => n + s.hfShape.reduce((a, b) => a * b, 1), 0);
}

/** Internal shape of a parameter (linear weights transposed). */
export function internalShape(s: ParamSpec): number[] {
  return s.transposed ? [s.hfShape[1]!, s.hfShape[0]!] : s.hfShape;
}

/** A small seeded PRNG (mulberry32): deterministic across platforms. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Standard normal samples from a uniform PRNG (Box–Muller). */
export function fillNormal(out: Float32Array, std: number, rand: () => number): void {
  for (let i = 0; i < out.length; i += 2) {
    const u = Math.max(rand(), 1e-12);
    const v = rand();
    const r = Math.sqrt(-2 * Math.log(u)) * std;
    out[i] = r * Math.cos(2 * Math.PI * v);
    if (i + 1 < out.length) out[i + 1] = r * Math.sin(2 * Math.PI * v);
  }
}

/** Random initialisation (normal(0, std) weights and biases, ones for norms), deterministic for a seed. */
export function initParams(c: ModelConfig, seed: number, std = 0.02): Params {
  const rand = mulberry32(seed);
  const params: Params = new Map();
  for (const s of paramSpecs(c)) {
    const shape = internalShape(s);
    const size = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(size);
    if (s.kind === "norm") data.fill(1);
    else fillNormal(data, std, rand);
    params.set(s.name, tf.tensor(data, shape, "float32"));
  }
  return params;
}

export function disposeParams(p: Params): void {
  for (const t of p.values()) t.dispose();
}
