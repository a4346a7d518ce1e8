/**
 * A real Kubernetes control plane on loopback for tests and by hand (`npm run cluster:up`): etcd,
 * kube-apiserver (TLS, client-certificate auth, Node+RBAC authorization, the default admission plugins) and
 * kube-controller-manager (Job, garbage collector, namespace, service accounts, …; no leader election), all on
 * random 127.0.0.1 ports with their data in one temporary folder, plus the process kubelet (./kubelet.ts)
 * unless `kubelet: false`.
 *
 *   const cluster = await startCluster();
 *   await cluster.apply(manifestYaml);                       // kubectl apply -f -
 *   const job = await cluster.getJson("job", "-n", "x", "train");
 *   await cluster.close();
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createLogger } from "../../proto/log.js";
import { Api, type KObject } from "./api.js";
import { type Binaries, ensureBinaries } from "./binaries.js";
import { type Kubelet, type KubeletOptions, startKubelet } from "./kubelet.js";
import { createPki, kubeconfigFor, type Pki } from "./pki.js";
import {
  KUBERNETES_SERVICE_IP,
  NODE_IP,
  type PreparedRealNode,
  prepareRealNode,
  type RealNode,
  type RealNodeOptions,
  SERVICE_CIDR,
} from "./real-node.js";

const log = createLogger("k8s-harness");

export interface ClusterOptions {
  /** Folder for data, certificates, kubeconfigs and logs; a fresh temporary one (removed on close) if absent. */
  dir?: string;
  /** Options for the process kubelet, or false to run none. */
  kubelet?: Partial<KubeletOptions> | false;
  /**
   * Run a real node (./real-node.ts: kubelet + containerd + kube-scheduler, the project's image) instead of the
   * process kubelet; adds the node-lifecycle and PV-binder controllers it needs.
   */
  realNode?: Partial<RealNodeOptions> | boolean;
  /** kube-controller-manager --controllers (the default list suits Jobs). */
  controllers?: string[];
  /** Extra kube-apiserver flags, e.g. ["--feature-gates=Foo=true"]. */
  apiserverArgs?: string[];
  /** Keep `dir` after close (logs for a failed test). Default: keep only when `dir` was given. */
  keep?: boolean;
}

export interface Cluster {
  dir: string;
  /** Path of an admin kubeconfig (system:masters). */
  kubeconfig: string;
  /** https://127.0.0.1:PORT (with a real node: https://<node IP>:PORT, where pods reach it too) */
  server: string;
  /** etcd's client URL (plain HTTP on loopback; its JSON gateway answers /v3/kv/*, e.g. a compaction). */
  etcdUrl: string;
  /** PEM texts for clients that do not read kubeconfigs. */
  credentials: { server: string; ca: string; cert: string; key: string };
  binaries: Binaries;
  /** The harness's own REST client with admin credentials. */
  api: Api;
  /** The process kubelet, unless started with `kubelet: false` or `realNode`. */
  kubelet?: Kubelet;
  /** The real node, when started with `realNode`. */
  realNode?: RealNode;
  /** Runs kubectl against the cluster; resolves stdout, rejects with stderr on a non-zero exit. */
  kubectl(...args: string[]): Promise<string>;
  /** kubectl with `input` on stdin, e.g. kubectlInput(yaml, "apply", "-f", "-"). */
  kubectlInput(input: string, ...args: string[]): Promise<string>;
  /** kubectl apply -f - of YAML text or objects; extra args e.g. "--server-side". */
  apply(manifests: string | KObject | KObject[], ...args: string[]): Promise<string>;
  /** kubectl get ARGS -o json, parsed. */
  getJson(...args: string[]): Promise<KObject>;
  /** Stops the kubelet (killing pod processes), the controller manager, the apiserver and etcd. */
  close(): Promise<void>;
}

export const DEFAULT_CONTROLLERS = [
  "job-controller",
  "cronjob-controller",
  "ttl-after-finished-controller",
  "garbage-collector-controller",
  "namespace-controller",
  "serviceaccount-controller",
  "serviceaccount-token-controller",
  "root-ca-certificate-publisher-controller",
  "pod-garbage-collector-controller",
  "replicaset-controller",
  "deployment-controller",
  "statefulset-controller",
  "endpointslice-controller",
  "disruption-controller",
  "resourcequota-controller",
  "persistentvolumeclaim-protection-controller",
];

