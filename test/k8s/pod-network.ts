/**
 * Pod networking for the process kubelet, one network namespace per pod (needs root, as CI has):
 *
 *   netns <prefix>-net          a bridge br0, no address: the "pod network" switch, in its own namespace
 *   netns <prefix>-p<N>         lo + eth0 (veth to br0) with the pod IP 198.18.X.Y/17
 *
 * 198.18.0.0/15 is the range reserved for network testing (RFC 2544); every pod address lives only inside
 * namespaces made here, so pod-to-pod traffic never leaves them and the host namespace gets no address or
 * route. Pods reach chosen host loopback ports (the apiserver, a test's NATS) at 127.0.0.1:PORT through
 * ./pod-agent.ts, which relays them over Unix sockets that this module serves in the host namespace.
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, rmSync } from "node:fs";
import { connect, createServer, type Server } from "node:net";
import { join } from "node:path";
import { promisify } from "node:util";
import type { NetProbe, ProbeResult } from "./probes.js";

const exec = promisify(execFile);

async function ip(...args: string[]): Promise<void> {
  await exec("ip", args);
}

export const POD_CIDR_PREFIX = 17;

export function podAddress(n: number): string {
  if (n < 1 || n >= 1 << 15) throw new Error(`pod network full (${n})`);
  return `198.18.${(n >> 8) & 127}.${n & 255}`;
}

export class PodAgent {
  private nextId = 1;
  private readonly pending = new Map<number, (r: ProbeResult) => void>();
  constructor(readonly proc: ChildProcess) {
    proc.on("message", (m: { id?: number; result?: ProbeResult }) => {
      if (m.id !== undefined && m.result) {
        this.pending.get(m.id)?.(m.result);
        this.pending.delete(m.id);
      }
    });
    proc.on("exit", () => {
      for (const r of this.pending.values()) r({ ok: false, message: "pod agent exited" });
      this.pending.clear();
    });
  }
  probe(p: NetProbe): Promise<ProbeResult> {
    if (this.proc.exitCode !== null || !this.proc.connected) {
      return Promise.resolve({ ok: false, message: "pod agent not running" });
    }
    const id = this.nextId++;
    return new Promise((resolve) => {
      this.pending.set(id, resolve);
      this.proc.send({ id, probe: p });
    });
  }
  stop(): void {
    if (this.proc.connected) this.proc.disconnect();
    this.proc.kill("SIGKILL");
  }
}

export interface PodSandbox {
  netns: string;
  ip: string;
  agent: PodAgent;
}

export class PodNetwork {
  /** rk<pid>x<n>: the owner's pid lets a later kubelet remove what a killed one left behind. */
  readonly prefix = `rk${process.pid}x${++instances}`;
  readonly netNs = `${this.prefix}-net`;
  private next = 1;
  private readonly relays = new Map<number, Server>();
  private readonly sockDir: string;

  constructor(
    dir: string,
    private readonly agentCommand: string[],
  ) {
    this.sockDir = join(dir, "hostports");
  }

  /** Creates the bridge namespace; throws when network namespaces cannot be made here. */
  async init(hostPorts: number[]): Promise<void> {
    mkdirSync(this.sockDir, { recursive: true });
    await removeOrphans();
    await ip("netns", "add", this.netNs);
    await ip("-n", this.netNs, "link", "add", "br0", "type", "bridge");
    await ip("-n", this.netNs, "link", "set", "br0", "up");
    for (const p of hostPorts) await this.exposeHostPort(p);
  }

  /** Makes host 127.0.0.1:PORT reachable as 127.0.0.1:PORT in pods started from now on. */
  async exposeHostPort(port: number): Promise<void> {
    if (this.relays.has(port)) return;
    const path = join(this.sockDir, `${port}.sock`);
    rmSync(path, { force: true });
    const server = createServer((inbound) => {
      const outbound = connect({ host: "127.0.0.1", port });
      inbound.pipe(outbound).pipe(inbound);
      inbound.on("error", () => outbound.destroy());
      outbound.on("error", () => inbound.destroy());
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(path, () => resolve());
    });
    server.unref();
    this.relays.set(port, server);
  }

  async create(hostname: string): Promise<PodSandbox> {
    const n = this.next++;
    const netns = `${this.prefix}-p${n}`;
    const address = podAddress(n);
    const veth = `h${n}`;
    await ip("netns", "add", netns);
    try {
      await ip("-n", this.netNs, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns);
      await ip("-n", this.netNs, "link", "set", veth, "master", "br0", "up");
      await ip("-n", netns, "addr", "add", `${address}/${POD_CIDR_PREFIX}`, "dev", "eth0");
      await ip("-n", netns, "link", "set", "eth0", "up");
      await ip("-n", netns, "link", "set", "lo", "up");
      const ports = [...this.relays.keys()].map((p) => `${p}=${join(this.sockDir, `${p}.sock`)}`).join(",");
      const [cmd, ...args] = this.agentCommand;
      const proc = spawn(
        "setpriv",
        ["--pdeathsig", "SIGKILL", "--", "ip", "netns", "exec", netns, cmd as string, ...args],
        {
          stdio: ["ignore", "ignore", "inherit", "ipc"],
          env: { ...process.env, RFT_AGENT_PORTS: ports, RFT_POD_HOSTNAME: hostname },
        },
      );
      const ready = await new Promise<{ ready: boolean; error?: string }>((resolve) => {
        proc.once("message", (m: { ready: boolean; error?: string }) => resolve(m));
        proc.once("exit", (code) => resolve({ ready: false, error: `pod agent exited ${code}` }));
      });
      if (!ready.ready) throw new Error(`pod agent: ${ready.error}`);
      return { netns, ip: address, agent: new PodAgent(proc) };
    } catch (e) {
      await ip("netns", "del", netns).catch(() => {});
      throw e;
    }
  }

  /** Kills whatever still runs in the pod's namespace, then removes it (the veth goes with it). */
  async destroy(sandbox: PodSandbox): Promise<void> {
    sandbox.agent.stop();
    await killNetnsPids(sandbox.netns);
    await ip("netns", "del", sandbox.netns).catch(() => {});
  }

  async close(): Promise<void> {
    for (const s of this.relays.values()) s.close();
    this.relays.clear();
    await ip("netns", "del", this.netNs).catch(() => {});
  }
}

let instances = 0;

/** Deletes the namespaces of kubelets whose process is gone (killed before they could clean up). */
async function removeOrphans(): Promise<void> {
  const { stdout } = await exec("ip", ["netns", "list"]).catch(() => ({ stdout: "" }));
  for (const name of stdout.split("\n").map((l) => l.split(" ")[0] ?? "")) {
    const m = /^rk(\d+)x\d+-/.exec(name);
    if (!m) continue;
    try {
      process.kill(Number(m[1]), 0);
      continue;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ESRCH") continue;
    }
    await killNetnsPids(name);
    await ip("netns", "del", name).catch(() => {});
  }
}

export async function killNetnsPids(netns: string): Promise<void> {
  try {
    const { stdout } = await exec("ip", ["netns", "pids", netns]);
    for (const pid of stdout.split(/\s+/).filter(Boolean)) {
      try {
        process.kill(Number(pid), "SIGKILL");
      } catch {}
    }
  } catch {}
}

/** True when this process may create network namespaces (root with CAP_NET_ADMIN and CAP_SYS_ADMIN). */
export async function netnsAllowed(): Promise<boolean> {
  const probe = `rkprobe${randomBytes(3).toString("hex")}`;
  try {
    await ip("netns", "add", probe);
    await ip("netns", "del", probe);
    return true;
  } catch {
    return false;
  }
}
