/**
 * Dataset files in OpenAI's JSONL formats, validated line by line before any training starts.
 * - RFT rows: `messages` (developer/user/assistant/tool, ending with a user turn), optional `tools`;
 *   every other key is grading context exposed to graders as `item`. `provenance` is governance metadata.
 * - SFT rows: `messages` with at least one assistant turn (optional `weight` 0/1 on assistant turns), optional `tools`.
 * Every problem is reported with its line number and field; nothing is trained on an invalid file.
 */
import { readFileSync } from "node:fs";
import { rowId } from "../../ledger/client.js";
import { parseToolCallList, parseTools, ToolsError } from "../sampling/tools.js";

export interface ChatMessage {
  role: "system" | "developer" | "user" | "assistant" | "tool";
  content: string | null;
  tool_calls?: unknown[];
  tool_call_id?: string;
  name?: string;
  weight?: 0 | 1;
}

export interface RftRow {
  line: number;
  messages: ChatMessage[];
  tools?: unknown[];
  /** The grading context (`item`): the entire example, as in OpenAI's RFT, minus the `provenance` metadata. */
  item: Record<string, unknown>;
  provenance?: { authority: string; credential: string };
  /** The parsed JSON object of the line, as written. */
  raw: Record<string, unknown>;
}

export interface SftRow {
  line: number;
  messages: ChatMessage[];
  tools?: unknown[];
  raw: Record<string, unknown>;
}

export interface DatasetIssue {
  line: number;
  field: string;
  message: string;
}

export class DatasetError extends Error {
  constructor(
    readonly file: string,
    readonly issues: DatasetIssue[],
  ) {
    const shown = issues.slice(0, 20).map((i) => `  ${file}:${i.line}: ${i.field ? `${i.field}: ` : ""}${i.message}`);
    const more = issues.length > 20 ? [`  … and ${issues.length - 20} more`] : [];
    super([`${file}: ${issues.length} invalid line(s)`, ...shown, ...more].join("\n"));
  }
}

export const LIMITS = { rftTrain: 50_000, rftValid: 1_000, sftTrain: 50_000, sftValid: 50_000 } as const;

const RFT_ROLES = ["developer", "user", "assistant", "tool"];
const SFT_ROLES = ["system", "developer", "user", "assistant", "tool"];

function checkContent(content: unknown, field: string, issues: (f: string, m: string) => void, allowNull: boolean) {
  if (typeof content === "string") return;
  if (content === null || content === undefined) {
    if (!allowNull) issues(field, "is required (a string or an array of content parts)");
    return;
  }
  if (!Array.isArray(content)) return issues(field, "must be a string or an array of content parts");
  for (const [i, part] of content.entries()) {
    const p = part as Record<string, unknown>;
    if (p === null || typeof p !== "object") issues(`${field}[${i}]`, "must be an object");
    else if (p.type === "text") {
      if (typeof p.text !== "string") issues(`${field}[${i}].text`, "must be a string");
    } else if (p.type === "image_url") {
      const url = (p.image_url as Record<string, unknown> | undefined)?.url;
      if (typeof url !== "string") issues(`${field}[${i}].image_url.url`, "must be a string");
    } else issues(`${field}[${i}].type`, `must be "text" or "image_url" (got ${JSON.stringify(p.type)})`);
  }
}

