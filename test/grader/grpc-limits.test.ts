// Size limits of the grader service (issue 13): one GradeBatch message carried 1.4M items, all decoded and
// queued at once. Real gRPC (grpc-js client and server) and real HTTP with the official openai client.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import OpenAI from "openai";
import { GRPC_LIMITS } from "../../grader-sidecar/src/grpc.js";
import { type GraderService, startGraderService } from "../../grader-sidecar/src/server.js";
import type { GradeBatchRequest } from "../../proto/gen/rft/grader/v1/GradeBatchRequest.js";
import type { GradeBatchResponse__Output } from "../../proto/gen/rft/grader/v1/GradeBatchResponse.js";
import type { GraderServiceClient } from "../../proto/gen/rft/grader/v1/GraderService.js";
import { loadGraderProto } from "../../proto/grpc.js";

let svc: GraderService;
let client: GraderServiceClient;

before(async () => {
  svc = await startGraderService({ maxBatchItems: 100, maxBodyBytes: 64 * 1024 });
  const proto = loadGraderProto();
  client = new proto.rft.grader.v1.GraderService(`127.0.0.1:${svc.grpcPort}`, grpc.credentials.createInsecure(), {
    "grpc.max_send_message_length": 64 * 1024 * 1024,
  });
});
after(async () => {
  client.close();
  await svc.close();
});

const exact = JSON.stringify({
  type: "string_check",
  name: "exact",
  input: "{{ sample.output_text }}",
  reference: "{{ item.answer }}",
  operation: "eq",
});

function gradeBatch(messages: GradeBatchRequest[]): Promise<GradeBatchResponse__Output[]> {
  return new Promise((resolve, reject) => {
    const out: GradeBatchResponse__Output[] = [];
    const call = client.GradeBatch();
    call.on("data", (m: GradeBatchResponse__Output) => out.push(m));
    call.on("error", reject);
    call.on("end", () => resolve(out));
    for (const m of messages) call.write(m);
    call.end();
  });
}

const items = (n: number, from = 0) =>
  Array.from({ length: n }, (_, k) => ({ id: from + k, item_json: '{"answer":"a"}', sample: { output_text: "a" } }));

test("GradeBatch: a message with more items than the limit is RESOURCE_EXHAUSTED, naming the limit", async () => {
  await assert.rejects(gradeBatch([{ grader_json: exact, items: items(101) }]), (e: grpc.ServiceError) => {
    assert.equal(e.code, grpc.status.RESOURCE_EXHAUSTED);
    assert.match(e.details, /a GradeBatch message has 101 items; the limit is 100 per message/);
    return true;
  });
  // The same samples in messages within the limit are all graded.
  const res = (await gradeBatch([{ grader_json: exact, items: items(100) }, { items: items(1, 100) }])).flatMap(
    (m) => m.results,
  );
  assert.equal(res.length, 101);
  assert.ok(res.every((r) => r.reward === 1));
});

test("GradeBatch: 200,000 items in one message are refused, and the default limit is 4096", async () => {
  assert.equal(GRPC_LIMITS.maxBatchItems, 4096);
  const many = Array.from({ length: 200_000 }, (_, id) => ({ id }));
  await assert.rejects(gradeBatch([{ grader_json: exact, items: many }]), (e: grpc.ServiceError) => {
    assert.equal(e.code, grpc.status.RESOURCE_EXHAUSTED);
    assert.match(e.details, /200000 items/);
    return true;
  });
});

test("gRPC: a message past the size limit is RESOURCE_EXHAUSTED", async () => {
  const small = await startGraderService({ maxMessageBytes: 1024 * 1024 });
  const proto = loadGraderProto();
  const c = new proto.rft.grader.v1.GraderService(`127.0.0.1:${small.grpcPort}`, grpc.credentials.createInsecure(), {
    "grpc.max_send_message_length": 64 * 1024 * 1024,
  });
  try {
    await assert.rejects(
      new Promise((resolve, reject) =>
        c.Grade(
          { grader_json: exact, item_json: '{"answer":"a"}', sample: { output_text: "x".repeat(2 * 1024 * 1024) } },
          (e, r) => (e ? reject(e) : resolve(r)),
        ),
      ),
      (e: grpc.ServiceError) => {
        assert.equal(e.code, grpc.status.RESOURCE_EXHAUSTED);
        assert.match(e.details, /larger than max/i);
        return true;
      },
    );
  } finally {
    c.close();
    await small.close();
  }
});

test("HTTP: a body past the limit is 413 with OpenAI's error envelope (official client)", async () => {
  const openai = new OpenAI({ apiKey: "x", baseURL: `http://127.0.0.1:${svc.httpPort}/v1`, maxRetries: 0 });
  await assert.rejects(
    openai.fineTuning.alpha.graders.run({
      grader: JSON.parse(exact),
      model_sample: "x".repeat(100 * 1024),
      item: { answer: "a" },
    }),
    (e: unknown) => {
      assert.ok(e instanceof OpenAI.APIError);
      assert.equal(e.status, 413);
      assert.equal(e.code, "request_too_large");
      assert.equal(e.type, "invalid_request_error");
      assert.match(e.message, /request body is larger than 65536 bytes/);
      return true;
    },
  );
  // Within the limit it grades.
  const ok = await openai.fineTuning.alpha.graders.run({
    grader: JSON.parse(exact),
    model_sample: "a",
    item: { answer: "a" },
  });
  assert.equal(ok.reward, 1);
});

test("the compiled-grader cache is bounded in graders and in bytes", async () => {
  const { GraderEngine } = await import("../../grader-sidecar/src/engine.js");
  const { CompileCache } = await import("../../grader-sidecar/src/grpc.js");
  const engine = new GraderEngine();
  const cache = new CompileCache(engine, 256, 10_000);
  const grader = (i: number, pad: number) =>
    JSON.stringify({ ...JSON.parse(exact), name: `g${i}`, reference: `${"r".repeat(pad)}{{ item.answer }}` });
  for (let i = 0; i < 50; i++) await cache.get(grader(i, 3000));
  assert.ok(cache.keyBytes <= 10_000, `${cache.keyBytes} bytes kept`);
  assert.equal(cache.size, 3);
  // A grader larger than the whole budget is compiled but not kept.
  const huge = grader(99, 20_000);
  assert.equal((await cache.get(huge)).type, "string_check");
  assert.ok(cache.keyBytes <= 10_000);
  // Invalid graders are not kept either.
  await assert.rejects(cache.get(JSON.stringify({ type: "string_check" })));
  assert.equal(cache.size, 3);
  await engine.close();
});
