// The grader_name label is caller-controlled (issue 13: 5,000 names → 40 MB of /metrics and +280 MiB never
// freed). Only the first names seen get their own label value; the rest are counted under "other".
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { DEFAULT_MAX_GRADER_NAMES, GRADER_NAME_LABEL_MAX } from "../../grader-sidecar/src/metrics.js";
import { type GraderService, startGraderService } from "../../grader-sidecar/src/server.js";

let svc: GraderService;
before(async () => {
  svc = await startGraderService({});
});
after(() => svc.close());

const grader = (name: string) => ({
  type: "string_check",
  name,
  input: "{{ sample.output_text }}",
  reference: "a",
  operation: "eq",
});

const scrape = async () => (await fetch(`http://127.0.0.1:${svc.httpPort}/metrics`)).text();
const names = (text: string) =>
  new Set([...text.matchAll(/^rft_grader_requests_total\{[^}]*grader_name="([^"]*)"/gm)].map((m) => m[1]));

test("5,000 grader names give at most 32 label values plus other; every grade is still counted", async () => {
  assert.equal(DEFAULT_MAX_GRADER_NAMES, 32);
  for (let i = 0; i < 5000; i++) await svc.engine.run(grader(`name-${i}-${"x".repeat(200)}`), {}, { output_text: "a" });
  const text = await scrape();
  const seen = names(text);
  assert.equal(seen.size, DEFAULT_MAX_GRADER_NAMES + 1);
  assert.ok(seen.has("other"));
  assert.ok(
    [...seen].every((n) => n!.length <= GRADER_NAME_LABEL_MAX),
    "names are cut",
  );
  const total = [...text.matchAll(/^rft_grader_requests_total\{[^}]*\} (\d+)$/gm)].reduce(
    (n, m) => n + Number(m[1]),
    0,
  );
  assert.equal(total, 5000);
  const other = new RegExp(`^rft_grader_requests_total\\{[^}]*grader_name="other"[^}]*\\} (\\d+)$`, "m").exec(text);
  assert.equal(Number(other?.[1]), 5000 - DEFAULT_MAX_GRADER_NAMES);
  assert.ok(text.length < 200_000, `/metrics is ${text.length} bytes`);
  // A name that already has its label keeps it.
  await svc.engine.run(grader(`name-0-${"x".repeat(200)}`), {}, { output_text: "a" });
  assert.equal(names(await scrape()).size, DEFAULT_MAX_GRADER_NAMES + 1);
});

test("the cap is the service's option", async () => {
  const small = await startGraderService({ maxGraderNames: 2 });
  try {
    for (const n of ["a", "b", "c", "d"]) await small.engine.run(grader(n), {}, { output_text: "a" });
    const text = await (await fetch(`http://127.0.0.1:${small.httpPort}/metrics`)).text();
    assert.deepEqual([...names(text)].sort(), ["a", "b", "other"]);
  } finally {
    await small.close();
  }
});
