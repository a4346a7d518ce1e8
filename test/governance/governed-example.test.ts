/**
 * examples/governed-city, run by its own run.sh: two authorities with different envelopes (clinic: layers[2:4];
 * licensor: the whole model), one forged row (rejected), the job, export, verify, the OpenSSF model signature
 * (checked by the upstream `model_signing` tool), the provenance statement, the Annex XI export and the HTML
 * report (rendered in headless Chromium, screenshot checked). The example runs on a small random model in
 * place of SmolLM2 (so the test takes seconds), and a grader that gives such a model varied rewards; the rest
 * (data, authorities, envelopes, keys, commands) is the example's own.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { cpSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { before, test } from "node:test";
import { pathToFileURL } from "node:url";
import { parse, stringify } from "yaml";
import { saveHfModel } from "../../trainer/model/hf-io.js";
import { createRandomModel, disposeModel } from "../../trainer/model/model.js";
import { countColour, readPng } from "../helpers/png.js";

const EXAMPLE = "examples/governed-city";
const ROOT = resolve(".");
const TSX = pathToFileURL(join(ROOT, "node_modules", "tsx", "dist", "loader.mjs")).href;
const RFT = ["--import", TSX, join(ROOT, "cli", "rft.ts")];
const VARIED = "def grade(sample, item):\n    return min(1.0, len(set(sample['output_text'])) / 8)\n";
const GREEN: [number, number, number] = [0x1e, 0x7d, 0x32];
const RED: [number, number, number] = [0xb3, 0x26, 0x1e];
const HEAT: [number, number, number] = [31, 94, 180];

let dir = "";
let out = "";
let runLog = "";

const rft = (...args: string[]) => spawnSync(process.execPath, [...RFT, ...args], { cwd: dir, encoding: "utf8" });

function chromium(args: string[]) {
  const r = spawnSync("chromium", ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", ...args], {
    encoding: "utf8",
    maxBuffer: 64 << 20,
  });
  assert.ok(!r.error, `chromium did not run (bash scripts/setup.d/65-chromium.sh installs it): ${r.error}`);
  return r;
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "rft-governed-example-"));
  for (const f of ["rft.yaml", "run.sh", "clinic.jsonl", "licensor.jsonl", "forged.jsonl", "valid.jsonl"])
    cpSync(join(EXAMPLE, f), join(dir, f));
  // The stand-in for SmolLM2 (run.sh imports SmolLM2 only when base/ is missing); tied embeddings like SmolLM2,
  // so lm_head is a group without tensors of its own, which the licensor's envelope names.
  const m = createRandomModel({
    arch: "llama",
    layers: 4,
    hidden: 64,
    heads: 4,
    kvHeads: 2,
    vocab: "byte",
    maxContext: 512,
    seed: 0,
    tieWordEmbeddings: true,
  });
  await saveHfModel(m, join(dir, "base"));
  disposeModel(m);
  const job = parse(readFileSync(join(dir, "rft.yaml"), "utf8"));
  job.spec.method.reinforcement.grader.graders.exact.source = VARIED;
  writeFileSync(join(dir, "rft.yaml"), stringify(job));
  const r = spawnSync("bash", [join(dir, "run.sh")], {
    encoding: "utf8",
    env: { ...process.env, RFT: `${process.execPath} ${RFT.join(" ")}`, RFT_RUN_ARGS: "--backend wasm" },
    maxBuffer: 64 << 20,
  });
  runLog = r.stdout + r.stderr;
  assert.equal(r.status, 0, runLog.slice(-4000));
  out = join(dir, "out");
});

test("the forged row is rejected; groups outside the clinic's envelope are byte-identical in every step where only it contributed", () => {
  assert.match(runLog, /VERIFIED: every check passed/);
  assert.match(runLog, /model signature: valid \(5 files/);
  const bundle = JSON.parse(readFileSync(join(out, "bundle.json"), "utf8"));
  const events = bundle.events as any[];
  const rejected = events
    .filter((e) => e.type === "row.rejected")
    .map((e) => [e.body.row, e.body.authority, e.body.code]);
  assert.deepEqual(rejected, [["#32", "clinic", "bad_credential"]]);
  const authorityOf = new Map<string, string>(
    events.filter((e) => e.type === "row.admitted").map((e) => [e.body.row, e.body.authority]),
  );
  assert.equal(authorityOf.size, 32);
  const inClinic = (g: string) => /^layers\.[23]\./.test(g);
  let soleSteps = 0;
  let licensorSteps = 0;
  for (const u of events.filter((e) => e.type === "update.applied")) {
    const byAuthority = new Set<string>();
    for (const [g, rows] of Object.entries(u.body.contributions) as [string, string[]][])
      for (const row of rows) {
        assert.notEqual(row, "#32", "the rejected row contributed");
        const a = authorityOf.get(row)!;
        byAuthority.add(a);
        if (a === "clinic") assert.ok(inClinic(g), `step ${u.body.step}: a clinic row reached ${g}`);
      }
    if (byAuthority.has("licensor")) licensorSteps++;
    if (byAuthority.size === 1 && byAuthority.has("clinic")) {
      soleSteps++;
      for (const [g, w] of Object.entries(u.body.weights) as [string, any][])
        if (!inClinic(g)) assert.equal(w.after, w.before, `step ${u.body.step}: ${g} changed with only clinic rows`);
        else assert.notEqual(w.after, w.before, `step ${u.body.step}: ${g} should have been trained`);
    }
  }
  assert.ok(soleSteps >= 1, "no step with clinic rows only: the envelope check would be vacuous");
  assert.ok(licensorSteps >= 1);
  // The report says the same, per authority.
  const md = readFileSync(join(out, "report.md"), "utf8");
  assert.match(
    md,
    /\| clinic \|[^\n]*only contributor in steps [^;]+; all 9 groups outside its envelope byte-identical in each/,
  );
  assert.match(md, /\| #32 \| clinic \| bad_credential \|/);
});

test("model_signing (OpenSSF's tool) verifies the signed model; one changed byte fails it and rft audit verify", () => {
  const ms = (model: string) =>
    spawnSync(
      join(ROOT, ".venv-model-test", "bin", "model_signing"),
      [
        "verify",
        "key",
        model,
        "--signature",
        join(out, "model.sig"),
        "--public_key",
        join(dir, "keys", "model-signing.pub"),
      ],
      { encoding: "utf8" },
    );
  const model = join(dir, "out", "run", "model");
  const ok = ms(model);
  assert.ok(!ok.error, `model_signing did not run (scripts/setup.d/20-model-test-python.sh): ${ok.error}`);
  assert.equal(ok.status, 0, ok.stdout + ok.stderr);

  // The provenance statement names the bundle's materials (rft audit verify checked that); read it as a consumer would.
  const prov = JSON.parse(readFileSync(join(out, "provenance.sig"), "utf8"));
  const st = JSON.parse(Buffer.from(prov.dsseEnvelope.payload, "base64").toString());
  assert.equal(st.predicateType, "https://slsa.dev/provenance/v1");
  const deps = Object.fromEntries(
    st.predicate.buildDefinition.resolvedDependencies.map((d: any) => [d.name, d.digest]),
  );
  const bundle = JSON.parse(readFileSync(join(out, "bundle.json"), "utf8"));
  assert.equal(deps["job-spec"].sha256, bundle.specDigest.slice("sha256:".length));
  assert.equal(deps.dataset["rfc6962-merkle-sha256"], bundle.manifest.root);
  assert.ok(deps["dataset/clinic"] && deps["dataset/licensor"]);

  const st2 = join(model, "model.safetensors");
  const bytes = readFileSync(st2);
  const headerLen = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + headerLen).toString());
  bytes[8 + headerLen + header["model.layers.0.mlp.up_proj.weight"].data_offsets[0]] ^= 1;
  writeFileSync(st2, bytes);
  const bad = ms(model);
  assert.notEqual(bad.status, 0, bad.stdout + bad.stderr);
  const v = rft(
    "audit",
    "verify",
    join(out, "bundle.json"),
    "--model",
    model,
    "--model-signature",
    join(out, "model.sig"),
    "--signing-key",
    join(dir, "keys", "model-signing.pub"),
  );
  assert.equal(v.status, 1, v.stdout + v.stderr);
  assert.match(v.stdout, /\[final-model\][^\n]*layers\.0\.mlp/);
  assert.match(v.stdout, /\[model-signature\][^\n]*resources\.model\.safetensors: sha256 on disk/);
  // Restore the byte for the next test.
  bytes[8 + headerLen + header["model.layers.0.mlp.up_proj.weight"].data_offsets[0]] ^= 1;
  writeFileSync(st2, bytes);
});

test("the Annex XI export states the data, the counts and the compute the run recorded", () => {
  const doc = JSON.parse(readFileSync(join(out, "annex-xi.json"), "utf8"));
  // Parameters, independently: the shapes in the delivered safetensors header.
  const st = readFileSync(join(out, "run", "model", "model.safetensors"));
  const header = JSON.parse(st.subarray(8, 8 + Number(st.readBigUInt64LE(0))).toString());
  const N = Object.entries(header)
    .filter(([k]) => k !== "__metadata__")
    .reduce((a, [, v]: [string, any]) => a + v.shape.reduce((x: number, y: number) => x * y, 1), 0);
  const s1 = doc.section1;
  assert.equal(s1["1(d) architecture and parameters"].parameters, N);
  // Tokens, independently: the run's metrics events.
  const metrics = readFileSync(join(out, "run", "events.jsonl"), "utf8")
    .split("\n")
    .filter(Boolean)
    .map((l) => JSON.parse(l))
    .filter((e) => e.type === "metrics");
  const trained = metrics.reduce((a, e) => a + e.data.trained_tokens, 0);
  const sampled = metrics.reduce(
    (a, e) =>
      a + e.data.usage.samples.train_completion_tokens_count + e.data.usage.samples.valid_completion_tokens_count,
    0,
  );
  assert.ok(trained > 0 && sampled > 0);
  const c = s1["2(d) computational resources"];
  assert.equal(c.trainingFlops, 6 * N * trained);
  assert.equal(c.totalFlops, 6 * N * trained + 2 * N * sampled);
  assert.equal(c.baseModelComputeFlops, 1.6e21);
  assert.equal(c.oneThirdThresholdExceeded, false);
  const data = s1["2(c) data"];
  assert.equal(data.dataPoints, 33);
  assert.equal(data.admitted, 32);
  assert.deepEqual(data.rejectionsByCode, { bad_credential: 1 });
  assert.deepEqual(
    data.sources.map((x: any) => [x.authority, x.rowsAdmitted, x.category]),
    [
      ["clinic", 16, "PROVIDER_TO_COMPLETE"],
      ["licensor", 16, "PROVIDER_TO_COMPLETE"],
    ],
  );
  assert.equal(doc.ledger.verified, true);
  assert.equal(doc.model.signature.files, 5);
  const md = readFileSync(join(out, "annex-xi.md"), "utf8");
  assert.match(md, /### \(c\) Data: 33 data points, 32 admitted, 1 rejected/);
  assert.match(md, /\*\*PROVIDER TO COMPLETE\*\*/);
});

