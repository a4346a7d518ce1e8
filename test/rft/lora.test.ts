/**
 * LoRA jobs end to end on a tiny model: RFT under an envelope (only the admitted layers' adapters train, the
 * base stays byte-identical, the ledger verifies against base + adapter), exact resume with adapters and
 * dropout, SFT with the merged model, starting from an adapter, and settings the model cannot take.
 */
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { stringify } from "yaml";
import { signRow } from "../../ledger/dataset.js";
import { readEventsFile } from "../../ledger/publisher.js";
import { exportPublicKeyPem, generateKeyPair } from "../../ledger/sign.js";
import { loadManifest, parseManifest } from "../../trainer/job/manifest.js";
import { runJob } from "../../trainer/job/run-job.js";
import { loadHfModel } from "../../trainer/model/hf-io.js";
import { loadModelOrAdapter } from "../../trainer/model/load-adapted.js";
import { disposeModel, type Model } from "../../trainer/model/model.js";
import { SafetensorsReader } from "../../trainer/model/safetensors.js";
import { generate } from "../../trainer/sampling/generate.js";
import { TEST_BACKEND } from "../helpers/backend.js";
import { rftManifest, tempJobDir, tinyModel } from "../helpers/rft-job.js";

const VARIED = "def grade(sample, item):\n    return min(1.0, len(set(sample['output_text'])) / 8)\n";
const HYPER = {
  nEpochs: 1,
  batchSize: 4,
  samplesPerPrompt: 4,
  maxCompletionTokens: 6,
  evalInterval: 2,
  evalSamples: 1,
};

const sha = (f: string) => createHash("sha256").update(readFileSync(f)).digest("hex");

async function tensors(file: string): Promise<Map<string, Float32Array>> {
  const r = await SafetensorsReader.open(file);
  const out = new Map<string, Float32Array>();
  for (const n of r.names()) out.set(n, (await r.readF32(n)).data);
  await r.close();
  return out;
}

/** A 4-layer model and 12 rows, signed by "clinic" (envelope layers[2:4]) when `governed`. */
async function loraJob(prefix: string, lora: Record<string, unknown>, o: { governed?: boolean; hyper?: object } = {}) {
  const dir = tempJobDir(prefix);
  await tinyModel(join(dir, "model"), { layers: 4 });
  const file = rftManifest(dir, { model: "model" }, { ...HYPER, ...o.hyper });
  const rows = readFileSync(join(dir, "train.jsonl"), "utf8")
    .split("\n")
    .filter(Boolean)
    .slice(0, 12)
    .map((l) => JSON.parse(l));
  const job = loadManifest(file).job as any;
  job.spec.method.reinforcement.grader.graders.correct.source = VARIED;
  job.spec.method.reinforcement.lora = lora;
  if (o.governed) {
    const clinic = generateKeyPair();
    writeFileSync(join(dir, "clinic.pub"), exportPublicKeyPem(clinic.publicKey));
    rows.splice(0, rows.length, ...rows.map((r) => signRow(r, "clinic", clinic.privateKey)));
    job.spec.governance = {
      authorities: [
        { name: "clinic", publicKey: { file: "clinic.pub" }, lawfulBasis: "consent", envelope: ["layers[2:4]"] },
      ],
    };
  }
  writeFileSync(join(dir, "train.jsonl"), rows.map((r) => JSON.stringify(r)).join("\n") + "\n");
  writeFileSync(file, stringify(job));
  return { dir, file };
}

