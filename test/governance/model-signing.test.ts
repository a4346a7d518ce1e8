/**
 * OpenSSF model signing: our signatures checked by the upstream verifier (`model_signing verify key`, the
 * model-signing PyPI package in .venv-model-test, installed by scripts/setup.d/20-model-test-python.sh), which
 * must accept them and reject them after one byte of the model changes, or under another key.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { generateKeyPairSync } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import {
  compareBinding,
  compareManifest,
  compareProvenance,
  fileManifest,
  modelStatement,
  openSigstoreBundle,
  provenanceStatement,
  signStatement,
} from "../../ledger/model-signing.js";

const MODEL_SIGNING = ".venv-model-test/bin/model_signing";

function upstreamVerify(model: string, sig: string, pub: string) {
  const r = spawnSync(MODEL_SIGNING, ["verify", "key", model, "--signature", sig, "--public_key", pub], {
    encoding: "utf8",
  });
  assert.ok(
    !r.error,
    `${MODEL_SIGNING} did not run (bash scripts/setup.d/20-model-test-python.sh installs it): ${r.error}`,
  );
  return r;
}

function modelDir() {
  const dir = mkdtempSync(join(tmpdir(), "rft-msig-"));
  const model = join(dir, "model");
  mkdirSync(join(model, "tokenizer"), { recursive: true });
  writeFileSync(join(model, "config.json"), '{"num_hidden_layers": 2}\n');
  writeFileSync(join(model, "model.safetensors"), Buffer.from(Array.from({ length: 5000 }, (_, i) => i % 251)));
  writeFileSync(join(model, "tokenizer", "tokenizer.json"), "{}");
  const keys = generateKeyPairSync("ec", { namedCurve: "P-256" });
  writeFileSync(join(dir, "pub.pem"), keys.publicKey.export({ format: "pem", type: "spki" }));
  return { dir, model, keys };
}

test("model_signing verifies our signature, and rejects it after one byte changes or under another key", async () => {
  const { dir, model, keys } = modelDir();
  const resources = await fileManifest(model);
  assert.deepEqual(
    resources.map((r) => r.name),
    ["config.json", "model.safetensors", "tokenizer/tokenizer.json"],
  );
  const st = modelStatement("model", resources, { job: "local/x", specDigest: null, final: { lm_head: "sha256:00" } });
  const sig = join(dir, "model.sig");
  writeFileSync(sig, JSON.stringify(signStatement(st, keys.privateKey)));

  const ok = upstreamVerify(model, sig, join(dir, "pub.pem"));
  assert.equal(ok.status, 0, ok.stdout + ok.stderr);
  assert.match(ok.stdout + ok.stderr, /Verification succeeded/);
  // Our own check agrees.
  const opened = openSigstoreBundle(JSON.parse(readFileSync(sig, "utf8")), keys.publicKey);
  assert.ok(opened.ok);
  assert.deepEqual(compareManifest(opened.statement, await fileManifest(model)), []);

  // Another key: refused by both.
  const other = generateKeyPairSync("ec", { namedCurve: "P-256" });
  writeFileSync(join(dir, "other.pem"), other.publicKey.export({ format: "pem", type: "spki" }));
  assert.notEqual(upstreamVerify(model, sig, join(dir, "other.pem")).status, 0);
  assert.equal(openSigstoreBundle(JSON.parse(readFileSync(sig, "utf8")), other.publicKey).ok, false);

  // One byte of the weights changes: refused by both, naming the file.
  const w = join(model, "model.safetensors");
  const bytes = readFileSync(w);
  bytes[1234] ^= 1;
  writeFileSync(w, bytes);
  const bad = upstreamVerify(model, sig, join(dir, "pub.pem"));
  assert.notEqual(bad.status, 0, bad.stdout + bad.stderr);
  assert.match(bad.stdout + bad.stderr, /model\.safetensors/);
  const diff = compareManifest(opened.statement, await fileManifest(model));
  assert.deepEqual(
    diff.map((d) => d.field),
    ["resources.model.safetensors"],
  );
});

test("a tampered payload or an extra file is refused", async () => {
  const { dir, model, keys } = modelDir();
  const bundle = signStatement(modelStatement("model", await fileManifest(model)), keys.privateKey);
  const payload = JSON.parse(Buffer.from(bundle.dsseEnvelope.payload, "base64").toString());
  payload.predicate.resources[0].digest = "0".repeat(64);
  const forged = {
    ...bundle,
    dsseEnvelope: { ...bundle.dsseEnvelope, payload: Buffer.from(JSON.stringify(payload)).toString("base64") },
  };
  const r = openSigstoreBundle(forged, keys.publicKey);
  assert.equal(r.ok, false);
  assert.match(!r.ok ? r.field : "", /sig/);
  const sig = join(dir, "forged.sig");
  writeFileSync(sig, JSON.stringify(forged));
  assert.notEqual(upstreamVerify(model, sig, join(dir, "pub.pem")).status, 0);

  const good = join(dir, "good.sig");
  writeFileSync(good, JSON.stringify(bundle));
  writeFileSync(join(model, "extra.bin"), "x");
  const extra = upstreamVerify(model, good, join(dir, "pub.pem"));
  assert.notEqual(extra.status, 0, extra.stdout + extra.stderr);
  const opened = openSigstoreBundle(bundle, keys.publicKey);
  assert.ok(opened.ok);
  assert.deepEqual(
    compareManifest(opened.statement, await fileManifest(model)).map((d) => d.reason),
    ["in the model directory but not signed"],
  );
});

test("the ledger binding and the provenance statement are compared with the bundle, field by field", async () => {
  const { model, keys } = modelDir();
  const final = { embeddings: "sha256:aa", lm_head: "sha256:bb" };
  const st = modelStatement("model", await fileManifest(model), { job: "ns/a", specDigest: "sha256:51", final });
  const bundle = { job: "ns/a", specDigest: "sha256:51", final };
  assert.deepEqual(compareBinding(st, bundle), []);
  assert.deepEqual(
    compareBinding(st, { ...bundle, job: "ns/b", final: { ...final, lm_head: "sha256:cc" } }).map((m) => m.field),
    ["predicate.rft.job", "predicate.rft.final"],
  );
  assert.match(compareBinding(st, { ...bundle, final: { ...final, lm_head: "sha256:cc" } })[0]!.reason, /lm_head/);
  assert.deepEqual(
    compareBinding(modelStatement("model", []), bundle).map((m) => m.field),
    ["predicate.rft"],
  );

  const base = { embeddings: "sha256:01" };
  const facts = {
    job: "ns/a",
    specDigest: "sha256:" + "5".repeat(64),
    baseGroups: base,
    dataset: { rows: 3, manifestRoot: "r".repeat(64) },
    authorities: [{ name: "clinic", rows: 3, manifestRoot: "c".repeat(64), lawfulBasis: "consent" }],
    ledgerMerkleRoot: "m".repeat(64),
    events: 9,
    steps: 2,
    startedOn: "2026-01-01T00:00:00.000Z",
    finishedOn: "2026-01-01T00:01:00.000Z",
    worldSize: 1,
  };
  const subject = st.subject[0]!.digest.sha256!;
  const prov = provenanceStatement("model", subject, facts);
  // Signed and opened like the model signature.
  const opened = openSigstoreBundle(signStatement(prov, keys.privateKey), keys.publicKey);
  assert.ok(opened.ok);
  const b = { job: "ns/a", specDigest: facts.specDigest, base, manifestRoot: facts.dataset.manifestRoot };
  assert.deepEqual(compareProvenance(opened.statement, b, subject), []);
  assert.deepEqual(
    compareProvenance(
      opened.statement,
      { ...b, base: { embeddings: "sha256:02" }, manifestRoot: "x".repeat(64) },
      "0".repeat(64),
    ).map((m) => m.field),
    ["resolvedDependencies.base-model", "resolvedDependencies.dataset", "payload.subject[0].digest"],
  );
});
