/**
 * What the process kubelet derives from a pod spec before it runs anything: the host command for an image,
 * the container environment (env with $(VAR) expansion, fieldRef / resourceFieldRef / secretKeyRef /
 * configMapKeyRef, envFrom), volume contents written as directories (configMap, secret, emptyDir, PVC,
 * hostPath, downwardAPI, projected incl. serviceAccountToken), and resource quantities for scheduling.
 */
import { chmodSync, existsSync, mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { type Api, ApiError, type KObject } from "./api.js";

/** How an image runs on this host: its ENTRYPOINT and CMD as host commands. */
export interface ImageEntry {
  entrypoint?: string[];
  cmd?: string[];
  env?: Record<string, string>;
}

/** A reason the kubelet reports in a container's waiting state (and keeps retrying). */
export class ContainerConfigError extends Error {
  constructor(
    readonly reason: string,
    message: string,
  ) {
    super(message);
  }
}

function globToRegExp(pattern: string): RegExp {
  return new RegExp(
    `^${pattern
      .split("*")
      .map((s) => s.replace(/[.+?^${}()|[\]\\]/g, "\\$&"))
      .join(".*")}$`,
  );
}

export function resolveImage(images: Record<string, ImageEntry>, image: string): ImageEntry | undefined {
  for (const [pattern, entry] of Object.entries(images)) if (globToRegExp(pattern).test(image)) return entry;
  return undefined;
}

/** The argv to run: command overrides ENTRYPOINT, args override CMD (args ignore CMD when command is set). */
export function containerArgv(c: KObject, entry: ImageEntry): string[] {
  const command: string[] = c.command?.length ? c.command : (entry.entrypoint ?? []);
  const args: string[] = c.args?.length ? c.args : c.command?.length ? [] : (entry.cmd ?? []);
  return [...command, ...args];
}

/** Kubernetes' $(VAR) expansion: $$ escapes, unknown references stay as written. */
export function expand(s: string, vars: Record<string, string>): string {
  return s.replace(/\$\$|\$\(([^)]*)\)/g, (m, name: string | undefined) => {
    if (m === "$$") return "$";
    return name !== undefined && name in vars ? (vars[name] as string) : m;
  });
}

const SUFFIX: Record<string, number> = {
  n: 1e-9,
  u: 1e-6,
  m: 1e-3,
  "": 1,
  k: 1e3,
  M: 1e6,
  G: 1e9,
  T: 1e12,
  P: 1e15,
  E: 1e18,
  Ki: 1024,
  Mi: 1024 ** 2,
  Gi: 1024 ** 3,
  Ti: 1024 ** 4,
  Pi: 1024 ** 5,
  Ei: 1024 ** 6,
};

export function parseQuantity(q: string | number | undefined): number {
  if (q === undefined) return 0;
  if (typeof q === "number") return q;
  const m = /^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)$/.exec(q.trim());
  if (!m) throw new Error(`bad quantity ${q}`);
  const mult = SUFFIX[m[2] ?? ""];
  if (mult === undefined) throw new Error(`bad quantity suffix ${q}`);
  return Number(m[1]) * mult;
}

/** Effective pod requests as the scheduler counts them (containers + sidecars, at least the largest init). */
export function podRequests(pod: KObject): Record<string, number> {
  const req = (c: KObject) => {
    const out: Record<string, number> = {};
    for (const [k, v] of Object.entries({ ...(c.resources?.limits ?? {}), ...(c.resources?.requests ?? {}) })) {
      out[k] = parseQuantity(v as string);
    }
    return out;
  };
  const sum: Record<string, number> = {};
  const add = (r: Record<string, number>) => {
    for (const [k, v] of Object.entries(r)) sum[k] = (sum[k] ?? 0) + v;
  };
  for (const c of pod.spec?.containers ?? []) add(req(c));
  const sidecarsSoFar: Record<string, number> = {};
  let initMax: Record<string, number> = {};
  for (const c of pod.spec?.initContainers ?? []) {
    const r = req(c);
    if (c.restartPolicy === "Always") {
      add(r);
      for (const [k, v] of Object.entries(r)) sidecarsSoFar[k] = (sidecarsSoFar[k] ?? 0) + v;
    } else {
      const total: Record<string, number> = { ...sidecarsSoFar };
      for (const [k, v] of Object.entries(r)) total[k] = (total[k] ?? 0) + v;
      for (const [k, v] of Object.entries(total)) initMax = { ...initMax, [k]: Math.max(initMax[k] ?? 0, v) };
    }
  }
  for (const [k, v] of Object.entries(initMax)) sum[k] = Math.max(sum[k] ?? 0, v);
  for (const [k, v] of Object.entries(pod.spec?.overhead ?? {})) sum[k] = (sum[k] ?? 0) + parseQuantity(v as string);
  return sum;
}

