/**
 * Grader validation: JSON Schema (from proto/graders.ts) per grader type, then the checks a schema cannot
 * express (templates, formula, label sets, ranges, nesting). Produces a compiled grader: the normalised
 * config plus parsed templates and formula, ready to grade many samples. Pure; python compilation and
 * endpoint availability are checked by the engine.
 */
import { Ajv, type ErrorObject, type ValidateFunction } from "ajv";
import {
  type ContentItem,
  GRADER_SCHEMAS,
  type Grader,
  type GraderType,
  type LabelModelGrader,
  type MultiGrader,
  PYTHON_SOURCE_MAX_BYTES,
  type PythonGrader,
  type ScoreModelGrader,
  type StringCheckGrader,
  SUB_GRADER_TYPES,
  type SubGrader,
  type TextSimilarityGrader,
  TOP_LEVEL_GRADER_TYPES,
} from "../../proto/graders.js";
import { FormulaError, formulaVariables, type Node, parseFormula } from "./formula.js";
import { parseTemplate, type Template, TemplateSyntaxError } from "./template.js";

/** A grader config error: what is wrong, and where (a dotted JSON path such as `grader.graders.a.operation`). */
export class GraderValidationError extends Error {
  constructor(
    message: string,
    readonly param: string,
    readonly code = "invalid_grader",
  ) {
    super(`${param}: ${message}`);
  }
}

export type CompiledContent = {
  type: string;
  text?: Template;
  imageUrl?: Template;
  audioData?: Template;
  raw: unknown;
};
export type CompiledMessage = { role: string; content: Template | CompiledContent[] };

export type Compiled =
  | { type: "string_check"; config: StringCheckGrader; input: Template; reference: Template }
  | { type: "text_similarity"; config: TextSimilarityGrader; input: Template; reference: Template }
  | { type: "score_model"; config: ScoreModelGrader; messages: CompiledMessage[]; range: [number, number] }
  | { type: "label_model"; config: LabelModelGrader; messages: CompiledMessage[] }
  | { type: "python"; config: PythonGrader }
  | { type: "multi"; config: MultiGrader; graders: Record<string, CompiledSub>; formula: Node };
export type CompiledSub = Exclude<Compiled, { type: "multi" }>;

export interface ValidateOptions {
  /** Grader types accepted at the top level (default: OpenAI's RFT set, which excludes label_model). */
  topLevel?: readonly GraderType[];
  /** Whether `cosine` may be used (only when an embeddings endpoint is configured). */
  cosineAvailable?: boolean;
}

const ajv = new Ajv({ allErrors: true, strict: false, discriminator: true });
const validators = new Map<string, ValidateFunction>(
  Object.entries(GRADER_SCHEMAS).map(([type, schema]) => [type, ajv.compile(schema)]),
);

function formatAjvError(e: ErrorObject, base: string): GraderValidationError {
  const path = base + e.instancePath.replaceAll("/", ".").replace(/\.(\d+)(?=\.|$)/g, "[$1]");
  switch (e.keyword) {
    case "required":
      return new GraderValidationError(`missing required field "${e.params.missingProperty}"`, path);
    case "additionalProperties":
      return new GraderValidationError(`unknown field "${e.params.additionalProperty}"`, path);
    case "enum":
      return new GraderValidationError(`must be one of ${(e.params.allowedValues as string[]).join(", ")}`, path);
    case "const":
      return new GraderValidationError(`must be ${JSON.stringify(e.params.allowedValue)}`, path);
    case "discriminator":
      return new GraderValidationError(
        `type must be one of input_text, output_text, input_image, input_audio (got ${JSON.stringify(e.params.tagValue)})`,
        path,
      );
    case "anyOf":
      return new GraderValidationError("has the wrong shape (see the grader reference for the accepted forms)", path);
    default:
      return new GraderValidationError(e.message ?? "is invalid", path);
  }
}

/** Picks the most useful of Ajv's errors: specific ones first, the generic anyOf summary last. */
function firstError(errors: ErrorObject[]): ErrorObject {
  const specific = errors.filter((e) => e.keyword !== "anyOf" && e.keyword !== "const" && e.keyword !== "type");
  return specific[0] ?? errors.find((e) => e.keyword === "type") ?? errors[0]!;
}

function template(text: string, param: string): Template {
  try {
    return parseTemplate(text);
  } catch (err) {
    if (err instanceof TemplateSyntaxError) throw new GraderValidationError(`bad template: ${err.message}`, param);
    throw err;
  }
}

function messages(input: ScoreModelGrader["input"], param: string): CompiledMessage[] {
  return input.map((m, i) => {
    const p = `${param}.input[${i}].content`;
    if (typeof m.content === "string") return { role: m.role, content: template(m.content, p) };
    const items = Array.isArray(m.content) ? m.content : [m.content];
    return { role: m.role, content: items.map((c, j) => contentItem(c, `${p}[${j}]`)) };
  });
}

/** One content item, its templates parsed: text, an image's URL, audio's data (OpenAI renders them all). */
function contentItem(c: ContentItem, p: string): CompiledContent {
  // A bare string in a content array is text, as OpenAI's input_text.
  if (typeof c === "string") return { type: "input_text", text: template(c, p), raw: { type: "input_text", text: c } };
  switch (c.type) {
    case "input_text":
    case "output_text":
      return { type: c.type, text: template(c.text, `${p}.text`), raw: c };
    case "input_image":
      if (typeof c.image_url !== "string") {
        const why = c.file_id
          ? "file_id names a file of OpenAI's Files API, which this service does not have: give image_url (an https: or data: URL, or a template such as {{ item.image_url }})"
          : "needs image_url (an https: or data: URL, or a template such as {{ item.image_url }})";
        throw new GraderValidationError(why, `${p}.image_url`);
      }
      return { type: c.type, imageUrl: template(c.image_url, `${p}.image_url`), raw: c };
    case "input_audio":
      return { type: c.type, audioData: template(c.input_audio.data, `${p}.input_audio.data`), raw: c };
  }
}

