/**
 * OpenAI's Evals API (the hosted product closed on 2026-11-30), on this project's graders:
 *   POST/GET /v1/evals, GET/POST/DELETE /v1/evals/{id}
 *   POST/GET /v1/evals/{id}/runs, GET/POST(cancel)/DELETE /v1/evals/{id}/runs/{run}
 *   GET /v1/evals/{id}/runs/{run}/output_items[/{item}]
 * An eval has a `custom` data source config and `testing_criteria` (graders, with `pass_threshold`). A run
 * grades a JSONL data source (file id or inline content) with given samples, or a `completions` / `responses`
 * data source whose samples a local model (base, fine-tuned or checkpoint) writes through `rft serve`
 * (eval-sources.ts checks and maps them). Runs execute in the background, one datapoint at a time; an RFT
 * job's validation steps arrive as finished runs (`addRun`, job-evals.ts). `<data>/evals/` keeps evals, runs
 * and output items across restarts.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, appendFileSync } from "node:fs";
import type { IncomingMessage, ServerResponse } from "node:http";
import { join } from "node:path";
import type { Logger } from "../proto/log.js";
import type { RunGraderResponse } from "../proto/graders.js";
import { errorFlagsSet, GraderEngine, GraderValidationError, type SampleInput } from "../grader-sidecar/src/engine.js";
import type { Compiled } from "../grader-sidecar/src/validate.js";
import type { ModelEndpoint } from "../grader-sidecar/src/model-client.js";
import { replaceFileAtomic } from "../trainer/checkpoint/store.js";
import { ApiError, notFound } from "./errors.js";
import { chatRequest, checkRunDataSource, evalDataSourceConfig, inputMessages, sampledOutput } from "./eval-sources.js";
import type { FileStore } from "./files.js";
import { ALL_PROJECTS, DEFAULT_PROJECT, readJson, send, visible } from "./http.js";
import { isIdOf, newId, now } from "./ids.js";
import type { ModelHost } from "./model-host.js";
import { paginate, parseLimit } from "./pagination.js";

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => v !== null && typeof v === "object" && !Array.isArray(v);

export interface EvalObject {
  object: "eval";
  id: string;
  name: string;
  created_at: number;
  metadata: Record<string, string> | null;
  data_source_config: Obj;
  testing_criteria: Obj[];
}

export interface EvalRun {
  object: "eval.run";
  id: string;
  eval_id: string;
  name: string;
  created_at: number;
  status: "queued" | "in_progress" | "completed" | "failed" | "canceled";
  model: string | null;
  data_source: Obj;
  metadata: Record<string, string> | null;
  error: { code: string; message: string } | null;
  result_counts: { total: number; errored: number; failed: number; passed: number };
  per_testing_criteria_results: { testing_criteria: string; passed: number; failed: number }[];
  per_model_usage: {
    model_name: string;
    invocation_count: number;
    prompt_tokens: number;
    completion_tokens: number;
    total_tokens: number;
    cached_tokens: number;
  }[];
  report_url: string;
}

export interface OutputItem {
  object: "eval.run.output_item";
  id: string;
  run_id: string;
  eval_id: string;
  created_at: number;
  status: "pass" | "fail" | "error";
  datasource_item_id: number;
  datasource_item: Obj;
  results: { name: string; type: string; score: number; passed: boolean; sample: null; metadata?: unknown }[];
  sample: Obj;
}

/** A criterion passes at `pass_threshold` (default 1 for string_check and label_model, 0.5 otherwise). */
export function passed(criterion: Obj, score: number): boolean {
  const t =
    typeof criterion.pass_threshold === "number"
      ? criterion.pass_threshold
      : criterion.type === "string_check" || criterion.type === "label_model"
        ? 1
        : 0.5;
  return score >= t;
}

