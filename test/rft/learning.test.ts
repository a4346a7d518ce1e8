/**
 * The example, shortened: SFT warm-start of a small random model, then RFT on digit sorting, with fixed
 * seeds. RFT must raise valid_reward_mean over the warm-started model's baseline (the full example gains
 * more than 0.3; this shorter run must gain at least 0.15).
 */
import assert from "node:assert/strict";
import { copyFileSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { stringify } from "yaml";
import { loadManifest, parseManifest } from "../../trainer/job/manifest.js";
import { runJob } from "../../trainer/job/run-job.js";
import { saveHfModel } from "../../trainer/model/hf-io.js";
import { createRandomModel, disposeModel } from "../../trainer/model/model.js";
import { EXAMPLE, tempJobDir } from "../helpers/rft-job.js";
import { TEST_BACKEND } from "../helpers/backend.js";

test("RFT improves the warm-started model on the sort-digits example", async () => {
  const dir = tempJobDir("learning");
  // The same model `rft init-model --arch llama --layers 2 --hidden 128 --heads 4 --kv-heads 2 --vocab byte` makes.
  const m = createRandomModel({ arch: "llama", layers: 2, hidden: 128, heads: 4, kvHeads: 2, vocab: "byte" });
  await saveHfModel(m, join(dir, "base"));
  disposeModel(m);
  for (const f of ["sft.jsonl", "sft-valid.jsonl", "train.jsonl", "valid.jsonl", "sft.yaml", "rft.yaml"])
    copyFileSync(join(EXAMPLE, f), join(dir, f));

  const sft = await runJob({
    manifest: loadManifest(join(dir, "sft.yaml")),
    outDir: join(dir, "out", "sft"),
    backend: TEST_BACKEND,
  });
  assert.equal(sft.status, "succeeded");

  const job = parseManifest(readFileSync(join(dir, "rft.yaml"), "utf8"), "rft.yaml").job as any;
  Object.assign(job.spec.method.reinforcement.hyperparameters, { nEpochs: 1, evalInterval: 32 });
  writeFileSync(join(dir, "rft-short.yaml"), stringify(job));
  const rft = await runJob({
    manifest: loadManifest(join(dir, "rft-short.yaml")),
    outDir: join(dir, "out", "rft"),
    backend: TEST_BACKEND,
    stopAfterStep: 64,
  });
  assert.ok(rft.method === "reinforcement");
  const valid = rft.history.filter((h) => h.validRewardMean !== null).map((h) => [h.step, h.validRewardMean!] as const);
  assert.equal(valid[0]![0], 0, "a baseline validation before any update");
  const baseline = valid[0]![1];
  const last = valid.at(-1)!;
  assert.equal(last[0], 64);
  assert.ok(
    last[1] - baseline >= 0.15,
    `valid_reward_mean ${baseline.toFixed(3)} → ${last[1].toFixed(3)} (curve ${JSON.stringify(valid)})`,
  );
});
