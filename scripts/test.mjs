#!/usr/bin/env node
// Runs every test/**/*.test.ts with Node's built-in test runner (TypeScript through tsx), in two passes:
//   1. every file, with TEST_BACKEND=wasm;
//   2. the backend-sensitive files again (test/model/**, and files that use TEST_BACKEND: the RFT loop), with
//      TEST_BACKEND=tensorflow (@tensorflow/tfjs-node, installed by scripts/setup.d/15-tfjs-node.sh).
// The tensorflow pass fails when that backend does not load (CI's setup installs it); RFT_TEST_SKIP_TENSORFLOW=1
// skips it, saying so. TEST_BACKEND=wasm|tensorflow runs one pass only, over every matched file.
// Usage: node scripts/test.mjs [substring-filter ...]
import { spawnSync } from "node:child_process";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";

function find(dir) {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) return name === "fixtures" ? [] : find(p);
    return p.endsWith(".test.ts") ? [p] : [];
  });
}

/**
 * Model files that run once: the GGUF import is backend-independent, and its transformers reference costs minutes
 * (the decoder's logits are checked against transformers on both backends by reference.test.ts).
 */
const ONE_BACKEND = new Set([join("test", "model", "gguf.test.ts")]);

/** Files whose results depend on the tfjs backend: they run on both. */
const backendSensitive = (f) =>
  !ONE_BACKEND.has(f) && (f.startsWith(join("test", "model")) || readFileSync(f, "utf8").includes("TEST_BACKEND"));

const filters = process.argv.slice(2);
const files = find("test")
  .filter((f) => filters.length === 0 || filters.some((s) => f.includes(s)))
  .sort();
if (files.length === 0) {
  console.error("no test files matched");
  process.exit(1);
}

const passes = process.env.TEST_BACKEND
  ? [{ backend: process.env.TEST_BACKEND, files }]
  : [
      { backend: "wasm", files },
      { backend: "tensorflow", files: files.filter(backendSensitive) },
    ];
let status = 0;
for (const pass of passes) {
  if (pass.files.length === 0) continue;
  if (pass.backend === "tensorflow" && !process.env.TEST_BACKEND && process.env.RFT_TEST_SKIP_TENSORFLOW === "1") {
    console.error(`== skipping the tensorflow pass (${pass.files.length} files): RFT_TEST_SKIP_TENSORFLOW=1`);
    continue;
  }
  if (passes.length > 1) console.error(`== TEST_BACKEND=${pass.backend}: ${pass.files.length} files`);
  const r = spawnSync(process.execPath, ["--import", "tsx", "--test", "--test-reporter=spec", ...pass.files], {
    stdio: "inherit",
    env: { ...process.env, TEST_BACKEND: pass.backend, RFT_LOG_LEVEL: process.env.RFT_LOG_LEVEL ?? "silent" },
  });
  if (r.status !== 0) status = r.status ?? 1;
}
process.exit(status);
