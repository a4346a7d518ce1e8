import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { loadManifest, ManifestError, parseManifest } from "../../trainer/job/manifest.js";

const good = `apiVersion: rft.dev/v1alpha1
kind: FineTuneJob
metadata:
  name: arith
spec:
  model: ./model
  trainingFile: data/train.jsonl
  validationFile: data/valid.jsonl
  seed: 7
  method:
    type: reinforcement
    reinforcement:
      grader:
        type: multi
        graders:
          format: {type: string_check, name: format, input: "{{ sample.output_text }}", reference: "Answer:", operation: like}
          correct: {type: string_check, name: correct, input: "{{ sample.output_text }}", reference: "{{ item.answer }}", operation: like}
        calculate_output: "0.2 * format + 0.8 * correct"
      hyperparameters:
        nEpochs: 2
        batchSize: auto
        samplesPerPrompt: 8
        loss: dapo
`;

function issues(text: string) {
  try {
    parseManifest(text, "job.yaml");
  } catch (err) {
    assert.ok(err instanceof ManifestError, String(err));
    return err.issues;
  }
  assert.fail("expected the manifest to be rejected");
}

test("manifest: a valid FineTuneJob loads, with paths resolved against its folder", () => {
  const dir = mkdtempSync(join(tmpdir(), "rft-manifest-"));
  writeFileSync(join(dir, "job.yaml"), good);
  const m = loadManifest(join(dir, "job.yaml"));
  assert.equal(m.job.spec.method.type, "reinforcement");
  assert.equal(m.paths.model, join(dir, "model"));
  assert.equal(m.paths.trainingFile, join(dir, "data/train.jsonl"));
});

test("manifest: schema errors name the line and field", () => {
  const bad = good.replace("loss: dapo", "loss: ppo").replace("seed: 7", "seed: -1").replace("  model: ./model\n", "");
  const found = issues(bad);
  const byField = Object.fromEntries(found.map((i) => [i.field, i]));
  assert.match(
    byField["spec.method.reinforcement.hyperparameters.loss"]!.message,
    /must be one of grpo, dr_grpo, dapo/,
  );
  assert.equal(byField["spec.method.reinforcement.hyperparameters.loss"]!.line, 22); // one line up: model was removed
  assert.match(byField["spec.seed"]!.message, />= 0/);
  assert.equal(byField["spec.seed"]!.line, 8);
  assert.match(byField.spec!.message, /missing required field "model"/);
});

test("manifest: unknown fields and wrong kinds are rejected", () => {
  const found = issues(good.replace("  seed: 7", "  seeds: 7").replace("kind: FineTuneJob", "kind: Job"));
  assert.ok(found.some((i) => i.field === "spec.seeds" && /unknown field/.test(i.message) && i.line === 9));
  assert.ok(found.some((i) => i.field === "kind" && i.line === 2));
});

test("manifest: every unknown key of an object is reported, each on its line", () => {
  const found = issues(good.replace("  seed: 7", "  seeds: 7\n  sede: 7\n  graderEndpoint: []"));
  const unknown = found.filter((i) => /unknown field/.test(i.message)).map((i) => [i.field, i.line]);
  assert.deepEqual(unknown, [
    ["spec.seeds", 9],
    ["spec.sede", 10],
    ["spec.graderEndpoint", 11],
  ]);
});

test("manifest: the grader is validated by the grader engine, located in the YAML", () => {
  const found = issues(good.replace('"0.2 * format + 0.8 * correct"', '"0.2 * format +"'));
  assert.equal(found[0]!.field, "spec.method.reinforcement.grader.calculate_output");
  assert.equal(found[0]!.line, 18);
  assert.match(found[0]!.message, /formula ended at position/);
  const op = issues(good.replace("operation: like}\n          correct", "operation: contains}\n          correct"));
  assert.equal(op[0]!.field, "spec.method.reinforcement.grader.graders.format.operation");
  assert.equal(op[0]!.line, 16);
});

test("manifest: method consistency, YAML syntax and missing files", () => {
  assert.match(
    issues(good.replace(/ {4}reinforcement:[\s\S]*$/, ""))[0]!.message,
    /is required when type is "reinforcement"/,
  );
  const yaml = issues("apiVersion: rft.dev/v1alpha1\nkind: [unclosed\n");
  assert.match(yaml[0]!.message, /YAML/);
  assert.throws(() => loadManifest("/nonexistent/job.yaml"), /cannot read: ENOENT/);
});
