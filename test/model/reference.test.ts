/**
 * Our decoder against Hugging Face transformers' forward pass (Python, .venv-model-test): models we save load
 * in transformers with the same logits, and models transformers saves load in ours with the same logits.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { before, test } from "node:test";
import { promisify } from "node:util";
import * as tf from "@tensorflow/tfjs-core";
import { causalMask, forward } from "../../trainer/model/decoder.js";
import { loadHfModel, saveHfModel } from "../../trainer/model/hf-io.js";
import { createRandomModel, disposeModel, type Model, setParam } from "../../trainer/model/model.js";
import { mulberry32 } from "../../trainer/model/params.js";
import { maxRelErr, referencePython, setup, tempDir } from "./helpers.js";

const run = promisify(execFile);
before(setup);

async function python(
  ...args: string[]
): Promise<{ logits?: number[][]; ids?: number[]; chat?: string; chat_ids?: number[]; decoded?: string }> {
  const { stdout } = await run(referencePython(), ["test/model/reference.py", ...args], { maxBuffer: 64 << 20 });
  return JSON.parse(stdout.trim().split("\n").pop()!);
}

function ourLogits(m: Model, ids: number[]): number[][] {
  return tf.tidy(() => {
    const T = ids.length;
    const g = m.config.numHeads / m.config.numKvHeads;
    const input = {
      ids: tf.tensor2d([ids], [1, T], "int32"),
      positions: tf.range(0, T, 1, "int32") as tf.Tensor1D,
      mask: causalMask(T, g),
    };
    return forward(m, input).logits.arraySync();
  });
}

/** Norm weights of a fresh model are all ones; randomise them so the reference checks their use too. */
function perturbNorms(m: Model, seed: number): void {
  const rand = mulberry32(seed);
  for (const [name, t] of m.params) {
    if (!name.endsWith("norm.weight")) continue;
    const data = Float32Array.from({ length: t.size }, () => 0.5 + rand());
    setParam(m, name, tf.tensor(data, t.shape));
  }
}

const IDS = [3, 200, 17, 257, 99, 4, 0, 128, 255, 258, 42];

for (const arch of ["llama", "qwen2"] as const) {
  test(`${arch}: a model we save gives transformers' logits (≤ 1e-4 relative)`, async () => {
    const m = createRandomModel({
      arch,
      layers: 2,
      hidden: 64,
      heads: 4,
      kvHeads: 2,
      vocab: "byte",
      seed: 11,
      std: 0.08,
      tieWordEmbeddings: arch === "qwen2",
    });
    perturbNorms(m, 5);
    const dir = await tempDir(`ref-${arch}`);
    await saveHfModel(m, dir);
    const ref = await python("logits", dir, JSON.stringify(IDS));
    const err = maxRelErr(ourLogits(m, IDS), ref.logits!);
    assert.ok(err <= 1e-4, `relative error ${err}`);
    disposeModel(m);
    await rm(dir, { recursive: true });
  });

  test(`${arch}: a model transformers saves loads here with its logits (≤ 1e-4 relative)`, async () => {
    const dir = await tempDir(`hf-${arch}`);
    const ref = await python("make", arch, dir, JSON.stringify(IDS));
    const m = await loadHfModel(dir);
    assert.equal(m.config.arch, arch);
    const err = maxRelErr(ourLogits(m, IDS), ref.logits!);
    assert.ok(err <= 1e-4, `relative error ${err}`);
    disposeModel(m);
    await rm(dir, { recursive: true });
  });
}

test("the byte-level tokenizer and chat template load identically in transformers", async () => {
  const m = createRandomModel({ arch: "llama", layers: 1, hidden: 16, heads: 2, kvHeads: 1, vocab: "byte" });
  const dir = await tempDir("tok");
  await saveHfModel(m, join(dir, "m"));
  const text = "Héllo, wörld! 1+1=2 ✓ 🙂";
  const ref = await python("tokenizer", join(dir, "m"), text);
  const tok = m.tokenizer!;
  assert.deepEqual(tok.encode(text), ref.ids);
  assert.equal(tok.decode(tok.encode(text)), text);
  const chat = tok.applyChatTemplate([{ role: "user", content: text }], true);
  assert.equal(chat, ref.chat);
  assert.deepEqual(tok.encode(chat), ref.chat_ids);
  disposeModel(m);
  await rm(dir, { recursive: true });
});
