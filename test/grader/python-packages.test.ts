/**
 * The python sandbox carries the packages of OpenAI's grader image (2025-05-08) at the image's versions, and a
 * code grader in the shape of OpenAI's Runloop example (ast-grep over the model's TypeScript) passes through
 * `rft grade`, the real CLI and sandbox. NLTK's data corpora are not on any registry reachable here: the last
 * test pins that gap (grader-sidecar/python/README.md "Packages").
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { test } from "node:test";

const rft = (...args: string[]) =>
  spawnSync(process.execPath, ["--import", "tsx", "cli/rft.ts", ...args], {
    encoding: "utf8",
    env: { ...process.env, RFT_LOG_LEVEL: "silent" },
  });

/** name==version lines of requirements.txt: what OpenAI's image lists, as installed here. */
const pins = readFileSync("grader-sidecar/python/requirements.txt", "utf8")
  .split("\n")
  .filter((l) => /^[A-Za-z]/.test(l))
  .map((l) => l.split("=="));

test("every package of OpenAI's grader image imports in the sandbox at the image's version", () => {
  assert.equal(pins.length, 16);
  const source = [
    "from importlib.metadata import version",
    "import numpy, scipy, sympy, pandas, rapidfuzz, jsonschema, pydantic, yaml, deepdiff, sqlparse",
    "import sklearn, rouge_score, nltk, rdkit, skbio, ast_grep_py",
    `PINS = ${JSON.stringify(Object.fromEntries(pins))}`,
    "def grade(sample, item):",
    "    wrong = [f'{n} {version(n)} != {v}' for n, v in PINS.items() if version(n) != v]",
    "    if wrong: raise RuntimeError('; '.join(wrong))",
    "    return 1.0",
  ].join("\n");
  const r = rft("grade", "--grader", JSON.stringify({ type: "python", name: "pkgs", source }), "--sample", "x");
  assert.equal(r.status, 0, r.stderr);
  const res = JSON.parse(r.stdout);
  assert.equal(
    res.reward,
    1,
    res.metadata.errors.python_grader_runtime_error_details ?? JSON.stringify(res.metadata.errors),
  );
});

test("a Runloop-style TypeScript code grader (ast_grep_py + rapidfuzz) passes through rft grade", () => {
  const source = readFileSync("test/fixtures/graders/typescript-code-grader.py", "utf8");
  const ref =
    "const customer = await stripe.customers.create({ email });\n" +
    "const sub = await stripe.subscriptions.create({ customer: customer.id, items: [{ price }] });\n";
  const item = { expected_calls: ["stripe.customers.create", "stripe.subscriptions.create"], reference_code: ref };
  const grade = (answer: string) => {
    const r = rft(
      "grade",
      "--grader",
      JSON.stringify({ type: "python", name: "stripe-code", source }),
      "--item",
      JSON.stringify(item),
      "--sample",
      answer,
    );
    assert.equal(r.status, 0, r.stderr);
    const res = JSON.parse(r.stdout);
    assert.equal(
      res.metadata.errors.python_grader_runtime_error,
      false,
      res.metadata.errors.python_grader_runtime_error_details,
    );
    return res.reward as number;
  };
  assert.equal(grade(`Here is the code:\n\`\`\`typescript\n${ref}\`\`\`\n`), 1);
  const half = grade("```ts\nconst c = await stripe.customers.create({ email });\n```");
  assert.ok(half > 0.4 && half < 0.7, String(half));
  assert.equal(grade("```ts\nconst c = await stripe.customers.create({ email ;\n```"), 0, "a syntax error scores 0");
});

test("gap: NLTK imports, but its data corpora (punkt, stopwords, wordnet, omw-1.4, names) are not installed", () => {
  const source = [
    "import nltk",
    "def grade(sample, item):",
    "    try:",
    "        nltk.data.find('tokenizers/punkt')",
    "        return 1.0",
    "    except LookupError:",
    "        return 0.0",
  ].join("\n");
  const r = rft("grade", "--grader", JSON.stringify({ type: "python", name: "nltk-data", source }), "--sample", "x");
  assert.equal(r.status, 0, r.stderr);
  assert.equal(JSON.parse(r.stdout).reward, 0, "punkt is here now: update README 'Packages' and this test");
});
