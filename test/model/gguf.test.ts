/**
 * GGUF import: the real SmolLM2-135M-Instruct GGUF (Q4_1) against transformers' own GGUF loading (config, every
 * tensor, logits, a greedy continuation, tokenizer ids, chat template); every dequantized type against
 * gguf-py's `dequantize` on files gguf-py wrote; damaged and unsupported files rejected naming file and problem.
 */
import assert from "node:assert/strict";
import { execFile, spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import { Tokenizer } from "@huggingface/tokenizers";
import * as tf from "@tensorflow/tfjs-core";
import { causalMask, forward } from "../../trainer/model/decoder.js";
import { GgufError, importGguf } from "../../trainer/model/gguf-import.js";
import { GgufFile } from "../../trainer/model/gguf-read.js";
import { type LoadedModel, loadHfModel } from "../../trainer/model/hf-io.js";
import { disposeModel, type Model } from "../../trainer/model/model.js";
import { ChatTokenizer } from "../../trainer/model/tokenizer.js";
import { smollm2Gguf } from "../helpers/smollm2.js";
import { referencePython, setup, tempDir } from "./helpers.js";

const run = promisify(execFile);

async function python<T>(...args: string[]): Promise<T> {
  const { stdout } = await run(referencePython(), ["test/model/gguf_reference.py", ...args], {
    maxBuffer: 256 << 20,
    env: { ...process.env, TRANSFORMERS_VERBOSITY: "error", HF_HUB_OFFLINE: "1" },
  });
  return JSON.parse(stdout.trim().split("\n").pop()!) as T;
}

const rft = (...args: string[]) =>
  spawnSync(process.execPath, ["--import", "tsx", "cli/rft.ts", ...args], {
    encoding: "utf8",
    env: { ...process.env, RFT_LOG_LEVEL: "silent" },
  });

function lastLogits(m: Model, ids: number[]): Float32Array {
  return tf
    .tidy(() => {
      const T = ids.length;
      const g = m.config.numHeads / m.config.numKvHeads;
      const out = forward(m, {
        ids: tf.tensor2d([ids], [1, T], "int32"),
        positions: tf.range(0, T, 1, "int32") as tf.Tensor1D,
        mask: causalMask(T, g),
        logitRows: tf.tensor1d([T - 1], "int32"),
      });
      return out.logits.dataSync() as Float32Array;
    })
    .slice();
}

function argmax(v: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < v.length; i++) if (v[i]! > v[best]!) best = i;
  return best;
}

/** Strings for the tokenizer comparison: ASCII, code, emoji, CJK, and digits of many scripts. */
const STRINGS = [
  "Hello, world!",
  "The quick brown fox jumps over the lazy dog. 1234567890",
  "  leading spaces and trailing   ",
  "line one\nline two\r\n\ttabbed",
  "def f(x):\n    return x ** 2  # square\n",
  'const o = { "a": [1, 2.5e-3], b: null };',
  "SELECT id, name FROM users WHERE age >= 21;",
  "I'm sure they'll say it's fine, we've done it, you'd agree",
  "emoji 🙂🚀👩‍💻 and flags 🇫🇷",
  "中文分词测试，日本語のテキスト、한국어 문장",
  "Привет, мир! Ελληνικά",
  "مرحبا بالعالم",
  "٠١٢٣٤٥٦٧٨٩",
  "price: ٣٤٥ dollars",
  "العدد ١٢ و ٣٤",
  "۰۱۲۳۴۵۶۷۸۹ and ۴۲",
  "हिंदी अंक ० १२ ३४५",
  "বাংলা ১২৩",
  "เลขไทย ๑๒๓",
  "full-width １２３ and Ｘ",
  "Roman Ⅻ, fractions ½ ¾, superscripts x² ③",
  "2024-12-01T23:55:00Z",
  "<|im_start|>user\nhi<|im_end|>",
];

const MESSAGES = [
  { role: "user", content: "What is 2+2?" },
  { role: "assistant", content: "4" },
  { role: "user", content: "And ٣ + ٤?" },
];

