/**
 * The informer's list and watch logic, unit by unit, against a fake API (an in-memory stand-in for
 * kube-apiserver's list and watch endpoints, named as such; informer-k8s.test.ts runs the real one at 12,000
 * objects): pagination with `continue`, the expired-token fallback, 410 on the watch (HTTP status and ERROR event)
 * → relist, other watch failures → watch again from the same resourceVersion, and the cache diff of a relist.
 */
import assert from "node:assert/strict";
import type { IncomingMessage } from "node:http";
import { PassThrough } from "node:stream";
import { test } from "node:test";
import { pino } from "pino";
import { type KObj, type KubeClient, KubeError } from "../../operator/client.js";
import { Informer, listAll, replaceCache } from "../../operator/informer.js";

const obj = (name: string, rv: string) => ({ metadata: { namespace: "ns", name, resourceVersion: rv } });
const silent = pino({ level: "silent" });

/** A fake API: a collection served in pages, and watches the test answers one by one. */
class FakeApi {
  items: KObj[] = [];
  rv = "100";
  lists: URLSearchParams[] = [];
  watches: URLSearchParams[] = [];
  expireTokens = false;
  private watchAnswers: ((q: URLSearchParams) => IncomingMessage)[] = [];
  private watchWaiters: (() => void)[] = [];

  async get(path: string): Promise<KObj> {
    const q = new URLSearchParams(path.split("?")[1]);
    this.lists.push(q);
    if (this.expireTokens && q.has("continue")) throw new KubeError(410, { reason: "Expired" }, `GET ${path}`);
    const limit = Number(q.get("limit") ?? 0);
    const start = Number(q.get("continue") ?? 0);
    const end = limit ? Math.min(this.items.length, start + limit) : this.items.length;
    return {
      items: this.items.slice(start, end),
      metadata: { resourceVersion: this.rv, ...(end < this.items.length ? { continue: String(end) } : {}) },
    };
  }

  async open(_method: string, path: string): Promise<IncomingMessage> {
    const q = new URLSearchParams(path.split("?")[1]);
    this.watches.push(q);
    for (const w of this.watchWaiters.splice(0)) w();
    const answer = this.watchAnswers.shift();
    if (answer) return answer(q);
    return Object.assign(new PassThrough(), { statusCode: 200 }) as unknown as IncomingMessage; // stays open
  }

  /** How the next watch request is answered (default: a stream that stays open). */
  answerWatch(fn: (q: URLSearchParams) => IncomingMessage): void {
    this.watchAnswers.push(fn);
  }

  async waitWatches(n: number): Promise<void> {
    while (this.watches.length < n) await new Promise<void>((r) => this.watchWaiters.push(r));
  }
}

const status = (code: number) => () => {
  const s = Object.assign(new PassThrough(), { statusCode: code });
  s.end();
  return s as unknown as IncomingMessage;
};
const events =
  (...lines: unknown[]) =>
  () => {
    const s = Object.assign(new PassThrough(), { statusCode: 200 });
    s.end(lines.map((l) => JSON.stringify(l)).join("\n") + "\n");
    return s as unknown as IncomingMessage;
  };

function informer(api: FakeApi, onResync?: () => void, changes: string[] = []) {
  return new Informer(api as unknown as KubeClient, {
    path: "/api/v1/namespaces/ns/configmaps",
    labelSelector: "a=b",
    pageSize: 2,
    maxBackoffMs: 1,
    onChange: (o, type) => changes.push(`${type} ${o.metadata.name}`),
    onResync,
    log: silent,
  });
}

