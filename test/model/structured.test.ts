/**
 * Structured outputs: response_format parsing (errors name the path), and constrained decoding through
 * xgrammar. Completions are checked with ajv against the schema they were sampled under: random walks over the
 * grammar's masks (every allowed token equally likely, the harshest "model") on the byte-level vocabulary and on
 * SmolLM2's 49152-token BPE vocabulary, and generate() with a random tiny model.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { before, test } from "node:test";
import { Ajv } from "ajv";
import { createRandomModel, type Model } from "../../trainer/model/model.js";
import { ChatTokenizer } from "../../trainer/model/tokenizer.js";
import { generate } from "../../trainer/sampling/generate.js";
import { maskHas, Rng } from "../../trainer/sampling/pick.js";
import { parseResponseFormat, type StructuredFormat } from "../../trainer/sampling/response-format.js";
import { type ConstraintFactory, tokenizerConstraint, vocabType } from "../../trainer/sampling/structured.js";
import { smollm2Dir } from "../helpers/smollm2.js";
import { setup } from "./helpers.js";

const ajv = new Ajv({ strict: false });

/** The RFT guide's security example's schema. */
const SECURITY = {
  type: "json_schema",
  json_schema: {
    name: "security_assessment",
    strict: true,
    schema: {
      type: "object",
      properties: { compliant: { type: "string" }, explanation: { type: "string" } },
      required: ["compliant", "explanation"],
      additionalProperties: false,
    },
  },
};

const schemaOf = (f: StructuredFormat) => (f.type === "json_schema" ? f.schema : { type: "object" });

/** A schema using every keyword the checker admits. */
const EVERYTHING = {
  type: "object",
  properties: {
    label: { type: "string", enum: ["yes", "no", "partial"] },
    score: { type: "integer", minimum: -3, maximum: 12 },
    ratio: { type: "number" },
    ok: { type: "boolean" },
    nothing: { type: "null" },
    maybe: { type: ["string", "null"], maxLength: 6 },
    code: { type: "string", pattern: "^[A-Z]{2}-[0-9]{3}$" },
    day: { type: "string", format: "date" },
    short: { type: "string", minLength: 2, maxLength: 5 },
    fixed: { const: "v1" },
    tags: { type: "array", items: { type: "string", maxLength: 3 }, minItems: 1, maxItems: 3 },
    either: { anyOf: [{ type: "integer" }, { $ref: "#/$defs/point" }] },
    tree: { $ref: "#/$defs/node" },
  },
  required: [
    "label",
    "score",
    "ratio",
    "ok",
    "nothing",
    "maybe",
    "code",
    "day",
    "short",
    "fixed",
    "tags",
    "either",
    "tree",
  ],
  additionalProperties: false,
  $defs: {
    point: {
      type: "object",
      properties: { x: { type: "integer" }, y: { type: "integer" } },
      required: ["x", "y"],
      additionalProperties: false,
    },
    node: {
      type: "object",
      properties: {
        name: { type: "string", maxLength: 4 },
        children: { type: "array", items: { $ref: "#/$defs/node" }, maxItems: 2 },
      },
      required: ["name", "children"],
      additionalProperties: false,
    },
  },
};

/**
 * Samples by choosing among the allowed tokens at random: a third of the time among those with a structural
 * character (`"`, `}`, `]`, `,`, `:`) so that strings close and walks end; EOS, once allowed, with probability ½.
 */
async function walk(
  factory: ConstraintFactory,
  tok: ChatTokenizer,
  structural: Set<number>,
  vocab: number,
  seed: number,
  maxTokens: number,
): Promise<{ text: string; finished: boolean }> {
  const g = await factory();
  const rng = new Rng(seed);
  const ids: number[] = [];
  try {
    for (let step = 0; step < maxTokens; step++) {
      const mask = await g.allowed();
      // Special tokens other than EOS are never allowed.
      for (const t of tok.specialIds)
        assert.ok(!maskHas(mask, t) || tok.eosIds.includes(t), `special token ${t} allowed`);
      const eos = tok.eosIds.filter((t) => maskHas(mask, t));
      const rest: number[] = [];
      const shaped: number[] = [];
      for (let t = 0; t < vocab; t++) {
        if (!maskHas(mask, t) || eos.includes(t)) continue;
        rest.push(t);
        if (structural.has(t)) shaped.push(t);
      }
      assert.ok(rest.length + eos.length > 0, "the mask allows some token");
      if (eos.length && (rest.length === 0 || rng.next() < 0.5)) {
        assert.ok(g.accept(eos[0]!));
        return { text: tok.decode(ids), finished: true };
      }
      const from = shaped.length && rng.next() < 1 / 3 ? shaped : rest;
      const t = from[Math.floor(rng.next() * from.length)]!;
      assert.ok(g.accept(t), `accepts ${t}`);
      ids.push(t);
    }
    return { text: tok.decode(ids), finished: false };
  } finally {
    g.dispose();
  }
}