test("LoRA RFT under an envelope: only layers 2-3's adapters train, the base is untouched, the ledger verifies", async () => {
  const { dir, file } = await loraJob(
    "lora-gov",
    { rank: 4, targetModules: ["q_proj", "v_proj", "down_proj"] },
    { governed: true },
  );
  const baseSha = sha(join(dir, "model", "model.safetensors"));
  const r = await runJob({ manifest: loadManifest(file), outDir: join(dir, "out"), backend: TEST_BACKEND });
  assert.equal(r.status, "succeeded");
  assert.equal(r.status === "succeeded" && r.modelDir, join(dir, "out", "adapter"));
  assert.ok(!existsSync(join(dir, "out", "model")), "no full model without merge");
  assert.equal(sha(join(dir, "model", "model.safetensors")), baseSha);
  const cfg = JSON.parse(readFileSync(join(dir, "out", "adapter", "adapter_config.json"), "utf8"));
  assert.deepEqual(cfg.target_modules, ["q_proj", "v_proj", "down_proj"]);
  assert.equal(cfg.r, 4);
  const adapter = await tensors(join(dir, "out", "adapter", "adapter_model.safetensors"));
  assert.equal(adapter.size, 4 * 3 * 2);
  for (const [name, t] of adapter) {
    if (!name.includes("lora_B")) continue;
    const trained = t.some((x) => x !== 0);
    if (/layers\.[23]\./.test(name)) assert.ok(trained, `${name} should have trained`);
    else assert.ok(!trained, `${name} is outside the envelope: B must still be zero`);
  }
  // Optimizer state only for the admitted layers' adapters.
  assert.equal(r.method, "reinforcement");
  const ckpt = r.method === "reinforcement" ? r.checkpoints.at(-1)!.name : "";
  const opt = await tensors(join(dir, "out", "checkpoints", ckpt, "optimizer.safetensors"));
  const stateFor = new Set([...opt.keys()].map((k) => k.replace(/\.[mvt]$/, "")));
  assert.ok(
    [...stateFor].every((n) => /^model\.layers\.[23]\..*lora_[AB]\.weight$/.test(n)),
    [...stateFor].join(","),
  );
  // The ledger: groups outside the envelope keep their digests; the final digests are base + adapter's.
  const events = readEventsFile(join(dir, "out", "ledger", "events.jsonl")) as any[];
  for (const u of events.filter((e) => e.type === "update.applied"))
    for (const [g, w] of Object.entries(u.body.weights) as [string, any][])
      if (!/^layers\.[23]\./.test(g)) assert.equal(w.before, w.after, g);
  const rft = (...args: string[]) =>
    spawnSync(process.execPath, ["--import", "tsx", "cli/rft.ts", ...args], { encoding: "utf8" });
  assert.equal(rft("keys", "generate", "--out", join(dir, "ledger")).status, 0);
  const exp = rft("audit", "export", join(dir, "out"), "--key", join(dir, "ledger.key"));
  assert.equal(exp.status, 0, exp.stderr);
  writeFileSync(join(dir, "bundle.json"), exp.stdout);
  // The trainer digests with a DigestCache (the base hashed once); the verifier from scratch: they must agree.
  const ok = rft("audit", "verify", join(dir, "bundle.json"), "--model", join(dir, "out", "adapter"));
  assert.equal(ok.status, 0, ok.stdout + ok.stderr);
  // Another base under the same adapter does not verify: the digests cover the base's tensors too.
  await tinyModel(join(dir, "other"), { layers: 4, seed: 5 });
  const bad = rft(
    "audit",
    "verify",
    join(dir, "bundle.json"),
    "--model",
    join(dir, "out", "adapter"),
    "--base",
    join(dir, "other"),
  );
  assert.equal(bad.status, 1, bad.stdout);
  assert.match(bad.stderr, /final-model/);
});

test("LoRA RFT with dropout and KL: a paused and resumed run equals an uninterrupted one, bit for bit", async () => {
  const { dir, file } = await loraJob(
    "lora-resume",
    { rank: 2, dropout: 0.1, merge: true },
    { hyper: { klCoef: 0.05 } },
  );
  const manifest = loadManifest(file);
  const whole = await runJob({ manifest, outDir: join(dir, "whole"), backend: TEST_BACKEND });
  assert.equal(whole.status, "succeeded");
  const first = await runJob({ manifest, outDir: join(dir, "split"), backend: TEST_BACKEND, stopAfterStep: 1 });
  assert.equal(first.status, "paused");
  assert.ok(existsSync(join(dir, "split", "checkpoints", "step-000001-pause", "adapter", "adapter_model.safetensors")));
  assert.ok(!existsSync(join(dir, "split", "checkpoints", "step-000001-pause", "model")), "the base is not copied");
  const second = await runJob({ manifest, outDir: join(dir, "split"), backend: TEST_BACKEND });
  assert.equal(second.status, "succeeded");
  const a = join("adapter", "adapter_model.safetensors");
  assert.equal(sha(join(dir, "split", a)), sha(join(dir, "whole", a)));
  // The merged model (merge: true) differs from the base where the adapters trained.
  assert.equal(whole.status === "succeeded" && whole.modelDir, join(dir, "whole", "model"));
  const merged = await tensors(join(dir, "whole", "model", "model.safetensors"));
  const base = await tensors(join(dir, "model", "model.safetensors"));
  assert.ok([...merged].some(([n, t]) => !Buffer.from(t.buffer).equals(Buffer.from(base.get(n)!.buffer))));
  assert.equal(
    sha(join(dir, "split", "model", "model.safetensors")),
    sha(join(dir, "whole", "model", "model.safetensors")),
  );
});

