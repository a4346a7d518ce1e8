/**
 * Grader configuration types: OpenAI's grader JSON, exactly (snake_case), as TypeBox schemas.
 * One source for the TypeScript types, the JSON Schema used to validate graders (sidecar, CLI, HTTP),
 * and the grader part of the FineTuneJob CRD schema.
 * Reference: shared/reference/openai-rft-api.md §3.
 */
import { type Static, Type as T } from "@sinclair/typebox";

const Name = T.String({ minLength: 1, maxLength: 256 });

/** A string enum rendered as JSON Schema `enum` (clear validation errors, and what the CRD schema needs). */
export function StringEnum<V extends readonly string[]>(values: V, options: object = {}) {
  return T.Unsafe<V[number]>({ type: "string", enum: [...values], ...options });
}
const Template = T.String({ maxLength: 1_000_000 });

export const STRING_CHECK_OPERATIONS = ["eq", "ne", "neq", "like", "ilike"] as const;
export const SIMILARITY_METRICS = [
  "cosine",
  "fuzzy_match",
  "bleu",
  "gleu",
  "meteor",
  "rouge_1",
  "rouge_2",
  "rouge_3",
  "rouge_4",
  "rouge_5",
  "rouge_l",
] as const;
export type SimilarityMetric = (typeof SIMILARITY_METRICS)[number];

export const StringCheckGrader = T.Object(
  {
    type: T.Literal("string_check"),
    name: Name,
    input: Template,
    reference: Template,
    operation: StringEnum(STRING_CHECK_OPERATIONS),
  },
  { additionalProperties: false },
);

export const TextSimilarityGrader = T.Object(
  {
    type: T.Literal("text_similarity"),
    name: Name,
    input: Template,
    reference: Template,
    evaluation_metric: StringEnum(SIMILARITY_METRICS),
    pass_threshold: T.Optional(T.Number()),
  },
  { additionalProperties: false },
);

const ContentItemBranches = T.Union([
  T.Object({ type: T.Literal("input_text"), text: Template }, { additionalProperties: false }),
  T.Object({ type: T.Literal("output_text"), text: Template }, { additionalProperties: false }),
  T.Object(
    {
      type: T.Literal("input_image"),
      // OpenAI's examples write the one not used as null ("file_id": null).
      image_url: T.Optional(T.Union([Template, T.Null()])),
      file_id: T.Optional(T.Union([T.String({ maxLength: 256 }), T.Null()])),
      detail: T.Optional(T.Union([StringEnum(["high", "low", "auto"] as const), T.Null()])),
    },
    { additionalProperties: false },
  ),
  T.Object(
    {
      type: T.Literal("input_audio"),
      input_audio: T.Object({ data: Template, format: T.String() }, { additionalProperties: false }),
    },
    { additionalProperties: false },
  ),
]);
/** Validation errors come from the branch the item's `type` names (Ajv's discriminator), not from every branch. */
const ContentItemObject = T.Unsafe<Static<typeof ContentItemBranches>>({
  type: "object",
  oneOf: ContentItemBranches.anyOf,
  discriminator: { propertyName: "type" },
});
/** A content item: an object, or (in an array) a bare string, which is input_text. */
const ContentItem = T.Union([Template, ContentItemObject]);
export type ContentItem = Static<typeof ContentItem>;

export const EvalMessage = T.Object(
  {
    role: StringEnum(["user", "assistant", "system", "developer"] as const),
    type: T.Optional(T.Literal("message")),
    content: T.Union([Template, ContentItemObject, T.Array(ContentItem, { maxItems: 64 })]),
  },
  { additionalProperties: false },
);
export type EvalMessage = Static<typeof EvalMessage>;

export const REASONING_EFFORTS = ["none", "minimal", "low", "medium", "high", "xhigh", "max"] as const;

export const SamplingParams = T.Object(
  {
    seed: T.Optional(T.Union([T.Integer(), T.Null()])),
    top_p: T.Optional(T.Union([T.Number({ minimum: 0, maximum: 1 }), T.Null()])),
    temperature: T.Optional(T.Union([T.Number({ minimum: 0, maximum: 2 }), T.Null()])),
    max_completions_tokens: T.Optional(T.Union([T.Integer({ minimum: 1 }), T.Null()])),
    reasoning_effort: T.Optional(T.Union([StringEnum(REASONING_EFFORTS), T.Null()])),
  },
  { additionalProperties: false },
);

export const ScoreModelGrader = T.Object(
  {
    type: T.Literal("score_model"),
    name: Name,
    model: T.String({ minLength: 1, maxLength: 256 }),
    input: T.Array(EvalMessage, { minItems: 1, maxItems: 64 }),
    range: T.Optional(T.Tuple([T.Number(), T.Number()])),
    sampling_params: T.Optional(SamplingParams),
    pass_threshold: T.Optional(T.Number()),
  },
  { additionalProperties: false },
);

export const LabelModelGrader = T.Object(
  {
    type: T.Literal("label_model"),
    name: Name,
    model: T.String({ minLength: 1, maxLength: 256 }),
    input: T.Array(EvalMessage, { minItems: 1, maxItems: 64 }),
    labels: T.Array(T.String({ minLength: 1, maxLength: 256 }), { minItems: 1, maxItems: 256 }),
    passing_labels: T.Array(T.String({ minLength: 1, maxLength: 256 }), { minItems: 1, maxItems: 256 }),
  },
  { additionalProperties: false },
);

