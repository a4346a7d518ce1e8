/**
 * spec.serve, pure: which model a job serves, the desired Deployment and Service `<job>-serve` running the
 * project image's `rft serve` on it (the checkpoint claim mounted read-only, non-root, read-only root
 * filesystem, probes on /healthz, the bearer token from spec.serve.tokenSecretRef), status.serve and the
 * `Serving` condition. The reconciler (reconciler.ts) reads the Deployment, asks `serving()` and applies or
 * deletes what it answers.
 *
 * Serving starts only once the job has the model: "final" after Succeeded (status.fineTunedModel), a checkpoint
 * once status.checkpoints lists it; and only with a checkpoint claim (an emptyDir goes with the trainer pods).
 */
import { posix } from "node:path";
import type { Condition, FineTuneJobStatus } from "../proto/finetunejob-status.js";
import { setCondition } from "./conditions.js";
import { type FineTuneJobObject, type K8sObject, type OperatorSettings, ownerRef } from "./desired.js";
import { CHECKPOINT_MOUNT, childLabels, DATA_MOUNT, IMAGE_GID } from "./names.js";

/** The port `rft serve` listens on in the serving pods (and the Service's port). */
export const SERVE_PORT = 8000;
export const LABEL_ROLE = "rft.dev/role";
export const SERVE_ROLE = "serve";
/** The env var `rft serve` reads its bearer token from. */
export const SERVE_TOKEN_ENV = "RFT_SERVE_API_KEY";

export const serveName = (job: string) => `${job}-serve`;

export function serveLabels(job: string): Record<string, string> {
  return { ...childLabels(job), [LABEL_ROLE]: SERVE_ROLE };
}

/** The model spec.serve names, on the pods' mounts; or why the job does not have it (yet). */
export type ServedModel =
  { ok: true; model: string; dir: string; base?: string } | { ok: false; reason: "NoModel"; message: string };

const isAbs = (p: string) => posix.isAbsolute(p);

/** The directory to serve: the final model, or a checkpoint's `model/` (LoRA without merge: `adapter/` on its base). */
export function servedModel(job: FineTuneJobObject, status: FineTuneJobStatus | undefined = job.status): ServedModel {
  const serve = job.spec.serve;
  if (!serve) return { ok: false, reason: "NoModel", message: "spec.serve is not set" };
  if (!job.spec.storage?.checkpointClaim)
    return {
      ok: false,
      reason: "NoModel",
      message:
        "the job has no spec.storage.checkpointClaim: its models were on the trainer pods' emptyDir and are gone",
    };
  const type = job.spec.method.type;
  const lora = job.spec.method[type]?.lora;
  const base = isAbs(job.spec.model) ? job.spec.model : posix.join(DATA_MOUNT, job.spec.model);
  if (serve.model === "final") {
    const succeeded = status?.conditions?.some((c) => c.type === "Succeeded" && c.status === "True");
    if (!succeeded || !status?.fineTunedModel)
      return { ok: false, reason: "NoModel", message: "the final model exists once the job has Succeeded" };
    const adapter = Boolean(lora && !lora.merge);
    return { ok: true, model: "final", dir: status.fineTunedModel, ...(adapter ? { base } : {}) };
  }
  const ck = status?.checkpoints?.find((c) => c.name === serve.model);
  if (!ck)
    return {
      ok: false,
      reason: "NoModel",
      message: `checkpoint ${serve.model} is not in status.checkpoints (kept: ${(status?.checkpoints ?? []).map((c) => c.name).join(", ") || "none"})`,
    };
  return lora
    ? { ok: true, model: ck.name, dir: posix.join(ck.path, "adapter"), base }
    : { ok: true, model: ck.name, dir: posix.join(ck.path, "model") };
}

function resources(r: { requests?: Record<string, unknown>; limits?: Record<string, unknown> } | undefined) {
  if (!r) return undefined;
  const q = (m?: Record<string, unknown>) => m && Object.fromEntries(Object.entries(m).map(([k, v]) => [k, String(v)]));
  return { ...(r.requests ? { requests: q(r.requests) } : {}), ...(r.limits ? { limits: q(r.limits) } : {}) };
}