test("listAll follows continue tokens with the same limit and selector, and returns the snapshot's resourceVersion", async () => {
  const api = new FakeApi();
  api.items = ["a", "b", "c", "d", "e"].map((n) => obj(n, "1"));
  const query = (p: Record<string, string>) => `/x?${new URLSearchParams({ ...p, labelSelector: "a=b" })}`;
  const r = await listAll((p) => api.get(p), query, 2);
  assert.deepEqual(
    r.items.map((o) => o.metadata.name),
    ["a", "b", "c", "d", "e"],
  );
  assert.equal(r.resourceVersion, "100");
  assert.equal(r.requests, 3);
  assert.deepEqual(
    api.lists.map((q) => [q.get("limit"), q.get("continue"), q.get("labelSelector")]),
    [
      ["2", null, "a=b"],
      ["2", "2", "a=b"],
      ["2", "4", "a=b"],
    ],
  );
});

test("listAll: an expired continue token (410) redoes the list in one unpaginated request", async () => {
  const api = new FakeApi();
  api.items = ["a", "b", "c"].map((n) => obj(n, "1"));
  api.expireTokens = true;
  const r = await listAll(
    (p) => api.get(p),
    (p) => `/x?${new URLSearchParams(p)}`,
    2,
  );
  assert.equal(r.items.length, 3);
  assert.equal(r.requests, 3);
  assert.equal(api.lists[2]!.has("limit"), false);
  // A 410 on the first page is not a token problem: it propagates.
  await assert.rejects(
    listAll(
      async () => {
        throw new KubeError(410, {}, "GET");
      },
      () => "/x",
      2,
    ),
    /410/,
  );
});

test("replaceCache reports what a relist changed: added, modified by resourceVersion, deleted", () => {
  const cache = new Map<string, KObj>([
    ["ns/keep", obj("keep", "1")],
    ["ns/edit", obj("edit", "1")],
    ["ns/gone", obj("gone", "1")],
  ]);
  const changes = replaceCache(cache, [obj("keep", "1"), obj("edit", "2"), obj("new", "3")]);
  assert.deepEqual(
    changes.map(([o, t]) => `${t} ${o.metadata.name}`),
    ["MODIFIED edit", "ADDED new", "DELETED gone"],
  );
  assert.deepEqual([...cache.keys()].sort(), ["ns/edit", "ns/keep", "ns/new"]);
});

test("informer: a full paginated list before the first watch, which starts at the list's resourceVersion", async () => {
  const api = new FakeApi();
  api.items = ["a", "b", "c", "d", "e"].map((n) => obj(n, "1"));
  const inf = informer(api);
  inf.start();
  try {
    await inf.waitForSync();
    assert.equal(inf.cache.size, 5);
    await api.waitWatches(1);
    const w = api.watches[0]!;
    assert.equal(w.get("resourceVersion"), "100");
    assert.equal(w.get("allowWatchBookmarks"), "true");
    assert.equal(w.get("labelSelector"), "a=b");
  } finally {
    inf.stop();
  }
});

test("informer: a watch answered 410 relists; an ERROR event with code 410 relists; a dropped watch resumes", async () => {
  const api = new FakeApi();
  api.items = [obj("a", "1")];
  let resyncs = 0;
  const changes: string[] = [];
  const inf = informer(api, () => resyncs++, changes);
  api.answerWatch(status(410)); // 1: HTTP 410 → relist
  api.answerWatch(
    events(
      { type: "ADDED", object: obj("b", "101") },
      { type: "BOOKMARK", object: { metadata: { resourceVersion: "150" } } },
    ),
  ); // 2: an event, a bookmark, then the stream ends → watch again from 150
  api.answerWatch(events({ type: "ERROR", object: { code: 410, message: "too old resource version" } })); // 3
  // 4: after the relist, the default open stream.
  inf.start();
  try {
    await api.waitWatches(4);
    assert.equal(resyncs, 3, "the first list and one relist per 410");
    assert.deepEqual(
      api.watches.map((q) => q.get("resourceVersion")),
      ["100", "100", "150", "100"],
    );
    // The relist after the ERROR event found "b" gone from the server (it never was in the list).
    assert.deepEqual(changes, ["ADDED a", "ADDED b", "DELETED b"]);
  } finally {
    inf.stop();
  }
});
