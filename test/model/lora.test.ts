/**
 * LoRA adapters: the PEFT adapter directory we write loads in Python `peft` with our outputs, an adapter PEFT
 * writes loads here with its outputs, the merged model equals base + adapter in transformers, training
 * changes only the adapters (the base stays byte-identical), and invalid settings name their field.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { before, test } from "node:test";
import { promisify } from "node:util";
import * as tf from "@tensorflow/tfjs-core";
import { causalMask, forward } from "../../trainer/model/decoder.js";
import { loadHfModel, saveHfModel } from "../../trainer/model/hf-io.js";
import {
  addAdapters,
  adapterNames,
  loadAdapter,
  LoraConfigError,
  mergedParams,
  randomizeAdapters,
  resolveLora,
  saveAdapter,
} from "../../trainer/model/lora.js";
import { createRandomModel, disposeModel, type Model } from "../../trainer/model/model.js";
import { Adam, lossAndGrads, makeBatch } from "../../trainer/model/train-step.js";
import { digestTensors } from "../../trainer/governance/digests.js";
import { maxRelErr, referencePython, setup, tempDir } from "./helpers.js";

const run = promisify(execFile);
before(setup);

async function python(...args: string[]): Promise<{ logits: number[][] }> {
  const { stdout } = await run(referencePython(), ["test/model/lora_reference.py", ...args], { maxBuffer: 64 << 20 });
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

const IDS = [3, 200, 17, 257, 99, 4, 0, 128, 255, 258, 42];

const tiny = (arch: "llama" | "qwen2") =>
  createRandomModel({
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

for (const arch of ["llama", "qwen2"] as const) {
  test(`${arch}: our PEFT adapter loads in peft.PeftModel with our logits, and the merged model in transformers (≤ 1e-4)`, async () => {
    const m = tiny(arch);
    const dir = await tempDir(`lora-${arch}`);
    await saveHfModel(m, join(dir, "base"));
    const plain = ourLogits(m, IDS);
    addAdapters(m, resolveLora({ rank: 4, alpha: 12 }, m.config, "lora"), 3);
    // A fresh adapter (B = 0) changes nothing, bit for bit.
    assert.deepEqual(ourLogits(m, IDS), plain);
    randomizeAdapters(m, 7);
    const ours = ourLogits(m, IDS);
    assert.ok(maxRelErr(ours, plain) > 1e-3, "the random adapter must change the logits");
    await saveAdapter(m, join(dir, "adapter"), { baseModel: join(dir, "base") });
    const cfg = JSON.parse(await readFile(join(dir, "adapter", "adapter_config.json"), "utf8"));
    assert.equal(cfg.peft_type, "LORA");
    assert.equal(cfg.r, 4);
    assert.equal(cfg.lora_alpha, 12);
    const ref = await python("logits", join(dir, "base"), join(dir, "adapter"), JSON.stringify(IDS));
    const err = maxRelErr(ours, ref.logits);
    assert.ok(err <= 1e-4, `peft relative error ${err}`);

    // The merged model: W + (α/r)·A·B, a plain Hugging Face directory.
    const { params, created } = mergedParams(m);
    const merged = { ...m, params, lora: undefined };
    await saveHfModel(merged, join(dir, "merged"));
    tf.dispose(created);
    const { stdout } = await run(
      referencePython(),
      ["test/model/reference.py", "logits", join(dir, "merged"), JSON.stringify(IDS)],
      { maxBuffer: 64 << 20 },
    );
    const mergedErr = maxRelErr(ours, JSON.parse(stdout.trim().split("\n").pop()!).logits);
    assert.ok(mergedErr <= 1e-4, `merged relative error ${mergedErr}`);

    // Our own adapter loads back bit for bit.
    const back = await loadHfModel(join(dir, "base"));
    await loadAdapter(back, join(dir, "adapter"));
    assert.deepEqual(ourLogits(back, IDS), ours);
    disposeModel(back);
    disposeModel(m);
    await rm(dir, { recursive: true });
  });
}

test("an adapter PEFT saves (q/v/up/down, r=4) loads here with peft's logits (≤ 1e-4)", async () => {
  const m = tiny("llama");
  const dir = await tempDir("lora-peft");
  await saveHfModel(m, join(dir, "base"));
  const ref = await python("make", join(dir, "base"), join(dir, "adapter"), JSON.stringify(IDS));
  const s = await loadAdapter(m, join(dir, "adapter"));
  assert.deepEqual(s.targetModules.sort(), ["down_proj", "q_proj", "up_proj", "v_proj"]);
  assert.equal(s.rank, 4);
  const err = maxRelErr(ourLogits(m, IDS), ref.logits);
  assert.ok(err <= 1e-4, `relative error ${err}`);
  disposeModel(m);
  await rm(dir, { recursive: true });
});

test("LoRA training changes the adapters only: the base weights stay byte-identical, the loss falls", () => {
  const m = tiny("qwen2");
  const base = new Map([...m.params].map(([n, t]) => [n, digestTensors([n], () => t)]));
  addAdapters(m, resolveLora({ rank: 4, alpha: 8, dropout: 0.1 }, m.config, "lora"), 1);
  const seqs = [
    { ids: [1, 5, 9, 13, 17, 21, 25, 29], mask: [0, 1, 1, 1, 1, 1, 1, 1] },
    { ids: [2, 6, 10, 14, 18, 22, 26, 30], mask: [0, 1, 1, 1, 1, 1, 1, 1] },
  ];
  const batch = makeBatch(seqs, 0);
  const adam = new Adam({ lr: 1e-2 });
  const losses: number[] = [];
  for (let step = 0; step < 8; step++) {
    const { loss, grads } = lossAndGrads(m, batch, undefined, step);
    assert.deepEqual([...grads.keys()].sort(), adapterNames(m.config, m.lora!.settings).sort());
    adam.step(m, grads);
    losses.push(loss);
  }
  assert.ok(losses.at(-1)! < losses[0]! - 0.05, `loss ${losses[0]} → ${losses.at(-1)}`);
  for (const [n, d] of base)
    assert.equal(
      digestTensors([n], () => m.params.get(n)!),
      d,
      `${n} changed`,
    );
  adam.dispose();
  disposeModel(m);
});

test("LoRA dropout is seeded: the same seed gives the same gradients, another seed other ones", () => {
  const m = tiny("llama");
  addAdapters(m, resolveLora({ rank: 2, dropout: 0.5 }, m.config, "lora"), 1);
  randomizeAdapters(m, 2);
  const batch = makeBatch([{ ids: [1, 2, 3, 4, 5, 6], mask: [0, 1, 1, 1, 1, 1] }], 0);
  const loss = (seed?: number) => {
    const r = lossAndGrads(m, batch, undefined, seed);
    tf.dispose([...r.grads.values()]);
    return r.loss;
  };
  assert.equal(loss(5), loss(5));
  assert.notEqual(loss(5), loss(6));
  assert.notEqual(loss(5), loss(undefined));
  disposeModel(m);
});

test("invalid LoRA settings are refused naming the field", () => {
  const m = tiny("llama");
  const f = "spec.method.supervised.lora";
  const err = (spec: Parameters<typeof resolveLora>[0]) => {
    try {
      resolveLora(spec, m.config, f);
    } catch (e) {
      assert.ok(e instanceof LoraConfigError);
      return e.message;
    }
    assert.fail("accepted");
  };
  assert.match(
    err({ targetModules: ["q_proj", "c_attn"] }),
    /^spec\.method\.supervised\.lora\.targetModules\[1\]: "c_attn" is not a module of a llama model/,
  );
  assert.match(err({ targetModules: ["lm_head"] }), /targetModules\[0\]: "lm_head" is not adaptable here/);
  assert.match(err({ targetModules: ["q_proj", "q_proj"] }), /targetModules\[1\]: "q_proj" is listed twice/);
  // k_proj is 64 → 32 here (2 kv heads of 16): a rank of 33 cannot fit it.
  assert.match(
    err({ rank: 33, targetModules: ["k_proj"] }),
    /^spec\.method\.supervised\.lora\.rank: 33 is larger than k_proj's smallest dimension \(64×32/,
  );
  assert.equal(resolveLora({ rank: 32, targetModules: ["k_proj"] }, m.config, f).rank, 32);
  assert.match(err({ dropout: 1 }), /lora\.dropout: must be in \[0, 1\)/);
  disposeModel(m);
});
