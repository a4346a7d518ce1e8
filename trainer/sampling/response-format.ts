/**
 * OpenAI's `response_format` (Chat Completions `json_schema`/`json_object`/`text`, and Azure's flattened
 * `json_schema` form), checked before anything is sampled. Pure functions.
 *
 * The schema subset is what OpenAI's strict structured outputs accept and what the decoder
 * (trainer/sampling/structured.ts, xgrammar) enforces token by token: `type` (one or an array), `properties`,
 * `required`, `additionalProperties: false`, `items`, `enum`, `const`, `anyOf`, `$ref` to `#`, `#/$defs/…` or
 * `#/definitions/…`, string `pattern`/`format`/`minLength`/`maxLength`, array `minItems`/`maxItems`, integer
 * `minimum`/`maximum`, and annotations (`title`, `description`, `default`, `examples`, `$comment`). Anything
 * else is rejected naming its path, so a schema never silently means less than it says.
 * With `strict: true` OpenAI's rules also hold: the root is an object, every object lists all its properties
 * in `required` and has `additionalProperties: false`, nesting is at most 10 deep.
 */

export type StructuredFormat =
  { type: "json_object" } | { type: "json_schema"; name: string; strict: boolean; schema: Record<string, unknown> };

export class ResponseFormatError extends Error {
  override name = "ResponseFormatError";
  constructor(
    /** Where, as a dotted path from `response_format` (e.g. `response_format.json_schema.schema.properties.a`). */
    readonly path: string,
    message: string,
  ) {
    super(`${path}: ${message}`);
  }
}

/** Serialized schemas above this are refused (OpenAI's own limits are of the same order). */
export const MAX_SCHEMA_BYTES = 64 * 1024;
const MAX_STRICT_DEPTH = 10;
/** Any schema: bounds the grammar compiler's work (and this checker's recursion). */
const MAX_DEPTH = 32;

const ANNOTATIONS = ["title", "description", "default", "examples", "$comment"];
const COMMON = ["type", "enum", "const", "anyOf", "$ref", "$defs", "definitions", "$schema", "$id", ...ANNOTATIONS];
const BY_TYPE: Record<string, string[]> = {
  object: ["properties", "required", "additionalProperties"],
  array: ["items", "minItems", "maxItems"],
  string: ["pattern", "format", "minLength", "maxLength"],
  integer: ["minimum", "maximum"],
  number: [],
  boolean: [],
  null: [],
};
const TYPES = Object.keys(BY_TYPE);
/** String formats xgrammar turns into a grammar (and OpenAI documents). */
const FORMATS = ["date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6", "uuid"];

const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === "object" && !Array.isArray(v);

function typesOf(s: Record<string, unknown>, path: string): string[] {
  const t = s["type"];
  if (t === undefined) return [];
  const list = Array.isArray(t) ? t : [t];
  for (const x of list) {
    if (typeof x !== "string" || !TYPES.includes(x))
      throw new ResponseFormatError(`${path}.type`, `must be one of ${TYPES.join(", ")} (got ${JSON.stringify(x)})`);
  }
  if (list.length === 0) throw new ResponseFormatError(`${path}.type`, "must not be an empty array");
  return list as string[];
}

