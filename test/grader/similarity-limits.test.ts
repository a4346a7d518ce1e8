// text_similarity cost bounds (issue 13): past a metric's limit the grader scores 0 with
// truncated_observation_error at once, instead of holding the event loop for seconds to minutes (rouge_l and
// fuzzy_match on 2 × 100 kB took 15–20 s). The test-level timeouts are not timing assertions: they only turn
// the old hangs into failures.
import assert from "node:assert/strict";
import { after, test } from "node:test";
import { GraderEngine } from "../../grader-sidecar/src/engine.js";
import type { LocalMetric } from "../../grader-sidecar/src/similarity/index.js";
import { DEFAULT_SIMILARITY_LIMITS, similarityOverLimit } from "../../grader-sidecar/src/similarity/limits.js";
import { SIMILARITY_METRICS } from "../../proto/graders.js";

const engine = new GraderEngine();
after(() => engine.close());

const METRICS = SIMILARITY_METRICS.filter((m): m is LocalMetric => m !== "cosine");
const words = (n: number) => Array.from({ length: n }, (_, i) => `w${i % 97}`).join(" ");
const MB = 1 << 20;

const grade = (metric: string, input: string, reference: string) =>
  engine.run(
    {
      type: "text_similarity",
      name: "sim",
      input: "{{ sample.output_text }}",
      reference: "{{ item.ref }}",
      evaluation_metric: metric,
    },
    { ref: reference },
    { output_text: input },
  );

test(
  "every local metric: a 1 MB input or reference scores 0 with truncated_observation_error",
  { timeout: 300_000 },
  async () => {
    const big = words(MB / 4).slice(0, MB);
    // Linear metrics first: on the unbounded code these return a score (a clean failure), not a hang.
    const order = [...METRICS].sort(
      (a, b) =>
        Number(a === "rouge_l" || a === "fuzzy_match" || a === "meteor") -
        Number(b === "rouge_l" || b === "fuzzy_match" || b === "meteor"),
    );
    for (const metric of order) {
      for (const [input, reference] of [
        [big, big],
        ["short answer", big],
        [big, "short reference"],
      ] as const) {
        const res = await grade(metric, input, reference);
        assert.equal(res.reward, 0, metric);
        assert.equal(res.metadata.errors.truncated_observation_error, true, metric);
        assert.equal(res.metadata.errors.other_error, false, metric);
      }
    }
  },
);

test("within the limits the metrics score as before", async () => {
  for (const metric of METRICS) {
    const max = DEFAULT_SIMILARITY_LIMITS.maxChars[metric];
    const text = "the quick brown fox ".repeat(Math.floor(max / 20)).slice(0, max);
    assert.equal(text.length, max);
    const res = await grade(metric, text, text);
    assert.equal(res.metadata.errors.truncated_observation_error, false, metric);
    assert.ok(res.reward > 0.9, `${metric}: ${res.reward}`);
    assert.equal(similarityOverLimit(metric, `${text}x`, text)?.includes("the limit is"), true, metric);
  }
});

test("fuzzy_match: partial_ratio's cost (shorter² × longer) is bounded", { timeout: 300_000 }, async () => {
  // 2,000 characters within 10,000 (both under the length limit; ratio ≥ 1.5 → partial_ratio):
  // 2000² × 10000 = 4e10 > 4e9. This pair alone took many seconds unbounded.
  const alpha = (n: number, seed: number) => {
    let a = seed;
    let s = "";
    for (let i = 0; i < n; i++) {
      a = (a * 1103515245 + 12345) >>> 0;
      s += "ab"[(a >>> 16) & 1];
    }
    return s;
  };
  const needle = alpha(2000, 1);
  const hay = alpha(10_000, 2);
  assert.match(similarityOverLimit("fuzzy_match", needle, hay) ?? "", /2000² × 10000 > 4000000000/);
  const res = await grade("fuzzy_match", needle, hay);
  assert.equal(res.metadata.errors.truncated_observation_error, true);
  // Similar lengths (no partial_ratio) may be long; a short needle in a long text is fine too.
  assert.equal(similarityOverLimit("fuzzy_match", alpha(10_000, 3), alpha(9_000, 4)), null);
  assert.equal(similarityOverLimit("fuzzy_match", "needle", hay), null);
  const ok = await grade("fuzzy_match", "abba", hay);
  assert.equal(ok.metadata.errors.truncated_observation_error, false);
  assert.ok(ok.reward > 0);
  // Code points, as the metric counts them: 10,000 emoji are 20,000 UTF-16 units and within the limit.
  assert.equal(similarityOverLimit("fuzzy_match", "😀".repeat(10_000), "😀".repeat(10_000)), null);
  assert.match(similarityOverLimit("fuzzy_match", "😀".repeat(10_001), "x") ?? "", /input is 10001 characters/);
});

test("the limits are the engine's option", async () => {
  const strict = new GraderEngine({
    similarityLimits: { ...DEFAULT_SIMILARITY_LIMITS, maxChars: { ...DEFAULT_SIMILARITY_LIMITS.maxChars, bleu: 5 } },
  });
  try {
    const res = await strict.run(
      {
        type: "text_similarity",
        name: "s",
        input: "{{ sample.output_text }}",
        reference: "abcdef",
        evaluation_metric: "bleu",
      },
      {},
      { output_text: "abc" },
    );
    assert.equal(res.metadata.errors.truncated_observation_error, true);
  } finally {
    await strict.close();
  }
});
