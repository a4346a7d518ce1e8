/**
 * The operator's informer against the real harness (kube-apiserver + etcd, no kubelet), at a size the old
 * `limit=5000` list silently truncated: 12,000 ConfigMaps are listed page by page (`continue`), every one is in
 * the cache, the watch then carries changes; a network cut while objects change and etcd compacts makes the
 * watch's resourceVersion too old (410), and the informer relists to exactly the server's collection, reporting
 * what it missed. The informer reaches the apiserver through a TCP forwarder this test can cut (a real partition,
 * the apiserver's own certificate); the apiserver runs without its watch cache so that watches are served by etcd
 * and the compaction is what makes the resourceVersion expire.
 */
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { createServer, connect, type Server, type Socket } from "node:net";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { pino } from "pino";
import { parse, stringify } from "yaml";
import { type KObj, KubeClient, paths } from "../../operator/client.js";
import { Informer } from "../../operator/informer.js";
import { type Cluster, startCluster, waitFor } from "../k8s/cluster.js";

const NS = "rft-informer";
const N = 12_000;
const LABEL = "rft.dev/informer-test=yes";
let cluster: Cluster;
let admin: KubeClient;
let forwarder: Forwarder;

/** A TCP forwarder to the apiserver whose connections can be cut and refused (a partition) and restored. */
class Forwarder {
  private readonly sockets = new Set<Socket>();
  private cut = false;
  constructor(
    readonly server: Server,
    readonly target: number,
  ) {
    server.on("connection", (down) => {
      if (this.cut) return void down.destroy();
      const up = connect(target, "127.0.0.1");
      for (const s of [down, up]) {
        this.sockets.add(s);
        s.on("close", () => this.sockets.delete(s));
        s.on("error", () => {});
      }
      down.pipe(up).pipe(down);
      down.on("close", () => up.destroy());
      up.on("close", () => down.destroy());
    });
  }
  get port(): number {
    return (this.server.address() as { port: number }).port;
  }
  partition(): void {
    this.cut = true;
    for (const s of this.sockets) s.destroy();
  }
  heal(): void {
    this.cut = false;
  }
}

/** Runs `fn` over `items`, `width` at a time. */
async function pool<T>(items: T[], width: number, fn: (t: T) => Promise<unknown>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (next < items.length) await fn(items[next++]!);
    }),
  );
}

const configMap = (name: string) => ({
  apiVersion: "v1",
  kind: "ConfigMap",
  metadata: { name, namespace: NS, labels: { "rft.dev/informer-test": "yes" } },
  data: { name },
});

/** etcd's current revision, and a compaction at it (through etcd's JSON gateway). */
async function etcd(path: string, body: unknown): Promise<KObj> {
  const r = await fetch(`${cluster.etcdUrl}${path}`, { method: "POST", body: JSON.stringify(body) });
  assert.equal(r.status, 200, await r.clone().text());
  return (await r.json()) as KObj;
}

before(async () => {
  cluster = await startCluster({ kubelet: false, apiserverArgs: ["--watch-cache=false"] });
  admin = await KubeClient.fromKubeconfig(cluster.kubeconfig);
  await cluster.apply({ apiVersion: "v1", kind: "Namespace", metadata: { name: NS } });
  const names = Array.from({ length: N }, (_, i) => `cm-${String(i).padStart(5, "0")}`);
  await pool(names, 32, (name) => admin.request("POST", paths.core("configmaps", NS), configMap(name)));

  const apiPort = Number(new URL(cluster.server).port);
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  forwarder = new Forwarder(server, apiPort);
  const kc = parse(readFileSync(cluster.kubeconfig, "utf8"));
  kc.clusters[0].cluster.server = `https://127.0.0.1:${forwarder.port}`;
  writeFileSync(join(cluster.dir, "forwarded.kubeconfig"), stringify(kc), { mode: 0o600 });
});

after(async () => {
  admin?.close();
  forwarder?.server.close();
  await cluster?.close();
});

test("12,000 objects: listed page by page into the cache; a 410 after a partition relists to the server's state", async () => {
  const client = await KubeClient.fromKubeconfig(join(cluster.dir, "forwarded.kubeconfig"));
  const events: { type: string; name: string }[] = [];
  let resyncs = 0;
  const informer = new Informer(client, {
    path: paths.core("configmaps", NS),
    labelSelector: LABEL,
    maxBackoffMs: 500,
    onChange: (o, type) => events.push({ type, name: o.metadata.name }),
    onResync: () => resyncs++,
    log: pino({ level: "silent" }),
  });
  const before = client.requests;
  informer.start();
  try {
    await informer.waitForSync();
    assert.equal(informer.cache.size, N);
    assert.equal(events.filter((e) => e.type === "ADDED").length, N);
    assert.equal(informer.get(NS, "cm-11999")?.data?.name, "cm-11999");
    // 24 pages of 500 (and the watch); one request of 5,000 would have held 5,000.
    assert.ok(client.requests - before >= N / 500, `${client.requests - before} requests`);
    assert.equal(resyncs, 1);

    // The watch carries a change.
    await admin.request("POST", paths.core("configmaps", NS), configMap("cm-live"));
    await waitFor("the watch's ADDED", async () => informer.get(NS, "cm-live"));

    // A partition: meanwhile 100 objects go, 50 come, and etcd compacts past the informer's resourceVersion.
    forwarder.partition();
    const gone = Array.from({ length: 100 }, (_, i) => `cm-${String(i * 7).padStart(5, "0")}`);
    await pool(gone, 16, (name) => admin.delete(paths.core("configmaps", NS, name)));
    const added = Array.from({ length: 50 }, (_, i) => `cm-new-${i}`);
    await pool(added, 16, (name) => admin.request("POST", paths.core("configmaps", NS), configMap(name)));
    const { header } = await etcd("/v3/kv/range", { key: Buffer.from("/").toString("base64") });
    await etcd("/v3/kv/compaction", { revision: header.revision, physical: true });
    events.length = 0;
    forwarder.heal();

    await waitFor("the relist after 410", async () => (resyncs === 2 ? true : undefined), 120_000);
    const server = await admin.get(`${paths.core("configmaps", NS)}?labelSelector=${encodeURIComponent(LABEL)}`);
    const names = (server.items as KObj[]).map((o) => o.metadata.name).sort();
    assert.equal(names.length, N + 1 - 100 + 50);
    assert.deepEqual(
      [...informer.cache.values()].map((o) => o.metadata.name).sort(),
      names,
      "the cache is the server's collection",
    );
    const of = (type: string) =>
      events
        .filter((e) => e.type === type)
        .map((e) => e.name)
        .sort();
    assert.deepEqual(of("DELETED"), [...gone].sort());
    assert.deepEqual(of("ADDED"), [...added].sort());
  } finally {
    informer.stop();
    client.close();
  }
});
