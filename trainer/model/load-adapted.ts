/**
 * A model directory or a PEFT adapter directory (a LoRA job's output), loaded for use: an adapter loads onto
 * its base model (`base`, else the adapter's base_model_name_or_path), whose tokenizer it uses.
 */
import { type LoadedModel, loadHfModel, ModelDirError } from "./hf-io.js";
import { isAdapterDir, loadAdapter, readAdapterConfig } from "./lora.js";
import { disposeModel } from "./model.js";

export async function loadModelOrAdapter(
  dir: string,
  o: { base?: string; tokenizer?: boolean } = {},
): Promise<LoadedModel & { adapterOf?: string }> {
  if (!isAdapterDir(dir)) return loadHfModel(dir, { tokenizer: o.tokenizer });
  const cfg = await readAdapterConfig(dir);
  const base = o.base ?? cfg.baseModel;
  if (!base)
    throw new ModelDirError(`${dir}: a LoRA adapter without base_model_name_or_path: name its base model (--base DIR)`);
  const model = await loadHfModel(base, { tokenizer: o.tokenizer });
  try {
    await loadAdapter(model, dir);
  } catch (e) {
    disposeModel(model);
    throw e;
  }
  return { ...model, adapterOf: base };
}
