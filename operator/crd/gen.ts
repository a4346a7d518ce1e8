/** `npm run gen:crd`: writes crds/finetunejobs.rft.dev.yaml from the TypeBox schema in proto/. */
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { CRD_FILE, crdYaml } from "./crd.js";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const out = join(root, CRD_FILE);
mkdirSync(dirname(out), { recursive: true });
writeFileSync(out, crdYaml());
process.stdout.write(`wrote ${CRD_FILE}\n`);