/** The eval's datapoints from a JSONL data source: `{item, sample?}` rows (a row without `item` is the item). */
function rowsOf(source: Obj, files: FileStore, project = ALL_PROJECTS): { item: Obj; sample?: Obj }[] {
  const toRow = (v: unknown, where: string) => {
    if (!isObj(v)) throw new ApiError(400, `${where}: must be a JSON object`, "data_source.source", "invalid_value");
    if (isObj(v.item)) return { item: v.item, ...(isObj(v.sample) ? { sample: v.sample } : {}) };
    return { item: v };
  };
  if (source.type === "file_content") {
    if (!Array.isArray(source.content))
      throw new ApiError(
        400,
        "'content' must be an array of {item, sample}",
        "data_source.source.content",
        "invalid_value",
      );
    return source.content.map((c, i) => toRow(c, `data_source.source.content[${i}]`));
  }
  if (source.type === "file_id") {
    const id = String(source.id);
    const f = files.get(id, "data_source.source.id", project);
    return readFileSync(files.path(f.id), "utf8")
      .split("\n")
      .flatMap((l, i) => (l.trim() ? [toRow(JSON.parse(l), `${f.filename}: line ${i + 1}`)] : []));
  }
  throw new ApiError(
    400,
    "data_source.source.type must be 'file_content' or 'file_id'",
    "data_source.source.type",
    "invalid_value",
  );
}

/** The text a given sample carries: `output_text`, or the first output message's content. */
function sampleText(s: Obj | undefined): string {
  if (!s) return "";
  if (typeof s.output_text === "string") return s.output_text;
  const out = Array.isArray(s.output) ? (s.output[0] as Obj | undefined) : undefined;
  return typeof out?.content === "string" ? out.content : "";
}

export interface EvalStoreOptions {
  /** Whether a project may sample a model (base models: all; fine-tuned ones: their project's). */
  modelVisible(model: string, project: string): boolean;
  /** Samples a run's datapoint (default `host.chat`): cluster mode sends a job's model to its own server. */
  chat?(body: Obj, project: string | undefined): Promise<Obj>;
  /** Where score_model / label_model criteria send their chat completions (this server's own /v1). */
  modelEndpoint?: ModelEndpoint;
  dir: string;
  files: FileStore;
  host: ModelHost;
  log: Logger;
}

export class EvalStore {
  private readonly evals = new Map<string, { seq: number; eval: EvalObject; project?: string }>();
  private readonly runs = new Map<string, { seq: number; run: EvalRun }>();
  private readonly engine: GraderEngine;
  private seq = 0;
  private readonly cancelled = new Set<string>();

  constructor(readonly o: EvalStoreOptions) {
    this.engine = new GraderEngine(o.modelEndpoint ? { model: o.modelEndpoint } : {});
    mkdirSync(o.dir, { recursive: true });
    for (const name of readdirSync(o.dir)) {
      if (!name.endsWith(".json")) continue;
      const s = JSON.parse(readFileSync(join(o.dir, name), "utf8")) as {
        seq: number;
        eval?: EvalObject;
        run?: EvalRun;
        project?: string;
      };
      this.seq = Math.max(this.seq, s.seq);
      if (s.eval) this.evals.set(s.eval.id, { seq: s.seq, eval: s.eval, project: s.project });
      if (s.run) this.runs.set(s.run.id, { seq: s.seq, run: s.run });
    }
    // Runs a stopped server left unfinished start over.
    for (const r of this.runs.values())
      if (r.run.status === "queued" || r.run.status === "in_progress") setImmediate(() => void this.execute(r.run.id));
  }

  private saveEval(s: { seq: number; eval: EvalObject; project?: string }) {
    replaceFileAtomic(join(this.o.dir, `${s.eval.id}.json`), JSON.stringify(s));
  }

  private saveRun(s: { seq: number; run: EvalRun }) {
    replaceFileAtomic(join(this.o.dir, `${s.run.id}.json`), JSON.stringify(s));
  }

  private itemsFile(runId: string) {
    return join(this.o.dir, `${runId}.items.jsonl`);
  }

  private getEval(id: string, project: string) {
    const s = isIdOf("eval_", id) ? this.evals.get(id) : undefined;
    if (!s || !visible(s.project, project)) throw notFound("eval", id, "eval_id");
    return s;
  }

  private getRun(evalId: string, runId: string, project: string) {
    this.getEval(evalId, project);
    const s = isIdOf("evalrun_", runId) ? this.runs.get(runId) : undefined;
    if (!s || s.run.eval_id !== evalId) throw notFound("eval run", runId, "run_id");
    return s;
  }

