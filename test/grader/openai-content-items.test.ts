/**
 * score_model / label_model content items in the shapes of OpenAI's grader reference and guide: an input image
 * with `"file_id": null` beside its templated `image_url`, templates inside audio data, bare strings in a
 * content array (the SDKs' `GraderInputs` allow `str`), and errors that name the field of the item's own type.
 * Judged by the named fake (test/helpers/fake-chat-server.ts), which records what the judge was sent.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import OpenAI from "openai";
import { GraderEngine, GraderValidationError } from "../../grader-sidecar/src/engine.js";
import { startGraderService } from "../../grader-sidecar/src/server.js";
import { type FakeChatServer, startFakeChatServer } from "../helpers/fake-chat-server.js";

let fake: FakeChatServer;
let engine: GraderEngine;
before(async () => {
  fake = await startFakeChatServer();
  engine = new GraderEngine({ model: { baseUrl: fake.baseUrl, timeoutMs: 5000, maxRetries: 0 } });
});
after(async () => {
  await engine.close();
  await fake.close();
});

const grader = (content: unknown) => ({
  type: "score_model",
  name: "vision",
  model: "gpt-4o-2024-08-06",
  input: [{ role: "user", type: "message", content }],
});

test('input_image with "file_id": null and a templated image_url: the URL is rendered for the judge', async () => {
  const res = await engine.run(
    grader([
      { type: "input_text", text: "Does the caption match the image? {{ sample.output_text }} SCORE=0.9" },
      { type: "input_image", image_url: "{{ item.image_url }}", file_id: null, detail: "auto" },
    ]),
    { image_url: "https://example.com/cat.png" },
    { output_text: "a cat" },
  );
  assert.equal(res.reward, 0.9, JSON.stringify(res.metadata.errors));
  const sent = fake.requests.at(-1)!.body.messages[0].content;
  assert.deepEqual(sent[1], { type: "image_url", image_url: { url: "https://example.com/cat.png", detail: "auto" } });
});

test("input_audio: a template inside input_audio.data is rendered", async () => {
  const res = await engine.run(
    grader([
      { type: "input_text", text: "Is the speech polite? SCORE=1" },
      { type: "input_audio", input_audio: { data: "{{ item.audio_b64 }}", format: "wav" } },
    ]),
    { audio_b64: "UklGRiQAAABXQVZF" },
    { output_text: "" },
  );
  assert.equal(res.reward, 1);
  const sent = fake.requests.at(-1)!.body.messages[0].content;
  assert.deepEqual(sent[1], { type: "input_audio", input_audio: { data: "UklGRiQAAABXQVZF", format: "wav" } });
  const missing = await engine.run(
    grader(["SCORE=1", { type: "input_audio", input_audio: { data: "{{ item.nope }}", format: "wav" } }]),
    {},
    { output_text: "" },
  );
  assert.equal(missing.metadata.errors.invalid_variable_error, true);
});

test("bare strings in a content array are text (templates rendered)", async () => {
  const res = await engine.run(
    grader(["Answer: {{ sample.output_text }}", { type: "input_text", text: "SCORE=0.4" }]),
    {},
    { output_text: "42" },
  );
  assert.equal(res.reward, 0.4);
  assert.deepEqual(fake.requests.at(-1)!.body.messages[0].content[0], { type: "text", text: "Answer: 42" });
});

test("content item errors name the field of the item's own type", async () => {
  const err = async (content: unknown) => {
    try {
      await engine.compile(grader(content));
    } catch (e) {
      assert.ok(e instanceof GraderValidationError, String(e));
      return e.message;
    }
    assert.fail("accepted");
  };
  // Only a file_id: this service has no Files API; the message says what to give instead (not "text").
  assert.match(
    await err([{ type: "input_image", file_id: "file-abc", image_url: null }]),
    /input\[0\]\.content\[0\]\.image_url: file_id names a file of OpenAI's Files API.*give image_url/,
  );
  assert.match(
    await err([{ type: "input_image", image_url: "https://x/y.png", detial: "low" }]),
    /input\[0\]\.content\[0\]: unknown field "detial"/,
  );
  assert.match(
    await err([{ type: "input_audio", input_audio: { data: "x" } }]),
    /input\[0\]\.content\[0\]\.input_audio: missing required field "format"/,
  );
  assert.match(
    await err([{ type: "input_txt", text: "x" }]),
    /input\[0\]\.content\[0\]: type must be one of input_text, output_text, input_image, input_audio \(got "input_txt"\)/,
  );
});

test("the same cases through the HTTP API with the official openai client", async () => {
  const svc = await startGraderService({
    engine: { model: { baseUrl: fake.baseUrl, timeoutMs: 5000, maxRetries: 0 }, python: { size: 0 } },
  });
  try {
    const client = new OpenAI({ apiKey: "unused", baseURL: `http://127.0.0.1:${svc.httpPort}/v1`, maxRetries: 0 });
    const res = await client.fineTuning.alpha.graders.run({
      grader: grader([
        "Caption: {{ sample.output_text }} SCORE=0.7",
        { type: "input_image", image_url: "{{ item.image_url }}", file_id: null, detail: "low" },
        { type: "input_audio", input_audio: { data: "{{ item.audio_b64 }}", format: "mp3" } },
      ]) as any,
      model_sample: "a cat",
      item: { image_url: "data:image/png;base64,iVBORw0KGgo=", audio_b64: "SUQzBAAAAAAA" },
    });
    assert.equal(res.reward, 0.7);
    const sent = fake.requests.at(-1)!.body.messages[0].content;
    assert.deepEqual(sent, [
      { type: "text", text: "Caption: a cat SCORE=0.7" },
      { type: "image_url", image_url: { url: "data:image/png;base64,iVBORw0KGgo=", detail: "low" } },
      { type: "input_audio", input_audio: { data: "SUQzBAAAAAAA", format: "mp3" } },
    ]);
  } finally {
    await svc.close();
  }
});
