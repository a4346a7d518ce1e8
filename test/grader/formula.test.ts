import assert from "node:assert/strict";
import { test } from "node:test";
import { evaluateFormula, FormulaError, parseFormula } from "../../grader-sidecar/src/formula.js";

const calc = (src: string, vars: Record<string, number> = {}) => evaluateFormula(parseFormula(src), vars);

test("formula: OpenAI's examples", () => {
  assert.equal(calc("0.5 * compliant + 0.5 * explanation", { compliant: 1, explanation: 0.4 }), 0.7);
  assert.equal(calc("(name + email) / 2", { name: 1, email: 0 }), 0.5);
});

test("formula: precedence, associativity and unary minus", () => {
  assert.equal(calc("1 + 2 * 3"), 7);
  assert.equal(calc("(1 + 2) * 3"), 9);
  assert.equal(calc("2 ^ 3 ^ 2"), 512); // right associative
  assert.equal(calc("-2 ^ 2"), -4); // power binds tighter than unary minus
  assert.equal(calc("2 ^ -1"), 0.5);
  assert.equal(calc("10 - 4 - 3"), 3); // left associative
  assert.equal(calc("8 / 4 / 2"), 1);
  assert.equal(calc("1.5e1 + .5"), 15.5);
});

test("formula: functions", () => {
  assert.equal(calc("min(a, b, 0.3)", { a: 0.5, b: 0.9 }), 0.3);
  assert.equal(calc("max(a)", { a: 0.5 }), 0.5);
  assert.equal(calc("abs(-2) + floor(1.7) + ceil(1.2)"), 5);
  assert.equal(calc("sqrt(16) * exp(0) + log(1)"), 4);
  assert.ok(Math.abs(calc("log(exp(2))") - 2) < 1e-12); // natural log
});

test("formula: syntax errors say what and where", () => {
  const cases: [string, RegExp, number][] = [
    ["0.5 * a +", /formula ended/, 9],
    ["(a + b", /expected "\)"/, 6],
    ["a + * b", /unexpected "\*"/, 4],
    ["a $ b", /unexpected character "\$"/, 2],
    ["pow(a, 2)", /unknown function "pow"/, 0],
    ["abs(a, b)", /abs\(\) takes 1 argument/, 0],
    ["a b", /unexpected "b"/, 2],
    ["", /empty/, 0],
  ];
  for (const [src, msg, pos] of cases) {
    assert.throws(
      () => parseFormula(src),
      (err: unknown) => err instanceof FormulaError && msg.test(err.message) && err.position === pos,
      `formula ${JSON.stringify(src)}`,
    );
  }
});

test("formula: never evaluates code", () => {
  assert.throws(() => parseFormula("process.exit(1)"), FormulaError);
  assert.doesNotThrow(() => parseFormula("constructor")); // parses as a variable name...
  assert.throws(() => calc("constructor"), /unknown variable "constructor"/); // ...which is never looked up on prototypes
});

test("formula: nesting is limited, and the error names the position (2,000 parentheses overflowed the stack)", () => {
  const nested = (n: number) => `${"(".repeat(n)}a${")".repeat(n)}`;
  assert.equal(calc(nested(99), { a: 2 }), 2);
  for (const [src, pos] of [
    [nested(2000), 100],
    [`${"-".repeat(2000)}a`, 100],
    [`${"a^".repeat(1500)}a`, 200],
    [`${"max(".repeat(1000)}a${")".repeat(1000)}`, 400],
  ] as const) {
    assert.throws(
      () => parseFormula(src),
      (e: unknown) =>
        e instanceof FormulaError &&
        e.position === pos &&
        /nests deeper than 100 levels .* at position \d+$/.test(e.message),
      src.slice(0, 20),
    );
  }
});

test("formula: token count is limited (long chains cannot overflow evaluation either)", () => {
  assert.equal(calc(Array(2000).fill("a").join(" + "), { a: 1 }), 2000);
  assert.throws(
    () => parseFormula(Array(100_000).fill("a").join("+")),
    (e: unknown) => e instanceof FormulaError && /more than 4096 tokens at position 4096$/.test(e.message),
  );
});
