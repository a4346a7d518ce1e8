import assert from "node:assert/strict";
import { test } from "node:test";
import { parseTemplate, render, TemplateSyntaxError } from "../../grader-sidecar/src/template.js";

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
