/**
 * Proves the Kubernetes harness is real: a real kube-apiserver + etcd + kube-controller-manager (Job
 * controller, garbage collector) and the process kubelet running pods as local processes. Builds the
 * control-plane binaries first when they are not cached (scripts/setup.d/40-k8s.sh).
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type { KObject } from "./api.js";
import { type Cluster, startCluster, waitFor } from "./cluster.js";

let cluster: Cluster;

before(async () => {
  cluster = await startCluster();
});

after(async () => {
  await cluster?.close();
});

function condition(obj: KObject, type: string): KObject | undefined {
  return (obj.status?.conditions ?? []).find((c: KObject) => c.type === type);
}

async function jobPods(ns: string, job: string): Promise<KObject[]> {
  const list = await cluster.getJson("pods", "-n", ns, "-l", `batch.kubernetes.io/job-name=${job}`);
  return list.items;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe("k8s harness", () => {
  test("an Indexed Job with a native sidecar, ConfigMap and Secret volumes completes via the real Job controller", async () => {
    const ns = "harness-indexed";
    // The sidecar serves a TCP port (on all the pod's addresses: the kubelet probes the pod IP, as a real one
    // does); its startupProbe gates the main container, which connects over the pod's own loopback.
    const sidecar = `
      const net = require("node:net");
      // A probe connects and resets at once: a server must survive a reset connection.
      net.createServer((s) => { s.on("error", () => {}); s.end("pong-" + process.env.JOB_COMPLETION_INDEX + "\\n"); }).listen(7070,
        () => console.log("sidecar listening"));
      process.on("SIGTERM", () => process.exit(0));`;
    // The main container reads its mounts, env (downward API), talks to the sidecar and to the apiserver with
    // its service-account token through the relayed 127.0.0.1:$KUBERNETES_SERVICE_PORT.
    const main = `
      const fs = require("node:fs"), net = require("node:net"), https = require("node:https");
      const greeting = fs.readFileSync("/etc/rft-harness-test/config/greeting", "utf8");
      const token = fs.readFileSync("/etc/rft-harness-test/secret/token", "utf8");
      const saDir = "/var/run/secrets/kubernetes.io/serviceaccount";
      const saNs = fs.readFileSync(saDir + "/namespace", "utf8");
      const s = net.connect(7070, "127.0.0.1");
      let reply = "";
      s.on("data", (d) => (reply += d));
      s.on("end", () => {
        const req = https.get({
          host: process.env.KUBERNETES_SERVICE_HOST, port: process.env.KUBERNETES_SERVICE_PORT,
          path: "/api/v1/namespaces/" + saNs + "/secrets",
          ca: fs.readFileSync(saDir + "/ca.crt"),
          headers: { authorization: "Bearer " + fs.readFileSync(saDir + "/token", "utf8") },
        }, (res) => {
          let body = "";
          res.on("data", (d) => (body += d));
          res.on("end", () => {
            const who = (JSON.parse(body).message || "").match(/User "([^"]+)"/);
            console.log(["index=" + process.env.IDX, "env-index=" + process.env.JOB_COMPLETION_INDEX,
              "greeting=" + greeting, "token=" + token, "reply=" + reply.trim(), "pod=" + process.env.POD_NAME,
              "ip=" + process.env.POD_IP, "api=" + res.statusCode + ":" + (who && who[1])].join(" "));
            process.exit(0);
          });
        });
        req.on("error", (e) => { console.error(e); process.exit(5); });
      });`;
    await cluster.apply([
      { apiVersion: "v1", kind: "Namespace", metadata: { name: ns } },
      { apiVersion: "v1", kind: "ConfigMap", metadata: { name: "cfg", namespace: ns }, data: { greeting: "hello" } },
      { apiVersion: "v1", kind: "Secret", metadata: { name: "creds", namespace: ns }, stringData: { token: "s3cret" } },
    ]);
    await waitFor("default service account", () =>
      cluster.api.getOptional(`/api/v1/namespaces/${ns}/serviceaccounts/default`),
    );
    await cluster.apply({
      apiVersion: "batch/v1",
      kind: "Job",
      metadata: { name: "indexed", namespace: ns },
      spec: {
        completionMode: "Indexed",
        completions: 2,
        parallelism: 2,
        backoffLimit: 0,
        template: {
          spec: {
            restartPolicy: "Never",
            terminationGracePeriodSeconds: 5,
            volumes: [
              { name: "config", configMap: { name: "cfg" } },
              { name: "secret", secret: { secretName: "creds" } },
            ],
            initContainers: [
              {
                name: "sidecar",
                image: "node:20",
                restartPolicy: "Always",
                args: ["-e", sidecar],
                startupProbe: { tcpSocket: { port: 7070 }, periodSeconds: 1, failureThreshold: 30 },
              },
            ],
            containers: [
              {
                name: "main",
                image: "node:20",
                args: ["-e", main],
                env: [
                  {
                    name: "IDX",
                    valueFrom: {
                      fieldRef: { fieldPath: "metadata.annotations['batch.kubernetes.io/job-completion-index']" },
                    },
                  },
                  { name: "POD_NAME", valueFrom: { fieldRef: { fieldPath: "metadata.name" } } },
                  { name: "POD_IP", valueFrom: { fieldRef: { fieldPath: "status.podIP" } } },
                ],
                volumeMounts: [
                  { name: "config", mountPath: "/etc/rft-harness-test/config", readOnly: true },
                  { name: "secret", mountPath: "/etc/rft-harness-test/secret", readOnly: true },
                ],
              },
            ],
          },
        },
      },
    });

    const job = await waitFor(
      "Job Complete",
      async () => {
        const j = await cluster.getJson("job", "-n", ns, "indexed");
        assert.notEqual(condition(j, "Failed")?.status, "True", JSON.stringify(j.status));
        return condition(j, "Complete")?.status === "True" ? j : undefined;
      },
      90_000,
      500,
    ).catch(async (err: Error) => {
      // Say why: each pod's container states and logs.
      const pods = await jobPods(ns, "indexed");
      const why = pods.map((p) => {
        const logs = ["sidecar", "main"].map(
          (c) => `${c}: ${(cluster.kubelet?.readLog(ns, p.metadata.name, c) ?? "").slice(-2000)}`,
        );
        return `${p.metadata.name} ${JSON.stringify(p.status.containerStatuses)}\n${logs.join("\n")}`;
      });
      throw new Error(`${err.message}\n${why.join("\n")}`);
    });
    assert.equal(job.status.succeeded, 2);
    assert.equal(job.status.completedIndexes, "0,1");

    const pods = await jobPods(ns, "indexed");
    assert.equal(pods.length, 2);
    const ips = new Set<string>();
    for (const pod of pods) {
      const index = pod.metadata.annotations["batch.kubernetes.io/job-completion-index"];
      assert.equal(pod.spec.nodeName, cluster.kubelet?.nodeName);
      assert.equal(pod.status.phase, "Succeeded");
      assert.match(pod.status.podIP, /^198\.18\./);
      ips.add(pod.status.podIP);
      const [mainStatus] = pod.status.containerStatuses;
      assert.equal(mainStatus.state.terminated.exitCode, 0);
      assert.equal(mainStatus.state.terminated.reason, "Completed");
      const [sidecarStatus] = pod.status.initContainerStatuses;
      assert.equal(sidecarStatus.name, "sidecar");
      assert.ok(sidecarStatus.state.terminated, "the sidecar is stopped once the main container is done");
      const out = cluster.kubelet?.readLog(ns, pod.metadata.name, "main") ?? "";
      assert.match(
        out,
        new RegExp(
          `index=${index} env-index=${index} greeting=hello token=s3cret reply=pong-${index} pod=${pod.metadata.name} ip=${pod.status.podIP.replace(/\./g, "\\.")} api=403:system:serviceaccount:${ns}:default`,
        ),
      );
      assert.match(cluster.kubelet?.readLog(ns, pod.metadata.name, "sidecar") ?? "", /sidecar listening/);
    }
    assert.equal(ips.size, 2, "each pod has its own IP");
  });

  test("a failing container fails its pod with its exit code and the Job backs off to BackoffLimitExceeded", async () => {
    const ns = "harness-failing";
    await cluster.apply({ apiVersion: "v1", kind: "Namespace", metadata: { name: ns } });
    await waitFor("default service account", () =>
      cluster.api.getOptional(`/api/v1/namespaces/${ns}/serviceaccounts/default`),
    );
    await cluster.apply({
      apiVersion: "batch/v1",
      kind: "Job",
      metadata: { name: "failing", namespace: ns },
      spec: {
        backoffLimit: 1,
        template: {
          spec: {
            restartPolicy: "Never",
            containers: [{ name: "main", image: "busybox:1.36", command: ["sh", "-c", "echo boom >&2; exit 3"] }],
          },
        },
      },
    });
    const job = await waitFor(
      "Job Failed",
      async () => {
        const j = await cluster.getJson("job", "-n", ns, "failing");
        return condition(j, "Failed")?.status === "True" ? j : undefined;
      },
      90_000,
      500,
    );
    assert.equal(condition(job, "Failed")?.reason, "BackoffLimitExceeded");
    const pods = await jobPods(ns, "failing");
    assert.equal(pods.length, 2, "one retry after the first failure");
    for (const pod of pods) {
      assert.equal(pod.status.phase, "Failed");
      const t = pod.status.containerStatuses[0].state.terminated;
      assert.equal(t.exitCode, 3);
      assert.equal(t.reason, "Error");
      assert.match(cluster.kubelet?.readLog(ns, pod.metadata.name, "main") ?? "", /boom/);
      // The same log through the apiserver, which proxies to the kubelet's /containerLogs.
      assert.match(await cluster.kubectl("logs", "-n", ns, pod.metadata.name), /boom/);
    }
  });

  test("deleting a Job garbage-collects its pods and kills their processes", async () => {
    const ns = "harness-gc";
    await cluster.apply({ apiVersion: "v1", kind: "Namespace", metadata: { name: ns } });
    await waitFor("default service account", () =>
      cluster.api.getOptional(`/api/v1/namespaces/${ns}/serviceaccounts/default`),
    );
    await cluster.apply({
      apiVersion: "batch/v1",
      kind: "Job",
      metadata: { name: "sleepy", namespace: ns },
      spec: {
        parallelism: 2,
        completions: 2,
        template: {
          spec: {
            restartPolicy: "Never",
            terminationGracePeriodSeconds: 2,
            // "$$" is "$" after Kubernetes' $(VAR) expansion.
            containers: [
              { name: "main", image: "busybox:1.36", command: ["sh", "-c", "echo pid=$$$$; exec sleep 600"] },
            ],
          },
        },
      },
    });
    const pids = await waitFor(
      "two running pods",
      async () => {
        const pods = await jobPods(ns, "sleepy");
        if (pods.length !== 2 || pods.some((p) => p.status.phase !== "Running")) return undefined;
        const found = pods.map(
          (p) => /pid=(\d+)/.exec(cluster.kubelet?.readLog(ns, p.metadata.name, "main") ?? "")?.[1],
        );
        return found.every(Boolean) ? found.map(Number) : undefined;
      },
      60_000,
      300,
    );
    for (const pid of pids) assert.ok(alive(pid), `pid ${pid} runs`);
    const [pod] = await jobPods(ns, "sleepy");
    assert.equal(pod?.metadata.ownerReferences?.[0]?.kind, "Job");

    await cluster.kubectl("delete", "job", "-n", ns, "sleepy", "--cascade=background", "--wait=false");
    await waitFor("pods garbage-collected", async () => (await jobPods(ns, "sleepy")).length === 0, 60_000, 300);
    for (const pid of pids) assert.equal(alive(pid), false, `pid ${pid} was killed`);
  });

  test("server-side apply and a CRD's CEL rules are enforced by the real apiserver", async () => {
    const crd = {
      apiVersion: "apiextensions.k8s.io/v1",
      kind: "CustomResourceDefinition",
      metadata: { name: "widgets.harness.rft.dev" },
      spec: {
        group: "harness.rft.dev",
        scope: "Namespaced",
        names: { plural: "widgets", singular: "widget", kind: "Widget", shortNames: ["wdg"] },
        versions: [
          {
            name: "v1",
            served: true,
            storage: true,
            subresources: { status: {} },
            schema: {
              openAPIV3Schema: {
                type: "object",
                properties: {
                  spec: {
                    type: "object",
                    required: ["model", "minReplicas", "maxReplicas"],
                    properties: {
                      model: {
                        type: "string",
                        maxLength: 64,
                        "x-kubernetes-validations": [{ rule: "self == oldSelf", message: "model is immutable" }],
                      },
                      minReplicas: { type: "integer", minimum: 0 },
                      maxReplicas: { type: "integer", maximum: 16 },
                    },
                    "x-kubernetes-validations": [
                      {
                        rule: "self.minReplicas <= self.maxReplicas",
                        message: "minReplicas must not exceed maxReplicas",
                      },
                    ],
                  },
                },
              },
            },
          },
        ],
      },
    };
    await cluster.apply(crd, "--server-side", "--field-manager=harness-test");
    await cluster.kubectl("wait", "--for=condition=Established", "crd/widgets.harness.rft.dev", "--timeout=30s");
    await cluster.apply({ apiVersion: "v1", kind: "Namespace", metadata: { name: "harness-crd" } });
    const widget = (spec: KObject) => ({
      apiVersion: "harness.rft.dev/v1",
      kind: "Widget",
      metadata: { name: "w", namespace: "harness-crd" },
      spec,
    });
    // Retried while the new API's discovery and CEL programs settle.
    await waitFor("valid widget applied", () =>
      cluster.apply(
        widget({ model: "tiny", minReplicas: 1, maxReplicas: 2 }),
        "--server-side",
        "--field-manager=owner",
      ),
    );
    await assert.rejects(
      cluster.apply(
        widget({ model: "tiny", minReplicas: 3, maxReplicas: 2 }),
        "--server-side",
        "--field-manager=owner",
      ),
      /minReplicas must not exceed maxReplicas/,
    );
    await assert.rejects(
      cluster.apply(
        widget({ model: "other", minReplicas: 1, maxReplicas: 2 }),
        "--server-side",
        "--field-manager=owner",
      ),
      /model is immutable/,
    );
    await assert.rejects(
      cluster.apply(
        widget({ model: "tiny", minReplicas: 1, maxReplicas: 20 }),
        "--server-side",
        "--field-manager=owner",
      ),
      /maxReplicas.*16/,
    );
    // Another field manager changing an owned field conflicts; --force-conflicts takes it over.
    await assert.rejects(
      cluster.apply(
        widget({ model: "tiny", minReplicas: 1, maxReplicas: 4 }),
        "--server-side",
        "--field-manager=intruder",
      ),
      /conflict/i,
    );
    await cluster.apply(
      widget({ model: "tiny", minReplicas: 1, maxReplicas: 4 }),
      "--server-side",
      "--field-manager=intruder",
      "--force-conflicts",
    );
    const w = await cluster.getJson("wdg", "-n", "harness-crd", "w", "--show-managed-fields");
    assert.equal(w.spec.maxReplicas, 4);
    const managers = (w.metadata.managedFields as KObject[]).map((m) => `${m.manager}/${m.operation}`).sort();
    assert.deepEqual(managers, ["intruder/Apply", "owner/Apply"]);
  });

  test("probes, restarts and graceful deletion of a pod", async () => {
    const ns = "harness-probes";
    await cluster.apply({ apiVersion: "v1", kind: "Namespace", metadata: { name: ns } });
    await waitFor("default service account", () =>
      cluster.api.getOptional(`/api/v1/namespaces/${ns}/serviceaccounts/default`),
    );
    // First run: healthy for a moment, then its liveness file goes away, so the exec liveness probe fails and
    // the kubelet restarts it. Later runs stay healthy. SIGTERM is logged before a clean exit.
    const web = `
      const fs = require("node:fs"), http = require("node:http");
      const starts = fs.existsSync("/data/starts") ? Number(fs.readFileSync("/data/starts", "utf8")) + 1 : 1;
      fs.writeFileSync("/data/starts", String(starts));
      fs.writeFileSync("/data/alive", "");
      console.log("start " + starts);
      if (starts === 1) setTimeout(() => fs.rmSync("/data/alive"), 1500);
      http.createServer((req, res) => res.writeHead(req.url === "/ready" ? 200 : 404).end("ok")).listen(8080);
      process.on("SIGTERM", () => { console.log("got SIGTERM"); process.exit(0); });`;
    await cluster.apply({
      apiVersion: "v1",
      kind: "Pod",
      metadata: { name: "web", namespace: ns },
      spec: {
        restartPolicy: "Always",
        terminationGracePeriodSeconds: 3,
        volumes: [{ name: "data", emptyDir: {} }],
        containers: [
          {
            name: "web",
            image: "node:20",
            args: ["-e", web],
            volumeMounts: [{ name: "data", mountPath: "/data" }],
            readinessProbe: { httpGet: { path: "/ready", port: 8080 }, periodSeconds: 1 },
            livenessProbe: { exec: { command: ["test", "-f", "/data/alive"] }, periodSeconds: 1, failureThreshold: 2 },
          },
          {
            // Ignores SIGTERM: killed with SIGKILL when the grace period ends.
            name: "stubborn",
            image: "busybox:1.36",
            command: ["sh", "-c", "trap '' TERM; echo stubborn; while true; do sleep 1; done"],
          },
        ],
      },
    });
    const pod = await waitFor(
      "restarted and Ready",
      async () => {
        const p = await cluster.getJson("pod", "-n", ns, "web");
        const s = p.status.containerStatuses?.find((c: KObject) => c.name === "web");
        return s?.restartCount >= 1 && condition(p, "Ready")?.status === "True" ? p : undefined;
      },
      60_000,
      300,
    );
    const s = pod.status.containerStatuses.find((c: KObject) => c.name === "web");
    assert.ok(s.lastState.terminated, "the liveness-killed run is the last state");
    assert.equal(s.state.running !== undefined, true);
    assert.match(cluster.kubelet?.readLog(ns, "web", "web", { previous: true }) ?? "", /start 1/);
    assert.match(await cluster.kubectl("logs", "-n", ns, "web", "-c", "web"), /start [2-9]/);

    await cluster.kubectl("delete", "pod", "-n", ns, "web", "--wait=true", "--timeout=30s");
    assert.match(cluster.kubelet?.readLog(ns, "web", "web") ?? "", /got SIGTERM/);
    assert.equal((await cluster.getJson("pods", "-n", ns)).items.length, 0);
  });

  test("scheduling: GPU capacity, Unschedulable, ErrImagePull for an unmapped image", async () => {
    const ns = "harness-sched";
    await cluster.apply({ apiVersion: "v1", kind: "Namespace", metadata: { name: ns } });
    await waitFor("default service account", () =>
      cluster.api.getOptional(`/api/v1/namespaces/${ns}/serviceaccounts/default`),
    );
    const gpuPod = (name: string, gpus: number) => ({
      apiVersion: "v1",
      kind: "Pod",
      metadata: { name, namespace: ns },
      spec: {
        terminationGracePeriodSeconds: 1,
        containers: [
          {
            name: "main",
            image: "busybox:1.36",
            command: ["sleep", "600"],
            resources: { limits: { "nvidia.com/gpu": String(gpus) } },
          },
        ],
      },
    });
    await cluster.apply(gpuPod("all-gpus", 8));
    await waitFor(
      "all-gpus running",
      async () => (await cluster.getJson("pod", "-n", ns, "all-gpus")).status.phase === "Running",
    );
    await cluster.apply(gpuPod("one-more", 1));
    const pending = await waitFor("one-more unschedulable", async () => {
      const p = await cluster.getJson("pod", "-n", ns, "one-more");
      return condition(p, "PodScheduled")?.reason === "Unschedulable" ? p : undefined;
    });
    assert.match(condition(pending, "PodScheduled")?.message, /Insufficient nvidia\.com\/gpu/);
    assert.equal(pending.spec.nodeName, undefined);
    await cluster.kubectl("delete", "pod", "-n", ns, "all-gpus", "--wait=true");
    await waitFor(
      "one-more running",
      async () => (await cluster.getJson("pod", "-n", ns, "one-more")).status.phase === "Running",
    );

    await cluster.apply({
      apiVersion: "v1",
      kind: "Pod",
      metadata: { name: "unknown-image", namespace: ns },
      spec: { containers: [{ name: "main", image: "registry.example/nothing:1" }] },
    });
    const waiting = await waitFor("ErrImagePull", async () => {
      const p = await cluster.getJson("pod", "-n", ns, "unknown-image");
      const w = p.status.containerStatuses?.[0]?.state?.waiting;
      return w?.reason === "ErrImagePull" ? w : undefined;
    });
    assert.match(waiting.message, /registry\.example\/nothing:1/);
    await cluster.kubectl("delete", "namespace", ns, "--wait=false");
  });

  test("pod networking: own IPs, hostnames of a subdomain, host ports relayed into pods, PVC directories", async () => {
    const ns = "harness-net";
    const { createServer } = await import("node:net");
    const hostServer = createServer((s) => {
      s.on("error", () => {});
      s.end("host-hello\n");
    });
    await new Promise<void>((r) => hostServer.listen(0, "127.0.0.1", () => r()));
    const hostPort = (hostServer.address() as { port: number }).port;
    await cluster.kubelet?.exposeHostPort(hostPort);
    try {
      await cluster.apply([
        { apiVersion: "v1", kind: "Namespace", metadata: { name: ns } },
        {
          apiVersion: "v1",
          kind: "PersistentVolumeClaim",
          metadata: { name: "shared", namespace: ns },
          spec: { accessModes: ["ReadWriteOnce"], resources: { requests: { storage: "1Gi" } } },
        },
      ]);
      await waitFor("default service account", () =>
        cluster.api.getOptional(`/api/v1/namespaces/${ns}/serviceaccounts/default`),
      );
      const server = `require("node:net").createServer((s) => s.end("hello from " + require("node:os").hostname() + "\\n")).listen(9000);
        require("node:fs").writeFileSync("/pvc/written-by-server", "persisted");`;
      const client = `
        const net = require("node:net");
        const get = (host, port) => new Promise((resolve) => {
          const s = net.connect(port, host); let d = "";
          s.on("data", (x) => (d += x)); s.on("end", () => resolve(d.trim())); s.on("error", (e) => resolve("error " + e.code));
        });
        (async () => {
          for (let i = 0; i < 50; i++) {
            const r = await get("server.peers", 9000);
            if (!r.startsWith("error")) {
              const full = await get("server.peers.${ns}.svc.cluster.local", 9000);
              const host = await get("127.0.0.1", Number(process.env.HOST_PORT));
              const pvc = require("node:fs").readFileSync("/pvc/written-by-server", "utf8");
              console.log([r, full, host, pvc].join(" | "));
              process.exit(0);
            }
            await new Promise((t) => setTimeout(t, 200));
          }
          process.exit(1);
        })();`;
      const pod = (name: string, script: string, restartPolicy: string) => ({
        apiVersion: "v1",
        kind: "Pod",
        metadata: { name, namespace: ns },
        spec: {
          hostname: name,
          subdomain: "peers",
          restartPolicy,
          terminationGracePeriodSeconds: 1,
          volumes: [{ name: "pvc", persistentVolumeClaim: { claimName: "shared" } }],
          containers: [
            {
              name: "main",
              image: "node:20",
              args: ["-e", script],
              env: [{ name: "HOST_PORT", value: String(hostPort) }],
              volumeMounts: [{ name: "pvc", mountPath: "/pvc" }],
            },
          ],
        },
      });
      await cluster.apply([pod("server", server, "Always"), pod("client", client, "Never")]);
      const done = await waitFor(
        "client Succeeded",
        async () => {
          const p = await cluster.getJson("pod", "-n", ns, "client");
          assert.notEqual(p.status.phase, "Failed", cluster.kubelet?.readLog(ns, "client", "main"));
          return p.status.phase === "Succeeded" ? p : undefined;
        },
        60_000,
        300,
      );
      const serverPod = await cluster.getJson("pod", "-n", ns, "server");
      assert.notEqual(serverPod.status.podIP, done.status.podIP);
      assert.equal(
        cluster.kubelet?.readLog(ns, "client", "main").trim(),
        "hello from server | hello from server | host-hello | persisted",
      );
      const pvcDir = cluster.kubelet?.pvcPath(ns, "shared") ?? "";
      assert.equal(readFileSync(join(pvcDir, "written-by-server"), "utf8"), "persisted");
    } finally {
      hostServer.close();
      await cluster.kubectl("delete", "namespace", ns, "--wait=false");
    }
  });
});
