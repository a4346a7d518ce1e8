/** Reading a bundle file as a stream of events (for the documents): both forms, and a document laid out otherwise. */
import assert from "node:assert/strict";
import { createWriteStream, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { summarize, SummaryBuilder } from "../../ledger/audit-summary.js";
import { exportBundle } from "../../ledger/bundle.js";
import { bundleJsonlLines, bundleJsonText, writeLines } from "../../ledger/bundle-file.js";
import { readBundleFile, readBundleHead } from "../../ledger/bundle-read.js";
import { generateKeyPair } from "../../ledger/sign.js";
import type { LedgerEvent } from "../../proto/ledger-events.js";
import { syntheticJob } from "./synthetic.js";

test("JSONL, the exported JSON document and a document with its events first read as the same events", async () => {
  const job = syntheticJob({ job: "team-a/read-1", steps: 6 });
  const bundle = exportBundle(job.events, generateKeyPair().privateKey);
  const dir = mkdtempSync(join(tmpdir(), "rft-bundle-read-"));
  const files = { jsonl: join(dir, "b.jsonl"), json: join(dir, "b.json"), odd: join(dir, "odd.json") };
  const out = createWriteStream(files.jsonl);
  await writeLines(out, bundleJsonlLines(bundle));
  await new Promise<void>((r) => out.end(() => r()));
  writeFileSync(files.json, bundleJsonText(bundle));
  const { events, ...rest } = bundle;
  writeFileSync(files.odd, JSON.stringify({ events, ...rest })); // not streamable: parsed whole
  const want = summarize(job.events);
  for (const [form, path] of Object.entries(files)) {
    const seen: LedgerEvent[] = [];
    let job_ = "";
    const b = new SummaryBuilder({ merkle: false });
    const { merkleRoot } = await readBundleFile(
      path,
      (h) => (job_ = h.job),
      (ev) => {
        seen.push(ev);
        b.add(ev);
      },
    );
    assert.equal(job_, "team-a/read-1", form);
    assert.deepEqual(seen, job.events, form);
    assert.equal(merkleRoot, bundle.merkleRoot, form);
    // The bundle's root (which the verifier checks) is the one the summary computes from the events.
    assert.deepEqual(b.finish(merkleRoot ?? undefined), want, form);
    assert.equal((await readBundleHead(path)).model.final?.lm_head, bundle.model.final?.lm_head, form);
  }
  // The synthetic job's authorities, as the documents show them.
  const clinic = want.authorities.find((a) => a.name === "clinic-a")!;
  assert.ok(clinic.admitted > 0 && clinic.rejected === 1);
  assert.ok(want.rejections.some((r) => r.code === "bad_credential" && r.authority === "clinic-a"));
});
