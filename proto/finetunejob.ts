/**
 * The FineTuneJob spec: one source for the CRD schema (crds/), the trainer and the CLI (`rft run`).
 * It mirrors OpenAI's CreateFineTuningJobRequest in Kubernetes style (camelCase), while the `grader` and
 * `responseFormat` objects are OpenAI's JSON exactly (snake_case inside) so users paste them unchanged.
 * Kubernetes-only fields (replicas, trainer, grader, storage, lifecycle) are ignored by `rft run`.
 */
import { type Static, Type as T } from "@sinclair/typebox";
import { StringEnum } from "./graders.js";

export const API_GROUP = "rft.dev";
export const API_VERSION = "rft.dev/v1alpha1";
export const KIND = "FineTuneJob";

const Auto = T.Literal("auto");
const autoOr = <S extends ReturnType<typeof T.Integer> | ReturnType<typeof T.Number>>(s: S) => T.Union([Auto, s]);

/** OpenAI's method hyperparameters (camelCase), shared by SFT and RFT. */
const CommonHyperparameters = {
  nEpochs: T.Optional(autoOr(T.Integer({ minimum: 1, maximum: 50 }))),
  batchSize: T.Optional(autoOr(T.Integer({ minimum: 1, maximum: 256 }))),
  learningRateMultiplier: T.Optional(autoOr(T.Number({ exclusiveMinimum: 0, maximum: 100 }))),
};

export const LOSSES = ["grpo", "dr_grpo", "dapo"] as const;
export type LossType = (typeof LOSSES)[number];

export const ReinforcementHyperparameters = T.Object(
  {
    ...CommonHyperparameters,
    evalInterval: T.Optional(autoOr(T.Integer({ minimum: 1, maximum: 100_000 }))),
    evalSamples: T.Optional(autoOr(T.Integer({ minimum: 1, maximum: 64 }))),
    computeMultiplier: T.Optional(autoOr(T.Number({ exclusiveMinimum: 0.00001, maximum: 10 }))),
    reasoningEffort: T.Optional(StringEnum(["default", "low", "medium", "high"] as const)),
    // Knobs OpenAI never exposed.
    samplesPerPrompt: T.Optional(T.Integer({ minimum: 2, maximum: 256, description: "group size G" })),
    maxCompletionTokens: T.Optional(T.Integer({ minimum: 1, maximum: 32_768 })),
    temperature: T.Optional(T.Number({ minimum: 0, maximum: 2 })),
    topP: T.Optional(T.Number({ exclusiveMinimum: 0, maximum: 1 })),
    loss: T.Optional(StringEnum(LOSSES)),
    clipEpsilon: T.Optional(
      T.Object(
        { low: T.Number({ minimum: 0, maximum: 10 }), high: T.Number({ minimum: 0, maximum: 10 }) },
        { additionalProperties: false },
      ),
    ),
    klCoef: T.Optional(T.Number({ minimum: 0, maximum: 10 })),
    updatesPerBatch: T.Optional(T.Integer({ minimum: 1, maximum: 64 })),
    dynamicSampling: T.Optional(T.Boolean()),
    warmupSteps: T.Optional(T.Integer({ minimum: 0, maximum: 100_000 })),
  },
  { additionalProperties: false },
);
export type ReinforcementHyperparameters = Static<typeof ReinforcementHyperparameters>;

export const SupervisedHyperparameters = T.Object(
  { ...CommonHyperparameters, evalInterval: T.Optional(autoOr(T.Integer({ minimum: 1, maximum: 100_000 }))) },
  { additionalProperties: false },
);
export type SupervisedHyperparameters = Static<typeof SupervisedHyperparameters>;

/** PEFT's names of the projections an adapter may target (trainer/model/lora.ts checks them against the model). */
export const LORA_TARGET_MODULES = [
  "q_proj",
  "k_proj",
  "v_proj",
  "o_proj",
  "gate_proj",
  "up_proj",
  "down_proj",
] as const;

