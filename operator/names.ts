/** Deterministic names, labels and well-known constants of a FineTuneJob's children (pure). */

export const FIELD_MANAGER = "rft-operator";
export const LABEL_JOB = "rft.dev/finetunejob";
export const LABEL_MANAGED_BY = "app.kubernetes.io/managed-by";
export const LABEL_ATTEMPT = "rft.dev/attempt";
export const QUEUE_LABEL = "kueue.x-k8s.io/queue-name";
/** Kueue's WorkloadPriorityClass of the job's workload (carried to the trainer workload like the queue). */
export const PRIORITY_LABEL = "kueue.x-k8s.io/priority-class";
export const CONFIG_HASH_ANNOTATION = "rft.dev/config-hash";

/** Longest FineTuneJob name: room for the children's suffixes within 63-character label values. */
export const MAX_NAME_LENGTH = 40;

export const GRADER_GRPC_PORT = 50051;
export const GRADER_HTTP_PORT = 8081;
/**
 * The grader sidecar's monitoring port (GET /healthz and /metrics only): the one grader port bound to the pod
 * IP, for the kubelet's startup probe and the PodMonitor. gRPC and the HTTP API stay on 127.0.0.1.
 */
export const GRADER_MONITOR_PORT = 8082;
export const TRAINER_PORT = 29500;
/** The collective's data link (raw TCP; rendezvous is on TRAINER_PORT). */
export const TRAINER_DATA_PORT = 29501;
/** Rank 0's Prometheus metrics (the container port named "metrics"; the chart's PodMonitor scrapes it). */
export const TRAINER_METRICS_PORT = 9400;

export const CONFIG_MOUNT = "/etc/rft/job";
export const CONFIG_FILE = "job.json";
export const SIGNING_MOUNT = "/var/run/rft/signing";
export const DATA_MOUNT = "/var/rft/data";
export const CHECKPOINT_MOUNT = "/var/rft/checkpoints";
/**
 * The group the rft images run as (deploy/Dockerfile*: USER 65532:65532). The trainer pod's fsGroup: the kubelet
 * then gives the Secret's files (the signing key, mode 0400) to that group, readable by the non-root trainer.
 */
export const IMAGE_GID = 65532;

/**
 * Trainer exit codes: 0 finished or paused (the progress message says which); EXIT_PERMANENT a configuration
 * error that no retry can fix (`rft trainer` exits 2 on a bad manifest or an unsupported world size) — the
 * Job's podFailurePolicy fails it at once and the FineTuneJob fails without spending the retry budget; any
 * other code or a signal (crash, OOM kill, node loss) is retryable: the gang restarts from the last checkpoint.
 */
export const EXIT_PERMANENT = 2;
/** The reason the Job controller gives a Job failed by a podFailurePolicy rule. */
export const POD_FAILURE_POLICY_REASON = "PodFailurePolicy";

/** Env names the operator sets on trainer containers (users may not set them). */
export const RESERVED_ENV = [
  "RFT_RANK",
  "RFT_WORLD_SIZE",
  "RFT_PEERS",
  "RFT_DATA_PORT",
  "RFT_METRICS_PORT",
  "RFT_MASTER_ADDR",
  "RFT_MASTER_PORT",
  "RFT_NATS_URL",
  "RFT_LEDGER_NATS_URL",
  "RFT_NATS_CREDS",
  "RFT_NATS_CA_FILE",
  "RFT_JOB_CONFIG",
  "RFT_JOB_NAME",
  "RFT_JOB_NAMESPACE",
  "RFT_ATTEMPT",
  "RFT_CHECKPOINT_DIR",
  "RFT_GRADER_ADDR",
  "RFT_SIGNING_KEY_FILE",
] as const;

export const names = {
  secret: (job: string) => `${job}-signing`,
  configMap: (job: string) => `${job}-config`,
  service: (job: string) => job,
  networkPolicy: (job: string) => `${job}-ranks`,
  /** The batch/v1 Job of attempt n (a gang restart makes attempt n+1; the name never repeats). */
  trainerJob: (job: string, attempt: number) => `${job}-a${attempt}`,
};

export function childLabels(job: string): Record<string, string> {
  return { [LABEL_JOB]: job, [LABEL_MANAGED_BY]: FIELD_MANAGER };
}