/** Reads config maps and secrets of one namespace once per pod start. */
export class Lookups {
  private readonly cache = new Map<string, KObject | undefined>();
  constructor(
    private readonly api: Api,
    private readonly ns: string,
  ) {}
  async get(kind: "configmaps" | "secrets" | "persistentvolumeclaims", name: string): Promise<KObject | undefined> {
    const key = `${kind}/${name}`;
    if (!this.cache.has(key)) {
      this.cache.set(key, await this.api.getOptional(`/api/v1/namespaces/${this.ns}/${key}`));
    }
    return this.cache.get(key);
  }
  /** The value of one key, undefined when optional and absent. */
  async key(kind: "configmaps" | "secrets", name: string, key: string, optional: boolean): Promise<string | undefined> {
    const obj = await this.get(kind, name);
    const what = kind === "secrets" ? "secret" : "configmap";
    if (!obj) {
      if (optional) return undefined;
      throw new ContainerConfigError("CreateContainerConfigError", `${what} "${name}" not found`);
    }
    const data = dataOf(kind, obj);
    if (!(key in data)) {
      if (optional) return undefined;
      throw new ContainerConfigError(
        "CreateContainerConfigError",
        `couldn't find key ${key} in ${kind === "secrets" ? "Secret" : "ConfigMap"} ${this.ns}/${name}`,
      );
    }
    return (data[key] as Buffer).toString("utf8");
  }
}

export function dataOf(kind: "configmaps" | "secrets", obj: KObject): Record<string, Buffer> {
  const out: Record<string, Buffer> = {};
  if (kind === "secrets") {
    for (const [k, v] of Object.entries(obj.data ?? {})) out[k] = Buffer.from(v as string, "base64");
    for (const [k, v] of Object.entries(obj.stringData ?? {})) out[k] = Buffer.from(v as string, "utf8");
  } else {
    for (const [k, v] of Object.entries(obj.data ?? {})) out[k] = Buffer.from(v as string, "utf8");
    for (const [k, v] of Object.entries(obj.binaryData ?? {})) out[k] = Buffer.from(v as string, "base64");
  }
  return out;
}

function goQuote(s: string): string {
  return JSON.stringify(s);
}

/** metadata.*, spec.*, status.* field paths the downward API supports. */
export function fieldRefValue(pod: KObject, path: string, volume: boolean): string {
  const m = /^metadata\.(labels|annotations)\['(.*)'\]$/.exec(path);
  if (m) return String(pod.metadata?.[m[1] as string]?.[m[2] as string] ?? "");
  switch (path) {
    case "metadata.name":
      return pod.metadata.name;
    case "metadata.namespace":
      return pod.metadata.namespace;
    case "metadata.uid":
      return pod.metadata.uid;
    case "metadata.labels":
    case "metadata.annotations": {
      if (!volume) throw new ContainerConfigError("CreateContainerConfigError", `${path} is only allowed in volumes`);
      const obj: Record<string, string> = pod.metadata?.[path.slice("metadata.".length)] ?? {};
      return Object.keys(obj)
        .sort()
        .map((k) => `${k}=${goQuote(obj[k] as string)}`)
        .join("\n");
    }
    case "spec.nodeName":
      return pod.spec.nodeName ?? "";
    case "spec.serviceAccountName":
      return pod.spec.serviceAccountName ?? "";
    case "status.hostIP":
    case "status.hostIPs":
      return pod.status?.hostIP ?? "";
    case "status.podIP":
    case "status.podIPs":
      return pod.status?.podIP ?? "";
    default:
      throw new ContainerConfigError("CreateContainerConfigError", `unsupported fieldRef ${path}`);
  }
}

