/**
 * Governance on a real training run: credentialed rows, depth-selective (masked) updates, and the signed
 * ledger checked by `rft audit verify`.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import * as tf from "@tensorflow/tfjs-core";
import { stringify } from "yaml";
import { GraderEngine } from "../../grader-sidecar/src/engine.js";
import { signRow } from "../../ledger/dataset.js";
import { readEventsFile } from "../../ledger/publisher.js";
import { exportPublicKeyPem, generateKeyPair } from "../../ledger/sign.js";
import { groupDigests, groupsOf } from "../../trainer/governance/digests.js";
import { loadManifest } from "../../trainer/job/manifest.js";
import { resolveRft } from "../../trainer/settings/hyperparameters.js";
import { runJob } from "../../trainer/job/run-job.js";
import { loadHfModel } from "../../trainer/model/hf-io.js";
import { disposeModel } from "../../trainer/model/model.js";
import { Adam } from "../../trainer/model/train-step.js";
import { generate } from "../../trainer/sampling/generate.js";
import { groupAdvantages, isZeroVariance, tokenWeights } from "../../trainer/rl/advantages.js";
import { completionLogprobs, packSequences } from "../../trainer/rl/logprobs.js";
import { promptIds } from "../../trainer/rl/rollouts.js";
import { learningRateAt, mixSeed, stepRows } from "../../trainer/rl/schedule.js";
import { policyLoss } from "../../trainer/rl/loss.js";
import { rftManifest, tempJobDir, tinyModel } from "../helpers/rft-job.js";

/** Random outputs of a tiny model get varied rewards from this grader (the example's would give all zeros). */
const VARIED = "def grade(sample, item):\n    return min(1.0, len(set(sample['output_text'])) / 8)\n";
const HYPER = { nEpochs: 1, batchSize: 4, samplesPerPrompt: 4, maxCompletionTokens: 6, evalInterval: 100 };

interface Setup {
  dir: string;
  manifestFile: string;
  rows: Record<string, unknown>[];
}

/** A 4-layer model, 12 training rows signed by "clinic" (envelope layers[2:4]), and extra rows as given. */
async function governedJob(
  prefix: string,
  extraRows: (clinic: ReturnType<typeof generateKeyPair>) => Record<string, unknown>[] = () => [],
): Promise<Setup> {
  const dir = tempJobDir(prefix);
  await tinyModel(join(dir, "model"), { layers: 4 });
  const clinic = generateKeyPair();
  writeFileSync(join(dir, "clinic.pub"), exportPublicKeyPem(clinic.publicKey));
  const file = rftManifest(dir, { model: "model" }, HYPER);
  const base = readFileSync(join(dir, "train.jsonl"), "utf8")
    .split("\n")
    .filter(Boolean)
    .slice(0, 12)
    .map((l) => JSON.parse(l));
  const rows = [...base.map((r) => signRow(r, "clinic", clinic.privateKey)), ...extraRows(clinic)];
  writeFileSync(join(dir, "train.jsonl"), rows.map((r) => JSON.stringify(r)).join("\n") + "\n");
  const job = loadManifest(file).job as any;
  job.spec.method.reinforcement.grader.graders.correct.source = VARIED;
  job.spec.governance = {
    authorities: [
      {
        name: "clinic",
        publicKey: { file: "clinic.pub" },
        lawfulBasis: "patient consent (GDPR art. 9(2)(a))",
        envelope: ["layers[2:4]"],
      },
    ],
  };
  writeFileSync(file, stringify(job));
  return { dir, manifestFile: file, rows };
}

async function digestsOf(dir: string) {
  const m = await loadHfModel(dir, { tokenizer: false });
  try {
    return groupDigests(m.params, groupsOf(m.config));
  } finally {
    disposeModel(m);
  }
}

