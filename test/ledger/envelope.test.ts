import assert from "node:assert/strict";
import { test } from "node:test";
import { EnvelopeError, expandEnvelope, isParameterGroup, parameterGroups, sortGroups } from "../../proto/envelope.js";

test("parameterGroups lists every group in canonical order", () => {
  assert.deepEqual(parameterGroups(2), [
    "embeddings",
    "layers.0.attention",
    "layers.0.mlp",
    "layers.0.norms",
    "layers.1.attention",
    "layers.1.mlp",
    "layers.1.norms",
    "final_norm",
    "lm_head",
  ]);
  assert.ok(isParameterGroup("layers.1.mlp", 2));
  assert.ok(!isParameterGroup("layers.2.mlp", 2));
  assert.ok(!isParameterGroup("layers.01.mlp", 4));
});

test("expandEnvelope: top-level groups, half-open ranges, parts, single layers, open ends", () => {
  assert.deepEqual([...expandEnvelope(["embeddings", "lm_head"], 4)], ["embeddings", "lm_head"]);
  assert.deepEqual(sortGroups(expandEnvelope(["layers[2:4]"], 6), 6), [
    "layers.2.attention",
    "layers.2.mlp",
    "layers.2.norms",
    "layers.3.attention",
    "layers.3.mlp",
    "layers.3.norms",
  ]);
  assert.deepEqual([...expandEnvelope(["layers[1:3].mlp"], 4)], ["layers.1.mlp", "layers.2.mlp"]);
  assert.deepEqual([...expandEnvelope(["layers[3].attention"], 4)], ["layers.3.attention"]);
  assert.equal(expandEnvelope(["layers[:]"], 5).size, 15);
  assert.equal(expandEnvelope(["layers[2:]"], 5).size, 9);
  assert.deepEqual(
    [...expandEnvelope(["layers[:1].norms", "final_norm", " final_norm "], 5)],
    ["layers.0.norms", "final_norm"],
  );
});

test("expandEnvelope: clear errors naming the selector", () => {
  const cases: [string[], RegExp][] = [
    [[], /envelope: is empty/],
    [["layers"], /envelope\[0\] "layers": unknown selector/],
    [["embeddings", "layers[4:2]"], /envelope\[1\] "layers\[4:2\]": empty layer range 4:2/],
    [["layers[0:9]"], /range end 9 is past the last layer \(the model has 4\)/],
    [["layers[2:3].ffn"], /unknown layer part \.ffn/],
    [["layers[a:3]"], /range start "a" is not a non-negative integer/],
    [["layers[-1:3]"], /range start "-1"/],
    [["layers[1:2:1]"], /one ':'/],
    [["layers[7]"], /layer 7 does not exist/],
    [["lm-head"], /unknown selector/],
  ];
  for (const [spec, re] of cases) {
    assert.throws(
      () => expandEnvelope(spec, 4),
      (e: unknown) => e instanceof EnvelopeError && re.test(e.message),
      spec.join(),
    );
  }
  assert.throws(() => expandEnvelope(["embeddings"], -1), RangeError);
});