function checkMessages(
  messages: unknown,
  roles: string[],
  issue: (f: string, m: string) => void,
): messages is ChatMessage[] {
  if (!Array.isArray(messages)) {
    issue("messages", messages === undefined ? "is required" : "must be an array of messages");
    return false;
  }
  if (messages.length === 0) {
    issue("messages", "must have at least one message");
    return false;
  }
  let ok = true;
  for (const [i, m] of messages.entries()) {
    const f = `messages[${i}]`;
    const bad = (field: string, msg: string) => {
      ok = false;
      issue(field, msg);
    };
    if (m === null || typeof m !== "object" || Array.isArray(m)) {
      bad(f, "must be an object");
      continue;
    }
    const msg = m as Record<string, unknown>;
    if (!roles.includes(msg.role as string)) {
      const hint = msg.role === "system" ? ' (RFT datasets use "developer" for system instructions)' : "";
      bad(`${f}.role`, `must be one of ${roles.join(", ")} (got ${JSON.stringify(msg.role)})${hint}`);
      continue;
    }
    const hasToolCalls = Array.isArray(msg.tool_calls) && msg.tool_calls.length > 0;
    checkContent(msg.content, `${f}.content`, bad, msg.role === "assistant" && hasToolCalls);
    if (msg.role === "tool" && typeof msg.tool_call_id !== "string")
      bad(`${f}.tool_call_id`, "is required on tool messages");
    if (msg.tool_calls !== undefined && msg.role !== "assistant")
      bad(`${f}.tool_calls`, "only assistant messages have tool_calls");
    else if (msg.tool_calls !== undefined) {
      try {
        parseToolCallList(msg.tool_calls, `${f}.tool_calls`);
      } catch (e) {
        if (!(e instanceof ToolsError)) throw e;
        bad(e.path, e.message.slice(e.path.length + 2));
      }
    }
    if (msg.weight !== undefined && (msg.role !== "assistant" || (msg.weight !== 0 && msg.weight !== 1))) {
      bad(`${f}.weight`, "must be 0 or 1, on assistant messages only");
    }
  }
  return ok;
}

function checkTools(tools: unknown, issue: (f: string, m: string) => void) {
  if (tools === undefined) return;
  try {
    parseTools(tools);
  } catch (e) {
    if (!(e instanceof ToolsError)) throw e;
    issue(e.path, e.message.slice(e.path.length + 2));
  }
}

/** Splits JSONL text into parsed objects, reporting lines that are not JSON objects. Blank lines are skipped. */
function parseLines(text: string, issues: DatasetIssue[]): { line: number; obj: Record<string, unknown> }[] {
  const out: { line: number; obj: Record<string, unknown> }[] = [];
  text.split("\n").forEach((raw, i) => {
    const line = i + 1;
    if (raw.trim() === "") return;
    let v: unknown;
    try {
      v = JSON.parse(raw);
    } catch (err) {
      issues.push({ line, field: "", message: `not valid JSON (${(err as Error).message})` });
      return;
    }
    if (v === null || typeof v !== "object" || Array.isArray(v)) {
      issues.push({ line, field: "", message: "each line must be a JSON object" });
      return;
    }
    out.push({ line, obj: v as Record<string, unknown> });
  });
  return out;
}

/**
 * Row ids as the ledger numbers them (`id` when it is a string of 1–256 characters, else `#<index>`) must be
 * unique: two rows under one id train, then `rft audit verify` cannot tell them apart and fails.
 */
function checkIds(rows: { line: number; raw: Record<string, unknown> }[], issues: DatasetIssue[]) {
  const seen = new Map<string, number>();
  rows.forEach((r, index) => {
    const id = rowId(r.raw, index);
    const first = seen.get(id);
    if (first === undefined) {
      seen.set(id, r.line);
      return;
    }
    const implicit = id.startsWith("#") ? ` (rows without an "id" are numbered #<row index>)` : "";
    issues.push({
      line: r.line,
      field: "id",
      message: `duplicate row id ${JSON.stringify(id)}, first on line ${first}${implicit}; row ids must be unique`,
    });
  });
}

const UTF8 = new TextDecoder("utf-8", { fatal: true });

/** Offset of the first byte of `b` that does not begin or continue a valid UTF-8 sequence. */
function firstInvalidUtf8(b: Uint8Array): number {
  let i = 0;
  while (i < b.length) {
    const c = b[i]!;
    let n: number;
    let min = 0;
    if (c < 0x80) n = 0;
    else if (c >= 0xc2 && c <= 0xdf) [n, min] = [1, 0x80];
    else if (c >= 0xe0 && c <= 0xef) [n, min] = [2, 0x800];
    else if (c >= 0xf0 && c <= 0xf4) [n, min] = [3, 0x10000];
    else return i;
    let cp = n === 0 ? c : c & (0x3f >> n);
    for (let k = 1; k <= n; k++) {
      const d = b[i + k];
      if (d === undefined || (d & 0xc0) !== 0x80) return i;
      cp = (cp << 6) | (d & 0x3f);
    }
    if (n > 0 && (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))) return i;
    i += n + 1;
  }
  return -1;
}

