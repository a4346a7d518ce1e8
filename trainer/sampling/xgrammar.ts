/**
 * Loads @mlc-ai/web-xgrammar (xgrammar, the grammar engine of vLLM and SGLang, compiled to WebAssembly).
 * Its npm package declares `"type": "module"` but ships a UMD bundle (it reads `require` and `exports`), so
 * Node's ESM loader cannot import it; it is evaluated here as the CommonJS module it is, once per process.
 * The version is pinned in package.json: a new bundle format would need this loader looked at again.
 */
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname } from "node:path";
import type * as Xgr from "@mlc-ai/web-xgrammar";

export type XGrammar = typeof Xgr;

let loaded: XGrammar | undefined;

export function xgrammar(): XGrammar {
  if (loaded) return loaded;
  const require = createRequire(import.meta.url);
  const file = require.resolve("@mlc-ai/web-xgrammar");
  const module = { exports: {} as Record<string, unknown> };
  // The bundle is the package's own code; this is what require() would do with it under "type": "commonjs".
  const run = new Function("exports", "module", "require", "__filename", "__dirname", readFileSync(file, "utf8"));
  run(module.exports, module, createRequire(file), file, dirname(file));
  loaded = module.exports as unknown as XGrammar;
  return loaded;
}
