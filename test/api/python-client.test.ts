/** The RFT guide's code with the official python `openai` package (.venv-openai), against `rft api`. */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { tinyModel } from "../helpers/rft-job.js";
import { BASE, TRAIN, VALID } from "./guide.js";
import { KEY, startApiCli, tempDir } from "./helpers.js";

const PYTHON = ".venv-openai/bin/python";

test("the python openai client runs the RFT guide's flow unchanged but for base_url and api_key", async () => {
  assert.ok(existsSync(PYTHON), `${PYTHON} is missing: run bash scripts/setup.d/22-openai-python.sh`);
  const dir = tempDir("python");
  await tinyModel(join(dir, "base"));
  writeFileSync(join(dir, "train.jsonl"), `${TRAIN.join("\n")}\n`);
  writeFileSync(join(dir, "valid.jsonl"), `${VALID.join("\n")}\n`);
  const api = await startApiCli(["--data", join(dir, "data"), "--model", `${BASE}=${join(dir, "base")}`]);
  try {
    const py = spawn(PYTHON, ["test/api/rft_guide.py", join(dir, "train.jsonl"), join(dir, "valid.jsonl")], {
      env: { ...process.env, RFT_API_BASE_URL: api.url, RFT_API_KEY: KEY },
    });
    let out = "";
    let err = "";
    py.stdout.on("data", (d: Buffer) => (out += d.toString()));
    py.stderr.on("data", (d: Buffer) => (err += d.toString()));
    const code = await new Promise((r) => py.once("exit", r));
    assert.equal(code, 0, err);
    const r = JSON.parse(out) as {
      status: string;
      statuses: string[];
      fine_tuned_model: string;
      metrics_steps: number[];
      checkpoints: string[];
      answer_is_text: boolean;
      error: unknown;
      eval_id: string | null;
      eval_runs: { name: string; step: string; scores: number[] }[];
      valid_means: Record<string, number>;
    };
    assert.equal(r.status, "succeeded", JSON.stringify(r.error));
    assert.equal(r.statuses[0], "validating_files");
    assert.match(r.fine_tuned_model, /^ft:o4-mini-2025-04-16:rft:security-qa:/);
    assert.deepEqual(r.metrics_steps, [2, 1]);
    assert.ok(r.checkpoints.includes(`${r.fine_tuned_model}:ckpt-step-2`), r.checkpoints.join(","));
    assert.equal(r.answer_is_text, true);
    // The job's eval through python's client: a run per validation, each scored as its step's metrics.
    assert.match(r.eval_id!, /^eval_/);
    assert.deepEqual(
      r.eval_runs.map((x) => x.step),
      ["0", "1", "2"],
    );
    for (const x of r.eval_runs.slice(1)) {
      const m = x.scores.reduce((a, b) => a + b, 0) / x.scores.length;
      assert.ok(Math.abs(m - r.valid_means[x.step]!) < 1e-6, `${x.name}: ${x.scores} vs ${r.valid_means[x.step]}`);
    }
  } finally {
    await api.stop();
  }
});
