/**
 * A real node for the harness's control plane: the real kubelet with containerd + runc (Debian's) as its CRI,
 * the CNI bridge plugin, the real kube-scheduler and kube-proxy (iptables mode: Service IPs route, the
 * `kubernetes` Service to the API server on the node IP), and the project's own image built from
 * deploy/Dockerfile (scripts/setup.d/55-real-node.sh builds and caches all of it). Pods run as containers: their
 * own root filesystem, uid 65532 as the image says, cgroup limits, a network namespace on a bridge.
 *
 *   const cluster = await startCluster({ realNode: true });
 *   cluster.realNode.image           // localhost/rft:<content hash>, imagePullPolicy Never
 *   cluster.realNode.natsImage       // localhost/rft-nats:<content hash> (Debian's nats-server, uid 65532)
 *   cluster.realNode.nodeIp          // 172.31.255.1: the API server listens here; pods reach host servers here
 *
 * startCluster calls prepareRealNode (lock, host snapshot, the node IP's bridge) before the API server starts, so
 * that the API server can bind the node IP, then start() once the control plane is up.
 *
 * One real node per machine at a time (it owns machine-wide state: a lock in /run waits for another). Every
 * change it makes to the machine is recorded first and put back by close(), by an `exit`/signal handler when
 * the test process ends without closing, and at the next start after a killed run (./host-state.ts).
 */
