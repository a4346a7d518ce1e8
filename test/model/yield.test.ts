/**
 * generate() yields to the event loop between decode steps: timers fire during a long generation, and
 * `rft serve` reads and queues a request that arrives while another one is being generated.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { createRandomModel, disposeModel, type Model } from "../../trainer/model/model.js";
import { generate } from "../../trainer/sampling/generate.js";
import { type RunningServer, startServer } from "../../trainer/serve/server.js";
import { setup } from "./helpers.js";

let model: Model;
let srv: RunningServer;

before(async () => {
  await setup();
  model = createRandomModel({
    arch: "llama",
    layers: 1,
    hidden: 32,
    heads: 2,
    kvHeads: 1,
    vocab: "byte",
    maxContext: 1024,
    seed: 3,
  });
  srv = await startServer(model, { modelId: "tiny", port: 0, maxTokens: 600 });
});

after(async () => {
  await srv.close();
  disposeModel(model);
});

test("a timer fires while generate() runs", async () => {
  let done = false;
  let firedWhileRunning = 0;
  const timer = setInterval(() => {
    if (!done) firedWhileRunning++;
  }, 0);
  const out = await generate(model, [
    { promptIds: model.tokenizer!.encode("Hello"), maxTokens: 200, seed: 1, sampling: { temperature: 1 } },
  ]);
  done = true;
  clearInterval(timer);
  assert.ok(out[0]!.tokens.length > 20, `a long generation (${out[0]!.tokens.length} tokens)`);
  assert.ok(firedWhileRunning > 0, "the event loop ran between decode steps");
});

test("rft serve reads and queues a request that arrives mid-generation", async () => {
  const post = (body: Record<string, unknown>) =>
    fetch(`${srv.url}/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "tiny", messages: [{ role: "user", content: "Hi" }], ...body }),
    });
  let longDone = false;
  const long = await post({ max_completion_tokens: 500, temperature: 1, seed: 4, stream: true });
  assert.equal(long.status, 200);
  const reader = long.body!.getReader();
  await reader.read(); // the first chunk: generation is under way
  const short = post({ max_completion_tokens: 2, temperature: 1, seed: 5 }).then(async (r) => {
    assert.equal(r.status, 200);
    return { body: (await r.json()) as { choices: { message: { content: string } }[] }, longDone };
  });
  // The short request is read and queued while the long one is still generating.
  let queuedWhileRunning = false;
  while (!longDone) {
    if (srv.batcher.pending > 0 && srv.batcher.generating) queuedWhileRunning = true;
    const { done } = await reader.read();
    if (done) longDone = true;
  }
  assert.ok(queuedWhileRunning, "the second request was queued during the first one's generation");
  const s = await short;
  assert.equal(s.body.choices.length, 1);
});
