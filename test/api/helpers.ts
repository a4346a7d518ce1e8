/** Starts a real `rft api` (in process, or as the CLI) on a free port, and an official openai client for it. */
import { spawn } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import OpenAI from "openai";
import { ApiKeys } from "../../api/http.js";
import { ModelCatalog } from "../../api/models.js";
import { startApiServer } from "../../api/server.js";
import { createLogger } from "../../proto/log.js";

export const KEY = "sk-test-0123456789abcdef";

export function tempDir(prefix: string) {
  return mkdtempSync(join(tmpdir(), `rft-api-${prefix}-`));
}

export async function startApi(
  o: {
    dataDir?: string;
    models?: Record<string, string>;
    maxUploadBytes?: number;
    maxJsonBytes?: number;
    keys?: string[];
  } = {},
) {
  const models = new ModelCatalog();
  for (const [name, dir] of Object.entries(o.models ?? {})) models.add(name, dir);
  const dataDir = o.dataDir ?? tempDir("data");
  const s = await startApiServer({
    dataDir,
    keys: new ApiKeys(o.keys ?? [KEY]),
    models,
    port: 0,
    maxUploadBytes: o.maxUploadBytes,
    maxJsonBytes: o.maxJsonBytes,
    logger: createLogger("api-test", "silent"),
  });
  const client = new OpenAI({ baseURL: s.url, apiKey: KEY, maxRetries: 0 });
  return { ...s, client, dataDir };
}

/** `rft api` as users start it; resolves once it prints its URL. */
export async function startApiCli(args: string[]) {
  const child = spawn(process.execPath, ["--import", "tsx", "cli/rft.ts", "api", "--port", "0", ...args], {
    env: { ...process.env, RFT_API_KEYS: KEY, RFT_LOG_LEVEL: "silent" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let err = "";
  child.stderr.on("data", (d: Buffer) => (err += d.toString()));
  const url = await new Promise<string>((resolve, reject) => {
    let out = "";
    child.stdout.on("data", (d: Buffer) => {
      out += d.toString();
      const m = /rft api at (\S+)/.exec(out);
      if (m) resolve(m[1]!);
    });
    child.once("exit", (code) => reject(new Error(`rft api exited with ${code}: ${err}`)));
  });
  const client = new OpenAI({ baseURL: url, apiKey: KEY, maxRetries: 0 });
  const stop = () =>
    new Promise<number | null>((resolve) => {
      if (child.exitCode !== null) return resolve(child.exitCode);
      child.once("exit", (code) => resolve(code));
      child.kill("SIGTERM");
    });
  return { url, client, child, stop, stderr: () => err };
}

/** Polls until `pred` holds (a test's own bound ends it, never a timing assertion). */
export async function until<T>(get: () => Promise<T>, pred: (v: T) => boolean, what: string, tries = 1200): Promise<T> {
  for (let i = 0; i < tries; i++) {
    const v = await get();
    if (pred(v)) return v;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`timed out waiting for ${what}`);
}