import { type ChildProcess, execFile, execFileSync, spawn } from "node:child_process";
import {
  chownSync,
  closeSync,
  existsSync,
  linkSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { createServer } from "node:net";
import { homedir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { createLogger } from "../../proto/log.js";
import type { Api, KObject } from "./api.js";
import { REPO_ROOT } from "./binaries.js";
import { type ClusterDns, startClusterDns } from "./cluster-dns.js";
import { type HostSnapshot, type NodeFootprint, restoreHost, snapshotHost } from "./host-state.js";
import { kubeconfigFor, type Pki, signCertificate } from "./pki.js";

const log = createLogger("k8s-real-node");
const exec = promisify(execFile);

export const NODE_IP = "172.31.255.1";
/** The `kubernetes` Service's ClusterIP: the first address of the API server's --service-cluster-ip-range. */
export const SERVICE_CIDR = "198.18.128.0/20";
export const KUBERNETES_SERVICE_IP = "198.18.128.1";
/** Pod addresses (the CNI bridge's range); FORWARD drops keep their traffic on this machine. */
export const POD_CIDR = "10.244.0.0/24";
const NODE_BRIDGE = "rft-node0";
const CNI_BRIDGE = "rft-cni0";
/** The uid:gid the project image runs as (deploy/Dockerfile USER): claim folders are made theirs. */
export const IMAGE_UID = 65532;
const STATE_DIR = "/run/rft-real-node";
const LOCK = join(STATE_DIR, "lock");
const SAVED = join(STATE_DIR, "host.json");

export interface RealNodeArtifacts {
  kubelet: string;
  kubeScheduler: string;
  kubeProxy: string;
  pauseImage: string;
  pauseArchive: string;
  rftImage: string;
  rftArchive: string;
  natsImage: string;
  natsArchive: string;
}

export interface RealNodeOptions {
  nodeName: string;
  /** How long to wait for another real node on this machine to stop. */
  lockTimeoutMs: number;
}

/** What startCluster hands the node. */
export interface ControlPlane {
  dir: string;
  server: string;
  pki: Pki;
  api: Api;
}

export interface RealNode {
  nodeName: string;
  nodeIp: string;
  /** The project image (deploy/Dockerfile), present in containerd: use with imagePullPolicy Never. */
  image: string;
  /** The NATS image (Debian's nats-server on the base image, uid 65532), present in containerd. */
  natsImage: string;
  /** Host folder of a PersistentVolumeClaim's volume (a hostPath PV made for it, owned by IMAGE_UID). */
  pvcPath(namespace: string, claim: string): string;
  /** A container's log as the kubelet wrote it (the newest pod of that name; `previous`: the run before). */
  readLog(namespace: string, pod: string, container: string, opts?: { previous?: boolean }): string;
  /** Host pid of a running container's first process (for the image: tini; SIGKILL it to crash the container). */
  containerPid(namespace: string, pod: string, container: string): Promise<number | undefined>;
  /** Seconds each start phase took (images, daemons, node Ready), for the README's figures. */
  timings: Record<string, number>;
  close(): Promise<void>;
}

/**
 * Runs scripts/setup.d/55-real-node.sh (builds only what its cache lacks) and reads the paths it prints; or, with
 * RFT_REAL_NODE_ARTIFACTS=FILE, reads that line from FILE (what an earlier run printed) and builds nothing: for
 * a machine whose images are made already, e.g. when several checkouts share it and would otherwise queue on
 * the step's lock and rebuild each other's image.
 */
export function ensureRealNodeArtifacts(): RealNodeArtifacts {
  const given = process.env.RFT_REAL_NODE_ARTIFACTS;
  if (given) {
    const a = JSON.parse(readFileSync(given, "utf8").trim().split("\n").at(-1) ?? "") as RealNodeArtifacts;
    const missing = Object.entries(a).filter(([k, v]) => !/Image$/.test(k) && !existsSync(v));
    if (missing.length)
      throw new Error(`RFT_REAL_NODE_ARTIFACTS=${given} names missing files: ${missing.map(([, v]) => v).join(", ")}`);
    return a;
  }
  const script = join(REPO_ROOT, "scripts/setup.d/55-real-node.sh");
  let out: string;
  try {
    out = execFileSync("bash", [script], {
      cwd: REPO_ROOT,
      encoding: "utf8",
      stdio: ["ignore", "pipe", "inherit"],
      maxBuffer: 16 << 20,
    });
  } catch (e) {
    throw new Error(`scripts/setup.d/55-real-node.sh failed (its output is above): ${(e as Error).message}`, {
      cause: e,
    });
  }
  const line = out.trim().split("\n").at(-1) ?? "";
  return JSON.parse(line) as RealNodeArtifacts;
}

// --- machine lock and host state ------------------------------------------------------------------------------

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Takes the machine's real-node lock; a lock left by a dead process is taken over after putting the host back. */
async function takeLock(timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    // (Made each time: the holder removes the folder with its lock.)
    mkdirSync(STATE_DIR, { recursive: true });
    // The lock appears with its pid in it (a hard link of a written file), never empty: a reader of an empty
    // lock would take a live holder for a dead one and put the host back under it.
    const mine = `${LOCK}.${process.pid}`;
    writeFileSync(mine, String(process.pid));
    try {
      linkSync(mine, LOCK);
      return;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
    } finally {
      rmSync(mine, { force: true });
    }
    let holder: number;
    try {
      holder = Number(readFileSync(LOCK, "utf8").trim());
    } catch {
      continue;
    }
    if (!holder || !alive(holder)) {
      recoverKilledRun();
      rmSync(LOCK, { force: true });
      continue;
    }
    if (Date.now() > deadline) throw new Error(`another real node (pid ${holder}) holds ${LOCK}`);
    await new Promise((r) => setTimeout(r, 1000));
  }
}

interface Saved {
  before: HostSnapshot;
  footprint: NodeFootprint;
}

/** A run that was killed left its saved state: put the machine back as that run found it. */
function recoverKilledRun(): void {
  if (!existsSync(SAVED)) return;
  const saved = JSON.parse(readFileSync(SAVED, "utf8")) as Saved;
  const done = restoreHost(saved.before, saved.footprint);
  log.warn({ done }, "restored the host state a killed real node left");
  rmSync(SAVED, { force: true });
}

// --- containerd ----------------------------------------------------------------------------------------------

function containerdConfig(root: string, state: string, sock: string, cniConf: string, pause: string): string {
  const cri = 'plugins."io.containerd.grpc.v1.cri"';
  return `version = 2
root = "${root}"
state = "${state}"
[grpc]
  address = "${sock}"
[ttrpc]
  address = "${sock}.ttrpc"
[debug]
  address = "${state}/debug.sock"
[metrics]
  address = ""
[${cri}]
  sandbox_image = "${pause}"
  enable_cdi = false
  # This machine's processes lack CAP_SYS_RESOURCE, so nothing may lower oom_score_adj below 0; the kubelet asks
  # -998/-997 and runc would die with "failed to update /proc/self/oom_score_adj". Clamp to containerd's own.
  restrict_oom_score_adj = true
  [${cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [${cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [${cri}.containerd.runtimes.runc.options]
        SystemdCgroup = false
  [${cri}.cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "${cniConf}"
  [${cri}.registry]
    config_path = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "${state}/opt"
`;
}

function cniConfig(ipamDir: string): string {
  return JSON.stringify({
    cniVersion: "1.0.0",
    name: "rft-pods",
    plugins: [
      {
        type: "bridge",
        bridge: CNI_BRIDGE,
        isGateway: true,
        ipMasq: false,
        hairpinMode: true,
        ipam: {
          type: "host-local",
          ranges: [[{ subnet: POD_CIDR }]],
          routes: [{ dst: "0.0.0.0/0" }],
          dataDir: ipamDir,
        },
      },
      { type: "loopback" },
    ],
  });
}

class Daemon {
  exited = false;
  constructor(
    readonly name: string,
    readonly proc: ChildProcess,
    readonly logFile: string,
  ) {
    proc.on("exit", () => (this.exited = true));
  }
  async stop(timeoutMs = 15_000): Promise<void> {
    if (this.exited) return;
    const done = new Promise<void>((r) => this.proc.once("exit", () => r()));
    this.proc.kill("SIGTERM");
    const t = setTimeout(() => this.proc.kill("SIGKILL"), timeoutMs);
    await done;
    clearTimeout(t);
  }
}

function daemon(name: string, bin: string, args: string[], logDir: string): Daemon {
  const logFile = join(logDir, `${name}.log`);
  const fd = openSync(logFile, "a");
  const proc = spawn("setpriv", ["--pdeathsig", "SIGKILL", "--", bin, ...args], {
    stdio: ["ignore", fd, fd],
    detached: true,
  });
  closeSync(fd);
  return new Daemon(name, proc, logFile);
}

function tail(file: string, lines = 15): string {
  try {
    return readFileSync(file, "utf8").trimEnd().split("\n").slice(-lines).join("\n");
  } catch {
    return `(no log at ${file})`;
  }
}

async function until<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs: number, d?: Daemon): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last = "";
  for (;;) {
    if (d?.exited) throw new Error(`${d.name} exited while waiting for ${what}:\n${tail(d.logFile)}`);
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch (e) {
      last = String(e);
    }
    if (Date.now() > deadline)
      throw new Error(`timed out waiting for ${what} ${last}${d ? `\n${tail(d.logFile)}` : ""}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

// --- the node ----------------------------------------------------------------------------------------------------

function kubeletConfig(dir: string, pki: Pki, sock: string, logsDir: string): string {
  return JSON.stringify({
    apiVersion: "kubelet.config.k8s.io/v1beta1",
    kind: "KubeletConfiguration",
    address: NODE_IP,
    port: 10250,
    readOnlyPort: 0,
    healthzBindAddress: "127.0.0.1",
    healthzPort: 0,
    authentication: { anonymous: { enabled: false }, webhook: { enabled: true }, x509: { clientCAFile: pki.caCert } },
    authorization: { mode: "Webhook" },
    tlsCertFile: join(dir, "pki", "serving.crt"),
    tlsPrivateKeyFile: join(dir, "pki", "serving.key"),
    containerRuntimeEndpoint: `unix://${sock}`,
    // No systemd here, and this machine's cgroups are v1 (kubelet 1.37 runs on v1 only when told to).
    cgroupDriver: "cgroupfs",
    failCgroupV1: false,
    failSwapOn: false,
    clusterDomain: "cluster.local",
    clusterDNS: [NODE_IP],
    resolvConf: "/etc/resolv.conf",
    podLogsDir: logsDir,
    // Local images cannot be pulled again: never collect them.
    imageGCHighThresholdPercent: 100,
    imageGCLowThresholdPercent: 99,
    evictionHard: { "memory.available": "100Mi", "nodefs.available": "2%", "imagefs.available": "2%" },
    serializeImagePulls: false,
    maxPods: 32,
    volumePluginDir: join(dir, "volume-plugins"),
  });
}

