/** `rft import gguf FILE --out DIR`: a llama.cpp GGUF model → a Hugging Face directory (float32 safetensors). */
import type { Command } from "commander";
import { ConfigError } from "../../trainer/model/config.js";
import { GgufError, importGguf } from "../../trainer/model/gguf-import.js";

export function register(program: Command) {
  const imp = program.command("import").description("import a model from another format");
  imp
    .command("gguf")
    .description(
      "GGUF (llama.cpp) → Hugging Face directory: config.json, model.safetensors (f32), tokenizer.json, tokenizer_config.json",
    )
    .argument("<file>", "the .gguf file (llama architecture; F32/F16/BF16/Q8_0/Q4_0/Q4_1/Q4_K/Q6_K tensors)")
    .requiredOption("--out <dir>", "output directory")
    .action(async (file: string, o: { out: string }) => {
      const t0 = Date.now();
      try {
        const r = await importGguf(file, o.out);
        const types = Object.entries(r.types)
          .map(([t, n]) => `${n} ${t}`)
          .join(", ");
        process.stdout.write(
          `imported ${file}: ${r.config.arch}, ${r.config.numLayers} layers, ${r.tensors} tensors (${types}) → ${o.out} in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`,
        );
      } catch (err) {
        if (err instanceof GgufError || err instanceof ConfigError) {
          process.stderr.write(`rft import gguf: ${err.message}\n`);
          process.exitCode = 1;
        } else throw err;
      }
    });
}
