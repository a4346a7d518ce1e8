import assert from "node:assert/strict";
import { after, test } from "node:test";
import { GraderEngine } from "../../grader-sidecar/src/engine.js";

const engine = new GraderEngine();
after(() => engine.close());

const check = (operation: string, input: string, reference: string) =>
  engine.run({ type: "string_check", name: "c", input, reference, operation }, {}, { output_text: "" });

test("string_check: eq, ne/neq, like, ilike", async () => {
  assert.equal((await check("eq", "Paris", "Paris")).reward, 1);
  assert.equal((await check("eq", "Paris", "paris")).reward, 0);
  assert.equal((await check("ne", "Paris", "paris")).reward, 1);
  assert.equal((await check("neq", "Paris", "Paris")).reward, 0);
  assert.equal((await check("like", "The answer is Paris.", "Paris")).reward, 1);
  assert.equal((await check("like", "The answer is paris.", "Paris")).reward, 0);
  assert.equal((await check("ilike", "THE ANSWER IS PARIS", "paris")).reward, 1);
  assert.equal((await check("ilike", "London", "paris")).reward, 0);
});

test("response has OpenAI's RunGraderResponse shape with all 14 error keys", async () => {
  const res = await engine.run(
    {
      type: "string_check",
      name: "exact",
      input: "{{ sample.output_text }}",
      reference: "{{ item.answer }}",
      operation: "eq",
    },
    { answer: "42" },
    { output_text: "42" },
  );
  assert.equal(res.reward, 1);
  assert.equal(res.metadata.name, "exact");
  assert.equal(res.metadata.type, "string_check");
  assert.equal(Object.keys(res.metadata.errors).length, 14);
  assert.ok(Object.values(res.metadata.errors).every((v) => v === false || v === null));
  assert.ok(res.metadata.execution_time >= 0);
  assert.deepEqual(res.sub_rewards, {});
  assert.deepEqual(res.model_grader_token_usage_per_model, {});
  assert.equal(res.metadata.token_usage, null);
  assert.equal(res.metadata.sampled_model_name, null);
});

test("templates: output_json, output_tools and a missing variable", async () => {
  const g = (input: string) => ({ type: "string_check", name: "c", input, reference: "yes", operation: "eq" });
  const json = await engine.run(g("{{ sample.output_json.compliant }}"), {}, { output_text: '{"compliant":"yes"}' });
  assert.equal(json.reward, 1);
  const tools = await engine.run(
    g("{{ sample.output_tools[0].function.name }}"),
    {},
    {
      output_text: "",
      output_tools: [{ id: "1", type: "function", function: { name: "yes", arguments: "{}" } }],
    },
  );
  assert.equal(tools.reward, 1);
  const missing = await engine.run(g("{{ item.nothing }}"), { something: 1 }, { output_text: "yes" });
  assert.equal(missing.reward, 0);
  assert.equal(missing.metadata.errors.invalid_variable_error, true);
  // output_json is absent (not an error) when the text is not JSON and no response format was required...
  const notJson = await engine.run(g("{{ sample.output_json.compliant }}"), {}, { output_text: "yes" });
  assert.equal(notJson.metadata.errors.invalid_variable_error, true);
  assert.equal(notJson.metadata.errors.sample_parse_error, false);
  // ...and a sample_parse_error when it was.
  const required = await engine.run(g("{{ sample.output_text }}"), {}, { output_text: "yes", json_required: true });
  assert.equal(required.reward, 0);
  assert.equal(required.metadata.errors.sample_parse_error, true);
});

test("multi: sub-rewards, scores and the formula", async () => {
  const res = await engine.run(
    {
      type: "multi",
      name: "combo",
      graders: {
        label: {
          type: "string_check",
          name: "label",
          input: "{{ sample.output_json.compliant }}",
          reference: "{{ item.compliant }}",
          operation: "eq",
        },
        why: {
          type: "string_check",
          name: "why",
          input: "{{ sample.output_json.explanation }}",
          reference: "AES",
          operation: "like",
        },
      },
      calculate_output: "0.7 * label + 0.3 * why",
    },
    { compliant: "yes" },
    { output_text: '{"compliant":"yes","explanation":"we use RSA"}' },
  );
  assert.equal(res.reward, 0.7);
  assert.deepEqual(res.sub_rewards, { label: 1, why: 0 });
  assert.deepEqual(res.metadata.scores, { label: 1, why: 0 });
  assert.equal(res.metadata.type, "multi");
  assert.equal(res.metadata.name, "combo");
});

test("multi: a formula that divides by zero reports formula_parse_error", async () => {
  const res = await engine.run(
    {
      type: "multi",
      graders: { a: { type: "string_check", name: "a", input: "x", reference: "y", operation: "eq" } },
      calculate_output: "1 / a",
    },
    {},
    { output_text: "" },
  );
  assert.equal(res.reward, 0);
  assert.equal(res.metadata.errors.formula_parse_error, true);
});