  /** A criterion compiled by the grader engine (its `pass_threshold` is the eval's, not the grader's). */
  private async compile(c: unknown, i: number): Promise<Compiled> {
    if (!isObj(c))
      throw new ApiError(
        400,
        "each testing criterion must be a grader object",
        `testing_criteria[${i}]`,
        "invalid_value",
      );
    const { pass_threshold: _t, ...grader } = c;
    try {
      return await this.engine.compile(grader, {
        topLevel: ["string_check", "text_similarity", "python", "score_model", "label_model", "multi"],
      });
    } catch (e) {
      if (!(e instanceof GraderValidationError)) throw e;
      throw new ApiError(
        400,
        e.message,
        e.param.replace(/^grader/, `testing_criteria[${i}]`),
        e.code ?? "invalid_value",
      );
    }
  }

  /**
   * `compileCriteria: false` is the fine-tuning job's own eval: its grader passed the job's checks, and the
   * job's acceptance must not depend on deeper ones (a python grader that fails on import fails the job later).
   */
  async create(body: Obj, project = DEFAULT_PROJECT, compileCriteria = true): Promise<EvalObject> {
    const config = evalDataSourceConfig(body.data_source_config);
    if (!Array.isArray(body.testing_criteria) || body.testing_criteria.length === 0)
      throw new ApiError(
        400,
        "testing_criteria must be a non-empty array of graders",
        "testing_criteria",
        "invalid_value",
      );
    if (compileCriteria) for (const [i, c] of body.testing_criteria.entries()) await this.compile(c, i);
    const ev: EvalObject = {
      object: "eval",
      id: newId("eval_"),
      name: typeof body.name === "string" ? body.name : "",
      created_at: now(),
      metadata: (body.metadata as Record<string, string> | undefined) ?? null,
      data_source_config: config,
      testing_criteria: body.testing_criteria as Obj[],
    };
    const s = { seq: ++this.seq, eval: ev, project };
    this.evals.set(ev.id, s);
    this.saveEval(s);
    return ev;
  }

  /** An eval by id whatever its project (the server's own link from a fine-tuning job), if it still exists. */
  linked(id: string): EvalObject | undefined {
    return this.evals.get(id)?.eval;
  }

  /** The `metadata.step` of the eval's runs of a fine-tuning job (its validation steps already imported). */
  runSteps(evalId: string, jobId: string): Set<string> {
    return new Set(
      [...this.runs.values()].flatMap((r) => {
        const m = r.run.metadata;
        return r.run.eval_id === evalId && m?.fine_tuning_job_id === jobId && m.step !== undefined ? [m.step] : [];
      }),
    );
  }

  /** Stores a finished run with its output items (the items first: a listed run always has its items). */
  addRun(run: EvalRun, items: OutputItem[]): void {
    replaceFileAtomic(this.itemsFile(run.id), items.map((i) => `${JSON.stringify(i)}\n`).join(""));
    const s = { seq: ++this.seq, run };
    this.runs.set(run.id, s);
    this.saveRun(s);
  }

  createRun(evalId: string, body: Obj, project = ALL_PROJECTS): EvalRun {
    const ev = this.getEval(evalId, project).eval;
    const { model } = checkRunDataSource(body.data_source);
    const ds = body.data_source as Obj;
    rowsOf(ds.source as Obj, this.o.files, project); // a bad source is a 400 now, not a failed run later
    if (model !== null && !this.o.modelVisible(model, project))
      throw new ApiError(404, `The model '${model}' does not exist`, "data_source.model", "model_not_found");
    const run: EvalRun = {
      object: "eval.run",
      id: newId("evalrun_"),
      eval_id: ev.id,
      name: typeof body.name === "string" ? body.name : "",
      created_at: now(),
      status: "queued",
      model,
      data_source: ds,
      metadata: (body.metadata as Record<string, string> | undefined) ?? null,
      error: null,
      result_counts: { total: 0, errored: 0, failed: 0, passed: 0 },
      per_testing_criteria_results: ev.testing_criteria.map((c, i) => ({
        testing_criteria: String(c.name ?? `criterion-${i}`),
        passed: 0,
        failed: 0,
      })),
      per_model_usage: [],
      report_url: "",
    };
    const s = { seq: ++this.seq, run };
    this.runs.set(run.id, s);
    this.saveRun(s);
    setImmediate(() => void this.execute(run.id));
    return run;
  }

