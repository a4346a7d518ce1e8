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

/** The API keys a server accepts: only their SHA-256 is kept in memory after loading. */
export class ApiKeys {
  private readonly digests: Buffer[];

  constructor(keys: readonly string[]) {
    const clean = keys.map((k) => k.trim()).filter((k) => k !== "" && !k.startsWith("#"));
    if (clean.length === 0) throw new Error("no API key given: anonymous access is not allowed");
    for (const k of clean) if (k.length < 16) throw new Error("an API key is shorter than 16 characters");
    this.digests = clean.map((k) => createHash("sha256").update(k).digest());
  }

  /** Also accept `key` (the server's own key for its internal calls, e.g. eval model graders to its models). */
  allow(key: string): void {
    this.digests.push(createHash("sha256").update(key).digest());
  }

  /** One key per line (blank lines and # comments skipped). */
  static fromFile(file: string): ApiKeys {
    return new ApiKeys(readFileSync(file, "utf8").split("\n"));
  }

  /** Throws 401 unless the request carries `Authorization: Bearer <one of the keys>`. */
  check(req: IncomingMessage): void {
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
    let ok = false;
    for (const k of this.digests) ok = timingSafeEqual(d, k) || ok;
    if (!ok) throw new ApiError(401, "Incorrect API key provided.", null, "invalid_api_key");
  }
}
