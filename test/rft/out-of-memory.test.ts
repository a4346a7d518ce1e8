/**
 * When the wasm backend runs out of memory, `rft run` exits with status 1 and one line that names where it
 * happened and what to change, instead of a wasm abort (status 7) or a later, unrelated-looking error.
 * Provoked for real: a small model with 64 heads on a 3,000-token prompt needs 2.3 GB per attention-score
 * tensor in the sampling prefill, and several of them, past wasm's 4 GiB.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { useBackend } from "../../trainer/model/backend.js";
import { saveHfModel } from "../../trainer/model/hf-io.js";
import { createRandomModel, disposeModel } from "../../trainer/model/model.js";
import { rftManifest, tempJobDir } from "../helpers/rft-job.js";

test("a wasm out-of-memory gives exit status 1 and a one-line message saying what to change", async () => {
  await useBackend("wasm");
  const dir = tempJobDir("oom");
  const m = createRandomModel({
    arch: "llama",
    layers: 1,
    hidden: 256,
    heads: 64,
    kvHeads: 64,
    vocab: "byte",
    maxContext: 4096,
    seed: 1,
  });
  await saveHfModel(m, join(dir, "model"));
  disposeModel(m);
  const file = rftManifest(
    dir,
    { model: "model" },
    { nEpochs: 1, batchSize: 4, samplesPerPrompt: 2, maxCompletionTokens: 4, evalInterval: 100 },
  );
  const rows = Array.from({ length: 8 }, (_, i) =>
    JSON.stringify({ messages: [{ role: "user", content: `sort ${String(i).repeat(3000)}` }], answer: "0" }),
  );
  writeFileSync(join(dir, "train.jsonl"), `${rows.join("\n")}\n`);
  writeFileSync(join(dir, "valid.jsonl"), `${rows[0]}\n`);
  const r = spawnSync(
    process.execPath,
    [
      "--import",
      "tsx",
      "cli/rft.ts",
      "run",
      file,
      "--out",
      join(dir, "out"),
      "--no-progress",
      "--micro-batch",
      "4",
      "--backend",
      "wasm",
    ],
    { encoding: "utf8", env: { ...process.env, RFT_LOG_LEVEL: "silent" } },
  );
  assert.equal(r.status, 1, `exit status (stderr: ${r.stderr.slice(-2000)})`);
  const lines = r.stderr.split("\n").filter((l) => l.startsWith("rft run:"));
  assert.equal(lines.length, 1, r.stderr);
  const line = lines[0]!;
  assert.match(line, /^rft run: the wasm backend ran out of memory \(4 GiB\) during sampling/);
  // The first failure, where it arose: an allocation our malloc check saw, or the kernel's own fault.
  assert.match(line, /\((allocating \d+ MiB failed|RuntimeError: [^)]+)/);
  assert.match(line, /--micro-batch/);
  assert.match(line, /envelope/);
  assert.match(line, /--backend tensorflow/);
  assert.doesNotMatch(r.stderr, /^\s+at /m, "no stack trace");
  assert.doesNotMatch(r.stderr, /Build with -sASSERTIONS/, "no raw wasm abort");
});
