/**
 * Structured outputs and tools through RFT training, on tiny random models (fast, and without a grammar they
 * write no JSON at all):
 * - examples/security-qa (the RFT guide's security example: multi of string_check + score_model over
 *   `output_json`, response_format json_schema) trains a step with the judge served by `rft serve` (itself
 *   answering the score_model's structured-output request under constrained decoding); every sampled
 *   completion validates with ajv against the job's schema and the score_model part contributes rewards.
 *   The schema is the example's with its strings bounded (enum, maxLength), so a random policy's strings end
 *   within the token limit (examples/security-qa/run.sh trains SmolLM2 under the example's own schema).
 * - a row's `tools` reach the prompt, and tool calls in completions reach graders as `sample.output_tools`.
 */
import assert from "node:assert/strict";
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { Ajv } from "ajv";
import type { RunGraderResponse } from "../../proto/graders.js";
import { readRftDataset } from "../../trainer/data/dataset.js";

import { loadManifest, ManifestError, parseManifest } from "../../trainer/job/manifest.js";
import { useBackend } from "../../trainer/model/backend.js";
import { saveHfModel } from "../../trainer/model/hf-io.js";
import { createRandomModel, disposeModel, type Model } from "../../trainer/model/model.js";
import { type GradeInput, inProcessGrader, type StepGrader } from "../../trainer/rl/grading.js";
import { RftTrainer } from "../../trainer/rl/loop.js";
import { gradedSample, promptIds } from "../../trainer/rl/rollouts.js";
import type { Completion } from "../../trainer/sampling/generate.js";
import { parseResponseFormat } from "../../trainer/sampling/response-format.js";
import { type RunningServer, startServer } from "../../trainer/serve/server.js";
import { TEST_BACKEND } from "../helpers/backend.js";

const EXAMPLE = join("examples", "security-qa");
const ajv = new Ajv({ strict: false });

let dir: string;
let judge: Model;
let srv: RunningServer;

before(async () => {
  await useBackend(TEST_BACKEND);
  dir = mkdtempSync(join(tmpdir(), "rft-structured-"));
  // The example's prompts are ~400 bytes: a byte-level model needs more context than the usual tiny one.
  const policy = createRandomModel({
    arch: "llama",
    layers: 1,
    hidden: 32,
    heads: 2,
    kvHeads: 1,
    vocab: "byte",
    maxContext: 1024,
    seed: 3,
  });
  await saveHfModel(policy, join(dir, "base"));
  disposeModel(policy);
  judge = createRandomModel({
    arch: "qwen2",
    layers: 1,
    hidden: 32,
    heads: 2,
    kvHeads: 1,
    vocab: "byte",
    maxContext: 1024,
    seed: 4,
    std: 0.2,
  });
  srv = await startServer(judge, { modelId: "judge", port: 0, maxTokens: 400 });
});

after(async () => {
  await srv.close();
  disposeModel(judge);
  rmSync(dir, { recursive: true, force: true });
});

/** A grader that records what it was asked and answered (the real engine underneath). */
function recording(g: StepGrader) {
  const seen: { input: GradeInput; response: RunGraderResponse }[] = [];
  const grader: StepGrader = {
    async grade(inputs) {
      const out = await g.grade(inputs);
      inputs.forEach((input, i) => seen.push({ input, response: out[i]! }));
      return out;
    },
    close: () => g.close(),
  };
  return { grader, seen };
}

test(
  "examples/security-qa: a trained step with every sample schema-valid and the judge (rft serve) scoring",
  { timeout: 600_000 },
  async () => {
    for (const f of ["rft.yaml", "train.jsonl", "valid.jsonl"]) copyFileSync(join(EXAMPLE, f), join(dir, f));
    const manifest = loadManifest(join(dir, "rft.yaml"));
    const rft = manifest.job.spec.method.reinforcement!;
    const schema = structuredClone(
      (rft.responseFormat as unknown as { json_schema: { schema: Record<string, any> } }).json_schema.schema,
    );
    schema.properties.compliant = { type: "string", enum: ["yes", "no"] };
    schema.properties.explanation = { type: "string", maxLength: 10 };
    const format = parseResponseFormat({
      type: "json_schema",
      json_schema: { name: "security_assessment", strict: true, schema },
    })!;
    const validate = ajv.compile(schema);

    // A seeded judge: the same answers on every run.
    const graderJson = structuredClone(rft.grader) as { graders: Record<string, Record<string, unknown>> };
    graderJson.graders["explanation"]!["sampling_params"] = { seed: 1 };
    const engine = await inProcessGrader(graderJson, {
      model: { baseUrl: srv.url, apiKey: "unused", timeoutMs: 120_000, maxRetries: 0 },
    });
    const { grader, seen } = recording(engine);
    const trainer = new RftTrainer({
      job: {
        modelDir: manifest.paths.model,
        train: readRftDataset(manifest.paths.trainingFile),
        valid: readRftDataset(manifest.paths.validationFile!),
        hyperparameters: rft.hyperparameters,
        seed: 5,
        jsonRequired: true,
        responseFormat: format,
        ledger: { spec: manifest.job.spec, job: "local/security-qa", baseDir: dir },
      },
      grader,
      outDir: join(dir, "out"),
      stopAfterStep: 1,
    });
    const res = await trainer.run();
    await grader.close();
    assert.equal(res.status, "paused");
    assert.equal(res.step, 1);
    // Baseline validation (8 rows × 1) and one step (4 prompts × 4 samples).
    assert.equal(seen.length, 8 + 16);
    for (const { input, response } of seen) {
      const value = JSON.parse(input.sample.output_text) as unknown;
      assert.ok(validate(value), `${input.sample.output_text}: ${ajv.errorsText(validate.errors)}`);
      assert.equal(response.metadata.errors.sample_parse_error, false);
      assert.ok(response.sub_rewards["compliant"] === 0 || response.sub_rewards["compliant"] === 1);
    }
    // The judge answered under its own structured output (score_model's {steps, result} schema). A random
    // judge's strings are long, so some answers hit its token limit (a parse error for that sample, as with
    // OpenAI); every other one is a score, and scores reach the reward.
    const judged = seen.filter((s) => !s.response.metadata.errors.model_grader_parse_error);
    for (const s of seen) assert.equal(s.response.metadata.errors.model_grader_server_error, false);
    assert.ok(judged.length > 0, "some samples were judged");
    for (const s of judged) {
      const e = s.response.sub_rewards["explanation"]!;
      assert.ok(e >= 0 && e <= 1, `explanation score ${e}`);
      assert.ok(s.response.model_grader_token_usage_per_model["judge"], "the judge's token usage is counted");
    }
    assert.ok(
      judged.some((s) => s.response.sub_rewards["explanation"]! > 0),
      "the score_model part contributes to some reward",
    );
    // The reward combines both parts: 0.6 · compliant + 0.4 · explanation.
    for (const s of judged) {
      const r = s.response.sub_rewards;
      assert.ok(Math.abs(s.response.reward - (0.6 * r["compliant"]! + 0.4 * r["explanation"]!)) < 1e-9);
    }
  },
);