/** Python source limit, as OpenAI's: < 256 kB. */
export const PYTHON_SOURCE_MAX_BYTES = 256 * 1024;
/**
 * The largest reward magnitude a grader may return. Past it (and for NaN/±inf) the reward is 0 with an error
 * flag, so sums and means over a step can never overflow to ±inf/NaN. grader-sidecar/python/worker.py has the
 * same bound (REWARD_ABS_MAX).
 */
export const REWARD_ABS_MAX = 1e6;

export const PythonGrader = T.Object(
  {
    type: T.Literal("python"),
    name: T.Optional(Name),
    source: T.String({ minLength: 1 }),
    image_tag: T.Optional(T.String({ maxLength: 128 })),
    pass_threshold: T.Optional(T.Number()),
  },
  { additionalProperties: false },
);

export const MultiGrader = T.Object(
  {
    type: T.Literal("multi"),
    name: T.Optional(Name),
    graders: T.Unknown(), // a map name → sub-grader (or, for SDK compatibility, one sub-grader); checked by hand
    calculate_output: T.String({ minLength: 1, maxLength: 4096 }),
  },
  { additionalProperties: false },
);

export type StringCheckGrader = Static<typeof StringCheckGrader>;
export type TextSimilarityGrader = Static<typeof TextSimilarityGrader>;
export type ScoreModelGrader = Static<typeof ScoreModelGrader>;
export type LabelModelGrader = Static<typeof LabelModelGrader>;
export type PythonGrader = Static<typeof PythonGrader>;
export type SubGrader = StringCheckGrader | TextSimilarityGrader | ScoreModelGrader | LabelModelGrader | PythonGrader;
/** A multi grader after normalisation: `graders` is always the named map. */
export type MultiGrader = Omit<Static<typeof MultiGrader>, "graders"> & { graders: Record<string, SubGrader> };
export type Grader = SubGrader | MultiGrader;
export type GraderType = Grader["type"];

/** Schemas by type, for validation and for embedding in the CRD. */
export const GRADER_SCHEMAS = {
  string_check: StringCheckGrader,
  text_similarity: TextSimilarityGrader,
  score_model: ScoreModelGrader,
  label_model: LabelModelGrader,
  python: PythonGrader,
  multi: MultiGrader,
} as const;

/** Grader types OpenAI accepts at the top level of an RFT job and of /graders/run. */
export const TOP_LEVEL_GRADER_TYPES = ["string_check", "text_similarity", "python", "score_model", "multi"] as const;
/** Grader types allowed inside `multi`. */
export const SUB_GRADER_TYPES = ["string_check", "text_similarity", "python", "score_model", "label_model"] as const;

/** The 14 error flags of OpenAI's RunGraderResponse.metadata.errors. */
export interface GraderErrors {
  formula_parse_error: boolean;
  sample_parse_error: boolean;
  truncated_observation_error: boolean;
  unresponsive_reward_error: boolean;
  invalid_variable_error: boolean;
  other_error: boolean;
  python_grader_server_error: boolean;
  python_grader_server_error_type: string | null;
  python_grader_runtime_error: boolean;
  python_grader_runtime_error_details: string | null;
  model_grader_server_error: boolean;
  model_grader_refusal_error: boolean;
  model_grader_parse_error: boolean;
  model_grader_server_error_details: string | null;
}

/** The boolean error flags, in OpenAI's order (used for metrics labels and event keys). */
export const ERROR_FLAGS = [
  "formula_parse_error",
  "sample_parse_error",
  "truncated_observation_error",
  "unresponsive_reward_error",
  "invalid_variable_error",
  "other_error",
  "python_grader_server_error",
  "python_grader_runtime_error",
  "model_grader_server_error",
  "model_grader_refusal_error",
  "model_grader_parse_error",
] as const;
export type ErrorFlag = (typeof ERROR_FLAGS)[number];

export interface TokenUsage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  cached_tokens: number;
}

/** OpenAI's RunGraderResponse. */
export interface RunGraderResponse {
  reward: number;
  metadata: {
    name: string;
    type: GraderType;
    errors: GraderErrors;
    execution_time: number;
    scores: Record<string, number>;
    token_usage: TokenUsage | null;
    sampled_model_name: string | null;
  };
  sub_rewards: Record<string, number>;
  model_grader_token_usage_per_model: Record<string, TokenUsage>;
  /**
   * Not OpenAI's (clients ignore it): for multi, each sub-grader's own type, error flags, latency and judge
   * usage, which the per-step metrics report per sub-grader as OpenAI's events do.
   */
  sub_graders?: Record<string, SubGraderMetadata>;
  /** Not OpenAI's: for a grader with `pass_threshold` (an evals field), whether reward ≥ pass_threshold. */
  passed?: boolean;
}

export interface SubGraderMetadata {
  type: SubGrader["type"];
  errors: Partial<GraderErrors>;
  execution_time: number;
  model_grader_token_usage_per_model: Record<string, TokenUsage>;
  /** For a sub-grader with `pass_threshold`: whether its reward reached it. */
  passed?: boolean;
}

/** The `sample` namespace a grader sees (OpenAI's names). */
export interface Sample {
  output_text: string;
  output_json?: unknown;
  output_tools?: unknown[];
  choices?: unknown[];
  output_audio?: unknown;
}
