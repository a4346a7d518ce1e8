/**
 * The operator's work queue on a fake clock (node:test's mock timers drive setTimeout and Date, so backoff,
 * requeue-after and the token bucket are checked at exact instants without waiting): de-duplication, one worker
 * per key at a time, per-item exponential backoff, requeue-after, add-after (the earlier wins), the rate limit.
 */
import assert from "node:assert/strict";
import { afterEach, beforeEach, mock, test } from "node:test";
import { WorkQueue } from "../../operator/workqueue.js";

beforeEach(() => mock.timers.enable({ apis: ["setTimeout", "Date"], now: 0 }));
afterEach(() => mock.timers.reset());

/** Lets every ready promise continuation run (setImmediate is not mocked). */
async function settle(): Promise<void> {
  for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
}

/** A handler that records (key, time) and is released by the test. */
function gatedHandler() {
  const calls: string[] = [];
  const gates: (() => void)[] = [];
  let active = 0;
  let maxActive = 0;
  const handler = async (key: string) => {
    calls.push(`${key}@${Date.now()}`);
    active++;
    maxActive = Math.max(maxActive, active);
    await new Promise<void>((r) => gates.push(r));
    active--;
  };
  return { calls, gates, handler, maxActive: () => maxActive };
}

test("a key queued many times is handled once; a key added while it is handled runs again after, never twice at once", async () => {
  const h = gatedHandler();
  const q = new WorkQueue(h.handler, { workers: 4 });
  q.add("a");
  q.add("a");
  q.add("b");
  assert.equal(q.length, 2);
  q.start();
  await settle();
  assert.deepEqual(h.calls, ["a@0", "b@0"]);
  q.add("a"); // while "a" is being handled: remembered, not run by a second worker
  await settle();
  assert.equal(h.calls.length, 2);
  h.gates.shift()!(); // "a" finishes → runs again
  await settle();
  assert.deepEqual(h.calls, ["a@0", "b@0", "a@0"]);
  assert.equal(h.maxActive(), 2);
  for (const g of h.gates.splice(0)) g();
  await q.idle();
  await q.stop();
});

test("a failing key is retried after baseDelay·2ⁿ (capped), and the count resets after a success", async () => {
  const at: number[] = [];
  let fail = 3;
  const q = new WorkQueue(
    async () => {
      at.push(Date.now());
      if (fail-- > 0) throw new Error("boom");
    },
    { workers: 1, baseDelayMs: 10, maxDelayMs: 25 },
  );
  q.start();
  q.add("k");
  await settle();
  for (const step of [9, 1, 19, 1, 24, 1]) {
    mock.timers.tick(step);
    await settle();
  }
  assert.deepEqual(at, [0, 10, 30, 55], "10, then 20, then 40 capped at 25");
  q.add("k");
  await settle();
  assert.equal(at.length, 5, "after a success the next add runs at once (no backoff left)");
  await q.stop();
});

test("requeue-after runs the key again only once its delay has passed; add-after keeps the earlier of two", async () => {
  const at: string[] = [];
  let first = true;
  const q = new WorkQueue(
    async (key) => {
      at.push(`${key}@${Date.now()}`);
      if (key === "r" && first) {
        first = false;
        return { requeueAfterMs: 1000 };
      }
    },
    { workers: 1 },
  );
  q.start();
  q.add("r");
  await settle();
  mock.timers.tick(999);
  await settle();
  assert.deepEqual(at, ["r@0"]);
  mock.timers.tick(1);
  await settle();
  assert.deepEqual(at, ["r@0", "r@1000"]);

  q.addAfter("d", 500);
  q.addAfter("d", 200); // earlier: replaces
  q.addAfter("d", 800); // later: ignored
  mock.timers.tick(200);
  await settle();
  assert.deepEqual(at.slice(2), ["d@1200"]);
  mock.timers.tick(1000);
  await settle();
  assert.equal(at.length, 3, "only one add-after fired");
  await q.stop();
});

test("the token bucket: a burst starts at once, then one item per 1/qps", async () => {
  const at: string[] = [];
  const q = new WorkQueue(
    async (key) => {
      at.push(`${key}@${Date.now()}`);
    },
    { workers: 1, qps: 2, burst: 2 },
  );
  for (const k of ["a", "b", "c", "d"]) q.add(k);
  q.start();
  await settle();
  assert.deepEqual(at, ["a@0", "b@0"]);
  mock.timers.tick(500);
  await settle();
  assert.deepEqual(at, ["a@0", "b@0", "c@500"]);
  mock.timers.tick(500);
  await settle();
  assert.deepEqual(at, ["a@0", "b@0", "c@500", "d@1000"]);
  await q.stop();
});

test("stop() cancels pending add-afters and ends the workers; adds after stop are ignored", async () => {
  const at: string[] = [];
  const q = new WorkQueue(
    async (key) => {
      at.push(key);
    },
    { workers: 2 },
  );
  q.start();
  q.addAfter("later", 100);
  await q.stop();
  q.add("x");
  mock.timers.tick(1000);
  await settle();
  assert.deepEqual(at, []);
});