function meta(job: FineTuneJobObject): K8sObject {
  return {
    name: serveName(job.metadata.name),
    namespace: job.metadata.namespace,
    labels: serveLabels(job.metadata.name),
    ownerReferences: [ownerRef(job)],
  };
}

/** The claim volumes: checkpoints read-only, /tmp, and the model claim when an adapter is served on its base. */
function serveVolumes(job: FineTuneJobObject, model: Extract<ServedModel, { ok: true }>) {
  const volumes: K8sObject[] = [
    {
      name: "checkpoints",
      persistentVolumeClaim: { claimName: job.spec.storage!.checkpointClaim, readOnly: true },
    },
    { name: "tmp", emptyDir: {} },
  ];
  const mounts: K8sObject[] = [
    { name: "checkpoints", mountPath: CHECKPOINT_MOUNT, readOnly: true },
    { name: "tmp", mountPath: "/tmp" },
  ];
  if (model.base && job.spec.storage?.modelClaim) {
    volumes.push({ name: "data", persistentVolumeClaim: { claimName: job.spec.storage.modelClaim, readOnly: true } });
    mounts.push({ name: "data", mountPath: DATA_MOUNT, readOnly: true });
  }
  return { volumes, mounts };
}

/** The `rft serve` container: the model, the token from the Secret, /healthz probes, locked down. */
function serveContainer(
  job: FineTuneJobObject,
  model: Extract<ServedModel, { ok: true }>,
  s: Pick<OperatorSettings, "image" | "imagePullPolicy">,
  mounts: K8sObject[],
): K8sObject {
  const serve = job.spec.serve!;
  const probe = (periodSeconds: number, failureThreshold: number) => ({
    httpGet: { path: "/healthz", port: "http" },
    periodSeconds,
    failureThreshold,
  });
  return {
    name: "serve",
    image: job.spec.trainer?.image ?? s.image,
    args: [
      "serve",
      model.dir,
      "--host",
      "0.0.0.0",
      "--port",
      String(SERVE_PORT),
      "--model-id",
      serve.modelId ?? job.metadata.name,
      ...(model.base ? ["--base", model.base] : []),
      ...(job.spec.trainer?.backend ? ["--backend", job.spec.trainer.backend] : []),
    ],
    env: [
      {
        name: SERVE_TOKEN_ENV,
        valueFrom: { secretKeyRef: { name: serve.tokenSecretRef.name, key: serve.tokenSecretRef.key } },
      },
    ],
    ports: [{ name: "http", containerPort: SERVE_PORT }],
    // /healthz answers once the model is loaded (the server listens after loading it).
    startupProbe: probe(2, 300),
    readinessProbe: probe(5, 3),
    livenessProbe: probe(10, 6),
    securityContext: {
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      capabilities: { drop: ["ALL"] },
    },
    volumeMounts: mounts,
    ...(serve.resources ? { resources: resources(serve.resources) } : {}),
    ...(s.imagePullPolicy ? { imagePullPolicy: s.imagePullPolicy } : {}),
  };
}

/** The Deployment running `rft serve` on the model (replicas from spec.serve; 0 keeps it, scaled to zero). */
export function desiredServeDeployment(
  job: FineTuneJobObject,
  model: Extract<ServedModel, { ok: true }>,
  s: Pick<OperatorSettings, "image" | "imagePullPolicy">,
): K8sObject {
  const name = job.metadata.name;
  const { volumes, mounts } = serveVolumes(job, model);
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: meta(job),
    spec: {
      replicas: job.spec.serve!.replicas ?? 1,
      selector: { matchLabels: serveLabels(name) },
      template: {
        metadata: { labels: serveLabels(name), annotations: { "rft.dev/served-model": model.model } },
        spec: {
          automountServiceAccountToken: false,
          enableServiceLinks: false,
          securityContext: {
            runAsNonRoot: true,
            runAsUser: IMAGE_GID,
            runAsGroup: IMAGE_GID,
            fsGroup: IMAGE_GID,
            seccompProfile: { type: "RuntimeDefault" },
          },
          volumes,
          containers: [serveContainer(job, model, s, mounts)],
        },
      },
    },
  };
}

