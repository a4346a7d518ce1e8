/**
 * Evals through the official openai client against `rft api`: create an eval with the project's graders as
 * testing criteria, run it over given samples and over a local model's samples, read the counts and the
 * per-datapoint output items; bad input gets OpenAI's error body.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { test } from "node:test";
import OpenAI, { toFile } from "openai";
import { tinyModel } from "../helpers/rft-job.js";
import { startApi, tempDir, until } from "./helpers.js";

const criteria = [
  {
    type: "string_check" as const,
    name: "exact",
    input: "{{ sample.output_text }}",
    reference: "{{ item.answer }}",
    operation: "eq" as const,
  },
  {
    type: "text_similarity" as const,
    name: "close",
    input: "{{ sample.output_text }}",
    reference: "{{ item.answer }}",
    evaluation_metric: "fuzzy_match" as const,
    pass_threshold: 0.5,
  },
];

test("an eval over given samples, then over a local model's samples", async () => {
  const dir = tempDir("evals");
  await tinyModel(join(dir, "base"));
  const api = await startApi({ models: { tiny: join(dir, "base") } });
  try {
    const c = api.client;
    const ev = await c.evals.create({
      name: "capitals",
      data_source_config: {
        type: "custom",
        item_schema: { type: "object", properties: { question: { type: "string" }, answer: { type: "string" } } },
        include_sample_schema: true,
      },
      testing_criteria: criteria,
    });
    assert.match(ev.id, /^eval_[A-Za-z0-9]{24}$/);
    assert.equal(ev.object, "eval");
    assert.equal(ev.name, "capitals");
    assert.deepEqual((ev.data_source_config as unknown as { schema: { required: string[] } }).schema.required, [
      "item",
      "sample",
    ]);
    assert.deepEqual(ev.testing_criteria, criteria);
    assert.deepEqual(await c.evals.retrieve(ev.id), ev);

    const run = await c.evals.runs.create(ev.id, {
      name: "given",
      data_source: {
        type: "jsonl",
        source: {
          type: "file_content",
          content: [
            { item: { question: "France?", answer: "Paris" }, sample: { output_text: "Paris" } },
            { item: { question: "Japan?", answer: "Tokyo" }, sample: { output_text: "Tokio" } },
            { item: { question: "Peru?", answer: "Lima" }, sample: { output_text: "Quito" } },
          ],
        },
      },
    });
    assert.match(run.id, /^evalrun_/);
    assert.equal(run.object, "eval.run");
    const done = await until(
      () => c.evals.runs.retrieve(run.id, { eval_id: ev.id }),
      (r) => r.status === "completed" || r.status === "failed",
      "the run",
    );
    assert.equal(done.status, "completed", JSON.stringify(done.error));
    assert.deepEqual(done.result_counts, { total: 3, passed: 1, failed: 2, errored: 0 });
    assert.deepEqual(done.per_testing_criteria_results, [
      { testing_criteria: "exact", passed: 1, failed: 2 },
      { testing_criteria: "close", passed: 2, failed: 1 },
    ]);
    const items = [];
    for await (const it of c.evals.runs.outputItems.list(run.id, { eval_id: ev.id })) items.push(it);
    assert.deepEqual(
      items.map((i) => [i.datasource_item_id, i.status]),
      [
        [0, "pass"],
        [1, "fail"],
        [2, "fail"],
      ],
    );
    const tokio = items[1]!;
    assert.equal(tokio.object, "eval.run.output_item");
    assert.deepEqual(tokio.datasource_item, { question: "Japan?", answer: "Tokyo" });
    assert.deepEqual(
      tokio.results.map((r) => [r.name, r.passed]),
      [
        ["exact", false],
        ["close", true],
      ],
    );
    assert.equal((await c.evals.runs.outputItems.retrieve(tokio.id, { eval_id: ev.id, run_id: run.id })).id, tokio.id);
    assert.deepEqual(
      (await c.evals.runs.outputItems.list(run.id, { eval_id: ev.id, status: "pass" })).data.map((i) => i.id),
      [items[0]!.id],
    );

    // A completions run: a local model answers each datapoint of an uploaded file, then the criteria grade it.
    const file = await c.files.create({
      file: await toFile(
        Buffer.from(
          `${JSON.stringify({ item: { question: "France?", answer: "Paris" } })}\n${JSON.stringify({ item: { question: "Peru?", answer: "Lima" } })}\n`,
        ),
        "questions.jsonl",
      ),
      purpose: "evals",
    });
    const sampled = await c.evals.runs.create(ev.id, {
      name: "tiny",
      data_source: {
        type: "completions",
        model: "tiny",
        source: { type: "file_id", id: file.id },
        input_messages: { type: "template", template: [{ role: "user", content: "Capital of {{ item.question }}" }] },
        sampling_params: { max_completion_tokens: 3, temperature: 0, seed: 1 },
      },
    });
    const sdone = await until(
      () => c.evals.runs.retrieve(sampled.id, { eval_id: ev.id }),
      (r) => r.status === "completed" || r.status === "failed",
      "the sampled run",
    );
    assert.equal(sdone.status, "completed", JSON.stringify(sdone.error));
    assert.equal(sdone.result_counts.total, 2);
    assert.equal(sdone.model, "tiny");
    assert.equal(sdone.per_model_usage[0]!.invocation_count, 2);
    const sitems = (await c.evals.runs.outputItems.list(sampled.id, { eval_id: ev.id })).data;
    assert.equal(sitems.length, 2);
    const s0 = sitems[0]!.sample;
    assert.deepEqual(s0.input, [{ role: "user", content: "Capital of France?" }]);
    assert.equal(typeof s0.output[0]!.content, "string");
    assert.equal(s0.model, "tiny");

    const runs = await c.evals.runs.list(ev.id);
    assert.deepEqual(
      runs.data.map((r) => r.id),
      [run.id, sampled.id],
    );
  } finally {
    await api.close();
  }
});

test("evals errors: a bad criterion names its param, unknown ids are 404", async () => {
  const api = await startApi();
  try {
    const c = api.client;
    await assert.rejects(
      c.evals.create({
        data_source_config: { type: "custom", item_schema: { type: "object" } },
        testing_criteria: [{ ...criteria[0], operation: "equals" } as any],
      }),
      (e: unknown) => {
        assert.ok(e instanceof OpenAI.BadRequestError);
        assert.equal(e.param, "testing_criteria[0].operation");
        return true;
      },
    );
    await assert.rejects(c.evals.retrieve("eval_nothing"), OpenAI.NotFoundError);
    const ev = await c.evals.create({
      data_source_config: { type: "custom", item_schema: { type: "object" } },
      testing_criteria: criteria,
    });
    await assert.rejects(
      c.evals.runs.create(ev.id, {
        data_source: { type: "jsonl", source: { type: "file_id", id: "file-missing0000000000000000" } },
      }),
      (e: unknown) => e instanceof OpenAI.NotFoundError && e.param === "data_source.source.id",
    );
    assert.deepEqual(await c.evals.delete(ev.id), { object: "eval.deleted", deleted: true, eval_id: ev.id });
  } finally {
    await api.close();
  }
});

test("model-graded criteria judge with a model this server serves", async () => {
  const dir = tempDir("evals-judge");
  await tinyModel(join(dir, "judge"));
  const api = await startApi({ models: { judge: join(dir, "judge") } });
  try {
    const c = api.client;
    const ev = await c.evals.create({
      data_source_config: { type: "custom", item_schema: { type: "object" } },
      testing_criteria: [
        {
          type: "label_model",
          name: "polite",
          model: "judge",
          input: [{ role: "user", content: "Is this polite? {{ sample.output_text }}" }],
          labels: ["yes", "no"],
          passing_labels: ["yes"],
        },
      ],
    });
    const run = await c.evals.runs.create(ev.id, {
      data_source: {
        type: "jsonl",
        source: { type: "file_content", content: [{ item: {}, sample: { output_text: "Thank you!" } }] },
      },
    });
    const done = await until(
      () => c.evals.runs.retrieve(run.id, { eval_id: ev.id }),
      (r) => r.status === "completed" || r.status === "failed",
      "the judged run",
    );
    assert.equal(done.status, "completed", JSON.stringify(done.error));
    const [item] = (await c.evals.runs.outputItems.list(run.id, { eval_id: ev.id })).data;
    const meta = item!.results[0]!.metadata as {
      sampled_model_name: string | null;
      errors: { model_grader_server_error_details?: string | null };
    };
    // A random tiny judge writes no valid label; what matters here is that it was asked, through this server:
    // it answered (sampled_model_name), or `rft serve` of that model refused the grader's json_schema
    // response_format (before `rft serve` had structured outputs).
    const details = meta.errors.model_grader_server_error_details ?? "";
    assert.ok(
      meta.sampled_model_name === "judge" || /response_format.*is supported by this model/.test(details),
      JSON.stringify(meta),
    );
  } finally {
    await api.close();
  }
});

test("a responses run and an item_reference run sample a local model through this server's chat completions", async () => {
  const dir = tempDir("evals-responses");
  await tinyModel(join(dir, "base"));
  const api = await startApi({ models: { tiny: join(dir, "base") } });
  try {
    const c = api.client;
    const ev = await c.evals.create({
      data_source_config: { type: "custom", item_schema: { type: "object" } },
      testing_criteria: criteria,
    });
    const content = [
      {
        item: {
          question: "France?",
          answer: "Paris",
          trajectory: [
            { role: "system", content: "Answer with one word." },
            { role: "user", content: "Capital of France?" },
          ],
        },
      },
    ];
    // OpenAI's Responses shape: typed template messages with input_text parts, `text.format`, flat function tools.
    const responses = await c.evals.runs.create(ev.id, {
      data_source: {
        type: "responses",
        model: "tiny",
        source: { type: "file_content", content },
        input_messages: {
          type: "template",
          template: [
            { type: "message", role: "developer", content: { type: "input_text", text: "Be brief." } },
            { role: "user", content: "Capital of {{ item.question }}" },
          ],
        },
        sampling_params: { max_completion_tokens: 3, temperature: 0, seed: 1, text: { format: { type: "text" } } },
      },
    });
    const byRef = await c.evals.runs.create(ev.id, {
      data_source: {
        type: "completions",
        model: "tiny",
        source: { type: "file_content", content },
        input_messages: { type: "item_reference", item_reference: "item.trajectory" },
        sampling_params: { max_completion_tokens: 3, temperature: 0 },
      },
    });
    for (const [run, input] of [
      [
        responses,
        [
          { role: "developer", content: "Be brief." },
          { role: "user", content: "Capital of France?" },
        ],
      ],
      [byRef, content[0]!.item.trajectory],
    ] as const) {
      const done = await until(
        () => c.evals.runs.retrieve(run.id, { eval_id: ev.id }),
        (r) => r.status === "completed" || r.status === "failed",
        "the run",
      );
      assert.equal(done.status, "completed", JSON.stringify(done.error));
      assert.equal(done.per_model_usage[0]!.invocation_count, 1);
      const [item] = (await c.evals.runs.outputItems.list(run.id, { eval_id: ev.id })).data;
      assert.notEqual(item!.status, "error", JSON.stringify(item!.sample.error));
      assert.deepEqual(item!.sample.input, input);
      assert.equal(item!.sample.model, "tiny");
      assert.equal(item!.results.length, 2);
    }
  } finally {
    await api.close();
  }
});

test("data sources this server cannot run get a 400 naming the param", async () => {
  const dir = tempDir("evals-bad-sources");
  await tinyModel(join(dir, "base"));
  const api = await startApi({ models: { tiny: join(dir, "base") } });
  try {
    const c = api.client;
    const rejects = async (p: Promise<unknown>, param: string, message?: RegExp) =>
      assert.rejects(p, (e: unknown) => {
        assert.ok(e instanceof OpenAI.BadRequestError, String(e));
        assert.equal(e.param, param);
        if (message) assert.match(e.message, message);
        return true;
      });
    // Stored completions and logs are OpenAI's platform's; none are stored here.
    await rejects(
      c.evals.create({ data_source_config: { type: "stored_completions", metadata: {} }, testing_criteria: criteria }),
      "data_source_config.type",
      /stores no completions/,
    );
    await rejects(
      c.evals.create({ data_source_config: { type: "logs" }, testing_criteria: criteria }),
      "data_source_config.type",
    );
    const ev = await c.evals.create({
      data_source_config: { type: "custom", item_schema: { type: "object" } },
      testing_criteria: criteria,
    });
    const source = { type: "file_content" as const, content: [{ item: { question: "France?" } }] };
    const sampled = (extra: Record<string, unknown>) =>
      c.evals.runs.create(ev.id, {
        data_source: {
          type: "completions",
          model: "tiny",
          source,
          input_messages: { type: "template", template: [{ role: "user", content: "{{ item.question }}" }] },
          ...extra,
        } as any,
      });
    await rejects(sampled({ source: { type: "stored_completions", limit: 10 } }), "data_source.source.type");
    await rejects(
      sampled({
        input_messages: {
          type: "template",
          template: [{ role: "user", content: { type: "input_image", image_url: "https://example.com/a.png" } }],
        },
      }),
      "data_source.input_messages.template[0].content",
    );
    await rejects(
      sampled({
        input_messages: { type: "template", template: [{ role: "user", content: "{{ sample.output_text }}" }] },
      }),
      "data_source.input_messages.template[0].content",
    );
    await rejects(
      sampled({ input_messages: { type: "template", template: [{ role: "tool", content: "x" }] } }),
      "data_source.input_messages.template[0].role",
    );
    await rejects(
      sampled({ input_messages: { type: "item_reference", item_reference: "messages" } }),
      "data_source.input_messages.item_reference",
    );
    await rejects(sampled({ sampling_params: { temperature: 3 } }), "data_source.sampling_params.temperature");
    await rejects(
      sampled({ sampling_params: { text: { format: { type: "text" } } } }),
      "data_source.sampling_params.text",
    );
    await rejects(
      sampled({ sampling_params: { tools: [{ type: "function", function: { name: "f" } }, { type: "web_search" }] } }),
      "data_source.sampling_params.tools[1].type",
    );
    await rejects(sampled({ model: undefined }), "data_source.model");
    await rejects(
      c.evals.runs.create(ev.id, {
        data_source: { type: "responses", model: "tiny", source: { type: "responses" } } as any,
      }),
      "data_source.source.type",
    );
    await rejects(c.evals.runs.create(ev.id, { data_source: { type: "batch", source } as any }), "data_source.type");
  } finally {
    await api.close();
  }
});
