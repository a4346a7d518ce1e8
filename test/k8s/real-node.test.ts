/**
 * The real node (./real-node.ts): the real kubelet, containerd and kube-scheduler running the project's image
 * built from deploy/Dockerfile, on the harness's control plane; and the machine put back as it was afterwards.
 * (The operator's e2e suite, test/operator/e2e.test.ts, runs its FineTuneJobs here too.)
 */
import assert from "node:assert/strict";
import { existsSync, readFileSync, statSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import type { KObject } from "./api.js";
import { type Cluster, startCluster, waitFor } from "./cluster.js";
import { answer, parseQuery, records } from "./cluster-dns.js";
import { jumpsTo, mountsUnder, snapshotHost, sysctlsToRestore } from "./host-state.js";
import { criLogText, IMAGE_UID } from "./real-node.js";

describe("host-state and log parsing (pure)", () => {
  test("only moved sysctls are written back", () => {
    assert.deepEqual(
      sysctlsToRestore(
        { "kernel/panic": "1", "vm/overcommit_memory": "0" },
        { "kernel/panic": "10", "vm/overcommit_memory": "0" },
      ),
      [["kernel/panic", "1"]],
    );
  });
  test("the jumps into the kubelet's chains are found for deletion, nothing else", () => {
    const rules = [
      "-P INPUT ACCEPT",
      "-N KUBE-FIREWALL",
      "-A INPUT -j KUBE-FIREWALL",
      "-A INPUT -j OTHER",
      "-A KUBE-FIREWALL -j DROP",
    ];
    assert.deepEqual(jumpsTo(rules, new Set(["KUBE-FIREWALL"])), [["INPUT", "-j", "KUBE-FIREWALL"]]);
  });
  test("mounts under the node's folders and CNI namespaces, deepest first", () => {
    const text = [
      "tmpfs /n/kubelet/pods/x/volumes tmpfs rw 0 0",
      "overlay /n/containerd/x/rootfs overlay rw 0 0",
      "tmpfs /n/kubelet/pods/x/volumes/a/b tmpfs rw 0 0",
      "nsfs /run/netns/cni-1 nsfs rw 0 0",
      "proc /proc proc rw 0 0",
      "tmpfs /nn tmpfs rw 0 0",
    ].join("\n");
    assert.deepEqual(mountsUnder(text, ["/n"]), [
      "/n/kubelet/pods/x/volumes/a/b",
      "/n/kubelet/pods/x/volumes",
      "/n/containerd/x/rootfs",
      "/run/netns/cni-1",
    ]);
  });
  test("the DNS stand-in answers pod hostnames under headless Services, NXDOMAIN otherwise", () => {
    const pods = [
      {
        metadata: { namespace: "ns", name: "j-0-x" },
        spec: { hostname: "j-0", subdomain: "svc" },
        status: { podIP: "10.244.0.7" },
      },
      {
        metadata: { namespace: "ns", name: "k" },
        spec: { hostname: "k", subdomain: "nosvc" },
        status: { podIP: "10.244.0.8" },
      },
    ];
    const svcs = [
      { metadata: { namespace: "ns", name: "svc" }, spec: { clusterIP: "None" } },
      { metadata: { namespace: "ns", name: "nosvc" }, spec: { clusterIP: "198.18.128.9" } },
    ];
    const table = records(pods, svcs);
    assert.deepEqual(table.get("j-0.svc.ns.svc.cluster.local"), ["10.244.0.7"]);
    assert.deepEqual(table.get("nosvc.ns.svc.cluster.local"), ["198.18.128.9"]);
    assert.equal(table.get("k.nosvc.ns.svc.cluster.local"), undefined, "not a headless Service: no pod record");
    // A query for j-0.svc.ns.svc.cluster.local, type A, with RD set.
    const name = "j-0.svc.ns.svc.cluster.local"
      .split(".")
      .map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l)]));
    const query = Buffer.concat([
      Buffer.from([0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]),
      ...name,
      Buffer.from([0, 0, 1, 0, 1]),
    ]);
    const q = parseQuery(query)!;
    assert.equal(q.name, "j-0.svc.ns.svc.cluster.local");
    const a = answer(q, table.get(q.name));
    assert.equal(a.readUInt16BE(0), 0x1234);
    assert.equal(a.readUInt16BE(2) & 0x000f, 0, "NOERROR");
    assert.equal(a.readUInt16BE(6), 1, "one answer");
    assert.deepEqual([...a.subarray(a.length - 4)], [10, 244, 0, 7]);
    assert.equal(answer(q, undefined).readUInt16BE(2) & 0x000f, 3, "NXDOMAIN");
  });
  test("CRI log lines become the container's output (partial lines joined)", () => {
    const log =
      "2026-01-01T00:00:00.1Z stdout P ab\n2026-01-01T00:00:00.2Z stdout F c\n2026-01-01T00:00:00.3Z stderr F d\n";
    assert.equal(criLogText(log), "abc\nd\n");
  });
});

