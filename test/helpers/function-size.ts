/**
 * The size of every production function (the source roots of import-graph.ts), read with the TypeScript
 * compiler API: its lines (first to last, nested functions included, as ESLint's max-lines-per-function) and
 * its cyclomatic complexity (1 + each if, ?:, loop, case, catch, &&, ||, ?? and logical assignment of its own
 * body; nested functions count on their own, as ESLint's complexity rule). The project's limit is 80 lines and
 * a complexity of 25 (test/architecture.test.ts). `npx tsx test/helpers/function-size.ts` prints every
 * function over either limit, longest first; `--all N` the N largest.
 */
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import ts from "typescript";
import { SOURCE_ROOTS } from "./import-graph.js";

export const MAX_LINES = 80;
export const MAX_COMPLEXITY = 25;

export interface FunctionSize {
  file: string;
  /** The function's name: its own, the variable or property it is assigned to, or `<anonymous>`. */
  name: string;
  line: number;
  lines: number;
  complexity: number;
}

function sourceFiles(root: string): string[] {
  return readdirSync(root).flatMap((n) => {
    const p = join(root, n);
    if (statSync(p).isDirectory()) return sourceFiles(p);
    return p.endsWith(".ts") && !p.endsWith(".d.ts") ? [p] : [];
  });
}

const isFunction = (n: ts.Node): n is ts.FunctionLikeDeclaration =>
  ts.isFunctionDeclaration(n) ||
  ts.isMethodDeclaration(n) ||
  ts.isArrowFunction(n) ||
  ts.isFunctionExpression(n) ||
  ts.isConstructorDeclaration(n) ||
  ts.isGetAccessorDeclaration(n) ||
  ts.isSetAccessorDeclaration(n);

function nameOf(fn: ts.FunctionLikeDeclaration, sf: ts.SourceFile): string {
  if (ts.isConstructorDeclaration(fn)) return "constructor";
  if (fn.name) return fn.name.getText(sf);
  const p = fn.parent;
  if (ts.isVariableDeclaration(p) || ts.isPropertyAssignment(p) || ts.isPropertyDeclaration(p))
    return p.name.getText(sf);
  return "<anonymous>";
}

const LOGICAL = new Set([
  ts.SyntaxKind.AmpersandAmpersandToken,
  ts.SyntaxKind.BarBarToken,
  ts.SyntaxKind.QuestionQuestionToken,
  ts.SyntaxKind.AmpersandAmpersandEqualsToken,
  ts.SyntaxKind.BarBarEqualsToken,
  ts.SyntaxKind.QuestionQuestionEqualsToken,
]);

/** 1 + the decision points of a function's own body (nested functions excluded). */
function complexityOf(fn: ts.FunctionLikeDeclaration): number {
  let c = 1;
  const visit = (n: ts.Node) => {
    if (n !== fn && isFunction(n)) return;
    if (
      ts.isIfStatement(n) ||
      ts.isConditionalExpression(n) ||
      ts.isForStatement(n) ||
      ts.isForInStatement(n) ||
      ts.isForOfStatement(n) ||
      ts.isWhileStatement(n) ||
      ts.isDoStatement(n) ||
      ts.isCaseClause(n) ||
      ts.isCatchClause(n) ||
      (ts.isBinaryExpression(n) && LOGICAL.has(n.operatorToken.kind))
    )
      c++;
    ts.forEachChild(n, visit);
  };
  visit(fn);
  return c;
}

/** Every function of one file. */
export function fileFunctions(file: string, text = readFileSync(file, "utf8")): FunctionSize[] {
  const sf = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true);
  const out: FunctionSize[] = [];
  const visit = (n: ts.Node) => {
    if (isFunction(n) && n.body) {
      const first = sf.getLineAndCharacterOfPosition(n.getStart(sf)).line;
      const last = sf.getLineAndCharacterOfPosition(n.getEnd()).line;
      out.push({ file, name: nameOf(n, sf), line: first + 1, lines: last - first + 1, complexity: complexityOf(n) });
    }
    ts.forEachChild(n, visit);
  };
  visit(sf);
  return out;
}

/** Every production function of the repository at `repo`. */
export function functionSizes(repo = "."): FunctionSize[] {
  return SOURCE_ROOTS.flatMap((root) =>
    sourceFiles(join(repo, root)).flatMap((f) =>
      fileFunctions(f).map((s) => ({ ...s, file: repo === "." ? f : f.slice(repo.length + 1) })),
    ),
  );
}

/** The functions over either limit, longest first. */
export function oversized(sizes: FunctionSize[]): FunctionSize[] {
  return sizes.filter((s) => s.lines > MAX_LINES || s.complexity > MAX_COMPLEXITY).sort((a, b) => b.lines - a.lines);
}

export const describeSize = (s: FunctionSize) =>
  `${s.file}:${s.line} ${s.name}: ${s.lines} lines, complexity ${s.complexity}`;

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const sizes = functionSizes();
  const all = process.argv.indexOf("--all");
  const shown =
    all >= 0
      ? [...sizes].sort((a, b) => b.lines - a.lines).slice(0, Number(process.argv[all + 1] ?? 20))
      : oversized(sizes);
  for (const s of shown) console.log(describeSize(s));
  if (all < 0)
    console.log(`${shown.length} of ${sizes.length} functions over ${MAX_LINES} lines or complexity ${MAX_COMPLEXITY}`);
}
