import type { TextSimilarityGrader } from "../../../proto/graders.js";
import { type ModelEndpoint, postJson, usageOf } from "../model-client.js";
import { textSimilarity } from "../similarity/index.js";
import { DEFAULT_SIMILARITY_LIMITS, type SimilarityLimits, similarityOverLimit } from "../similarity/limits.js";
import { render, type Template } from "../template.js";
import { fail, type GradeScope, type Outcome } from "./outcome.js";

export const DEFAULT_EMBEDDINGS_MODEL = "text-embedding-3-large";

export async function gradeTextSimilarity(
  g: { config: TextSimilarityGrader; input: Template; reference: Template },
  scope: GradeScope,
  embeddings?: { endpoint: ModelEndpoint; model: string },
  limits: SimilarityLimits = DEFAULT_SIMILARITY_LIMITS,
): Promise<Outcome> {
  const a = render(g.input, scope);
  const b = render(g.reference, scope);
  if (a.missing.length || b.missing.length) return fail({ invalid_variable_error: true });
  const metric = g.config.evaluation_metric;
  if (metric !== "cosine") {
    // Past a metric's cost bound nothing is computed (see similarity/limits.ts).
    if (similarityOverLimit(metric, a.text, b.text, limits) !== null)
      return fail({ truncated_observation_error: true });
    return { reward: textSimilarity(metric, a.text, b.text), errors: {} };
  }
  if (!embeddings) return fail({ other_error: true });
  const res = await postJson(embeddings.endpoint, "/embeddings", { model: embeddings.model, input: [a.text, b.text] });
  const vecs = res.ok ? (res.body?.data as { embedding: number[] }[] | undefined) : undefined;
  if (!res.ok || !Array.isArray(vecs) || vecs.length !== 2) {
    return fail({ other_error: true });
  }
  const usage = { [embeddings.model]: usageOf(res.body.usage) };
  return { reward: cosine(vecs[0]!.embedding, vecs[1]!.embedding), errors: {}, usage };
}

export function cosine(x: number[], y: number[]): number {
  let dot = 0;
  let nx = 0;
  let ny = 0;
  for (let i = 0; i < x.length; i++) {
    dot += x[i]! * y[i]!;
    nx += x[i]! * x[i]!;
    ny += y[i]! * y[i]!;
  }
  return nx === 0 || ny === 0 ? 0 : dot / Math.sqrt(nx * ny);
}