function nodeCertificates(dir: string, pki: Pki, nodeName: string): void {
  const pkiDir = join(dir, "pki");
  mkdirSync(pkiDir, { recursive: true });
  // The harness CA signs in its own folder; the node's pairs are then moved next to the kubelet.
  const subject = `/O=system:nodes/CN=system:node:${nodeName}`;
  const usage = "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n";
  signCertificate(pki.dir, `${nodeName}-client`, subject, `${usage}extendedKeyUsage=clientAuth\n`);
  signCertificate(
    pki.dir,
    `${nodeName}-serving`,
    subject,
    `${usage}extendedKeyUsage=serverAuth\nsubjectAltName=IP:${NODE_IP},DNS:${nodeName}\n`,
  );
  for (const [from, to] of [
    [`${nodeName}-client`, "client"],
    [`${nodeName}-serving`, "serving"],
  ] as const)
    for (const ext of ["crt", "key"])
      writeFileSync(join(pkiDir, `${to}.${ext}`), readFileSync(join(pki.dir, `${from}.${ext}`)), { mode: 0o600 });
}

/** A client-certificate kubeconfig for one of the node's components (the CN names its RBAC user). */
function componentKubeconfig(cp: ControlPlane, dir: string, name: string, subject: string): string {
  signCertificate(
    cp.pki.dir,
    name,
    subject,
    "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n",
  );
  const path = join(dir, `${name}.kubeconfig`);
  const pair = { cert: join(cp.pki.dir, `${name}.crt`), key: join(cp.pki.dir, `${name}.key`) };
  writeFileSync(path, kubeconfigFor(cp.server, cp.pki.caCert, pair, name), { mode: 0o600 });
  return path;
}

