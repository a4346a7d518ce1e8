/**
 * Kueue and JobSet on the harness: the real controllers (built by scripts/setup.d/50-kueue-jobset.sh) as host
 * processes against the cluster's kube-apiserver, the way they would run in a cluster minus the Deployment:
 *
 * - their CRDs and webhook configurations from the module's own `config/default` (rendered at build time with
 *   `kubectl kustomize`), with every webhook, CRD conversion webhooks included, pointed at
 *   `https://127.0.0.1:PORT/<path>` with the cluster's CA as caBundle (the apiserver runs on loopback, so no
 *   Service, endpoints or kube-proxy are needed); Deployments, Services, RBAC and cert-manager objects dropped;
 * - a serving certificate for 127.0.0.1 signed by the cluster's CA; internal cert management, leader election
 *   and metrics off; the admin kubeconfig instead of a ServiceAccount;
 * - Kueue with only the batch/job and JobSet integrations (and only their webhooks and its own CRDs' ones), and
 *   VisibilityOnDemand off (it would start an aggregated API server).
 *
 * Kueue v0.19 reads a metrics certificate from the hard-coded /etc/kueue/metrics/certs even with metrics off,
 * and exits without one: startGang writes one there when /etc/kueue is absent and removes it on close.
 *
 *   const gang = await startGang(cluster);   // JobSet, then Kueue; both ready
 *   ...
 *   await gang.close();                      // before cluster.close()
 */