test("LoRA SFT: the adapter learns, `rft serve` serves it on its base, a second job starts from it, a bad rank names its field", async () => {
  const dir = tempJobDir("lora-sft");
  await tinyModel(join(dir, "model"), { layers: 2 });
  const rows = Array.from({ length: 8 }, (_, i) => ({
    messages: [
      { role: "user", content: `say ${i}` },
      { role: "assistant", content: `${i}${i}${i}` },
    ],
  }));
  writeFileSync(join(dir, "sft.jsonl"), rows.map((r) => JSON.stringify(r)).join("\n") + "\n");
  const write = (name: string, lora: Record<string, unknown>) => {
    const job = {
      apiVersion: "rft.dev/v1alpha1",
      kind: "FineTuneJob",
      metadata: { name },
      spec: {
        model: "model",
        trainingFile: "sft.jsonl",
        seed: 3,
        method: {
          type: "supervised",
          supervised: { hyperparameters: { nEpochs: 4, batchSize: 4, learningRateMultiplier: 5 }, lora },
        },
      },
    };
    writeFileSync(join(dir, `${name}.yaml`), stringify(job));
    return loadManifest(join(dir, `${name}.yaml`));
  };
  const r = await runJob({
    manifest: write("first", { rank: 4, alpha: 8 }),
    outDir: join(dir, "first"),
    backend: TEST_BACKEND,
  });
  assert.equal(r.method, "supervised");
  if (r.method !== "supervised") return;
  assert.ok(
    r.steps.at(-1)!.trainLoss < r.steps[0]!.trainLoss - 0.1,
    `${r.steps[0]!.trainLoss} → ${r.steps.at(-1)!.trainLoss}`,
  );
  assert.equal(r.adapterDir, join(dir, "first", "adapter"));

  // `rft serve ADAPTER` serves base + adapter: its greedy answer is the adapted model's, not the base's.
  const greedy = async (m: Model) => {
    const prompt = m.tokenizer!.encode(m.tokenizer!.applyChatTemplate([{ role: "user", content: "say 5" }], true));
    const [c] = await generate(m, [
      { promptIds: prompt, maxTokens: 6, sampling: { temperature: 0, topP: 1, topK: 0 }, seed: 1 },
    ]);
    disposeModel(m);
    return c!.text;
  };
  const adapted = await greedy(await loadModelOrAdapter(join(dir, "first", "adapter")));
  const plain = await greedy(await loadHfModel(join(dir, "model")));
  assert.notEqual(adapted, plain, "the adapter changes the greedy answer");
  const srv = spawn(
    process.execPath,
    ["--import", "tsx", "cli/rft.ts", "serve", join(dir, "first", "adapter"), "--port", "0", "--backend", "wasm"],
    {
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  try {
    const url = await new Promise<string>((resolve, reject) => {
      let out = "";
      srv.stdout!.on("data", (d: Buffer) => {
        out += d.toString();
        const m = / at (http:\/\/\S+)/.exec(out);
        if (m) resolve(m[1]!);
      });
      srv.on("exit", (code) => reject(new Error(`rft serve exited with ${code}`)));
    });
    const res = await fetch(`${url}/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        model: "adapter",
        messages: [{ role: "user", content: "say 5" }],
        max_completion_tokens: 6,
        temperature: 0,
      }),
    });
    const body = (await res.json()) as { choices: { message: { content: string } }[] };
    assert.equal(body.choices[0]!.message.content, adapted);
  } finally {
    srv.kill("SIGTERM");
  }
  // Start from that adapter: the first step's loss is the first job's last level, not the base's.
  const again = await runJob({
    manifest: write("second", { adapter: "first/adapter", merge: true }),
    outDir: join(dir, "second"),
    backend: TEST_BACKEND,
  });
  if (again.method !== "supervised") return;
  assert.ok(again.steps[0]!.trainLoss < r.steps[0]!.trainLoss - 0.1);
  assert.ok(existsSync(join(dir, "second", "model", "config.json")));
  await assert.rejects(
    runJob({
      manifest: write("bad", { rank: 17, targetModules: ["k_proj"] }),
      outDir: join(dir, "bad"),
      backend: TEST_BACKEND,
    }),
    /spec\.method\.supervised\.lora\.rank: 17 is larger than k_proj's smallest dimension \(32×16/,
  );
  await assert.rejects(
    runJob({
      manifest: write("bad2", { adapter: "first/adapter", rank: 2 }),
      outDir: join(dir, "bad2"),
      backend: TEST_BACKEND,
    }),
    /spec\.method\.supervised\.lora\.rank: 2 differs from spec\.method\.supervised\.lora\.adapter's r = 4/,
  );
});

test("the manifest schema bounds method.*.lora and names the field and line", () => {
  const text = [
    "apiVersion: rft.dev/v1alpha1",
    "kind: FineTuneJob",
    "metadata: { name: bad-lora }",
    "spec:",
    "  model: m",
    "  trainingFile: t.jsonl",
    "  method:",
    "    type: supervised",
    "    supervised:",
    "      lora:",
    "        rank: 0",
    "        dropout: 1",
    "        targetModules: [q_proj, c_attn]",
    "        scaling: 2",
  ].join("\n");
  assert.throws(
    () => parseManifest(text, "job.yaml"),
    (e: Error) =>
      /job\.yaml:11: spec\.method\.supervised\.lora\.rank: must be >= 1/.test(e.message) &&
      /job\.yaml:12: spec\.method\.supervised\.lora\.dropout: must be < 1/.test(e.message) &&
      /job\.yaml:13: spec\.method\.supervised\.lora\.targetModules\[1\]: must be one of q_proj, k_proj/.test(
        e.message,
      ) &&
      /spec\.method\.supervised\.lora\.scaling: unknown field/.test(e.message),
  );
});
