/** The RFT loop end to end on a tiny model: exact resume, pause/cancel, grader failures, gRPC grading. */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { startGraderService } from "../../grader-sidecar/src/server.js";
import { loadManifest } from "../../trainer/job/manifest.js";
import { runJob } from "../../trainer/job/run-job.js";
import { SafetensorsReader } from "../../trainer/model/safetensors.js";
import { rftManifest, tempJobDir, tinyModel } from "../helpers/rft-job.js";
import { TEST_BACKEND } from "../helpers/backend.js";

const small = {
  nEpochs: 1,
  batchSize: 4,
  samplesPerPrompt: 4,
  maxCompletionTokens: 8,
  evalInterval: 3,
  evalSamples: 1,
};

async function weights(dir: string): Promise<Map<string, Float32Array>> {
  const r = await SafetensorsReader.open(join(dir, "model.safetensors"));
  const out = new Map<string, Float32Array>();
  for (const n of r.names()) out.set(n, (await r.readF32(n)).data);
  await r.close();
  return out;
}

/** A random model scores 0 on the example's grader; this one gives its random outputs varied rewards. */
const VARIED = "def grade(sample, item):\n    return min(1.0, len(set(sample['output_text'])) / 8)\n";

async function tinyJob(prefix: string, spec: Record<string, unknown> = {}, hyper: Record<string, unknown> = {}) {
  const dir = tempJobDir(prefix);
  await tinyModel(join(dir, "model"));
  const file = rftManifest(dir, { model: "model", ...spec }, { ...small, ...hyper });
  const m = loadManifest(file);
  (m.job.spec.method.reinforcement!.grader as any).graders.correct.source = VARIED;
  return { dir, manifest: m };
}

const trainRewards = (dir: string) =>
  readFileSync(join(dir, "events.jsonl"), "utf8")
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l))
    .filter((e) => e.type === "metrics")
    .map((e) => [e.data.step, e.data.scores.train_reward_mean, e.data.scores.valid_reward_mean]);

test("a paused and resumed run equals an uninterrupted one, bit for bit", async () => {
  const { dir, manifest } = await tinyJob("resume");
  // Limit the job to 6 steps by using the first 24 rows only.
  const rows = readFileSync(manifest.paths.trainingFile, "utf8").split("\n").slice(0, 24).join("\n");
  const { writeFileSync } = await import("node:fs");
  writeFileSync(manifest.paths.trainingFile, `${rows}\n`);

  const whole = await runJob({ manifest, outDir: join(dir, "whole"), backend: TEST_BACKEND });
  assert.equal(whole.status, "succeeded");
  assert.equal(whole.method === "reinforcement" && whole.totalSteps, 6);

  const first = await runJob({ manifest, outDir: join(dir, "split"), backend: TEST_BACKEND, stopAfterStep: 2 });
  assert.equal(first.status, "paused");
  assert.equal(first.method === "reinforcement" && first.step, 2);
  const second = await runJob({ manifest, outDir: join(dir, "split"), backend: TEST_BACKEND });
  assert.equal(second.status, "succeeded");

  assert.deepEqual(trainRewards(join(dir, "split")), trainRewards(join(dir, "whole")), "same rewards every step");
  const a = await weights(join(dir, "whole", "model"));
  const b = await weights(join(dir, "split", "model"));
  assert.deepEqual([...a.keys()], [...b.keys()]);
  for (const [name, w] of a)
    assert.ok(Buffer.from(w.buffer).equals(Buffer.from(b.get(name)!.buffer)), `${name} differs`);
  // And training changed the model (the comparison is not between two untouched copies).
  const base = await weights(join(dir, "model"));
  assert.ok(
    [...a].some(([n, w]) => !Buffer.from(w.buffer).equals(Buffer.from(base.get(n)!.buffer))),
    "weights changed",
  );
});

test("cancel stops without a final model; pause leaves a checkpoint to resume from", async () => {
  const { dir, manifest } = await tinyJob("cancel");
  const cancelled = await runJob({
    manifest,
    outDir: join(dir, "c"),
    backend: TEST_BACKEND,
    control: { pause: false, cancel: true },
  });
  assert.equal(cancelled.status, "cancelled");
  assert.equal(cancelled.method === "reinforcement" && cancelled.modelDir, undefined);
  const paused = await runJob({
    manifest,
    outDir: join(dir, "p"),
    backend: TEST_BACKEND,
    control: { pause: true, cancel: false },
  });
  assert.equal(paused.status, "paused");
  assert.equal(paused.method === "reinforcement" && paused.checkpoints.at(-1)?.step, 1);
});

test("a grader that keeps failing fails the job with its traceback", async () => {
  const { dir, manifest } = await tinyJob("grader-fails");
  const grader = manifest.job.spec.method.reinforcement!.grader as any;
  grader.graders.correct.source = "def grade(sample, item):\n    raise ValueError('bad grader ' + item['answer'])\n";
  const r = await runJob({ manifest, outDir: join(dir, "out"), backend: TEST_BACKEND });
  assert.equal(r.status, "failed");
  assert.equal(r.method === "reinforcement" && r.step, 3);
  assert.match(
    r.method === "reinforcement" ? (r.error ?? "") : "",
    /grader errors on 100% of samples for 3 steps[\s\S]*ValueError: bad grader/,
  );
});

test("grading through the gRPC sidecar gives the same rewards as in process", async () => {
  const { dir, manifest } = await tinyJob("grpc");
  const svc = await startGraderService({ engine: { python: { size: 1 } } });
  try {
    const remote = await runJob({
      manifest,
      outDir: join(dir, "remote"),
      backend: TEST_BACKEND,
      graderAddr: `127.0.0.1:${svc.grpcPort}`,
      stopAfterStep: 2,
    });
    await runJob({ manifest, outDir: join(dir, "local"), backend: TEST_BACKEND, stopAfterStep: 2 });
    assert.equal(remote.status, "paused");
    assert.deepEqual(trainRewards(join(dir, "remote")), trainRewards(join(dir, "local")));
    const requests = await svc.metrics.requests.get();
    assert.ok(
      requests.values.some((v) => v.value >= 32),
      "the sidecar graded the samples",
    );
  } finally {
    await svc.close();
  }
});
