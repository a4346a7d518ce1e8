import assert from "node:assert/strict";
import { test } from "node:test";
import { canonicalJson, canonicalJsonFast, fastCanonicalJson, isCanonicalText } from "../../ledger/canonical.js";

// Vectors from RFC 8785 §3.2.2 (sample), §3.2.3 (property sorting) and Appendix B (IEEE-754 number serialization).
test("RFC 8785 §3.2.2: whitespace, literals, numbers, string escapes", () => {
  const input = JSON.parse(
    '{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],' +
      '"string": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/","literals": [null, true, false]}',
  );
  assert.equal(
    canonicalJson(input),
    '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}',
  );
});

test("RFC 8785 §3.2.3: properties sorted by UTF-16 code units", () => {
  const input = JSON.parse(
    '{"\\u20ac":"Euro Sign","\\r":"Carriage Return","\\ufb33":"Hebrew Letter Dalet With Dagesh","1":"One",' +
      '"\\ud83d\\ude00":"Emoji: Grinning Face","\\u0080":"Control","\\u00f6":"Latin Small Letter O With Diaeresis"}',
  );
  const keys = Object.keys(JSON.parse(canonicalJson(input)));
  // JSON.parse puts the integer-like key "1" first; compare the serialized order instead.
  const order = [...canonicalJson(input).matchAll(/"([^"]*)":"[^"]*"/g)].map((m) => m[1]);
  assert.deepEqual(order, ["\\r", "1", "\u0080", "ö", "€", "😀", "\ufb33"]);
  assert.equal(keys.length, 7);
});

test("RFC 8785 Appendix B: number serialization", () => {
  const f64 = (hex: string) => Buffer.from(hex, "hex").readDoubleBE(0);
  const vectors: [string, string][] = [
    ["0000000000000000", "0"],
    ["8000000000000000", "0"],
    ["0000000000000001", "5e-324"],
    ["8000000000000001", "-5e-324"],
    ["7fefffffffffffff", "1.7976931348623157e+308"],
    ["ffefffffffffffff", "-1.7976931348623157e+308"],
    ["4340000000000000", "9007199254740992"],
    ["c340000000000000", "-9007199254740992"],
    ["4430000000000000", "295147905179352830000"],
    ["44b52d02c7e14af5", "9.999999999999997e+22"],
    ["44b52d02c7e14af6", "1e+23"],
    ["44b52d02c7e14af7", "1.0000000000000001e+23"],
    ["444b1ae4d6e2ef4e", "999999999999999700000"],
    ["444b1ae4d6e2ef4f", "999999999999999900000"],
    ["444b1ae4d6e2ef50", "1e+21"],
    ["3eb0c6f7a0b5ed8c", "9.999999999999997e-7"],
    ["3eb0c6f7a0b5ed8d", "0.000001"],
    ["41b3de4355555553", "333333333.3333332"],
    ["41b3de4355555554", "333333333.33333325"],
    ["41b3de4355555555", "333333333.3333333"],
    ["41b3de4355555556", "333333333.3333334"],
    ["41b3de4355555557", "333333333.33333343"],
    ["becbf647612f3696", "-0.0000033333333333333333"],
    ["43143ff3c1cb0959", "1424953923781206.2"],
  ];
  for (const [hex, want] of vectors) assert.equal(canonicalJson(f64(hex)), want, hex);
});

test("values JSON cannot represent are errors, not silently dropped", () => {
  assert.throws(() => canonicalJson(Number.NaN));
  assert.throws(() => canonicalJson(Number.POSITIVE_INFINITY));
  assert.throws(() => canonicalJson({ s: "\ud800" }), /surrogate/i);
  assert.throws(() => canonicalJson(undefined), /no JSON representation/);
  const cyc: Record<string, unknown> = {};
  cyc.self = cyc;
  assert.throws(() => canonicalJson(cyc), /Circular/);
  assert.equal(canonicalJson({ b: undefined, a: [undefined] }), '{"a":[null]}');
});