/**
 * LoRA adapters instead of a full fine-tune (not an OpenAI field): the base weights stay frozen and unchanged,
 * the adapters (and their optimizer state) train in float32, the job writes a PEFT adapter directory.
 * A rank larger than a targeted projection's smallest dimension is refused when the model is loaded.
 */
export const LoraSpec = T.Object(
  {
    rank: T.Optional(T.Integer({ minimum: 1, maximum: 1024, description: "r (default 8)" })),
    alpha: T.Optional(
      T.Number({
        exclusiveMinimum: 0,
        maximum: 100_000,
        description: "lora_alpha; scale alpha/r (default 2·rank, 16)",
      }),
    ),
    dropout: T.Optional(T.Number({ minimum: 0, exclusiveMaximum: 1, description: "lora_dropout (default 0)" })),
    targetModules: T.Optional(
      T.Array(StringEnum(LORA_TARGET_MODULES), {
        minItems: 1,
        maxItems: LORA_TARGET_MODULES.length,
        uniqueItems: true,
        description: "PEFT module names (default: all seven projections)",
      }),
    ),
    adapter: T.Optional(
      T.String({ minLength: 1, maxLength: 1024, description: "a PEFT adapter directory to start from" }),
    ),
    merge: T.Optional(T.Boolean({ description: "also write the merged model (base + adapter)" })),
  },
  { additionalProperties: false },
);
export type LoraSpec = Static<typeof LoraSpec>;

/** OpenAI's response_format (Chat Completions `json_schema` form, or Azure's flattened form). */
export const ResponseFormat = T.Object(
  {
    type: StringEnum(["json_schema", "json_object", "text"] as const),
    json_schema: T.Optional(T.Record(T.String(), T.Unknown())),
    name: T.Optional(T.String()),
    schema: T.Optional(T.Record(T.String(), T.Unknown())),
    strict: T.Optional(T.Boolean()),
  },
  { additionalProperties: false },
);

export const Method = T.Object(
  {
    type: StringEnum(["supervised", "reinforcement"] as const),
    supervised: T.Optional(
      T.Object(
        { hyperparameters: T.Optional(SupervisedHyperparameters), lora: T.Optional(LoraSpec) },
        { additionalProperties: false },
      ),
    ),
    reinforcement: T.Optional(
      T.Object(
        {
          // OpenAI's grader JSON, validated by the grader engine (grader-sidecar/src/validate.ts).
          grader: T.Record(T.String(), T.Unknown()),
          responseFormat: T.Optional(T.Union([ResponseFormat, T.Null()])),
          hyperparameters: T.Optional(ReinforcementHyperparameters),
          lora: T.Optional(LoraSpec),
        },
        { additionalProperties: false },
      ),
    ),
  },
  { additionalProperties: false },
);

const KeyRef = T.Object(
  {
    inline: T.Optional(T.String({ maxLength: 4096, description: "PEM or base64 raw key" })),
    file: T.Optional(T.String({ maxLength: 1024 })),
    secretRef: T.Optional(
      T.Object(
        { name: T.String({ maxLength: 253 }), key: T.String({ maxLength: 253 }) },
        { additionalProperties: false },
      ),
    ),
  },
  { additionalProperties: false },
);

export const Authority = T.Object(
  {
    name: T.String({ minLength: 1, maxLength: 128, pattern: "^[A-Za-z0-9][A-Za-z0-9._-]*$" }),
    publicKey: KeyRef,
    lawfulBasis: T.String({ minLength: 1, maxLength: 1024 }),
    envelope: T.Array(T.String({ minLength: 1, maxLength: 64 }), { minItems: 1, maxItems: 64 }),
  },
  { additionalProperties: false },
);

export const Governance = T.Object(
  {
    authorities: T.Array(Authority, { maxItems: 64 }),
    requireCredentials: T.Optional(T.Boolean()),
    signingKey: T.Optional(KeyRef),
  },
  { additionalProperties: false },
);

