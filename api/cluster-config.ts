/**
 * The cluster config of `rft api --cluster FILE` (YAML or JSON): which namespace each API key's project runs
 * its FineTuneJobs in (with that namespace's model and checkpoint claims), the base models on the model claim,
 * the URL trainer pods fetch training files from, and trainer defaults. Bad input names the file and field.
 */
import { readFileSync } from "node:fs";
import { parse } from "yaml";
import type { FineTuneJob } from "../proto/finetunejob.js";
import type { ProjectTarget } from "./cluster-map.js";

export interface ClusterConfig {
  projects: Record<string, ProjectTarget>;
  /** Base model name (what clients send as `model`) → its directory on every project's model claim. */
  models: Record<string, string>;
  /** How trainer pods reach this server, e.g. `http://rft-rft-operator-api.rft-system.svc:8080`. */
  datasetBaseUrl: string;
  trainer?: FineTuneJob["spec"]["trainer"];
}

export class ClusterConfigError extends Error {}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const PROJECT = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === "object" && !Array.isArray(v);

/** Checks a parsed config; every problem is `<label>: <field>: <why>`, all of them in one error. */
export function checkClusterConfig(v: unknown, label: string): ClusterConfig {
  const issues: string[] = [];
  const bad = (field: string, why: string) => issues.push(`${label}: ${field}: ${why}`);
  if (!isObject(v)) throw new ClusterConfigError(`${label}: want a mapping with projects, models, datasetBaseUrl`);
  for (const k of Object.keys(v))
    if (!["projects", "models", "datasetBaseUrl", "trainer"].includes(k)) bad(k, "unknown field");
  const projects = checkProjects(v.projects, bad);
  checkModels(v.models, bad);
  if (typeof v.datasetBaseUrl !== "string" || !/^https?:\/\/[^/?#]+(\/[^?#]*)?$/.test(v.datasetBaseUrl))
    bad("datasetBaseUrl", "want the http(s) URL trainer pods reach this server at (no query)");
  if (v.trainer !== undefined && !isObject(v.trainer)) bad("trainer", "want the FineTuneJob's spec.trainer fields");
  if (issues.length > 0) throw new ClusterConfigError(issues.join("\n"));
  return {
    projects,
    models: v.models as Record<string, string>,
    datasetBaseUrl: (v.datasetBaseUrl as string).replace(/\/+$/, ""),
    ...(v.trainer ? { trainer: v.trainer as ClusterConfig["trainer"] } : {}),
  };
}

type Bad = (field: string, why: string) => void;

/** `projects`: project → {namespace, modelClaim[, checkpointClaim]}, each a Kubernetes name. */
function checkProjects(v: unknown, bad: Bad): Record<string, ProjectTarget> {
  const projects: Record<string, ProjectTarget> = {};
  if (!isObject(v) || Object.keys(v).length === 0)
    bad("projects", "want a mapping of at least one project → {namespace, modelClaim[, checkpointClaim]}");
  else
    for (const [p, t] of Object.entries(v)) {
      const f = `projects.${p}`;
      if (!PROJECT.test(p)) bad(f, "a project is 1-63 letters, digits, . _ - (a label value)");
      if (!isObject(t)) {
        bad(f, "want {namespace, modelClaim[, checkpointClaim]}");
        continue;
      }
      for (const k of Object.keys(t))
        if (!["namespace", "modelClaim", "checkpointClaim"].includes(k)) bad(`${f}.${k}`, "unknown field");
      for (const k of ["namespace", "modelClaim", "checkpointClaim"] as const) {
        const x = t[k];
        if (x === undefined && k === "checkpointClaim") continue;
        if (typeof x !== "string" || x.length > 63 || !DNS_LABEL.test(x))
          bad(`${f}.${k}`, "want a Kubernetes name (lowercase letters, digits, -; at most 63)");
      }
      projects[p] = t as unknown as ProjectTarget;
    }
  return projects;
}

/** `models`: model name → a relative directory on the model claim. */
function checkModels(v: unknown, bad: Bad): void {
  if (!isObject(v) || Object.keys(v).length === 0)
    bad("models", "want a mapping of at least one model name → its directory on the model claim");
  else
    for (const [m, dir] of Object.entries(v))
      if (typeof dir !== "string" || dir === "" || dir.startsWith("/") || dir.split("/").includes(".."))
        bad(`models.${m}`, "want a relative directory on the model claim (no '..')");
}

export function loadClusterConfig(file: string): ClusterConfig {
  let v: unknown;
  try {
    v = parse(readFileSync(file, "utf8"), { maxAliasCount: 0 });
  } catch (e) {
    throw new ClusterConfigError(`${file}: ${(e as Error).message}`);
  }
  return checkClusterConfig(v, file);
}
