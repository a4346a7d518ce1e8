/**
 * The two halves of an RFT step on the sort-digits example, each alone, for quick iterations on the model
 * runtime: sampling (64 requests = 8 prompts × 8 samples, 16 tokens, as rft.yaml) and the policy update's
 * gradients (4 micro-batches of 16 sequences, dapo-shaped loss, gradients of every parameter).
 *
 *   npx tsx bench/rft-parts.ts [--reps N] [--only sample|train] [--model DIR]
 *
 * Uses the warm-started model bench/rft.ts builds (os.tmpdir()/rft-bench-sort-digits/sft/model). Prints CPU
 * and wall ms per part (median of the reps) and a checksum of the results (sampled tokens, their log-probs,
 * the gradients' squared norms), so a change to the runtime can be checked to leave results unchanged.
 */
import { readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import "../trainer/model/tfjs.js";
import * as tf from "@tensorflow/tfjs-core";
import { useBackend } from "../trainer/model/backend.js";
import { loadHfModel } from "../trainer/model/hf-io.js";
import { type Completion, generate, type SampleRequest } from "../trainer/sampling/generate.js";
import { completionLogprobs, packSequences } from "../trainer/rl/logprobs.js";
import { policyLoss } from "../trainer/rl/loss.js";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const arg = (name: string, def: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : def;
};
const reps = Number(arg("reps", "5"));
const only = arg("only", "");
const dir = arg("model", join(tmpdir(), "rft-bench-sort-digits", "sft", "model"));

await useBackend("wasm");
const model = await loadHfModel(dir);
const tok = model.tokenizer!;
const rows = readFileSync(join(root, "examples", "sort-digits", "train.jsonl"), "utf8")
  .trim()
  .split("\n")
  .slice(0, 8)
  .map((l) => JSON.parse(l) as { messages: { role: string; content: string }[] });
const reqs: SampleRequest[] = rows.flatMap((r, i) =>
  Array.from({ length: 8 }, (_, j) => ({
    promptIds: tok.encode(tok.applyChatTemplate(r.messages, true)),
    maxTokens: 16,
    sampling: { temperature: 1, topP: 1, topK: 0 },
    seed: 1000 * i + j + 1,
  })),
);

function time<T>(f: () => Promise<T>): Promise<{ r: T; cpu: number; wall: number }> {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  return f().then((r) => {
    const c = process.cpuUsage(c0);
    return { r, cpu: (c.user + c.system) / 1000, wall: performance.now() - t0 };
  });
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

let completions: Completion[] = await generate(model, reqs);
const sampleCpu: number[] = [];
const sampleWall: number[] = [];
if (only !== "train") {
  for (let i = 0; i < reps; i++) {
    const t = await time(() => generate(model, reqs));
    completions = t.r;
    sampleCpu.push(t.cpu);
    sampleWall.push(t.wall);
  }
}
const nTok = completions.reduce((a, c) => a + c.tokens.length, 0);
let tokHash = 0;
for (const c of completions) for (const t of c.tokens) tokHash = (tokHash * 31 + t) >>> 0;
const lpSum = completions.reduce((a, c) => a + c.logprobs.reduce((x, y) => x + y, 0), 0);
if (only !== "train")
  console.log(
    `sample: ${median(sampleCpu).toFixed(0)} CPU ms (wall ${median(sampleWall).toFixed(0)}), ${nTok} tokens; ` +
      `tokens hash ${tokHash}, Σ logprob ${lpSum.toFixed(6)}`,
  );

const names = [...model.params.keys()];
const keep = completions.map((c, i) => ({ c, i })).filter((x) => x.c.tokens.length > 0);
function trainOnce(): number[] {
  const sq = new Array<number>(names.length).fill(0);
  for (let s = 0; s < keep.length; s += 16) {
    const part = keep.slice(s, s + 16);
    const batch = packSequences(
      part.map((x) => ({ prompt: reqs[x.i]!.promptIds, completion: x.c.tokens })),
      256,
    );
    const R = batch.rows.length;
    const perRow = (f: (b: number) => number) => Float32Array.from(batch.seqOfRow, (b) => f(b));
    const gs = tf.tidy(() => {
      const oldLogp = tf.tensor2d(Float32Array.from(part.flatMap((x) => x.c.logprobs)), [R, 1]);
      const mask = tf.ones([R, 1]) as tf.Tensor2D;
      const adv = tf.tensor1d(perRow((b) => ((part[b]!.i % 5) - 2) / 2));
      const w = tf.tensor1d(perRow(() => 1 / 700));
      const f = (...ws: tf.Tensor[]) => {
        const params = new Map(model.params);
        names.forEach((n, i) => params.set(n, ws[i]!));
        const logp = tf.reshape(completionLogprobs(model, params, batch), [R, 1]) as tf.Tensor2D;
        return policyLoss(
          { logp, oldLogp, mask, advantages: adv, weights: w },
          { clipLow: 0.2, clipHigh: 0.28, klCoef: 0 },
        ).loss;
      };
      return tf.grads(f)(names.map((n) => model.params.get(n)!));
    });
    const norms = tf.tidy(() => tf.stack(gs.map((g) => tf.sum(tf.square(g)))).dataSync());
    norms.forEach((v, k) => (sq[k]! += v));
    tf.dispose(gs);
  }
  return sq;
}
if (only !== "sample") {
  let sq = trainOnce();
  const cpu: number[] = [];
  const wall: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t = await time(async () => trainOnce());
    sq = t.r;
    cpu.push(t.cpu);
    wall.push(t.wall);
  }
  const total = sq.reduce((a, b) => a + b, 0);
  console.log(
    `train: ${median(cpu).toFixed(0)} CPU ms (wall ${median(wall).toFixed(0)}), ${keep.length} sequences; ` +
      `Σ‖grad‖² ${total.toExponential(9)}`,
  );
  if (process.argv.includes("--grads")) names.forEach((n, k) => console.log(`  ${n}: ${sq[k]!.toExponential(7)}`));
}
console.log(`tensors alive: ${tf.memory().numTensors}`);
