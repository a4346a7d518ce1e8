/**
 * Where the SmolLM2-135M-Instruct Hugging Face directory is, for the benches: `--model DIR`, else
 * `$RFT_SMOLLM2_DIR`, else test/helpers/smollm2.ts's smollm2Dir() (the setup's GGUF, imported once into
 * ~/.cache/rft/models/smollm2-135m-instruct). The one place the lookup lives.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { smollm2Dir as importedSmollm2Dir } from "../test/helpers/smollm2.js";

export async function smollm2Dir(argv: readonly string[] = process.argv): Promise<string> {
  const i = argv.indexOf("--model");
  const dir = i >= 0 ? argv[i + 1]! : (process.env.RFT_SMOLLM2_DIR ?? (await importedSmollm2Dir()));
  if (!existsSync(join(dir, "config.json")))
    throw new Error(
      `${dir}: no config.json. Give the SmolLM2-135M-Instruct Hugging Face directory with --model DIR or RFT_SMOLLM2_DIR, or leave both out to import the setup's GGUF (rft import gguf)`,
    );
  return dir;
}
