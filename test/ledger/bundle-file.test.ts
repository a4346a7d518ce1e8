/** Bundle files in both forms (JSON document, streamed JSONL): content detection, equivalence, and tampering. */
import assert from "node:assert/strict";
import { createWriteStream, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { exportBundle } from "../../ledger/bundle.js";
import {
  BUNDLE_JSONL_FORMAT,
  BundleFileError,
  bundleJsonlLines,
  bundleJsonText,
  verifyBundleFile,
  writeLines,
} from "../../ledger/bundle-file.js";
import { encodeEvent } from "../../ledger/chain.js";
import { readEventsFile } from "../../ledger/publisher.js";
import { generateKeyPair } from "../../ledger/sign.js";
import { formatReport, verifyBundle } from "../../ledger/verify.js";
import { syntheticJob } from "./synthetic.js";

const tmp = mkdtempSync(join(tmpdir(), "rft-bundle-file-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

const job = syntheticJob({ steps: 6 });
const bundle = exportBundle(job.events, generateKeyPair().privateKey, Date.parse("2026-03-02T00:00:00Z"));
const jsonlText = [...bundleJsonlLines(bundle)].map((l) => l.toString()).join("");
const lines = jsonlText.split("\n").slice(0, -1);
const write = (name: string, text: string) => {
  const p = join(tmp, name);
  writeFileSync(p, text);
  return p;
};
const opts = { modelDigests: job.finalModel, datasetRows: job.dataset };

test("the JSONL form: a header, one canonical event per line, a trailer", async () => {
  assert.equal(lines.length, bundle.events.length + 2);
  const header = JSON.parse(lines[0]!);
  assert.equal(header.format, BUNDLE_JSONL_FORMAT);
  assert.equal(header.events, bundle.events.length);
  assert.deepEqual(header.manifest, bundle.manifest);
  bundle.events.forEach((ev, i) => assert.equal(lines[i + 1], encodeEvent(ev).bytes.toString()));
  assert.deepEqual(JSON.parse(lines.at(-1)!), { merkleRoot: bundle.merkleRoot, treeHead: bundle.treeHead });
  // writeLines to a file gives the same bytes.
  const p = join(tmp, "written.jsonl");
  const out = createWriteStream(p);
  await writeLines(out, bundleJsonlLines(bundle), 1000);
  await new Promise<void>((r) => out.end(() => r()));
  assert.equal(readFileSync(p, "utf8"), jsonlText);
});

test("both forms verify to the same report as the bundle object, told apart by content", async () => {
  const want = verifyBundle(bundle, opts);
  assert.ok(want.ok, formatReport(want));
  for (const [name, text] of [
    ["b.jsonl", jsonlText],
    ["b.json", `${bundleJsonText(bundle)}\n`],
    ["pretty.json", JSON.stringify(bundle, null, 2)],
    ["jsonl-named.json", jsonlText],
  ] as const) {
    const got = await verifyBundleFile(write(name, text), opts);
    assert.deepEqual(got, want, name);
  }
  assert.deepEqual(JSON.parse(bundleJsonText(bundle)), JSON.parse(JSON.stringify(bundle)));
});

test("JSONL tampering is named: a flipped byte, a dropped line, a cut trailer, garbage, reordering", async () => {
  // A digest in event 5's body flipped: its signature.
  const flipped = [...lines];
  const at = flipped[6]!.indexOf("sha256:") + 12;
  flipped[6] = flipped[6]!.slice(0, at) + (flipped[6]![at] === "0" ? "1" : "0") + flipped[6]!.slice(at + 1);
  let r = await verifyBundleFile(write("flipped.jsonl", `${flipped.join("\n")}\n`));
  assert.deepEqual([r.failures[0]!.check, r.failures[0]!.seq, r.failures[0]!.field], ["signature", 5, "sig"]);

  // Event 5 dropped: the header's count, the chain gap, the tree head.
  const dropped = lines.filter((_, i) => i !== 6);
  r = await verifyBundleFile(write("dropped.jsonl", `${dropped.join("\n")}\n`));
  assert.ok(
    r.failures.some((f) => f.check === "bundle" && f.field === "events"),
    formatReport(r),
  );
  assert.ok(r.failures.some((f) => f.check === "chain" && f.seq === 6 && /gap/.test(f.reason)));
  assert.ok(r.failures.some((f) => f.check === "tree-head" && f.field === "treeHead.size"));

  // The file cut short: no trailer.
  r = await verifyBundleFile(write("cut.jsonl", `${lines.slice(0, -1).join("\n")}\n`));
  assert.ok(
    r.failures.some((f) => f.check === "bundle" && f.field === "trailer"),
    formatReport(r),
  );
  assert.ok(!r.ok);

  // A line that is not JSON, in place of event 3.
  const garbage = [...lines];
  garbage[4] = "{garbage";
  r = await verifyBundleFile(write("garbage.jsonl", `${garbage.join("\n")}\n`));
  assert.deepEqual(
    [r.failures[0]!.check, r.failures[0]!.field, r.failures[0]!.reason],
    ["bundle", "line 5", "not JSON"],
  );
  assert.ok(r.failures.some((f) => f.check === "chain" && f.seq === 4));

  // Two events swapped.
  const swapped = [...lines];
  [swapped[9], swapped[10]] = [swapped[10]!, swapped[9]!];
  r = await verifyBundleFile(write("swapped.jsonl", `${swapped.join("\n")}\n`));
  assert.ok(r.failures.some((f) => f.check === "chain" && f.seq === 9 && /seq 9 follows seq 7/.test(f.reason)));

  // An event line that is not canonical but the same event: verified over its canonical form, with a note.
  const spaced = [...lines];
  spaced[3] = JSON.stringify(JSON.parse(spaced[3]!), null, 1).replaceAll("\n", "");
  r = await verifyBundleFile(write("spaced.jsonl", `${spaced.join("\n")}\n`));
  assert.ok(r.ok, formatReport(r));
  assert.ok(r.notes.some((n) => /1 event lines are not in canonical form/.test(n)));
});

test("the streamed verifier finds the same failures, in the same order, as the whole-bundle one", async () => {
  // Failures of every phase at once: a signature (event 4's body altered), the job (event 6 claims another job),
  // the Merkle root and tree head, and the replay (the final model digest, a step without contributions).
  const events = structuredClone(bundle.events);
  const e4 = events[4]! as { body: Record<string, unknown> };
  e4.body = { ...e4.body, reason: "altered" };
  (events[6] as { job: string }).job = "team-b/other";
  const upd = events.find((e) => e.type === "update.applied")!;
  const w = Object.values(upd.body.weights)[0]!;
  w.after = w.before.replace(/.$/, (c) => (c === "0" ? "1" : "0"));
  const tampered = { ...bundle, events };
  const want = verifyBundle(tampered, opts);
  const checks = new Set(want.failures.map((f) => f.check));
  for (const c of ["signature", "chain", "merkle", "tree-head", "weights"]) assert.ok(checks.has(c as never), c);
  const jsonl = [...bundleJsonlLines(tampered)].map((l) => l.toString()).join("");
  for (const [name, text] of [
    ["t.jsonl", jsonl],
    ["t.json", `${bundleJsonText(tampered)}\n`],
  ] as const) {
    const got = await verifyBundleFile(write(name, text), opts);
    assert.deepEqual(got.failures, want.failures, name);
    assert.deepEqual(got, want, name);
  }
  // The cap on listed failures applies across phases in that same order.
  const capped = await verifyBundleFile(write("t2.jsonl", jsonl), { ...opts, maxFailures: 2 });
  assert.deepEqual(capped.failures, want.failures.slice(0, 2));
  assert.ok(capped.notes.includes(`${want.failures.length - 2} further failures not listed`), formatReport(capped));
});

test("a file that is neither form is a clear error", async () => {
  await assert.rejects(verifyBundleFile(write("nope.json", "{not json")), BundleFileError);
  await assert.rejects(verifyBundleFile(join(tmp, "missing.json")), /cannot read/);
  const r = await verifyBundleFile(write("other.json", '{"format":"something-else"}'));
  assert.equal(r.failures[0]!.check, "bundle");
});

test("readEventsFile (what export reads): a torn last line is ignored, a bad line elsewhere is named", () => {
  const evLines = bundle.events.slice(0, 3).map((e) => encodeEvent(e).bytes.toString());
  const torn = write("torn.jsonl", `${evLines.join("\n")}\n${evLines[0]!.slice(0, 50)}`);
  assert.equal(readEventsFile(torn).length, 3);
  const tornNl = write("torn-nl.jsonl", `${evLines.join("\n")}\n${evLines[0]!.slice(0, 50)}\n`);
  assert.equal(readEventsFile(tornNl).length, 3);
  const bad = write("bad.jsonl", `${evLines[0]}\n{oops\n${evLines[1]}\n`);
  assert.throws(() => readEventsFile(bad), /bad\.jsonl:2: not JSON/);
  assert.deepEqual(
    readEventsFile(write("ok.jsonl", `${evLines.join("\n")}\n`)),
    bundle.events.slice(0, 3).map((e) => JSON.parse(encodeEvent(e).bytes.toString())),
  );
});
