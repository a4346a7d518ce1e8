/**
 * The `calculate_output` formula of a multi grader: numbers, sub-grader names, `+ - * / ^` (power, right
 * associative, binds tighter than unary minus), parentheses, and min max abs floor ceil exp sqrt log
 * (min/max variadic, log natural). A recursive-descent parser producing an AST; never `eval`.
 */

export type Node =
  | { kind: "num"; value: number }
  | { kind: "var"; name: string; pos: number }
  | { kind: "neg"; arg: Node }
  | { kind: "bin"; op: "+" | "-" | "*" | "/" | "^"; left: Node; right: Node }
  | { kind: "call"; fn: FnName; args: Node[]; pos: number };

const FUNCTIONS = {
  min: { arity: [1, Infinity], f: (...a: number[]) => Math.min(...a) },
  max: { arity: [1, Infinity], f: (...a: number[]) => Math.max(...a) },
  abs: { arity: [1, 1], f: Math.abs },
  floor: { arity: [1, 1], f: Math.floor },
  ceil: { arity: [1, 1], f: Math.ceil },
  exp: { arity: [1, 1], f: Math.exp },
  sqrt: { arity: [1, 1], f: Math.sqrt },
  log: { arity: [1, 1], f: Math.log },
} as const;
type FnName = keyof typeof FUNCTIONS;
export const FORMULA_FUNCTIONS = Object.keys(FUNCTIONS) as FnName[];

export class FormulaError extends Error {
  constructor(
    message: string,
    readonly position: number,
  ) {
    super(`${message} at position ${position}`);
  }
}

/** Deepest nesting of parentheses, function calls, unary signs and powers (README "Limits"). */
export const FORMULA_MAX_NESTING = 100;
/** Most tokens in one formula: bounds the depth of left-associative chains (a + b + …) as well. */
export const FORMULA_MAX_TOKENS = 4096;

type Tok = { t: "num"; v: number; p: number } | { t: "id"; v: string; p: number } | { t: "op"; v: string; p: number };

