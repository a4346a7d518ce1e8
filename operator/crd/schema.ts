/**
 * TypeBox (JSON Schema) → Kubernetes structural OpenAPI v3, a pure function. Rules:
 * - `"auto" | integer` → x-kubernetes-int-or-string plus a CEL rule for the bounds (structural schemas allow
 *   no typed anyOf); `"auto" | number` → an untyped node (preserve-unknown-fields) plus a CEL rule;
 * - `X | null` → X with nullable; `string | number` (quantities) → x-kubernetes-int-or-string;
 * - records of unknown values (OpenAI's free-form grader JSON) → x-kubernetes-preserve-unknown-fields;
 * - records of typed values → additionalProperties; closed objects stay closed (unknown fields rejected);
 * - draft-2019 numeric exclusiveMinimum → OpenAPI 3.0's boolean form; every string gets a maxLength
 *   (`defaultMaxLength` when the source has none) so CEL cost estimates stay bounded.
 */

export type Schema = Record<string, unknown>;

export interface ConvertOptions {
  defaultMaxLength: number;
}

interface Src {
  type?: string;
  anyOf?: Src[];
  const?: unknown;
  enum?: unknown[];
  properties?: Record<string, Src>;
  required?: string[];
  patternProperties?: Record<string, Src>;
  items?: Src;
  [k: string]: unknown;
}

const COPY = ["description", "default", "minLength", "maxLength", "pattern", "format", "minItems", "maxItems"];
const COPY_OBJ = ["minProperties", "maxProperties", "description", "default"];

function numberBounds(s: Src, out: Schema): void {
  if (typeof s.minimum === "number") out.minimum = s.minimum;
  if (typeof s.maximum === "number") out.maximum = s.maximum;
  if (typeof s.exclusiveMinimum === "number") {
    out.minimum = s.exclusiveMinimum;
    out.exclusiveMinimum = true;
  }
  if (typeof s.exclusiveMaximum === "number") {
    out.maximum = s.exclusiveMaximum;
    out.exclusiveMaximum = true;
  }
}

/** A CEL expression for a number's bounds, e.g. "self >= 1 && self <= 50" (with `v` as the variable). */
function celBounds(s: Src, v: string): { rule: string; text: string } {
  const parts: string[] = [];
  const text: string[] = [];
  const lit = (n: number) => (s.type === "integer" ? String(n) : Number.isInteger(n) ? `${n}.0` : String(n));
  if (typeof s.minimum === "number") {
    parts.push(`${v} >= ${lit(s.minimum)}`);
    text.push(`>= ${s.minimum}`);
  }
  if (typeof s.exclusiveMinimum === "number") {
    parts.push(`${v} > ${lit(s.exclusiveMinimum)}`);
    text.push(`> ${s.exclusiveMinimum}`);
  }
  if (typeof s.maximum === "number") {
    parts.push(`${v} <= ${lit(s.maximum)}`);
    text.push(`<= ${s.maximum}`);
  }
  return { rule: parts.join(" && ") || "true", text: text.join(" and ") };
}

export function toStructural(src: Src, o: ConvertOptions): Schema {
  if (src.anyOf) return convertUnion(src, o);
  const out: Schema = {};
  if (src.const !== undefined) {
    out.type = typeof src.const === "string" ? "string" : typeof src.const;
    out.enum = [src.const];
    return out;
  }
  for (const k of src.type === "object" ? COPY_OBJ : COPY) if (src[k] !== undefined) out[k] = src[k];
  switch (src.type) {
    case "string":
      out.type = "string";
      if (src.enum) out.enum = src.enum;
      else if (out.maxLength === undefined) out.maxLength = o.defaultMaxLength;
      return out;
    case "integer":
    case "number":
      out.type = src.type;
      numberBounds(src, out);
      return out;
    case "boolean":
      out.type = "boolean";
      return out;
    case "null":
      throw new Error("a lone null type has no structural form");
    case "array":
      out.type = "array";
      if (!src.items) throw new Error("array without items");
      out.items = toStructural(src.items, o);
      // Kubernetes refuses uniqueItems (quadratic to check); a set list type is its equivalent for scalars.
      if (src.uniqueItems === true) out["x-kubernetes-list-type"] = "set";
      return out;
    case "object": {
      out.type = "object";
      if (src.properties) {
        out.properties = Object.fromEntries(
          Object.entries(src.properties).map(([k, v]) => [k, toStructural(v, o)] as const),
        );
        if (src.required?.length) out.required = [...src.required];
        return out;
      }
      const pattern = src.patternProperties ? Object.values(src.patternProperties)[0] : undefined;
      if (!pattern || Object.keys(pattern).length === 0) {
        out["x-kubernetes-preserve-unknown-fields"] = true;
        return out;
      }
      out.additionalProperties = toStructural(pattern, o);
      return out;
    }
    default:
      // Unknown (T.Unknown()): any JSON value.
      if (src.type === undefined && Object.keys(src).every((k) => k === "description")) {
        return { ...out, "x-kubernetes-preserve-unknown-fields": true };
      }
      throw new Error(`unsupported schema ${JSON.stringify(src).slice(0, 200)}`);
  }
}

function convertUnion(src: Src, o: ConvertOptions): Schema {
  const branches = src.anyOf!;
  const nonNull = branches.filter((b) => b.type !== "null");
  const desc = src.description !== undefined ? { description: src.description } : {};
  if (nonNull.length === 1 && branches.length === 2) {
    return { ...toStructural(nonNull[0]!, o), nullable: true, ...desc };
  }
  const auto = branches.find((b) => b.const === "auto");
  const num = branches.find((b) => b.type === "integer" || b.type === "number");
  if (auto && num && branches.length === 2) {
    const { rule, text } = celBounds(num, "self");
    if (num.type === "integer") {
      return {
        ...desc,
        "x-kubernetes-int-or-string": true,
        "x-kubernetes-validations": [
          {
            rule: `type(self) == string ? self == 'auto' : (${rule})`,
            message: `must be "auto" or an integer ${text}`,
          },
        ],
      };
    }
    // Structural schemas have no "string or float" type and CEL cannot see untyped nodes (tried: the API
    // server drops them from the rule's declarations), so the bounds of these two fields are checked by
    // the admission webhook (operator/webhook.ts) with the same Ajv schema `rft run` uses.
    return {
      description: `${src.description ? `${src.description}; ` : ""}"auto" or a number ${text} (checked by the admission webhook)`,
      "x-kubernetes-preserve-unknown-fields": true,
    };
  }
  const types = new Set(branches.map((b) => b.type));
  if (types.size === 2 && types.has("string") && (types.has("number") || types.has("integer"))) {
    return { ...desc, "x-kubernetes-int-or-string": true };
  }
  throw new Error(`unsupported union ${JSON.stringify(src).slice(0, 200)}`);
}