test("the HTML report renders offline in Chromium and shows the verdict, the contributors, the heat map and the rejection", () => {
  const html = readFileSync(join(out, "report.html"), "utf8");
  // Self-contained: no script, no external reference of any kind.
  assert.doesNotMatch(html, /<script|<link|\ssrc=|\shref=|url\(/i);
  const dom = chromium(["--dump-dom", pathToFileURL(join(out, "report.html")).href]);
  assert.equal(dom.status, 0, dom.stderr);
  assert.match(dom.stdout, /id="verdict">VERIFIED: every check passed</);
  assert.match(dom.stdout, /<h3>clinic<\/h3>[\s\S]*<h3>licensor<\/h3>/);
  assert.match(dom.stdout, /<td>#32<\/td><td>clinic<\/td><td>bad_credential<\/td>/);
  assert.match(dom.stdout, /all 9 groups outside its envelope byte-identical/);
  for (const check of ["signature", "envelope", "final-model", "model-signature", "provenance"])
    assert.match(dom.stdout, new RegExp(`<td>${check}</td><td>[^<]*</td><td class="passed">passed</td>`));

  const shot = join(dir, "report.png");
  const r = chromium(["--window-size=1280,2400", `--screenshot=${shot}`, pathToFileURL(join(out, "report.html")).href]);
  assert.equal(r.status, 0, r.stderr);
  const img = readPng(readFileSync(shot));
  assert.equal(img.width, 1280);
  assert.ok(countColour(img, GREEN) > 2000, "the green VERIFIED badge is on the page");
  assert.equal(countColour(img, RED, 4), 0, "no red failure badge");
  assert.ok(countColour(img, HEAT, 6) > 5000, "the heat map's cells are drawn");

  // After one byte of the model changes, the same report shows the failure.
  const model = join(out, "run", "model", "model.safetensors");
  const bytes = readFileSync(model);
  bytes[bytes.length - 1] ^= 1;
  writeFileSync(model, bytes);
  const rep = rft(
    "audit",
    "report",
    join(out, "bundle.json"),
    "--model",
    join(out, "run", "model"),
    "--model-signature",
    join(out, "model.sig"),
    "--signing-key",
    join(dir, "keys", "model-signing.pub"),
  );
  assert.equal(rep.status, 1, rep.stderr);
  writeFileSync(join(dir, "failed.html"), rep.stdout);
  const shot2 = join(dir, "failed.png");
  assert.equal(
    chromium(["--window-size=1280,1200", `--screenshot=${shot2}`, pathToFileURL(join(dir, "failed.html")).href]).status,
    0,
  );
  const img2 = readPng(readFileSync(shot2));
  assert.ok(countColour(img2, RED) > 2000, "the red FAILED badge is on the page");
  assert.match(rep.stdout, /<td>model-signature<\/td><td>[^<]*<\/td><td class="failed">failed<\/td>/);
});
