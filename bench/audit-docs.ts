/**
 * The auditor's documents (run: npx tsx bench/audit-docs.ts [--model DIR] [--events N]):
 *  1. OpenSSF model signing of the SmolLM2-135M-Instruct directory (~540 MB of float32 safetensors, found as
 *     bench/smollm2-dir.ts finds it): manifest + sign, our verification, and the upstream `model_signing
 *     verify key` (.venv-model-test) on the same signature;
 *  2. `rft audit report --format html` of an N-event bundle (default 100,000; synthetic, as bench/ledger.ts
 *     makes them), the whole process (every check of `rft audit verify`, then the summary and the page), and the
 *     summary + page alone in process.
 */
import { spawnSync } from "node:child_process";
import { generateKeyPairSync } from "node:crypto";
import { createWriteStream, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { SummaryBuilder } from "../ledger/audit-summary.js";
import { exportBundle } from "../ledger/bundle.js";
import { bundleJsonlLines, writeLines } from "../ledger/bundle-file.js";
import { readBundleFile } from "../ledger/bundle-read.js";
import {
  compareManifest,
  fileManifest,
  modelStatement,
  openSigstoreBundle,
  signStatement,
} from "../ledger/model-signing.js";
import { reportHtml } from "../ledger/report-html.js";
import { generateKeyPair } from "../ledger/sign.js";
import { syntheticJob } from "../test/ledger/synthetic.js";
import { smollm2Dir } from "./smollm2-dir.js";

const arg = (name: string, dflt: number) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const TOTAL = arg("--events", 100_000);
const secs = (t0: number) => (performance.now() - t0) / 1000;
console.log(`audit-docs bench: node ${process.version}, ${cpus().length} CPUs, load ${loadavg()[0]!.toFixed(2)}`);

const work = mkdtempSync(join(tmpdir(), "rft-audit-docs-bench-"));
try {
  // 1. model signing
  const model = await smollm2Dir();
  const bytes = readdirSync(model).reduce((a, f) => a + statSync(join(model, f)).size, 0);
  const keys = generateKeyPairSync("ec", { namedCurve: "P-256" });
  writeFileSync(join(work, "pub.pem"), keys.publicKey.export({ format: "pem", type: "spki" }));
  let t = performance.now();
  const resources = await fileManifest(model);
  const sig = signStatement(modelStatement("smollm2", resources), keys.privateKey);
  const signS = secs(t);
  writeFileSync(join(work, "model.sig"), JSON.stringify(sig));
  t = performance.now();
  const opened = openSigstoreBundle(sig, keys.publicKey);
  if (!opened.ok || compareManifest(opened.statement, await fileManifest(model)).length)
    throw new Error("does not verify");
  const verifyS = secs(t);
  t = performance.now();
  const up = spawnSync(
    ".venv-model-test/bin/model_signing",
    ["verify", "key", model, "--signature", join(work, "model.sig"), "--public_key", join(work, "pub.pem")],
    { encoding: "utf8" },
  );
  const upS = secs(t);
  console.log(
    `1. model signing of ${model} (${resources.length} files, ${(bytes / 1e6).toFixed(0)} MB): sign ${signS.toFixed(2)} s (${(bytes / 1e6 / signS).toFixed(0)} MB/s), verify ${verifyS.toFixed(2)} s; upstream model_signing verify key: ${up.status === 0 ? "accepted" : `REJECTED (${up.stderr.trim().slice(-200)})`} in ${upS.toFixed(2)} s (process, Python start included)`,
  );

  // 2. the report of a TOTAL-event bundle
  const rowsPerAuthority = 500;
  const steps = Math.ceil((TOTAL - 2 * rowsPerAuthority - 3) / 1.01) + 2;
  const job = syntheticJob({
    job: "bench/run-1",
    numLayers: 4,
    rowsPerAuthority,
    steps,
    rowsPerStep: 8,
    checkpointEvery: 100,
  });
  const events = job.events.slice(0, TOTAL);
  const file = join(work, "bundle.jsonl");
  const out = createWriteStream(file);
  await writeLines(out, bundleJsonlLines(exportBundle(events, generateKeyPair().privateKey)));
  await new Promise<void>((r) => out.end(() => r()));
  t = performance.now();
  const b = new SummaryBuilder({ merkle: false });
  const { merkleRoot } = await readBundleFile(
    file,
    () => {},
    (ev) => b.add(ev),
  );
  const summary = b.finish(merkleRoot ?? undefined);
  const html = reportHtml(
    summary,
    {
      ok: true,
      job: summary.job,
      events: summary.events,
      steps: summary.steps.length,
      rows: { admitted: 0, rejected: 0 },
      authorities: [],
      unattributed: null,
      finished: true,
      resumes: [],
      treeHead: null,
      failures: [],
      notes: [],
    },
    {
      generatedAt: new Date().toISOString(),
      ran: { model: false, dataset: false, modelSignature: false, provenance: false },
    },
  );
  const inProc = secs(t);
  t = performance.now();
  const r = spawnSync(
    process.execPath,
    ["--import", "tsx", "cli/rft.ts", "audit", "report", file, "--format", "html"],
    {
      encoding: "utf8",
      maxBuffer: 256 << 20,
    },
  );
  const whole = secs(t);
  if (r.status !== 0) throw new Error(`rft audit report failed: ${r.stderr.slice(-500)}`);
  console.log(
    `2. rft audit report --format html of a ${events.length.toLocaleString("en-US")}-event bundle (${(statSync(file).size / 1e6).toFixed(0)} MB JSONL): ${whole.toFixed(2)} s for the whole process (tsx start, every verify check, summary, page of ${(r.stdout.length / 1e3).toFixed(0)} kB); summary + page alone ${inProc.toFixed(2)} s (${(html.length / 1e3).toFixed(0)} kB)`,
  );
} finally {
  rmSync(work, { recursive: true, force: true });
}
