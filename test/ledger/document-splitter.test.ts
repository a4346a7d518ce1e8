/** DocumentSplitter: a JSON bundle document split into its events as bytes arrive, or declared irregular. */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { exportBundle } from "../../ledger/bundle.js";
import { bundleJsonText, verifyBundleFile } from "../../ledger/bundle-file.js";
import { DocumentSplitter } from "../../ledger/document-splitter.js";
import { generateKeyPair } from "../../ledger/sign.js";
import { verifyBundle } from "../../ledger/verify.js";
import { syntheticJob } from "./synthetic.js";

const tmp = mkdtempSync(join(tmpdir(), "rft-doc-split-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

/** Splits `text` fed in pieces of `size` bytes; returns the parsed elements and the trailer (null: irregular). */
function split(text: string, size: number) {
  const bytes = Buffer.from(text, "utf8");
  const s = new DocumentSplitter();
  const elements: unknown[] = [];
  for (let i = 0; i < bytes.length; i += size) {
    for (const el of s.push(bytes.subarray(i, i + size))) elements.push(JSON.parse(el.toString("utf8")));
  }
  return { elements, trailer: s.end(), header: s.header, irregular: s.irregular };
}

const tricky = {
  format: "x",
  job: 'a "quoted" \\ job, with ] and } and [ and {',
  keys: { nested: [1, [2, [3]], { "]": "[" }] },
  events: [
    { s: 'comma, bracket ] brace } quote " backslash \\', n: [1, 2, { x: [] }], u: "é ∑ 😀" },
    [],
    "a string element",
    42,
    null,
    { "\\": "\\\\", e: "\u0000\u001f" },
  ],
  merkleRoot: "r",
  treeHead: { size: 1 },
};

test("the elements come out exactly as JSON.parse sees them, whatever the chunk boundaries", () => {
  for (const text of [JSON.stringify(tricky), JSON.stringify(tricky, null, 2), JSON.stringify(tricky, null, "\t")]) {
    for (const size of [1, 2, 3, 7, 64, 1 << 20]) {
      const r = split(text, size);
      assert.equal(r.irregular, null, `size ${size}`);
      assert.deepEqual(r.elements, tricky.events, `size ${size}`);
      assert.deepEqual(r.trailer, { merkleRoot: "r", treeHead: { size: 1 } });
      assert.deepEqual(r.header, { format: "x", job: tricky.job, keys: tricky.keys });
    }
  }
  const empty = split('{"format":"x","events":[],"merkleRoot":"r"}', 5);
  assert.deepEqual([empty.elements, empty.irregular, empty.trailer?.merkleRoot], [[], null, "r"]);
});

test("layouts it cannot stream are declared irregular, with the reason", () => {
  const cases: [string, RegExp][] = [
    ['{"events":[1],"format":"x"}', /member "format" after the events array/],
    ['{"format":"x","ev\\u0065nts":[1]}', /escapes/],
    ['{"format":"x","events":[1],"events":[2]}', /"events" twice/],
    ['{"format":"x","keys":1,"events":[1],"keys":2}', /member "keys" after the events array/],
    ['{"format":"x","events":[1]} trailing', /text after the document/],
    ['{"format":"x","events":[1,,2]}', /empty element/],
    ['{"format":"x","events":[1,]}', /empty element/],
    ['{"format":"x","events":null}', /not an array/],
    ['["format"]', /not an object/],
    ['{"format":"x","events":[1]', /ends early/],
    ['{"format":"x"}', /no "events" array/],
    ['{"format":x,"events":[1]}', /before "events" are not JSON/],
  ];
  for (const [text, why] of cases) {
    const r = split(text, 3);
    assert.equal(r.trailer, null, text);
    assert.match(r.irregular ?? "", why, text);
  }
});

test("a JSON document verifies the same whether it streams or has to be parsed whole", async () => {
  const job = syntheticJob({ steps: 4 });
  const bundle = exportBundle(job.events, generateKeyPair().privateKey, Date.parse("2026-03-02T00:00:00Z"));
  const opts = { modelDigests: job.finalModel, datasetRows: job.dataset };
  const want = verifyBundle(bundle, opts);
  assert.ok(want.ok);
  const { events, ...rest } = bundle;
  const layouts: Record<string, string> = {
    "streamed.json": bundleJsonText(bundle),
    // Events first (e.g. a tool that sorts keys): parsed whole, same report.
    "events-first.json": JSON.stringify({ events, ...rest }),
    // A field repeated after the events: JSON.parse keeps the last, and so must the verifier.
    "repeated.json": `${bundleJsonText(bundle).slice(0, -1)},"job":"someone/else"}`,
  };
  for (const [name, text] of Object.entries(layouts)) {
    const p = join(tmp, name);
    writeFileSync(p, text);
    const got = await verifyBundleFile(p, opts);
    const ref = verifyBundle(JSON.parse(text), opts);
    assert.deepEqual(got, ref, name);
    if (name !== "repeated.json") assert.deepEqual(got, want, name);
    else assert.equal(got.job, "someone/else");
  }
  // An element that is not JSON makes the whole document invalid, as a whole parse says.
  const broken = join(tmp, "broken.json");
  writeFileSync(broken, bundleJsonText(bundle).replace('{"body"', '{body"'));
  await assert.rejects(verifyBundleFile(broken, opts), /is not JSON/);
});
