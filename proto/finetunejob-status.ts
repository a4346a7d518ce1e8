/**
 * The FineTuneJob status, written by the operator (crds/ is generated from this and ./finetunejob.ts).
 * Conditions are metav1.Conditions; `state` is a display summary derived from them (never the source of truth).
 */
import { type Static, Type as T } from "@sinclair/typebox";
import { StringEnum } from "./graders.js";

export const CONDITION_TYPES = [
  "Created",
  "Suspended",
  "Running",
  "Succeeded",
  "Failed",
  "Cancelled",
  /** Every rank's grader sidecar passed its startup probe (/healthz on its monitoring port; the trainer container starts only after it). */
  "GradersReady",
  /** The trainers saved a checkpoint (message: the newest, with its step and path). */
  "CheckpointSaved",
  /**
   * Kueue admitted the gang (only for jobs with the kueue.x-k8s.io/queue-name label): False while the trainer
   * workload waits in its queue (reason Queued) or after Kueue suspended it (reason Preempted: the trainers
   * checkpointed and the job resumes from that checkpoint once readmitted).
   */
  "Admitted",
  /**
   * spec.serve's server answers (True, reason Ready) or why not: Starting (no pod ready yet), ScaledToZero
   * (replicas 0), NoModel (the job does not have that model, or it did not outlive the trainer pods),
   * NotRequested (spec.serve removed: the server was deleted).
   */
  "Serving",
] as const;
export type ConditionType = (typeof CONDITION_TYPES)[number];

export const STATES = [
  "Pending",
  "Created",
  "Running",
  "Suspended",
  "Queued",
  "Restarting",
  "Succeeded",
  "Failed",
  "Cancelled",
] as const;
export type JobState = (typeof STATES)[number];

export const Condition = T.Object(
  {
    type: T.String({ minLength: 1, maxLength: 316 }),
    status: StringEnum(["True", "False", "Unknown"] as const),
    observedGeneration: T.Optional(T.Integer({ minimum: 0 })),
    lastTransitionTime: T.String({ format: "date-time", maxLength: 64 }),
    reason: T.String({ minLength: 1, maxLength: 1024, pattern: "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$" }),
    message: T.String({ maxLength: 32768 }),
  },
  { additionalProperties: false },
);
export type Condition = Static<typeof Condition>;

export const CheckpointStatus = T.Object(
  {
    name: T.String({ maxLength: 253 }),
    step: T.Integer({ minimum: 0 }),
    validRewardMean: T.Optional(T.Union([T.Number(), T.Null()])),
    path: T.String({ maxLength: 4096 }),
    /** When the trainer saved it. */
    createdAt: T.Optional(T.String({ format: "date-time", maxLength: 64 })),
  },
  { additionalProperties: false },
);
export type CheckpointStatus = Static<typeof CheckpointStatus>;

export const TrainerStatus = T.Object(
  {
    step: T.Integer({ minimum: 0 }),
    totalSteps: T.Integer({ minimum: 0 }),
    trainRewardMean: T.Optional(T.Union([T.Number(), T.Null()])),
    validRewardMean: T.Optional(T.Union([T.Number(), T.Null()])),
    progress: T.Integer({ minimum: 0, maximum: 100, description: "percent of total steps" }),
    status: T.Optional(T.String({ maxLength: 32 })),
    lastUpdated: T.String({ format: "date-time", maxLength: 64 }),
  },
  { additionalProperties: false },
);
export type TrainerStatus = Static<typeof TrainerStatus>;

/** Bounds of the usage a progress message carries (trainer/job/usage.ts). */
export const USAGE_LIMITS = {
  /** Judge models named; the tokens of further models are summed under USAGE_OTHER_MODELS. */
  maxJudgeModels: 16,
  maxModelName: 256,
  maxTokens: Number.MAX_SAFE_INTEGER,
  /** Ten years. */
  maxSeconds: 315_360_000,
} as const;
/** The key under which the tokens of judge models past the first 16 are summed. */
export const USAGE_OTHER_MODELS = "(other models)";

const tokens = T.Integer({ minimum: 0, maximum: USAGE_LIMITS.maxTokens });
/** One judge model's tokens: training and validation (eval) prompt, completion and cached tokens. */
export const JudgeTokens = T.Object(
  {
    trainPrompt: tokens,
    trainCompletion: tokens,
    trainCached: tokens,
    evalPrompt: tokens,
    evalCompletion: tokens,
    evalCached: tokens,
  },
  { additionalProperties: false },
);
export type JudgeTokens = Static<typeof JudgeTokens>;

/**
 * Captured forward progress, summed over attempts (trainer/job/usage.ts): wall-clock seconds from each attempt's
 * start to its last checkpoint (or the end of a succeeded run), the trained tokens of those steps, and the model
 * graders' judge tokens per judge model. Work lost after the last checkpoint is not counted.
 */
export const Usage = T.Object(
  {
    trainingSeconds: T.Number({ minimum: 0, maximum: USAGE_LIMITS.maxSeconds }),
    trainedTokens: tokens,
    /** By judge model (at most 16 named, plus USAGE_OTHER_MODELS). */
    judgeTokens: T.Record(T.String(), JudgeTokens, {
      maxProperties: USAGE_LIMITS.maxJudgeModels + 1,
      propertyNames: { minLength: 1, maxLength: USAGE_LIMITS.maxModelName },
    }),
  },
  { additionalProperties: false },
);
export type Usage = Static<typeof Usage>;

