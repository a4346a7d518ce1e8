/** Shared set-up for the model tests: the test backend (TEST_BACKEND), temp dirs, the Python reference environment. */
import { existsSync } from "node:fs";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { useTestBackend } from "../helpers/backend.js";

export async function setup(): Promise<void> {
  await useTestBackend();
}

export function tempDir(prefix: string): Promise<string> {
  return mkdtemp(join(tmpdir(), `rft-model-${prefix}-`));
}

export const REFERENCE_PYTHON = ".venv-model-test/bin/python";

/** The reference environment must exist (scripts/setup.d/20-model-test-python.sh makes it); a clear failure if not. */
export function referencePython(): string {
  if (!existsSync(REFERENCE_PYTHON)) {
    throw new Error(`${REFERENCE_PYTHON} is missing: run bash scripts/setup.d/20-model-test-python.sh`);
  }
  return REFERENCE_PYTHON;
}

export function maxRelErr(a: number[][], b: number[][]): number {
  let err = 0;
  let scale = 0;
  for (let i = 0; i < b.length; i++) {
    for (let j = 0; j < b[i]!.length; j++) {
      err = Math.max(err, Math.abs(a[i]![j]! - b[i]![j]!));
      scale = Math.max(scale, Math.abs(b[i]![j]!));
    }
  }
  return err / scale;
}
