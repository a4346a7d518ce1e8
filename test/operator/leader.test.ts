/**
 * Lease election on a fake clock against a fake Lease API (an in-memory stand-in for coordination.k8s.io/v1
 * Leases with kube-apiserver's optimistic concurrency: a PUT whose resourceVersion is stale gets 409; named as a
 * fake: e2e.test.ts runs election on the real apiserver). One leader at a time; a clean stop hands over at once;
 * a leader that cannot renew within the renew deadline gives up, and a standby takes over only once the lease
 * has expired.
 */
import assert from "node:assert/strict";
import { afterEach, beforeEach, mock, test } from "node:test";
import { pino } from "pino";
import { type KObj, type KubeClient, KubeError } from "../../operator/client.js";
import { LeaderElector } from "../../operator/leader.js";

beforeEach(() => mock.timers.enable({ apis: ["setTimeout", "Date"], now: 1_000_000 }));
afterEach(() => mock.timers.reset());

async function settle(): Promise<void> {
  for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
}

/** Advances the fake clock in steps of `step` ms, letting the electors run between steps. */
async function advance(ms: number, step = 500): Promise<void> {
  for (let t = 0; t < ms; t += step) {
    mock.timers.tick(step);
    await settle();
  }
}

/** The fake Lease API, shared by the electors; `down` makes one identity's requests fail. */
class FakeLeases {
  lease?: KObj;
  private rv = 0;
  readonly down = new Set<string>();

  client(identity: string): KubeClient {
    const fail = (what: string) => {
      if (this.down.has(identity)) throw new Error(`${what}: connection refused`);
    };
    return {
      getOptional: async () => {
        fail("GET");
        return this.lease && structuredClone(this.lease);
      },
      request: async (method: string, path: string, body: KObj) => {
        fail(method);
        if (method === "POST") {
          if (this.lease) throw new KubeError(409, { reason: "AlreadyExists" }, `POST ${path}`);
        } else if (method === "PUT") {
          if (!this.lease) throw new KubeError(404, { reason: "NotFound" }, `PUT ${path}`);
          if (body.metadata?.resourceVersion !== this.lease.metadata.resourceVersion)
            throw new KubeError(409, { reason: "Conflict" }, `PUT ${path}`);
        }
        this.lease = { ...structuredClone(body), metadata: { ...body.metadata, resourceVersion: String(++this.rv) } };
        return structuredClone(this.lease);
      },
    } as unknown as KubeClient;
  }
}

function elector(api: FakeLeases, identity: string, log: string[]) {
  return new LeaderElector(api.client(identity), {
    namespace: "ns",
    name: "rft-operator",
    identity,
    onStarted: () => log.push(`${identity} started`),
    onLost: () => log.push(`${identity} lost`),
    log: pino({ level: "silent" }),
  });
}

test("one leader; it renews every retry period; a clean stop releases the lease and the standby takes over", async () => {
  const api = new FakeLeases();
  const log: string[] = [];
  const a = elector(api, "a", log);
  const b = elector(api, "b", log);
  a.start();
  await settle();
  b.start();
  await settle();
  assert.deepEqual(log, ["a started"]);
  assert.equal(api.lease?.spec.holderIdentity, "a");

  await advance(60_000);
  assert.deepEqual(log, ["a started"], "b never takes a lease that a renews");
  assert.equal(Date.parse(api.lease?.spec.renewTime), Date.now(), "renewed on the last retry period");

  await a.stop();
  assert.equal(api.lease?.spec.holderIdentity, "");
  await advance(2_000);
  assert.deepEqual(log, ["a started", "b started"]);
  assert.equal(api.lease?.spec.holderIdentity, "b");
  assert.equal(api.lease?.spec.leaseTransitions, 1);
  await b.stop();
});

test("a leader that cannot renew gives up after the renew deadline; the standby waits for the lease to expire", async () => {
  const api = new FakeLeases();
  const log: string[] = [];
  const a = elector(api, "a", log);
  a.start();
  await settle();
  const b = elector(api, "b", log);
  b.start();
  await settle();
  const renewed = Date.parse(api.lease?.spec.renewTime);

  api.down.add("a"); // a is partitioned from the API server; b is not
  await advance(10_000);
  assert.deepEqual(log, ["a started"], "within the 10 s renew deadline a still leads");
  await advance(2_000);
  assert.deepEqual(log, ["a started", "a lost"]);
  assert.equal(a.leader, false);
  assert.ok(Date.now() - renewed <= 15_000, "b has not taken over yet: the 15 s lease has not expired");
  assert.equal(api.lease?.spec.holderIdentity, "a");

  await advance(6_000);
  assert.deepEqual(log, ["a started", "a lost", "b started"]);
  assert.equal(api.lease?.spec.holderIdentity, "b");
  await b.stop();
});

test("two candidates racing for an expired lease: optimistic concurrency lets exactly one win", async () => {
  const api = new FakeLeases();
  api.lease = {
    metadata: { name: "rft-operator", namespace: "ns", resourceVersion: "0" },
    spec: { holderIdentity: "gone", leaseDurationSeconds: 15, renewTime: new Date(0).toISOString() },
  };
  const log: string[] = [];
  const a = elector(api, "a", log);
  const b = elector(api, "b", log);
  a.start();
  b.start(); // both read the same expired lease before either writes
  await settle();
  assert.equal(log.length, 1, log.join());
  assert.equal(api.lease.spec.holderIdentity, log[0]!.split(" ")[0]);
  await advance(30_000);
  assert.equal(log.length, 1, "the loser stays standby");
  await a.stop();
  await b.stop();
});