/**
 * Where model graders (score_model, label_model) find their judge: an OpenAI-compatible chat-completions
 * endpoint per grader `model` name. The grader JSON stays OpenAI's (it names only a `model`); the endpoint, its
 * key and its limits are the job's, so user graders run unchanged and cannot point the service at a host.
 */
export const GraderEndpoint = T.Object(
  {
    models: T.Optional(
      T.Array(T.String({ minLength: 1, maxLength: 256 }), {
        minItems: 1,
        maxItems: 64,
        description: "grader `model` names served here; absent: every model no other endpoint names",
      }),
    ),
    baseUrl: T.String({
      minLength: 1,
      maxLength: 2048,
      pattern: "^https?://",
      description: "OpenAI-compatible base URL, e.g. https://api.openai.com/v1 or http://judge:8000/v1",
    }),
    servedModel: T.Optional(
      T.String({ minLength: 1, maxLength: 256, description: "model name sent instead of the grader's `model`" }),
    ),
    apiKey: T.Optional(
      T.Object(
        {
          secretRef: T.Optional(
            T.Object(
              { name: T.String({ maxLength: 253 }), key: T.String({ maxLength: 253 }) },
              { additionalProperties: false, description: "cluster: a Secret in the job's namespace" },
            ),
          ),
          env: T.Optional(
            T.String({ minLength: 1, maxLength: 256, description: "`rft run`: an environment variable" }),
          ),
          file: T.Optional(
            T.String({ minLength: 1, maxLength: 1024, description: "`rft run`: a file (relative to the manifest)" }),
          ),
        },
        { additionalProperties: false },
      ),
    ),
    maxConcurrency: T.Optional(T.Integer({ minimum: 1, maximum: 1024, description: "requests in flight (default 8)" })),
    timeoutSeconds: T.Optional(
      T.Number({ exclusiveMinimum: 0, maximum: 3600, description: "per request (default 60)" }),
    ),
    maxRetries: T.Optional(T.Integer({ minimum: 0, maximum: 10, description: "on 429, 5xx, timeouts (default 3)" })),
    structuredOutputs: T.Optional(
      T.Boolean({
        description: "send OpenAI's json_schema response_format (default true; false for servers without it)",
      }),
    ),
  },
  { additionalProperties: false },
);
export type GraderEndpoint = Static<typeof GraderEndpoint>;

const Resources = T.Object(
  {
    requests: T.Optional(T.Record(T.String(), T.Union([T.String({ maxLength: 64 }), T.Number()]))),
    limits: T.Optional(T.Record(T.String(), T.Union([T.String({ maxLength: 64 }), T.Number()]))),
  },
  { additionalProperties: false },
);

/**
 * spec.serve: the operator runs `rft serve` on the job's model (a Deployment and a Service `<job>-serve`, owned by
 * the FineTuneJob) once the job has it: the final model after Succeeded, or a checkpoint listed in
 * status.checkpoints. `rft api --cluster` sets it on the first chat request for the model.
 */
export const ServeSpec = T.Object(
  {
    model: T.String({
      minLength: 1,
      maxLength: 253,
      pattern: "^[A-Za-z0-9._-]+$",
      description: '"final" (the fine-tuned model, after Succeeded) or the name of a checkpoint in status.checkpoints',
    }),
    replicas: T.Optional(
      T.Integer({ minimum: 0, maximum: 16, description: "serving pods (default 1; 0: scaled to zero)" }),
    ),
    resources: T.Optional(Resources),
    /** The Secret (in the job's namespace) and key holding the bearer token the server requires. */
    tokenSecretRef: T.Object(
      {
        name: T.String({ minLength: 1, maxLength: 253 }),
        key: T.String({ minLength: 1, maxLength: 253 }),
      },
      { additionalProperties: false },
    ),
    modelId: T.Optional(
      T.String({
        minLength: 1,
        maxLength: 512,
        description: "the model name the server answers to (default: the job's name)",
      }),
    ),
  },
  { additionalProperties: false },
);
export type ServeSpec = Static<typeof ServeSpec>;