export function resourceFieldValue(
  pod: KObject,
  ref: KObject,
  containerName: string | undefined,
  allocatable: Record<string, string>,
): string {
  const name = ref.containerName ?? containerName;
  const c = [...(pod.spec.containers ?? []), ...(pod.spec.initContainers ?? [])].find((x: KObject) => x.name === name);
  const [kind, resource] = String(ref.resource).split(".") as [string, string];
  const raw = c?.resources?.[kind]?.[resource] ?? (kind === "limits" ? allocatable[resource] : undefined);
  const divisor = parseQuantity(ref.divisor ?? "1") || 1;
  return String(Math.ceil(parseQuantity(raw ?? "0") / divisor));
}

export async function containerEnv(
  c: KObject,
  pod: KObject,
  lookups: Lookups,
  base: Record<string, string>,
  allocatable: Record<string, string>,
): Promise<Record<string, string>> {
  const env: Record<string, string> = { ...base };
  for (const from of c.envFrom ?? []) {
    const prefix = from.prefix ?? "";
    const ref = from.configMapRef ?? from.secretRef;
    const kind = from.configMapRef ? "configmaps" : "secrets";
    const obj = await lookups.get(kind, ref.name);
    if (!obj) {
      if (ref.optional) continue;
      throw new ContainerConfigError(
        "CreateContainerConfigError",
        `${kind === "secrets" ? "secret" : "configmap"} "${ref.name}" not found`,
      );
    }
    for (const [k, v] of Object.entries(dataOf(kind, obj))) env[prefix + k] = v.toString("utf8");
  }
  for (const e of c.env ?? []) {
    if (e.valueFrom) {
      const vf = e.valueFrom;
      let v: string | undefined;
      if (vf.fieldRef) v = fieldRefValue(pod, vf.fieldRef.fieldPath, false);
      else if (vf.resourceFieldRef) v = resourceFieldValue(pod, vf.resourceFieldRef, c.name, allocatable);
      else if (vf.secretKeyRef)
        v = await lookups.key("secrets", vf.secretKeyRef.name, vf.secretKeyRef.key, !!vf.secretKeyRef.optional);
      else if (vf.configMapKeyRef) {
        v = await lookups.key(
          "configmaps",
          vf.configMapKeyRef.name,
          vf.configMapKeyRef.key,
          !!vf.configMapKeyRef.optional,
        );
      } else throw new ContainerConfigError("CreateContainerConfigError", `unsupported valueFrom in env ${e.name}`);
      if (v !== undefined) env[e.name] = v;
    } else {
      env[e.name] = expand(e.value ?? "", env);
    }
  }
  return env;
}

function writeItems(dir: string, files: { path: string; data: Buffer; mode?: number }[], defaultMode: number): void {
  for (const f of files) {
    const p = join(dir, f.path);
    mkdirSync(dirname(p), { recursive: true });
    writeFileSync(p, f.data);
    chmodSync(p, f.mode ?? defaultMode);
  }
}

function keyFiles(data: Record<string, Buffer>, items: KObject[] | undefined, what: string) {
  if (!items?.length) return Object.entries(data).map(([k, v]) => ({ path: k, data: v }));
  return items.map((it) => {
    const d = data[it.key];
    if (!d) throw new ContainerConfigError("FailedMount", `configmap/secret ${what}: key ${it.key} not found`);
    return { path: it.path, data: d, mode: it.mode };
  });
}

export interface VolumeContext {
  api: Api;
  lookups: Lookups;
  pod: KObject;
  podDir: string;
  pvcRoot: string;
  allocatable: Record<string, string>;
}