/**
 * kube-proxy in iptables mode. Everything it would change on the machine beyond its own chains is turned off:
 * conntrack sizes and timeouts left as they are (0 = do not set), NodePorts only on the node IP (so no
 * route_localnet), its own oom_score_adj left alone; health and metrics on loopback.
 */
export function kubeProxyConfig(
  kubeconfig: string,
  nodeName: string,
  healthzPort: number,
  metricsPort: number,
): string {
  return JSON.stringify({
    apiVersion: "kubeproxy.config.k8s.io/v1alpha1",
    kind: "KubeProxyConfiguration",
    clientConnection: { kubeconfig },
    hostnameOverride: nodeName,
    bindAddress: NODE_IP,
    healthzBindAddress: `127.0.0.1:${healthzPort}`,
    metricsBindAddress: `127.0.0.1:${metricsPort}`,
    mode: "iptables",
    clusterCIDR: POD_CIDR,
    detectLocalMode: "ClusterCIDR",
    nodePortAddresses: [`${NODE_IP}/32`],
    oomScoreAdj: 0,
    conntrack: {
      maxPerCore: 0,
      min: 0,
      tcpEstablishedTimeout: "0s",
      tcpCloseWaitTimeout: "0s",
      tcpBeLiberal: false,
      udpTimeout: "0s",
      udpStreamTimeout: "0s",
    },
    iptables: { masqueradeAll: false, localhostNodePorts: false, syncPeriod: "30s", minSyncPeriod: "1s" },
    configSyncPeriod: "15m",
  });
}

async function freeLoopbackPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.unref();
    s.on("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const addr = s.address();
      s.close(() => (typeof addr === "object" && addr ? resolve(addr.port) : reject(new Error("no port"))));
    });
  });
}

