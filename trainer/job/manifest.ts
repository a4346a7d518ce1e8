/**
 * Reads a FineTuneJob manifest (YAML or JSON) and validates it against proto/finetunejob.ts, then the
 * grader with the grader engine's own validation. Every problem names the file, line and field.
 * Relative paths (model, trainingFile, validationFile, key files) resolve against the manifest's folder.
 */
import { readFileSync } from "node:fs";
import { dirname, isAbsolute, resolve } from "node:path";
import { Ajv, type ErrorObject } from "ajv";
import { type Document, isAlias, LineCounter, parseAllDocuments, visit } from "yaml";
import { compileGrader, GraderValidationError } from "../../grader-sidecar/src/client.js";
import { FineTuneJob } from "../../proto/finetunejob.js";
import { parseResponseFormat, ResponseFormatError } from "../sampling/response-format.js";

export interface ManifestIssue {
  line: number;
  field: string;
  message: string;
}

export class ManifestError extends Error {
  constructor(
    readonly file: string,
    readonly issues: ManifestIssue[],
  ) {
    super(issues.map((i) => `${file}:${i.line}: ${i.field ? `${i.field}: ` : ""}${i.message}`).join("\n"));
  }
}

const ajv = new Ajv({ allErrors: true, strict: false });
const validate = ajv.compile(FineTuneJob);

type Path = (string | number)[];

function lineOf(doc: Document, lc: LineCounter, path: Path): number {
  for (let n = path.length; n >= 0; n--) {
    const node = doc.getIn(path.slice(0, n), true) as { range?: [number, number, number] } | undefined;
    if (node && typeof node === "object" && node.range) return lc.linePos(node.range[0]).line;
  }
  return 1;
}

const dotted = (path: Path) => path.map((p, i) => (typeof p === "number" ? `[${p}]` : i === 0 ? p : `.${p}`)).join("");

function ajvIssue(e: ErrorObject): { path: Path; message: string } {
  const path: Path = e.instancePath
    .split("/")
    .slice(1)
    .map((s) => (/^\d+$/.test(s) ? Number(s) : s.replaceAll("~1", "/").replaceAll("~0", "~")));
  switch (e.keyword) {
    case "required":
      return { path, message: `missing required field "${e.params.missingProperty}"` };
    case "additionalProperties":
      return {
        path: [...path, e.params.additionalProperty],
        message: `unknown field "${e.params.additionalProperty}"`,
      };
    case "enum":
      return { path, message: `must be one of ${(e.params.allowedValues as string[]).join(", ")}` };
    case "const":
      return { path, message: `must be ${JSON.stringify(e.params.allowedValue)}` };
    default:
      return { path, message: e.message ?? "is invalid" };
  }
}

/** Keeps the most specific error per path (Ajv reports every branch of a union). */
function pickErrors(errors: ErrorObject[]): ErrorObject[] {
  const byPath = new Map<string, ErrorObject>();
  const rank = (e: ErrorObject) => (e.keyword === "anyOf" ? 3 : e.keyword === "const" || e.keyword === "type" ? 2 : 1);
  for (const e of errors) {
    // Every unknown key of an object is its own issue (they share the object's path).
    if (e.keyword === "additionalProperties") {
      byPath.set(`${e.instancePath}/${String(e.params.additionalProperty)}\u0000unknown`, e);
      continue;
    }
    const prev = byPath.get(e.instancePath);
    if (!prev || rank(e) < rank(prev)) byPath.set(e.instancePath, e);
  }
  // Drop a parent's "anyOf" when a child path has its own error.
  return [...byPath.values()].filter(
    (e) =>
      !(
        e.keyword === "anyOf" &&
        [...byPath.keys()].some((p) => p !== e.instancePath && p.startsWith(`${e.instancePath}/`))
      ),
  );
}

/** Largest manifest accepted, bytes (README "Limits"). */
export const MANIFEST_MAX_BYTES = 1024 * 1024;
/**
 * The `yaml` library's alias budget (its default, made explicit): past it expanding aliases fails instead of
 * building an exponentially large value (an anchor/alias bomb).
 */
export const MANIFEST_MAX_ALIAS_COUNT = 100;

/** The line of the first alias (`*name`) in the document, where an alias bomb starts expanding. */
function firstAliasLine(doc: Document, lc: LineCounter): number {
  let line = 1;
  visit(doc, (_key, node) => {
    if (isAlias(node) && node.range) {
      line = lc.linePos(node.range[0]).line;
      return visit.BREAK;
    }
    return undefined;
  });
  return line;
}

export interface LoadedManifest {
  job: FineTuneJob;
  file: string;
  /** Paths resolved against the manifest's folder. */
  paths: { model: string; trainingFile: string; validationFile?: string; loraAdapter?: string };
}

