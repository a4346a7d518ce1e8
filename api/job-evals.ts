/**
 * The RFT job ⇄ eval link (OpenAI's `job.eval_id`): creating an RFT job creates an eval whose one testing
 * criterion is the job's grader, and each validation the trainer wrote (`<out>/validation/step-N.jsonl`,
 * proto/validation.ts; N = 0 is the baseline) becomes one completed run of it, named "<job id> step N" with
 * metadata `{fine_tuning_job_id, step}`: one output item per validation sample (the prompt, the item, the
 * sampled text, the grader's score with its sub-scores and errors). The mapping is pure; `importValidations`
 * is the thin shell that reads the step files and stores what is new.
 */
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { errorFlagsSet } from "../grader-sidecar/src/engine.js";
import { type ValidationOmitted, type ValidationSample, validationFileName } from "../proto/validation.js";
import { type EvalRun, type EvalStore, type OutputItem, passed } from "./evals.js";
import { newId, now } from "./ids.js";

type Obj = Record<string, unknown>;

/** What the job's eval is created from (EvalStore.create's body). */
export function jobEvalRequest(jobId: string, grader: Obj): Obj {
  return {
    name: `${jobId} validation`,
    metadata: { fine_tuning_job_id: jobId },
    data_source_config: {
      type: "custom",
      item_schema: { type: "object", properties: { messages: { type: "array" } }, required: ["messages"] },
      include_sample_schema: true,
    },
    testing_criteria: [grader],
  };
}

/** A step file's samples and how many it left out (its last line, when over the size limit). */
export function parseValidationFile(text: string): { samples: ValidationSample[]; omitted: number } {
  const samples: ValidationSample[] = [];
  let omitted = 0;
  for (const line of text.split("\n")) {
    if (!line.trim()) continue;
    const v = JSON.parse(line) as ValidationSample | ValidationOmitted;
    if ("omitted" in v) omitted = v.omitted;
    else samples.push(v);
  }
  return { samples, omitted };
}

export interface StepRunInput {
  evalId: string;
  job: { id: string; seed: number; validation_file: string | null };
  step: number;
  /** The model the validation sampled: the base model at step 0, else the step's checkpoint. */
  model: string;
  criterion: Obj;
  samples: ValidationSample[];
  omitted: number;
  createdAt: number;
  newId: (prefix: string) => string;
}

/** One validation sample as an output item of the step's run. */
function outputItem(x: StepRunInput, runId: string, s: ValidationSample): OutputItem {
  const g = s.grader;
  const ok = g.passed ?? passed(x.criterion, g.reward);
  const errors = errorFlagsSet(g);
  const message: Obj = { role: "assistant", content: s.output_text };
  if (s.output_tools.length) message.tool_calls = s.output_tools;
  return {
    object: "eval.run.output_item",
    id: x.newId("outputitem_"),
    run_id: runId,
    eval_id: x.evalId,
    created_at: x.createdAt,
    status: errors.length ? "error" : ok ? "pass" : "fail",
    datasource_item_id: s.line - 1,
    datasource_item: s.item,
    results: [
      {
        name: g.metadata.name,
        type: g.metadata.type,
        score: g.reward,
        passed: ok,
        sample: null,
        metadata: {
          sub_rewards: g.sub_rewards,
          ...(g.sub_graders ? { sub_graders: g.sub_graders } : {}),
          errors: g.metadata.errors,
          scores: g.metadata.scores,
          execution_time: g.metadata.execution_time,
          token_usage: g.metadata.token_usage,
          sampled_model_name: g.metadata.sampled_model_name,
        },
      },
    ],
    sample: {
      model: x.model,
      input: s.messages,
      output: [message],
      finish_reason: s.finish_reason,
      usage: {
        prompt_tokens: 0,
        completion_tokens: s.completion_tokens,
        total_tokens: s.completion_tokens,
        cached_tokens: 0,
      },
      error: null,
      seed: s.seed,
      sample_index: s.sample_index,
      ...s.sampling,
    },
  };
}

/** The completed run of one validation step and its output items. Pure (ids and time come in). */
export function stepRun(x: StepRunInput): { run: EvalRun; items: OutputItem[] } {
  const runId = x.newId("evalrun_");
  const items = x.samples.map((s) => outputItem(x, runId, s));
  const count = (st: OutputItem["status"]) => items.filter((i) => i.status === st).length;
  const tokens = x.samples.reduce((a, s) => a + s.completion_tokens, 0);
  const name = String(x.criterion.name ?? "grader");
  const sampling = x.samples[0]?.sampling;
  const run: EvalRun = {
    object: "eval.run",
    id: runId,
    eval_id: x.evalId,
    name: `${x.job.id} step ${x.step}`,
    created_at: x.createdAt,
    status: "completed",
    model: x.model,
    data_source: {
      type: "completions",
      model: x.model,
      source: { type: "file_id", id: x.job.validation_file },
      input_messages: { type: "item_reference", item_reference: "item.messages" },
      sampling_params: { ...(sampling ?? {}), seed: x.job.seed },
    },
    metadata: {
      fine_tuning_job_id: x.job.id,
      step: String(x.step),
      ...(x.omitted ? { omitted_samples: String(x.omitted) } : {}),
    },
    error: null,
    result_counts: { total: items.length, errored: count("error"), failed: count("fail"), passed: count("pass") },
    per_testing_criteria_results: [
      {
        testing_criteria: name,
        passed: items.filter((i) => i.results[0]!.passed).length,
        failed: items.filter((i) => !i.results[0]!.passed).length,
      },
    ],
    per_model_usage: [
      {
        model_name: x.model,
        invocation_count: items.length,
        prompt_tokens: 0,
        completion_tokens: tokens,
        total_tokens: tokens,
        cached_tokens: 0,
      },
    ],
    report_url: "",
  };
  return { run, items };
}

/** The steps of a job's step files, in order. */
export function validationSteps(dir: string): number[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .map((n) => /^step-(\d+)\.jsonl$/.exec(n))
    .flatMap((m) => (m ? [Number(m[1])] : []))
    .sort((a, b) => a - b);
}

/**
 * Stores a run for every step file of the job not yet in its eval (a step is imported once; the trainer
 * writes each file atomically before the step's metrics event, so a file seen is complete). Returns the steps
 * imported.
 */
export function importValidations(
  store: EvalStore,
  o: {
    evalId: string;
    job: StepRunInput["job"];
    dir: string;
    modelOf: (step: number) => string;
  },
): number[] {
  const ev = store.linked(o.evalId);
  if (!ev) return []; // the eval was deleted
  const have = store.runSteps(o.evalId, o.job.id);
  const done: number[] = [];
  for (const step of validationSteps(o.dir)) {
    if (have.has(String(step))) continue;
    const { samples, omitted } = parseValidationFile(readFileSync(join(o.dir, validationFileName(step)), "utf8"));
    const { run, items } = stepRun({
      evalId: o.evalId,
      job: o.job,
      step,
      model: o.modelOf(step),
      criterion: ev.testing_criteria[0]!,
      samples,
      omitted,
      createdAt: now(),
      newId,
    });
    store.addRun(run, items);
    done.push(step);
  }
  return done;
}
