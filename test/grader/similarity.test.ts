// text_similarity metrics agree with the Python reference implementations to 1e-6 on every pair
// of test/fixtures/similarity.json (regenerate it with test/reference/make-similarity-fixture.sh).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { type LocalMetric, textSimilarity } from "../../grader-sidecar/src/similarity/index.js";
import { countNgrams, internPair, overlap } from "../../grader-sidecar/src/similarity/ngrams.js";
import { porterStem } from "../../grader-sidecar/src/similarity/porter.js";

interface Fixture {
  versions: Record<string, string>;
  metrics: LocalMetric[];
  cases: Array<{ input: string; reference: string; scores: Record<LocalMetric, number> }>;
}

const fixture = JSON.parse(readFileSync(new URL("../fixtures/similarity.json", import.meta.url), "utf8")) as Fixture;
const TOLERANCE = 1e-6;

test("fixture covers every local metric and several hundred pairs", () => {
  assert.deepEqual([...fixture.metrics].sort(), [
    "bleu",
    "fuzzy_match",
    "gleu",
    "meteor",
    "rouge_1",
    "rouge_2",
    "rouge_3",
    "rouge_4",
    "rouge_5",
    "rouge_l",
  ]);
  assert.ok(fixture.cases.length >= 300, `only ${fixture.cases.length} cases`);
});

for (const metric of fixture.metrics) {
  test(`${metric} matches the Python reference to ${TOLERANCE}`, () => {
    const failures: string[] = [];
    for (const [i, c] of fixture.cases.entries()) {
      const expected = c.scores[metric];
      const actual = textSimilarity(metric, c.input, c.reference);
      if (!(Math.abs(actual - expected) <= TOLERANCE)) {
        failures.push(
          `#${i} input=${JSON.stringify(c.input)} reference=${JSON.stringify(c.reference)}: ts=${actual} python=${expected}`,
        );
      }
    }
    assert.equal(
      failures.length,
      0,
      `${failures.length} of ${fixture.cases.length} pairs differ:\n${failures.slice(0, 15).join("\n")}`,
    );
  });
}

test("scores stay within 0..1", () => {
  for (const c of fixture.cases) {
    for (const metric of fixture.metrics) {
      const v = textSimilarity(metric, c.input, c.reference);
      assert.ok(v >= 0 && v <= 1, `${metric} ${v}`);
    }
  }
});

test("porter stemmer: NLTK_EXTENSIONS spot checks", () => {
  const cases: Array<[string, string]> = [
    ["caresses", "caress"],
    ["ponies", "poni"],
    ["ties", "tie"],
    ["skies", "sky"],
    ["dying", "die"],
    ["hopping", "hop"],
    ["agreed", "agre"],
    ["generalizations", "gener"],
    ["relational", "relat"],
    ["happily", "happili"],
    ["news", "news"],
    ["a", "a"],
  ];
  for (const [word, stem] of cases) assert.equal(porterStem(word), stem, word);
});

test("n-gram keys: string fallback counts like the numeric keys", () => {
  const a = "a b c a b c d e a b".split(" ");
  const b = "b c a b c d d e a".split(" ");
  const ids = internPair(a, b);
  for (let n = 1; n <= 5; n++) {
    const numeric = overlap(countNgrams(ids.a, ids.base, n), countNgrams(ids.b, ids.base, n));
    // a base this large makes base^n exceed 2^53, which forces string keys
    const big = 1e6;
    const fallback = overlap(countNgrams(ids.a, big, n), countNgrams(ids.b, big, n));
    assert.equal(fallback, numeric, `n=${n}`);
  }
});