/** The manifest's one YAML document (bounded size and alias expansion), as JSON, with what maps it to lines. */
function readYaml(text: string, file: string) {
  const bytes = Buffer.byteLength(text, "utf8");
  if (bytes > MANIFEST_MAX_BYTES) {
    throw new ManifestError(file, [
      { line: 1, field: "", message: `the manifest is ${bytes} bytes; the limit is ${MANIFEST_MAX_BYTES}` },
    ]);
  }
  const lc = new LineCounter();
  const docs = parseAllDocuments(text, { lineCounter: lc, prettyErrors: false });
  if (!Array.isArray(docs)) throw new ManifestError(file, [{ line: 1, field: "", message: "not a YAML document" }]);
  const doc = docs.find((d) => d.contents !== null);
  if (!doc) throw new ManifestError(file, [{ line: 1, field: "", message: "the file is empty" }]);
  if (doc.errors.length > 0) {
    throw new ManifestError(
      file,
      doc.errors.map((e) => ({
        line: e.linePos?.[0]?.line ?? 1,
        field: "",
        message: `YAML: ${e.message.split("\n")[0]}`,
      })),
    );
  }
  try {
    return { doc, lc, obj: doc.toJS({ maxAliasCount: MANIFEST_MAX_ALIAS_COUNT }) as unknown };
  } catch (err) {
    const alias = /alias/i.test((err as Error).message);
    throw new ManifestError(file, [
      {
        line: alias ? firstAliasLine(doc, lc) : 1,
        field: "",
        message: alias
          ? `YAML: its aliases expand past the limit of ${MANIFEST_MAX_ALIAS_COUNT} (an anchor/alias bomb?): ${(err as Error).message}`
          : `YAML: ${(err as Error).message}`,
      },
    ]);
  }
}

type YamlAt = Pick<ReturnType<typeof readYaml>, "doc" | "lc">;

/** A dotted path with [i] indices (`a.b[0].c`) as path segments. */
const pathOf = (dottedPath: string): Path =>
  dottedPath
    .split(/\.|\[(\d+)\]/)
    .filter((s) => s !== undefined && s !== "")
    .map((s) => (/^\d+$/.test(s) ? Number(s) : s));

/** The method's shape beyond the schema: reinforcement present exactly when the type says so. */
function methodIssues(method: FineTuneJob["spec"]["method"] | undefined, y: YamlAt): ManifestIssue[] {
  const issues: ManifestIssue[] = [];
  if (method?.type === "reinforcement" && !method.reinforcement) {
    issues.push({
      line: lineOf(y.doc, y.lc, ["spec", "method"]),
      field: "spec.method.reinforcement",
      message: 'is required when type is "reinforcement"',
    });
  }
  if (method?.type === "supervised" && method.reinforcement) {
    issues.push({
      line: lineOf(y.doc, y.lc, ["spec", "method", "reinforcement"]),
      field: "spec.method.reinforcement",
      message: 'is not allowed when type is "supervised"',
    });
  }
  return issues;
}

/** The grader engine's validation and the response format's check, as manifest issues with their lines. */
function reinforcementIssues(method: FineTuneJob["spec"]["method"] | undefined, y: YamlAt): ManifestIssue[] {
  if (method?.type !== "reinforcement") return [];
  const issues: ManifestIssue[] = [];
  const rft = method.reinforcement;
  if (rft?.grader && typeof rft.grader === "object") {
    try {
      compileGrader(rft.grader);
    } catch (err) {
      if (!(err instanceof GraderValidationError)) throw err;
      // The grader error's param is a dotted path starting at "grader".
      const path: Path = ["spec", "method", "reinforcement", "grader", ...pathOf(err.param.replace(/^grader\.?/, ""))];
      issues.push({
        line: lineOf(y.doc, y.lc, path),
        field: dotted(path),
        message: err.message.replace(`${err.param}: `, ""),
      });
    }
  }
  if (rft?.responseFormat) {
    try {
      parseResponseFormat(rft.responseFormat, "spec.method.reinforcement.responseFormat");
    } catch (err) {
      if (!(err instanceof ResponseFormatError)) throw err;
      const path = pathOf(err.path);
      issues.push({
        line: lineOf(y.doc, y.lc, path),
        field: err.path,
        message: err.message.replace(`${err.path}: `, ""),
      });
    }
  }
  return issues;
}

export function parseManifest(text: string, file: string): LoadedManifest {
  const y = readYaml(text, file);
  const issues: ManifestIssue[] = [];
  if (!validate(y.obj)) {
    for (const e of pickErrors(validate.errors!)) {
      const { path, message } = ajvIssue(e);
      issues.push({ line: lineOf(y.doc, y.lc, path), field: dotted(path), message });
    }
  }
  const job = y.obj as FineTuneJob;
  const method = job?.spec?.method;
  issues.push(...methodIssues(method, y), ...reinforcementIssues(method, y));
  if (issues.length > 0)
    throw new ManifestError(
      file,
      issues.sort((a, b) => a.line - b.line),
    );
  const base = dirname(resolve(file));
  const abs = (p: string) => (isAbsolute(p) ? p : resolve(base, p));
  const lora = job.spec.method.supervised?.lora ?? job.spec.method.reinforcement?.lora;
  return {
    job,
    file,
    paths: {
      model: abs(job.spec.model),
      trainingFile: abs(job.spec.trainingFile),
      validationFile: job.spec.validationFile ? abs(job.spec.validationFile) : undefined,
      ...(lora?.adapter ? { loraAdapter: abs(lora.adapter) } : {}),
    },
  };
}

export function loadManifest(file: string): LoadedManifest {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    throw new ManifestError(file, [
      { line: 0, field: "", message: `cannot read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}` },
    ]);
  }
  return parseManifest(text, file);
}
