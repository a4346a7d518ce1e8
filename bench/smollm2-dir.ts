/**
 * Where the SmolLM2-135M-Instruct Hugging Face directory is, for the benches: `--model DIR`, else
 * `$RFT_SMOLLM2_DIR`, else /tmp/smollm2-hf. The one place the lookup lives (test/helpers/smollm2.ts's
 * smollm2Dir() can replace it once the GGUF importer lands).
 */
import { existsSync } from "node:fs";
import { join } from "node:path";

export function smollm2Dir(argv: readonly string[] = process.argv): string {
  const i = argv.indexOf("--model");
  const dir = i >= 0 ? argv[i + 1]! : (process.env.RFT_SMOLLM2_DIR ?? "/tmp/smollm2-hf");
  if (!existsSync(join(dir, "config.json")))
    throw new Error(
      `${dir}: no config.json. Give the SmolLM2-135M-Instruct Hugging Face directory with --model DIR or RFT_SMOLLM2_DIR (bench/README.md says how to make it)`,
    );
  return dir;
}
