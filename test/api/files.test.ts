/** The Files API through the official openai client: upload, per-line validation, list, retrieve, content, delete, durability. */
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import OpenAI, { toFile } from "openai";
import { KEY, startApi, tempDir } from "./helpers.js";

const row = (q: string) => JSON.stringify({ messages: [{ role: "user", content: q }], answer: q });
const jsonl = (...lines: string[]) => Buffer.from(`${lines.join("\n")}\n`);

test("upload, list, retrieve, content and delete, as the openai client does them", async () => {
  const api = await startApi();
  try {
    const c = api.client;
    const body = jsonl(row("a"), row("b"));
    const f = await c.files.create({ file: await toFile(body, "train.jsonl"), purpose: "fine-tune" });
    assert.match(f.id, /^file-[A-Za-z0-9]{24}$/);
    assert.equal(f.object, "file");
    assert.equal(f.bytes, body.length);
    assert.equal(f.filename, "train.jsonl");
    assert.equal(f.purpose, "fine-tune");
    assert.equal(f.status, "processed");
    assert.equal(typeof f.created_at, "number");

    const g = await c.files.create({ file: await toFile(jsonl('{"item":{"q":1}}'), "e.jsonl"), purpose: "evals" });
    assert.deepEqual(await c.files.retrieve(f.id), f);
    assert.equal(await (await c.files.content(f.id)).text(), body.toString());

    const all = await c.files.list();
    assert.deepEqual(
      all.data.map((x) => x.id),
      [g.id, f.id],
    ); // newest first
    assert.deepEqual(
      (await c.files.list({ purpose: "evals" })).data.map((x) => x.id),
      [g.id],
    );
    const page1 = await c.files.list({ limit: 1, order: "asc" });
    assert.deepEqual(
      page1.data.map((x) => x.id),
      [f.id],
    );
    assert.equal(page1.has_more, true);
    const page2 = await page1.getNextPage();
    assert.deepEqual(
      page2.data.map((x) => x.id),
      [g.id],
    );
    assert.equal(page2.has_more, false);

    assert.deepEqual(await c.files.delete(g.id), { id: g.id, object: "file", deleted: true });
    await assert.rejects(c.files.retrieve(g.id), (e: unknown) => {
      assert.ok(e instanceof OpenAI.NotFoundError);
      assert.equal(e.status, 404);
      assert.equal(e.param, null);
      assert.equal(e.code, "file_not_found");
      assert.match(e.message, new RegExp(g.id));
      return true;
    });
  } finally {
    await api.close();
  }

  // Durable: a new server on the same directory lists the same file.
  const again = await startApi({ dataDir: api.dataDir });
  try {
    const list = await again.client.files.list();
    assert.equal(list.data.length, 1);
    assert.equal(await (await again.client.files.content(list.data[0]!.id)).text(), `${row("a")}\n${row("b")}\n`);
  } finally {
    await again.close();
  }
});

test("a malformed fine-tune file is refused with each bad line named, and nothing is stored", async () => {
  const api = await startApi();
  try {
    const bad = jsonl(row("a"), "{not json", '{"messages":[]}', row("d"), '{"messages":[{"role":"user"}]}');
    await assert.rejects(
      api.client.files.create({ file: await toFile(bad, "train.jsonl"), purpose: "fine-tune" }),
      (e: unknown) => {
        assert.ok(e instanceof OpenAI.BadRequestError);
        assert.equal(e.param, "file");
        assert.equal(e.code, "invalid_file_format");
        assert.equal((e.error as { type: string }).type, "invalid_request_error");
        assert.match(e.message, /'train\.jsonl': 3 problem/);
        assert.match(e.message, /line 2: not valid JSON/);
        assert.match(e.message, /line 3: messages: must have at least one message/);
        assert.match(e.message, /line 5: messages\[0\]\.content: is required/);
        return true;
      },
    );
    const notUtf8 = Buffer.concat([
      Buffer.from(`${row("a")}\n{"messages":"`),
      Buffer.from([0xff]),
      Buffer.from('"}\n'),
    ]);
    await assert.rejects(
      api.client.files.create({ file: await toFile(notUtf8, "x.jsonl"), purpose: "fine-tune" }),
      /line 2: not valid UTF-8/,
    );
    await assert.rejects(
      api.client.files.create({ file: await toFile(jsonl("[1]"), "e.jsonl"), purpose: "evals" }),
      /line 1: each line must be a JSON object/,
    );
    await assert.rejects(
      api.client.files.create({ file: await toFile(jsonl(row("a")), "a.jsonl"), purpose: "batch" }),
      (e: unknown) => e instanceof OpenAI.BadRequestError && e.param === "purpose",
    );
    assert.equal((await api.client.files.list()).data.length, 0);
  } finally {
    await api.close();
  }
});

