import assert from "node:assert/strict";
import { before, test } from "node:test";
import * as tf from "@tensorflow/tfjs-core";
import { causalMask, forward } from "../../trainer/model/decoder.js";
import { createRandomModel, disposeModel, type Model } from "../../trainer/model/model.js";
import { ChatTokenizer } from "../../trainer/model/tokenizer.js";
import { generate } from "../../trainer/sampling/generate.js";
import { findStop, logSumExp, pickToken, Rng } from "../../trainer/sampling/pick.js";
import { setup } from "./helpers.js";

let model: Model;
let prompts: number[][];
before(async () => {
  await setup();
  model = createRandomModel({
    arch: "qwen2",
    layers: 2,
    hidden: 64,
    heads: 4,
    kvHeads: 2,
    vocab: "byte",
    seed: 21,
    std: 0.2,
  });
  prompts = ["Hello", "A much longer prompt, to pad the others", "xy"].map((p) => model.tokenizer!.encode(p));
});

/** Log-probabilities of every next token by full recomputation (no cache, no padding). */
function fullLogprobs(ids: number[]): number[][] {
  return tf.tidy(() => {
    const T = ids.length;
    const { logits } = forward(model, {
      ids: tf.tensor2d([ids], [1, T], "int32"),
      positions: tf.range(0, T, 1, "int32") as tf.Tensor1D,
      mask: causalMask(T, 2),
    });
    return tf.logSoftmax(logits).arraySync() as number[][];
  });
}

/** Tensors held, not counting the tied head's cached transpose (one per embedding tensor, kept on purpose). */
const held = () => tf.memory().numTensors - (model.headCache?.size ?? 0);

test("KV-cache generation (batched, left-padded) equals full recomputation", async () => {
  const before = held();
  for (const temperature of [0, 0.9]) {
    const out = await generate(
      model,
      prompts.map((promptIds, i) => ({
        promptIds,
        maxTokens: [10, 3, 6][i]!, // samples leave the batch at different steps
        seed: 100 + i,
        sampling: { temperature, topP: 0.95 },
      })),
    );
    for (const [i, c] of out.entries()) {
      assert.ok(c.tokens.length > 0);
      const seq = [...prompts[i]!, ...c.tokens];
      const lp = fullLogprobs(seq);
      for (const [k, t] of c.tokens.entries()) {
        const row = lp[prompts[i]!.length - 1 + k]!;
        assert.ok(Math.abs(row[t]! - c.logprobs[k]!) < 1e-4, `sample ${i} token ${k}: ${row[t]} vs ${c.logprobs[k]}`);
        if (temperature === 0) assert.equal(t, row.indexOf(Math.max(...row)), `greedy token ${k} of sample ${i}`);
      }
    }
  }
  assert.equal(held(), before, "generation leaks no tensors");
});

test("a fixed seed gives the same samples; max tokens gives finish_reason length", async () => {
  const req = { promptIds: prompts[0]!, maxTokens: 7, seed: 42, sampling: { temperature: 1, topK: 50 } };
  const [a] = await generate(model, [req]);
  const [b] = await generate(model, [req]);
  assert.deepEqual(a!.tokens, b!.tokens);
  assert.equal(a!.tokens.length, 7);
  assert.equal(a!.finishReason, "length");
  const [c] = await generate(model, [{ ...req, seed: 43 }]);
  assert.notDeepEqual(c!.tokens, a!.tokens);
});

test("stop sequences cut the text and give finish_reason stop; streaming never leaks them", async () => {
  const [free] = await generate(model, [{ promptIds: prompts[1]!, maxTokens: 12, sampling: { temperature: 0 } }]);
  const text = free!.text;
  assert.ok(text.length >= 6, `greedy text ${JSON.stringify(text)}`);
  const stop = text.slice(3, 5);
  const streamed: string[] = [];
  const [cut] = await generate(
    model,
    [{ promptIds: prompts[1]!, maxTokens: 12, stop: [stop], sampling: { temperature: 0 } }],
    {
      onTokens: (_i, t) => streamed.push(t),
    },
  );
  assert.equal(cut!.finishReason, "stop");
  assert.equal(cut!.text, text.slice(0, findStop(text, [stop])));
  assert.equal(streamed.join(""), cut!.text);
});

test("a sample whose first token is end-of-turn finishes with stop and empty text", async () => {
  const [free] = await generate(model, [{ promptIds: prompts[0]!, maxTokens: 1, sampling: { temperature: 0 } }]);
  const first = free!.tokens[0]!;
  const tokenizer = new ChatTokenizer(model.tokenizer!.files, [first]);
  const [c] = await generate({ ...model, tokenizer }, [
    { promptIds: prompts[0]!, maxTokens: 5, sampling: { temperature: 0 } },
  ]);
  assert.deepEqual(c, { tokens: [], logprobs: [], text: "", finishReason: "stop" });
});

test("pickToken: greedy, top-k 1, banned ids, log-probabilities", () => {
  const logits = Float32Array.from([0.5, 2, 1, -1]);
  const rng = new Rng(1);
  assert.equal(pickToken(logits, { temperature: 0, topP: 1, topK: 0 }, rng).token, 1);
  assert.equal(pickToken(logits, { temperature: 1, topP: 1, topK: 1 }, rng).token, 1);
  assert.equal(pickToken(logits, { temperature: 0, topP: 1, topK: 0 }, rng, new Set([1])).token, 2);
  const p = pickToken(logits, { temperature: 0.7, topP: 0.5, topK: 0 }, rng);
  assert.equal(p.token, 1);
  assert.ok(Math.abs(p.logprob - (2 - logSumExp(logits))) < 1e-6);
});

test("after the tests", () => disposeModel(model));
