import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";

const rft = (...args: string[]) =>
  spawnSync(process.execPath, ["--import", "tsx", "cli/rft.ts", ...args], {
    encoding: "utf8",
    env: { ...process.env, RFT_LOG_LEVEL: "silent" },
  });

const dir = mkdtempSync(join(tmpdir(), "rft-grade-"));
const graderFile = join(dir, "grader.json");
writeFileSync(
  graderFile,
  JSON.stringify({
    type: "string_check",
    name: "exact",
    input: "{{ sample.output_text }}",
    reference: "{{ item.answer }}",
    operation: "eq",
  }),
);

test("rft grade prints the RunGraderResponse", () => {
  const r = rft("grade", "--grader", graderFile, "--sample", "42", "--item", '{"answer":"42"}');
  assert.equal(r.status, 0, r.stderr);
  const res = JSON.parse(r.stdout);
  assert.equal(res.reward, 1);
  assert.equal(res.metadata.name, "exact");
});

test("rft grade reads the sample from @file and exits 0 when the grader reports errors in-band", () => {
  const sampleFile = join(dir, "sample.txt");
  writeFileSync(sampleFile, "not json");
  const r = rft("grade", "--grader", graderFile, "--sample", `@${sampleFile}`, "--json-required");
  assert.equal(r.status, 0, r.stderr);
  assert.equal(JSON.parse(r.stdout).metadata.errors.sample_parse_error, true);
});

test("rft grade exits 2 with a precise message for an invalid grader or argument", () => {
  const bad = rft(
    "grade",
    "--grader",
    '{"type":"string_check","name":"x","input":"a","reference":"b","operation":"is"}',
    "--sample",
    "a",
  );
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /grader\.operation: must be one of eq, ne, neq, like, ilike/);
  const missing = rft("grade", "--grader", join(dir, "nope.json"), "--sample", "a");
  assert.equal(missing.status, 2);
  assert.match(missing.stderr, /no such file/);
  const broken = rft("grade", "--grader", "{not json", "--sample", "a");
  assert.equal(broken.status, 2);
  assert.match(broken.stderr, /not valid JSON/);
});
