/**
 * What a real kubelet, containerd and the CNI plugins change on the machine, recorded before the real node starts
 * (./real-node.ts) and put back when it stops — also after a failed test, a signal, or (at the next start) a
 * killed run. Everything here is synchronous so that it can run in a process `exit` handler.
 *
 * The changes (measured on this machine; test/k8s/README.md "Real node" lists them):
 *  - sysctls the kubelet rewrites at start (vm.overcommit_memory 0→1, kernel.panic 1→10, kernel.panic_on_oops 0→1,
 *    …) and net.ipv4.ip_forward, which the CNI bridge plugin turns on;
 *  - iptables chains the kubelet makes (KUBE-FIREWALL hooked from INPUT/OUTPUT, KUBE-KUBELET-CANARY,
 *    KUBE-IPTABLES-HINT; IPv4 and IPv6), kube-proxy's (KUBE-SERVICES, KUBE-SVC-*, KUBE-SEP-*, KUBE-POSTROUTING,
 *    KUBE-FORWARD, … in filter and nat, hooked from PREROUTING/INPUT/OUTPUT/FORWARD/POSTROUTING) and the node's own
 *    FORWARD drops for the pod range; `iptablesRules` (iptables-save, every table) checks nothing is left;
 *  - the sysctls kube-proxy may set (route_localnet, conntrack sizes and timeouts: its config turns them off, but
 *    they are recorded and put back all the same);
 *  - hard-coded host paths (containerd's shim sockets in /run/containerd, the kubelet's
 *    /var/lib/kubelet/device-plugins and /var/log/containers, libcni's cache in /var/lib/cni);
 *  - the pods' cgroups (`kubepods` in every v1 hierarchy), the CNI network namespaces (/run/netns/cni-*), the
 *    node's two bridges, and mounts under the node's folders.
 * Pure parts (what to put back, given before and now) are exported for tests; the rest is thin I/O.
 */
import { execFileSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, rmdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export const SYSCTLS = [
  "vm/overcommit_memory",
  "vm/panic_on_oom",
  "kernel/panic",
  "kernel/panic_on_oops",
  "kernel/keys/root_maxkeys",
  "kernel/keys/root_maxbytes",
  "net/ipv4/ip_forward",
  // kube-proxy's (real-node.ts's config asks it to set none of them).
  "net/ipv4/conf/all/route_localnet",
  "net/netfilter/nf_conntrack_max",
  "net/netfilter/nf_conntrack_tcp_timeout_established",
  "net/netfilter/nf_conntrack_tcp_timeout_close_wait",
  "net/netfilter/nf_conntrack_tcp_be_liberal",
  "net/netfilter/nf_conntrack_udp_timeout",
  "net/netfilter/nf_conntrack_udp_timeout_stream",
  "net/bridge/bridge-nf-call-iptables",
  "net/bridge/bridge-nf-call-ip6tables",
];
export const HOST_PATHS = ["/run/containerd", "/var/lib/kubelet", "/var/log/containers", "/var/lib/cni"];
const TABLES = ["filter", "nat", "mangle", "raw"];
const IPTABLES = ["iptables", "ip6tables"] as const;
const CGROUP_ROOT = "/sys/fs/cgroup";
const CGROUP_TOPS = ["kubepods", "kubepods.slice"];

export interface HostSnapshot {
  /** /proc/sys path (relative) → value before. */
  sysctls: Record<string, string>;
  /** Hard-coded host paths that existed before. */
  paths: string[];
  /** `iptables -t TABLE -S` chains that existed before, as "iptables/filter/CHAIN". */
  chains: string[];
  /** cgroup folders (hierarchy/top) that existed before. */
  cgroups: string[];
}

/** What the node itself adds, to be removed: bridges, FORWARD rules, folders whose mounts go. */
export interface NodeFootprint {
  bridges: string[];
  /** iptables rule specs (without -A/-D CHAIN) in FORWARD. */
  forwardRules: string[][];
  /** Folders under which every mount is the node's. */
  mountRoots: string[];
}

// --- pure ---------------------------------------------------------------------------------------------------

/** The sysctls to write back: those whose value moved. */
export function sysctlsToRestore(before: Record<string, string>, now: Record<string, string>): [string, string][] {
  return Object.entries(before).filter(([k, v]) => now[k] !== undefined && now[k] !== v);
}

/** Chains present now that did not exist before. */
export function newChains(before: string[], now: string[]): string[] {
  const had = new Set(before);
  return now.filter((c) => !had.has(c));
}

/** An `iptables -S` line's words, a "quoted comment" as one word without its quotes (as -D wants it). */
export function ruleWords(line: string): string[] {
  const out: string[] = [];
  for (const m of line.matchAll(/"((?:[^"\\]|\\.)*)"|(\S+)/g))
    out.push(m[1] !== undefined ? m[1].replace(/\\(.)/g, "$1") : m[2]!);
  return out;
}