function compileOne(raw: unknown, param: string, allowed: readonly string[], opts: ValidateOptions): Compiled {
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) {
    throw new GraderValidationError("must be a JSON object", param);
  }
  const type = (raw as { type?: unknown }).type;
  if (type === undefined) throw new GraderValidationError(`missing required field "type"`, param);
  if (typeof type !== "string" || !allowed.includes(type)) {
    const why = type === "multi" ? "a multi grader cannot contain another multi grader" : "";
    const lead = why || `unsupported grader type ${JSON.stringify(type)}`;
    throw new GraderValidationError(`${lead}; allowed here: ${allowed.join(", ")}`, `${param}.type`);
  }
  const v = validators.get(type)!;
  if (!v(raw)) throw formatAjvError(firstError(v.errors!), param);

  switch (type) {
    case "string_check": {
      const g = raw as StringCheckGrader;
      return {
        type,
        config: g,
        input: template(g.input, `${param}.input`),
        reference: template(g.reference, `${param}.reference`),
      };
    }
    case "text_similarity": {
      const g = raw as TextSimilarityGrader;
      if (g.evaluation_metric === "cosine" && !opts.cosineAvailable) {
        throw new GraderValidationError(
          "cosine needs an embeddings endpoint: start the grader with --embeddings-base-url (or RFT_GRADER_EMBEDDINGS_BASE_URL)",
          `${param}.evaluation_metric`,
        );
      }
      return {
        type,
        config: g,
        input: template(g.input, `${param}.input`),
        reference: template(g.reference, `${param}.reference`),
      };
    }
    case "score_model": {
      const g = raw as ScoreModelGrader;
      const range = (g.range ?? [0, 1]) as [number, number];
      if (!(range[0] < range[1]))
        throw new GraderValidationError("range must be [min, max] with min < max", `${param}.range`);
      return { type, config: g, messages: messages(g.input, param), range };
    }
    case "label_model": {
      const g = raw as LabelModelGrader;
      const outside = g.passing_labels.filter((l) => !g.labels.includes(l));
      if (outside.length > 0) {
        throw new GraderValidationError(
          `passing_labels not in labels: ${outside.join(", ")}`,
          `${param}.passing_labels`,
        );
      }
      return { type, config: g, messages: messages(g.input, param) };
    }
    case "python": {
      const g = raw as PythonGrader;
      const bytes = Buffer.byteLength(g.source, "utf8");
      if (bytes > PYTHON_SOURCE_MAX_BYTES) {
        throw new GraderValidationError(
          `source is ${bytes} bytes; the limit is ${PYTHON_SOURCE_MAX_BYTES}`,
          `${param}.source`,
        );
      }
      return { type, config: g };
    }
    case "multi":
      return compileMulti(raw as MultiGrader, param, opts);
  }
  throw new GraderValidationError(`unsupported grader type ${JSON.stringify(type)}`, `${param}.type`);
}

function compileMulti(raw: MultiGrader, param: string, opts: ValidateOptions): Compiled {
  let map = raw.graders as unknown;
  if (map === null || typeof map !== "object" || Array.isArray(map)) {
    throw new GraderValidationError("must be an object mapping names to sub-graders", `${param}.graders`);
  }
  // SDK compatibility: a single sub-grader object (it has a "type") is accepted as a one-entry map under its name.
  if (typeof (map as { type?: unknown }).type === "string") {
    const single = map as { name?: string };
    map = { [single.name ?? "grader"]: single };
  }
  const entries = Object.entries(map as Record<string, unknown>);
  if (entries.length === 0) throw new GraderValidationError("needs at least one sub-grader", `${param}.graders`);
  const graders: Record<string, CompiledSub> = {};
  for (const [key, sub] of entries) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) {
      throw new GraderValidationError(
        "sub-grader names are the formula's variables: letters, digits and _, not starting with a digit",
        `${param}.graders.${key}`,
      );
    }
    graders[key] = compileOne(sub, `${param}.graders.${key}`, SUB_GRADER_TYPES, opts) as CompiledSub;
  }
  let formula: Node;
  try {
    formula = parseFormula(raw.calculate_output);
  } catch (err) {
    if (err instanceof FormulaError) {
      throw new GraderValidationError(err.message, `${param}.calculate_output`, "formula_parse_error");
    }
    throw err;
  }
  for (const v of formulaVariables(formula)) {
    if (!Object.hasOwn(graders, v.name)) {
      throw new GraderValidationError(
        `unknown variable "${v.name}" at position ${v.pos} (sub-graders: ${Object.keys(graders).join(", ")})`,
        `${param}.calculate_output`,
        "formula_parse_error",
      );
    }
  }
  const config: MultiGrader = {
    ...raw,
    graders: Object.fromEntries(Object.entries(graders).map(([k, g]) => [k, g.config as SubGrader])),
  };
  return { type: "multi", config, graders, formula };
}

/** Validates and compiles a grader config. Throws GraderValidationError (message names the field). */
export function compileGrader(raw: unknown, opts: ValidateOptions = {}, param = "grader"): Compiled {
  return compileOne(raw, param, opts.topLevel ?? TOP_LEVEL_GRADER_TYPES, opts);
}

/** The display name of a grader (python and multi names are optional in OpenAI's examples). */
export function graderName(g: Grader): string {
  return g.name ?? g.type;
}
