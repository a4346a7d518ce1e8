/**
 * The desired children of a FineTuneJob (pure): the signing-key Secret, the resolved-config ConfigMap, the
 * headless Service and the Indexed batch/v1 Job of the current attempt, each with a controller owner
 * reference, the job's labels and the Kueue queue label when the FineTuneJob carries one.
 */
import { createHash } from "node:crypto";
import { isAbsolute, posix } from "node:path";
import type { FineTuneJobStatus } from "../proto/finetunejob-status.js";
import { API_VERSION, type FineTuneJobSpec, KIND, type WorkloadKind } from "../proto/finetunejob.js";
import {
  CHECKPOINT_MOUNT,
  CONFIG_FILE,
  CONFIG_HASH_ANNOTATION,
  CONFIG_MOUNT,
  childLabels,
  DATA_MOUNT,
  EXIT_PERMANENT,
  GRADER_GRPC_PORT,
  GRADER_HTTP_PORT,
  GRADER_MONITOR_PORT,
  IMAGE_GID,
  LABEL_ATTEMPT,
  names,
  PRIORITY_LABEL,
  QUEUE_LABEL,
  SIGNING_MOUNT,
  TRAINER_DATA_PORT,
  TRAINER_METRICS_PORT,
  TRAINER_PORT,
} from "./names.js";

/** Kubernetes objects are handled as loose JSON. */
export type K8sObject = Record<string, any>;

export interface FineTuneJobObject {
  apiVersion: string;
  kind: string;
  metadata: {
    name: string;
    namespace: string;
    uid: string;
    generation?: number;
    labels?: Record<string, string>;
    creationTimestamp?: string;
    deletionTimestamp?: string;
    resourceVersion?: string;
  };
  spec: FineTuneJobSpec;
  status?: FineTuneJobStatus;
}

export interface OperatorSettings {
  /** Default trainer/grader image (spec.trainer.image / spec.grader.image override it). */
  image: string;
  /** NATS URL as the pods reach it. */
  natsUrl: string;
  /** Trainers publish their ledger events to JetStream at natsUrl (RFT_LEDGER_NATS_URL; the Helm chart sets it
   * when the ledger service is enabled), instead of writing them to a file on the checkpoint volume. */
  ledgerNats?: boolean;
  /**
   * NATS runs with authentication: each job's Secret holds its NATS user (`nats.creds`, minted by the operator
   * with that job's permissions only) and the trainers connect with it (RFT_NATS_CREDS).
   */
  natsAuth?: boolean;
  /**
   * Each job gets a NetworkPolicy that lets only its own pods reach its ranks' collective ports (the chart's
   * namespace-wide trainer policy then no longer opens them to every trainer pod).
   */
  jobNetworkPolicy?: boolean;
  /** NATS speaks TLS: the CA (PEM) the trainers verify its certificate with (in the job's ConfigMap). */
  natsCaPem?: string;
  imagePullPolicy?: string;
}

/** The key of the job's Secret that holds its NATS user's credentials. */
export const NATS_CREDS_KEY = "nats.creds";

export function ownerRef(job: FineTuneJobObject): K8sObject {
  return {
    apiVersion: API_VERSION,
    kind: KIND,
    name: job.metadata.name,
    uid: job.metadata.uid,
    controller: true,
    blockOwnerDeletion: true,
  };
}

/** Kueue's labels of the FineTuneJob (queue, workload priority class), carried to its children. */
function kueueLabels(job: FineTuneJobObject): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of [QUEUE_LABEL, PRIORITY_LABEL]) {
    const v = job.metadata.labels?.[k];
    if (v) out[k] = v;
  }
  return out;
}

function meta(job: FineTuneJobObject, name: string, extraLabels: Record<string, string> = {}): K8sObject {
  return {
    name,
    namespace: job.metadata.namespace,
    labels: { ...childLabels(job.metadata.name), ...kueueLabels(job), ...extraLabels },
    ownerReferences: [ownerRef(job)],
  };
}

