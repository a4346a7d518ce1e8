/**
 * The example's warm-started model, shared by the benches that train (rft, collective, ledger): init-model with
 * examples/sort-digits/run.sh's arguments, then the example's sft.yaml through runJob. Built once into
 * os.tmpdir()/rft-bench-sort-digits/sft/model and reused (`rebuild` makes it again).
 */
import { existsSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { loadManifest } from "../trainer/job/manifest.js";
import { runJob } from "../trainer/job/run-job.js";
import { useBackend } from "../trainer/model/backend.js";
import { saveHfModel } from "../trainer/model/hf-io.js";
import { createRandomModel, disposeModel } from "../trainer/model/model.js";
import { countParams } from "../trainer/model/params.js";

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
export const EXAMPLE = join(ROOT, "examples", "sort-digits");
/** Where the benches keep the example's model and their runs. */
export const BENCH_WORK = join(tmpdir(), "rft-bench-sort-digits");

/** The warm-started model's directory, built when missing (or when `rebuild`). */
export async function warmStartedModel(opts: { rebuild?: boolean; log?: (s: string) => void } = {}): Promise<string> {
  const log = opts.log ?? ((s: string) => process.stdout.write(`${s}\n`));
  const base = join(BENCH_WORK, "base");
  const sftOut = join(BENCH_WORK, "sft");
  const model = join(sftOut, "model");
  if (opts.rebuild) rmSync(BENCH_WORK, { recursive: true, force: true });
  if (existsSync(join(model, "model.safetensors"))) {
    log(`warm-started model: ${model} (reused; --rebuild to make it again)`);
    return model;
  }
  mkdirSync(BENCH_WORK, { recursive: true });
  const t0 = performance.now();
  await useBackend("wasm");
  const m = createRandomModel({ arch: "llama", layers: 2, hidden: 128, heads: 4, kvHeads: 2, vocab: "byte", seed: 0 });
  const params = countParams(m.config);
  await saveHfModel(m, base);
  disposeModel(m);
  const manifest = loadManifest(join(EXAMPLE, "sft.yaml"));
  manifest.paths.model = base;
  rmSync(sftOut, { recursive: true, force: true });
  const res = await runJob({ manifest, outDir: sftOut });
  if (res.status !== "succeeded") throw new Error(`SFT stage: ${res.status}`);
  log(
    `warm-started model: ${model} (${params.toLocaleString("en")} parameters; init-model + sft.yaml, ` +
      `${((performance.now() - t0) / 1000).toFixed(1)} s)`,
  );
  return model;
}