const NUM = /(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?/y;
const ID = /[A-Za-z_][A-Za-z0-9_]*/y;

function tokenize(src: string): Tok[] {
  const out: Tok[] = [];
  let i = 0;
  while (i < src.length) {
    const c = src[i]!;
    if (/\s/.test(c)) {
      i++;
      continue;
    }
    if (out.length === FORMULA_MAX_TOKENS) {
      throw new FormulaError(`the formula has more than ${FORMULA_MAX_TOKENS} tokens`, i);
    }
    // Sticky regexes read at i without copying the rest of the formula (linear in its length).
    NUM.lastIndex = i;
    const num = NUM.exec(src);
    if (num) {
      out.push({ t: "num", v: Number(num[0]), p: i });
      i += num[0].length;
      continue;
    }
    ID.lastIndex = i;
    const id = ID.exec(src);
    if (id) {
      out.push({ t: "id", v: id[0], p: i });
      i += id[0].length;
      continue;
    }
    if ("+-*/^(),".includes(c)) {
      out.push({ t: "op", v: c, p: i });
      i++;
      continue;
    }
    throw new FormulaError(`unexpected character "${c}"`, i);
  }
  return out;
}

/** Parses a formula. Throws FormulaError with the position of the first problem. */
export function parseFormula(src: string): Node {
  const toks = tokenize(src);
  let k = 0;
  const peek = () => toks[k];
  const at = () => toks[k]?.p ?? src.length;
  const isOp = (v: string) => {
    const t = toks[k];
    return t?.t === "op" && t.v === v;
  };
  const expect = (v: string) => {
    if (!isOp(v)) throw new FormulaError(peek() ? `expected "${v}"` : `expected "${v}" but the formula ended`, at());
    k++;
  };
  // Recursion depth of the parser: every level a parenthesis, call, sign or power opens.
  let depth = 0;
  const enter = () => {
    if (++depth > FORMULA_MAX_NESTING) {
      throw new FormulaError(
        `the formula nests deeper than ${FORMULA_MAX_NESTING} levels (parentheses, function calls, signs, powers)`,
        at(),
      );
    }
  };

  function expr(): Node {
    let left = term();
    while (isOp("+") || isOp("-")) {
      const op = toks[k++]!.v as "+" | "-";
      left = { kind: "bin", op, left, right: term() };
    }
    return left;
  }
  function term(): Node {
    let left = unary();
    while (isOp("*") || isOp("/")) {
      const op = toks[k++]!.v as "*" | "/";
      left = { kind: "bin", op, left, right: unary() };
    }
    return left;
  }
  function unary(): Node {
    enter();
    try {
      if (isOp("-")) {
        k++;
        return { kind: "neg", arg: unary() };
      }
      if (isOp("+")) {
        k++;
        return unary();
      }
      return power();
    } finally {
      depth--;
    }
  }
  function power(): Node {
    const base = primary();
    if (isOp("^")) {
      k++;
      return { kind: "bin", op: "^", left: base, right: unary() };
    }
    return base;
  }
  function primary(): Node {
    const t = peek();
    if (!t) throw new FormulaError("expected a number, a grader name or a parenthesis but the formula ended", at());
    if (t.t === "num") {
      k++;
      return { kind: "num", value: t.v };
    }
    if (t.t === "id") {
      k++;
      if (!isOp("(")) return { kind: "var", name: t.v, pos: t.p };
      if (!Object.hasOwn(FUNCTIONS, t.v)) {
        throw new FormulaError(`unknown function "${t.v}" (known: ${FORMULA_FUNCTIONS.join(", ")})`, t.p);
      }
      const fn = t.v as FnName;
      k++;
      const args: Node[] = [];
      if (!isOp(")")) {
        args.push(expr());
        while (isOp(",")) {
          k++;
          args.push(expr());
        }
      }
      expect(")");
      const [lo, hi] = FUNCTIONS[fn].arity;
      if (args.length < lo || args.length > hi) {
        throw new FormulaError(
          `${fn}() takes ${lo === hi ? lo : `at least ${lo}`} argument(s), got ${args.length}`,
          t.p,
        );
      }
      return { kind: "call", fn, args, pos: t.p };
    }
    if (t.v === "(") {
      k++;
      const e = expr();
      expect(")");
      return e;
    }
    throw new FormulaError(`unexpected "${t.v}"`, t.p);
  }

  if (toks.length === 0) throw new FormulaError("the formula is empty", 0);
  const node = expr();
  if (k < toks.length) throw new FormulaError(`unexpected "${toks[k]!.v}"`, toks[k]!.p);
  return node;
}

/** Names of the variables a formula uses, with their positions. */
export function formulaVariables(node: Node, out: { name: string; pos: number }[] = []) {
  switch (node.kind) {
    case "var":
      out.push({ name: node.name, pos: node.pos });
      break;
    case "neg":
      formulaVariables(node.arg, out);
      break;
    case "bin":
      formulaVariables(node.left, out);
      formulaVariables(node.right, out);
      break;
    case "call":
      for (const a of node.args) formulaVariables(a, out);
      break;
  }
  return out;
}

const BINARY: Record<"+" | "-" | "*" | "/" | "^", (a: number, b: number) => number> = {
  "+": (a, b) => a + b,
  "-": (a, b) => a - b,
  "*": (a, b) => a * b,
  "/": (a, b) => a / b,
  "^": (a, b) => a ** b,
};

export function evaluateFormula(node: Node, vars: Record<string, number>): number {
  switch (node.kind) {
    case "num":
      return node.value;
    case "var": {
      const v = Object.hasOwn(vars, node.name) ? vars[node.name] : undefined;
      if (v === undefined) throw new FormulaError(`unknown variable "${node.name}"`, node.pos);
      return v;
    }
    case "neg":
      return -evaluateFormula(node.arg, vars);
    case "bin":
      return BINARY[node.op](evaluateFormula(node.left, vars), evaluateFormula(node.right, vars));
    case "call": {
      const f = FUNCTIONS[node.fn].f as (...a: number[]) => number;
      return f(...node.args.map((a) => evaluateFormula(a, vars)));
    }
  }
}
