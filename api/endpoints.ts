/**
 * External OpenAI-compatible model endpoints of `rft api --endpoints FILE`: models this server does not hold
 * but lists in `/v1/models`, proxies chat completions to, samples in eval runs and lets model graders call
 * (another provider, a vLLM or `rft serve` elsewhere; in cluster mode, where the API holds no model, any model
 * server the cluster runs). The file (YAML or JSON) is the judge-endpoint list of `spec.graderEndpoints` and
 * `rft grade --endpoints` (proto/finetunejob.ts GraderEndpoint), read by the same code, with one rule more:
 * every endpoint names its `models` (the API routes by model id only; a catch-all would send any typo out):
 *
 *   - baseUrl: http://vllm.ml.svc:8000/v1
 *     models: [qwen2.5-7b-instruct]    # the ids clients send; may not shadow a base model of this server
 *     servedModel: Qwen/Qwen2.5-7B-Instruct   # optional: the name the endpoint knows it by
 *     apiKey: { env: VLLM_API_KEY }    # optional: the bearer key from an env var or a file, never in the file
 *
 * Only the installation configures endpoints, never an API user: no request makes the server call a URL.
 */
import { readFileSync } from "node:fs";
import { dirname } from "node:path";
import { parse } from "yaml";
import { EndpointConfigError, type ModelEndpoint, resolveEndpoints } from "../grader-sidecar/src/model-client.js";

export { EndpointConfigError };

/** The endpoints of a parsed list (`where` names it in errors: `<where>[i].field: why`). */
export function apiEndpoints(
  specs: unknown,
  o: { where: string; env?: NodeJS.ProcessEnv; baseDir?: string; baseModels?: string[] },
): Endpoints {
  const eps = resolveEndpoints(specs, {
    where: o.where,
    ...(o.env ? { env: o.env } : {}),
    ...(o.baseDir ? { baseDir: o.baseDir } : {}),
  });
  for (const [i, e] of eps.entries()) {
    if (!e.models)
      throw new EndpointConfigError(
        `${o.where}[${i}].models: rft api routes a model to an endpoint by its id only: list the endpoint's models`,
      );
    for (const m of e.models)
      if (o.baseModels?.includes(m))
        throw new EndpointConfigError(`${o.where}[${i}].models: "${m}" is a base model of this server`);
  }
  return new Endpoints(eps);
}

/** `--endpoints FILE`: its key files resolve beside it. */
export function loadEndpoints(file: string, env: NodeJS.ProcessEnv = process.env, baseModels: string[] = []) {
  let v: unknown;
  try {
    v = parse(readFileSync(file, "utf8"), { maxAliasCount: 0 });
  } catch (e) {
    throw new EndpointConfigError(`${file}: ${(e as Error).message}`);
  }
  return apiEndpoints(v, { where: file, env, baseDir: dirname(file), baseModels });
}

/** Model id → its endpoint. */
export class Endpoints {
  private readonly byModel = new Map<string, ModelEndpoint>();

  constructor(readonly list: ModelEndpoint[] = []) {
    for (const e of list) for (const m of e.models ?? []) this.byModel.set(m, e);
  }

  of(model: string): ModelEndpoint | undefined {
    return this.byModel.get(model);
  }

  /** Every endpoint model, owned by its endpoint's host (for /v1/models). */
  models(): { id: string; owned_by: string }[] {
    return [...this.byModel.entries()].map(([id, e]) => ({ id, owned_by: new URL(e.baseUrl).host }));
  }
}