test("a row's tools reach the prompt; tool calls in a completion reach graders as output_tools", async () => {
  const tools = [{ type: "function", function: { name: "lookup_policy", parameters: { type: "object" } } }];
  const rowsFile = join(dir, "tools.jsonl");
  writeFileSync(
    rowsFile,
    `${JSON.stringify({ messages: [{ role: "user", content: "Check MFA." }], tools, want: "lookup_policy" })}\n`,
  );
  const [row] = readRftDataset(rowsFile);
  const model = createRandomModel({
    arch: "llama",
    layers: 1,
    hidden: 16,
    heads: 2,
    kvHeads: 1,
    vocab: "byte",
    maxContext: 2048,
  });
  const prompt = model.tokenizer!.decode(promptIds(model, row!), false);
  assert.match(prompt, /<tools>\n\{"type":"function","function":\{"name":"lookup_policy"/);
  const without = model.tokenizer!.decode(promptIds(model, { messages: row!.messages }), false);
  assert.doesNotMatch(without, /<tools>/);
  disposeModel(model);

  const completion = (text: string): Completion => ({ tokens: [1], text, logprobs: [0], finishReason: "stop" });
  const call = gradedSample(
    completion('Let me check.\n<tool_call>\n{"name": "lookup_policy", "arguments": {"topic": "mfa"}}\n</tool_call>'),
    row!,
    false,
  );
  assert.deepEqual(call.output_tools, [
    { id: "call_0", type: "function", function: { name: "lookup_policy", arguments: '{"topic":"mfa"}' } },
  ]);
  assert.equal(call.output_text, "Let me check.");
  assert.equal((call.choices![0] as { finish_reason: string }).finish_reason, "tool_calls");
  // A grader reads them with OpenAI's template syntax.
  const g = await inProcessGrader({
    type: "string_check",
    name: "tool",
    input: "{{ sample.output_tools[0].function.name }}",
    reference: "{{ item.want }}",
    operation: "eq",
  });
  const [graded] = await g.grade([{ item: row!.item, sample: call }]);
  assert.equal(graded!.reward, 1);
  // Text that names an undeclared function is no tool call.
  const other = gradedSample(completion('<tool_call>{"name": "rm_rf", "arguments": {}}</tool_call>'), row!, false);
  assert.deepEqual(other.output_tools, []);
  const [none] = await g.grade([{ item: row!.item, sample: other }]);
  assert.equal(none!.reward, 0);
  await g.close();
});

test("a responseFormat outside the supported subset is refused before training, naming the line and path", () => {
  const text = readFileSync(join(EXAMPLE, "rft.yaml"), "utf8").replace(
    "explanation: { type: string }",
    "explanation: { type: string, not: { const: x } }",
  );
  assert.ok(text.includes("not: { const: x }"));
  const line = text.split("\n").findIndex((l) => l.includes("not: { const: x }")) + 1;
  assert.throws(
    () => parseManifest(text, "rft.yaml"),
    (e: unknown) =>
      e instanceof ManifestError &&
      e.message.includes(
        `rft.yaml:${line}: spec.method.reinforcement.responseFormat.json_schema.schema.properties.explanation.not: unsupported schema keyword "not"`,
      ),
  );
  const loose = readFileSync(join(EXAMPLE, "rft.yaml"), "utf8").replace(
    "required: [compliant, explanation]",
    "required: [compliant]",
  );
  assert.throws(
    () => parseManifest(loose, "rft.yaml"),
    /json_schema\.schema\.required: must list every property in strict mode \(missing: explanation\)/,
  );
});
