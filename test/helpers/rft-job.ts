/** Builds small RFT jobs for tests: a random byte-level model, the sort-digits data, and a manifest. */
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { stringify } from "yaml";
import { parseManifest } from "../../trainer/job/manifest.js";
import { saveHfModel } from "../../trainer/model/hf-io.js";
import { createRandomModel, disposeModel } from "../../trainer/model/model.js";

export const EXAMPLE = "examples/sort-digits";

export async function tinyModel(dir: string, o: { layers?: number; hidden?: number; seed?: number } = {}) {
  const m = createRandomModel({
    arch: "llama",
    layers: o.layers ?? 1,
    hidden: o.hidden ?? 32,
    heads: 2,
    kvHeads: 1,
    vocab: "byte",
    maxContext: 128,
    seed: o.seed ?? 0,
  });
  await saveHfModel(m, dir);
  disposeModel(m);
}

/** The example's RFT manifest (grader included), with overrides, written into `dir` next to copies of the data. */
export function rftManifest(dir: string, spec: Record<string, unknown> = {}, hyper: Record<string, unknown> = {}) {
  const base = parseManifest(readFileSync(join(EXAMPLE, "rft.yaml"), "utf8"), "rft.yaml").job;
  for (const f of ["train.jsonl", "valid.jsonl"]) copyFileSync(join(EXAMPLE, f), join(dir, f));
  const job = structuredClone(base) as any;
  Object.assign(job.spec, spec);
  Object.assign(job.spec.method.reinforcement.hyperparameters, hyper);
  const file = join(dir, "job.yaml");
  writeFileSync(file, stringify(job));
  return file;
}

export function tempJobDir(prefix: string) {
  const dir = mkdtempSync(join(tmpdir(), `rft-${prefix}-`));
  mkdirSync(join(dir, "out"), { recursive: true });
  return dir;
}
