/**
 * Helm for the chart tests: the binary scripts/setup.d/45-helm.sh builds from helm.sh/helm/v3 at a pinned
 * version into ${RFT_HELM_CACHE:-~/.cache/rft-helm}/<version>/bin/helm (built here if missing, like the
 * Kubernetes binaries), and `helm template` output parsed into objects.
 */
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { parseAllDocuments } from "yaml";
import { REPO_ROOT } from "../k8s/binaries.js";
import { run, type RunResult } from "../observability/tools.js";

export const HELM_VERSION = "v3.22.0"; // as in scripts/setup.d/45-helm.sh
export const CHART = join(REPO_ROOT, "helm/rft-operator");
export const VALUES = join(REPO_ROOT, "test/helm/values");

export function helmBinary(): string {
  const bin = join(process.env.RFT_HELM_CACHE ?? join(homedir(), ".cache/rft-helm"), HELM_VERSION, "bin/helm");
  if (existsSync(bin)) return bin;
  const r = spawnSync("bash", [join(REPO_ROOT, "scripts/setup.d/45-helm.sh")], {
    cwd: REPO_ROOT,
    stdio: ["ignore", process.stderr, process.stderr],
  });
  if (r.status !== 0 || !existsSync(bin))
    throw new Error(`helm ${HELM_VERSION} missing and 45-helm.sh exited ${r.status}`);
  return bin;
}

/** Runs helm; the chart's symlinked CRD makes helm print one "found symbolic link" line, dropped here. */
export async function helm(...args: string[]): Promise<RunResult> {
  const r = await run(helmBinary(), args, { cwd: REPO_ROOT });
  r.stderr = r.stderr
    .split("\n")
    .filter((l) => !/found symbolic link in path: .*finetunejobs\.rft\.dev\.yaml/.test(l))
    .join("\n");
  return r;
}

export type K = Record<string, any>;

/** helm template of the chart into `namespace`; throws with helm's message on failure. */
export async function template(args: string[] = [], namespace = "rft-system"): Promise<{ text: string; objects: K[] }> {
  const r = await helm("template", "rft", CHART, "--namespace", namespace, ...args);
  if (r.code !== 0) throw new Error(`helm template ${args.join(" ")}: ${r.stderr}`);
  const objects = parseAllDocuments(r.stdout)
    .map((d) => d.toJSON() as K)
    .filter((o) => o && typeof o === "object");
  return { text: r.stdout, objects };
}

export const find = (objects: K[], kind: string, name?: string) =>
  objects.filter((o) => o.kind === kind && (name === undefined || o.metadata?.name === name));
