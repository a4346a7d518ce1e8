/** `rft init-model`: write a small random Llama/Qwen2 model (Hugging Face format) with a tokenizer. */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { Command } from "commander";
import { parseBackendName, useBackend } from "../../trainer/model/backend.js";
import { ConfigError } from "../../trainer/model/config.js";
import { saveHfModel } from "../../trainer/model/hf-io.js";
import { createRandomModel, disposeModel } from "../../trainer/model/model.js";
import { countParams } from "../../trainer/model/params.js";
import type { TokenizerFiles } from "../../trainer/model/tokenizer.js";

class UsageError extends Error {}

function int(flag: string, v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0) throw new UsageError(`${flag}: want a positive integer, got "${v}"`);
  return n;
}

/** `byte`, or a directory holding tokenizer.json (+ tokenizer_config.json), or a tokenizer.json path. */
function vocabArg(v: string): "byte" | TokenizerFiles {
  if (v === "byte") return "byte";
  const dir = v.endsWith(".json") ? join(v, "..") : v;
  const tj = v.endsWith(".json") ? v : join(dir, "tokenizer.json");
  if (!existsSync(tj))
    throw new UsageError(`--vocab: no tokenizer.json at "${tj}" (use "byte" for the built-in byte-level one)`);
  const tc = join(dir, "tokenizer_config.json");
  try {
    return {
      tokenizerJson: JSON.parse(readFileSync(tj, "utf8")),
      tokenizerConfig: existsSync(tc) ? JSON.parse(readFileSync(tc, "utf8")) : {},
    };
  } catch (e) {
    throw new UsageError(`--vocab: ${(e as Error).message}`);
  }
}

export function register(program: Command) {
  program
    .command("init-model")
    .description("write a small random decoder (Hugging Face format: config.json, model.safetensors, tokenizer)")
    .requiredOption("--out <dir>", "output directory")
    .option("--arch <arch>", "llama | qwen2", "llama")
    .option("--layers <n>", "decoder layers", "4")
    .option("--hidden <n>", "hidden size", "256")
    .option("--heads <n>", "attention heads", "4")
    .option("--kv-heads <n>", "key/value heads (grouped-query attention)", "2")
    .option("--intermediate <n>", "MLP size (default ≈ 8/3 × hidden, a multiple of 32)")
    .option("--max-context <n>", "max_position_embeddings", "2048")
    .option(
      "--vocab <byte|path>",
      "tokenizer: byte (built-in byte-level, ChatML template) or a tokenizer dir/tokenizer.json",
      "byte",
    )
    .option("--seed <n>", "random seed", "0")
    .option(
      "--backend <name>",
      "tfjs backend: auto (tensorflow if installed, else wasm) | wasm | cpu | tensorflow | webgpu",
      "auto",
    )
    .action(async (o) => {
      try {
        if (o.arch !== "llama" && o.arch !== "qwen2")
          throw new UsageError(`--arch: want llama or qwen2, got "${o.arch}"`);
        await useBackend(parseBackendName(o.backend));
        const m = createRandomModel({
          arch: o.arch,
          layers: int("--layers", o.layers),
          hidden: int("--hidden", o.hidden),
          heads: int("--heads", o.heads),
          kvHeads: int("--kv-heads", o.kvHeads),
          ...(o.intermediate !== undefined && { intermediate: int("--intermediate", o.intermediate) }),
          maxContext: int("--max-context", o.maxContext),
          vocab: vocabArg(o.vocab),
          seed: Number(o.seed) >>> 0,
        });
        await saveHfModel(m, o.out);
        process.stdout.write(
          `wrote ${o.arch} model (${countParams(m.config).toLocaleString("en")} parameters) to ${o.out}\n`,
        );
        disposeModel(m);
      } catch (err) {
        if (err instanceof UsageError || err instanceof ConfigError) {
          process.stderr.write(`rft init-model: ${err.message}\n`);
          process.exitCode = 2;
        } else throw err;
      }
    });
}