describe("SmolLM2-135M-Instruct GGUF vs transformers", () => {
  let dir: string;
  let model: LoadedModel;
  let importSeconds = 0;

  before(async () => {
    await setup();
    dir = await tempDir("gguf-smollm2");
    const t0 = Date.now();
    const r = rft("import", "gguf", smollm2Gguf(), "--out", dir);
    importSeconds = (Date.now() - t0) / 1000;
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /imported .*: llama, 30 layers, 272 tensors/);
    model = await loadHfModel(dir);
  });
  after(async () => {
    if (model) disposeModel(model);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test("config, every tensor, next-token logits and a greedy continuation", async (t) => {
    const tok = model.tokenizer!;
    const prompts = [
      tok.encode(tok.applyChatTemplate([{ role: "user", content: "What is the capital of France?" }], true)),
      tok.encode("def fibonacci(n):\n    "),
      tok.encode("The three primary colors are"),
    ];
    const greedy = prompts[0]!;
    const NEW = 8;
    const ref = await python<{
      config: Record<string, unknown>;
      diffs: Record<string, number | string | null>;
      missing: string[];
      prompts: { logits: number[] }[];
      greedy: number[];
    }>("model", smollm2Gguf(), dir, JSON.stringify({ prompts, greedy, new_tokens: NEW }));

    const c = model.config;
    const ours: Record<string, unknown> = {
      vocab_size: c.vocabSize,
      hidden_size: c.hiddenSize,
      intermediate_size: c.intermediateSize,
      num_hidden_layers: c.numLayers,
      num_attention_heads: c.numHeads,
      num_key_value_heads: c.numKvHeads,
      head_dim: c.headDim,
      max_position_embeddings: c.maxContext,
      rms_norm_eps: c.rmsNormEps,
      tie_word_embeddings: c.tieWordEmbeddings,
      bos_token_id: c.bosTokenId,
      eos_token_id: c.eosTokenIds[0],
      pad_token_id: c.padTokenId,
      hidden_act: "silu",
      rope_theta: c.ropeTheta,
    };
    assert.deepEqual(ours, ref.config);

    assert.deepEqual(ref.missing, []);
    const names = Object.keys(ref.diffs);
    assert.equal(names.length, 2 + 9 * 30, "tensors in model.safetensors");
    const notExact = Object.entries(ref.diffs).filter(([, d]) => d !== 0);
    assert.deepEqual(notExact, [], "every tensor equals transformers' dequantization exactly");

    let maxLogit = 0;
    for (let i = 0; i < prompts.length; i++) {
      const mine = lastLogits(model, prompts[i]!);
      const theirs = ref.prompts[i]!.logits;
      assert.equal(mine.length, theirs.length);
      let err = 0;
      for (let j = 0; j < theirs.length; j++) err = Math.max(err, Math.abs(mine[j]! - theirs[j]!));
      maxLogit = Math.max(maxLogit, err);
      assert.equal(argmax(mine), argmax(theirs), `prompt ${i}: same next token`);
    }
    assert.ok(maxLogit <= 1e-4, `largest |logit difference| ${maxLogit}`);

    const ids = [...greedy];
    const gen: number[] = [];
    for (let s = 0; s < NEW; s++) {
      const next = argmax(lastLogits(model, ids));
      gen.push(next);
      ids.push(next);
    }
    assert.deepEqual(gen, ref.greedy, "greedy continuation token for token");
    t.diagnostic(
      `import ${importSeconds.toFixed(1)} s (CLI); max |logit diff| ${maxLogit.toExponential(2)}; greedy: ${JSON.stringify(tok.decode(gen))}`,
    );
  });

  test("tokenizer ids and the chat template", async (t) => {
    const tok = model.tokenizer!;
    const ref = await python<{
      transformers_gguf: number[][];
      model_pretokenizer: number[][];
      ours_in_transformers: number[][];
      chat: string;
      ours_chat: string;
      bos: string;
      eos: string;
      pad: string;
    }>("tokenizer", smollm2Gguf(), dir, JSON.stringify({ strings: STRINGS, messages: MESSAGES }));
    const ours = STRINGS.map((s) => tok.encode(s));
    // our tokenizer files, loaded by transformers (Rust tokenizers): the same ids, the same rendering
    assert.deepEqual(ref.ours_in_transformers, ours);
    assert.equal(ref.ours_chat, ref.chat);
    // With the model's own pre-tokenizer (llama.cpp's "smollm": every numeric character split off): all equal.
    for (let i = 0; i < STRINGS.length; i++)
      assert.deepEqual(ours[i], ref.model_pretokenizer[i], `ids of ${JSON.stringify(STRINGS[i])}`);
    // transformers' GGUF loader leaves that split out; it differs only where a space precedes a non-ASCII digit.
    const differ = STRINGS.filter((_, i) => JSON.stringify(ours[i]) !== JSON.stringify(ref.transformers_gguf[i]));
    for (const s of differ) assert.match(s, / [^\s0-9\p{L}]*\p{N}/u, `unexpected difference on ${JSON.stringify(s)}`);
    t.diagnostic(
      `${STRINGS.length - differ.length}/${STRINGS.length} identical to transformers' GGUF tokenizer as built; differ: ${JSON.stringify(differ)}`,
    );
    for (const s of STRINGS) if (!s.includes("<|")) assert.equal(tok.decode(tok.encode(s)), s);
    assert.equal(tok.applyChatTemplate(MESSAGES, true), ref.chat);
    const cfg = tok.files.tokenizerConfig;
    assert.deepEqual([cfg["bos_token"], cfg["eos_token"], cfg["pad_token"]], [ref.bos, ref.eos, ref.pad]);
    assert.deepEqual(tok.eosIds, [2]);

    // SmolLM2's hub tokenizer.json spells the split as Digits(individual_digits): @huggingface/tokenizers reads
    // that as ASCII-only (JS \d); ChatTokenizer rewrites it into the \p{N} Split, so the ids still agree.
    const hubForm = {
      ...tok.files.tokenizerJson,
      pre_tokenizer: {
        type: "Sequence",
        pretokenizers: [
          { type: "Digits", individual_digits: true },
          { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
        ],
      },
    };
    const hub = new ChatTokenizer({ tokenizerJson: hubForm, tokenizerConfig: tok.files.tokenizerConfig });
    assert.deepEqual(
      STRINGS.map((s) => hub.encode(s)),
      ref.model_pretokenizer,
    );
    const i = STRINGS.indexOf("price: ٣٤٥ dollars");
    const raw = new Tokenizer(hubForm, tok.files.tokenizerConfig).encode(STRINGS[i]!, { add_special_tokens: false });
    assert.notDeepEqual(
      raw.ids,
      ref.model_pretokenizer[i],
      "the library's Digits is ASCII-only (if this fails, it no longer is)",
    );
  });
});

describe("dequantization vs gguf-py", () => {
  let dir: string;
  before(async () => {
    dir = await tempDir("gguf-quants");
    await python("quants", dir);
  });
  after(() => rm(dir, { recursive: true, force: true }));

  for (const type of ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q6_K"]) {
    test(`${type}: equal to gguf.quants.dequantize, bit for bit`, () => {
      const g = GgufFile.open(join(dir, `${type}.gguf`));
      const { data, shape, typeName } = g.readF32("t");
      g.close();
      assert.equal(typeName, type);
      assert.deepEqual(shape, [8, 512]);
      const b = readFileSync(join(dir, `${type}.f32`));
      const ref = new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);
      assert.equal(data.length, ref.length);
      let bad = 0;
      for (let i = 0; i < ref.length; i++) if (!Object.is(data[i], ref[i])) bad++;
      assert.equal(bad, 0, `${bad} of ${ref.length} values differ`);
      assert.ok(ref.some((v) => v !== 0));
    });
  }

  test("every metadata value type reads back", () => {
    const g = GgufFile.open(join(dir, "F32.gguf"));
    g.close();
    const m = Object.fromEntries([...g.metadata].filter(([k]) => k.startsWith("test.")));
    assert.deepEqual(m, {
      "test.u8": 250,
      "test.i8": -7,
      "test.u16": 65000,
      "test.i16": -32000,
      "test.u32": 4000000000,
      "test.i32": -2000000000,
      "test.f32": 0.5,
      "test.bool": true,
      "test.str": "héllo ✓",
      "test.u64": 2 ** 40 + 3,
      "test.i64": -(2 ** 40),
      "test.f64": 0.1,
      "test.strs": ["a", "bc", ""],
      "test.ints": [1, 2, 3],
      "test.nested": [[1, 2], [3]],
    });
    assert.equal(g.metadata.get("general.architecture"), "llama");
    assert.equal(g.dataOffset % g.alignment, 0);
  });

  describe("bad input: the message names the file and the problem", () => {
    let bad: string;
    before(async () => {
      bad = await tempDir("gguf-bad");
      await python("bad", bad);
    });
    after(() => rm(bad, { recursive: true, force: true }));

    async function rejects(file: string, re: RegExp): Promise<void> {
      await assert.rejects(importGguf(file, join(bad, "out")), (e: Error) => {
        assert.ok(e instanceof GgufError, String(e));
        assert.ok(e.message.startsWith(`${file}: `), e.message);
        assert.match(e.message, re);
        return true;
      });
    }

    test("truncated tensor data, truncated metadata", async () => {
      const good = await readFile(join(dir, "Q8_0.gguf"));
      const cut = join(bad, "cut-data.gguf");
      await writeFile(cut, good.subarray(0, good.length - 100));
      await rejects(cut, /truncated: tensor "t" data ends at byte \d+, past the end of the file/);
      const cutMeta = join(bad, "cut-meta.gguf");
      await writeFile(cutMeta, good.subarray(0, 100));
      await rejects(cutMeta, /truncated: metadata .* runs past the end of the file/);
    });

    test("bad magic, unsupported version", async () => {
      const good = await readFile(join(dir, "Q8_0.gguf"));
      const magic = join(bad, "magic.gguf");
      await writeFile(magic, Buffer.concat([Buffer.from("GGML"), good.subarray(4)]));
      await rejects(magic, /not a GGUF file \(bad magic "GGML", want "GGUF"\)/);
      const v = Buffer.from(good);
      v.writeUInt32LE(7, 4);
      const version = join(bad, "version.gguf");
      await writeFile(version, v);
      await rejects(version, /unsupported GGUF version 7 \(supported: 2, 3\)/);
      v.writeUInt32BE(3, 4);
      await writeFile(version, v);
      await rejects(version, /big-endian GGUF \(version 3\) is not supported/);
    });

    test("unsupported architecture, unsupported tensor type; the CLI says so in one line, exit 1", async () => {
      await rejects(join(bad, "arch.gguf"), /unsupported architecture "mamba" \(supported: llama\)/);
      await rejects(join(bad, "type.gguf"), /tensor "blk.0.attn_q.weight" has type Q5_K, which is not supported/);
      const r = rft("import", "gguf", join(bad, "type.gguf"), "--out", join(bad, "out"));
      assert.equal(r.status, 1);
      assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
      assert.match(r.stderr, /^rft import gguf: .*type\.gguf: tensor "blk\.0\.attn_q\.weight" has type Q5_K/);
    });

    test("shapes inconsistent with the metadata", async () => {
      // a real model's metadata with one dimension changed: the tensors no longer fit the config it implies
      const src = await readFile(smollm2Gguf());
      const key = Buffer.from("llama.feed_forward_length");
      const at = src.indexOf(key);
      assert.ok(at > 0);
      const b = Buffer.from(src);
      b.writeUInt32LE(1024, at + key.length + 4); // after the key, its u32 value type
      const file = join(bad, "shape.gguf");
      await writeFile(file, b);
      await rejects(
        file,
        /tensor "blk\.0\.ffn_gate\.weight" has shape \[1536,576\], the llama\.\* metadata implies \[1024,576\]/,
      );
    });
  });
});
