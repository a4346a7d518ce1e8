/**
 * One pod on the process kubelet, from sandbox to deletion: its network namespace (./pod-network.ts), volumes
 * as directories, init containers in order, native sidecars (init containers with restartPolicy: Always,
 * started and kept running; their startupProbe gates the next), main containers, probes (exec, httpGet,
 * tcpSocket, grpc), restarts by policy with back-off, activeDeadlineSeconds, graceful termination
 * (SIGTERM to the process group, SIGKILL after the grace period), and the pod status it writes back.
 *
 * Each container is one host process group: `ip netns exec <pod netns> unshare --mount --uts` runs a small
 * shell script that bind-mounts the pod's volumes (and /etc/hosts, /etc/resolv.conf) onto their real
 * mountPaths in a private mount namespace, sets the pod hostname, changes to workingDir and execs the
 * container's command, so programs see the paths the manifest names.
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { closeSync, existsSync, ftruncateSync, mkdirSync, openSync, statSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import type { Logger } from "../../proto/log.js";
import type { Api, KObject } from "./api.js";
import { REPO_ROOT } from "./binaries.js";
import type { PodNetwork, PodSandbox } from "./pod-network.js";
import {
  ContainerConfigError,
  containerArgv,
  containerEnv,
  expand,
  type ImageEntry,
  isNotFound,
  Lookups,
  materializeVolume,
  resolveImage,
} from "./pod-spec.js";
import { type NetProbe, type ProbeResult, runNetProbe } from "./probes.js";

/** Where a container's mount namespace holds the repository while a volume shadows its path (see writeScript). */
const REPO_HOLD = "/run/rft-harness-repo";

export interface WorkerDeps {
  api: Api;
  network: PodNetwork;
  nodeName: string;
  images: Record<string, ImageEntry>;
  podsDir: string;
  pvcRoot: string;
  allocatable: Record<string, string>;
  apiserverPort: number;
  restartBackoffMs: number;
  maxRestartBackoffMs: number;
  /** Host directories created as mount points (removed when the kubelet closes, if empty). */
  createdMountPoints: Set<string>;
  hostsChanged(ns: string): void;
  log: Logger;
}

type Kind = "init" | "sidecar" | "main";

interface ContainerState {
  spec: KObject;
  kind: Kind;
  proc?: ChildProcess;
  gen: number;
  state: KObject;
  lastState: KObject;
  restartCount: number;
  started: boolean;
  ready: boolean;
  env: Record<string, string>;
  /** Set when the kubelet stops the container on purpose (no restart). */
  stopping: boolean;
  /** Exited and waiting out its restart back-off. */
  restartPending: boolean;
  image?: ImageEntry;
}

const now = () => new Date().toISOString().replace(/\.\d{3}Z$/, "Z");

function shq(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

const SIGNALS: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGKILL: 9, SIGTERM: 15, SIGABRT: 6, SIGSEGV: 11 };

export class PodWorker {
  pod: KObject;
  readonly uid: string;
  readonly ns: string;
  readonly name: string;
  readonly dir: string;
  sandbox?: PodSandbox;
  ip?: string;
  hostname: string;
  phase: "Pending" | "Running" | "Succeeded" | "Failed" = "Pending";
  private reason?: string;
  private message?: string;
  private readonly containers = new Map<string, ContainerState>();
  private readonly transitions = new Map<string, { status: string; time: string }>();
  private startTime?: string;
  private initialized = false;
  private terminating = false;
  private deleteRequested = false;
  private done = false;
  private wake: () => void = () => {};
  private statusDirty = false;
  private statusWriting?: Promise<void>;
  private statusTimer?: NodeJS.Timeout;
  private volumeDirs = new Map<string, string>();
  private deadlineTimer?: NodeJS.Timeout;
  readonly finished: Promise<void>;
  private resolveFinished: () => void = () => {};

  constructor(
    pod: KObject,
    private readonly deps: WorkerDeps,
  ) {
    this.pod = pod;
    this.uid = pod.metadata.uid;
    this.ns = pod.metadata.namespace;
    this.name = pod.metadata.name;
    this.hostname = (pod.spec.hostname ?? pod.metadata.name).slice(0, 63);
    this.dir = join(deps.podsDir, `${this.ns}_${this.name}_${this.uid}`);
    this.finished = new Promise((r) => {
      this.resolveFinished = r;
    });
    for (const c of pod.spec.initContainers ?? []) {
      this.containers.set(c.name, this.newState(c, c.restartPolicy === "Always" ? "sidecar" : "init"));
    }
    for (const c of pod.spec.containers ?? []) this.containers.set(c.name, this.newState(c, "main"));
  }

