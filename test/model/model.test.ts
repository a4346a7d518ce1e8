import assert from "node:assert/strict";
import { readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { before, test } from "node:test";
import * as tf from "@tensorflow/tfjs-core";
import { ConfigError, newHfConfig, parseHfConfig } from "../../trainer/model/config.js";
import { causalMask, forward } from "../../trainer/model/decoder.js";
import { loadHfModel, ModelDirError, saveHfModel } from "../../trainer/model/hf-io.js";
import { createRandomModel, disposeModel } from "../../trainer/model/model.js";
import { bmm, embeddingLookup, linear } from "../../trainer/model/ops.js";
import { countParams, parameterGroups } from "../../trainer/model/params.js";
import {
  f16ToF32,
  f32ToBf16,
  f32ToF16,
  SafetensorsError,
  SafetensorsReader,
  serialize,
} from "../../trainer/model/safetensors.js";
import { setup, tempDir } from "./helpers.js";

before(setup);

const base = () => newHfConfig({ arch: "llama", layers: 2, hidden: 32, heads: 4, kvHeads: 2, vocabSize: 100 });

test("config: llama, qwen2 and mistral parse; unsupported fields are named", () => {
  const c = parseHfConfig(base());
  assert.equal(c.arch, "llama");
  assert.equal(c.headDim, 8);
  assert.equal(c.qkvBias, false);
  const q = parseHfConfig({
    ...newHfConfig({ arch: "qwen2", layers: 1, hidden: 32, heads: 4, kvHeads: 4, vocabSize: 50 }),
  });
  assert.equal(q.qkvBias, true);
  assert.equal(q.tieWordEmbeddings, true);
  const m = parseHfConfig({ ...base(), model_type: "mistral", sliding_window: 64, max_position_embeddings: 4096 });
  assert.equal(m.maxContext, 64);
  assert.throws(
    () => parseHfConfig({ ...base(), rope_scaling: { rope_type: "yarn", factor: 4 } }),
    /rope_scaling" type "yarn"/,
  );
  assert.throws(() => parseHfConfig({ ...base(), hidden_act: "gelu" }), /hidden_act="gelu"/);
  assert.throws(() => parseHfConfig({ ...base(), mlp_bias: true }), /mlp_bias/);
  assert.throws(() => parseHfConfig({ ...base(), model_type: "gpt2" }), ConfigError);
  assert.throws(() => parseHfConfig({ ...base(), num_key_value_heads: 3 }), /multiple of num_key_value_heads/);
  const l3 = parseHfConfig({
    ...base(),
    rope_scaling: { rope_type: "llama3", factor: 8, original_max_position_embeddings: 64 },
  });
  assert.equal(l3.ropeScaling.type, "llama3");
});

test("parameter groups cover every tensor once, in the governance names", () => {
  const c = parseHfConfig(base());
  const groups = parameterGroups(c);
  assert.deepEqual(
    [...groups.keys()],
    [
      "embeddings",
      "layers.0.attention",
      "layers.0.mlp",
      "layers.0.norms",
      "layers.1.attention",
      "layers.1.mlp",
      "layers.1.norms",
      "final_norm",
      "lm_head",
    ],
  );
  assert.deepEqual(groups.get("layers.1.mlp"), [
    "model.layers.1.mlp.gate_proj.weight",
    "model.layers.1.mlp.up_proj.weight",
    "model.layers.1.mlp.down_proj.weight",
  ]);
  const all = [...groups.values()].flat();
  assert.equal(new Set(all).size, all.length);
  assert.ok(countParams(c) > 0);
});

test("safetensors: f16/bf16 conversions round-trip and bad files get clear errors", async () => {
  for (const x of [0, 1, -2.5, 65504, 6.1e-5, 1e-7])
    assert.ok(Math.abs(f16ToF32(f32ToF16(x)) - x) <= Math.abs(x) * 1e-3 + 6e-8);
  assert.equal(f32ToBf16(1), 0x3f80);
  const dir = await tempDir("st");
  const buf = serialize([{ name: "a", shape: [2, 3], data: new Float32Array([1, 2, 3, 4, 5, 6]) }]);
  assert.equal((buf.readUInt32LE(0) + 8) % 8, 0);
  await writeFile(join(dir, "ok.safetensors"), buf);
  const r = await SafetensorsReader.open(join(dir, "ok.safetensors"));
  assert.deepEqual([...(await r.readF32("a")).data], [1, 2, 3, 4, 5, 6]);
  await r.close();
  await writeFile(join(dir, "trunc.safetensors"), buf.subarray(0, buf.length - 4));
  await assert.rejects(
    SafetensorsReader.open(join(dir, "trunc.safetensors")),
    (e: Error) => e instanceof SafetensorsError && /trunc\.safetensors: truncated/.test(e.message),
  );
  await writeFile(
    join(dir, "garbled.safetensors"),
    Buffer.concat([buf.subarray(0, 8), Buffer.from("{not json"), buf.subarray(17)]),
  );
  await assert.rejects(
    SafetensorsReader.open(join(dir, "garbled.safetensors")),
    /garbled\.safetensors: header is not valid JSON/,
  );
  await writeFile(join(dir, "tiny.safetensors"), Buffer.from([1, 2]));
  await assert.rejects(SafetensorsReader.open(join(dir, "tiny.safetensors")), /tiny\.safetensors: truncated/);
  await rm(dir, { recursive: true });
});

test("save → load is bit-identical (f32), and bf16 saves load back rounded", async () => {
  const m = createRandomModel({ arch: "qwen2", layers: 2, hidden: 32, heads: 4, kvHeads: 2, vocab: "byte", seed: 7 });
  const dir = await tempDir("rt");
  await saveHfModel(m, dir);
  const back = await loadHfModel(dir);
  for (const [name, t] of m.params) {
    const a = t.dataSync() as Float32Array;
    const b = back.params.get(name)!.dataSync() as Float32Array;
    assert.deepEqual(
      Buffer.from(b.buffer, b.byteOffset, b.byteLength),
      Buffer.from(a.buffer, a.byteOffset, a.byteLength),
      name,
    );
  }
  assert.deepEqual(back.config.raw, JSON.parse(await readFile(join(dir, "config.json"), "utf8")));
  assert.ok(back.tokenizer?.hasChatTemplate);
  await saveHfModel(m, join(dir, "bf16"), { dtype: "BF16" });
  const b16 = await loadHfModel(join(dir, "bf16"));
  assert.equal(b16.diskDtype, "BF16");
  const w = "model.layers.0.mlp.up_proj.weight";
  const x = m.params.get(w)!.dataSync();
  const y = b16.params.get(w)!.dataSync();
  for (let i = 0; i < x.length; i++) assert.ok(Math.abs(x[i]! - y[i]!) <= Math.abs(x[i]!) / 128);
  for (const mm of [m, back, b16]) disposeModel(mm);
  await rm(dir, { recursive: true });
});

test("malformed model directories get errors naming the file and the problem", async () => {
  const m = createRandomModel({ arch: "llama", layers: 1, hidden: 16, heads: 2, kvHeads: 1, vocab: "byte" });
  const dir = await tempDir("bad");
  await assert.rejects(loadHfModel(join(dir, "nope")), /nope: no such directory/);
  await assert.rejects(
    loadHfModel(dir),
    (e: Error) => e instanceof ModelDirError && /config\.json: missing/.test(e.message),
  );
  await saveHfModel(m, dir);
  await writeFile(join(dir, "config.json"), "{ bad json");
  await assert.rejects(loadHfModel(dir), /config\.json: invalid JSON/);
  const cfg = { ...(m.config.raw as Record<string, unknown>), rope_scaling: { type: "dynamic", factor: 2 } };
  await writeFile(join(dir, "config.json"), JSON.stringify(cfg));
  await assert.rejects(loadHfModel(dir), /config\.json: unsupported "rope_scaling" type "dynamic"/);
  await writeFile(join(dir, "config.json"), JSON.stringify({ ...m.config.raw, hidden_size: 32, head_dim: 16 }));
  await assert.rejects(
    loadHfModel(dir),
    /model\.safetensors: tensor "model\.embed_tokens\.weight" has shape \[259,16\], config\.json implies \[259,32\]/,
  );
  await writeFile(join(dir, "config.json"), JSON.stringify({ ...m.config.raw, num_hidden_layers: 2 }));
  await assert.rejects(loadHfModel(dir), /missing tensors: model\.layers\.1\./);
  await writeFile(join(dir, "config.json"), JSON.stringify(m.config.raw));
  const st = await readFile(join(dir, "model.safetensors"));
  await writeFile(join(dir, "model.safetensors"), st.subarray(0, st.length - 100));
  await assert.rejects(loadHfModel(dir), /model\.safetensors: truncated: tensor "[^"]+" ends at byte/);
  await rm(join(dir, "model.safetensors"));
  await writeFile(join(dir, "pytorch_model.bin"), "x");
  await assert.rejects(loadHfModel(dir), /no model\.safetensors or model\.safetensors\.index\.json \(PyTorch pickle/);
  disposeModel(m);
  await rm(dir, { recursive: true });
});

test("a chat template in chat_template.jinja (transformers 5's layout) is loaded", async () => {
  const m = createRandomModel({ arch: "llama", layers: 1, hidden: 16, heads: 2, kvHeads: 1, vocab: "byte", seed: 1 });
  const dir = await tempDir("jinja");
  await saveHfModel(m, dir);
  const cfgFile = join(dir, "tokenizer_config.json");
  const cfg = JSON.parse(await readFile(cfgFile, "utf8")) as Record<string, unknown>;
  delete cfg["chat_template"];
  await writeFile(cfgFile, JSON.stringify(cfg));
  await writeFile(join(dir, "chat_template.jinja"), "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}");
  const back = await loadHfModel(dir);
  assert.equal(back.tokenizer?.applyChatTemplate([{ role: "user", content: "hi" }], false), "<user>hi");
  for (const mm of [m, back]) disposeModel(mm);
  await rm(dir, { recursive: true });
});

test("sharded safetensors (index.json) load", async () => {
  const m = createRandomModel({ arch: "llama", layers: 2, hidden: 16, heads: 2, kvHeads: 2, vocab: "byte", seed: 3 });
  const dir = await tempDir("shard");
  await saveHfModel(m, dir);
  const r = await SafetensorsReader.open(join(dir, "model.safetensors"));
  const names = r.names();
  const tensors = await Promise.all(names.map(async (n) => ({ name: n, ...(await r.readF32(n)) })));
  await r.close();
  await rm(join(dir, "model.safetensors"));
  const half = Math.ceil(names.length / 2);
  const parts = [tensors.slice(0, half), tensors.slice(half)];
  const weightMap: Record<string, string> = {};
  for (const [i, part] of parts.entries()) {
    const file = `model-0000${i + 1}-of-00002.safetensors`;
    await writeFile(join(dir, file), serialize(part.map((t) => ({ name: t.name, shape: t.shape, data: t.data }))));
    for (const t of part) weightMap[t.name] = file;
  }
  await writeFile(join(dir, "model.safetensors.index.json"), JSON.stringify({ metadata: {}, weight_map: weightMap }));
  const back = await loadHfModel(dir);
  for (const [name, t] of m.params) assert.deepEqual(back.params.get(name)!.dataSync(), t.dataSync(), name);
  await rm(join(dir, "model-00002-of-00002.safetensors"));
  await assert.rejects(
    loadHfModel(dir),
    /model-00002-of-00002\.safetensors: missing \(named in model\.safetensors\.index\.json\)/,
  );
  disposeModel(m);
  disposeModel(back);
  await rm(dir, { recursive: true });
});

test("custom gradients (linear, bmm, embedding) equal the plain ops' gradients", () => {
  tf.tidy(() => {
    const x = tf.randomNormal([5, 4], 0, 1, "float32", 1) as tf.Tensor2D;
    const w = tf.randomNormal([4, 3], 0, 1, "float32", 2) as tf.Tensor2D;
    const [gx, gw] = tf.grads((a: tf.Tensor, b: tf.Tensor) =>
      tf.sum(tf.square(linear(a as tf.Tensor2D, b as tf.Tensor2D))),
    )([x, w]);
    const [rx, rw] = tf.grads((a: tf.Tensor, b: tf.Tensor) =>
      tf.sum(tf.square(tf.matMul(a as tf.Tensor2D, b as tf.Tensor2D))),
    )([x, w]);
    assert.ok(tf.max(tf.abs(tf.sub(gx!, rx!))).dataSync()[0]! < 1e-5);
    assert.ok(tf.max(tf.abs(tf.sub(gw!, rw!))).dataSync()[0]! < 1e-5);
    const a = tf.randomNormal([3, 5, 4], 0, 1, "float32", 3) as tf.Tensor3D;
    const b = tf.randomNormal([3, 4, 2], 0, 1, "float32", 4) as tf.Tensor3D;
    const [ga, gb] = tf.grads((p: tf.Tensor, q: tf.Tensor) =>
      tf.sum(tf.square(bmm(p as tf.Tensor3D, q as tf.Tensor3D))),
    )([a, b]);
    const [ra, rb] = tf.grads((p: tf.Tensor, q: tf.Tensor) =>
      tf.sum(tf.square(tf.matMul(p as tf.Tensor3D, q as tf.Tensor3D))),
    )([a, b]);
    assert.ok(tf.max(tf.abs(tf.sub(ga!, ra!))).dataSync()[0]! < 1e-4);
    assert.ok(tf.max(tf.abs(tf.sub(gb!, rb!))).dataSync()[0]! < 1e-4);
    const table = tf.randomNormal([6, 3], 0, 1, "float32", 5) as tf.Tensor2D;
    const ids = tf.tensor1d([1, 4, 1, 0], "int32");
    const up = tf.randomNormal([4, 3], 0, 1, "float32", 6);
    const [ge] = tf.grads((t: tf.Tensor) => tf.sum(tf.mul(embeddingLookup(t as tf.Tensor2D, ids), up)))([table]);
    const re = tf.matMul(tf.transpose(tf.cast(tf.oneHot(ids, 6), "float32")), up);
    assert.ok(tf.max(tf.abs(tf.sub(ge!, re))).dataSync()[0]! < 1e-6);
  });
});

test("a training step leaks no tensors (tensor count flat across steps)", () => {
  const m = createRandomModel({ arch: "qwen2", layers: 2, hidden: 32, heads: 4, kvHeads: 2, vocab: "byte", seed: 1 });
  const T = 8;
  const ids = tf.tensor2d([[1, 2, 3, 4, 5, 6, 7, 8]], [1, T], "int32");
  const labels = tf.oneHot(tf.tensor1d([2, 3, 4, 5, 6, 7, 8, 9], "int32"), m.config.vocabSize);
  const positions = tf.range(0, T, 1, "int32") as tf.Tensor1D;
  const mask = causalMask(T, 2);
  const names = [...m.params.keys()];
  const counts: number[] = [];
  for (let step = 0; step < 4; step++) {
    tf.tidy(() => {
      const f = (...ws: tf.Tensor[]) => {
        const params = new Map(names.map((n, i) => [n, ws[i]!]));
        const { logits } = forward({ ...m, params }, { ids, positions, mask });
        return tf.neg(tf.mean(tf.sum(tf.mul(tf.logSoftmax(logits), labels), -1))) as tf.Scalar;
      };
      const { value, grads } = tf.valueAndGrads(f)(names.map((n) => m.params.get(n)!));
      assert.ok(Number.isFinite(value.dataSync()[0]!));
      for (const [i, n] of names.entries()) {
        const next = tf.keep(tf.sub(m.params.get(n)!, tf.mul(grads[i]!, 0.01)));
        m.params.get(n)!.dispose();
        m.params.set(n, next);
      }
    });
    counts.push(tf.memory().numTensors);
  }
  assert.equal(new Set(counts).size, 1, `tensor counts ${counts}`);
  disposeModel(m);
});