test("rows admitted only to layers[2:4] change those layers and nothing else", async () => {
  const { dir, manifestFile } = await governedJob("masked");
  const r = await runJob({ manifest: loadManifest(manifestFile), outDir: join(dir, "out"), backend: "wasm" });
  assert.equal(r.status, "succeeded");
  const base = await digestsOf(join(dir, "model"));
  const final = await digestsOf(join(dir, "out", "model"));
  const allowed = (g: string) => /^layers\.[23]\./.test(g);
  for (const g of Object.keys(base)) {
    if (allowed(g)) assert.notEqual(final[g], base[g], `${g} should have been trained`);
    else assert.equal(final[g], base[g], `${g} is outside the envelope and must be byte-identical`);
  }
  // The optimizer never held state for a parameter outside the envelope.
  const ckpt = readFileSync(join(dir, "out", "checkpoints", "step-000003", "optimizer.safetensors"));
  const header = JSON.parse(ckpt.subarray(8, 8 + Number(ckpt.readBigUInt64LE(0))).toString());
  const stateFor = Object.keys(header)
    .filter((k) => k !== "__metadata__")
    .map((k) => k.replace(/\.[mvt]$/, ""));
  assert.ok(stateFor.length > 0);
  assert.ok(
    stateFor.every((n) => /^model\.layers\.[23]\./.test(n)),
    `optimizer state only for layers 2-3: ${[...new Set(stateFor)]}`,
  );
  // The ledger says the same: contributions only in layers 2-3, other groups' digests unchanged every step.
  const events = readEventsFile(join(dir, "out", "ledger", "events.jsonl"));
  const updates = events.filter((e) => e.type === "update.applied") as any[];
  assert.equal(updates.length, 3);
  for (const u of updates) {
    assert.ok(Object.keys(u.body.contributions).every(allowed));
    for (const [g, w] of Object.entries(u.body.weights) as [string, any][])
      if (!allowed(g)) assert.equal(w.before, w.after);
  }
});

test("the masked update equals training with every other group frozen", async () => {
  const { dir, manifestFile } = await governedJob("frozen");
  const manifest = loadManifest(manifestFile);
  const r = await runJob({ manifest, outDir: join(dir, "out"), backend: "wasm", stopAfterStep: 1 });
  assert.equal(r.status, "paused");
  const governed = await loadHfModel(join(dir, "out", "checkpoints", "step-000001-pause", "model"), {
    tokenizer: false,
  });

  // Step 1 rebuilt from the library's parts, training only layers 2-3 (the others frozen).
  const spec = manifest.job.spec;
  const rows = readFileSync(manifest.paths.trainingFile, "utf8")
    .split("\n")
    .filter(Boolean)
    .map((l) => JSON.parse(l));
  const hp = resolveRft(spec.method.reinforcement!.hyperparameters, rows.length);
  const model = await loadHfModel(manifest.paths.model);
  const batchRows = stepRows(1, rows.length, hp, spec.seed!).map((i) => rows[i]);
  const reqs = batchRows.flatMap((row, i) =>
    Array.from({ length: hp.samplesPerPrompt }, (_, j) => ({
      promptIds: promptIds(model, row),
      maxTokens: hp.maxCompletionTokens,
      sampling: { temperature: 1, topP: 1, topK: 0 },
      seed: mixSeed(spec.seed!, 1, i, j),
    })),
  );
  const completions = await generate(model, reqs);
  const engine = new GraderEngine({ python: { size: 1 } });
  const compiled = await engine.compile(spec.method.reinforcement!.grader);
  const rewards = await Promise.all(
    completions.map((c, k) =>
      engine
        .grade(compiled, batchRows[Math.floor(k / hp.samplesPerPrompt)], { output_text: c.text })
        .then((x) => x.reward),
    ),
  );
  await engine.close();
  const kept: number[] = [];
  const adv: number[] = [];
  for (let g = 0; g < batchRows.length; g++) {
    const group = rewards.slice(g * hp.samplesPerPrompt, (g + 1) * hp.samplesPerPrompt);
    if (isZeroVariance(group)) continue;
    group.forEach((_, j) => kept.push(g * hp.samplesPerPrompt + j));
    adv.push(...groupAdvantages(group, hp.loss));
  }
  const keep = kept.filter((k) => completions[k]!.tokens.length > 0);
  const advOf = new Map(kept.map((k, i) => [k, adv[i]!]));
  const weights = tokenWeights(
    keep.map((k) => completions[k]!.tokens.length),
    hp.loss,
    hp.maxCompletionTokens,
  );
  const trainable = [...model.params.keys()].filter((n) => /^model\.layers\.[23]\./.test(n));
  const batch = packSequences(
    keep.map((k) => ({ prompt: reqs[k]!.promptIds, completion: completions[k]!.tokens })),
    model.tokenizer!.padId ?? 0,
  );
  const per = (f: (b: number) => number) => Float32Array.from(batch.seqOfRow, f);
  const grads = tf.tidy(() => {
    const R = batch.rows.length;
    const f = (...ws: tf.Tensor[]) => {
      const params = new Map(model.params);
      trainable.forEach((n, i) => params.set(n, ws[i]!));
      return policyLoss(
        {
          logp: tf.reshape(completionLogprobs(model, params, batch), [R, 1]) as tf.Tensor2D,
          oldLogp: tf.tensor2d(Float32Array.from(keep.flatMap((k) => completions[k]!.logprobs)), [R, 1]),
          mask: tf.ones([R, 1]) as tf.Tensor2D,
          advantages: tf.tensor1d(per((b) => advOf.get(keep[b]!)!)),
          weights: tf.tensor1d(per((b) => weights[b]!)),
        },
        { clipLow: hp.clipEpsilon.low, clipHigh: hp.clipEpsilon.high, klCoef: 0 },
      ).loss;
    };
    return tf.grads(f)(trainable.map((n) => model.params.get(n)!));
  });
  const adam = new Adam({ lr: learningRateAt(1, hp), clipNorm: 1 });
  const before = Array.from(model.params.get(trainable[0]!)!.dataSync());
  adam.step(model, new Map(trainable.map((n, i) => [n, grads[i]!])));
  // The step moved the weights (the comparison below is not between two untouched copies).
  assert.ok(Array.from(model.params.get(trainable[0]!)!.dataSync()).some((v, i) => v !== before[i]));
  for (const [name, t] of model.params) {
    const want = t.dataSync();
    const got = governed.params.get(name)!.dataSync();
    let maxDiff = 0;
    for (let i = 0; i < want.length; i++) maxDiff = Math.max(maxDiff, Math.abs(want[i]! - got[i]!));
    // Float sums in another order (the global gradient norm) may differ in the last bits.
    assert.ok(maxDiff <= 1e-6, `${name}: max |Δ| ${maxDiff}`);
  }
  adam.dispose();
  disposeModel(model);
  disposeModel(governed);
});

