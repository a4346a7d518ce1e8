/**
 * The process kubelet: the harness's stand-in for a node. It registers a Node (capacity incl.
 * `nvidia.com/gpu`, a Ready condition, heartbeats through a Lease in kube-node-lease), acts as the scheduler
 * for pods with no node (resource fit, nodeSelector, taints/tolerations, scheduling gates; binds through the
 * pods/binding subresource; reports PodScheduled=False/Unschedulable otherwise), and runs the pods bound to
 * it as local processes (./pod-worker.ts), each in its own network namespace (./pod-network.ts).
 *
 * Images map to host commands by pattern (`*` matches anything): { "rft:*": { entrypoint: [node, --import,
 * tsx, cli/rft.ts] } } runs the container's args as an rft subcommand; an image no pattern matches leaves the
 * container waiting with reason ErrImagePull and a message naming the known patterns.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, statSync } from "node:fs";
import https from "node:https";
import { cpus, totalmem } from "node:os";
import { join } from "node:path";
import { createLogger } from "../../proto/log.js";
import { type Api, ApiError, type KObject, type WatchEvent } from "./api.js";
import { REPO_ROOT } from "./binaries.js";
import { netnsAllowed, PodNetwork } from "./pod-network.js";
import { type ImageEntry, parseQuantity, podRequests } from "./pod-spec.js";
import { PodWorker } from "./pod-worker.js";

export type { ImageEntry } from "./pod-spec.js";

export interface KubeletOptions {
  /** Folder for pod files (volumes, logs, scripts) and PVC directories. */
  dir: string;
  nodeName: string;
  apiserverPort: number;
  /** CA that signed the apiserver's kubelet-client certificate, and this kubelet's serving pair: with them it
   * serves /containerLogs for `kubectl logs`. */
  caCert?: string;
  servingCert?: string;
  servingKey?: string;
  /** Image pattern → host command; merged over DEFAULT_IMAGES (yours win). */
  images: Record<string, ImageEntry>;
  /** Node capacity (= allocatable). */
  capacity: Record<string, string>;
  labels: Record<string, string>;
  taints: KObject[];
  /** Host loopback ports that pods reach at 127.0.0.1:PORT (the apiserver's is always added). */
  hostPorts: number[];
  /** Bind pending pods to this node (be the scheduler). Default true. */
  schedule: boolean;
  /** First container restart back-off (doubles per restart). Default 1 s (the real kubelet: 10 s). */
  restartBackoffMs: number;
  maxRestartBackoffMs: number;
}

export interface Kubelet {
  nodeName: string;
  options: KubeletOptions;
  /** Path of a container's log (the newest pod of that name; `restart` picks a run, default the current). */
  logPath(namespace: string, pod: string, container: string, restart?: number): string | undefined;
  /** A container's log text ("" when it has none yet). `previous` reads the run before the current one. */
  readLog(namespace: string, pod: string, container: string, opts?: { previous?: boolean }): string;
  /** The pod's network namespace name (for `ip netns exec NS …` in tests), if it is running here. */
  podNetns(namespace: string, pod: string): string | undefined;
  /** Host directory that backs a PersistentVolumeClaim's volume (the same for every pod using the claim). */
  pvcPath(namespace: string, claim: string): string;
  /** Host pid of a running container's main process (kill it to simulate a crash). */
  containerPid(namespace: string, pod: string, container: string): number | undefined;
  /** Makes a host loopback port reachable from pods started after this call. */
  exposeHostPort(port: number): Promise<void>;
  close(): Promise<void>;
}

const TSX = import.meta.resolve("tsx");

export const DEFAULT_IMAGES: Record<string, ImageEntry> = {
  "rft:*": { entrypoint: [process.execPath, "--import", TSX, join(REPO_ROOT, "cli/rft.ts")] },
  "*/rft:*": { entrypoint: [process.execPath, "--import", TSX, join(REPO_ROOT, "cli/rft.ts")] },
  "node:*": { entrypoint: [process.execPath] },
  "busybox*": { cmd: ["sh"] },
  "host/*": {},
};

const log = createLogger("k8s-kubelet");

