import type { GraderErrors, Sample, SubGraderMetadata, TokenUsage } from "../../../proto/graders.js";
import type { RenderScope } from "../template.js";

/** What grading one sample with one grader produced, before it is shaped into a RunGraderResponse. */
export interface Outcome {
  reward: number;
  errors: Partial<GraderErrors>;
  scores?: Record<string, number>;
  subRewards?: Record<string, number>;
  usage?: Record<string, TokenUsage>;
  sampledModel?: string | null;
  subGraders?: Record<string, SubGraderMetadata>;
}

export interface GradeScope extends RenderScope {
  item: Record<string, unknown>;
  sample: Sample;
}

export const fail = (errors: Partial<GraderErrors>, extra: Partial<Outcome> = {}): Outcome => ({
  reward: 0,
  errors,
  ...extra,
});
