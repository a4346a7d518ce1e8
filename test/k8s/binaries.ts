/**
 * Where the control-plane binaries are: ${RFT_K8S_CACHE:-~/.cache/rft-k8s}/<version>/bin, the version read
 * from test/k8s/build/go.mod. `ensureBinaries()` runs scripts/setup.d/40-k8s.sh when any is missing (a build
 * of tens of minutes on a 2-core machine) and fails with its output when that does not produce them.
 */
import { spawnSync } from "node:child_process";
import { accessSync, constants, readFileSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");

export interface Binaries {
  version: string;
  dir: string;
  etcd: string;
  kubeApiserver: string;
  kubeControllerManager: string;
  kubectl: string;
}

export function kubernetesVersion(): string {
  const mod = readFileSync(join(REPO_ROOT, "test/k8s/build/go.mod"), "utf8");
  const m = /^\s*k8s\.io\/kubernetes\s+(v\S+)/m.exec(mod);
  if (!m?.[1]) throw new Error("test/k8s/build/go.mod does not require k8s.io/kubernetes");
  return m[1];
}

export function binaries(): Binaries {
  const version = kubernetesVersion();
  const dir = join(process.env.RFT_K8S_CACHE ?? join(homedir(), ".cache/rft-k8s"), version, "bin");
  return {
    version,
    dir,
    etcd: join(dir, "etcd"),
    kubeApiserver: join(dir, "kube-apiserver"),
    kubeControllerManager: join(dir, "kube-controller-manager"),
    kubectl: join(dir, "kubectl"),
  };
}

function missing(b: Binaries): string[] {
  return [b.etcd, b.kubeApiserver, b.kubeControllerManager, b.kubectl].filter((p) => {
    try {
      accessSync(p, constants.X_OK);
      return false;
    } catch {
      return true;
    }
  });
}

export function ensureBinaries(): Binaries {
  const b = binaries();
  if (missing(b).length === 0) return b;
  const r = spawnSync("bash", [join(REPO_ROOT, "scripts/setup.d/40-k8s.sh")], {
    cwd: REPO_ROOT,
    stdio: ["ignore", process.stderr, process.stderr],
  });
  const still = missing(b);
  if (r.status !== 0 || still.length > 0) {
    throw new Error(
      `Kubernetes ${b.version} binaries missing (${still.join(", ")}) and scripts/setup.d/40-k8s.sh exited ${r.status}`,
    );
  }
  return b;
}
