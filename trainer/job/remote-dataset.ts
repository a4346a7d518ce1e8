/**
 * Training files given as URLs (what `rft api --cluster` writes into a FineTuneJob: its own
 * `/internal/datasets/<job>/<file>#sha256=<hex>`): the trainer pod downloads each one once into the job's
 * checkpoint directory with the bearer token of `RFT_DATASET_TOKEN`, bounded in size, checks the digest in
 * the URL's fragment and reuses the copy on every later attempt (a resumed job trains on the same bytes).
 * A refusal (401/403/404), a wrong digest or a file past the bound is a configuration error (never retried);
 * a network error is retried a few times, then fails the attempt (the operator's gang restart retries).
 */
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";

/** The largest training or validation file fetched (OpenAI's per-file upload limit). */
export const MAX_DATASET_BYTES = 512 << 20;

export class DatasetConfigError extends Error {}

export const isDatasetUrl = (p: string | undefined): p is string => !!p && /^https?:\/\//.test(p);

/** The `#sha256=<64 hex>` of a dataset URL (required: the download is checked against it). */
export function urlDigest(url: string): string {
  const m = /#sha256=([0-9a-f]{64})$/.exec(url);
  if (!m) throw new DatasetConfigError(`${url.replace(/#.*/, "")}: a dataset URL needs a '#sha256=<hex>' fragment`);
  return m[1]!;
}

const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

async function download(url: string, token: string | undefined, maxBytes: number): Promise<Buffer> {
  const shown = url.replace(/#.*/, "");
  const res = await fetch(shown, { headers: token ? { authorization: `Bearer ${token}` } : {} });
  if (res.status === 401 || res.status === 403 || res.status === 404)
    throw new DatasetConfigError(`${shown}: ${res.status} (the job's dataset token or URL is wrong)`);
  if (!res.ok) throw new Error(`${shown}: HTTP ${res.status}`);
  const length = Number(res.headers.get("content-length") ?? 0);
  if (length > maxBytes) throw new DatasetConfigError(`${shown}: ${length} bytes, more than the ${maxBytes} allowed`);
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const c of res.body as unknown as AsyncIterable<Uint8Array>) {
    total += c.length;
    if (total > maxBytes) throw new DatasetConfigError(`${shown}: more than the ${maxBytes} bytes allowed`);
    chunks.push(Buffer.from(c));
  }
  return Buffer.concat(chunks);
}

export interface FetchOptions {
  token?: string;
  maxBytes?: number;
  /** Tries on network errors (default 5, 1 s apart doubling). */
  tries?: number;
  retryMs?: number;
}

/**
 * The local copy of a dataset URL under `dir` (named `name`), downloaded unless a copy with the URL's digest
 * is already there.
 */
export async function fetchDataset(url: string, dir: string, name: string, o: FetchOptions = {}): Promise<string> {
  const want = urlDigest(url);
  const path = join(dir, name);
  if (existsSync(path) && sha256(readFileSync(path)) === want) return path;
  const tries = o.tries ?? 5;
  let wait = o.retryMs ?? 1000;
  for (let i = 1; ; i++) {
    try {
      const bytes = await download(url, o.token, o.maxBytes ?? MAX_DATASET_BYTES);
      const got = sha256(bytes);
      if (got !== want) throw new DatasetConfigError(`${url.replace(/#.*/, "")}: sha256 ${got}, the job names ${want}`);
      mkdirSync(dir, { recursive: true });
      writeFileSync(`${path}.tmp`, bytes);
      renameSync(`${path}.tmp`, path);
      return path;
    } catch (e) {
      if (e instanceof DatasetConfigError || i >= tries) throw e;
      await new Promise((r) => setTimeout(r, wait));
      wait *= 2;
    }
  }
}