/** `-A CHAIN … -j TARGET` lines of `iptables -S` output whose target is one of `targets`, as -D arguments. */
export function jumpsTo(ruleLines: string[], targets: Set<string>): string[][] {
  const out: string[][] = [];
  for (const line of ruleLines) {
    const words = ruleWords(line);
    if (words[0] !== "-A") continue;
    const j = words.indexOf("-j");
    if (j > 0 && targets.has(words[j + 1] ?? "")) out.push(words.slice(1));
  }
  return out;
}

/**
 * The rules of `iptables-save` output, comparable across runs: comments and counters dropped, and a table that
 * holds nothing but its built-in chains with policy ACCEPT left out (iptables-nft keeps an emptied table).
 */
export function normalizeIptablesSave(text: string): string[] {
  const out: string[] = [];
  let table: string[] = [];
  const flush = () => {
    const meaningful = table.slice(1).some((l) => !/^:\S+ ACCEPT$/.test(l) && l !== "COMMIT");
    if (meaningful) out.push(...table);
    table = [];
  };
  for (const raw of text.split("\n")) {
    const line = raw.replace(/ \[\d+:\d+\]$/, "").trim();
    if (!line || line.startsWith("#")) continue;
    if (line.startsWith("*")) flush();
    table.push(line);
  }
  flush();
  return out;
}

/** Mount points (from /proc/self/mounts text) under any of `roots` or CNI network namespaces, deepest first. */
export function mountsUnder(mountsText: string, roots: string[]): string[] {
  const points = mountsText
    .split("\n")
    .map((l) => l.split(" ")[1])
    .filter((p): p is string => !!p)
    .map((p) => p.replace(/\\040/g, " "))
    .filter((p) => p.startsWith("/run/netns/cni-") || roots.some((r) => p === r || p.startsWith(`${r}/`)));
  return [...new Set(points)].sort((a, b) => b.length - a.length);
}

// --- I/O ------------------------------------------------------------------------------------------------------

function sh(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  } catch {
    return "";
  }
}

function readSysctls(): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of SYSCTLS) {
    try {
      out[k] = readFileSync(join("/proc/sys", k), "utf8").trim();
    } catch {}
  }
  return out;
}

function listChains(): string[] {
  const out: string[] = [];
  for (const ipt of IPTABLES)
    for (const t of TABLES)
      for (const line of sh(ipt, ["-w", "-t", t, "-S"]).split("\n")) {
        const m = /^-N (\S+)/.exec(line);
        if (m) out.push(`${ipt}/${t}/${m[1]}`);
      }
  return out;
}

function cgroupHierarchies(): string[] {
  try {
    return readdirSync(CGROUP_ROOT).filter((h) => statSync(join(CGROUP_ROOT, h)).isDirectory());
  } catch {
    return [];
  }
}

function listCgroups(): string[] {
  return cgroupHierarchies().flatMap((h) =>
    CGROUP_TOPS.filter((t) => existsSync(join(CGROUP_ROOT, h, t))).map((t) => `${h}/${t}`),
  );
}

/** Every iptables and ip6tables table's rules, normalized (normalizeIptablesSave). */
export function iptablesRules(): string[] {
  return IPTABLES.flatMap((ipt) => normalizeIptablesSave(sh(`${ipt}-save`, [])).map((l) => `${ipt} ${l}`));
}

export function snapshotHost(): HostSnapshot {
  return {
    sysctls: readSysctls(),
    paths: HOST_PATHS.filter((p) => existsSync(p)),
    chains: listChains(),
    cgroups: listCgroups(),
  };
}