  private newState(spec: KObject, kind: Kind): ContainerState {
    return {
      spec,
      kind,
      gen: 0,
      state: {
        waiting: {
          reason:
            kind === "main" && (this.pod.spec.initContainers ?? []).length ? "PodInitializing" : "ContainerCreating",
        },
      },
      lastState: {},
      restartCount: 0,
      started: false,
      ready: false,
      env: {},
      stopping: false,
      restartPending: false,
    };
  }

  get terminal(): boolean {
    return this.phase === "Succeeded" || this.phase === "Failed";
  }

  /** Log file of a container's current (or given) run. */
  logPath(container: string, restart?: number): string {
    const cs = this.containers.get(container);
    return join(this.dir, "logs", container, `${restart ?? cs?.restartCount ?? 0}.log`);
  }

  /** Host pid of a running container. */
  pid(container: string): number | undefined {
    return this.containers.get(container)?.proc?.pid;
  }

  /** The newest pod object from the watch. */
  update(pod: KObject): void {
    this.pod = pod;
    if (pod.metadata.deletionTimestamp && !this.deleteRequested) {
      this.deleteRequested = true;
      const grace = pod.metadata.deletionGracePeriodSeconds ?? pod.spec.terminationGracePeriodSeconds ?? 30;
      void this.terminate(grace);
    }
  }

  /** The API object is gone (force deletion): kill everything now. */
  gone(): void {
    this.deleteRequested = true;
    this.pod = { ...this.pod, metadata: { ...this.pod.metadata, deletionTimestamp: now() } };
    void this.terminate(0);
  }

  private notify(): void {
    const w = this.wake;
    this.wake = () => {};
    w();
  }

