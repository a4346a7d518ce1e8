import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { bestCheckpoint, type CheckpointInfo, retained } from "../../trainer/checkpoint/retention.js";
import { CheckpointError, CheckpointStore } from "../../trainer/checkpoint/store.js";

const ck = (step: number, valid: number | null): CheckpointInfo => ({
  name: `step-${step}`,
  step,
  validRewardMean: valid,
  trainRewardMean: null,
  createdAt: 0,
  reason: "eval",
});

test("retention: top 3 by valid_reward_mean plus the latest", () => {
  const all = [ck(10, 0.2), ck(20, 0.5), ck(30, 0.4), ck(40, 0.1), ck(50, 0.45), ck(60, 0.05)];
  assert.deepEqual([...retained(all)].sort(), ["step-20", "step-30", "step-50", "step-60"]);
  assert.deepEqual([...retained([ck(10, 0.3), ck(20, 0.3), ck(30, 0.3), ck(40, 0.3)])].sort(), [
    "step-10",
    "step-20",
    "step-30",
    "step-40",
  ]);
  assert.deepEqual([...retained([ck(10, 0.3), ck(20, 0.3), ck(30, 0.3), ck(40, 0.3), ck(50, 0.1)])].sort(), [
    "step-10",
    "step-20",
    "step-30",
    "step-50",
  ]);
  assert.equal(bestCheckpoint(all)!.step, 20);
  assert.equal(bestCheckpoint([ck(5, null)]), null);
});

const save = (store: CheckpointStore, step: number, valid: number) =>
  store.save({
    info: { step, validRewardMean: valid, trainRewardMean: null, createdAt: 0, reason: "eval" },
    async write(dir) {
      writeFileSync(join(dir, "state.json"), JSON.stringify({ step }));
    },
  });

test("store: saves, indexes and prunes to the retained set", async () => {
  const root = mkdtempSync(join(tmpdir(), "rft-ckpt-"));
  const store = new CheckpointStore(root);
  for (const [step, v] of [
    [1, 0.1],
    [2, 0.9],
    [3, 0.2],
    [4, 0.8],
    [5, 0.3],
    [6, 0.0],
  ] as const)
    await save(store, step, v);
  assert.deepEqual(
    store.list().map((c) => c.step),
    [2, 4, 5, 6],
  );
  assert.deepEqual(
    readdirSync(root)
      .filter((n) => n.startsWith("step-"))
      .sort(),
    ["step-000002", "step-000004", "step-000005", "step-000006"],
  );
  assert.equal(store.latest()!.step, 6);
});

test("store: a corrupted checkpoint is refused and the previous one is used", async () => {
  const root = mkdtempSync(join(tmpdir(), "rft-ckpt-"));
  const store = new CheckpointStore(root);
  await save(store, 1, 0.5);
  await save(store, 2, 0.6);
  writeFileSync(join(root, "step-000002", "state.json"), '{"step": 999}');
  assert.throws(
    () => store.verify("step-000002"),
    (e: unknown) => e instanceof CheckpointError && /state\.json does not match its digest/.test(e.message),
  );
  assert.equal(store.latest()!.step, 1);
});

test("store: killing the writer mid-checkpoint leaves the last good checkpoint loadable", async () => {
  const root = mkdtempSync(join(tmpdir(), "rft-ckpt-"));
  const writer = (step: number, slow = "") => [
    "--import",
    "tsx",
    "test/helpers/checkpoint-writer.ts",
    root,
    String(step),
    slow,
  ];
  const first = spawnSync(process.execPath, writer(1), { encoding: "utf8" });
  assert.match(first.stdout, /done/, first.stderr);
  const child = spawn(process.execPath, writer(2, "slow"), { stdio: ["ignore", "pipe", "inherit"] });
  await new Promise<void>((resolve) =>
    child.stdout!.on("data", (d: Buffer) => d.toString().includes("half") && resolve()),
  );
  child.kill("SIGKILL");
  await new Promise((r) => child.on("exit", r));
  assert.ok(
    readdirSync(root).some((n) => n.includes(".partial-")),
    "the kill left a partial directory behind",
  );
  const store = new CheckpointStore(root); // a restart
  assert.ok(!readdirSync(root).some((n) => n.includes(".partial-")), "partial directories are cleaned at start");
  assert.equal(store.latest()!.step, 1);
  assert.equal(JSON.parse(readFileSync(join(root, "step-000001", "state.json"), "utf8")).step, 1);
  assert.ok(!existsSync(join(root, "step-000002")));
});
