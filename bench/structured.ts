/**
 * Constrained decoding (`npx tsx bench/structured.ts [--backend wasm|tensorflow] [--tokens N] [--samples N]
 * [--no-smollm2]`): for the tiny random model of `rft init-model` (259-token byte vocabulary) and SmolLM2-135M
 * (49152-token BPE), the one-off costs (xgrammar's tokenizer info, the schema's compilation), the cost per
 * sampled token of the grammar (mask + UTF-8 mask + advance, and the sampler's extra work with a mask), and
 * sampling throughput with and without a json_schema response_format. Prints figures; asserts nothing.
 */
import { performance } from "node:perf_hooks";
import { parseBackendName, useBackend } from "../trainer/model/backend.js";
import { loadHfModel } from "../trainer/model/hf-io.js";
import { createRandomModel, disposeModel, type Model } from "../trainer/model/model.js";
import { generate, type SampleRequest } from "../trainer/sampling/generate.js";
import { DEFAULT_SAMPLING, pickToken, Rng } from "../trainer/sampling/pick.js";
import { parseResponseFormat } from "../trainer/sampling/response-format.js";
import { type ConstraintFactory, formatConstraint } from "../trainer/sampling/structured.js";
import { renderChat } from "../trainer/sampling/tools.js";
import { smollm2Dir } from "../test/helpers/smollm2.js";

const arg = (name: string, def: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1]! : def;
};
const backend = await useBackend(parseBackendName(arg("backend", "wasm")));
const TOKENS = Number(arg("tokens", "48"));
const SAMPLES = Number(arg("samples", "4"));

/** The RFT guide's security example's response_format. */
const FORMAT = parseResponseFormat({
  type: "json_schema",
  json_schema: {
    name: "security_assessment",
    strict: true,
    schema: {
      type: "object",
      properties: { compliant: { type: "string" }, explanation: { type: "string" } },
      required: ["compliant", "explanation"],
      additionalProperties: false,
    },
  },
})!;

/** Wraps a constraint factory to time its calls. */
function timedFactory(f: ConstraintFactory, t: { mask: number; accept: number; calls: number }): ConstraintFactory {
  return async () => {
    const c = await f();
    return {
      allowed: async () => {
        const t0 = performance.now();
        const m = await c.allowed();
        t.mask += performance.now() - t0;
        t.calls++;
        return m;
      },
      accept: (tok) => {
        const t0 = performance.now();
        const ok = c.accept(tok);
        t.accept += performance.now() - t0;
        return ok;
      },
      dispose: () => c.dispose(),
    };
  };
}

async function measure(name: string, model: Model) {
  const tok = model.tokenizer!;
  const V = model.config.vocabSize;
  let t0 = performance.now();
  await formatConstraint(model, { type: "json_object" }); // tokenizer info + json_object grammar
  const setupMs = performance.now() - t0;
  t0 = performance.now();
  const factory = await formatConstraint(model, FORMAT);
  const compileMs = performance.now() - t0;
  console.log(
    `\n${name}: vocabulary ${V}; xgrammar tokenizer info + first grammar ${setupMs.toFixed(0)} ms, security schema compiled in ${compileMs.toFixed(0)} ms (cached afterwards)`,
  );

  const prompt = renderChat(
    tok,
    [
      { role: "system", content: "Answer as JSON with compliant (yes or no) and a short explanation." },
      { role: "user", content: "Our customer database is encrypted with AES-256 on disk. Compliant?" },
    ],
    [],
    true,
  );
  const promptIds = tok.encode(prompt);
  const reqs = (c?: ConstraintFactory): SampleRequest[] =>
    Array.from({ length: SAMPLES }, (_, i) => ({
      promptIds,
      maxTokens: TOKENS,
      seed: 10 + i,
      sampling: { temperature: 0.8 },
      ...(c ? { constraint: c } : {}),
    }));
  await generate(
    model,
    reqs()
      .slice(0, 1)
      .map((r) => ({ ...r, maxTokens: 2 })),
  ); // warm-up
  const run = async (c?: ConstraintFactory) => {
    const s = performance.now();
    const out = await generate(model, reqs(c));
    const secs = (performance.now() - s) / 1000;
    const tokens = out.reduce((a, o) => a + o.tokens.length, 0);
    return { secs, tokens, out };
  };
  const free = await run();
  const t = { mask: 0, accept: 0, calls: 0 };
  const constrained = await run(timedFactory(factory, t));
  const valid = constrained.out.filter((o) => {
    try {
      JSON.parse(o.text);
      return true;
    } catch {
      return false;
    }
  }).length;
  // The sampler's own cost with and without a mask (one full row of random logits).
  const logits = Float32Array.from({ length: V }, (_, i) => Math.sin(i) * 4);
  const rng = new Rng(1);
  const c = await factory();
  const mask = await c.allowed();
  c.dispose();
  const reps = 200;
  let s = performance.now();
  for (let i = 0; i < reps; i++) pickToken(logits, DEFAULT_SAMPLING, rng);
  const pickFree = ((performance.now() - s) * 1000) / reps;
  s = performance.now();
  for (let i = 0; i < reps; i++) pickToken(logits, DEFAULT_SAMPLING, rng, undefined, mask);
  const pickMasked = ((performance.now() - s) * 1000) / reps;
  const perTok = (x: number) => ((x * 1000) / Math.max(1, t.calls)).toFixed(0);
  console.log(
    `  grammar per token: mask ${perTok(t.mask)} µs + advance ${perTok(t.accept)} µs (${t.calls} steps); sampler ${pickFree.toFixed(0)} µs → ${pickMasked.toFixed(0)} µs with the mask`,
  );
  console.log(
    `  sampling ${SAMPLES} × ≤${TOKENS} tokens: unconstrained ${(free.tokens / free.secs).toFixed(1)} tokens/s (${free.tokens} tokens, ${free.secs.toFixed(2)} s); ` +
      `json_schema ${(constrained.tokens / constrained.secs).toFixed(1)} tokens/s (${constrained.tokens} tokens, ${constrained.secs.toFixed(2)} s), ` +
      `${valid}/${SAMPLES} complete JSON, finish ${constrained.out.map((o) => o.finishReason).join(",")}`,
  );
  console.log(`  e.g. ${JSON.stringify(constrained.out[0]!.text.slice(0, 160))}`);
}

console.log(`backend ${backend}; ${SAMPLES} samples per run, up to ${TOKENS} tokens, temperature 0.8`);
const tiny = createRandomModel({
  arch: "llama",
  layers: 4,
  hidden: 256,
  heads: 4,
  kvHeads: 2,
  vocab: "byte",
  seed: 1,
  std: 0.2,
});
await measure("tiny random model (rft init-model shape, byte vocabulary)", tiny);
disposeModel(tiny);
if (!process.argv.includes("--no-smollm2")) {
  const smol = await loadHfModel(await smollm2Dir());
  await measure("SmolLM2-135M-Instruct", smol);
  disposeModel(smol);
}