async function sourceFiles(src: KObject, ctx: VolumeContext): Promise<{ path: string; data: Buffer; mode?: number }[]> {
  const { lookups, pod } = ctx;
  if (src.configMap || src.secret) {
    const isCm = !!src.configMap;
    const ref = src.configMap ?? src.secret;
    const name = isCm ? ref.name : (ref.secretName ?? ref.name);
    const kind = isCm ? "configmaps" : "secrets";
    const obj = await lookups.get(kind, name);
    if (!obj) {
      if (ref.optional) return [];
      throw new ContainerConfigError("FailedMount", `${isCm ? "configmap" : "secret"} "${name}" not found`);
    }
    return keyFiles(dataOf(kind, obj), ref.items, name);
  }
  if (src.downwardAPI) {
    return (src.downwardAPI.items ?? []).map((it: KObject) => ({
      path: it.path,
      mode: it.mode,
      data: Buffer.from(
        it.fieldRef
          ? fieldRefValue(pod, it.fieldRef.fieldPath, true)
          : resourceFieldValue(pod, it.resourceFieldRef, undefined, ctx.allocatable),
      ),
    }));
  }
  if (src.serviceAccountToken) {
    const t = src.serviceAccountToken;
    const sa = pod.spec.serviceAccountName ?? "default";
    const res = await ctx.api.post(`/api/v1/namespaces/${pod.metadata.namespace}/serviceaccounts/${sa}/token`, {
      apiVersion: "authentication.k8s.io/v1",
      kind: "TokenRequest",
      spec: {
        audiences: t.audience ? [t.audience] : [],
        expirationSeconds: t.expirationSeconds ?? 3607,
        boundObjectRef: { apiVersion: "v1", kind: "Pod", name: pod.metadata.name, uid: pod.metadata.uid },
      },
    });
    return [{ path: t.path, data: Buffer.from(res.status.token) }];
  }
  throw new ContainerConfigError("FailedMount", `unsupported projected source ${Object.keys(src).join(",")}`);
}

/** Writes one volume's contents; returns the host directory (or file tree root) to bind-mount. */
export async function materializeVolume(v: KObject, ctx: VolumeContext): Promise<string> {
  const dir = join(ctx.podDir, "volumes", v.name);
  if (v.emptyDir) {
    mkdirSync(dir, { recursive: true });
    return dir;
  }
  if (v.hostPath) {
    if (v.hostPath.type === "DirectoryOrCreate") mkdirSync(v.hostPath.path, { recursive: true });
    if (!existsSync(v.hostPath.path) && v.hostPath.type && v.hostPath.type !== "") {
      throw new ContainerConfigError(
        "FailedMount",
        `hostPath type check failed: ${v.hostPath.path} is not a ${v.hostPath.type}`,
      );
    }
    return v.hostPath.path;
  }
  if (v.persistentVolumeClaim) {
    const claim = v.persistentVolumeClaim.claimName;
    const pvc = await ctx.lookups.get("persistentvolumeclaims", claim);
    if (!pvc) throw new ContainerConfigError("FailedMount", `persistentvolumeclaim "${claim}" not found`);
    const p = join(ctx.pvcRoot, ctx.pod.metadata.namespace, claim);
    mkdirSync(p, { recursive: true });
    return p;
  }
  mkdirSync(dir, { recursive: true });
  if (v.configMap || v.secret || v.downwardAPI) {
    const defaultMode = (v.configMap ?? v.secret ?? v.downwardAPI).defaultMode ?? 0o644;
    writeItems(dir, await sourceFiles(v, ctx), defaultMode);
    return dir;
  }
  if (v.projected) {
    const defaultMode = v.projected.defaultMode ?? 0o644;
    for (const src of v.projected.sources ?? []) writeItems(dir, await sourceFiles(src, ctx), defaultMode);
    return dir;
  }
  throw new ContainerConfigError(
    "FailedMount",
    `volume ${v.name}: unsupported volume type ${Object.keys(v)
      .filter((k) => k !== "name")
      .join(",")}`,
  );
}

export function isNotFound(e: unknown): boolean {
  return e instanceof ApiError && e.status === 404;
}
