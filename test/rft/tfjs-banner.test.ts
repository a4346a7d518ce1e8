/** tfjs's "install our node backend" banner is silenced once, by the module that loads the tfjs bundle. */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { test } from "node:test";

/** stderr of a fresh process that loads `imports` and writes a tensor on the CPU backend. */
function stderrOf(imports: string): string {
  const script = `${imports}
import * as tf from "@tensorflow/tfjs-core";
await tf.setBackend("cpu");
tf.add(tf.tensor([1, 2]), tf.tensor([3, 4])).dataSync();`;
  const r = spawnSync(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], { encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  return r.stderr;
}

test("the tfjs bundle alone prints the banner on the CPU backend's first write (what the test below guards)", () => {
  assert.match(stderrOf('import "@tensorflow/tfjs";'), /install our node backend/);
});

test("loading the trainer's tfjs module (as ops.ts and loss.ts do) silences it", () => {
  assert.doesNotMatch(stderrOf('import "./trainer/model/tfjs.ts";'), /install our node backend/);
  assert.doesNotMatch(stderrOf('import "./trainer/rl/loss.ts";'), /install our node backend/);
});
