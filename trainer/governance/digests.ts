/**
 * Parameter-group digests: what the ledger records about the weights. A group's digest is SHA-256 over its
 * tensors in name order, each framed as `name \0 shape-json \0 float32-little-endian-bytes` (the trainer's
 * in-memory layout, which `loadHfModel` reproduces from the saved files, so an auditor recomputes it from the
 * delivered model with `rft audit verify --model DIR`). A group with no tensors (lm_head of a model with tied
 * embeddings) digests the empty string.
 *
 * With LoRA adapters (trainer/model/lora.ts) a group's tensors are its base tensors (in name order), then its
 * adapters' A and B (`…q_proj.lora_A.weight`, in name order): the digests then change only where adapters
 * train, and an auditor recomputes them from the base model plus the delivered adapter directory. The groups
 * without adapters (embeddings, norms, final_norm, lm_head) keep the base model's digests throughout. Since
 * the base comes first, a DigestCache hashes a frozen base once and each step only the adapters after it.
 */
import { createHash, type Hash } from "node:crypto";
import type * as tf from "@tensorflow/tfjs-core";
import { parameterGroups as groupNames } from "../../proto/envelope.js";
import type { ModelConfig } from "../model/config.js";
import { adapterGroups, type LoraSettings } from "../model/lora.js";
import { parameterGroups as groupTensors } from "../model/params.js";

export type Digest = `sha256:${string}`;

/** Every ledger group of a model → the names of its tensors (possibly none), with its adapters under LoRA. */
export function groupsOf(config: ModelConfig, lora?: LoraSettings): Map<string, string[]> {
  const tensors = groupTensors(config);
  const adapters = lora ? adapterGroups(config, lora) : new Map<string, string[]>();
  return new Map(
    groupNames(config.numLayers).map((g) => [
      g,
      [...[...(tensors.get(g) ?? [])].sort(), ...[...(adapters.get(g) ?? [])].sort()],
    ]),
  );
}

/** Every ledger group → the tensors training may change in it: all of them, or under LoRA its adapters only. */
export function trainableGroupsOf(config: ModelConfig, lora?: LoraSettings): Map<string, string[]> {
  if (!lora) return groupsOf(config);
  const adapters = adapterGroups(config, lora);
  return new Map(groupNames(config.numLayers).map((g) => [g, [...(adapters.get(g) ?? [])].sort()]));
}

export function digestTensors(names: readonly string[], get: (name: string) => tf.Tensor): Digest {
  const h = createHash("sha256");
  hashTensors(h, names, get);
  return `sha256:${h.digest("hex")}`;
}

function hashTensors(h: Hash, names: readonly string[], get: (name: string) => tf.Tensor): void {
  for (const name of names) {
    const t = get(name);
    const data = t.dataSync() as Float32Array;
    h.update(name);
    h.update("\0");
    h.update(JSON.stringify(t.shape));
    h.update("\0");
    h.update(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  }
}

/**
 * The hash state of each group's leading frozen tensors (LoRA's base), kept per group with the tensors it
 * was computed from: a digest then hashes only the tensors after them. A replaced tensor invalidates it.
 */
export class DigestCache {
  private readonly states = new Map<string, { tensors: tf.Tensor[]; hash: Hash }>();
  constructor(private readonly frozen: ReadonlySet<string>) {}

  digest(group: string, names: readonly string[], get: (name: string) => tf.Tensor): Digest {
    let k = 0;
    while (k < names.length && this.frozen.has(names[k]!)) k++;
    if (k === 0) return digestTensors(names, get);
    const tensors = names.slice(0, k).map(get);
    let st = this.states.get(group);
    if (!st || st.tensors.length !== k || st.tensors.some((t, i) => t !== tensors[i])) {
      const hash = createHash("sha256");
      hashTensors(hash, names.slice(0, k), get);
      st = { tensors, hash };
      this.states.set(group, st);
    }
    const h = st.hash.copy();
    hashTensors(h, names.slice(k), get);
    return `sha256:${h.digest("hex")}`;
  }
}

/** Digests of the given groups (all groups when `only` is absent). */
export function groupDigests(
  params: Map<string, tf.Tensor>,
  groups: Map<string, string[]>,
  only?: Iterable<string>,
  cache?: DigestCache,
): Record<string, Digest> {
  const out: Record<string, Digest> = {};
  const get = (n: string) => params.get(n)!;
  for (const g of only ?? groups.keys())
    out[g] = cache ? cache.digest(g, groups.get(g)!, get) : digestTensors(groups.get(g)!, get);
  return out;
}