export async function startKubelet(
  api: Api,
  partial: Partial<KubeletOptions> & { dir: string; apiserverPort: number },
): Promise<Kubelet> {
  const options: KubeletOptions = {
    nodeName: "rft-node-0",
    images: {},
    capacity: {},
    labels: {},
    taints: [],
    hostPorts: [],
    schedule: true,
    restartBackoffMs: 1_000,
    maxRestartBackoffMs: 30_000,
    ...partial,
  };
  options.images = {
    ...options.images,
    ...Object.fromEntries(Object.entries(DEFAULT_IMAGES).filter(([k]) => !(k in options.images))),
  };
  options.capacity = {
    cpu: String(Math.max(32, cpus().length)),
    memory: `${Math.max(128, Math.floor(totalmem() / 2 ** 30))}Gi`,
    pods: "110",
    "ephemeral-storage": "100Gi",
    "nvidia.com/gpu": "8",
    ...options.capacity,
  };
  if (!(await netnsAllowed())) {
    throw new Error(
      "the process kubelet needs to create network namespaces (`ip netns add`): run as root with CAP_NET_ADMIN and CAP_SYS_ADMIN",
    );
  }
  const node = options.nodeName;
  const podsDir = join(options.dir, "pods");
  const pvcRoot = join(options.dir, "pvc");
  mkdirSync(podsDir, { recursive: true });
  mkdirSync(pvcRoot, { recursive: true });
  const network = new PodNetwork(options.dir, [
    process.execPath,
    "--import",
    TSX,
    join(REPO_ROOT, "test/k8s/pod-agent.ts"),
  ]);
  await network.init([options.apiserverPort, ...options.hostPorts]);

  const abort = new AbortController();
  const workers = new Map<string, PodWorker>();
  const finishedUids = new Set<string>();
  const createdMountPoints = new Set<string>();
  const timers: NodeJS.Timeout[] = [];

  // --- the Node and its heartbeats ---------------------------------------------------------------------------
  const nodeLabels = {
    "kubernetes.io/hostname": node,
    "kubernetes.io/os": "linux",
    "kubernetes.io/arch": process.arch === "x64" ? "amd64" : process.arch,
    "node.kubernetes.io/instance-type": "rft-process-kubelet",
    "nvidia.com/gpu.present": "true",
    ...options.labels,
  };
  const existing = await api.getOptional(`/api/v1/nodes/${node}`);
  if (!existing) {
    await api.post("/api/v1/nodes", {
      apiVersion: "v1",
      kind: "Node",
      metadata: { name: node, labels: nodeLabels },
      spec: { taints: options.taints.length ? options.taints : undefined },
    });
  }
  const nodeStatus = () => {
    const t = new Date().toISOString().replace(/\.\d{3}Z$/, "Z");
    const cond = (type: string, status: string, reason: string, message: string) => ({
      type,
      status,
      reason,
      message,
      lastHeartbeatTime: t,
      lastTransitionTime: t,
    });
    return {
      status: {
        capacity: options.capacity,
        allocatable: options.capacity,
        conditions: [
          cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
          cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
          cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
          cond("Ready", "True", "KubeletReady", "process kubelet is posting ready status"),
        ],
        ...(logServer ? { daemonEndpoints: { kubeletEndpoint: { Port: logServer.port } } } : {}),
        addresses: [
          { type: "InternalIP", address: "127.0.0.1" },
          { type: "Hostname", address: node },
        ],
        nodeInfo: {
          machineID: "rft-harness",
          systemUUID: "rft-harness",
          bootID: "rft-harness",
          kernelVersion: "",
          osImage: "rft process kubelet",
          containerRuntimeVersion: "process://1",
          kubeletVersion: "v0.0.0-rft-harness",
          kubeProxyVersion: "",
          operatingSystem: "linux",
          architecture: nodeLabels["kubernetes.io/arch"],
        },
      },
    };
  };
  const logServer = options.caCert && options.servingCert && options.servingKey ? await serveLogs() : undefined;
  await api.strategicPatch(`/api/v1/nodes/${node}/status`, nodeStatus());
  const lease = `/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/${node}`;
  const renewLease = async () => {
    const renewTime = new Date()
      .toISOString()
      .replace("Z", "000Z")
      .replace(/(\.\d{6})\d*Z$/, "$1Z");
    try {
      const cur = await api.getOptional(lease);
      if (!cur) {
        await api.post("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", {
          apiVersion: "coordination.k8s.io/v1",
          kind: "Lease",
          metadata: { name: node, namespace: "kube-node-lease" },
          spec: { holderIdentity: node, leaseDurationSeconds: 40, renewTime },
        });
      } else {
        await api.mergePatch(lease, { spec: { holderIdentity: node, leaseDurationSeconds: 40, renewTime } });
      }
    } catch (e) {
      if (!abort.signal.aborted) log.warn({ err: (e as Error).message }, "lease renewal failed");
    }
  };
  await renewLease();
  timers.push(setInterval(() => void renewLease(), 10_000));
  timers.push(
    setInterval(() => {
      api.strategicPatch(`/api/v1/nodes/${node}/status`, nodeStatus()).catch(() => {});
    }, 60_000),
  );

  // --- /etc/hosts of the pods of a namespace -----------------------------------------------------------------
  const hostsChanged = (ns: string) => {
    const same = [...workers.values()].filter((w) => w.ns === ns && !w.isDone);
    const peers = same.map((w) => w.hostsEntry()).filter((e): e is { ip: string; names: string[] } => !!e);
    for (const w of same) {
      try {
        w.writeHosts(peers);
      } catch {}
    }
  };

  const deps = {
    api,
    network,
    nodeName: node,
    images: options.images,
    podsDir,
    pvcRoot,
    allocatable: options.capacity,
    apiserverPort: options.apiserverPort,
    restartBackoffMs: options.restartBackoffMs,
    maxRestartBackoffMs: options.maxRestartBackoffMs,
    createdMountPoints,
    hostsChanged,
    log,
  };

  // --- pods bound here -----------------------------------------------------------------------------------------
  const boundPods = new Map<string, KObject>();
  /** Pods waiting for this node (the scheduler's queue), and pods bound but not yet seen in the node watch. */
  const pending = new Map<string, KObject>();
  const assumed = new Map<string, KObject>();
  const handlePod = (pod: KObject) => {
    const uid = pod.metadata.uid;
    boundPods.set(uid, pod);
    // Bound pods in the node watch replace the scheduler's assumption about them.
    assumed.delete(uid);
    const w = workers.get(uid);
    if (w) {
      w.update(pod);
      return;
    }
    if (finishedUids.has(uid)) {
      // Finished here earlier; only a deletion is left to finalize.
      if (pod.metadata.deletionTimestamp) {
        api
          .delete(`/api/v1/namespaces/${pod.metadata.namespace}/pods/${pod.metadata.name}`, {
            apiVersion: "v1",
            kind: "DeleteOptions",
            gracePeriodSeconds: 0,
            preconditions: { uid },
          })
          .catch(() => {});
      }
      return;
    }
    const phase = pod.status?.phase;
    if (phase === "Succeeded" || phase === "Failed") {
      finishedUids.add(uid);
      return handlePod(pod);
    }
    const worker = new PodWorker(pod, deps);
    workers.set(uid, worker);
    void worker.run();
    void worker.finished.then(() => {
      finishedUids.add(uid);
      workers.delete(uid);
      schedulePending();
    });
  };
  const podGone = (pod: KObject) => {
    boundPods.delete(pod.metadata.uid);
    assumed.delete(pod.metadata.uid);
    workers.get(pod.metadata.uid)?.gone();
    finishedUids.delete(pod.metadata.uid);
    schedulePending();
  };
  void api.listWatch(
    "/api/v1/pods",
    { fieldSelector: `spec.nodeName=${node}` },
    (items) => {
      const seen = new Set(items.map((p) => p.metadata.uid));
      for (const [uid, p] of boundPods) if (!seen.has(uid)) podGone(p);
      for (const p of items) handlePod(p);
    },
    (e: WatchEvent) => (e.type === "DELETED" ? podGone(e.object) : handlePod(e.object)),
    abort.signal,
  );

  // --- the scheduler -------------------------------------------------------------------------------------------
  let scheduling = false;
  let again = false;
  const fits = (pod: KObject): string | undefined => {
    const sel: Record<string, string> = pod.spec.nodeSelector ?? {};
    for (const [k, v] of Object.entries(sel)) {
      if ((nodeLabels as Record<string, string>)[k] !== v) return "1 node(s) didn't match Pod's node affinity/selector";
    }
    for (const t of options.taints) {
      if (t.effect !== "NoSchedule" && t.effect !== "NoExecute") continue;
      const tolerated = (pod.spec.tolerations ?? []).some(
        (tol: KObject) =>
          (tol.key === undefined || tol.key === "" ? tol.operator === "Exists" : tol.key === t.key) &&
          (tol.operator === "Exists" || (tol.value ?? "") === (t.value ?? "")) &&
          (!tol.effect || tol.effect === t.effect),
      );
      if (!tolerated) return `1 node(s) had untolerated taint {${t.key}: ${t.value ?? ""}}`;
    }
    const used: Record<string, number> = { pods: 0 };
    const live = new Map<string, KObject>([...boundPods, ...assumed]);
    for (const p of live.values()) {
      if (p.status?.phase === "Succeeded" || p.status?.phase === "Failed") continue;
      used.pods = (used.pods ?? 0) + 1;
      for (const [k, v] of Object.entries(podRequests(p))) used[k] = (used[k] ?? 0) + v;
    }
    const want = { ...podRequests(pod), pods: 1 };
    const short = Object.entries(want)
      .filter(([k, v]) => v > 0 && (used[k] ?? 0) + v > parseQuantity(options.capacity[k] ?? "0"))
      .map(([k]) => k);
    return short.length ? `0/1 nodes are available: ${short.map((k) => `1 Insufficient ${k}`).join(", ")}.` : undefined;
  };
  const schedulePending = () => {
    if (!options.schedule) return;
    if (scheduling) {
      again = true;
      return;
    }
    scheduling = true;
    void (async () => {
      do {
        again = false;
        const queue = [...pending.values()].sort(
          (a, b) =>
            (b.spec.priority ?? 0) - (a.spec.priority ?? 0) ||
            String(a.metadata.creationTimestamp).localeCompare(b.metadata.creationTimestamp),
        );
        for (const pod of queue) {
          if (abort.signal.aborted) return;
          if (!pending.has(pod.metadata.uid)) continue;
          const why = fits(pod);
          const ns = pod.metadata.namespace;
          const name = pod.metadata.name;
          log.debug({ pod: `${ns}/${name}`, why: why ?? "fits" }, "scheduling");
          if (why) {
            const cond = (pod.status?.conditions ?? []).find((c: KObject) => c.type === "PodScheduled");
            if (cond?.message !== why) {
              await api
                .strategicPatch(`/api/v1/namespaces/${ns}/pods/${name}/status`, {
                  status: {
                    conditions: [
                      {
                        type: "PodScheduled",
                        status: "False",
                        reason: "Unschedulable",
                        message: why,
                        lastProbeTime: null,
                        lastTransitionTime: new Date().toISOString().replace(/\.\d{3}Z$/, "Z"),
                      },
                    ],
                  },
                })
                .catch(() => {});
            }
            continue;
          }
          assumed.set(pod.metadata.uid, pod);
          try {
            await api.post(`/api/v1/namespaces/${ns}/pods/${name}/binding`, {
              apiVersion: "v1",
              kind: "Binding",
              metadata: { name, namespace: ns, uid: pod.metadata.uid },
              target: { apiVersion: "v1", kind: "Node", name: node },
            });
            pending.delete(pod.metadata.uid);
          } catch (e) {
            assumed.delete(pod.metadata.uid);
            if (e instanceof ApiError && (e.status === 404 || e.status === 409)) pending.delete(pod.metadata.uid);
            else log.warn({ pod: `${ns}/${name}`, err: (e as Error).message }, "binding failed");
          }
        }
      } while (again && !abort.signal.aborted);
      scheduling = false;
    })();
  };
  const onPending = (pod: KObject) => {
    const uid = pod.metadata.uid;
    const scheduler = pod.spec.schedulerName ?? "default-scheduler";
    if (
      pod.spec.nodeName ||
      pod.metadata.deletionTimestamp ||
      scheduler !== "default-scheduler" ||
      (pod.spec.schedulingGates ?? []).length
    ) {
      pending.delete(uid);
      return;
    }
    pending.set(uid, pod);
  };
  if (options.schedule) {
    void api.listWatch(
      "/api/v1/pods",
      { fieldSelector: "spec.nodeName=,status.phase!=Succeeded,status.phase!=Failed" },
      (items) => {
        pending.clear();
        for (const p of items) onPending(p);
        schedulePending();
      },
      (e) => {
        if (e.type === "DELETED") pending.delete(e.object.metadata.uid);
        else onPending(e.object);
        schedulePending();
      },
      abort.signal,
    );
    timers.push(setInterval(schedulePending, 2_000));
  }

  // --- helpers for tests -----------------------------------------------------------------------------------------
  const podDirOf = (ns: string, pod: string): string | undefined => {
    const live = [...workers.values()].find((w) => w.ns === ns && w.name === pod);
    if (live) return live.dir;
    const prefix = `${ns}_${pod}_`;
    const dirs = existsSync(podsDir) ? readdirSync(podsDir).filter((d) => d.startsWith(prefix)) : [];
    return dirs
      .map((d) => join(podsDir, d))
      .sort((a, b) => statSync(a).mtimeMs - statSync(b).mtimeMs)
      .pop();
  };
  const logPath = (ns: string, pod: string, container: string, restart?: number) => {
    const dir = podDirOf(ns, pod);
    if (!dir) return undefined;
    const cdir = join(dir, "logs", container);
    if (restart !== undefined) return join(cdir, `${restart}.log`);
    if (!existsSync(cdir)) return undefined;
    const runs = readdirSync(cdir)
      .map((f) => Number.parseInt(f, 10))
      .filter((n) => !Number.isNaN(n))
      .sort((a, b) => a - b);
    return runs.length ? join(cdir, `${runs[runs.length - 1]}.log`) : undefined;
  };

  // --- the kubelet API's /containerLogs, for `kubectl logs` (the apiserver proxies to it) ---------------------
  async function serveLogs(): Promise<{ port: number; server: https.Server }> {
    const server = https.createServer(
      {
        cert: readFileSync(options.servingCert as string),
        key: readFileSync(options.servingKey as string),
        ca: readFileSync(options.caCert as string),
        requestCert: true,
        rejectUnauthorized: true,
      },
      (req, res) => {
        const url = new URL(req.url ?? "/", "https://kubelet");
        const m = /^\/containerLogs\/([^/]+)\/([^/]+)\/([^/]+)$/.exec(url.pathname);
        if (url.pathname === "/healthz") return void res.end("ok");
        if (!m) {
          res.writeHead(404).end("not found");
          return;
        }
        const [ns, pod, container] = [m[1], m[2], m[3]].map((x) => decodeURIComponent(x as string)) as [
          string,
          string,
          string,
        ];
        let path = logPath(ns, pod, container);
        if (path && url.searchParams.get("previous") === "true") {
          const n = Number.parseInt(path.slice(path.lastIndexOf("/") + 1), 10);
          path = n > 0 ? logPath(ns, pod, container, n - 1) : undefined;
        }
        if (!path || !existsSync(path)) {
          res
            .writeHead(404, { "content-type": "text/plain" })
            .end(`container "${container}" in pod "${pod}" has no logs`);
          return;
        }
        res.writeHead(200, { "content-type": "text/plain" });
        let text = readFileSync(path, "utf8");
        const tail = url.searchParams.get("tailLines");
        if (tail !== null) {
          const lines = text.split("\n");
          if (lines[lines.length - 1] === "") lines.pop();
          text = lines
            .slice(-Number(tail))
            .map((l) => `${l}\n`)
            .join("");
        }
        res.write(text);
        if (url.searchParams.get("follow") !== "true") return void res.end();
        let offset = statSync(path).size;
        const file = path;
        const timer = setInterval(() => {
          const size = existsSync(file) ? statSync(file).size : offset;
          if (size > offset) {
            res.write(readFileSync(file).subarray(offset, size));
            offset = size;
          }
          const w = [...workers.values()].find((x) => x.ns === ns && x.name === pod);
          if (!w || w.logPath(container) !== file) {
            clearInterval(timer);
            res.end();
          }
        }, 250);
        req.on("close", () => clearInterval(timer));
      },
    );
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
    const addr = server.address();
    return { port: typeof addr === "object" && addr ? addr.port : 0, server };
  }

  log.info({ node, dir: options.dir }, "process kubelet running");
  return {
    nodeName: node,
    options,
    logPath,
    readLog(ns, pod, container, opts) {
      let p = logPath(ns, pod, container);
      if (p && opts?.previous) {
        const n = Number.parseInt(p.slice(p.lastIndexOf("/") + 1), 10);
        p = n > 0 ? logPath(ns, pod, container, n - 1) : undefined;
      }
      return p && existsSync(p) ? readFileSync(p, "utf8") : "";
    },
    podNetns(ns, pod) {
      return [...workers.values()].find((w) => w.ns === ns && w.name === pod)?.sandbox?.netns;
    },
    pvcPath: (ns, claim) => join(pvcRoot, ns, claim),
    containerPid(ns, pod, container) {
      return [...workers.values()].find((w) => w.ns === ns && w.name === pod)?.pid(container);
    },
    exposeHostPort: (port) => network.exposeHostPort(port),
    async close() {
      abort.abort();
      for (const t of timers) clearInterval(t);
      const all = [...workers.values()];
      for (const w of all) void w.terminate(0);
      await Promise.all(all.map((w) => w.finished));
      await network.close();
      logServer?.server.close();
      logServer?.server.closeAllConnections();
      for (const top of createdMountPoints) removeEmptyTree(top);
    },
  };
}

/** Removes a directory tree made only of empty directories (mount points this kubelet created). */
function removeEmptyTree(dir: string): void {
  try {
    for (const e of readdirSync(dir)) {
      const p = join(dir, e);
      if (statSync(p).isDirectory()) removeEmptyTree(p);
    }
    rmdirSync(dir);
  } catch {}
}