function addNodeNetwork(footprint: NodeFootprint): void {
  const run = (args: string[]) => execFileSync("ip", args, { stdio: ["ignore", "ignore", "pipe"] });
  // A port-less bridge holds the node IP: the kubelet refuses loopback, and eth0's address would expose it.
  if (!existsSync(`/sys/class/net/${NODE_BRIDGE}`)) {
    run(["link", "add", NODE_BRIDGE, "type", "bridge"]);
    run(["addr", "add", `${NODE_IP}/32`, "dev", NODE_BRIDGE]);
    run(["link", "set", NODE_BRIDGE, "up"]);
  }
  // The bridge plugin turns on ip_forward: nothing from or to the pod range crosses this machine's edge.
  for (const rule of footprint.forwardRules)
    execFileSync("iptables", ["-w", "-I", "FORWARD", ...rule], { stdio: ["ignore", "ignore", "pipe"] });
}

async function ctr(sock: string, args: string[]): Promise<string> {
  const { stdout } = await exec("ctr", ["--address", sock, "-n", "k8s.io", ...args], { maxBuffer: 16 << 20 });
  return stdout;
}

/** Imports the images the cache holds unless containerd has them; drops older project images. */
async function ensureImages(sock: string, a: RealNodeArtifacts): Promise<void> {
  const have = new Set((await ctr(sock, ["images", "ls", "-q"])).split("\n").filter(Boolean));
  for (const [name, archive] of [
    [a.pauseImage, a.pauseArchive],
    [a.rftImage, a.rftArchive],
    [a.natsImage, a.natsArchive],
  ] as const) {
    if (have.has(name)) continue;
    log.info({ name, archive }, "importing an image into containerd (once per content hash)");
    await ctr(sock, ["images", "import", archive]);
    const now = (await ctr(sock, ["images", "ls", "-q"])).split("\n");
    if (!now.includes(name)) throw new Error(`${archive} did not import as ${name}: containerd has ${now.join(" ")}`);
  }
  for (const old of have)
    if (
      (old.startsWith("localhost/rft:") && old !== a.rftImage) ||
      (old.startsWith("localhost/rft-nats:") && old !== a.natsImage)
    )
      await ctr(sock, ["images", "rm", old]).catch(() => "");
}

/** Removes every container and sandbox containerd remembers (a killed run's), so each run starts empty. */
async function clearContainers(sock: string): Promise<void> {
  for (const t of (await ctr(sock, ["tasks", "ls", "-q"])).split("\n").filter(Boolean)) {
    await ctr(sock, ["tasks", "kill", "-s", "SIGKILL", t]).catch(() => "");
    await ctr(sock, ["tasks", "rm", "-f", t]).catch(() => "");
  }
  const ids = (await ctr(sock, ["containers", "ls", "-q"])).split("\n").filter(Boolean);
  if (ids.length) await ctr(sock, ["containers", "rm", ...ids]).catch(() => "");
}

/**
 * Static provisioning for claims: each Pending claim without a volume gets a hostPath PV in `root/ns/claim`,
 * pre-bound to it (the PV binder controller then binds both).
 */
async function provisionClaims(api: Api, root: string): Promise<void> {
  const claims = await api.get<KObject>("/api/v1/persistentvolumeclaims");
  for (const c of claims.items as KObject[]) {
    if (c.spec.volumeName || c.status?.phase !== "Pending") continue;
    const dir = join(root, c.metadata.namespace, c.metadata.name);
    mkdirSync(dir, { recursive: true });
    chownSync(dir, IMAGE_UID, IMAGE_UID);
    const pv = {
      apiVersion: "v1",
      kind: "PersistentVolume",
      metadata: { name: `pvc-${c.metadata.uid}` },
      spec: {
        capacity: { storage: c.spec.resources?.requests?.storage ?? "1Gi" },
        accessModes: c.spec.accessModes ?? ["ReadWriteOnce"],
        persistentVolumeReclaimPolicy: "Retain",
        storageClassName: c.spec.storageClassName ?? "",
        hostPath: { path: dir, type: "Directory" },
        claimRef: { namespace: c.metadata.namespace, name: c.metadata.name, uid: c.metadata.uid },
      },
    };
    await api.post("/api/v1/persistentvolumes", pv).catch((e) => {
      if (!/already exists/.test(String(e))) throw e;
    });
  }
}

