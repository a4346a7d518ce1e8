/** Locates files shipped with the package (proto files, python worker) from source (tsx) and from dist/. */
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

let root: string | undefined;

/** The package root: the nearest ancestor directory whose package.json is rft-operator's. */
export function packageRoot(): string {
  if (root) return root;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pj = join(dir, "package.json");
    if (existsSync(pj) && JSON.parse(readFileSync(pj, "utf8")).name === "rft-operator") {
      root = dir;
      return dir;
    }
    const up = dirname(dir);
    if (up === dir) throw new Error("cannot find the rft-operator package root");
    dir = up;
  }
}

export const protoPath = (name: string) => join(packageRoot(), "proto", name);
