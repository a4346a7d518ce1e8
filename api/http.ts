/** The HTTP plumbing of `rft api`: bounded bodies, JSON replies, bearer-key checks. */
import { createHash, timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";
import type { IncomingMessage, ServerResponse } from "node:http";
import { ApiError } from "./errors.js";

export function send(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

const tooLarge = (limit: number) =>
  new ApiError(413, `Request body exceeds the limit of ${limit} bytes.`, null, "request_too_large");

/** The whole body, refused (413) past `limit` bytes, declared or streamed. */
export async function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  if (Number(req.headers["content-length"] ?? 0) > limit) throw tooLarge(limit);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req) {
    size += (c as Buffer).length;
    if (size > limit) throw tooLarge(limit);
    chunks.push(c as Buffer);
  }
  return Buffer.concat(chunks);
}

export async function readJson(req: IncomingMessage, limit: number): Promise<Record<string, unknown>> {
  const buf = await readBody(req, limit);
  let v: unknown;
  try {
    v = JSON.parse(buf.toString("utf8"));
  } catch {
    throw new ApiError(
      400,
      "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload.)",
      null,
      "invalid_json",
    );
  }
  if (v === null || typeof v !== "object" || Array.isArray(v))
    throw new ApiError(400, "The request body must be a JSON object.", null, "invalid_json");
  return v as Record<string, unknown>;
}

/** Every project sees its own files, jobs, evals and fine-tuned models only; ALL_PROJECTS sees everything. */
export const DEFAULT_PROJECT = "default";
export const ALL_PROJECTS = "*";

/**
 * The API keys a server accepts, each with its project: only their SHA-256 is kept in memory after loading.
 * A key is `KEY` (project "default") or `KEY PROJECT`.
 */
export class ApiKeys {
  private readonly keys: { digest: Buffer; project: string }[];

  constructor(lines: readonly string[]) {
    const clean = lines.map((k) => k.trim()).filter((k) => k !== "" && !k.startsWith("#"));
    if (clean.length === 0) throw new Error("no API key given: anonymous access is not allowed");
    this.keys = clean.map((line, i) => {
      const [key, project = DEFAULT_PROJECT, ...rest] = line.split(/\s+/);
      if (key!.length < 16) throw new Error(`API key ${i + 1} is shorter than 16 characters`);
      if (rest.length > 0 || !/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(project))
        throw new Error(`API key ${i + 1}: want "KEY" or "KEY PROJECT" (project: 1-64 letters, digits, . _ -)`);
      return { digest: createHash("sha256").update(key!).digest(), project };
    });
  }

  /** Also accept `key` for every project (the server's own key for internal calls: eval model graders). */
  allow(key: string): void {
    this.keys.push({ digest: createHash("sha256").update(key).digest(), project: ALL_PROJECTS });
  }

  /** One key per line (blank lines and # comments skipped). */
  static fromFile(file: string): ApiKeys {
    return new ApiKeys(readFileSync(file, "utf8").split("\n"));
  }

  /** The project of the request's `Authorization: Bearer <key>`; 401 unless it is one of the keys. */
  check(req: IncomingMessage): string {
    const h = String(req.headers.authorization ?? "");
    const m = /^Bearer (.+)$/.exec(h);
    if (!m)
      throw new ApiError(
        401,
        "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
        null,
        null,
      );
    const d = createHash("sha256").update(m[1]!).digest();
    let project: string | null = null;
    for (const k of this.keys) if (timingSafeEqual(d, k.digest) && project === null) project = k.project;
    if (project === null) throw new ApiError(401, "Incorrect API key provided.", null, "invalid_api_key");
    return project;
  }
}

/** Whether an object of project `owner` (undefined: stored before projects existed) is visible to `project`. */
export const visible = (owner: string | undefined, project: string) =>
  project === ALL_PROJECTS || (owner ?? DEFAULT_PROJECT) === project;