/** A CRI log file's lines ("<time> <stream> <P|F> <text>") back to the container's output. */
export function criLogText(text: string): string {
  let out = "";
  for (const line of text.split("\n")) {
    const m = /^\S+ (?:stdout|stderr) ([PF]) ?(.*)$/.exec(line);
    if (m) out += m[1] === "P" ? m[2] : `${m[2]}\n`;
  }
  return out;
}

function readContainerLog(logsDir: string, ns: string, pod: string, container: string, previous: boolean): string {
  const podDirs = existsSync(logsDir) ? readdirSync(logsDir).filter((d) => d.startsWith(`${ns}_${pod}_`)) : [];
  for (const d of podDirs.reverse()) {
    const cdir = join(logsDir, d, container);
    if (!existsSync(cdir)) continue;
    const runs = readdirSync(cdir)
      .map((f) => Number.parseInt(f, 10))
      .filter((n) => Number.isFinite(n))
      .sort((a, b) => a - b);
    const pick = previous ? runs.at(-2) : runs.at(-1);
    if (pick === undefined) return "";
    return criLogText(readFileSync(join(cdir, `${pick}.log`), "utf8"));
  }
  return "";
}

/** A real node whose machine state is taken (lock, snapshot, the node IP's bridge) but whose daemons are not up. */
export interface PreparedRealNode {
  nodeIp: string;
  /** Starts containerd, the kubelet, kube-scheduler and kube-proxy against the control plane. */
  start(cp: ControlPlane): Promise<RealNode>;
  /** Puts the machine back (also after start: the same as RealNode.close). */
  close(): Promise<void>;
}

/**
 * Builds what is missing, takes the machine's lock, records the host and adds the node IP, so that the API
 * server can bind that address before the node's daemons start.
 */