/** What the operator creates for a job's ranks (spec.workloadKind). */
export const WORKLOAD_KINDS = ["Job", "JobSet"] as const;
export type WorkloadKind = (typeof WORKLOAD_KINDS)[number];

export const FineTuneJobSpec = T.Object(
  {
    model: T.String({ minLength: 1, maxLength: 1024, description: "model directory (Hugging Face format)" }),
    trainingFile: T.String({ minLength: 1, maxLength: 1024 }),
    validationFile: T.Optional(T.String({ minLength: 1, maxLength: 1024 })),
    seed: T.Optional(T.Integer({ minimum: 0, maximum: 2147483647 })),
    suffix: T.Optional(T.String({ minLength: 1, maxLength: 64 })),
    metadata: T.Optional(T.Record(T.String({ maxLength: 64 }), T.String({ maxLength: 512 }), { maxProperties: 16 })),
    method: Method,
    governance: T.Optional(Governance),
    graderEndpoints: T.Optional(T.Array(GraderEndpoint, { maxItems: 16 })),
    // Kubernetes-only (ignored by `rft run`).
    replicas: T.Optional(T.Integer({ minimum: 1, maximum: 256 })),
    trainer: T.Optional(
      T.Object(
        {
          image: T.Optional(T.String({ maxLength: 512 })),
          backend: T.Optional(StringEnum(["wasm", "cpu", "tensorflow", "webgpu"] as const)),
          resources: T.Optional(Resources),
          nodeSelector: T.Optional(T.Record(T.String(), T.String({ maxLength: 256 }))),
          tolerations: T.Optional(T.Array(T.Record(T.String(), T.Unknown()), { maxItems: 32 })),
          env: T.Optional(T.Array(T.Record(T.String(), T.Unknown()), { maxItems: 64 })),
        },
        { additionalProperties: false },
      ),
    ),
    grader: T.Optional(
      T.Object(
        {
          image: T.Optional(T.String({ maxLength: 512 })),
          resources: T.Optional(Resources),
          concurrency: T.Optional(T.Integer({ minimum: 1, maximum: 4096 })),
        },
        { additionalProperties: false },
      ),
    ),
    storage: T.Optional(
      T.Object(
        {
          modelClaim: T.Optional(T.String({ maxLength: 253 })),
          checkpointClaim: T.Optional(T.String({ maxLength: 253 })),
        },
        { additionalProperties: false },
      ),
    ),
    serve: T.Optional(ServeSpec),
    suspend: T.Optional(T.Boolean()),
    cancel: T.Optional(T.Boolean()),
    activeDeadlineSeconds: T.Optional(T.Integer({ minimum: 1 })),
    backoffLimit: T.Optional(T.Integer({ minimum: 0, maximum: 100 })),
    ttlSecondsAfterFinished: T.Optional(T.Integer({ minimum: 0 })),
    priorityClassName: T.Optional(T.String({ maxLength: 253 })),
    workloadKind: T.Optional(
      StringEnum(WORKLOAD_KINDS, {
        description:
          "what runs the ranks: an Indexed batch/v1 Job (default) or a JobSet (jobset.x-k8s.io/v1alpha2, JobSet installed); either way one gang, admitted all-or-nothing by Kueue when the job has the kueue.x-k8s.io/queue-name label",
      }),
    ),
  },
  { additionalProperties: false },
);
export type FineTuneJobSpec = Static<typeof FineTuneJobSpec>;

export const FineTuneJob = T.Object(
  {
    apiVersion: T.Literal(API_VERSION),
    kind: T.Literal(KIND),
    metadata: T.Object(
      {
        name: T.String({ minLength: 1, maxLength: 253, pattern: "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$" }),
        namespace: T.Optional(T.String({ maxLength: 63 })),
        labels: T.Optional(T.Record(T.String(), T.String())),
        annotations: T.Optional(T.Record(T.String(), T.String())),
      },
      { additionalProperties: true },
    ),
    spec: FineTuneJobSpec,
  },
  { additionalProperties: true },
);
export type FineTuneJob = Static<typeof FineTuneJob>;