describe("a real node", () => {
  const NS = "real";
  let cluster: Cluster;
  const beforeHost = snapshotHost();

  before(async () => {
    cluster = await startCluster({ realNode: true });
    await cluster.apply({ apiVersion: "v1", kind: "Namespace", metadata: { name: NS } });
  });
  after(async () => {
    await cluster?.close();
  });

  const pod = (name: string, container: KObject, extra: KObject = {}): KObject => ({
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name, namespace: NS },
    spec: {
      restartPolicy: "Never",
      containers: [{ name: "main", image: cluster.realNode!.image, imagePullPolicy: "Never", ...container }],
      ...extra,
    },
  });
  const phase = (name: string, want: string) =>
    waitFor(
      `pod ${name} ${want}`,
      async () => {
        const p = await cluster.getJson("pod", "-n", NS, name);
        if (p.status?.phase === "Failed" && want !== "Failed") throw new Error(JSON.stringify(p.status));
        return p.status?.phase === want ? p : undefined;
      },
      180_000,
      500,
    );

  test("the project's image runs as its own non-root user, scheduled by kube-scheduler, logs through the API", async () => {
    await cluster.apply(
      pod(
        "cli",
        { securityContext: { readOnlyRootFilesystem: true, allowPrivilegeEscalation: false } },
        { securityContext: { runAsNonRoot: true } },
      ),
    );
    const done = await phase("cli", "Succeeded");
    assert.equal(done.spec.nodeName, cluster.realNode!.nodeName);
    assert.equal(done.status.containerStatuses[0].state.terminated.exitCode, 0);
    assert.match(done.status.containerStatuses[0].imageID, /sha256:[0-9a-f]{64}/);
    // The image's own ENTRYPOINT and CMD: tini → node dist/cli/rft.js --help.
    const logs = await cluster.kubectl("logs", "-n", NS, "cli");
    assert.match(logs, /^Usage: rft/m);
    assert.match(cluster.realNode!.readLog(NS, "cli", "main"), /^Usage: rft/m);
    const events = await cluster.getJson("events", "-n", NS, "--field-selector", "involvedObject.name=cli");
    assert.ok(
      events.items.some(
        (e: KObject) =>
          e.reason === "Scheduled" && (e.reportingComponent ?? e.source?.component) === "default-scheduler",
      ),
      JSON.stringify(events.items.map((e: KObject) => [e.reason, e.reportingComponent, e.source])),
    );
  });

  test("a claim gets a volume the image's user writes to; the graders' Python is in the image", async () => {
    await cluster.apply({
      apiVersion: "v1",
      kind: "PersistentVolumeClaim",
      metadata: { name: "work", namespace: NS },
      spec: { accessModes: ["ReadWriteOnce"], resources: { requests: { storage: "1Gi" } } },
    });
    const script =
      "id -u > /work/uid && /opt/rft-python/bin/python -c 'import numpy, scipy, pandas, sklearn, skbio; print(\"py ok\")'";
    await cluster.apply(
      pod(
        "writer",
        { command: ["sh", "-c", script], volumeMounts: [{ name: "w", mountPath: "/work" }] },
        { volumes: [{ name: "w", persistentVolumeClaim: { claimName: "work" } }] },
      ),
    );
    await phase("writer", "Succeeded");
    const file = `${cluster.realNode!.pvcPath(NS, "work")}/uid`;
    assert.equal(readFileSync(file, "utf8").trim(), String(IMAGE_UID));
    assert.equal(statSync(file).uid, IMAGE_UID);
    assert.match(cluster.realNode!.readLog(NS, "writer", "main"), /py ok/);
  });

  test("a container killed from the host fails its pod with exit code 137; a memory limit is enforced", async () => {
    await cluster.apply(pod("sleeper", { command: ["sleep", "600"] }));
    await phase("sleeper", "Running");
    const pid = await waitFor("pid", () => cluster.realNode!.containerPid(NS, "sleeper", "main"));
    process.kill(pid, "SIGKILL");
    const failed = await phase("sleeper", "Failed");
    assert.equal(failed.status.containerStatuses[0].state.terminated.exitCode, 137);

    const hog = "node -e 'const a=[]; for(;;) a.push(Buffer.alloc(1<<20, 1))'";
    await cluster.apply(
      pod("hog", { command: ["sh", "-c", hog], resources: { limits: { memory: "96Mi", cpu: "200m" } } }),
    );
    const oom = await phase("hog", "Failed");
    assert.equal(oom.status.containerStatuses[0].state.terminated.reason, "OOMKilled");
  });

  test("close() puts the machine back as it was", async () => {
    await cluster.close();
    const now = snapshotHost();
    assert.deepEqual(now.sysctls, beforeHost.sysctls);
    assert.deepEqual(now.chains.sort(), beforeHost.chains.sort());
    assert.deepEqual(now.paths, beforeHost.paths);
    assert.deepEqual(now.cgroups, beforeHost.cgroups);
    for (const dev of ["rft-node0", "rft-cni0"]) assert.ok(!existsSync(`/sys/class/net/${dev}`), dev);
    assert.equal(mountsUnder(readFileSync("/proc/self/mounts", "utf8"), [cluster.dir]).length, 0);
  });
});