export async function prepareRealNode(
  clusterDir: string,
  options: Partial<RealNodeOptions> = {},
): Promise<PreparedRealNode> {
  const o: RealNodeOptions = { nodeName: "rft-real-node-0", lockTimeoutMs: 30 * 60_000, ...options };
  if (process.getuid?.() !== 0) throw new Error("the real node needs root (containerd, cgroups, network)");
  const t0 = Date.now();
  const timings: Record<string, number> = {};
  const mark = (k: string, since: number) => (timings[k] = Math.round((Date.now() - since) / 100) / 10);
  const artifacts = ensureRealNodeArtifacts();
  mark("artifacts", t0);
  await takeLock(o.lockTimeoutMs);

  const dir = join(clusterDir, "node");
  const logs = join(clusterDir, "logs");
  const state = join(dir, "containerd");
  const sock = join(state, "containerd.sock");
  const cniConf = join(dir, "cni");
  const podLogs = join(dir, "pod-logs");
  const pvcRoot = join(dir, "pvc");
  for (const d of [dir, logs, state, cniConf, podLogs, pvcRoot]) mkdirSync(d, { recursive: true });
  const footprint: NodeFootprint = {
    bridges: [CNI_BRIDGE, NODE_BRIDGE],
    forwardRules: [
      ["-s", POD_CIDR, "!", "-d", POD_CIDR, "-j", "DROP"],
      ["-d", POD_CIDR, "!", "-s", POD_CIDR, "-j", "DROP"],
    ],
    mountRoots: [dir],
  };
  const before = snapshotHost();
  writeFileSync(SAVED, JSON.stringify({ before, footprint } satisfies Saved));
  const daemons: Daemon[] = [];
  let closed = false;
  let provisioner: NodeJS.Timeout | undefined;
  let dns: ClusterDns | undefined;
  let api: Api | undefined;

  const restoreNow = () => {
    for (const d of [...daemons].reverse()) if (!d.exited) d.proc.kill("SIGKILL");
    const done = restoreHost(before, footprint);
    rmSync(SAVED, { force: true });
    rmSync(LOCK, { force: true });
    rmSync(STATE_DIR, { recursive: true, force: true });
    return done;
  };
  const onExit = () => {
    if (!closed) restoreNow();
  };
  // A signal nobody else handles would end the process without `exit`: restore, then die of it. (A program
  // with its own handler, such as up.ts, calls close() from it.)
  const onSignal = (sig: NodeJS.Signals) => {
    if (process.listenerCount(sig) > 0) return;
    onExit();
    process.kill(process.pid, sig);
  };
  process.once("exit", onExit);
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);

  const close = async () => {
    if (closed) return;
    clearInterval(provisioner);
    await dns?.close();
    const kubelet = daemons.find((d) => d.name === "kubelet");
    // Pods off the node while the kubelet runs (it stops their sandboxes: CNI teardown), then everything else.
    if (api && kubelet && !kubelet.exited)
      await drainPods(api, o.nodeName).catch((e) => log.warn({ err: String(e) }, "drain"));
    for (const d of [...daemons].reverse().filter((d) => d.name !== "containerd")) await d.stop();
    if (existsSync(sock)) await clearContainers(sock).catch(() => {});
    await daemons.find((d) => d.name === "containerd")?.stop();
    closed = true;
    const done = restoreNow();
    process.off("exit", onExit);
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    log.info({ restored: done }, "real node stopped; host state restored");
  };

  try {
    addNodeNetwork(footprint);
  } catch (e) {
    await close().catch(() => {});
    throw e;
  }

  const start = async (cp: ControlPlane): Promise<RealNode> => {
    api = cp.api;
    try {
      writeFileSync(join(cniConf, "10-rft.conflist"), cniConfig(join(dir, "ipam")));
      const root = join(process.env.RFT_REAL_NODE_CACHE ?? join(homedir(), ".cache/rft-real-node"), "containerd");
      writeFileSync(join(dir, "containerd.toml"), containerdConfig(root, state, sock, cniConf, artifacts.pauseImage));
      let t = Date.now();
      const containerd = daemon("containerd", "containerd", ["--config", join(dir, "containerd.toml")], logs);
      daemons.push(containerd);
      await until("containerd", async () => (await ctr(sock, ["version"])) || undefined, 30_000, containerd);
      await clearContainers(sock);
      mark("containerd", t);
      t = Date.now();
      await ensureImages(sock, artifacts);
      mark("images", t);

      t = Date.now();
      dns = await startClusterDns(cp.api, NODE_IP);
      nodeCertificates(dir, cp.pki, o.nodeName);
      writeFileSync(
        join(dir, "kubelet.kubeconfig"),
        kubeconfigFor(
          cp.server,
          cp.pki.caCert,
          { cert: join(dir, "pki/client.crt"), key: join(dir, "pki/client.key") },
          "node",
        ),
        { mode: 0o600 },
      );
      writeFileSync(join(dir, "kubelet.json"), kubeletConfig(dir, cp.pki, sock, podLogs));
      const schedConfig = componentKubeconfig(cp, dir, "kube-scheduler", "/CN=system:kube-scheduler");
      daemons.push(
        daemon(
          "kube-scheduler",
          artifacts.kubeScheduler,
          [
            `--kubeconfig=${schedConfig}`,
            `--authentication-kubeconfig=${schedConfig}`,
            `--authorization-kubeconfig=${schedConfig}`,
            "--bind-address=127.0.0.1",
            "--secure-port=0",
            "--leader-elect=false",
            "--v=1",
          ],
          logs,
        ),
      );
      const kubelet = daemon(
        "kubelet",
        artifacts.kubelet,
        [
          `--config=${join(dir, "kubelet.json")}`,
          `--kubeconfig=${join(dir, "kubelet.kubeconfig")}`,
          `--root-dir=${join(dir, "kubelet")}`,
          `--cert-dir=${join(dir, "pki")}`,
          `--hostname-override=${o.nodeName}`,
          `--node-ip=${NODE_IP}`,
          "--v=1",
        ],
        logs,
      );
      daemons.push(kubelet);
      // kube-proxy (system:kube-proxy has the bootstrap role system:node-proxier), ready once it has written the
      // Service rules: its healthz answers 200 after the first sync.
      const proxyConfig = componentKubeconfig(cp, dir, "kube-proxy", "/CN=system:kube-proxy");
      const healthz = await freeLoopbackPort();
      writeFileSync(
        join(dir, "kube-proxy.json"),
        kubeProxyConfig(proxyConfig, o.nodeName, healthz, await freeLoopbackPort()),
      );
      const proxy = daemon(
        "kube-proxy",
        artifacts.kubeProxy,
        [`--config=${join(dir, "kube-proxy.json")}`, "--v=1"],
        logs,
      );
      daemons.push(proxy);
      await until(
        `node ${o.nodeName} Ready and untainted`,
        async () => {
          const n = await cp.api.getOptional<KObject>(`/api/v1/nodes/${o.nodeName}`);
          const ready = (n?.status?.conditions ?? []).some((c: KObject) => c.type === "Ready" && c.status === "True");
          return ready && !(n?.spec?.taints ?? []).length ? true : undefined;
        },
        120_000,
        kubelet,
      );
      mark("node Ready", t);
      await until(
        "kube-proxy's first sync (healthz)",
        async () => ((await fetch(`http://127.0.0.1:${healthz}/healthz`)).ok ? true : undefined),
        60_000,
        proxy,
      );
      mark("kube-proxy synced", t);
      provisioner = setInterval(() => {
        provisionClaims(cp.api, pvcRoot).catch((e) => log.warn({ err: String(e) }, "claim provisioning"));
      }, 500);
      mark("total", t0);
      log.info({ node: o.nodeName, timings }, "real node ready");
    } catch (e) {
      await close().catch(() => {});
      throw e;
    }

    return {
      nodeName: o.nodeName,
      nodeIp: NODE_IP,
      image: artifacts.rftImage,
      natsImage: artifacts.natsImage,
      timings,
      pvcPath: (ns, claim) => join(pvcRoot, ns, claim),
      readLog: (ns, pod, container, opts) => readContainerLog(podLogs, ns, pod, container, opts?.previous === true),
      async containerPid(ns, pod, container) {
        const p = await cp.api.getOptional<KObject>(`/api/v1/namespaces/${ns}/pods/${pod}`);
        const st = (p?.status?.containerStatuses ?? []).find((c: KObject) => c.name === container);
        const id = st?.state?.running ? String(st.containerID ?? "").replace(/^containerd:\/\//, "") : "";
        if (!id) return undefined;
        const row = (await ctr(sock, ["tasks", "ls"])).split("\n").find((l) => l.startsWith(`${id} `));
        const pid = Number(row?.split(/\s+/)[1]);
        return pid > 0 ? pid : undefined;
      },
      close,
    };
  };
  return { nodeIp: NODE_IP, start, close };
}

/**
 * Cordons the node (so a Job's replacement pods stay unbound), deletes its pods (grace 1 s) and waits until the
 * kubelet has stopped them all.
 */
async function drainPods(api: Api, nodeName: string): Promise<void> {
  await api.mergePatch(`/api/v1/nodes/${nodeName}`, { spec: { unschedulable: true } });
  const onNode = async () =>
    ((await api.get<KObject>(`/api/v1/pods?fieldSelector=spec.nodeName%3D${nodeName}`)).items as KObject[]) ?? [];
  for (const p of await onNode())
    await api
      .delete(`/api/v1/namespaces/${p.metadata.namespace}/pods/${p.metadata.name}`, { gracePeriodSeconds: 1 })
      .catch(() => {});
  await until("pods stopped", async () => ((await onNode()).length === 0 ? true : undefined), 60_000);
}