  private waitChange(ms = 1_000): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(resolve, ms);
      const prev = this.wake;
      this.wake = () => {
        clearTimeout(t);
        prev();
        resolve();
      };
    });
  }

  async run(): Promise<void> {
    try {
      if (this.pod.metadata.deletionTimestamp) this.update(this.pod);
      await this.setup();
      if (!this.terminating && (await this.runInits())) {
        this.initialized = true;
        this.scheduleStatus();
        await this.runMain();
      }
    } catch (e) {
      this.deps.log.error({ pod: `${this.ns}/${this.name}`, err: (e as Error).message }, "pod worker failed");
      if (!this.terminal) this.setPhase("Failed", "KubeletError", (e as Error).message);
    }
    await this.finish();
  }

  private async setup(): Promise<void> {
    mkdirSync(this.dir, { recursive: true });
    this.startTime = now();
    this.setCondition("PodScheduled", "True");
    this.setCondition("PodReadyToStartContainers", "False");
    this.setCondition("Initialized", (this.pod.spec.initContainers ?? []).length ? "False" : "True");
    this.setCondition("ContainersReady", "False", "ContainersNotReady");
    this.setCondition("Ready", "False", "ContainersNotReady");
    this.scheduleStatus();
    if (this.pod.spec.activeDeadlineSeconds) {
      this.deadlineTimer = setTimeout(() => {
        if (this.terminal || this.terminating) return;
        this.setPhase("Failed", "DeadlineExceeded", `Pod was active on the node longer than the specified deadline`);
        void this.terminate(this.pod.spec.terminationGracePeriodSeconds ?? 30);
      }, this.pod.spec.activeDeadlineSeconds * 1000);
    }
    if (this.pod.spec.hostNetwork) {
      this.ip = "127.0.0.1";
    } else {
      this.sandbox = await this.deps.network.create(this.hostname);
      this.ip = this.sandbox.ip;
    }
    this.setCondition("PodReadyToStartContainers", "True");
    this.deps.hostsChanged(this.ns);
    this.scheduleStatus();
    // Volumes: retried until they can be made (a missing ConfigMap may be created later), as the kubelet does.
    for (;;) {
      if (this.terminating) return;
      try {
        const lookups = new Lookups(this.deps.api, this.ns);
        const ctx = {
          api: this.deps.api,
          lookups,
          pod: this.podWithStatus(),
          podDir: this.dir,
          pvcRoot: this.deps.pvcRoot,
          allocatable: this.deps.allocatable,
        };
        for (const v of this.pod.spec.volumes ?? []) this.volumeDirs.set(v.name, await materializeVolume(v, ctx));
        this.writeNetworkFiles();
        return;
      } catch (e) {
        const msg = (e as Error).message;
        for (const cs of this.containers.values())
          cs.state = { waiting: { reason: "ContainerCreating", message: `MountVolume.SetUp failed: ${msg}` } };
        this.scheduleStatus();
        await this.waitChange(1_000);
      }
    }
  }

  /** The pod as the downward API sees it (status.podIP is ours before the API object has it). */
  private podWithStatus(): KObject {
    return { ...this.pod, status: { ...(this.pod.status ?? {}), podIP: this.ip, hostIP: "127.0.0.1" } };
  }

  hostsEntry(): { ip: string; names: string[] } | undefined {
    if (!this.ip || this.pod.spec.hostNetwork || this.terminal) return undefined;
    const sd = this.pod.spec.subdomain;
    const names = sd
      ? [
          `${this.hostname}.${sd}.${this.ns}.svc.cluster.local`,
          `${this.hostname}.${sd}.${this.ns}.svc`,
          `${this.hostname}.${sd}.${this.ns}`,
          `${this.hostname}.${sd}`,
        ]
      : [];
    return { ip: this.ip, names };
  }

  /** /etc/hosts of this pod: itself, plus the other pods of its namespace that have a subdomain. */
  writeHosts(peers: { ip: string; names: string[] }[]): void {
    if (this.pod.spec.hostNetwork || !this.ip) return;
    const own = this.hostsEntry();
    const lines = [
      "# Kubernetes-managed hosts file (rft process kubelet).",
      "127.0.0.1\tlocalhost",
      "::1\tlocalhost ip6-localhost ip6-loopback",
      `${this.ip}\t${[...(own?.names.slice(0, 1) ?? []), this.hostname].join(" ")}`,
      ...peers.filter((p) => p.ip !== this.ip && p.names.length).map((p) => `${p.ip}\t${p.names.join(" ")}`),
    ];
    // Written in place: containers hold a bind mount of this inode.
    const path = join(this.dir, "etc-hosts");
    const fd = openSync(path, existsSync(path) ? "r+" : "w");
    const data = Buffer.from(`${lines.join("\n")}\n`);
    writeFileSync(fd, data);
    ftruncateSync(fd, data.length);
    closeSync(fd);
  }

  private writeNetworkFiles(): void {
    writeFileSync(join(this.dir, "etc-hostname"), `${this.hostname}\n`);
    // A resolver on the pod's own loopback that is not there: lookups outside /etc/hosts fail at once and no
    // DNS query leaves the pod.
    writeFileSync(
      join(this.dir, "etc-resolv.conf"),
      `nameserver 127.0.0.1\nsearch ${this.ns}.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5 attempts:1 timeout:1\n`,
    );
    if (!existsSync(join(this.dir, "etc-hosts"))) this.writeHosts([]);
  }

  private async runInits(): Promise<boolean> {
    for (const c of this.pod.spec.initContainers ?? []) {
      const cs = this.containers.get(c.name) as ContainerState;
      if (cs.kind === "sidecar") {
        await this.startWithRetry(cs);
        while (!cs.started) {
          if (this.terminating) return false;
          await this.waitChange();
        }
        continue;
      }
      for (;;) {
        if (this.terminating) return false;
        const exit = await this.runToCompletion(cs);
        if (this.terminating) return false;
        if (exit === 0) break;
        if (this.pod.spec.restartPolicy === "Never") {
          this.setPhase("Failed");
          return false;
        }
        await this.backoff(cs);
      }
    }
    this.setCondition("Initialized", "True");
    return true;
  }

  private async runToCompletion(cs: ContainerState): Promise<number | undefined> {
    for (;;) {
      if (this.terminating) return undefined;
      const started = await this.start(cs);
      if (started) break;
      await this.waitChange(2_000);
    }
    while (!("terminated" in cs.state) || cs.state.terminated === null) {
      if (this.terminating) return undefined;
      await this.waitChange();
    }
    return cs.state.terminated.exitCode;
  }

  private async backoff(cs: ContainerState): Promise<void> {
    const delay = Math.min(
      this.deps.restartBackoffMs * 2 ** Math.max(0, cs.restartCount - 1),
      this.deps.maxRestartBackoffMs,
    );
    cs.lastState = cs.state;
    cs.state = {
      waiting: {
        reason: "CrashLoopBackOff",
        message: `back-off ${Math.round(delay / 1000)}s restarting failed container=${cs.spec.name} pod=${this.name}_${this.ns}(${this.uid})`,
      },
    };
    cs.restartCount++;
    this.scheduleStatus();
    await new Promise((r) => setTimeout(r, delay));
  }

  private async runMain(): Promise<void> {
    const mains = [...this.containers.values()].filter((c) => c.kind === "main");
    for (const cs of mains) void this.startWithRetry(cs);
    for (;;) {
      if (this.terminating) return;
      const policy = this.pod.spec.restartPolicy ?? "Always";
      const allDone = mains.every(
        (cs) =>
          cs.state.terminated &&
          !cs.restartPending &&
          (policy === "Never" || (policy === "OnFailure" && cs.state.terminated.exitCode === 0)),
      );
      if (allDone) {
        const failed = mains.some((cs) => cs.state.terminated?.exitCode !== 0);
        await this.stopSidecars(this.pod.spec.terminationGracePeriodSeconds ?? 30);
        this.setPhase(failed ? "Failed" : "Succeeded");
        return;
      }
      await this.waitChange();
    }
  }

  private async startWithRetry(cs: ContainerState): Promise<void> {
    while (!this.terminating && !(await this.start(cs))) await this.waitChange(2_000);
  }

  /** Starts one container; false (and a waiting reason in status) when it cannot start yet. */
  private async start(cs: ContainerState): Promise<boolean> {
    const c = cs.spec;
    const image = resolveImage(this.deps.images, c.image);
    if (!image) {
      cs.state = {
        waiting: {
          reason: "ErrImagePull",
          message: `image "${c.image}" is not mapped to a host command by the process kubelet (known: ${Object.keys(this.deps.images).join(", ")})`,
        },
      };
      this.scheduleStatus();
      return false;
    }
    cs.image = image;
    let env: Record<string, string>;
    try {
      const base: Record<string, string> = {
        PATH: process.env.PATH ?? "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        HOME: process.env.HOME ?? "/root",
        HOSTNAME: this.hostname,
        KUBERNETES_SERVICE_HOST: "127.0.0.1",
        KUBERNETES_SERVICE_PORT: String(this.deps.apiserverPort),
        KUBERNETES_SERVICE_PORT_HTTPS: String(this.deps.apiserverPort),
        KUBERNETES_PORT: `tcp://127.0.0.1:${this.deps.apiserverPort}`,
        ...(image.env ?? {}),
      };
      env = await containerEnv(
        c,
        this.podWithStatus(),
        new Lookups(this.deps.api, this.ns),
        base,
        this.deps.allocatable,
      );
    } catch (e) {
      const reason = e instanceof ContainerConfigError ? e.reason : "CreateContainerConfigError";
      cs.state = { waiting: { reason, message: (e as Error).message } };
      this.scheduleStatus();
      return false;
    }
    const argv = containerArgv(c, image).map((a) => expand(a, env));
    if (argv.length === 0) {
      cs.state = { waiting: { reason: "RunContainerError", message: `no command specified for image ${c.image}` } };
      this.scheduleStatus();
      return false;
    }
    cs.env = env;
    const gen = ++cs.gen;
    const script = this.writeScript(cs, gen);
    const logFile = this.logPath(c.name);
    mkdirSync(dirname(logFile), { recursive: true });
    const fd = openSync(logFile, "a");
    const wrapper = ["unshare", "--mount", "--uts", "--propagation", "private", "--", "/bin/sh", script, ...argv];
    const inPod = this.sandbox ? ["ip", "netns", "exec", this.sandbox.netns, ...wrapper] : wrapper;
    // SIGKILL when the kubelet's process dies, however it dies.
    const cmd = ["setpriv", "--pdeathsig", "SIGKILL", "--", ...inPod];
    const proc = spawn(cmd[0] as string, cmd.slice(1), { detached: true, stdio: ["ignore", fd, fd], env, cwd: "/" });
    closeSync(fd);
    cs.proc = proc;
    cs.stopping = false;
    cs.started = !c.startupProbe;
    cs.ready = false;
    const startedAt = now();
    cs.state = { running: { startedAt } };
    proc.on("error", () => {});
    proc.on("exit", (code, signal) => this.onExit(cs, gen, startedAt, code, signal));
    this.deps.log.debug({ pod: `${this.ns}/${this.name}`, container: c.name, argv }, "container started");
    this.startProbes(cs, gen);
    this.scheduleStatus();
    this.notify();
    return true;
  }

  private writeScript(cs: ContainerState, gen: number): string {
    const c = cs.spec;
    const lines = ["set -e"];
    const mounts: { src: string; dst: string; ro: boolean }[] = [];
    if (!this.pod.spec.hostNetwork) {
      mounts.push({ src: join(this.dir, "etc-hosts"), dst: "/etc/hosts", ro: false });
      mounts.push({ src: join(this.dir, "etc-resolv.conf"), dst: "/etc/resolv.conf", ro: false });
    }
    mounts.push({ src: join(this.dir, "etc-hostname"), dst: "/etc/hostname", ro: false });
    const vms = [...(c.volumeMounts ?? [])].sort(
      (a: KObject, b: KObject) => a.mountPath.split("/").length - b.mountPath.split("/").length,
    );
    for (const vm of vms) {
      const base = this.volumeDirs.get(vm.name);
      if (!base) throw new ContainerConfigError("CreateContainerConfigError", `volume ${vm.name} not found`);
      const sub = vm.subPathExpr ? expand(vm.subPathExpr, cs.env) : vm.subPath;
      let src = sub ? join(base, sub) : base;
      if (sub && !existsSync(src)) mkdirSync(src, { recursive: true });
      src = src.replace(/\/$/, "");
      mounts.push({ src, dst: vm.mountPath, ro: !!vm.readOnly });
    }
    // A volume mounted over an ancestor of the repository (an emptyDir at /tmp while the checkout lives under
    // /tmp) would hide the code the container runs: hold the repository aside first, put it back afterwards.
    const shadowsRepo = mounts.some((m) => REPO_ROOT === m.dst || REPO_ROOT.startsWith(`${m.dst.replace(/\/$/, "")}/`));
    if (shadowsRepo) {
      mkdirSync(REPO_HOLD, { recursive: true });
      lines.push(`mount --bind ${shq(REPO_ROOT)} ${shq(REPO_HOLD)}`);
    }
    for (const m of mounts) {
      this.recordMountPoint(m.dst, mounts);
      const isDir = statSync(m.src).isDirectory();
      lines.push(
        isDir
          ? `mkdir -p ${shq(m.dst)}`
          : `mkdir -p "$(dirname ${shq(m.dst)})"; [ -e ${shq(m.dst)} ] || : > ${shq(m.dst)}`,
      );
      lines.push(`mount --bind ${shq(m.src)} ${shq(m.dst)}`);
      if (m.ro) lines.push(`mount -o remount,bind,ro ${shq(m.dst)}`);
    }
    if (shadowsRepo) lines.push(`mkdir -p ${shq(REPO_ROOT)}`, `mount --bind ${shq(REPO_HOLD)} ${shq(REPO_ROOT)}`);
    lines.push(`hostname ${shq(this.hostname)}`);
    const wd = c.workingDir ?? "/";
    lines.push(`cd ${shq(wd)}`);
    lines.push('exec "$@"');
    const path = join(this.dir, "scripts", `${c.name}-${gen}.sh`);
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, `${lines.join("\n")}\n`);
    return path;
  }

  /** Remembers the top host directory a mount point creates, unless it lies inside another mount. */
  private recordMountPoint(dst: string, mounts: { dst: string }[]): void {
    if (mounts.some((m) => m.dst !== dst && dst.startsWith(`${m.dst}/`))) return;
    let top: string | undefined;
    for (let p = dst; p !== "/" && !existsSync(p); p = dirname(p)) top = p;
    if (top) this.deps.createdMountPoints.add(top);
  }

  private onExit(cs: ContainerState, gen: number, startedAt: string, code: number | null, signal: string | null): void {
    if (gen !== cs.gen) return;
    cs.proc = undefined;
    cs.ready = false;
    const exitCode = code ?? 128 + (SIGNALS[signal ?? ""] ?? 9);
    cs.state = {
      terminated: {
        exitCode,
        reason: exitCode === 0 ? "Completed" : "Error",
        ...(signal ? { signal: SIGNALS[signal] ?? 0 } : {}),
        startedAt,
        finishedAt: now(),
        containerID: `process://${this.uid}/${cs.spec.name}/${gen}`,
      },
    };
    this.deps.log.debug({ pod: `${this.ns}/${this.name}`, container: cs.spec.name, exitCode }, "container exited");
    if (!cs.stopping && !this.terminating && !this.terminal) {
      const policy = this.pod.spec.restartPolicy ?? "Always";
      const restart =
        cs.kind === "sidecar" ||
        (cs.kind === "main" && (policy === "Always" || (policy === "OnFailure" && exitCode !== 0)));
      if (restart) {
        cs.restartPending = true;
        void this.backoff(cs).then(async () => {
          cs.restartPending = false;
          if (!this.terminating && !this.terminal && !cs.stopping) await this.startWithRetry(cs);
          this.notify();
        });
      }
    }
    this.updateReadiness();
    this.scheduleStatus();
    this.notify();
  }

  // --- probes ---------------------------------------------------------------------------------------------

  private startProbes(cs: ContainerState, gen: number): void {
    const c = cs.spec;
    const alive = () => cs.gen === gen && cs.proc !== undefined && !cs.stopping;
    const after = () => {
      if (c.livenessProbe) void this.probeLoop(cs, "liveness", c.livenessProbe, alive);
      if (c.readinessProbe) void this.probeLoop(cs, "readiness", c.readinessProbe, alive);
      else {
        cs.ready = true;
        this.updateReadiness();
      }
    };
    if (c.startupProbe) {
      void this.probeLoop(cs, "startup", c.startupProbe, alive).then((ok) => {
        if (ok && alive()) {
          cs.started = true;
          this.notify();
          after();
        }
      });
    } else after();
  }

  /** Runs one probe until it settles: startup → true on success; liveness/readiness run while alive. */
  private async probeLoop(cs: ContainerState, which: string, p: KObject, alive: () => boolean): Promise<boolean> {
    const period = (p.periodSeconds ?? 10) * 1000;
    const successThreshold = p.successThreshold ?? 1;
    const failureThreshold = p.failureThreshold ?? 3;
    await new Promise((r) => setTimeout(r, (p.initialDelaySeconds ?? 0) * 1000));
    let successes = 0;
    let failures = 0;
    while (alive()) {
      const r = await this.probe(cs, p);
      if (!alive()) return false;
      if (r.ok) {
        successes++;
        failures = 0;
        if (which === "startup") return true;
        if (which === "readiness" && successes >= successThreshold && !cs.ready) {
          cs.ready = true;
          this.updateReadiness();
        }
      } else {
        failures++;
        successes = 0;
        if (failures >= failureThreshold) {
          if (which === "readiness") {
            if (cs.ready) {
              cs.ready = false;
              this.updateReadiness();
            }
          } else {
            this.deps.log.info(
              { pod: `${this.ns}/${this.name}`, container: cs.spec.name, which, msg: r.message },
              "probe failed; restarting",
            );
            void this.kill(
              cs,
              p.terminationGracePeriodSeconds ?? this.pod.spec.terminationGracePeriodSeconds ?? 30,
              false,
            );
            return false;
          }
        }
      }
      await new Promise((r) => setTimeout(r, period));
    }
    return false;
  }

  private probe(cs: ContainerState, p: KObject): Promise<ProbeResult> {
    const timeoutMs = (p.timeoutSeconds ?? 1) * 1000;
    const host = (h?: string) => h || this.ip || "127.0.0.1";
    const portOf = (port: number | string): number => {
      if (typeof port === "number") return port;
      const named = (cs.spec.ports ?? []).find((x: KObject) => x.name === port);
      return named?.containerPort ?? Number(port);
    };
    let np: NetProbe | undefined;
    if (p.exec) return this.execProbe(cs, p.exec.command ?? [], timeoutMs);
    if (p.tcpSocket) np = { kind: "tcp", host: host(p.tcpSocket.host), port: portOf(p.tcpSocket.port), timeoutMs };
    else if (p.httpGet) {
      const headers: Record<string, string> = {};
      for (const h of p.httpGet.httpHeaders ?? []) headers[h.name] = h.value;
      np = {
        kind: "http",
        scheme: p.httpGet.scheme ?? "HTTP",
        host: host(p.httpGet.host),
        port: portOf(p.httpGet.port),
        path: p.httpGet.path ?? "/",
        headers,
        timeoutMs,
      };
    } else if (p.grpc) np = { kind: "grpc", host: host(), port: p.grpc.port, service: p.grpc.service ?? "", timeoutMs };
    if (!np) return Promise.resolve({ ok: false, message: "probe has no handler" });
    return this.sandbox ? this.sandbox.agent.probe(np) : runNetProbe(np);
  }

  private execProbe(cs: ContainerState, command: string[], timeoutMs: number): Promise<ProbeResult> {
    const pid = cs.proc?.pid;
    if (!pid) return Promise.resolve({ ok: false, message: "container not running" });
    const ns = this.sandbox ? ["-n"] : [];
    return new Promise((resolve) => {
      execFile(
        "nsenter",
        ["-t", String(pid), "-m", "-u", ...ns, "--", ...command],
        { env: cs.env, timeout: timeoutMs },
        (err, stdout, stderr) => {
          resolve(
            err
              ? { ok: false, message: `${String(stdout)}${String(stderr)}`.trim() || err.message }
              : { ok: true, message: "" },
          );
        },
      );
    });
  }

  // --- stopping ---------------------------------------------------------------------------------------------

  /** SIGTERM to the container's process group, SIGKILL after `graceSeconds`; resolves when it has exited. */
  private async kill(cs: ContainerState, graceSeconds: number, stopping = true): Promise<void> {
    if (stopping) cs.stopping = true;
    const proc = cs.proc;
    if (!proc?.pid) return;
    const exited = new Promise<void>((r) => proc.once("exit", () => r()));
    const signal = (sig: NodeJS.Signals) => {
      try {
        process.kill(-(proc.pid as number), sig);
      } catch {}
    };
    signal("SIGTERM");
    const t = setTimeout(() => signal("SIGKILL"), Math.max(0, graceSeconds) * 1000);
    await exited;
    clearTimeout(t);
  }

  private async stopSidecars(graceSeconds: number): Promise<void> {
    const sidecars = [...this.containers.values()].filter((c) => c.kind === "sidecar").reverse();
    for (const cs of sidecars) cs.stopping = true;
    for (const cs of sidecars) await this.kill(cs, Math.min(graceSeconds, 30));
  }

  private terminated?: Promise<void>;

  /** Stops every container (main ones first, then sidecars in reverse order) within `graceSeconds`. */
  terminate(graceSeconds: number): Promise<void> {
    if (this.terminated) {
      if (graceSeconds === 0) for (const cs of this.containers.values()) void this.kill(cs, 0);
      return this.terminated;
    }
    this.terminated = this.stopAll(graceSeconds);
    return this.terminated;
  }

  private async stopAll(graceSeconds: number): Promise<void> {
    this.terminating = true;
    this.notify();
    const all = [...this.containers.values()];
    for (const cs of all) cs.stopping = true;
    const started = Date.now();
    await Promise.all(all.filter((c) => c.kind !== "sidecar").map((cs) => this.kill(cs, graceSeconds)));
    const left = Math.max(0, graceSeconds - (Date.now() - started) / 1000);
    await this.stopSidecars(Math.max(left, Math.min(graceSeconds, 2)));
    this.notify();
  }

  private async finish(): Promise<void> {
    if (this.deadlineTimer) clearTimeout(this.deadlineTimer);
    // A termination in progress keeps its grace period; otherwise stop what still runs now.
    await (this.terminated ?? this.terminate(0));
    if (!this.terminal) {
      const mains = [...this.containers.values()].filter((c) => c.kind === "main");
      const ok = this.initialized && mains.every((cs) => cs.state.terminated?.exitCode === 0);
      this.setPhase(ok ? "Succeeded" : "Failed");
    }
    for (const cs of this.containers.values()) {
      if (cs.state.waiting) {
        cs.state = {
          terminated: {
            exitCode: 137,
            reason: "ContainerStatusUnknown",
            message: "The container could not be located when the pod was terminated",
          },
        };
      }
    }
    if (this.sandbox) await this.deps.network.destroy(this.sandbox);
    this.deps.hostsChanged(this.ns);
    await this.flushStatus();
    if (this.deleteRequested) {
      try {
        await this.deps.api.delete(`/api/v1/namespaces/${this.ns}/pods/${this.name}`, {
          apiVersion: "v1",
          kind: "DeleteOptions",
          gracePeriodSeconds: 0,
          preconditions: { uid: this.uid },
        });
      } catch (e) {
        if (!isNotFound(e) && !(e as { status?: number }).status) {
          this.deps.log.warn({ pod: `${this.ns}/${this.name}`, err: (e as Error).message }, "final delete failed");
        }
      }
    }
    this.done = true;
    this.resolveFinished();
  }

  get isDone(): boolean {
    return this.done;
  }

  // --- status -----------------------------------------------------------------------------------------------

  private setPhase(phase: PodWorker["phase"], reason?: string, message?: string): void {
    if (this.terminal) return;
    this.phase = phase;
    if (reason) this.reason = reason;
    if (message) this.message = message;
    if (this.terminal) {
      this.setCondition("Ready", "False", "PodCompleted");
      this.setCondition("ContainersReady", "False", "PodCompleted");
      this.setCondition("PodReadyToStartContainers", "False");
    }
    this.scheduleStatus();
    this.notify();
  }

  private conditionReasons = new Map<string, string | undefined>();
  private setCondition(type: string, status: "True" | "False", reason?: string): void {
    const prev = this.transitions.get(type);
    if (!prev || prev.status !== status) this.transitions.set(type, { status, time: now() });
    this.conditionReasons.set(type, reason);
  }

  private updateReadiness(): void {
    if (this.terminal) return;
    const relevant = [...this.containers.values()].filter((c) => c.kind !== "init");
    const notReady = relevant.filter((c) => !c.ready).map((c) => c.spec.name);
    const ready = this.initialized && notReady.length === 0;
    this.setCondition("ContainersReady", ready ? "True" : "False", ready ? undefined : "ContainersNotReady");
    const gates: string[] = (this.pod.spec.readinessGates ?? []).map((g: KObject) => g.conditionType);
    const gatesOk = gates.every((g) =>
      (this.pod.status?.conditions ?? []).some((c: KObject) => c.type === g && c.status === "True"),
    );
    this.setCondition(
      "Ready",
      ready && gatesOk ? "True" : "False",
      ready && gatesOk ? undefined : "ContainersNotReady",
    );
    this.scheduleStatus();
  }

  private scheduleStatus(): void {
    this.statusDirty = true;
    if (this.statusTimer) return;
    this.statusTimer = setTimeout(() => {
      this.statusTimer = undefined;
      void this.flushStatus();
    }, 20);
  }

  private async flushStatus(): Promise<void> {
    if (this.statusTimer) {
      clearTimeout(this.statusTimer);
      this.statusTimer = undefined;
    }
    while (this.statusWriting) await this.statusWriting;
    if (!this.statusDirty) return;
    this.statusDirty = false;
    this.statusWriting = this.writeStatus().finally(() => {
      this.statusWriting = undefined;
    });
    await this.statusWriting;
  }

  private containerStatus(cs: ContainerState): KObject {
    const state = { waiting: null, running: null, terminated: null, ...cs.state };
    const lastState = { waiting: null, running: null, terminated: null, ...cs.lastState };
    return {
      name: cs.spec.name,
      image: cs.spec.image,
      imageID: `process://${cs.spec.image}`,
      containerID: cs.state.waiting ? null : `process://${this.uid}/${cs.spec.name}/${cs.gen}`,
      state,
      lastState,
      ready: cs.ready,
      started: cs.kind === "init" ? !!cs.state.running : cs.started && !!cs.state.running,
      restartCount: cs.restartCount,
    };
  }

  private async writeStatus(): Promise<void> {
    const initNames = [...this.containers.values()].filter((c) => c.kind !== "main");
    if (!this.initialized && !this.terminal) {
      const pendingInit = initNames.filter(
        (c) => !(c.kind === "sidecar" ? c.started : c.state.terminated?.exitCode === 0),
      );
      this.setCondition(
        "Initialized",
        pendingInit.length ? "False" : "True",
        pendingInit.length ? "ContainersNotInitialized" : undefined,
      );
    }
    const conditions = [...this.transitions.entries()].map(([type, t]) => ({
      type,
      status: t.status,
      lastProbeTime: null,
      lastTransitionTime: t.time,
      reason: this.conditionReasons.get(type) ?? null,
      message: null,
    }));
    const mainRunning = [...this.containers.values()].some(
      (c) => c.kind === "main" && (c.state.running || c.restartPending),
    );
    const phase = this.terminal
      ? this.phase
      : this.phase === "Running" || (this.initialized && mainRunning)
        ? "Running"
        : "Pending";
    if (!this.terminal) this.phase = phase;
    const body = {
      metadata: { uid: this.uid },
      status: {
        phase,
        reason: this.reason ?? null,
        message: this.message ?? null,
        conditions,
        hostIP: "127.0.0.1",
        hostIPs: [{ ip: "127.0.0.1" }],
        ...(this.ip ? { podIP: this.ip, podIPs: [{ ip: this.ip }] } : {}),
        startTime: this.startTime,
        initContainerStatuses: [...this.containers.values()]
          .filter((c) => c.kind !== "main")
          .map((c) => this.containerStatus(c)),
        containerStatuses: [...this.containers.values()]
          .filter((c) => c.kind === "main")
          .map((c) => this.containerStatus(c)),
      },
    };
    try {
      const updated = await this.deps.api.strategicPatch(
        `/api/v1/namespaces/${this.ns}/pods/${this.name}/status`,
        body,
      );
      if (updated?.metadata) this.pod = { ...this.pod, status: updated.status };
    } catch (e) {
      if (!isNotFound(e) && (e as { status?: number }).status !== 409) {
        this.deps.log.warn({ pod: `${this.ns}/${this.name}`, err: (e as Error).message }, "status write failed");
        this.statusDirty = true;
        setTimeout(() => this.scheduleStatus(), 500);
      }
    }
  }
}