// The fast path of the verifier: a received text is accepted as canonical only when it is exactly canonicalJson.
const nonCanonical: [string, string][] = [
  ["whitespace", '{"a": 1}'],
  ["trailing newline", '{"a":1}\n'],
  ["key order", '{"b":1,"a":2}'],
  ["duplicate key", '{"a":1,"a":1}'],
  ["duplicate key, last wins", '{"a":2,"b":1,"a":1}'],
  ["number 1.0", '{"a":1.0}'],
  ["number 1e2", '{"a":1e2}'],
  ["number -0", '{"a":-0}'],
  ["number 0.10", '{"a":0.10}'],
  ["escape \\u0041", '{"a":"\\u0041"}'],
  ["escape \\/", '{"a":"\\/"}'],
  ["escape \\u000A", '{"a":"\\u000A"}'],
  ["lone surrogate", '{"a":"\\ud800"}'],
  ["integer-like keys in JS order", '{"9":1,"10":2}'],
  ["nested key order", '{"a":{"y":1,"x":2}}'],
  ["key order in an array's object", '[{"b":1,"a":2}]'],
];

test("isCanonicalText accepts what canonicalJson writes, and only that", () => {
  const values: unknown[] = [
    { a: 1, b: [true, false, null], c: { "": "empty key", "\u20ac": "euro", "😀": "emoji", "\r": "cr" } },
    { numbers: [333333333.3333333, 1e30, 4.5, 0.002, 1e-27, -0, 5e-324, 2 ** 53] },
    { s: "€$\u000f\nA'B\"\\/ \u2028 \u007f" },
    { "10": "ten", "9": "nine", "1": "one", a: { "2": [{ z: 0, y: 1 }] } },
    [],
    {},
    "just a string",
    12.5,
    null,
  ];
  for (const v of values) {
    const c = canonicalJson(v);
    assert.ok(isCanonicalText(c, JSON.parse(c)), c);
    // Whatever path it takes, the fast serializer agrees with the reference.
    assert.equal(canonicalJsonFast(JSON.parse(c)), c);
    assert.equal(canonicalJsonFast(v), c);
  }
  for (const [what, text] of nonCanonical) {
    assert.equal(isCanonicalText(text, JSON.parse(text)), false, what);
  }
  // Integer-like keys: JS enumerates "9" before "10", RFC 8785 sorts "10" first. The fast path defers to the
  // reference, which accepts the sorted text.
  assert.equal(fastCanonicalJson(JSON.parse('{"10":2,"9":1}')), undefined);
  assert.ok(isCanonicalText('{"10":2,"9":1}', JSON.parse('{"10":2,"9":1}')));
  // Values JSON.stringify writes differently from the reference never take the fast path.
  assert.equal(fastCanonicalJson({ s: "\ud800" }), undefined);
  assert.equal(fastCanonicalJson({ n: Number.NaN }), undefined);
  assert.equal(fastCanonicalJson({ d: new Date(0) }), undefined);
  assert.equal(fastCanonicalJson({ f: () => 1 }), undefined);
});

test("isCanonicalText on random values: true exactly when the text is canonicalJson (property test)", () => {
  let seed = 42;
  const rnd = () => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed / 0x7fffffff;
  };
  const keys = ["a", "b", "B", "aa", "", "10", "9", "1", "é", "€", "😀", "\u0000", "_", "z z"];
  const gen = (depth: number): unknown => {
    const r = rnd();
    if (depth > 3 || r < 0.3) {
      const p = rnd();
      if (p < 0.25) return Math.round((rnd() - 0.5) * 1e6) / (rnd() < 0.5 ? 1 : 1000);
      if (p < 0.35) return (rnd() - 0.5) * 10 ** Math.round((rnd() - 0.5) * 60);
      if (p < 0.7) return keys[Math.floor(rnd() * keys.length)]! + String.fromCharCode(Math.floor(rnd() * 0x3000));
      return [true, false, null][Math.floor(rnd() * 3)];
    }
    if (r < 0.55) return Array.from({ length: Math.floor(rnd() * 4) }, () => gen(depth + 1));
    const o: Record<string, unknown> = {};
    for (let i = Math.floor(rnd() * 5); i > 0; i--) o[keys[Math.floor(rnd() * keys.length)]!] = gen(depth + 1);
    return o;
  };
  for (let i = 0; i < 2000; i++) {
    const v = gen(0);
    const c = canonicalJson(v);
    assert.ok(isCanonicalText(c, JSON.parse(c)), c);
    // Insertion order (JSON.stringify) is canonical only when it happens to be sorted.
    const s = JSON.stringify(v);
    assert.equal(isCanonicalText(s, JSON.parse(s)), s === c, s);
    // With a space after the first colon, never.
    if (c.includes(":")) {
      const spaced = c.replace(":", ": ");
      assert.equal(isCanonicalText(spaced, JSON.parse(spaced)), false, spaced);
    }
  }
});
