import assert from "node:assert/strict";
import { test } from "node:test";
import { parseTemplate, RenderLimitError, render, TemplateSyntaxError } from "../../grader-sidecar/src/template.js";

const scope = {
  item: { x: { y: ["first", "second"] }, n: 3, obj: { a: 1 }, "dash-key": "d" },
  sample: {
    output_text: "hello",
    output_json: { a: { b: true } },
    output_tools: [{ id: "c1", type: "function", function: { name: "lookup", arguments: "{}" } }],
    choices: [{ index: 0, message: { role: "assistant", content: "hello" } }],
  },
};

test("template: paths into item and sample", () => {
  const r = (t: string) => render(parseTemplate(t), scope);
  assert.deepEqual(r("{{ item.x.y[0] }}"), { text: "first", missing: [] });
  assert.equal(r("{{item.x.y[1]}}").text, "second");
  assert.equal(r("A={{ sample.output_text }}!").text, "A=hello!");
  assert.equal(r("{{ sample.output_json.a.b }}").text, "true");
  assert.equal(r("{{ sample.output_tools[0].function.name }}").text, "lookup");
  assert.equal(r("{{ sample.choices[0].message.content }}").text, "hello");
  assert.equal(r("{{ item.n }}").text, "3");
  assert.equal(r("{{ item.obj }}").text, '{"a":1}'); // non-strings render as JSON
  assert.equal(r('{{ item["dash-key"] }}').text, "d");
  assert.equal(r("no templates").text, "no templates");
});

test("template: references that resolve to nothing are reported", () => {
  const r = render(parseTemplate("{{ item.missing }} and {{ item.x.y[5] }} and {{ sample.output_json.zz }}"), scope);
  assert.deepEqual(r.missing, ["item.missing", "item.x.y[5]", "sample.output_json.zz"]);
  // Prototype members are not variables.
  assert.deepEqual(render(parseTemplate("{{ item.constructor }}"), scope).missing, ["item.constructor"]);
});

test("template: syntax errors name the reference", () => {
  assert.throws(
    () => parseTemplate("{{ items.x }}"),
    (e: unknown) => e instanceof TemplateSyntaxError && /unknown namespace "items"/.test(e.message),
  );
  assert.throws(() => parseTemplate("{{ sample.output }}"), /sample has no "output"/);
  assert.throws(() => parseTemplate("{{ item }}"), /needs a variable/);
  assert.throws(() => parseTemplate("{{ item.a..b }}"), /cannot parse/);
  assert.throws(() => parseTemplate("{{ item.a "), /unclosed/);
});

// Hostile templates of 1 MB. On the regex parser (/\{\{(.*?)\}\}/gs) the first case took minutes (quadratic:
// 200k characters 15 s); linear parsing answers in milliseconds (bench/template.ts). The test-level timeout is
// not a timing assertion: it only turns that old hang into a failure.
const MB = 1 << 20;

test("template: 1 MB of unclosed {{ is rejected at the first one", { timeout: 120_000 }, () => {
  assert.throws(() => parseTemplate("{{".repeat(MB / 2)), /: unclosed "\{\{" at offset 0$/);
  const lead = "ok {{ item.n }} ";
  assert.throws(
    () => parseTemplate(lead + "{{ {{".repeat(MB / 5)),
    (e: unknown) => {
      assert.ok(e instanceof TemplateSyntaxError);
      assert.equal(e.message, `unclosed "{{" at offset ${lead.length}`);
      return true;
    },
  );
});

test("template: 1 MB of references parses and renders", { timeout: 120_000 }, () => {
  const t = parseTemplate("{{ item.n }}-".repeat(MB / 13));
  assert.equal(t.parts.length, 2 * Math.floor(MB / 13));
  assert.equal(render(t, scope).text, "3-".repeat(MB / 13));
  // One reference with a 500k-step path: parsed step by step without re-slicing the rest.
  const deep = parseTemplate(`{{ item${".x".repeat(MB / 4)} }}`);
  assert.equal((deep.parts[0] as { path: unknown[] }).path.length, MB / 4);
  assert.deepEqual(render(deep, scope).missing.length, 1);
});

test("template: errors on huge references quote a bounded prefix", { timeout: 120_000 }, () => {
  assert.throws(
    () => parseTemplate(`{{ item.${"a".repeat(MB)}! }}`),
    (e: unknown) => {
      assert.ok(e instanceof TemplateSyntaxError);
      assert.match(e.message, /cannot parse "!"/);
      assert.match(e.message, /… \(1048582 characters\)/);
      assert.ok(e.message.length < 400, `message is ${e.message.length} characters`);
      return true;
    },
  );
});

test("template: rendering is bounded (RENDER_MAX_CHARS); the grade is truncated_observation_error", async () => {
  const { GraderEngine } = await import("../../grader-sidecar/src/engine.js");
  const engine = new GraderEngine();
  try {
    const big = "x".repeat(1 << 20);
    const grader = (n: number) => ({
      type: "string_check",
      name: "s",
      input: "{{ item.big }}".repeat(n),
      reference: "y",
      operation: "eq",
    });
    // 100 × 1 MiB = 100 MiB of text would be built without the bound.
    const over = await engine.run(grader(100), { big }, { output_text: "" });
    assert.equal(over.reward, 0);
    assert.equal(over.metadata.errors.truncated_observation_error, true);
    assert.equal(over.metadata.errors.other_error, false);
    assert.throws(
      () => render(parseTemplate("{{ item.big }}".repeat(17)), { item: { big }, sample: {} }),
      RenderLimitError,
    );
    // Within the bound it renders as before.
    const ok = await engine.run(grader(2), { big }, { output_text: "" });
    assert.equal(ok.metadata.errors.truncated_observation_error, false);
    assert.equal(
      render(parseTemplate("{{ item.big }}".repeat(16)), { item: { big }, sample: {} }).text.length,
      16 << 20,
    );
  } finally {
    await engine.close();
  }
});
