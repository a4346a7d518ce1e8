import assert from "node:assert/strict";
import { before, test } from "node:test";
import * as tf from "@tensorflow/tfjs-core";
import { createRandomModel, disposeModel } from "../../trainer/model/model.js";
import {
  parseChatJsonl,
  resolveHyperparameters,
  runSft,
  SftDataError,
  tokenizeExample,
} from "../../trainer/sft/sft.js";
import { setup } from "./helpers.js";

before(setup);

const NAMES = ["ada", "bob", "cy", "dee", "eve", "fay", "gus", "hal", "ivy", "jo", "kai", "lu"];

/** A synthetic task: greet the name back in a fixed format. */
function dataset(names: string[]): string {
  return names
    .map((n) =>
      JSON.stringify({
        messages: [
          { role: "system", content: "Greet." },
          { role: "user", content: n },
          { role: "assistant", content: `Hi ${n}!` },
        ],
      }),
    )
    .join("\n");
}

test("chat JSONL parsing: errors name the line and field", () => {
  assert.equal(parseChatJsonl(dataset(["a", "b"]), "train.jsonl").length, 2);
  assert.throws(
    () => parseChatJsonl('{"messages": []}', "t.jsonl"),
    /t\.jsonl:1: "messages" must be a non-empty array/,
  );
  assert.throws(
    () => parseChatJsonl('\n{"messages": [{"role": "bot", "content": "x"}]}', "t.jsonl"),
    /t\.jsonl:2: messages\[0\]\.role/,
  );
  assert.throws(() => parseChatJsonl("{oops", "t.jsonl"), SftDataError);
  assert.throws(
    () => parseChatJsonl('{"messages": [{"role": "user", "content": "x"}]}', "t.jsonl"),
    /no assistant message/,
  );
  assert.deepEqual(resolveHyperparameters({ n_epochs: 2, batch_size: "auto" }, 1000), {
    nEpochs: 2,
    batchSize: 2,
    lrMultiplier: 1,
  });
  assert.throws(() => resolveHyperparameters({ batch_size: 0.5 }, 10), /batch_size/);
});

test("only assistant tokens (content and end of turn) carry loss", () => {
  const m = createRandomModel({ arch: "llama", layers: 1, hidden: 16, heads: 2, kvHeads: 1, vocab: "byte" });
  const tok = m.tokenizer!;
  const [ex] = parseChatJsonl(dataset(["zed"]));
  const { ids, mask } = tokenizeExample(tok, ex!, 1000);
  const trained = ids.filter((_, i) => mask[i]);
  assert.equal(tok.decode(trained, false), "Hi zed!<|im_end|>\n");
  disposeModel(m);
});

test("SFT drives training and validation loss down on a small synthetic chat set, without leaking tensors", async () => {
  const m = createRandomModel({ arch: "qwen2", layers: 2, hidden: 64, heads: 4, kvHeads: 2, vocab: "byte", seed: 5 });
  const train = parseChatJsonl(dataset(NAMES.slice(0, 10)), "train.jsonl");
  const validation = parseChatJsonl(dataset(NAMES.slice(10)), "valid.jsonl");
  const counts: number[] = [];
  const res = await runSft(m, {
    train,
    validation,
    hyperparameters: { n_epochs: 6, batch_size: 5, learning_rate_multiplier: 30 },
    seed: 1,
    onStep: () => counts.push(tf.memory().numTensors),
  });
  const first = res.steps[0]!.trainLoss;
  const last = res.finalTrainLoss;
  assert.equal(res.steps.length, 12);
  assert.ok(last < first * 0.6, `train loss ${first} → ${last}`);
  const valids = res.steps.filter((s) => s.validLoss !== undefined).map((s) => s.validLoss!);
  assert.equal(valids.length, 6);
  assert.ok(valids[valids.length - 1]! < valids[0]!, `validation loss ${valids}`);
  assert.equal(new Set(counts.slice(1)).size, 1, `tensor counts ${counts}`);
  disposeModel(m);
});
