/**
 * Backend selection: the default is tensorflow when it loads, wasm with a one-line notice when it does not,
 * `--backend wasm` forces wasm quietly, TF's load-time log lines are silenced, and the tensorflow backend's
 * integer Round is guarded (TF 2.18+ returns zeros). Each case runs in a fresh process: a backend is process-wide.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import * as tf from "@tensorflow/tfjs-core";
import { TEST_BACKEND } from "../helpers/backend.js";
import { setup, tempDir } from "./helpers.js";

const tensorflowPass = TEST_BACKEND === "tensorflow";
const onlyTensorflow = tensorflowPass ? false : "runs in the TEST_BACKEND=tensorflow pass";

/** Runs `useBackend(<arg>)` in a fresh node; stdout = the backend tfjs reports. */
function pick(arg: string, extraNodeArgs: string[] = []) {
  const code = `import("./trainer/model/backend.ts").then(async (b) => console.log(await b.useBackend(${arg})))`;
  const env = { ...process.env };
  delete env["TF_CPP_MIN_LOG_LEVEL"];
  delete env["TF_ENABLE_ONEDNN_OPTS"];
  const r = spawnSync(process.execPath, ["--import", "tsx", ...extraNodeArgs, "-e", code], { encoding: "utf8", env });
  assert.equal(r.status, 0, r.stderr);
  return { backend: r.stdout.trim(), stderr: r.stderr };
}

test(
  "the default is tensorflow when it loads, with nothing on stderr (TF's log lines silenced)",
  { skip: onlyTensorflow },
  () => {
    const r = pick("");
    assert.equal(r.backend, "tensorflow");
    assert.equal(r.stderr, "");
  },
);

test("the default falls back to wasm with one line on stderr saying why and how to get tensorflow", async () => {
  // A resolve hook makes both tfjs-node packages unresolvable, as on a machine where setup did not install them.
  const hook = join(await tempDir("hide-tfjs-node"), "hide.mjs");
  writeFileSync(
    hook,
    `import { register } from "node:module";
register("data:text/javascript," + encodeURIComponent(\`export async function resolve(s, c, next) {
  if (/^@tensorflow\\\\/tfjs-node(-gpu)?$/.test(s)) {
    const e = new Error("Cannot find package '" + s + "'"); e.code = "ERR_MODULE_NOT_FOUND"; throw e;
  }
  return next(s, c);
}\`));
`,
  );
  const r = pick("", ["--import", hook]);
  assert.equal(r.backend, "wasm");
  const lines = r.stderr.trim().split("\n");
  assert.equal(lines.length, 1, r.stderr);
  assert.match(
    lines[0]!,
    /wasm backend.*"@tensorflow\/tfjs-node", which is not installed.*scripts\/setup\.d\/15-tfjs-node\.sh/,
  );
});

test("an explicit wasm is used even when tensorflow is installed, quietly", () => {
  const r = pick('"wasm"');
  assert.equal(r.backend, "wasm");
  assert.equal(r.stderr, "");
});

test(
  "tensorflow: Round of an int32 tensor is the identity; float Round is TF's (half to even)",
  { skip: onlyTensorflow },
  async () => {
    await setup();
    assert.equal(tf.getBackend(), "tensorflow");
    const i = tf.tensor1d([1, -2, 3, 2147483647], "int32");
    const ri = tf.round(i);
    assert.equal(ri.dtype, "int32");
    assert.deepEqual(Array.from(ri.dataSync()), [1, -2, 3, 2147483647]);
    const f = tf.round(tf.tensor1d([0.4, 1.6, -2.5, 2.5]));
    assert.deepEqual(Array.from(f.dataSync()), [0, 2, -2, 2]);
    tf.dispose([i, ri, f]);
  },
);

test(
  "scripts/setup.d/15-tfjs-node.sh on an installed tree only smoke-tests: no npm, pip, unpack or build",
  {
    // With tfjs-node-gpu installed (GPU=1 setup), the CPU script would reinstall tfjs-node and prune it.
    skip: onlyTensorflow || (existsSync("node_modules/@tensorflow/tfjs-node-gpu") && "tfjs-node-gpu is installed"),
  },
  () => {
    const r = spawnSync("bash", ["scripts/setup.d/15-tfjs-node.sh"], { encoding: "utf8" });
    assert.equal(r.status, 0, r.stderr);
    assert.doesNotMatch(r.stderr, /npm install|pip download|unpacking|linking|building the addon/, r.stderr);
    const smoke = JSON.parse(r.stderr.trim().split("\n").at(-1)!) as Record<string, unknown>;
    assert.equal(smoke["package"], "@tensorflow/tfjs-node");
    assert.equal(smoke["backend"], "tensorflow");
    assert.equal(smoke["gpu"], false);
  },
);