import { spawnSync } from "node:child_process";
import {
  accessSync,
  constants,
  copyFileSync,
  existsSync,
  mkdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { parseAllDocuments } from "yaml";
import type { KObject } from "./api.js";
import { REPO_ROOT } from "./binaries.js";
import { type Cluster, type Component, FatalError, freePort, launch, tail, waitFor } from "./cluster.js";
import { signServing } from "./pki.js";

const SETUP_STEP = join(REPO_ROOT, "scripts/setup.d/50-kueue-jobset.sh");

/** The versions the setup step builds (its KUEUE_VERSION= and JOBSET_VERSION= lines). */
export function gangVersions(): { kueue: string; jobset: string } {
  const text = readFileSync(SETUP_STEP, "utf8");
  const get = (name: string) => {
    const m = new RegExp(`^${name}=(v\\S+)$`, "m").exec(text);
    if (!m?.[1]) throw new Error(`${SETUP_STEP} has no ${name}=vX.Y.Z line`);
    return m[1];
  };
  return { kueue: get("KUEUE_VERSION"), jobset: get("JOBSET_VERSION") };
}

export interface GangBinaries {
  kueue: { bin: string; manifests: string; version: string };
  jobset: { bin: string; manifests: string; version: string };
}

export function gangBinaries(): GangBinaries {
  const v = gangVersions();
  const cache = process.env.RFT_GANG_CACHE ?? join(homedir(), ".cache/rft-gang");
  const at = (name: string, version: string) => ({
    bin: join(cache, `${name}-${version}`, name),
    manifests: join(cache, `${name}-${version}`, "manifests.yaml"),
    version,
  });
  return { kueue: at("kueue", v.kueue), jobset: at("jobset", v.jobset) };
}

function missing(b: GangBinaries): string[] {
  return [b.kueue.bin, b.kueue.manifests, b.jobset.bin, b.jobset.manifests].filter((p) => {
    try {
      accessSync(p, constants.R_OK);
      return false;
    } catch {
      return true;
    }
  });
}

/** The binaries, built by the setup step first when any is missing (minutes: Kueue is ~11 CPU-minutes). */
export function ensureGangBinaries(): GangBinaries {
  const b = gangBinaries();
  if (missing(b).length === 0) return b;
  const r = spawnSync("bash", [SETUP_STEP], { cwd: REPO_ROOT, stdio: ["ignore", process.stderr, process.stderr] });
  const still = missing(b);
  if (r.status !== 0 || still.length > 0) {
    throw new Error(`Kueue/JobSet missing (${still.join(", ")}) and ${SETUP_STEP} exited ${r.status}`);
  }
  return b;
}

export interface LocalOptions {
  /** https://127.0.0.1:PORT of the controller's webhook server. */
  url: string;
  /** PEM of the CA that signed its serving certificate. */
  caPem: string;
  /** Keep only the admission webhooks whose path matches (all when absent). */
  keepPath?: RegExp;
}

/**
 * A controller's in-cluster manifests → what it needs as a host process (pure): its Namespace, CRDs (conversion
 * webhooks pointed at `url`) and webhook configurations (each webhook's Service reference replaced by `url` +
 * its path, caBundle = the CA; configurations left with no webhook dropped). Everything else is dropped.
 */
export function localManifests(docs: KObject[], o: LocalOptions): KObject[] {
  const caBundle = Buffer.from(o.caPem).toString("base64");
  const out: KObject[] = [];
  for (const doc of docs) {
    if (doc?.kind === "Namespace") out.push(doc);
    else if (doc?.kind === "CustomResourceDefinition") out.push(localCrd(doc, o.url, caBundle));
    else if (doc?.kind === "MutatingWebhookConfiguration" || doc?.kind === "ValidatingWebhookConfiguration") {
      const webhooks = (doc.webhooks ?? [])
        .filter((w: KObject) => !o.keepPath || o.keepPath.test(w.clientConfig?.service?.path ?? "/"))
        .map((w: KObject) => ({
          ...w,
          clientConfig: { url: `${o.url}${w.clientConfig?.service?.path ?? "/"}`, caBundle },
        }));
      if (webhooks.length) out.push({ ...doc, metadata: withoutAnnotations(doc.metadata), webhooks });
    }
  }
  return out;
}

function withoutAnnotations(m: KObject): KObject {
  const { annotations: _drop, ...rest } = m ?? {};
  return rest;
}

function localCrd(doc: KObject, url: string, caBundle: string): KObject {
  const crd: KObject = { ...doc, metadata: withoutAnnotations(doc.metadata) }; // cert-manager's inject-ca-from
  const conv = doc.spec?.conversion;
  if (conv?.strategy === "Webhook") {
    const path = conv.webhook?.clientConfig?.service?.path ?? "/convert";
    crd.spec = {
      ...doc.spec,
      conversion: { ...conv, webhook: { ...conv.webhook, clientConfig: { url: `${url}${path}`, caBundle } } },
    };
  }
  return crd;
}

export interface Gang {
  /** Namespaced paths of the controllers' logs (DIR/logs/{jobset,kueue}.log). */
  logs: { kueue?: string; jobset?: string };
  /** Deletes the webhook configurations (so the cluster keeps working), stops the controllers, cleans /etc/kueue. */
  close(): Promise<void>;
}

export interface GangOptions {
  /** Start JobSet (default true). */
  jobset?: boolean;
  /** Start Kueue (default true; with JobSet's integration when JobSet runs). */
  kueue?: boolean;
}

interface Started {
  component: Component;
  webhookConfigs: string[];
}

/** Starts JobSet, then Kueue, against `cluster`; resolves once both answer /readyz. */
export async function startGang(cluster: Cluster, o: GangOptions = {}): Promise<Gang> {
  const bins = ensureGangBinaries();
  const dir = join(cluster.dir, "gang");
  mkdirSync(dir, { recursive: true });
  const tls = signServing(join(cluster.dir, "pki"), "gang-webhooks");
  const certDir = join(dir, "certs");
  mkdirSync(certDir, { recursive: true });
  copyFileSync(tls.cert, join(certDir, "tls.crt"));
  copyFileSync(tls.key, join(certDir, "tls.key"));
  const started: Started[] = [];
  let cleanEtc = () => {};
  const logs: Gang["logs"] = {};
  const close = async () => {
    const configs = started.flatMap((s) => s.webhookConfigs);
    if (configs.length) {
      await cluster.kubectl("delete", ...configs, "--ignore-not-found", "--wait=false").catch(() => {});
    }
    for (const s of [...started].reverse()) await s.component.stop();
    cleanEtc();
  };
  try {
    const ctx = { cluster, dir, certDir };
    if (o.jobset !== false) {
      const s = await startJobSet(ctx, bins.jobset);
      started.push(s);
      logs.jobset = s.component.logFile;
    }
    if (o.kueue !== false) {
      cleanEtc = kueueMetricsCerts(certDir);
      const s = await startKueue(ctx, bins.kueue, o.jobset !== false);
      started.push(s);
      logs.kueue = s.component.logFile;
    }
    return { logs, close };
  } catch (e) {
    await close().catch(() => {});
    throw e;
  }
}

interface Ctx {
  cluster: Cluster;
  dir: string;
  certDir: string;
}

async function startJobSet(c: Ctx, b: GangBinaries["jobset"]): Promise<Started> {
  const [port, health] = [await freePort(), await freePort()];
  const webhookConfigs = await installManifests(c, b.manifests, { url: `https://127.0.0.1:${port}` });
  const config = join(c.dir, "jobset-config.yaml");
  writeFileSync(
    config,
    JSON.stringify({
      apiVersion: "config.jobset.x-k8s.io/v1alpha1",
      kind: "Configuration",
      leaderElection: { leaderElect: false },
      internalCertManagement: { enable: false },
      webhook: { port, host: "127.0.0.1", certDir: c.certDir },
      metrics: { bindAddress: "0" },
      health: { healthProbeBindAddress: `127.0.0.1:${health}` },
    }),
  );
  const component = launch(
    "jobset",
    b.bin,
    [`--config=${config}`, `--kubeconfig=${c.cluster.kubeconfig}`, "--zap-log-level=info"],
    join(c.cluster.dir, "logs"),
  );
  await ready(component, health);
  return { component, webhookConfigs };
}

async function startKueue(c: Ctx, b: GangBinaries["kueue"], withJobSet: boolean): Promise<Started> {
  const [port, health] = [await freePort(), await freePort()];
  const webhookConfigs = await installManifests(c, b.manifests, {
    url: `https://127.0.0.1:${port}`,
    keepPath: withJobSet ? /kueue-x-k8s-io|batch-v1-job|jobset-x-k8s-io/ : /kueue-x-k8s-io|batch-v1-job/,
  });
  const config = join(c.dir, "kueue-config.yaml");
  writeFileSync(
    config,
    JSON.stringify({
      apiVersion: "config.kueue.x-k8s.io/v1beta2",
      kind: "Configuration",
      namespace: "kueue-system",
      health: { healthProbeBindAddress: `127.0.0.1:${health}` },
      metrics: { bindAddress: "0" },
      webhook: { port, host: "127.0.0.1", certDir: c.certDir },
      leaderElection: { leaderElect: false },
      internalCertManagement: { enable: false },
      featureGates: { VisibilityOnDemand: false },
      integrations: { frameworks: ["batch/job", ...(withJobSet ? ["jobset.x-k8s.io/jobset"] : [])] },
    }),
  );
  const component = launch(
    "kueue",
    b.bin,
    [`--config=${config}`, `--kubeconfig=${c.cluster.kubeconfig}`, "--zap-log-level=2"],
    join(c.cluster.dir, "logs"),
  );
  await ready(component, health);
  return { component, webhookConfigs };
}

/**
 * Applies the local form of a controller's manifests and waits until its CRDs are Established and served by
 * discovery (a controller started before that exits with "no matches for kind"). Answers the webhook
 * configurations it made (kind/name, for close()).
 */
async function installManifests(c: Ctx, file: string, o: Omit<LocalOptions, "caPem">): Promise<string[]> {
  const docs = parseAllDocuments(readFileSync(file, "utf8")).map((d) => d.toJSON() as KObject);
  const objs = localManifests(docs, { ...o, caPem: c.cluster.credentials.ca });
  await c.cluster.apply(objs, "--server-side", "--force-conflicts");
  const crds = objs.filter((x) => x.kind === "CustomResourceDefinition");
  for (const crd of crds) {
    await waitFor(`CRD ${crd.metadata.name} Established`, async () => {
      const o = await c.cluster.api.getOptional(
        `/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${crd.metadata.name}`,
      );
      return (o?.status?.conditions ?? []).some((x: KObject) => x.type === "Established" && x.status === "True");
    });
    const v = (crd.spec.versions ?? []).find((x: KObject) => x.served)?.name;
    await waitFor(`discovery of ${crd.metadata.name}`, async () => {
      const list = await c.cluster.api.getOptional(`/apis/${crd.spec.group}/${v}`);
      return (list?.resources ?? []).some((r: KObject) => r.name === crd.spec.names.plural);
    });
  }
  return objs
    .filter((x) => x.kind.endsWith("WebhookConfiguration"))
    .map((x) => `${x.kind.toLowerCase()}/${x.metadata.name}`);
}

async function ready(component: Component, healthPort: number): Promise<void> {
  await waitFor(
    `${component.name} /readyz`,
    async () => {
      if (component.exited) throw new FatalError(`${component.name} exited: ${tail(component.logFile, 15)}`);
      const r = await fetch(`http://127.0.0.1:${healthPort}/readyz`);
      return r.ok;
    },
    120_000,
    250,
  );
}

const KUEUE_ETC = "/etc/kueue";

/** Kueue's hard-coded metrics certificate (any will do: metrics are off); answers the clean-up. */
function kueueMetricsCerts(certDir: string): () => void {
  if (existsSync(KUEUE_ETC)) return () => {}; // someone else's (another harness run, or a real install)
  const dest = join(KUEUE_ETC, "metrics", "certs");
  mkdirSync(dest, { recursive: true });
  copyFileSync(join(certDir, "tls.crt"), join(dest, "tls.crt"));
  copyFileSync(join(certDir, "tls.key"), join(dest, "tls.key"));
  writeFileSync(join(KUEUE_ETC, "README"), "Written by rft-operator's test/k8s/gang.ts for Kueue; removed on close.\n");
  return () => rmSync(KUEUE_ETC, { recursive: true, force: true });
}