  /** Grades every datapoint of a run (sampling it first for a completions or responses source). */
  private async execute(runId: string): Promise<void> {
    const s = this.runs.get(runId)!;
    const run = s.run;
    const ev = this.evals.get(run.eval_id)?.eval;
    if (!ev) return;
    rmSync(this.itemsFile(runId), { force: true });
    run.status = "in_progress";
    run.result_counts = { total: 0, errored: 0, failed: 0, passed: 0 };
    for (const r of run.per_testing_criteria_results) [r.passed, r.failed] = [0, 0];
    this.saveRun(s);
    try {
      const compiled = await Promise.all(ev.testing_criteria.map((c, i) => this.compile(c, i)));
      const rows = rowsOf(run.data_source.source as Obj, this.o.files);
      const usage = {
        model_name: run.model ?? "",
        invocation_count: 0,
        prompt_tokens: 0,
        completion_tokens: 0,
        total_tokens: 0,
        cached_tokens: 0,
      };
      for (const [index, row] of rows.entries()) {
        if (this.cancelled.has(runId)) {
          run.status = "canceled";
          this.saveRun(s);
          return;
        }
        const project = this.evals.get(run.eval_id)?.project;
        const item = await this.datapoint(run, ev, compiled, row, index, usage, project);
        appendFileSync(this.itemsFile(runId), `${JSON.stringify(item)}\n`);
        if (usage.invocation_count) run.per_model_usage = [usage];
        this.saveRun(s);
      }
      run.status = "completed";
    } catch (e) {
      run.status = "failed";
      run.error = {
        code: e instanceof ApiError ? (e.code ?? "run_failed") : "run_failed",
        message: (e as Error).message,
      };
      this.o.log.warn({ run: runId, err: (e as Error).message }, "eval run failed");
    }
    this.saveRun(s);
  }

  /** A datapoint's sample: given (jsonl), or sampled through this server's chat completions. */
  private async sample(
    ds: Obj,
    row: { item: Obj; sample?: Obj },
    usage: EvalRun["per_model_usage"][number],
    project: string | undefined,
  ): Promise<{ graded: SampleInput; sample: Obj; error: { code: string; message: string } | null }> {
    if (ds.type === "jsonl") {
      const text = sampleText(row.sample);
      return {
        graded: { output_text: text },
        sample: { ...(row.sample ?? {}), output: [{ role: "assistant", content: text }] },
        error: null,
      };
    }
    try {
      const request = chatRequest(ds, inputMessages(ds.input_messages as Obj, row.item));
      const answer = await (this.o.chat ? this.o.chat(request, project) : this.o.host.chat(request));
      const u = answer.usage as { prompt_tokens: number; completion_tokens: number; total_tokens: number };
      usage.invocation_count++;
      usage.prompt_tokens += u.prompt_tokens;
      usage.completion_tokens += u.completion_tokens;
      usage.total_tokens += u.total_tokens;
      return { ...sampledOutput(ds, request, answer), error: null };
    } catch (e) {
      const error = { code: (e as ApiError).code ?? "sampling_error", message: (e as Error).message };
      return { graded: { output_text: "" }, sample: { error, output: [] }, error };
    }
  }

  /** One datapoint sampled (if the source says so) and graded by every criterion: its output item. */
  private async datapoint(
    run: EvalRun,
    ev: EvalObject,
    compiled: Compiled[],
    row: { item: Obj; sample?: Obj },
    index: number,
    usage: EvalRun["per_model_usage"][number],
    project: string | undefined,
  ): Promise<OutputItem> {
    const got = await this.sample(run.data_source, row, usage, project);
    const results: OutputItem["results"] = [];
    let errored = got.error !== null;
    if (!errored) {
      for (const [i, g] of compiled.entries()) {
        const res: RunGraderResponse = await this.engine.grade(g, row.item, got.graded);
        if (errorFlagsSet(res).length > 0) errored = true;
        const c = ev.testing_criteria[i]!;
        const ok = passed(c, res.reward);
        results.push({
          name: String(c.name ?? `criterion-${i}`),
          type: String(c.type),
          score: res.reward,
          passed: ok,
          sample: null,
          metadata: res.metadata,
        });
        const pt = run.per_testing_criteria_results[i]!;
        if (ok) pt.passed++;
        else pt.failed++;
      }
    }
    const status = errored ? "error" : results.every((r) => r.passed) ? "pass" : "fail";
    run.result_counts.total++;
    if (status === "error") run.result_counts.errored++;
    else if (status === "pass") run.result_counts.passed++;
    else run.result_counts.failed++;
    return {
      object: "eval.run.output_item",
      id: newId("outputitem_"),
      run_id: run.id,
      eval_id: ev.id,
      created_at: now(),
      status,
      datasource_item_id: index,
      datasource_item: row.item,
      results,
      sample: got.sample,
    };
  }

