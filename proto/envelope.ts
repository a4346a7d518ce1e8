/**
 * Parameter groups and admissibility envelopes (ARCHITECTURE.md, "Governance model").
 *
 * A decoder with L layers has these parameter groups, in this canonical order:
 *   embeddings, layers.0.attention, layers.0.mlp, layers.0.norms, …, layers.{L-1}.norms, final_norm, lm_head
 *
 * An envelope is a list of selectors; its groups are the union of what each selects:
 *   embeddings | final_norm | lm_head          that one group
 *   layers[a:b]                                every group of layers a ≤ i < b (half-open, like a Python slice;
 *                                              a defaults to 0, b to L)
 *   layers[a:b].attention | .mlp | .norms      only that part of those layers
 *   layers[i] (optionally with a part)         the single layer i
 * Pure: used by the trainer (masking) and by the ledger verifier (re-deriving each row's groups).
 */

export const LAYER_PARTS = ["attention", "mlp", "norms"] as const;
export const TOP_GROUPS = ["embeddings", "final_norm", "lm_head"] as const;

/** Every parameter group of a model with `numLayers` decoder layers, in canonical order. */
export function parameterGroups(numLayers: number): string[] {
  checkNumLayers(numLayers);
  const out = ["embeddings"];
  for (let i = 0; i < numLayers; i++) for (const p of LAYER_PARTS) out.push(`layers.${i}.${p}`);
  out.push("final_norm", "lm_head");
  return out;
}

/** True when `name` is a well-formed group name of a model with `numLayers` layers. */
export function isParameterGroup(name: string, numLayers: number): boolean {
  if ((TOP_GROUPS as readonly string[]).includes(name)) return true;
  const m = /^layers\.(0|[1-9][0-9]*)\.(attention|mlp|norms)$/.exec(name);
  return m !== null && Number(m[1]) < numLayers;
}

export class EnvelopeError extends Error {
  constructor(
    /** Index of the offending selector in the envelope list (-1: the list itself). */
    readonly index: number,
    readonly selector: string,
    reason: string,
  ) {
    super(index < 0 ? `envelope: ${reason}` : `envelope[${index}] ${JSON.stringify(selector)}: ${reason}`);
    this.name = "EnvelopeError";
  }
}

const LAYER_RE = /^layers\[([^\]]*)\](?:\.([A-Za-z_]+))?$/;
const INT_RE = /^(0|[1-9][0-9]*)$/;

/** Expands an envelope to its set of parameter groups; throws EnvelopeError naming the bad selector. */
export function expandEnvelope(spec: readonly string[], numLayers: number): Set<string> {
  checkNumLayers(numLayers);
  if (!Array.isArray(spec)) throw new EnvelopeError(-1, "", "must be a list of selectors");
  if (spec.length === 0) throw new EnvelopeError(-1, "", "is empty (it would select no parameter group)");
  const out = new Set<string>();
  spec.forEach((raw, i) => {
    if (typeof raw !== "string") throw new EnvelopeError(i, String(raw), "selector must be a string");
    const sel = raw.trim();
    if ((TOP_GROUPS as readonly string[]).includes(sel)) {
      out.add(sel);
      return;
    }
    const m = LAYER_RE.exec(sel);
    if (!m) {
      throw new EnvelopeError(
        i,
        raw,
        "unknown selector (expected embeddings, final_norm, lm_head, layers[a:b], layers[a:b].attention|.mlp|.norms)",
      );
    }
    const [lo, hi] = parseRange(m[1]!, numLayers, i, raw);
    const part = m[2];
    if (part !== undefined && !(LAYER_PARTS as readonly string[]).includes(part)) {
      throw new EnvelopeError(i, raw, `unknown layer part .${part} (expected .attention, .mlp or .norms)`);
    }
    const parts = part === undefined ? LAYER_PARTS : [part];
    for (let l = lo; l < hi; l++) for (const p of parts) out.add(`layers.${l}.${p}`);
  });
  return out;
}

function parseRange(inner: string, numLayers: number, i: number, raw: string): [number, number] {
  const int = (s: string, what: string): number => {
    const t = s.trim();
    if (!INT_RE.test(t)) throw new EnvelopeError(i, raw, `${what} ${JSON.stringify(s)} is not a non-negative integer`);
    return Number(t);
  };
  const colon = inner.indexOf(":");
  if (colon < 0) {
    const l = int(inner, "layer index");
    if (l >= numLayers) throw new EnvelopeError(i, raw, `layer ${l} does not exist (the model has ${numLayers})`);
    return [l, l + 1];
  }
  if (inner.indexOf(":", colon + 1) >= 0) throw new EnvelopeError(i, raw, "a layer range has one ':' (no step)");
  const a = inner.slice(0, colon).trim() === "" ? 0 : int(inner.slice(0, colon), "range start");
  const b = inner.slice(colon + 1).trim() === "" ? numLayers : int(inner.slice(colon + 1), "range end");
  if (b > numLayers)
    throw new EnvelopeError(i, raw, `range end ${b} is past the last layer (the model has ${numLayers})`);
  if (a >= b) throw new EnvelopeError(i, raw, `empty layer range ${a}:${b} (start must be below end)`);
  return [a, b];
}

function checkNumLayers(n: number): void {
  if (!Number.isInteger(n) || n < 0) throw new RangeError(`numLayers must be a non-negative integer, got ${n}`);
}

/** The groups of `set` in canonical order (for stable output). */
export function sortGroups(set: Iterable<string>, numLayers: number): string[] {
  const order = new Map(parameterGroups(numLayers).map((g, i) => [g, i]));
  return [...set].sort((x, y) => (order.get(x) ?? Number.MAX_SAFE_INTEGER) - (order.get(y) ?? Number.MAX_SAFE_INTEGER));
}
