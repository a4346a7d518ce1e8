/** `rft run` takes OpenAI's job request JSON as is (paths instead of file ids); `rft api convert` prints the FineTuneJob. */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { parse } from "yaml";
import { parseManifest } from "../../trainer/job/manifest.js";
import { tinyModel } from "../helpers/rft-job.js";
import { jobRequest, TRAIN, VALID } from "./guide.js";
import { tempDir } from "./helpers.js";

const rft = (args: string[]) =>
  spawnSync(process.execPath, ["--import", "tsx", "cli/rft.ts", ...args], {
    encoding: "utf8",
    env: { ...process.env, RFT_LOG_LEVEL: "silent" },
  });

function writeJob(dir: string, hyper: Record<string, unknown> = {}) {
  writeFileSync(join(dir, "train.jsonl"), `${TRAIN.join("\n")}\n`);
  writeFileSync(join(dir, "valid.jsonl"), `${VALID.join("\n")}\n`);
  const body = { ...jobRequest("train.jsonl", "valid.jsonl", hyper), model: "base" };
  const file = join(dir, "job.json");
  writeFileSync(file, JSON.stringify(body, null, 2));
  return file;
}

test("rft run trains from OpenAI's job request JSON", async () => {
  const dir = tempDir("run-json");
  await tinyModel(join(dir, "base"));
  const file = writeJob(dir);
  const r = rft(["run", file, "--out", join(dir, "out"), "--no-progress"]);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /RFT succeeded at step 2\/2/);
  const events = readFileSync(join(dir, "out", "events.jsonl"), "utf8")
    .trim()
    .split("\n");
  assert.ok(events.some((l) => JSON.parse(l).type === "metrics"));
});

test("a bad value in the request JSON names the file, line and OpenAI's param", () => {
  const dir = tempDir("run-json-bad");
  const file = writeJob(dir, { n_epochs: 0 });
  const r = rft(["run", file]);
  assert.equal(r.status, 2);
  const line =
    readFileSync(file, "utf8")
      .split("\n")
      .findIndex((l) => l.includes('"n_epochs"')) + 1;
  assert.match(r.stderr, new RegExp(`job\\.json:${line}: method\\.reinforcement\\.hyperparameters\\.n_epochs: `));

  const unknown = join(dir, "unknown.json");
  writeFileSync(unknown, JSON.stringify({ ...JSON.parse(readFileSync(file, "utf8")), test_file: "x" }, null, 2));
  const u = rft(["run", unknown]);
  assert.equal(u.status, 2);
  assert.match(u.stderr, /unknown\.json:\d+: test_file: Unrecognized request argument supplied: test_file/);
});

test("rft api convert prints the equivalent FineTuneJob, which rft run and the operator accept", () => {
  const dir = tempDir("convert");
  const file = writeJob(dir, { n_epochs: 3 });
  const r = rft(["api", "convert", file]);
  assert.equal(r.status, 0, r.stderr);
  const job = parse(r.stdout);
  assert.equal(job.apiVersion, "rft.dev/v1alpha1");
  assert.equal(job.kind, "FineTuneJob");
  assert.equal(job.spec.model, "base");
  assert.equal(job.spec.trainingFile, "train.jsonl");
  assert.equal(job.spec.suffix, "security-qa");
  assert.equal(job.spec.method.reinforcement.hyperparameters.nEpochs, 3);
  assert.equal(job.spec.method.reinforcement.responseFormat.type, "json_schema");
  assert.equal(job.spec.method.reinforcement.grader.type, "multi");
  const out = join(dir, "job.yaml");
  writeFileSync(out, r.stdout);
  assert.equal(parseManifest(r.stdout, out).paths.trainingFile, join(dir, "train.jsonl"));
});