/**
 * A dataset file's text. Bytes that are not UTF-8 are an error naming each line and byte (reading with
 * "utf8" would silently turn them into U+FFFD and train on, and sign, text nobody wrote).
 */
export function readDatasetText(file: string): string {
  const buf = readFileSync(file);
  try {
    return UTF8.decode(buf);
  } catch {
    const issues: DatasetIssue[] = [];
    let start = 0;
    for (let line = 1; start <= buf.length; line++) {
      let end = buf.indexOf(0x0a, start);
      if (end < 0) end = buf.length;
      const at = firstInvalidUtf8(buf.subarray(start, end));
      if (at >= 0) {
        issues.push({
          line,
          field: "",
          message: `not valid UTF-8 (byte 0x${buf[start + at]!.toString(16).padStart(2, "0")} at column ${at + 1})`,
        });
      }
      start = end + 1;
    }
    throw new DatasetError(file, issues);
  }
}

/** Returns the rows, or throws every issue found (sorted by line), the row limit and emptiness included. */
function accept<R>(rows: R[], issues: DatasetIssue[], max: number, file: string): R[] {
  if (rows.length > max)
    issues.push({ line: 0, field: "", message: `${rows.length} rows; at most ${max} are accepted` });
  if (issues.length === 0 && rows.length === 0) issues.push({ line: 0, field: "", message: "the file has no rows" });
  if (issues.length > 0)
    throw new DatasetError(
      file,
      issues.sort((a, b) => a.line - b.line),
    );
  return rows;
}

export function parseRftDataset(text: string, file: string, opts: { maxRows?: number } = {}): RftRow[] {
  const issues: DatasetIssue[] = [];
  const rows: RftRow[] = [];
  for (const { line, obj } of parseLines(text, issues)) {
    const issue = (field: string, message: string) => issues.push({ line, field, message });
    if (!checkMessages(obj.messages, RFT_ROLES, issue)) continue;
    const messages = obj.messages as ChatMessage[];
    if (messages.at(-1)!.role !== "user") {
      issue(
        `messages[${messages.length - 1}].role`,
        `the last message must be a user turn (got "${messages.at(-1)!.role}"); the model writes the next assistant turn`,
      );
    }
    checkTools(obj.tools, issue);
    const prov = obj.provenance as Record<string, unknown> | undefined;
    if (prov !== undefined && (typeof prov?.authority !== "string" || typeof prov?.credential !== "string")) {
      issue("provenance", "must be {authority: string, credential: string}");
    }
    const { provenance: _p, ...item } = obj;
    rows.push({
      line,
      messages,
      tools: obj.tools as unknown[] | undefined,
      item,
      provenance: prov as RftRow["provenance"],
      raw: obj,
    });
  }
  checkIds(rows, issues);
  return accept(rows, issues, opts.maxRows ?? LIMITS.rftTrain, file);
}

export function parseSftDataset(text: string, file: string, opts: { maxRows?: number } = {}): SftRow[] {
  const issues: DatasetIssue[] = [];
  const rows: SftRow[] = [];
  for (const { line, obj } of parseLines(text, issues)) {
    const issue = (field: string, message: string) => issues.push({ line, field, message });
    if (!checkMessages(obj.messages, SFT_ROLES, issue)) continue;
    const messages = obj.messages as ChatMessage[];
    if (!messages.some((m) => m.role === "assistant" && m.weight !== 0)) {
      issue("messages", "needs at least one assistant message to learn from (with weight 1 or no weight)");
    }
    checkTools(obj.tools, issue);
    rows.push({ line, messages, tools: obj.tools as unknown[] | undefined, raw: obj });
  }
  checkIds(rows, issues);
  return accept(rows, issues, opts.maxRows ?? LIMITS.sftTrain, file);
}

export function readRftDataset(file: string, opts: { maxRows?: number } = {}): RftRow[] {
  return parseRftDataset(readDatasetText(file), file, opts);
}

export function readSftDataset(file: string, opts: { maxRows?: number } = {}): SftRow[] {
  return parseSftDataset(readDatasetText(file), file, opts);
}
