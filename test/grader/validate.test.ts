import assert from "node:assert/strict";
import { test } from "node:test";
import { compileGrader, GraderValidationError } from "../../grader-sidecar/src/validate.js";

const sc = {
  type: "string_check",
  name: "exact",
  input: "{{ sample.output_text }}",
  reference: "{{ item.answer }}",
  operation: "eq",
};

function rejects(raw: unknown, param: string, msg: RegExp, opts = {}) {
  assert.throws(
    () => compileGrader(raw, opts),
    (err: unknown) => {
      assert.ok(err instanceof GraderValidationError, `expected GraderValidationError, got ${err}`);
      assert.equal(err.param, param, `param for ${err.message}`);
      assert.match(err.message, msg);
      return true;
    },
  );
}

test("validate: every accepted grader type compiles", () => {
  assert.equal(compileGrader(sc).type, "string_check");
  assert.equal(compileGrader({ ...sc, operation: "neq" }).type, "string_check");
  assert.equal(
    compileGrader({ type: "text_similarity", name: "t", input: "a", reference: "b", evaluation_metric: "rouge_l" })
      .type,
    "text_similarity",
  );
  assert.equal(compileGrader({ type: "python", source: "def grade(s, i):\n  return 1.0\n" }).type, "python");
  const sm = compileGrader({
    type: "score_model",
    name: "judge",
    model: "gpt-4o-mini",
    input: [{ role: "user", content: [{ type: "input_text", text: "Rate {{ sample.output_text }}" }] }],
    range: [0, 10],
    sampling_params: { temperature: 0, seed: 1, max_completions_tokens: 100 },
  });
  assert.equal(sm.type === "score_model" && sm.range[1], 10);
  const m = compileGrader({
    type: "multi",
    graders: {
      a: sc,
      b: {
        type: "label_model",
        name: "l",
        model: "m",
        input: [{ role: "user", content: "x" }],
        labels: ["y", "n"],
        passing_labels: ["y"],
      },
    },
    calculate_output: "0.5 * a + 0.5 * b",
  });
  assert.equal(m.type, "multi");
});

test("validate: missing and wrong fields are named", () => {
  rejects({ ...sc, operation: "equals" }, "grader.operation", /must be one of eq, ne, neq, like, ilike/);
  rejects(
    { type: "string_check", name: "x", input: "a", operation: "eq" },
    "grader",
    /missing required field "reference"/,
  );
  rejects({ ...sc, extra: 1 }, "grader", /unknown field "extra"/);
  rejects({ ...sc, name: 7 }, "grader.name", /must be string/);
  rejects({ name: "x" }, "grader", /missing required field "type"/);
  rejects({ type: "regex", name: "x" }, "grader.type", /unsupported grader type "regex"/);
  rejects("string_check", "grader", /must be a JSON object/);
  rejects(
    { type: "text_similarity", name: "t", input: "a", reference: "b", evaluation_metric: "jaccard" },
    "grader.evaluation_metric",
    /must be one of cosine, fuzzy_match/,
  );
  rejects(
    { type: "score_model", name: "j", model: "m", input: [{ role: "judge", content: "x" }] },
    "grader.input[0].role",
    /must be one of user, assistant, system, developer/,
  );
  rejects(
    { type: "score_model", name: "j", model: "m", input: [{ role: "user", content: "x" }], range: [1, 0] },
    "grader.range",
    /min < max/,
  );
});

test("validate: label_model is only a sub-grader; multi cannot nest", () => {
  const label = {
    type: "label_model",
    name: "l",
    model: "m",
    input: [{ role: "user", content: "x" }],
    labels: ["y"],
    passing_labels: ["y"],
  };
  rejects(label, "grader.type", /unsupported grader type "label_model"/);
  rejects(
    {
      type: "multi",
      graders: { inner: { type: "multi", graders: {}, calculate_output: "1" } },
      calculate_output: "inner",
    },
    "grader.graders.inner.type",
    /cannot contain another multi/,
  );
  rejects(
    { type: "multi", graders: { l: { ...label, passing_labels: ["maybe"] } }, calculate_output: "l" },
    "grader.graders.l.passing_labels",
    /not in labels: maybe/,
  );
});

test("validate: multi formula and sub-grader names", () => {
  rejects(
    { type: "multi", graders: { a: sc }, calculate_output: "a +" },
    "grader.calculate_output",
    /formula ended at position 3/,
  );
  rejects(
    { type: "multi", graders: { a: sc }, calculate_output: "a + b" },
    "grader.calculate_output",
    /unknown variable "b" at position 4 \(sub-graders: a\)/,
  );
  rejects(
    { type: "multi", graders: { "bad-name": sc }, calculate_output: "1" },
    "grader.graders.bad-name",
    /letters, digits and _/,
  );
  rejects(
    { type: "multi", graders: { a: { ...sc, operation: "x" } }, calculate_output: "a" },
    "grader.graders.a.operation",
    /must be one of/,
  );
  rejects({ type: "multi", graders: {}, calculate_output: "1" }, "grader.graders", /at least one/);
  rejects({ type: "multi", graders: [sc], calculate_output: "exact" }, "grader.graders", /object mapping names/);
  // SDK form: one sub-grader object instead of a map, keyed by its name.
  const single = compileGrader({ type: "multi", graders: sc, calculate_output: "exact" });
  assert.deepEqual(single.type === "multi" && Object.keys(single.graders), ["exact"]);
});

test("validate: templates pointing nowhere and cosine without embeddings", () => {
  rejects({ ...sc, input: "{{ answer }}" }, "grader.input", /unknown namespace "answer"/);
  rejects({ ...sc, reference: "{{ sample.text }}" }, "grader.reference", /sample has no "text"/);
  const cos = { type: "text_similarity", name: "t", input: "a", reference: "b", evaluation_metric: "cosine" };
  rejects(cos, "grader.evaluation_metric", /cosine needs an embeddings endpoint/);
  assert.equal(compileGrader(cos, { cosineAvailable: true }).type, "text_similarity");
});

test("validate: python source size limit", () => {
  const big = `def grade(s, i):\n  return 1.0\n# ${"x".repeat(300 * 1024)}\n`;
  rejects({ type: "python", source: big }, "grader.source", /limit is 262144/);
});