export const FineTuneJobStatus = T.Object(
  {
    observedGeneration: T.Optional(T.Integer({ minimum: 0 })),
    state: T.Optional(StringEnum(STATES)),
    conditions: T.Optional(T.Array(Condition, { maxItems: 16 })),
    startTime: T.Optional(T.String({ format: "date-time", maxLength: 64 })),
    /** When the current run (start or last resume) began: activeDeadlineSeconds counts from here. */
    lastResumeTime: T.Optional(T.String({ format: "date-time", maxLength: 64 })),
    completionTime: T.Optional(T.String({ format: "date-time", maxLength: 64 })),
    /** Gang restarts so far (the retry budget is spec.backoffLimit). */
    restartCount: T.Optional(T.Integer({ minimum: 0 })),
    /** The current attempt (a gang restart or a trainer that paused on its own starts the next one). */
    attempt: T.Optional(T.Integer({ minimum: 0 })),
    /** The batch/v1 Job of the current attempt. */
    trainerJob: T.Optional(T.String({ maxLength: 253 })),
    trainerStatus: T.Optional(TrainerStatus),
    checkpoints: T.Optional(T.Array(CheckpointStatus, { maxItems: 8 })),
    fineTunedModel: T.Optional(T.String({ maxLength: 4096 })),
    /** spec.serve's server: its Service, the model it serves, its replicas. */
    serve: T.Optional(
      T.Object(
        {
          service: T.String({ maxLength: 253 }),
          model: T.String({ maxLength: 253, description: '"final" or the checkpoint name' }),
          modelPath: T.String({ maxLength: 4096 }),
          replicas: T.Integer({ minimum: 0 }),
          readyReplicas: T.Integer({ minimum: 0 }),
        },
        { additionalProperties: false },
      ),
    ),
    /** What the trainers report (captured forward progress: see Usage). */
    usage: T.Optional(Usage),
    ledger: T.Optional(
      T.Object(
        {
          publicKey: T.String({ maxLength: 256, description: "the job's Ed25519 signing key (base64 raw)" }),
          lastEvent: T.Optional(T.String({ maxLength: 128 })),
          root: T.Optional(T.String({ maxLength: 128 })),
        },
        { additionalProperties: false },
      ),
    ),
  },
  { additionalProperties: false },
);
export type FineTuneJobStatus = Static<typeof FineTuneJobStatus>;

/** Bounds of a progress message (the operator drops a message past any of them, and counts it). */
export const PROGRESS_LIMITS = {
  /** Bytes of one message on the wire. */
  maxBytes: 64 * 1024,
  /** Checkpoints listed (the trainer keeps the top 3 by valid_reward_mean plus the latest). */
  maxCheckpoints: 8,
  /** Steps, attempts and ranks (a trainer never gets near it). */
  maxCount: 1_000_000_000,
  maxPath: 4096,
  maxError: 4096,
} as const;

const count = T.Integer({ minimum: 0, maximum: PROGRESS_LIMITS.maxCount });
const reward = T.Union([T.Number({ minimum: -1e6, maximum: 1e6 }), T.Null()]);
const path = T.String({ minLength: 1, maxLength: PROGRESS_LIMITS.maxPath });

export const PROGRESS_STATUSES = ["running", "paused", "succeeded", "cancelled", "failed"] as const;

/** The progress message trainers publish on `rft.jobs.<ns>.<name>.progress` (core NATS, JSON). */
export const ProgressMessage = T.Object(
  {
    step: count,
    totalSteps: count,
    trainRewardMean: reward,
    validRewardMean: reward,
    checkpoints: T.Array(
      T.Object(
        {
          name: T.String({ minLength: 1, maxLength: 253, pattern: "^[A-Za-z0-9._-]+$" }),
          step: count,
          validRewardMean: reward,
          path,
          createdAt: T.Optional(T.String({ format: "date-time", maxLength: 64 })),
        },
        { additionalProperties: false },
      ),
      { maxItems: PROGRESS_LIMITS.maxCheckpoints },
    ),
    status: StringEnum(PROGRESS_STATUSES),
    fineTunedModel: T.Optional(path),
    usage: T.Optional(Usage),
    error: T.Optional(T.String({ maxLength: PROGRESS_LIMITS.maxError })),
    rank: count,
    attempt: count,
    time: T.String({ format: "date-time", maxLength: 64 }),
  },
  { additionalProperties: false },
);
export type ProgressMessage = Static<typeof ProgressMessage>;

/** The control message the operator publishes on `rft.jobs.<ns>.<name>.control`. */
export const ControlMessage = T.Object(
  { action: StringEnum(["pause", "resume", "cancel"] as const) },
  { additionalProperties: false },
);
export type ControlMessage = Static<typeof ControlMessage>;
/** Bytes of one control message on the wire (the trainer drops a larger one). */
export const CONTROL_MAX_BYTES = 1024;

export const progressSubject = (ns: string, name: string) => `rft.jobs.${ns}.${name}.progress`;
export const controlSubject = (ns: string, name: string) => `rft.jobs.${ns}.${name}.control`;