function checkSchema(
  s: unknown,
  path: string,
  depth: number,
  strict: boolean,
  defs: { has: (ref: string) => boolean },
): void {
  if (!isObject(s)) throw new ResponseFormatError(path, "must be a JSON Schema object");
  const types = typesOf(s, path);
  const allowed = new Set([
    ...COMMON,
    ...(types.length ? types : TYPES).flatMap((t) => BY_TYPE[t]!),
    // `properties` etc. next to an absent type mean an object schema
  ]);
  for (const k of Object.keys(s)) {
    if (!allowed.has(k)) {
      const where = Object.entries(BY_TYPE).find(([, ks]) => ks.includes(k));
      throw new ResponseFormatError(
        `${path}.${k}`,
        where
          ? `applies to type "${where[0]}" only, and this schema's type is ${JSON.stringify(s["type"])}`
          : `unsupported schema keyword "${k}" (structured outputs support: ${[...COMMON, ...Object.values(BY_TYPE).flat()].join(", ")})`,
      );
    }
  }
  if (depth > MAX_STRICT_DEPTH && strict)
    throw new ResponseFormatError(path, `nesting deeper than ${MAX_STRICT_DEPTH} levels (strict mode)`);
  if (depth > MAX_DEPTH) throw new ResponseFormatError(path, `nesting deeper than ${MAX_DEPTH} levels`);
  if (s["enum"] !== undefined && (!Array.isArray(s["enum"]) || s["enum"].length === 0))
    throw new ResponseFormatError(`${path}.enum`, "must be a non-empty array");
  const ref = s["$ref"];
  if (ref !== undefined) {
    if (typeof ref !== "string" || !defs.has(ref))
      throw new ResponseFormatError(
        `${path}.$ref`,
        `${JSON.stringify(ref)} does not name this schema ("#") or one of its $defs/definitions ("#/$defs/NAME")`,
      );
  }
  for (const key of ["$defs", "definitions"]) {
    const d = s[key];
    if (d === undefined) continue;
    if (!isObject(d)) throw new ResponseFormatError(`${path}.${key}`, "must be an object of schemas");
    for (const [name, sub] of Object.entries(d)) checkSchema(sub, `${path}.${key}.${name}`, depth + 1, strict, defs);
  }
  if (s["anyOf"] !== undefined) {
    const a = s["anyOf"];
    if (!Array.isArray(a) || a.length === 0)
      throw new ResponseFormatError(`${path}.anyOf`, "must be a non-empty array");
    a.forEach((sub, i) => checkSchema(sub, `${path}.anyOf[${i}]`, depth + 1, strict, defs));
  }
  const props = s["properties"];
  const isObj = types.includes("object") || (types.length === 0 && props !== undefined);
  if (props !== undefined) {
    if (!isObject(props)) throw new ResponseFormatError(`${path}.properties`, "must be an object of schemas");
    for (const [name, sub] of Object.entries(props))
      checkSchema(sub, `${path}.properties.${name}`, depth + 1, strict, defs);
  }
  const req = s["required"];
  if (req !== undefined) {
    if (!Array.isArray(req) || !req.every((x) => typeof x === "string"))
      throw new ResponseFormatError(`${path}.required`, "must be an array of property names");
    for (const r of req) {
      if (!isObject(props) || !(r in props))
        throw new ResponseFormatError(`${path}.required`, `names "${r}", which is not in properties`);
    }
  }
  const ap = s["additionalProperties"];
  if (ap !== undefined && ap !== false && ap !== true)
    throw new ResponseFormatError(`${path}.additionalProperties`, "must be false (or true outside strict mode)");
  if (strict && isObj) {
    if (ap !== false) throw new ResponseFormatError(`${path}.additionalProperties`, "must be false in strict mode");
    const names = isObject(props) ? Object.keys(props) : [];
    const missing = names.filter((n) => !(req as string[] | undefined)?.includes(n));
    if (missing.length)
      throw new ResponseFormatError(
        `${path}.required`,
        `must list every property in strict mode (missing: ${missing.join(", ")}); make a field optional with "type": [..., "null"]`,
      );
  }
  if (s["items"] !== undefined) checkSchema(s["items"], `${path}.items`, depth + 1, strict, defs);
  for (const k of ["minItems", "maxItems", "minLength", "maxLength"]) {
    const v = s[k];
    if (v !== undefined && !(Number.isInteger(v) && (v as number) >= 0))
      throw new ResponseFormatError(`${path}.${k}`, "must be a non-negative integer");
  }
  for (const k of ["minimum", "maximum"]) {
    const v = s[k];
    if (v !== undefined && !Number.isInteger(v)) throw new ResponseFormatError(`${path}.${k}`, "must be an integer");
  }
  if (s["pattern"] !== undefined) {
    if (typeof s["pattern"] !== "string") throw new ResponseFormatError(`${path}.pattern`, "must be a string");
    try {
      new RegExp(s["pattern"], "u");
    } catch (e) {
      throw new ResponseFormatError(`${path}.pattern`, `is not a regular expression: ${(e as Error).message}`);
    }
    const unsafe = unsafePattern(s["pattern"]);
    if (unsafe)
      throw new ResponseFormatError(
        `${path}.pattern`,
        `can match ${unsafe}: characters a JSON string must escape ('"', '\\', control characters) cannot be decoded in a pattern; use classes and literals without them`,
      );
  }
  if (s["format"] !== undefined && !FORMATS.includes(s["format"] as string))
    throw new ResponseFormatError(`${path}.format`, `must be one of ${FORMATS.join(", ")}`);
}

/** Whether a character may stand unescaped inside a JSON string. */
const plain = (code: number) => code >= 0x20 && code !== 0x22 && code !== 0x5c;

/**
 * Why a `pattern` cannot be decoded, or null. xgrammar writes the characters a pattern matches into the JSON
 * string as they are, without JSON escapes, so a pattern that can match `"`, `\` or a control character
 * (`.`, a negated class, `\s`, a range across them) would produce invalid JSON: such patterns are refused.
 */