export async function freePort(host = "127.0.0.1"): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.unref();
    s.on("error", reject);
    s.listen(0, host, () => {
      const addr = s.address();
      s.close(() => (typeof addr === "object" && addr ? resolve(addr.port) : reject(new Error("no port"))));
    });
  });
}

export function waitFor<T>(
  what: string,
  fn: () => Promise<T | undefined | false> | T | undefined | false,
  timeoutMs = 60_000,
  intervalMs = 200,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  return (async () => {
    for (;;) {
      try {
        const v = await fn();
        if (v !== undefined && v !== false) return v as T;
      } catch (e) {
        if (e instanceof FatalError) throw e;
        last = e;
      }
      if (Date.now() > deadline) {
        throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ""}`);
      }
      await new Promise((r) => setTimeout(r, intervalMs));
    }
  })();
}

/** Thrown inside a waitFor callback to stop waiting at once. */
export class FatalError extends Error {}

/** A host process the harness started (own process group, SIGKILL when the harness dies), stopped in order. */
export class Component {
  exited = false;
  constructor(
    readonly name: string,
    readonly proc: ChildProcess,
    readonly logFile: string,
  ) {
    proc.on("exit", (code, signal) => {
      this.exited = true;
      if (!stopping.has(proc)) log.error({ component: name, code, signal, logFile }, "control-plane process exited");
    });
  }
  async stop(timeoutMs = 10_000): Promise<void> {
    if (this.exited || this.proc.pid === undefined) return;
    stopping.add(this.proc);
    const done = new Promise<void>((r) => this.proc.once("exit", () => r()));
    this.proc.kill("SIGTERM");
    const t = setTimeout(() => this.proc.kill("SIGKILL"), timeoutMs);
    await done;
    clearTimeout(t);
  }
}

const stopping = new WeakSet<ChildProcess>();
const live = new Set<ChildProcess>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on("exit", () => {
    for (const p of live) {
      try {
        p.kill("SIGKILL");
      } catch {}
    }
  });
}

export function tail(file: string, lines = 5): string {
  try {
    return readFileSync(file, "utf8").trimEnd().split("\n").slice(-lines).join("\n");
  } catch {
    return `(no log at ${file})`;
  }
}

export function launch(name: string, bin: string, args: string[], logDir: string): Component {
  const logFile = join(logDir, `${name}.log`);
  const fd = openSync(logFile, "a");
  // Own process group (a Ctrl-C on `cluster:up` reaches only us, and we stop them in order), and
  // SIGKILL when this process dies, however it dies.
  const proc = spawn("setpriv", ["--pdeathsig", "SIGKILL", "--", bin, ...args], {
    stdio: ["ignore", fd, fd],
    detached: true,
  });
  live.add(proc);
  proc.on("exit", () => live.delete(proc));
  installExitHook();
  return new Component(name, proc, logFile);
}

function run(bin: string, args: string[], env: NodeJS.ProcessEnv, input?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(bin, args, { env, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`kubectl ${args.join(" ")}: ${stderr.trim() || err.message}`));
      else resolve(stdout);
    });
    if (input !== undefined) child.stdin?.end(input);
  });
}

export async function startCluster(options: ClusterOptions = {}): Promise<Cluster> {
  const bins = ensureBinaries();
  const dir = options.dir ?? mkdtempSync(join(tmpdir(), "rft-k8s-"));
  const keep = options.keep ?? options.dir !== undefined;
  const logs = join(dir, "logs");
  const pkiDir = join(dir, "pki");
  mkdirSync(logs, { recursive: true });
  mkdirSync(pkiDir, { recursive: true });
  const components: Component[] = [];
  let kubelet: Kubelet | undefined;
  let realNode: RealNode | undefined;
  let prepared: PreparedRealNode | undefined;
  let api: Api | undefined;
  const wantRealNode = options.realNode !== undefined && options.realNode !== false;
  const controllers = [
    ...(options.controllers ?? DEFAULT_CONTROLLERS),
    // A real kubelet's node is tainted not-ready at registration until this controller sees it Ready; claims
    // are bound to the node's hostPath volumes by the PV binder.
    ...(wantRealNode ? ["node-lifecycle-controller", "persistentvolume-binder-controller"] : []),
  ];

  const close = async () => {
    await kubelet?.close();
    await (realNode ?? prepared)?.close();
    api?.close();
    for (const c of [...components].reverse()) await c.stop();
    if (!keep) rmSync(dir, { recursive: true, force: true });
  };

  try {
    // The real node's lock, host snapshot and node IP come first: the API server binds that address.
    if (wantRealNode)
      prepared = await prepareRealNode(dir, typeof options.realNode === "object" ? options.realNode : {});
    const host = prepared ? prepared.nodeIp : "127.0.0.1";
    const pki: Pki = createPki(
      pkiDir,
      {
        admin: "/O=system:masters/CN=rft-harness-admin",
        "kube-controller-manager": "/CN=system:kube-controller-manager",
        "apiserver-kubelet-client": "/O=system:masters/CN=kube-apiserver-kubelet-client",
        kubelet: "/O=system:masters/CN=rft-harness-kubelet",
        // Pods reach the API server at the `kubernetes` Service's IP (kube-proxy, on the real node) or the node IP.
      },
      [`IP:${KUBERNETES_SERVICE_IP}`, `IP:${NODE_IP}`],
    );
    const [etcdClient, etcdPeer, apiPort, kcmPort] = [
      await freePort(),
      await freePort(),
      await freePort(host),
      await freePort(),
    ];
    const server = `https://${host}:${apiPort}`;

    const etcdUrl = `http://127.0.0.1:${etcdClient}`;
    const peerUrl = `http://127.0.0.1:${etcdPeer}`;
    components.push(
      launch(
        "etcd",
        bins.etcd,
        [
          "--name=rft",
          `--data-dir=${join(dir, "etcd")}`,
          `--listen-client-urls=${etcdUrl}`,
          `--advertise-client-urls=${etcdUrl}`,
          `--listen-peer-urls=${peerUrl}`,
          `--initial-advertise-peer-urls=${peerUrl}`,
          `--initial-cluster=rft=${peerUrl}`,
          "--unsafe-no-fsync",
          "--log-level=warn",
        ],
        logs,
      ),
    );

    components.push(
      launch(
        "kube-apiserver",
        bins.kubeApiserver,
        [
          `--etcd-servers=${etcdUrl}`,
          // With a real node: the node IP, where pods reach it through kube-proxy's `kubernetes` Service (the
          // endpoint reconciler publishes that address). Else loopback, which the reconciler refuses; nothing
          // routes Service IPs for the process kubelet anyway.
          `--bind-address=${host}`,
          `--advertise-address=${host}`,
          `--endpoint-reconciler-type=${prepared ? "lease" : "none"}`,
          `--secure-port=${apiPort}`,
          `--tls-cert-file=${pki.serverCert}`,
          `--tls-private-key-file=${pki.serverKey}`,
          `--client-ca-file=${pki.caCert}`,
          "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
          `--service-account-key-file=${pki.saPub}`,
          `--service-account-signing-key-file=${pki.saKey}`,
          `--service-cluster-ip-range=${SERVICE_CIDR}`,
          "--authorization-mode=Node,RBAC",
          "--enable-admission-plugins=NodeRestriction",
          "--allow-privileged=true",
          `--kubelet-client-certificate=${pki.clients["apiserver-kubelet-client"]?.cert}`,
          `--kubelet-client-key=${pki.clients["apiserver-kubelet-client"]?.key}`,
          `--kubelet-certificate-authority=${pki.caCert}`,
          "--kubelet-preferred-address-types=InternalIP",
          "--profiling=false",
          "--v=1",
          ...(options.apiserverArgs ?? []),
        ],
        logs,
      ),
    );

    const admin = pki.clients.admin;
    if (!admin) throw new Error("no admin certificate");
    const credentials = {
      server,
      ca: readFileSync(pki.caCert, "utf8"),
      cert: readFileSync(admin.cert, "utf8"),
      key: readFileSync(admin.key, "utf8"),
    };
    api = new Api(credentials);
    const readyApi = api;
    await waitFor(
      "kube-apiserver /readyz",
      async () => {
        for (const c of components) if (c.exited) throw new FatalError(`${c.name} exited: ${tail(c.logFile)}`);
        const text = await readyApi.request<KObject>("GET", "/readyz");
        return text !== undefined;
      },
      120_000,
      250,
    );

    const kubeconfig = join(dir, "admin.kubeconfig");
    writeFileSync(kubeconfig, kubeconfigFor(server, pki.caCert, admin, "admin"), { mode: 0o600 });
    const kcmConfig = join(dir, "kube-controller-manager.kubeconfig");
    const kcmCert = pki.clients["kube-controller-manager"];
    if (!kcmCert) throw new Error("no controller-manager certificate");
    writeFileSync(kcmConfig, kubeconfigFor(server, pki.caCert, kcmCert, "kube-controller-manager"), { mode: 0o600 });

    components.push(
      launch(
        "kube-controller-manager",
        bins.kubeControllerManager,
        [
          `--kubeconfig=${kcmConfig}`,
          `--authentication-kubeconfig=${kcmConfig}`,
          `--authorization-kubeconfig=${kcmConfig}`,
          "--bind-address=127.0.0.1",
          `--secure-port=${kcmPort}`,
          "--leader-elect=false",
          "--use-service-account-credentials=true",
          `--service-account-private-key-file=${pki.saKey}`,
          `--root-ca-file=${pki.caCert}`,
          `--controllers=${controllers.join(",")}`,
          "--cluster-name=rft-harness",
          "--profiling=false",
          "--v=1",
        ],
        logs,
      ),
    );

    const env = { ...process.env, KUBECONFIG: kubeconfig };
    const kubectl = (...args: string[]) => run(bins.kubectl, args, env);
    const kubectlInput = (input: string, ...args: string[]) => run(bins.kubectl, args, env, input);
    const apply = (manifests: string | KObject | KObject[], ...args: string[]) => {
      const text =
        typeof manifests === "string"
          ? manifests
          : JSON.stringify(Array.isArray(manifests) ? { apiVersion: "v1", kind: "List", items: manifests } : manifests);
      return kubectlInput(text, "apply", "-f", "-", ...args);
    };
    const getJson = async (...args: string[]) => JSON.parse(await kubectl("get", ...args, "-o", "json")) as KObject;

    // The controller manager is up once the "default" namespace has its service account (serviceaccount
    // controller) and root CA config map (root-ca-certificate-publisher).
    await waitFor(
      "kube-controller-manager",
      async () => {
        for (const c of components) if (c.exited) throw new FatalError(`${c.name} exited: ${tail(c.logFile)}`);
        const sa = await readyApi.getOptional("/api/v1/namespaces/default/serviceaccounts/default");
        const cm = await readyApi.getOptional("/api/v1/namespaces/default/configmaps/kube-root-ca.crt");
        return sa !== undefined && cm !== undefined;
      },
      120_000,
      250,
    );

    if (prepared) {
      realNode = await prepared.start({ dir, server, pki, api: readyApi });
    } else if (options.kubelet !== false) {
      kubelet = await startKubelet(readyApi, {
        dir: join(dir, "kubelet"),
        caCert: pki.caCert,
        servingCert: pki.kubeletCert,
        servingKey: pki.kubeletKey,
        apiserverPort: apiPort,
        ...options.kubelet,
      });
    }

    log.info({ server, dir, kubeconfig }, "cluster ready");
    return {
      dir,
      kubeconfig,
      server,
      etcdUrl,
      credentials,
      binaries: bins,
      api: readyApi,
      kubelet,
      realNode,
      kubectl,
      kubectlInput,
      apply,
      getJson,
      close,
    };
  } catch (e) {
    await close().catch(() => {});
    throw e;
  }
}