/** Depth-first rmdir of a cgroup tree (cgroupfs folders hold only virtual files: rmdir, not rm -r). */
function removeCgroupTree(dir: string): void {
  let entries: string[];
  try {
    entries = readdirSync(dir).filter((e) => statSync(join(dir, e)).isDirectory());
  } catch {
    return;
  }
  for (const e of entries) removeCgroupTree(join(dir, e));
  try {
    rmdirSync(dir);
  } catch {}
}

/** Kills every process still in the node's pod cgroups (the graceful path leaves none). */
export function killPodProcesses(): void {
  for (const h of cgroupHierarchies())
    for (const t of CGROUP_TOPS) {
      const root = join(CGROUP_ROOT, h, t);
      if (!existsSync(root)) continue;
      for (const pid of sh("find", [root, "-name", "cgroup.procs", "-exec", "cat", "{}", "+"]).split(/\s+/)) {
        if (!/^\d+$/.test(pid)) continue;
        try {
          process.kill(Number(pid), "SIGKILL");
        } catch {}
      }
    }
}

/** containerd's shims outlive a killed containerd: those serving the node's socket (under `roots`) go. */
export function killShims(roots: string[]): void {
  for (const pid of readdirSync("/proc").filter((d) => /^\d+$/.test(d))) {
    let args: string[];
    try {
      args = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
    } catch {
      continue;
    }
    const address = args[args.indexOf("-address") + 1] ?? "";
    if (!args[0]?.includes("containerd-shim") || !roots.some((r) => address.startsWith(`${r}/`))) continue;
    try {
      process.kill(Number(pid), "SIGKILL");
    } catch {}
  }
}

function removeIptables(before: HostSnapshot, footprint: NodeFootprint): void {
  for (const rule of footprint.forwardRules)
    while (ok("iptables", ["-w", "-C", "FORWARD", ...rule]))
      if (!ok("iptables", ["-w", "-D", "FORWARD", ...rule])) break;
  const added = newChains(before.chains, listChains());
  for (const ipt of IPTABLES)
    for (const t of TABLES) {
      const mine = new Set(added.filter((c) => c.startsWith(`${ipt}/${t}/`)).map((c) => c.split("/")[2]!));
      if (mine.size === 0) continue;
      for (const rule of jumpsTo(sh(ipt, ["-w", "-t", t, "-S"]).split("\n"), mine))
        ok(ipt, ["-w", "-t", t, "-D", ...rule]);
      for (const c of mine) ok(ipt, ["-w", "-t", t, "-F", c]);
      for (const c of mine) ok(ipt, ["-w", "-t", t, "-X", c]);
    }
}

function ok(cmd: string, args: string[]): boolean {
  try {
    execFileSync(cmd, args, { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

/**
 * Puts the machine back as `before` found it, removing the node's `footprint`. Call after the node's daemons
 * stopped (or were killed); safe to call twice.
 */
export function restoreHost(before: HostSnapshot, footprint: NodeFootprint): string[] {
  const done: string[] = [];
  killPodProcesses();
  killShims(footprint.mountRoots);
  for (const m of mountsUnder(readFileSync("/proc/self/mounts", "utf8"), [...footprint.mountRoots, ...HOST_PATHS]))
    if (ok("umount", [m]) || ok("umount", ["-l", m])) done.push(`umount ${m}`);
  for (const ns of sh("ip", ["netns", "list"]).split("\n")) {
    const name = ns.split(" ")[0];
    if (name?.startsWith("cni-") && ok("ip", ["netns", "delete", name])) done.push(`netns ${name}`);
  }
  for (const b of footprint.bridges) if (ok("ip", ["link", "delete", b])) done.push(`link ${b}`);
  removeIptables(before, footprint);
  for (const [k, v] of sysctlsToRestore(before.sysctls, readSysctls())) {
    try {
      writeFileSync(join("/proc/sys", k), v);
      done.push(`sysctl ${k.replace(/\//g, ".")}=${v}`);
    } catch {}
  }
  for (const cg of listCgroups()) if (!before.cgroups.includes(cg)) removeCgroupTree(join(CGROUP_ROOT, cg));
  const left = mountsUnder(readFileSync("/proc/self/mounts", "utf8"), HOST_PATHS);
  for (const p of HOST_PATHS)
    // Never recurse into a folder that still holds a mount.
    if (!before.paths.includes(p) && existsSync(p) && !left.some((m) => m.startsWith(`${p}/`))) {
      rmSync(p, { recursive: true, force: true });
      done.push(`rm ${p}`);
    }
  return done;
}