test("every /v1 route needs one of the API keys", async () => {
  const api = await startApi();
  try {
    const anon = new OpenAI({ baseURL: api.url, apiKey: "sk-wrong-key-000000000", maxRetries: 0 });
    await assert.rejects(anon.files.list(), (e: unknown) => {
      assert.ok(e instanceof OpenAI.AuthenticationError);
      assert.equal(e.code, "invalid_api_key");
      return true;
    });
    const r = await fetch(`${api.url}/files`);
    assert.equal(r.status, 401);
    const body = (await r.json()) as { error: Record<string, unknown> };
    assert.deepEqual(Object.keys(body.error).sort(), ["code", "message", "param", "type"]);
    const ok = await fetch(`${api.url}/files`, { headers: { authorization: `Bearer ${KEY}` } });
    assert.equal(ok.status, 200);
    const unknown = await fetch(`${api.url}/nothing`, { headers: { authorization: `Bearer ${KEY}` } });
    assert.equal(unknown.status, 404);
  } finally {
    await api.close();
  }
});

test("bodies past the limits are refused with 413 and OpenAI's body", async () => {
  const api = await startApi({ maxUploadBytes: 4096, maxJsonBytes: 1024 });
  try {
    const big = jsonl(...Array.from({ length: 100 }, (_, i) => row(`question ${i}`)));
    await assert.rejects(
      api.client.files.create({ file: await toFile(big, "big.jsonl"), purpose: "fine-tune" }),
      (e: unknown) => e instanceof OpenAI.APIError && e.status === 413 && e.code === "request_too_large",
    );
    await assert.rejects(
      api.client.fineTuning.jobs.create({ model: "m", training_file: "file-x", suffix: "s".repeat(2000) }),
      (e: unknown) => e instanceof OpenAI.APIError && e.status === 413,
    );
    // The server is still there.
    assert.equal((await api.client.files.list()).data.length, 0);
  } finally {
    await api.close();
  }
});

test("projects: each key sees only its project's files and jobs; other ids are 404", async () => {
  const A = "sk-team-a-0123456789abcdef";
  const B = "sk-team-b-0123456789abcdef";
  const modelDir = tempDir("model");
  writeFileSync(join(modelDir, "config.json"), "{}"); // never loaded: the request fails before
  const api = await startApi({ keys: [`${A} team-a`, `${B} team-b`], models: { m: modelDir } });
  try {
    const a = new OpenAI({ baseURL: api.url, apiKey: A, maxRetries: 0 });
    const b = new OpenAI({ baseURL: api.url, apiKey: B, maxRetries: 0 });
    const fa = await a.files.create({ file: await toFile(jsonl(row("a")), "a.jsonl"), purpose: "fine-tune" });
    const fb = await b.files.create({ file: await toFile(jsonl(row("b")), "b.jsonl"), purpose: "fine-tune" });
    assert.deepEqual(
      (await a.files.list()).data.map((f) => f.id),
      [fa.id],
    );
    assert.deepEqual(
      (await b.files.list()).data.map((f) => f.id),
      [fb.id],
    );
    await assert.rejects(b.files.retrieve(fa.id), OpenAI.NotFoundError);
    await assert.rejects(b.files.content(fa.id), OpenAI.NotFoundError);
    await assert.rejects(b.files.delete(fa.id), OpenAI.NotFoundError);
    // A job may not name another project's file.
    await assert.rejects(
      b.fineTuning.jobs.create({ model: "m", training_file: fa.id }),
      (e: unknown) => e instanceof OpenAI.BadRequestError && e.param === "training_file",
    );
    assert.equal((await a.files.retrieve(fa.id)).id, fa.id);
    // (It fails at validation: an RFT row is no SFT example; that does not matter here.)
    const job = await a.fineTuning.jobs.create({ model: "m", training_file: fa.id });
    assert.deepEqual(
      (await a.fineTuning.jobs.list()).data.map((j) => j.id),
      [job.id],
    );
    assert.deepEqual((await b.fineTuning.jobs.list()).data, []);
    await assert.rejects(b.fineTuning.jobs.retrieve(job.id), OpenAI.NotFoundError);
    await assert.rejects(b.fineTuning.jobs.listEvents(job.id), OpenAI.NotFoundError);
    await assert.rejects(b.fineTuning.jobs.pause(job.id), OpenAI.NotFoundError);
  } finally {
    await api.close();
  }
});
