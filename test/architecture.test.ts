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

test("the trainer reaches ledger/ only through ledger/client.ts, and grader-sidecar/ only through src/client.ts", () => {
  const entry: Record<string, string> = {
    ledger: "ledger/client.ts",
    "grader-sidecar": "grader-sidecar/src/client.ts",
  };
  for (const [folder, file] of Object.entries(entry)) {
    const around = edges.filter(
      (e) => componentOf(e.from).startsWith("trainer/") && componentOf(e.to) === folder && e.to !== file,
    );
    assert.deepEqual(
      around.map((e) => `${e.from} → ${e.to}`),
      [],
      `the trainer imports ${folder}/ around ${file}`,
    );
  }
  // The check reads real edges: the trainer does import both entries.
  for (const file of Object.values(entry)) assert.ok(edges.some((e) => e.from.startsWith("trainer/") && e.to === file));
});

test("the trainer's folders import each other without cycles (trainer/rl never imports trainer/job)", () => {
  const g = folderGraph(edges);
  const trainer = [...g.keys()].filter((f) => f.startsWith("trainer/"));
  // A folder-level cycle is a path from a folder back to itself.
  const reaches = (from: string, to: string, seen = new Set<string>()): boolean =>
    [...(g.get(from) ?? [])].some((b) => b === to || (!seen.has(b) && (seen.add(b), reaches(b, to, seen))));
  const cyclic = trainer.filter((f) => reaches(f, f));
  assert.deepEqual(cyclic, [], `trainer folders on an import cycle: ${cyclic.join(", ")}`);
  assert.ok(g.get("trainer/job")?.has("trainer/rl"), "trainer/job runs the loop (the edge the check is about)");
});
