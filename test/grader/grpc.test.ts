import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { protoPath as healthProtoPath } from "grpc-health-check";
import { type GraderService, startGraderService } from "../../grader-sidecar/src/server.js";
import type { GradeBatchResponse__Output } from "../../proto/gen/rft/grader/v1/GradeBatchResponse.js";
import type { GraderServiceClient } from "../../proto/gen/rft/grader/v1/GraderService.js";
import { loadGraderProto } from "../../proto/grpc.js";
import { type FakeChatServer, startFakeChatServer } from "../helpers/fake-chat-server.js";

let svc: GraderService;
let fake: FakeChatServer;
let client: GraderServiceClient;
const CONCURRENCY = 8;

before(async () => {
  fake = await startFakeChatServer();
  svc = await startGraderService({
    concurrency: CONCURRENCY,
    engine: { model: { baseUrl: fake.baseUrl, timeoutMs: 5000, maxRetries: 0 }, python: { size: 1 } },
  });
  const proto = loadGraderProto();
  client = new proto.rft.grader.v1.GraderService(`127.0.0.1:${svc.grpcPort}`, grpc.credentials.createInsecure());
});
after(async () => {
  client.close();
  await svc.close();
  await fake.close();
});

const exact = JSON.stringify({
  type: "string_check",
  name: "exact",
  input: "{{ sample.output_text }}",
  reference: "{{ item.answer }}",
  operation: "eq",
});

test("Grade returns the reward and the full RunGraderResponse", async () => {
  const res = await new Promise<any>((resolve, reject) =>
    client.Grade({ grader_json: exact, item_json: '{"answer":"4"}', sample: { output_text: "4" } }, (e, r) =>
      e ? reject(e) : resolve(r),
    ),
  );
  assert.equal(res.reward, 1);
  assert.equal(JSON.parse(res.response_json).metadata.name, "exact");
});

test("Grade with an invalid grader fails with INVALID_ARGUMENT naming the field", async () => {
  const bad = JSON.stringify({ type: "string_check", name: "x", input: "a", reference: "b", operation: "equals" });
  await assert.rejects(
    new Promise((resolve, reject) =>
      client.Grade({ grader_json: bad, sample: { output_text: "a" } }, (e, r) => (e ? reject(e) : resolve(r))),
    ),
    (e: any) => e.code === grpc.status.INVALID_ARGUMENT && /grader\.operation: must be one of/.test(e.details),
  );
});

test("Validate reports errors in-band", async () => {
  const call = (grader_json: string) =>
    new Promise<any>((resolve, reject) => client.Validate({ grader_json }, (e, r) => (e ? reject(e) : resolve(r))));
  assert.equal((await call(exact)).valid, true);
  const bad = await call(
    JSON.stringify({ type: "multi", graders: { a: JSON.parse(exact) }, calculate_output: "a + (" }),
  );
  assert.equal(bad.valid, false);
  assert.equal(bad.param, "grader.calculate_output");
  assert.match(bad.error, /position/);
});

function gradeBatch(messages: any[]): Promise<GradeBatchResponse__Output[]> {
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

test("GradeBatch grades every sample once, reusing the grader across messages", async () => {
  const messages = [];
  let id = 0;
  for (let m = 0; m < 50; m++) {
    const items = [];
    for (let k = 0; k < 100; k++, id++) {
      items.push({
        id,
        item_json: JSON.stringify({ answer: String(id % 7) }),
        sample: { output_text: String(id % 3) },
      });
    }
    messages.push({ grader_json: m === 0 ? exact : "", items });
  }
  const responses = await gradeBatch(messages);
  const results = responses.flatMap((r) => r.results);
  assert.equal(results.length, 5000);
  const byId = new Map(results.map((r) => [Number(r.id), r]));
  assert.equal(byId.size, 5000);
  for (let i = 0; i < 5000; i++) assert.equal(byId.get(i)!.reward, String(i % 7) === String(i % 3) ? 1 : 0, `id ${i}`);
});

test("GradeBatch never grades more than `concurrency` samples at once", async () => {
  const slow = JSON.stringify({
    type: "score_model",
    name: "slow",
    model: "m",
    input: [{ role: "user", content: "SLOW SCORE=0.5" }],
  });
  const items = Array.from({ length: 40 }, (_, id) => ({ id, sample: { output_text: "x" } }));
  const results = (
    await gradeBatch([{ grader_json: slow, items: items.slice(0, 20) }, { items: items.slice(20) }])
  ).flatMap((r) => r.results);
  assert.equal(results.length, 40);
  assert.ok(results.every((r) => r.reward === 0.5));
  assert.ok(fake.maxConcurrent <= CONCURRENCY, `max concurrent judge calls ${fake.maxConcurrent} > ${CONCURRENCY}`);
  assert.ok(fake.maxConcurrent > 1, "grading is concurrent");
});

test("GradeBatch reports error flags per sample and rejects a stream without a grader", async () => {
  const g = JSON.stringify({
    type: "string_check",
    name: "x",
    input: "{{ item.missing }}",
    reference: "a",
    operation: "eq",
  });
  const [r] = (await gradeBatch([{ grader_json: g, items: [{ id: 1, sample: { output_text: "a" } }] }])).flatMap(
    (x) => x.results,
  );
  assert.deepEqual(r!.error_flags, ["invalid_variable_error"]);
  await assert.rejects(
    gradeBatch([{ items: [{ id: 1, sample: { output_text: "a" } }] }]),
    (e: any) => e.code === grpc.status.INVALID_ARGUMENT && /first GradeBatch message/.test(e.details),
  );
});

test("standard gRPC health reports SERVING", async () => {
  const def = protoLoader.loadSync(healthProtoPath, { keepCase: true, enums: String });
  const health = grpc.loadPackageDefinition(def) as any;
  const hc = new health.grpc.health.v1.Health(`127.0.0.1:${svc.grpcPort}`, grpc.credentials.createInsecure());
  const res = await new Promise<any>((resolve, reject) =>
    hc.Check({ service: "rft.grader.v1.GraderService" }, (e: unknown, r: unknown) => (e ? reject(e) : resolve(r))),
  );
  assert.equal(res.status, "SERVING");
  hc.close();
});