/** Tokens whose text has a JSON structural character. */
function structuralTokens(tok: ChatTokenizer, vocab: number): Set<number> {
  const out = new Set<number>();
  for (let t = 0; t < vocab; t++) if (!tok.specialIds.has(t) && /["}\],:]/.test(tok.decode([t]))) out.add(t);
  return out;
}

let tiny: Model;
before(async () => {
  await setup();
  tiny = createRandomModel({
    arch: "qwen2",
    layers: 2,
    hidden: 64,
    heads: 4,
    kvHeads: 2,
    vocab: "byte",
    seed: 7,
    std: 0.2,
  });
});

test("response_format: both shapes parse; unsupported features are named by path", () => {
  const f = parseResponseFormat(SECURITY)!;
  assert.equal(f.type, "json_schema");
  assert.equal(f.type === "json_schema" && f.strict, true);
  const flat = parseResponseFormat(
    { type: "json_schema", ...SECURITY.json_schema },
    "spec.method.reinforcement.responseFormat",
  );
  assert.deepEqual(flat, f);
  assert.deepEqual(parseResponseFormat({ type: "json_object" }), { type: "json_object" });
  assert.equal(parseResponseFormat({ type: "text" }), null);
  assert.equal(parseResponseFormat(null), null);
  assert.ok(
    parseResponseFormat({ type: "json_schema", json_schema: { name: "all", strict: true, schema: EVERYTHING } }),
  );

  const bad = (schema: unknown, strict: boolean, re: RegExp) =>
    assert.throws(() => parseResponseFormat({ type: "json_schema", json_schema: { name: "x", strict, schema } }), re);
  const obj = (properties: Record<string, unknown>, extra: Record<string, unknown> = {}) => ({
    type: "object",
    properties,
    required: Object.keys(properties),
    additionalProperties: false,
    ...extra,
  });
  bad(
    obj({ a: { type: "string", allOf: [] } }),
    true,
    /json_schema\.schema\.properties\.a\.allOf: unsupported schema keyword "allOf"/,
  );
  bad(obj({ a: { type: "number", minimum: 0.5 } }), true, /properties\.a\.minimum: applies to type "integer" only/);
  bad(obj({ a: { type: "string", format: "uri" } }), true, /properties\.a\.format: must be one of/);
  bad(obj({ a: { type: "strin" } }), true, /properties\.a\.type: must be one of/);
  bad(obj({ a: { $ref: "#/$defs/missing" } }), true, /properties\.a\.\$ref: "#\/\$defs\/missing" does not name/);
  bad(
    { type: "object", properties: { a: { type: "string" } }, additionalProperties: false },
    true,
    /schema\.required: must list every property in strict mode \(missing: a\)/,
  );
  bad(
    obj({ a: obj({ b: { type: "string" } }, { additionalProperties: true }) }),
    true,
    /properties\.a\.additionalProperties: must be false in strict mode/,
  );
  bad({ type: "array", items: { type: "string" } }, true, /schema\.type: must be "object" at the root in strict mode/);
  bad(obj({ a: { type: "string", pattern: "(" } }), true, /properties\.a\.pattern: is not a regular expression/);
  // xgrammar writes a pattern's matches unescaped: patterns that could match '"', '\\' or control characters are refused.
  bad(
    obj({ a: { type: "string", pattern: "^.+$" } }),
    true,
    /properties\.a\.pattern: can match "\." \(any character\)/,
  );
  bad(obj({ a: { type: "string", pattern: "^[^,]+$" } }), true, /pattern: can match a negated class/);
  bad(
    obj({ a: { type: "string", pattern: "^[ -~]+$" } }),
    true,
    /pattern: can match the range .-~, which includes '"'/,
  );
  bad(obj({ a: { type: "string", pattern: "^\\s*$" } }), true, /pattern: can match \\s/);
  assert.ok(
    parseResponseFormat({
      type: "json_schema",
      json_schema: {
        name: "p",
        strict: true,
        schema: obj({ a: { type: "string", pattern: "^[!#-\\[\\]-~]+(\\.\\d+)?$" } }),
      },
    }),
  );
  let deep: Record<string, unknown> = { type: "string" };
  for (let i = 0; i < 40; i++) deep = { type: "array", items: deep };
  bad({ type: "object", properties: { a: deep } }, false, /nesting deeper than 32 levels/);
  bad(obj({ a: deep }), true, /nesting deeper than 10 levels \(strict mode\)/);
  // Outside strict mode optional properties and open objects are fine.
  assert.ok(
    parseResponseFormat({
      type: "json_schema",
      json_schema: { name: "x", schema: { type: "object", properties: { a: { type: "string" } } } },
    }),
  );
  assert.throws(
    () => parseResponseFormat({ type: "json_schema", json_schema: { schema: {} } }),
    /json_schema\.name: is required/,
  );
  assert.throws(
    () => parseResponseFormat({ type: "xml" }),
    /response_format\.type: must be "text", "json_object" or "json_schema"/,
  );
  assert.throws(
    () => parseResponseFormat({ type: "json_schema", json_schema: { name: "x" } }),
    /json_schema\.schema: is required/,
  );
});

test("vocabulary types: byte-level BPE, SentencePiece byte fallback, raw", () => {
  assert.deepEqual(vocabType({ decoder: { type: "ByteLevel" } }), { type: "byte_level", prependSpace: false });
  const llama = {
    decoder: {
      type: "Sequence",
      decoders: [{ type: "Replace" }, { type: "ByteFallback" }, { type: "Fuse" }, { type: "Strip", start: 1 }],
    },
  };
  assert.deepEqual(vocabType(llama), { type: "byte_fallback", prependSpace: true });
  assert.deepEqual(vocabType({ decoder: null }), { type: "raw", prependSpace: false });
});

test("random walks over the masks give schema-valid JSON (byte vocabulary and SmolLM2's BPE vocabulary)", async () => {
  const dir = await smollm2Dir();
  const smol = new ChatTokenizer(
    {
      tokenizerJson: JSON.parse(readFileSync(join(dir, "tokenizer.json"), "utf8")),
      tokenizerConfig: JSON.parse(readFileSync(join(dir, "tokenizer_config.json"), "utf8")),
    },
    [],
  );
  const vocabs = [
    { name: "byte", tok: tiny.tokenizer!, size: tiny.config.vocabSize, maxTokens: 1500 },
    { name: "smollm2", tok: smol, size: 49152, maxTokens: 400 },
  ];
  const formats: StructuredFormat[] = [
    parseResponseFormat(SECURITY)!,
    parseResponseFormat({ type: "json_schema", json_schema: { name: "all", strict: true, schema: EVERYTHING } })!,
    { type: "json_object" },
  ];
  for (const v of vocabs) {
    const structural = structuralTokens(v.tok, v.size);
    for (const f of formats) {
      const validate = ajv.compile(schemaOf(f));
      const factory = await tokenizerConstraint(v.tok, v.size, f);
      let finished = 0;
      for (let seed = 1; seed <= 8; seed++) {
        const { text, finished: done } = await walk(factory, v.tok, structural, v.size, seed, v.maxTokens);
        if (!done) continue; // cut by the token limit
        finished++;
        let value: unknown;
        assert.doesNotThrow(() => (value = JSON.parse(text)), `${v.name}: ${text}`);
        assert.ok(
          validate(value),
          `${v.name} ${JSON.stringify(schemaOf(f)).slice(0, 60)}: ${text}\n${ajv.errorsText(validate.errors)}`,
        );
      }
      assert.ok(finished >= 3, `${v.name}: ${finished} of 8 walks finished`);
    }
  }
});

test("generate() under a json_schema: every finished sample validates; a cut one reports finish 'length'", async () => {
  const schema = {
    type: "object",
    properties: {
      compliant: { type: "string", enum: ["yes", "no"] },
      explanation: { type: "string", maxLength: 12 },
      score: { type: "integer", minimum: 0, maximum: 9 },
    },
    required: ["compliant", "explanation", "score"],
    additionalProperties: false,
  };
  const f = parseResponseFormat({ type: "json_schema", json_schema: { name: "a", strict: true, schema } })!;
  const factory = await tokenizerConstraint(tiny.tokenizer!, tiny.config.vocabSize, f);
  const validate = ajv.compile(schema);
  const promptIds = tiny.tokenizer!.encode("Is data encrypted at rest?");
  const out = await generate(
    tiny,
    Array.from({ length: 8 }, (_, i) => ({
      promptIds,
      maxTokens: 300,
      seed: i,
      sampling: { temperature: 1.5 },
      constraint: factory,
    })),
  );
  for (const c of out) {
    assert.equal(c.finishReason, "stop", c.text);
    const v = JSON.parse(c.text) as unknown;
    assert.ok(validate(v), `${c.text}: ${ajv.errorsText(validate.errors)}`);
  }
  // The same random model without the constraint writes no JSON at all.
  const free = await generate(tiny, [{ promptIds, maxTokens: 40, seed: 1, sampling: { temperature: 1.5 } }]);
  assert.throws(() => JSON.parse(free[0]!.text));
  // Too few tokens for the JSON: finish "length", and the text is a prefix that does not parse.
  const cut = await generate(tiny, [{ promptIds, maxTokens: 5, seed: 1, constraint: factory }]);
  assert.equal(cut[0]!.finishReason, "length");
  assert.throws(() => JSON.parse(cut[0]!.text));
  assert.ok(cut[0]!.text.startsWith("{"));
});
