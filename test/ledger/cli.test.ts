/** `rft keys generate`, `rft audit export DIR`, `rft audit verify` as a user runs them (real processes). */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { FileSink } from "../../ledger/publisher.js";
import { loadPrivateKey } from "../../ledger/sign.js";
import { syntheticJob } from "./synthetic.js";

const tmp = mkdtempSync(join(tmpdir(), "rft-audit-cli-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

function rft(...args: string[]) {
  const r = spawnSync(process.execPath, ["--import", "tsx", "cli/rft.ts", ...args], {
    encoding: "utf8",
    env: { ...process.env, RFT_LOG_LEVEL: "silent" },
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test("keys generate, audit export of a local run, audit verify (pass, then each failure named)", () => {
  const k = rft("keys", "generate", "--out", join(tmp, "ledger"));
  assert.equal(k.code, 0, k.stderr);
  assert.match(k.stdout, /key id [0-9a-f]{64}/);
  const key = loadPrivateKey(readFileSync(join(tmp, "ledger.key"), "utf8"));
  assert.equal(key.asymmetricKeyType, "ed25519");
  assert.equal(rft("keys", "generate", "--out", join(tmp, "ledger")).code, 2, "no silent overwrite");

  // A local run (no NATS) writes its events to RUN/ledger/events.jsonl.
  const run = join(tmp, "run");
  const job = syntheticJob({ steps: 4, sink: new FileSink(join(run, "ledger", "events.jsonl")) });
  const exp = rft("audit", "export", run, "--key", join(tmp, "ledger.key"));
  assert.equal(exp.code, 0, exp.stderr);
  const bundlePath = join(tmp, "bundle.json");
  writeFileSync(bundlePath, exp.stdout);
  writeFileSync(join(tmp, "model.json"), JSON.stringify(job.finalModel));
  writeFileSync(join(tmp, "data.jsonl"), job.dataset.map((r) => JSON.stringify(r)).join("\n"));

  const ok = rft(
    "audit",
    "verify",
    bundlePath,
    "--model-digests",
    join(tmp, "model.json"),
    "--dataset",
    join(tmp, "data.jsonl"),
  );
  assert.equal(ok.code, 0, ok.stdout + ok.stderr);
  assert.match(ok.stdout, /VERIFIED/);
  assert.match(
    ok.stdout,
    /authority clinic-a \(lawful basis: GDPR Art\. 9\(2\)\(j\) research\)\n {4}envelope: layers\[2:4\]\n {4}rows admitted: 6, rejected: 1/,
  );

  // One weight of the final model changed: its group's digest differs.
  writeFileSync(join(tmp, "model2.json"), JSON.stringify({ ...job.finalModel, lm_head: `sha256:${"0".repeat(64)}` }));
  const bad = rft("audit", "verify", bundlePath, "--model-digests", join(tmp, "model2.json"));
  assert.equal(bad.code, 1);
  assert.match(
    bad.stderr,
    /FAILED check final-model at event seq \d+ body\.model\.lm_head: the model on disk differs from the ledger in group lm_head/,
  );

  // A byte flipped in the bundle file.
  const text = readFileSync(bundlePath, "utf8");
  const at = text.indexOf("ckpt-step-1");
  writeFileSync(join(tmp, "flipped.json"), text.slice(0, at) + "X" + text.slice(at + 1));
  const flipped = rft("audit", "verify", join(tmp, "flipped.json"));
  assert.equal(flipped.code, 1);
  assert.match(flipped.stderr, /FAILED check signature at event seq \d+ sig/);

  // The streamed form for long jobs: same checks, same report.
  const jsonl = rft("audit", "export", run, "--key", join(tmp, "ledger.key"), "--format", "jsonl");
  assert.equal(jsonl.code, 0, jsonl.stderr);
  assert.match(jsonl.stdout.split("\n")[0]!, /"format":"rft-provenance-bundle-jsonl\/1"/);
  writeFileSync(join(tmp, "bundle.jsonl"), jsonl.stdout);
  const okl = rft("audit", "verify", join(tmp, "bundle.jsonl"), "--model-digests", join(tmp, "model.json"));
  assert.equal(okl.code, 0, okl.stdout + okl.stderr);
  assert.match(okl.stdout, /VERIFIED/);
  assert.match(okl.stdout, /rows admitted: 6, rejected: 1/);

  assert.equal(rft("audit", "export", run).code, 2, "a local export needs --key");
  assert.equal(rft("audit", "export", run, "--key", join(tmp, "ledger.key"), "--format", "xml").code, 2);
  const notJson = rft("audit", "verify", join(tmp, "model.json").replace("model.json", "data.jsonl"));
  assert.equal(notJson.code, 2);
  assert.match(notJson.stderr, /rft audit verify: bundle: .* is not JSON/);
});
