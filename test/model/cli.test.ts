import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { before, test } from "node:test";
import { loadHfModel } from "../../trainer/model/hf-io.js";
import { disposeModel } from "../../trainer/model/model.js";
import { setup, tempDir } from "./helpers.js";

before(setup);

const rft = (...args: string[]) =>
  spawnSync(process.execPath, ["--import", "tsx", "cli/rft.ts", ...args], {
    encoding: "utf8",
    env: { ...process.env, RFT_LOG_LEVEL: "silent" },
  });

test("rft init-model writes a loadable model; bad flags exit 2 with a message", async () => {
  const dir = await tempDir("cli");
  const out = join(dir, "m");
  const r = rft(
    "init-model",
    "--arch",
    "qwen2",
    "--layers",
    "2",
    "--hidden",
    "32",
    "--heads",
    "4",
    "--kv-heads",
    "2",
    "--vocab",
    "byte",
    "--seed",
    "3",
    "--out",
    out,
  );
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /wrote qwen2 model \([\d,]+ parameters\)/);
  const m = await loadHfModel(out);
  assert.equal(m.config.numLayers, 2);
  assert.equal(m.config.numKvHeads, 2);
  assert.ok(m.tokenizer?.hasChatTemplate);
  disposeModel(m);
  const bad = rft("init-model", "--heads", "3", "--hidden", "32", "--out", join(dir, "x"));
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /hidden \(32\) must be a multiple of heads \(3\)/);
  const badVocab = rft("init-model", "--vocab", join(dir, "nowhere"), "--out", join(dir, "y"));
  assert.equal(badVocab.status, 2);
  assert.match(badVocab.stderr, /--vocab: no tokenizer\.json/);
  await rm(dir, { recursive: true });
});