/** The ClusterIP Service in front of the serving pods (port SERVE_PORT). */
export function desiredServeService(job: FineTuneJobObject): K8sObject {
  return {
    apiVersion: "v1",
    kind: "Service",
    metadata: meta(job),
    spec: {
      selector: serveLabels(job.metadata.name),
      ports: [{ name: "http", port: SERVE_PORT, targetPort: "http", protocol: "TCP" }],
    },
  };
}

export interface ServeDecision {
  status: FineTuneJobStatus;
  /** Apply these (server-side apply), in order. */
  apply: K8sObject[];
  /** Delete the Deployment and Service `<job>-serve`. */
  remove: boolean;
  /** Look again (the Deployment's readiness has no informer): while starting, and now and then once Ready. */
  requeueAfterMs?: number;
}

const STARTING_POLL_MS = 2_000;
const READY_POLL_MS = 30_000;

/**
 * The Deployment's controller has rolled out its current template: no pod of an earlier template is left (while
 * one is, the Service still sends requests to the previous model), as `kubectl rollout status` waits for.
 */
function rolledOut(d: K8sObject | undefined): boolean {
  const st = d?.status ?? {};
  return (
    (st.observedGeneration ?? 0) >= (d?.metadata?.generation ?? 0) && (st.replicas ?? 0) === (st.updatedReplicas ?? 0)
  );
}

/**
 * The serving decision from the job, the status decide() computed and the observed Deployment: what to apply or
 * delete, status.serve and the Serving condition. Nothing when spec.serve was never set.
 */
export function serving(
  job: FineTuneJobObject,
  status: FineTuneJobStatus,
  deployment: K8sObject | undefined,
  s: Pick<OperatorSettings, "image" | "imagePullPolicy">,
  now: string,
): ServeDecision {
  const st: FineTuneJobStatus = structuredClone(status);
  const gen = job.metadata.generation ?? 0;
  const cond = (c: Pick<Condition, "status" | "reason" | "message">) => {
    st.conditions = setCondition(st.conditions, { type: "Serving", ...c } as never, gen, now);
  };
  const had = st.conditions?.find((c) => c.type === "Serving");
  const serve = job.spec.serve;
  if (!serve) {
    if (!had && !deployment) return { status, apply: [], remove: false };
    delete st.serve;
    cond({ status: "False", reason: "NotRequested", message: "spec.serve is not set: no server runs" });
    // Deleted once when spec.serve goes (Deployment and Service), and again only if a Deployment is seen.
    return { status: st, apply: [], remove: deployment !== undefined || had?.reason !== "NotRequested" };
  }
  const m = servedModel(job, st);
  if (!m.ok) {
    delete st.serve;
    cond({ status: "False", reason: m.reason, message: m.message });
    // A server of another model keeps nothing useful running; none is created before the model exists.
    return { status: st, apply: [], remove: deployment !== undefined };
  }
  const dep = desiredServeDeployment(job, m, s);
  const replicas = serve.replicas ?? 1;
  const sameModel = deployment?.spec?.template?.metadata?.annotations?.["rft.dev/served-model"] === m.model;
  const ready = sameModel && rolledOut(deployment) ? Number(deployment?.status?.readyReplicas ?? 0) : 0;
  st.serve = {
    service: serveName(job.metadata.name),
    model: m.model,
    modelPath: m.dir,
    replicas,
    readyReplicas: ready,
  };
  let requeueAfterMs: number | undefined;
  if (replicas === 0) {
    cond({ status: "False", reason: "ScaledToZero", message: `spec.serve.replicas is 0: ${m.model} is not served` });
  } else if (ready > 0) {
    cond({ status: "True", reason: "Ready", message: `${ready}/${replicas} server(s) of ${m.model} ready` });
    requeueAfterMs = READY_POLL_MS;
  } else {
    cond({ status: "False", reason: "Starting", message: `starting the server of ${m.model} (${m.dir})` });
    requeueAfterMs = STARTING_POLL_MS;
  }
  return {
    status: st,
    apply: [dep, desiredServeService(job)],
    remove: false,
    ...(requeueAfterMs !== undefined ? { requeueAfterMs } : {}),
  };
}