  private items(runId: string): OutputItem[] {
    const f = this.itemsFile(runId);
    if (!existsSync(f)) return [];
    return readFileSync(f, "utf8")
      .split("\n")
      .filter((l) => l.trim())
      .map((l) => JSON.parse(l) as OutputItem);
  }

  /** Routes `/v1/evals/...` (seg: the path after "evals"). */
  async route(
    method: string,
    seg: string[],
    q: URLSearchParams,
    req: IncomingMessage,
    res: ServerResponse,
    maxJson: number,
    project = ALL_PROJECTS,
  ): Promise<void> {
    const order = (q.get("order") ?? "asc") as "asc" | "desc";
    if (order !== "asc" && order !== "desc")
      throw new ApiError(400, "Invalid 'order': expected 'asc' or 'desc'.", "order", "invalid_value");
    const page = <T extends { id: string }>(xs: T[]) =>
      paginate(order === "desc" ? xs.reverse() : xs, q.get("after"), parseLimit(q.get("limit"), 20));
    const [evalId, runs, runId, items, itemId] = seg;
    if (seg.length === 0) {
      if (method === "POST") return send(res, 200, await this.create(await readJson(req, maxJson), project));
      if (method === "GET")
        return send(
          res,
          200,
          page(
            [...this.evals.values()]
              .filter((s) => visible(s.project, project))
              .sort((a, b) => a.seq - b.seq)
              .map((s) => s.eval),
          ),
        );
    } else if (seg.length === 1) {
      const s = this.getEval(evalId!, project);
      if (method === "GET") return send(res, 200, s.eval);
      if (method === "POST") {
        const body = await readJson(req, maxJson);
        if (typeof body.name === "string") s.eval.name = body.name;
        if (isObj(body.metadata)) s.eval.metadata = body.metadata as Record<string, string>;
        this.saveEval(s);
        return send(res, 200, s.eval);
      }
      if (method === "DELETE") {
        this.evals.delete(s.eval.id);
        rmSync(join(this.o.dir, `${s.eval.id}.json`), { force: true });
        return send(res, 200, { object: "eval.deleted", deleted: true, eval_id: s.eval.id });
      }
    } else if (runs === "runs") {
      if (seg.length === 2) {
        if (method === "POST") return send(res, 200, this.createRun(evalId!, await readJson(req, maxJson), project));
        if (method === "GET") {
          this.getEval(evalId!, project);
          const status = q.get("status");
          return send(
            res,
            200,
            page(
              [...this.runs.values()]
                .filter((r) => r.run.eval_id === evalId && (!status || r.run.status === status))
                .sort((a, b) => a.seq - b.seq)
                .map((r) => r.run),
            ),
          );
        }
      } else if (seg.length === 3) {
        const s = this.getRun(evalId!, runId!, project);
        if (method === "GET") return send(res, 200, s.run);
        if (method === "POST") {
          if (s.run.status === "queued" || s.run.status === "in_progress") this.cancelled.add(s.run.id);
          else
            throw new ApiError(
              400,
              `Run ${s.run.id} is ${s.run.status}; only a queued or running run can be canceled.`,
              null,
              "invalid_run_status",
            );
          return send(res, 200, { ...s.run, status: "canceled" });
        }
        if (method === "DELETE") {
          this.cancelled.add(s.run.id);
          this.runs.delete(s.run.id);
          rmSync(join(this.o.dir, `${s.run.id}.json`), { force: true });
          rmSync(this.itemsFile(s.run.id), { force: true });
          return send(res, 200, { object: "eval.run.deleted", deleted: true, run_id: s.run.id });
        }
      } else if (items === "output_items") {
        this.getRun(evalId!, runId!, project);
        const all = this.items(runId!);
        if (seg.length === 4 && method === "GET") {
          const status = q.get("status");
          return send(res, 200, page(all.filter((x) => !status || x.status === status)));
        }
        if (seg.length === 5 && method === "GET") {
          const it = all.find((x) => x.id === itemId);
          if (!it) throw notFound("output item", itemId!, "output_item_id");
          return send(res, 200, it);
        }
      }
    }
    throw new ApiError(404, `Unknown request URL: ${method} /v1/evals/${seg.join("/")}.`, null, "unknown_url");
  }

  async close(): Promise<void> {
    await this.engine.close();
  }
}
