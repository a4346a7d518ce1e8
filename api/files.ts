/**
 * The Files API's store: a directory (`<data>/files/`), one `<id>.data` (the bytes as uploaded) and one
 * `<id>.json` (the OpenAI file object) per file, each written atomically (a crash never leaves a listed file
 * without its bytes). Uploads are validated as OpenAI validates them: `fine-tune` files line by line with the
 * trainer's own dataset validator (RFT or SFT rows), `evals` files as JSONL objects; every bad line is named.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { replaceFileAtomic } from "../trainer/checkpoint/store.js";
import { type DatasetIssue, DatasetError, LIMITS, parseRftDataset, parseSftDataset } from "../trainer/data/dataset.js";
import { ApiError, notFound } from "./errors.js";
import { ALL_PROJECTS, DEFAULT_PROJECT, visible } from "./http.js";
import { isIdOf, newId, now } from "./ids.js";

export const PURPOSES = ["fine-tune", "evals"] as const;
export type Purpose = (typeof PURPOSES)[number];

export interface FileObject {
  id: string;
  object: "file";
  bytes: number;
  created_at: number;
  filename: string;
  purpose: Purpose;
  status: "processed";
  expires_at: null;
  status_details: null;
}

const MAX_ISSUES_SHOWN = 20;

/** The issues as OpenAI words them: the file, then one line per problem with its line number and field. */
export function describeIssues(filename: string, issues: readonly DatasetIssue[]): string {
  const shown = issues
    .slice(0, MAX_ISSUES_SHOWN)
    .map((i) => `${i.line > 0 ? `line ${i.line}` : "file"}: ${i.field ? `${i.field}: ` : ""}${i.message}`);
  const more = issues.length > MAX_ISSUES_SHOWN ? [`… and ${issues.length - MAX_ISSUES_SHOWN} more`] : [];
  return [`Invalid file format in '${filename}': ${issues.length} problem(s).`, ...shown, ...more].join("\n");
}

const UTF8 = new TextDecoder("utf-8", { fatal: true });

/** UTF-8 text, or the lines with bytes that are not (named, never replaced with U+FFFD). */
function decode(bytes: Uint8Array, issues: DatasetIssue[]): string | null {
  try {
    return UTF8.decode(bytes);
  } catch {
    let line = 1;
    let start = 0;
    for (let i = 0; i <= bytes.length; i++) {
      if (i === bytes.length || bytes[i] === 0x0a) {
        try {
          UTF8.decode(bytes.subarray(start, i));
        } catch {
          issues.push({ line, field: "", message: "not valid UTF-8" });
        }
        line++;
        start = i + 1;
      }
    }
    return null;
  }
}

/**
 * Validates an upload; returns the issues (empty: valid). A `fine-tune` file is valid when it is a valid RFT
 * dataset or a valid SFT dataset (the job's method decides later which it must be); when it is neither, the
 * issues of the closer of the two are reported.
 */
export function validateUpload(purpose: Purpose, filename: string, bytes: Uint8Array): DatasetIssue[] {
  const issues: DatasetIssue[] = [];
  const text = decode(bytes, issues);
  if (text === null) return issues;
  if (purpose === "evals") {
    let rows = 0;
    text.split("\n").forEach((raw, i) => {
      if (raw.trim() === "") return;
      rows++;
      let v: unknown;
      try {
        v = JSON.parse(raw);
      } catch (e) {
        return issues.push({ line: i + 1, field: "", message: `not valid JSON (${(e as Error).message})` });
      }
      if (v === null || typeof v !== "object" || Array.isArray(v))
        issues.push({ line: i + 1, field: "", message: "each line must be a JSON object" });
    });
    if (rows === 0) issues.push({ line: 0, field: "", message: "the file has no rows" });
    return issues;
  }
  const attempt = (parse: (t: string, f: string, o: { maxRows: number }) => unknown): DatasetIssue[] => {
    try {
      parse(text, filename, { maxRows: LIMITS.rftTrain });
      return [];
    } catch (e) {
      if (e instanceof DatasetError) return e.issues;
      throw e;
    }
  };
  const rft = attempt(parseRftDataset);
  if (rft.length === 0) return [];
  const sft = attempt(parseSftDataset);
  if (sft.length === 0) return [];
  return sft.length < rft.length ? sft : rft;
}

interface Stored {
  file: FileObject;
  seq: number;
  project?: string;
}

export class FileStore {
  private readonly byId = new Map<string, Stored>();
  private seq = 0;

  constructor(readonly dir: string) {
    mkdirSync(dir, { recursive: true });
    for (const name of readdirSync(dir)) {
      if (name.includes(".tmp-")) rmSync(join(dir, name), { force: true });
      else if (name.endsWith(".json")) {
        const s = JSON.parse(readFileSync(join(dir, name), "utf8")) as Stored;
        if (existsSync(this.path(s.file.id))) this.byId.set(s.file.id, s);
        this.seq = Math.max(this.seq, s.seq);
      }
    }
  }

  /** Where a file's bytes are. */
  path(id: string): string {
    return join(this.dir, `${id}.data`);
  }

  /** Validates and stores an upload; a bad file is a 400 naming its lines, and nothing is stored. */
  create(purpose: string, filename: string, bytes: Uint8Array, project = DEFAULT_PROJECT): FileObject {
    if (!(PURPOSES as readonly string[]).includes(purpose))
      throw new ApiError(
        400,
        `Invalid value for 'purpose': '${purpose}'. This server stores files for ${PURPOSES.map((p) => `'${p}'`).join(" and ")}.`,
        "purpose",
        "invalid_value",
      );
    const issues = validateUpload(purpose as Purpose, filename, bytes);
    if (issues.length > 0) throw new ApiError(400, describeIssues(filename, issues), "file", "invalid_file_format");
    const file: FileObject = {
      id: newId("file-"),
      object: "file",
      bytes: bytes.byteLength,
      created_at: now(),
      filename,
      purpose: purpose as Purpose,
      status: "processed",
      expires_at: null,
      status_details: null,
    };
    const stored = { file, seq: ++this.seq, project };
    replaceFileAtomic(this.path(file.id), bytes);
    replaceFileAtomic(join(this.dir, `${file.id}.json`), JSON.stringify(stored));
    this.byId.set(file.id, stored);
    return file;
  }

  get(id: string, param: string | null = null, project = ALL_PROJECTS): FileObject {
    const s = isIdOf("file-", id) ? this.byId.get(id) : undefined;
    if (!s || !visible(s.project, project)) throw notFound("file", id, param);
    return s.file;
  }

  content(id: string, project = ALL_PROJECTS): Buffer {
    this.get(id, null, project);
    return readFileSync(this.path(id));
  }

  /** Newest first (OpenAI's default order), or oldest first. */
  list(purpose: string | null, order: "asc" | "desc", project = ALL_PROJECTS): FileObject[] {
    const all = [...this.byId.values()]
      .filter((s) => visible(s.project, project) && (purpose === null || s.file.purpose === purpose))
      .sort((a, b) => a.seq - b.seq)
      .map((s) => s.file);
    return order === "desc" ? all.reverse() : all;
  }

  delete(id: string, project = ALL_PROJECTS): { id: string; object: "file"; deleted: true } {
    this.get(id, null, project);
    rmSync(join(this.dir, `${id}.json`), { force: true });
    rmSync(this.path(id), { force: true });
    this.byId.delete(id);
    return { id, object: "file", deleted: true };
  }
}
