/**
 * docs/architecture.md's layering, checked against the code's imports (test/helpers/import-graph.ts): no import
 * cycle between files (type-only imports included), and the contract folders import only what the map says.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { componentOf, fileCycles, folderGraph, importEdges } from "./helpers/import-graph.js";

const edges = importEdges();

test("the import graph reads the real source (a known edge is found)", () => {
  assert.ok(edges.some((e) => e.from === "ledger/verify.ts" && e.to === "ledger/verify-replay.ts" && !e.typeOnly));
  assert.ok(edges.length > 300, `${edges.length} edges`);
});

test("no file imports itself through others (type-only imports included)", () => {
  assert.deepEqual(fileCycles(edges), []);
});

test("proto/, trainer/model and trainer/checkpoint import nothing of ours; grader-sidecar/, ledger/, operator/ only proto/", () => {
  const g = folderGraph(edges);
  const allowed: Record<string, string[]> = {
    proto: [],
    "grader-sidecar": ["proto"],
    ledger: ["proto"],
    operator: ["proto"],
    "trainer/model": [],
    "trainer/checkpoint": [],
  };
  for (const [folder, ok] of Object.entries(allowed)) {
    const extra = [...(g.get(folder) ?? [])].filter((b) => !ok.includes(b));
    const where = edges.filter((e) => componentOf(e.from) === folder && extra.includes(componentOf(e.to)));
    assert.deepEqual(extra, [], `${folder} imports ${where.map((e) => `${e.from} → ${e.to}`).join(", ")}`);
  }
});
