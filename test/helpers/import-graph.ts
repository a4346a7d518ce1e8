/**
 * The relative imports between the project's production files (proto, grader-sidecar, trainer, ledger, operator,
 * cli), read from the source text: `import … from`, `export … from`, side-effect imports and `import("…")`, with
 * type-only imports marked. What docs/architecture.md's "imports (measured)" column and test/architecture.test.ts
 * are made from. `npx tsx test/helpers/import-graph.ts` prints the folder edges and any file-level cycle.
 */
import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, normalize } from "node:path";
import { fileURLToPath } from "node:url";

export const SOURCE_ROOTS = ["proto", "grader-sidecar", "trainer", "ledger", "operator", "cli"];

export interface ImportEdge {
  from: string;
  to: string;
  typeOnly: boolean;
}

function sourceFiles(root: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const n of readdirSync(d)) {
      const p = join(d, n);
      if (statSync(p).isDirectory()) walk(p);
      else if (p.endsWith(".ts")) out.push(p);
    }
  };
  walk(root);
  return out;
}

const IMPORT =
  /(?:^|\n)\s*(?:import|export)\s+(type\s+)?([^;]*?)\s*from\s*["']([^"']+)["']|import\(\s*["']([^"']+)["']\s*\)|(?:^|\n)\s*import\s+["']([^"']+)["']/g;

/** Every relative import of every source file under `repo`. */
export function importEdges(repo = "."): ImportEdge[] {
  const edges: ImportEdge[] = [];
  for (const root of SOURCE_ROOTS) {
    for (const f of sourceFiles(join(repo, root))) {
      const from = normalize(f.slice(repo === "." ? 0 : repo.length + 1));
      for (const m of readFileSync(f, "utf8").matchAll(IMPORT)) {
        const spec = m[3] ?? m[4] ?? m[5]!;
        if (!spec.startsWith(".")) continue;
        const names = m[2]?.trim() ?? "";
        const allTypes =
          /^\{[^}]*\}$/.test(names) &&
          names
            .slice(1, -1)
            .split(",")
            .map((x) => x.trim())
            .filter(Boolean)
            .every((x) => x.startsWith("type "));
        edges.push({
          from,
          to: normalize(join(dirname(from), spec)).replace(/\.js$/, ".ts"),
          typeOnly: !!m[1] || allTypes,
        });
      }
    }
  }
  return edges;
}

/** The folder a file belongs to: a trainer subfolder, or the top-level component. */
export function componentOf(file: string): string {
  const parts = file.split("/");
  return parts[0] === "trainer" && parts.length > 2 ? `trainer/${parts[1]}` : parts[0]!;
}

/** Folder → the folders it imports (type-only imports included). */
export function folderGraph(edges: ImportEdge[]): Map<string, Set<string>> {
  const g = new Map<string, Set<string>>();
  for (const e of edges) {
    const a = componentOf(e.from);
    const b = componentOf(e.to);
    if (a === b) continue;
    if (!g.has(a)) g.set(a, new Set());
    g.get(a)!.add(b);
  }
  return g;
}

/** The strongly connected components of more than one file (each one an import cycle). */
export function fileCycles(edges: ImportEdge[]): string[][] {
  const g = new Map<string, string[]>();
  for (const e of edges) g.set(e.from, [...(g.get(e.from) ?? []), e.to]);
  let next = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const cycles: string[][] = [];
  const visit = (v: string) => {
    index.set(v, next);
    low.set(v, next++);
    stack.push(v);
    onStack.add(v);
    for (const w of g.get(v) ?? []) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) === index.get(v)) {
      const c: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        c.push(w);
      } while (w !== v);
      if (c.length > 1) cycles.push(c.sort());
    }
  };
  for (const v of g.keys()) if (!index.has(v)) visit(v);
  return cycles;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const edges = importEdges();
  for (const [a, bs] of [...folderGraph(edges)].sort()) {
    for (const b of [...bs].sort()) {
      const n = edges.filter((e) => componentOf(e.from) === a && componentOf(e.to) === b);
      const types = n.filter((e) => e.typeOnly).length;
      console.log(`${a} -> ${b}: ${n.length} import(s)${types ? `, ${types} type-only` : ""}`);
    }
  }
  const cycles = fileCycles(edges);
  console.log(cycles.length ? `file cycles:\n${cycles.map((c) => `  ${c.join(" ")}`).join("\n")}` : "no file cycles");
}
