import assert from "node:assert/strict";
import { before, test } from "node:test";
import * as tf from "@tensorflow/tfjs-core";
import { createRandomModel, disposeModel } from "../../trainer/model/model.js";
import { parseSftDataset } from "../../trainer/data/dataset.js";
import { runSft, type SftExample, tokenizeExample, toSftExample } from "../../trainer/sft/sft.js";
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

const parseChatJsonl = (text: string, file = "dataset"): SftExample[] =>
  parseSftDataset(text, file).map((r) => toSftExample(r, file));

test("SFT examples: developer turns become system turns", () => {
  const [ex] = parseChatJsonl(
    JSON.stringify({
      messages: [
        { role: "developer", content: "Greet." },
        { role: "user", content: "x" },
        { role: "assistant", content: [{ type: "text", text: "Hi" }] },
      ],
    }),
  );
  assert.deepEqual(
    ex!.messages.map((m) => [m.role, m.content]),
    [
      ["system", "Greet."],
      ["user", "x"],
      ["assistant", "Hi"],
    ],
  );
});

test("SFT on a tool-call conversation: the call and the final answer carry loss, the tool result does not", () => {
  const m = createRandomModel({ arch: "llama", layers: 1, hidden: 16, heads: 2, kvHeads: 1, vocab: "byte" });
  const tok = m.tokenizer!;
  const row = JSON.stringify({
    messages: [
      { role: "user", content: "Weather in Oslo?" },
      {
        role: "assistant",
        content: null,
        tool_calls: [{ id: "1", type: "function", function: { name: "get_weather", arguments: '{"city":"Oslo"}' } }],
      },
      { role: "tool", tool_call_id: "1", content: "4C, rain" },
      { role: "assistant", content: "4C and rain." },
    ],
    tools: [{ type: "function", function: { name: "get_weather", parameters: { type: "object" } } }],
  });
  const [ex] = parseChatJsonl(`\n${row}`, "t.jsonl");
  assert.equal(ex!.tools![0]!.function.name, "get_weather");
  const { ids, mask } = tokenizeExample(tok, ex!, 4000);
  const all = tok.decode(ids, false);
  // The ChatML template does not read `tools`: the definitions are in the system turn.
  assert.match(all, /^<\|im_start\|>system\n# Tools[\s\S]*"name":"get_weather"[\s\S]*<\/tools>/);
  assert.match(all, /<\|im_start\|>tool\n<tool_response>\n4C, rain\n<\/tool_response><\|im_end\|>/);
  const trained = ids.filter((_, i) => mask[i]);
  assert.equal(
    tok.decode(trained, false),
    '<tool_call>\n{"name":"get_weather","arguments":{"city":"Oslo"}}\n</tool_call><|im_end|>\n4C and rain.<|im_end|>\n',
  );
  // A malformed tool call is refused with its line.
  const bad = row.replace('"arguments":"{\\"city\\":\\"Oslo\\"}"', '"arguments":{"city":"Oslo"}');
  assert.notEqual(bad, row);
  assert.throws(
    () => parseChatJsonl(`\n${bad}`, "t.jsonl"),
    /t\.jsonl:2: messages\[1\]\.tool_calls\[0\]\.function\.arguments: must be a string/,
  );
  disposeModel(m);
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
    nEpochs: 6,
    batchSize: 5,
    learningRate: 30e-4,
    seed: 1,
    // Not counting the tied head's cached transpose: made by a forward pass, freed when Adam replaces the embedding.
    onStep: () => counts.push(tf.memory().numTensors - (m.headCache?.size ?? 0)),
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