/**
 * The job's Secret: its Ed25519 signing key, the ranks' collective secret and, with NATS authentication, the
 * job's NATS user (created once; never re-applied with a new key).
 */
export function desiredSecret(
  job: FineTuneJobObject,
  key: { privatePem: string; publicRaw: string; collectiveSecret?: string; natsCreds?: string },
): K8sObject {
  return {
    apiVersion: "v1",
    kind: "Secret",
    metadata: meta(job, names.secret(job.metadata.name)),
    type: "Opaque",
    stringData: {
      "signing-key.pem": key.privatePem,
      "public-key": key.publicRaw,
      ...(key.collectiveSecret ? { [COLLECTIVE_SECRET_KEY]: key.collectiveSecret } : {}),
      ...(key.natsCreds ? { [NATS_CREDS_KEY]: key.natsCreds } : {}),
    },
  };
}

/**
 * The job's NetworkPolicy: its pods accept the collective (rendezvous and data link) only from pods of the same
 * job. Ingress only, so it never cuts a pod's egress; the chart's trainer policy adds metrics ingress and the
 * egress limits.
 */
export function desiredNetworkPolicy(job: FineTuneJobObject): K8sObject {
  const same = { podSelector: { matchLabels: childLabels(job.metadata.name) } };
  return {
    apiVersion: "networking.k8s.io/v1",
    kind: "NetworkPolicy",
    metadata: meta(job, names.networkPolicy(job.metadata.name)),
    spec: {
      podSelector: { matchLabels: childLabels(job.metadata.name) },
      policyTypes: ["Ingress"],
      ingress: [
        {
          from: [same],
          ports: [
            { port: TRAINER_PORT, protocol: "TCP" },
            { port: TRAINER_DATA_PORT, protocol: "TCP" },
          ],
        },
      ],
    },
  };
}

/** The key of the job's Secret that holds the ranks' shared secret (RFT_COLLECTIVE_SECRET). */
export const COLLECTIVE_SECRET_KEY = "collective-secret";

/** Where a job's checkpoints live on the checkpoint volume (unique per FineTuneJob object). */
export function checkpointDir(job: FineTuneJobObject): string {
  return posix.join(CHECKPOINT_MOUNT, `${job.metadata.name}-${job.metadata.uid.slice(0, 8)}`);
}

