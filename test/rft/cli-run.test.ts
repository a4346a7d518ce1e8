/** `rft run` as a user runs it: SIGTERM pauses after the current step; the same command resumes and finishes. */
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { rftManifest, tempJobDir, tinyModel } from "../helpers/rft-job.js";

const rft = (args: string[]) =>
  spawn(process.execPath, ["--import", "tsx", "cli/rft.ts", ...args], {
    env: { ...process.env, RFT_LOG_LEVEL: "silent" },
  });

test("SIGTERM pauses with a checkpoint; running again resumes and completes", async () => {
  const dir = tempJobDir("cli-run");
  await tinyModel(join(dir, "model"));
  const file = rftManifest(
    dir,
    { model: "model" },
    { nEpochs: 1, batchSize: 4, samplesPerPrompt: 2, maxCompletionTokens: 4, evalInterval: 100 },
  );
  writeFileSync(
    join(dir, "train.jsonl"),
    readFileSync(join(dir, "train.jsonl"), "utf8").split("\n").slice(0, 40).join("\n"),
  );
  const out = join(dir, "out");

  const child = rft(["run", file, "--out", out, "--no-progress"]);
  let stdout = "";
  child.stdout.on("data", (d) => (stdout += d));
  await new Promise<void>((resolve) =>
    child.stderr.on("data", (d: Buffer) => {
      if (/Step 1\/10/.test(d.toString())) resolve();
    }),
  );
  child.kill("SIGTERM");
  const code = await new Promise((r) => child.on("exit", r));
  assert.equal(code, 0);
  assert.match(stdout, /RFT paused at step (\d+)\/10/);
  assert.match(stdout, /run the same command again to resume/);
  const pausedAt = Number(/paused at step (\d+)/.exec(stdout)![1]);
  assert.ok(pausedAt < 10);

  const again = spawnSync(
    process.execPath,
    ["--import", "tsx", "cli/rft.ts", "run", file, "--out", out, "--no-progress"],
    { encoding: "utf8" },
  );
  assert.equal(again.status, 0, again.stderr);
  assert.match(again.stderr, new RegExp(`Resuming from checkpoint step-0+${pausedAt}-pause \\(step ${pausedAt}\\)`));
  assert.match(again.stdout, /RFT succeeded at step 10\/10/);
  assert.match(again.stdout, /model: /);
});

test("rft run rejects an invalid manifest with file, line and field (exit 2)", () => {
  const dir = tempJobDir("cli-bad");
  const file = rftManifest(dir, { model: "model" }, { loss: "ppo" });
  const r = spawnSync(process.execPath, ["--import", "tsx", "cli/rft.ts", "run", file], { encoding: "utf8" });
  assert.equal(r.status, 2);
  assert.match(
    r.stderr,
    /job\.yaml:\d+: spec\.method\.reinforcement\.hyperparameters\.loss: must be one of grpo, dr_grpo, dapo/,
  );
});

test("rft run reports a bad dataset line before training", async () => {
  const dir = tempJobDir("cli-data");
  await tinyModel(join(dir, "model"));
  const file = rftManifest(dir, { model: "model" });
  writeFileSync(
    join(dir, "train.jsonl"),
    '{"messages":[{"role":"user","content":"sort 12"}],"answer":"12"}\n{"messages":[]}\n',
  );
  const r = spawnSync(process.execPath, ["--import", "tsx", "cli/rft.ts", "run", file, "--out", join(dir, "out")], {
    encoding: "utf8",
  });
  assert.equal(r.status, 2);
  assert.match(r.stderr, /train\.jsonl:2: messages: must have at least one message/);
});