test("unknown authorities, bad credentials and unsigned rows are rejected, never trained on, and the ledger verifies", async () => {
  const stranger = generateKeyPair();
  const { dir, manifestFile } = await governedJob("rejects", (clinic) => {
    const forged = signRow(
      { messages: [{ role: "user", content: "sort 9081" }], answer: "0189" },
      "clinic",
      stranger.privateKey,
    );
    const unknown = signRow(
      { messages: [{ role: "user", content: "sort 5521" }], answer: "1255" },
      "lab",
      stranger.privateKey,
    );
    const tampered = {
      ...signRow({ messages: [{ role: "user", content: "sort 4477" }], answer: "4477" }, "clinic", clinic.privateKey),
      answer: "7744",
    };
    const unsigned = { messages: [{ role: "user", content: "sort 1234" }], answer: "1234" };
    return [forged, unknown, tampered, unsigned];
  });
  const r = await runJob({ manifest: loadManifest(manifestFile), outDir: join(dir, "out"), backend: "wasm" });
  assert.equal(r.status, "succeeded");
  const events = readEventsFile(join(dir, "out", "ledger", "events.jsonl")) as any[];
  const rejected = events.filter((e) => e.type === "row.rejected").map((e) => [e.body.row, e.body.code]);
  assert.deepEqual(rejected, [
    ["#12", "bad_credential"],
    ["#13", "unknown_authority"],
    ["#14", "bad_credential"],
    ["#15", "missing_credential"],
  ]);
  assert.equal(events.filter((e) => e.type === "row.admitted").length, 12);
  const contributed = new Set(
    events.filter((e) => e.type === "update.applied").flatMap((e) => Object.values(e.body.contributions).flat()),
  );
  for (const [id] of rejected) assert.ok(!contributed.has(id), `${id} was rejected but contributed`);

  // The auditor's view: export, then verify against the delivered model and the dataset.
  const rft = (...args: string[]) =>
    spawnSync(process.execPath, ["--import", "tsx", "cli/rft.ts", ...args], { encoding: "utf8" });
  assert.equal(rft("keys", "generate", "--out", join(dir, "ledger")).status, 0);
  const exp = rft("audit", "export", join(dir, "out"), "--key", join(dir, "ledger.key"));
  assert.equal(exp.status, 0, exp.stderr);
  writeFileSync(join(dir, "bundle.json"), exp.stdout);
  const ok = rft(
    "audit",
    "verify",
    join(dir, "bundle.json"),
    "--model",
    join(dir, "out", "model"),
    "--dataset",
    join(dir, "train.jsonl"),
  );
  assert.equal(ok.status, 0, ok.stdout + ok.stderr);
  assert.match(ok.stdout, /authority clinic[\s\S]*rows admitted: 12, rejected: 2/);
  assert.match(ok.stdout, /VERIFIED/);
  // Alter one weight of the delivered model: verify names the failing group.
  const st = join(dir, "out", "model", "model.safetensors");
  const bytes = readFileSync(st);
  const headerLen = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + headerLen).toString());
  const [start] = header["model.layers.0.mlp.up_proj.weight"].data_offsets;
  bytes[8 + headerLen + start] ^= 1;
  writeFileSync(st, bytes);
  const bad = rft("audit", "verify", join(dir, "bundle.json"), "--model", join(dir, "out", "model"));
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /layers\.0\.mlp/);
});
