/**
 * Which isolation the python grader workers can get on this machine, found by trying it.
 *
 * - root: `unshare --net --pid --ipc --fork --mount-proc --kill-child` (no network, own /proc, killing the
 *   worker kills everything it started), and the worker switches to an unprivileged uid (one per pool slot)
 *   after setting its rlimits, so RLIMIT_NPROC applies and nothing of the sidecar's is readable.
 * - not root: the same inside a user namespace (`--user --map-root-user`) where the kernel allows it.
 * - otherwise (no unshare, namespaces refused): the plain process, rlimits only; logged as a warning.
 */
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";

export interface IsolationPlan {
  /** Command prefix that creates the namespaces (the unshare binary and its flags), or [] for none. */
  prefix: string[];
  /** Namespaces the prefix creates, e.g. ["userns", "pidns", "netns", "ipcns"]. */
  namespaces: string[];
  /** The sidecar is root: each worker switches to an unprivileged uid. */
  dropUid: boolean;
}

const UNSHARE_PATHS = ["/usr/bin/unshare", "/bin/unshare", "/usr/sbin/unshare", "/sbin/unshare"];

export function findUnshare(): string | undefined {
  return UNSHARE_PATHS.find((p) => existsSync(p));
}

function runs(cmd: string, args: string[], env: NodeJS.ProcessEnv, cwd: string): Promise<boolean> {
  return new Promise((resolve) => {
    let done = false;
    const finish = (ok: boolean) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      resolve(ok);
    };
    const child = spawn(cmd, args, { env, cwd, stdio: "ignore" });
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      finish(false);
    }, 15_000);
    child.on("error", () => finish(false));
    child.on("exit", (code) => finish(code === 0));
  });
}

/** Tries the strongest isolation first and returns the first that works with this python. */
export async function probeIsolation(
  python: string,
  isolateNetwork: boolean,
  env: NodeJS.ProcessEnv,
  cwd: string,
): Promise<IsolationPlan> {
  const root = process.getuid?.() === 0;
  const unshare = findUnshare();
  if (!unshare) return { prefix: [], namespaces: [], dropUid: root };
  const user = root ? [] : ["--user", "--map-root-user"];
  const userNs = root ? [] : ["userns"];
  const net = isolateNetwork ? ["--net"] : [];
  const netNs = isolateNetwork ? ["netns"] : [];
  const pid = ["--pid", "--fork", "--mount-proc", "--kill-child=SIGKILL"];
  const candidates: Array<{ flags: string[]; namespaces: string[] }> = [
    { flags: [...user, ...net, "--ipc", ...pid], namespaces: [...userNs, "pidns", ...netNs, "ipcns"] },
    { flags: [...user, ...net, ...pid], namespaces: [...userNs, "pidns", ...netNs] },
  ];
  if (isolateNetwork) candidates.push({ flags: [...user, "--net"], namespaces: [...userNs, "netns"] });
  candidates.push({ flags: [...user, ...pid], namespaces: [...userNs, "pidns"] });
  for (const c of candidates) {
    if (await runs(unshare, [...c.flags, python, "-I", "-c", "pass"], env, cwd)) {
      return { prefix: [unshare, ...c.flags], namespaces: c.namespaces, dropUid: root };
    }
  }
  return { prefix: [], namespaces: [], dropUid: root };
}