/** A path on the data claim; an absolute path or an http(s) URL (a dataset `rft api --cluster` serves) as is. */
const inData = (p: string) => (isAbsolute(p) || /^https?:\/\//.test(p) ? p : posix.join(DATA_MOUNT, p));

/**
 * The job config the trainer reads: the FineTuneJob with data paths resolved to the pod's mounts and, unless
 * the job names its own, the signing key of the job's Secret.
 */
export function resolvedConfig(job: FineTuneJobObject): K8sObject {
  const spec: FineTuneJobSpec = structuredClone(job.spec);
  spec.model = inData(spec.model);
  spec.trainingFile = inData(spec.trainingFile);
  if (spec.validationFile) spec.validationFile = inData(spec.validationFile);
  // The trainer signs the ledger with the key of the job's Secret (its public key is in status.ledger), unless
  // the job names its own signing key.
  if (!spec.governance?.signingKey) {
    spec.governance = {
      authorities: [],
      ...spec.governance,
      signingKey: { file: posix.join(SIGNING_MOUNT, "signing-key.pem") },
    };
  }
  return {
    apiVersion: API_VERSION,
    kind: KIND,
    metadata: { name: job.metadata.name, namespace: job.metadata.namespace },
    spec,
  };
}

/** The file of the job's ConfigMap that holds the CA of NATS's TLS certificate (public, so not in the Secret). */
export const NATS_CA_FILE = "nats-ca.crt";

export function desiredConfigMap(job: FineTuneJobObject, s: Pick<OperatorSettings, "natsCaPem"> = {}): K8sObject {
  return {
    apiVersion: "v1",
    kind: "ConfigMap",
    metadata: meta(job, names.configMap(job.metadata.name)),
    data: {
      [CONFIG_FILE]: `${JSON.stringify(resolvedConfig(job), null, 2)}\n`,
      ...(s.natsCaPem ? { [NATS_CA_FILE]: s.natsCaPem } : {}),
    },
  };
}

export function desiredService(job: FineTuneJobObject): K8sObject {
  return {
    apiVersion: "v1",
    kind: "Service",
    metadata: meta(job, names.service(job.metadata.name)),
    spec: {
      clusterIP: "None",
      publishNotReadyAddresses: true,
      selector: childLabels(job.metadata.name),
      ports: [
        { name: "collective", port: TRAINER_PORT, targetPort: TRAINER_PORT, protocol: "TCP" },
        { name: "collective-data", port: TRAINER_DATA_PORT, targetPort: TRAINER_DATA_PORT, protocol: "TCP" },
      ],
    },
  };
}

function resources(r: { requests?: Record<string, unknown>; limits?: Record<string, unknown> } | undefined) {
  if (!r) return undefined;
  const q = (m?: Record<string, unknown>) => m && Object.fromEntries(Object.entries(m).map(([k, v]) => [k, String(v)]));
  return { ...(r.requests ? { requests: q(r.requests) } : {}), ...(r.limits ? { limits: q(r.limits) } : {}) };
}

/**
 * The grader sidecar's judge endpoints: spec.graderEndpoints as RFT_GRADER_ENDPOINTS JSON, each Secret key in
 * an env var of its own (secretKeyRef), named by the endpoint's apiKey.env. The key never enters the JSON, the
 * ConfigMap or the pod spec; env/file keys (for `rft run`) are not carried (the CRD requires a secretRef
 * beside them).
 */
export function graderEndpointsEnv(spec: FineTuneJobSpec): K8sObject[] {
  const eps = spec.graderEndpoints;
  if (!eps?.length) return [];
  const keys: K8sObject[] = [];
  const json = eps.map((e, i) => {
    const { apiKey, ...rest } = e;
    if (!apiKey?.secretRef) return rest;
    const name = `RFT_GRADER_ENDPOINT_${i}_API_KEY`;
    keys.push({ name, valueFrom: { secretKeyRef: { name: apiKey.secretRef.name, key: apiKey.secretRef.key } } });
    return { ...rest, apiKey: { env: name } };
  });
  return [{ name: "RFT_GRADER_ENDPOINTS", value: JSON.stringify(json) }, ...keys];
}

export function configHash(job: FineTuneJobObject): string {
  return createHash("sha256")
    .update(JSON.stringify(resolvedConfig(job)))
    .digest("hex")
    .slice(0, 16);
}

/** The job is queued by Kueue: it carries the kueue.x-k8s.io/queue-name label (copied to its trainer workload). */
export function queueManaged(job: FineTuneJobObject): boolean {
  return Boolean(job.metadata.labels?.[QUEUE_LABEL]);
}

export function workloadKind(job: FineTuneJobObject): WorkloadKind {
  return job.spec.workloadKind ?? "Job";
}

/** The JobSet's one replicated Job (its Job is `<jobset>-trainer-0`, whose pods are `<job>-<rank>`). */
export const JOBSET_REPLICATED_JOB = "trainer";

/**
 * The batch/v1 Job that runs the ranks of an attempt: the attempt's own Job, or the Job the attempt's JobSet
 * creates. Its status (pod counts, Complete / Failed and the podFailurePolicy reason) is what decide() reads.
 */
export function rankJobName(job: FineTuneJobObject, attempt: number): string {
  const top = names.trainerJob(job.metadata.name, attempt);
  return workloadKind(job) === "JobSet" ? `${top}-${JOBSET_REPLICATED_JOB}-0` : top;
}

/** The trainer pod's volumes and the trainer container's mounts. */
function trainerVolumes(job: FineTuneJobObject): { volumes: K8sObject[]; mounts: K8sObject[] } {
  const { spec } = job;
  const name = job.metadata.name;
  const volumes: K8sObject[] = [
    { name: "config", configMap: { name: names.configMap(name) } },
    { name: "signing", secret: { secretName: names.secret(name), defaultMode: 0o400 } },
    spec.storage?.checkpointClaim
      ? { name: "checkpoints", persistentVolumeClaim: { claimName: spec.storage.checkpointClaim } }
      : { name: "checkpoints", emptyDir: {} },
  ];
  const mounts: K8sObject[] = [
    { name: "config", mountPath: CONFIG_MOUNT, readOnly: true },
    { name: "signing", mountPath: SIGNING_MOUNT, readOnly: true },
    { name: "checkpoints", mountPath: CHECKPOINT_MOUNT },
  ];
  if (spec.storage?.modelClaim) {
    volumes.push({ name: "data", persistentVolumeClaim: { claimName: spec.storage.modelClaim, readOnly: true } });
    mounts.push({ name: "data", mountPath: DATA_MOUNT, readOnly: true });
  }
  return { volumes, mounts };
}

/** The trainer's env: rank (the pod's completion index), world, peers (`<rankJob>-<i>.<service>`), NATS, paths. */
function trainerEnv(job: FineTuneJobObject, attempt: number, s: OperatorSettings): K8sObject[] {
  const { name, namespace: ns } = job.metadata;
  const replicas = job.spec.replicas ?? 1;
  const rankJob = rankJobName(job, attempt);
  const svc = names.service(name);
  const peers = Array.from({ length: replicas }, (_, i) => `${rankJob}-${i}.${svc}.${ns}.svc:${TRAINER_PORT}`);
  return [
    {
      name: "RFT_RANK",
      valueFrom: { fieldRef: { fieldPath: "metadata.annotations['batch.kubernetes.io/job-completion-index']" } },
    },
    { name: "RFT_WORLD_SIZE", value: String(replicas) },
    { name: "RFT_PEERS", value: peers.join(",") },
    { name: "RFT_DATA_PORT", value: String(TRAINER_DATA_PORT) },
    { name: "RFT_METRICS_PORT", value: String(TRAINER_METRICS_PORT) },
    { name: "RFT_MASTER_ADDR", value: `${rankJob}-0.${svc}.${ns}.svc` },
    { name: "RFT_MASTER_PORT", value: String(TRAINER_PORT) },
    { name: "RFT_NATS_URL", value: s.natsUrl },
    ...(s.ledgerNats ? [{ name: "RFT_LEDGER_NATS_URL", value: s.natsUrl }] : []),
    ...(s.natsAuth ? [{ name: "RFT_NATS_CREDS", value: posix.join(SIGNING_MOUNT, NATS_CREDS_KEY) }] : []),
    ...(s.natsCaPem ? [{ name: "RFT_NATS_CA_FILE", value: posix.join(CONFIG_MOUNT, NATS_CA_FILE) }] : []),
    { name: "RFT_JOB_CONFIG", value: posix.join(CONFIG_MOUNT, "job.json") },
    { name: "RFT_JOB_NAME", value: name },
    { name: "RFT_JOB_NAMESPACE", value: ns },
    { name: "RFT_ATTEMPT", value: String(attempt) },
    { name: "RFT_CHECKPOINT_DIR", value: checkpointDir(job) },
    { name: "RFT_GRADER_ADDR", value: `127.0.0.1:${GRADER_GRPC_PORT}` },
    { name: "RFT_SIGNING_KEY_FILE", value: posix.join(SIGNING_MOUNT, "signing-key.pem") },
    // The ranks authenticate each other with it (optional: a Secret made before it existed still starts a
    // single-rank job; a multi-rank one then stops with a line naming the missing key).
    {
      name: "RFT_COLLECTIVE_SECRET",
      valueFrom: { secretKeyRef: { name: names.secret(name), key: COLLECTIVE_SECRET_KEY, optional: true } },
    },
    ...((job.spec.trainer?.env as K8sObject[] | undefined) ?? []),
  ];
}

/** The grader sidecar: a native sidecar (init container with restartPolicy Always) gated by its startup probe. */
function graderContainer(spec: FineTuneJobSpec, image: string, s: OperatorSettings): K8sObject {
  return {
    name: "grader",
    image: spec.grader?.image ?? image,
    restartPolicy: "Always",
    // gRPC and the grading API on the pod's loopback only (the trainer is the one client); the monitoring
    // port (GET /healthz and /metrics, nothing that grades) on the pod IP for the kubelet and Prometheus.
    args: [
      "grader",
      "--host",
      "127.0.0.1",
      "--grpc-port",
      String(GRADER_GRPC_PORT),
      "--http-port",
      String(GRADER_HTTP_PORT),
      "--monitor-host",
      "0.0.0.0",
      "--monitor-port",
      String(GRADER_MONITOR_PORT),
      ...(spec.grader?.concurrency ? ["--concurrency", String(spec.grader.concurrency)] : []),
    ],
    ...(spec.graderEndpoints?.length ? { env: graderEndpointsEnv(spec) } : {}),
    ports: [{ name: "grader-metrics", containerPort: GRADER_MONITOR_PORT }],
    // The monitoring port answers once gRPC is bound (the service starts it last).
    startupProbe: {
      httpGet: { path: "/healthz", port: "grader-metrics" },
      periodSeconds: 1,
      failureThreshold: 120,
    },
    ...(spec.grader?.resources ? { resources: resources(spec.grader.resources) } : {}),
    ...(s.imagePullPolicy ? { imagePullPolicy: s.imagePullPolicy } : {}),
  };
}

function trainerContainer(job: FineTuneJobObject, attempt: number, s: OperatorSettings, mounts: K8sObject[]) {
  const spec = job.spec;
  return {
    name: "trainer",
    image: spec.trainer?.image ?? s.image,
    args: ["trainer", "--config", posix.join(CONFIG_MOUNT, CONFIG_FILE)],
    env: trainerEnv(job, attempt, s),
    ports: [
      { name: "collective", containerPort: TRAINER_PORT },
      { name: "collective-data", containerPort: TRAINER_DATA_PORT },
      { name: "metrics", containerPort: TRAINER_METRICS_PORT },
    ],
    volumeMounts: mounts,
    ...(spec.trainer?.resources ? { resources: resources(spec.trainer.resources) } : {}),
    ...(s.imagePullPolicy ? { imagePullPolicy: s.imagePullPolicy } : {}),
  };
}

/**
 * The Indexed Job spec that runs the ranks (one pod per rank, `labels` on the pods). `suspend` is the
 * operator's only when Kueue does not manage the job: a queued job's Job is created suspended and Kueue
 * unsuspends it on admission (and suspends it again to preempt it), so the operator never writes it again.
 */
function rankJobSpec(job: FineTuneJobObject, attempt: number, s: OperatorSettings, labels: Record<string, string>) {
  const spec = job.spec;
  const replicas = spec.replicas ?? 1;
  const image = spec.trainer?.image ?? s.image;
  const { volumes, mounts } = trainerVolumes(job);
  return {
    completionMode: "Indexed",
    completions: replicas,
    parallelism: replicas,
    // One failed rank fails the whole gang at once; the operator owns retries (spec.backoffLimit).
    backoffLimit: 0,
    // A configuration error (exit EXIT_PERMANENT) fails the Job with reason PodFailurePolicy: no retry.
    podFailurePolicy: {
      rules: [
        {
          action: "FailJob",
          onExitCodes: { containerName: "trainer", operator: "In", values: [EXIT_PERMANENT] },
        },
      ],
    },
    template: {
      metadata: { labels },
      spec: {
        restartPolicy: "Never",
        subdomain: names.service(job.metadata.name),
        automountServiceAccountToken: false,
        enableServiceLinks: false,
        // The images run as a non-root user: without fsGroup the Secret volume's files (root, 0400) are not
        // readable by it (a real kubelet; the chart's own pods set the same).
        securityContext: { fsGroup: IMAGE_GID },
        terminationGracePeriodSeconds: 120,
        ...(spec.priorityClassName ? { priorityClassName: spec.priorityClassName } : {}),
        ...(spec.trainer?.nodeSelector ? { nodeSelector: spec.trainer.nodeSelector } : {}),
        ...(spec.trainer?.tolerations ? { tolerations: spec.trainer.tolerations } : {}),
        volumes,
        initContainers: [graderContainer(spec, image, s)],
        containers: [trainerContainer(job, attempt, s, mounts)],
      },
    },
  };
}

/** Created suspended when Kueue admits it; otherwise it follows spec.suspend. */
function initialSuspend(job: FineTuneJobObject): boolean {
  return queueManaged(job) || job.spec.suspend === true;
}

/** The Indexed Job of one attempt (a gang restart creates the next attempt's Job). */
export function desiredTrainerJob(job: FineTuneJobObject, attempt: number, s: OperatorSettings): K8sObject {
  const jobName = names.trainerJob(job.metadata.name, attempt);
  const podMeta = meta(job, jobName, { [LABEL_ATTEMPT]: String(attempt) });
  return {
    apiVersion: "batch/v1",
    kind: "Job",
    metadata: { ...podMeta, annotations: { [CONFIG_HASH_ANNOTATION]: configHash(job) } },
    spec: { ...rankJobSpec(job, attempt, s, podMeta.labels), suspend: initialSuspend(job) },
  };
}

/**
 * The JobSet of one attempt (spec.workloadKind JobSet): one replicated Job of the same Indexed Job, its pods on
 * the job's own headless Service (network.subdomain), failing as a whole when a rank fails (the default failure
 * policy, no JobSet restarts: the operator owns retries). Kueue, when it manages the job, admits the JobSet as one
 * workload; the inner Job and its pods carry the job's labels but not Kueue's.
 */
export function desiredTrainerJobSet(job: FineTuneJobObject, attempt: number, s: OperatorSettings): K8sObject {
  const jsName = names.trainerJob(job.metadata.name, attempt);
  const top = meta(job, jsName, { [LABEL_ATTEMPT]: String(attempt) });
  const inner: Record<string, string> = { ...top.labels };
  delete inner[QUEUE_LABEL];
  delete inner[PRIORITY_LABEL];
  return {
    apiVersion: JOBSET_API_VERSION,
    kind: "JobSet",
    metadata: { ...top, annotations: { [CONFIG_HASH_ANNOTATION]: configHash(job) } },
    spec: {
      suspend: initialSuspend(job),
      network: { enableDNSHostnames: true, subdomain: names.service(job.metadata.name) },
      replicatedJobs: [
        {
          name: JOBSET_REPLICATED_JOB,
          replicas: 1,
          template: { metadata: { labels: inner }, spec: rankJobSpec(job, attempt, s, inner) },
        },
      ],
    },
  };
}

export const JOBSET_API_VERSION = "jobset.x-k8s.io/v1alpha2";

/** The attempt's trainer workload: its Job, or its JobSet. */
export function desiredTrainerWorkload(job: FineTuneJobObject, attempt: number, s: OperatorSettings): K8sObject {
  return workloadKind(job) === "JobSet" ? desiredTrainerJobSet(job, attempt, s) : desiredTrainerJob(job, attempt, s);
}

/**
 * What the reconciler does with the attempt's trainer workload (pure), given the cached rank Job:
 * - `create` it when missing (with Kueue: POST, never apply, so that the operator never owns `spec.suspend`,
 *   which Kueue writes on admission and preemption; and not while the FineTuneJob is suspended: Kueue would
 *   admit and start it);
 * - `apply` it when missing or when its suspend differs from spec.suspend (without Kueue);
 * - otherwise leave it alone.
 */
export function workloadPlan(
  job: FineTuneJobObject,
  cachedRankJob: K8sObject | undefined,
): "create" | "apply" | "none" {
  if (queueManaged(job)) return cachedRankJob || job.spec.suspend === true ? "none" : "create";
  if (!cachedRankJob || Boolean(cachedRankJob.spec?.suspend) !== (job.spec.suspend === true)) return "apply";
  return "none";
}
