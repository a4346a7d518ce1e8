/**
 * The base models `rft api` fine-tunes: names clients send as `model` → Hugging Face model directories.
 * `--model NAME=DIR` (repeatable; NAME may be an OpenAI name such as o4-mini-2025-04-16, so client code keeps
 * its model string) and `--models DIR` (every subdirectory with a config.json, named by its directory).
 */
import { existsSync, readdirSync, statSync } from "node:fs";
import { join, resolve } from "node:path";

export class ModelCatalog {
  private readonly byName = new Map<string, string>();
  readonly created = Math.floor(Date.now() / 1000);

  add(name: string, dir: string): void {
    if (!/^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/.test(name))
      throw new Error(`model name ${JSON.stringify(name)}: use 1-128 letters, digits, '.', '_', ':' or '-'`);
    if (!existsSync(join(dir, "config.json"))) throw new Error(`model ${name}: ${dir} has no config.json`);
    this.byName.set(name, resolve(dir));
  }

  /** `NAME=DIR` */
  addSpec(spec: string): void {
    const i = spec.indexOf("=");
    if (i <= 0) throw new Error(`--model wants NAME=DIR, got ${JSON.stringify(spec)}`);
    this.add(spec.slice(0, i), spec.slice(i + 1));
  }

  addDirectory(root: string): void {
    for (const name of readdirSync(root).sort()) {
      const dir = join(root, name);
      if (statSync(dir).isDirectory() && existsSync(join(dir, "config.json"))) this.add(name, dir);
    }
  }

  dir(name: string): string | undefined {
    return this.byName.get(name);
  }

  names(): string[] {
    return [...this.byName.keys()];
  }
}