export function unsafePattern(p: string): string | null {
  const escape = (c: string | undefined, inClass: boolean): string | null => {
    if (c === undefined) return "a trailing backslash";
    if (c === "d" || c === "w") return null;
    if ("sSDWbB".includes(c)) return `\\${c}`;
    if (c === "\\" || c === '"') return `an escaped ${JSON.stringify(c)}`;
    if (".*+?()[]{}|^$/-".includes(c) || (inClass && c === " ")) return null;
    return `the escape \\${c}`;
  };
  for (let i = 0; i < p.length; i++) {
    const c = p[i]!;
    if (c === "\\") {
      const bad = escape(p[++i], false);
      if (bad) return bad;
    } else if (c === ".") return '"." (any character)';
    else if (c === "[") {
      if (p[i + 1] === "^") return "a negated class [^…]";
      let prev: number | null = null;
      for (i++; i < p.length && p[i] !== "]"; i++) {
        let code: number;
        if (p[i] === "\\") {
          const e = p[++i];
          const bad = escape(e, true);
          if (bad) return bad;
          if (e === "d" || e === "w") {
            prev = null;
            continue;
          }
          code = e!.codePointAt(0)!;
        } else if (p[i] === "-" && prev !== null && p[i + 1] !== undefined && p[i + 1] !== "]") {
          let hi = p[++i]!;
          if (hi === "\\") hi = p[++i] ?? "";
          const top = hi.codePointAt(0) ?? 0;
          if (prev <= 0x22 && top >= 0x22) return `the range ${String.fromCodePoint(prev)}-${hi}, which includes '"'`;
          if (prev <= 0x5c && top >= 0x5c) return `the range ${String.fromCodePoint(prev)}-${hi}, which includes '\\'`;
          if (prev < 0x20) return "a range of control characters";
          prev = null;
          continue;
        } else code = p.codePointAt(i)!;
        if (!plain(code)) return `the character ${JSON.stringify(String.fromCodePoint(code))}`;
        prev = code;
      }
    } else if (!plain(c.codePointAt(0)!)) return `the character ${JSON.stringify(c)}`;
  }
  return null;
}

/** Validates a JSON Schema for structured outputs; `path` names it in errors. */
export function checkJsonSchema(schema: unknown, path: string, strict: boolean): Record<string, unknown> {
  if (!isObject(schema)) throw new ResponseFormatError(path, "must be a JSON Schema object");
  if (JSON.stringify(schema).length > MAX_SCHEMA_BYTES)
    throw new ResponseFormatError(path, `is larger than ${MAX_SCHEMA_BYTES} bytes`);
  const names = (key: string) => (isObject(schema[key]) ? Object.keys(schema[key]) : []);
  const refs = new Set([
    "#",
    ...names("$defs").map((n) => `#/$defs/${n}`),
    ...names("definitions").map((n) => `#/definitions/${n}`),
  ]);
  if (strict) {
    const t = typesOf(schema, path);
    if (!(t.length === 1 && t[0] === "object"))
      throw new ResponseFormatError(`${path}.type`, 'must be "object" at the root in strict mode');
  }
  checkSchema(schema, path, 0, strict, refs);
  return schema;
}

/**
 * Parses `response_format` (`where` names it: `response_format`, `spec.method.reinforcement.responseFormat`).
 * `null` for text (or no format).
 */
export function parseResponseFormat(rf: unknown, where = "response_format"): StructuredFormat | null {
  if (rf === undefined || rf === null) return null;
  if (!isObject(rf)) throw new ResponseFormatError(where, "must be an object");
  const type = rf["type"];
  if (type === "text") return null;
  if (type === "json_object") return { type: "json_object" };
  if (type !== "json_schema")
    throw new ResponseFormatError(
      `${where}.type`,
      `must be "text", "json_object" or "json_schema" (got ${JSON.stringify(type)})`,
    );
  // Chat Completions nests name/schema/strict under json_schema; Azure's RFT page puts them beside type.
  const nested = rf["json_schema"] !== undefined;
  const js = nested ? rf["json_schema"] : rf;
  const at = nested ? `${where}.json_schema` : where;
  if (!isObject(js)) throw new ResponseFormatError(at, "must be an object with name and schema");
  const name = js["name"];
  if (typeof name !== "string" || !/^[A-Za-z0-9_-]{1,64}$/.test(name))
    throw new ResponseFormatError(`${at}.name`, "is required: 1 to 64 letters, digits, '_' or '-'");
  const strict = js["strict"] ?? false;
  if (typeof strict !== "boolean") throw new ResponseFormatError(`${at}.strict`, "must be a boolean");
  if (js["schema"] === undefined) throw new ResponseFormatError(`${at}.schema`, "is required");
  const schema = checkJsonSchema(js["schema"], `${at}.schema`, strict);
  return { type: "json_schema", name, strict, schema };
}
