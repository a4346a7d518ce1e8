/**
 * OpenAI grader templates: `{{ item.a.b[0] }}`, `{{ sample.output_json.x }}`. Parsed once at validation
 * (syntax and namespace errors are config errors), rendered per grade (a path that resolves to nothing sets
 * `invalid_variable_error`). Non-string values render as JSON (strings render as themselves).
 */

export const SAMPLE_KEYS = ["output_text", "output_json", "output_tools", "choices", "output_audio"] as const;

export type PathStep = string | number;
export interface Ref {
  namespace: "item" | "sample";
  path: PathStep[];
  source: string; // the text between the braces, trimmed, for error messages
}
export type Part = string | Ref;
export interface Template {
  parts: Part[];
  /** True when the template has no references (rendering is the identity). */
  constant: boolean;
}

export class TemplateSyntaxError extends Error {}

/** Longest text one template may render to (README "Limits"): `{{ item.big }}` × N could otherwise build gigabytes. */
export const RENDER_MAX_CHARS = 16 * 1024 * 1024;

/** A template rendered past RENDER_MAX_CHARS (the grade scores 0 with `truncated_observation_error`). */
export class RenderLimitError extends Error {}

/** How much of a reference's text an error message quotes (a hostile template can be megabytes long). */
const QUOTE_MAX = 80;
function quote(s: string): string {
  return s.length <= QUOTE_MAX ? s : `${s.slice(0, QUOTE_MAX)}… (${s.length} characters)`;
}

/**
 * Parses a template string. Throws TemplateSyntaxError naming the bad reference. Linear in the text: each
 * `{{` is paired with the first `}}` after it by one forward scan (a regex like /\{\{(.*?)\}\}/ retries from
 * every `{{` and is quadratic on many unclosed ones), and a reference's path is read with sticky regexes
 * (never re-slicing the rest of the reference).
 */
export function parseTemplate(text: string): Template {
  const parts: Part[] = [];
  let last = 0;
  for (;;) {
    const start = text.indexOf("{{", last);
    if (start < 0) break;
    const end = text.indexOf("}}", start + 2);
    // No "}}" after this "{{" means none after any later "{{" either: the first one is the unclosed one.
    if (end < 0) throw new TemplateSyntaxError(`unclosed "{{" at offset ${start}`);
    if (start > last) parts.push(text.slice(last, start));
    parts.push(parseRef(text.slice(start + 2, end).trim(), start));
    last = end + 2;
  }
  if (last < text.length) parts.push(text.slice(last));
  return { parts, constant: parts.every((p) => typeof p === "string") };
}

const HEAD = /^([A-Za-z_][A-Za-z0-9_]*)/;
const STEPS: [RegExp, (m: RegExpExecArray) => PathStep][] = [
  [/\.\s*([A-Za-z_$][\w$-]*)/y, (m) => m[1]!],
  [/\[\s*(\d+)\s*\]/y, (m) => Number(m[1])],
  [/\[\s*"((?:[^"\\]|\\.)*)"\s*\]/y, (m) => m[1]!],
  [/\[\s*'([^']*)'\s*\]/y, (m) => m[1]!],
];

function parseRef(src: string, offset: number): Ref {
  const where = `"{{ ${quote(src)} }}" at offset ${offset}`;
  const head = HEAD.exec(src);
  if (!head) throw new TemplateSyntaxError(`${where}: expected item.<path> or sample.<path>`);
  const ns = head[1]!;
  if (ns !== "item" && ns !== "sample") {
    throw new TemplateSyntaxError(`${where}: unknown namespace "${quote(ns)}" (only "item" and "sample" exist)`);
  }
  const path: PathStep[] = [];
  let i = ns.length;
  while (i < src.length) {
    let matched = false;
    for (const [re, step] of STEPS) {
      re.lastIndex = i;
      const m = re.exec(src);
      if (!m) continue;
      path.push(step(m));
      i = re.lastIndex;
      matched = true;
      break;
    }
    if (!matched) throw new TemplateSyntaxError(`${where}: cannot parse "${quote(src.slice(i))}"`);
  }
  if (path.length === 0) throw new TemplateSyntaxError(`${where}: a reference needs a variable after "${ns}."`);
  if (ns === "sample" && !(SAMPLE_KEYS as readonly string[]).includes(String(path[0]))) {
    throw new TemplateSyntaxError(
      `${where}: sample has no "${quote(String(path[0]))}" (it has ${SAMPLE_KEYS.join(", ")})`,
    );
  }
  return { namespace: ns, path, source: src };
}

export interface RenderScope {
  item: unknown;
  sample: unknown;
}

export interface Rendered {
  text: string;
  /** References that resolved to nothing (→ invalid_variable_error). */
  missing: string[];
}

const MISSING = Symbol("missing");

export function resolve(ref: Ref, scope: RenderScope): unknown {
  let v: unknown = scope[ref.namespace];
  for (const step of ref.path) {
    if (v === null || typeof v !== "object") return MISSING;
    if (Array.isArray(v)) {
      if (typeof step !== "number" || step >= v.length) return MISSING;
      v = v[step];
    } else {
      if (!Object.hasOwn(v, step)) return MISSING;
      v = (v as Record<string, unknown>)[step];
    }
  }
  return v === undefined ? MISSING : v;
}

export function render(t: Template, scope: RenderScope): Rendered {
  if (t.constant) return { text: (t.parts[0] as string | undefined) ?? "", missing: [] };
  let text = "";
  const missing: string[] = [];
  for (const p of t.parts) {
    if (typeof p === "string") {
      text += p;
      continue;
    }
    const v = resolve(p, scope);
    if (v === MISSING) missing.push(p.source);
    else text += typeof v === "string" ? v : JSON.stringify(v);
    if (text.length > RENDER_MAX_CHARS) {
      throw new RenderLimitError(`the template renders to more than ${RENDER_MAX_CHARS} characters`);
    }
  }
  return { text, missing };
}
