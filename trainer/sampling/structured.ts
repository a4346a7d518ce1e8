/**
 * Constrained decoding for structured outputs: a `response_format` (json_object, json_schema) becomes a
 * grammar over the model's own vocabulary, and every decoding step samples only among the tokens the grammar
 * allows, so each completion is JSON of the schema, or is cut by the token limit (finish "length").
 *
 * The engine is xgrammar (trainer/sampling/xgrammar.ts): it compiles the schema to a pushdown automaton,
 * decodes every vocabulary entry to its bytes once per tokenizer (byte-level BPE, SentencePiece byte
 * fallback or raw), and precomputes per automaton state which tokens are always or never allowed, so that a
 * step's mask walks a token trie only for the few context-dependent tokens. Special tokens other than the
 * end-of-sequence ones are never allowed; end-of-sequence is allowed exactly when the JSON is complete.
 */
import type { CompiledGrammar, GrammarCompiler, GrammarMatcher } from "@mlc-ai/web-xgrammar";
import type { Model } from "../model/model.js";
import { bytesToUnicode, type ChatTokenizer } from "../model/tokenizer.js";
import type { StructuredFormat } from "./response-format.js";
import { type ToolChoice, toolCallSchema, type ToolDef } from "./tools.js";
import { xgrammar } from "./xgrammar.js";

/** One sample's grammar state, advanced token by token. */
export interface TokenConstraint {
  /** Allowed next tokens: bit i of word i>>5 (xgrammar's bitmask layout). */
  allowed(): Promise<Int32Array>;
  /** Advances by the chosen token; false if the grammar does not allow it (the state is unchanged). */
  accept(token: number): boolean;
  dispose(): void;
}

/** Makes a fresh constraint for each sample of a request. */
export type ConstraintFactory = () => Promise<TokenConstraint>;

/** xgrammar's vocabulary type for a tokenizer.json: how token strings map to bytes. */
export function vocabType(tokenizerJson: Record<string, unknown>): {
  type: "byte_level" | "byte_fallback" | "raw";
  prependSpace: boolean;
} {
  type Decoder = { type?: string; start?: number; decoders?: Decoder[] };
  const dec = tokenizerJson["decoder"] as Decoder | null;
  const parts: Decoder[] = dec?.type === "Sequence" ? (dec.decoders ?? []) : dec ? [dec] : [];
  const has = (t: string) => parts.some((d) => d.type === t);
  if (has("ByteLevel")) return { type: "byte_level", prependSpace: false };
  if (has("ByteFallback") || has("Metaspace") || has("Replace")) {
    // Llama/Mistral SentencePiece: the decoder strips the one space the tokenizer prepends.
    return { type: "byte_fallback", prependSpace: parts.some((d) => d.type === "Strip" && d.start === 1) };
  }
  return { type: "raw", prependSpace: false };
}

/**
 * Each vocabulary entry's bytes (what the tokenizer's decoder makes of it); special tokens are empty.
 * byte_level: the GPT-2 byte alphabet inverted; byte_fallback: `<0xHH>` is one byte, `▁` a space; raw: UTF-8.
 */
export function tokenBytes(
  tok: ChatTokenizer,
  vocabSize: number,
  type: ReturnType<typeof vocabType>["type"],
): Uint8Array[] {
  const inverse = new Map<string, number>(bytesToUnicode().map((ch, b) => [ch, b]));
  const utf8 = new TextEncoder();
  const out: Uint8Array[] = [];
  for (let id = 0; id < vocabSize; id++) {
    const sym = tok.specialIds.has(id) ? undefined : tok.tokenToSymbol(id);
    if (sym === undefined) out.push(new Uint8Array(0));
    else if (type === "byte_level" && [...sym].every((ch) => inverse.has(ch)))
      out.push(Uint8Array.from([...sym], (ch) => inverse.get(ch)!));
    else if (type === "byte_fallback" && /^<0x[0-9A-Fa-f]{2}>$/.test(sym))
      out.push(Uint8Array.of(parseInt(sym.slice(3, 5), 16)));
    else out.push(utf8.encode(type === "byte_fallback" ? sym.replaceAll("\u2581", " ") : sym));
  }
  return out;
}

/**
 * Well-formed UTF-8 (Unicode table 3-7) as a DFA over bytes. States: 0 at a character boundary; 1, 2, 3 =
 * that many continuation bytes (80–BF) to go; 4 after E0 (next A0–BF), 5 after ED (80–9F), 6 after F0 (90–BF),
 * 7 after F4 (80–8F). -1 = ill-formed.
 */
export function utf8Step(state: number, b: number): number {
  switch (state) {
    case 0:
      if (b < 0x80) return 0;
      if (b >= 0xc2 && b <= 0xdf) return 1;
      if (b === 0xe0) return 4;
      if (b === 0xed) return 5;
      if (b >= 0xe1 && b <= 0xef) return 2;
      if (b === 0xf0) return 6;
      if (b >= 0xf1 && b <= 0xf3) return 3;
      if (b === 0xf4) return 7;
      return -1;
    case 1:
    case 2:
    case 3:
      return b >= 0x80 && b <= 0xbf ? state - 1 : -1;
    case 4:
      return b >= 0xa0 && b <= 0xbf ? 1 : -1;
    case 5:
      return b >= 0x80 && b <= 0x9f ? 1 : -1;
    case 6:
      return b >= 0x90 && b <= 0xbf ? 2 : -1;
    default:
      return b >= 0x80 && b <= 0x8f ? 2 : -1;
  }
}

const UTF8_STATES = 8;

/**
 * Per UTF-8 state: each token's next state, and the bitmask of tokens that keep the text well-formed.
 * xgrammar's character classes accept ill-formed byte sequences (a lone F6, an overlong C0 80), whose
 * U+FFFD replacements then break `maxLength`, `pattern` or `enum`; ANDing this mask in rules them out.
 */
export class Utf8Masks {
  readonly next: Int8Array[] = [];
  readonly masks: Int32Array[] = [];
  constructor(bytes: Uint8Array[], eosIds: readonly number[]) {
    const V = bytes.length;
    for (let s = 0; s < UTF8_STATES; s++) {
      const next = new Int8Array(V);
      const mask = new Int32Array(Math.ceil(V / 32));
      for (let t = 0; t < V; t++) {
        let q = s;
        for (const b of bytes[t]!) if ((q = utf8Step(q, b)) < 0) break;
        // End of sequence only at a character boundary.
        if (eosIds.includes(t) && s !== 0) q = -1;
        next[t] = q;
        if (q >= 0) mask[t >>> 5]! |= 1 << (t & 31);
      }
      this.next.push(next);
      this.masks.push(mask);
    }
  }
}

const MAX_GRAMMARS = 64;

/** Per tokenizer: xgrammar's decoded vocabulary and compiler, and the grammars compiled for it. */
class Compiler {
  private readonly grammars = new Map<string, Promise<CompiledGrammar>>();
  private constructor(
    private readonly compiler: GrammarCompiler,
    readonly stopIds: number[],
    readonly utf8: Utf8Masks,
  ) {}

  static async create(tok: ChatTokenizer, vocabSize: number, eosIds: number[]): Promise<Compiler> {
    const xgr = xgrammar();
    const vocab: string[] = new Array<string>(vocabSize);
    for (let id = 0; id < vocabSize; id++) {
      // Special tokens (chat markers, padding) decode to "": xgrammar then never allows them, except the
      // stop tokens, which it allows when the grammar may end.
      vocab[id] = tok.specialIds.has(id) && !eosIds.includes(id) ? "" : (tok.tokenToSymbol(id) ?? "");
    }
    const vt = vocabType(tok.files.tokenizerJson);
    const info = await xgr.TokenizerInfo.createTokenizerInfo(vocab, vt.type, vt.prependSpace, vocabSize, eosIds);
    const utf8 = new Utf8Masks(tokenBytes(tok, vocabSize, vt.type), eosIds);
    return new Compiler(await xgr.GrammarCompiler.createGrammarCompiler(info, true), eosIds, utf8);
  }

  grammar(f: GrammarSpec): Promise<CompiledGrammar> {
    const key = JSON.stringify([f.type === "json_object" ? f : f.schema, f.wrap ?? null]);
    let g = this.grammars.get(key);
    if (!g) {
      g = this.compile(f);
      if (this.grammars.size >= MAX_GRAMMARS) {
        const [oldest, old] = this.grammars.entries().next().value!;
        this.grammars.delete(oldest);
        void old.then((x) => x.dispose()).catch(() => undefined);
      }
      this.grammars.set(key, g);
      g.catch(() => this.grammars.delete(key));
    }
    return g;
  }

  private async compile(f: GrammarSpec): Promise<CompiledGrammar> {
    const xgr = xgrammar();
    const schema = f.type === "json_object" ? { type: "object" } : f.schema;
    // Any JSON whitespace, at most 4 characters between tokens of the JSON (a model cannot loop on blanks
    // until the token limit); extra properties only where the schema leaves objects open (json_object).
    const ebnf = await xgr.Testings._jsonSchemaToEBNF(
      JSON.stringify(schema),
      true,
      undefined,
      undefined,
      f.type === "json_schema",
      MAX_BLANKS,
    );
    let rules = fixEbnf(ebnf);
    if (f.wrap) {
      // The JSON between fixed text: xgrammar's root rule renamed, and a new root around it (JSON string
      // escapes are EBNF string escapes).
      rules = rules.replace(/^root ::=/m, "wrapped_json ::=");
      rules += `\nroot ::= ${JSON.stringify(f.wrap[0])} wrapped_json ${JSON.stringify(f.wrap[1])}\n`;
    }
    return this.compiler.compileGrammar(await xgr.Grammar.fromEBNF(rules));
  }
}

/** A format, optionally with fixed text before and after the JSON (a forced tool call's `<tool_call>` tags). */
type GrammarSpec = StructuredFormat & { wrap?: [string, string] };

/** Whitespace allowed between two tokens of the JSON. */
const MAX_BLANKS = 4;

/**
 * Two repairs to the grammar xgrammar 0.1.27 writes for a schema: strings with a length bound or of a generic
 * kind use the character class `[^"\\\r\n]`, which admits control characters (invalid inside JSON strings, so
 * `JSON.parse` fails): they are excluded; free-form arrays and objects allow unbounded whitespace: bounded like
 * the rest.
 */
export function fixEbnf(ebnf: string): string {
  return ebnf
    .replaceAll(String.raw`[^"\\\r\n]`, String.raw`[^\0-\x1f\"\\\r\n]`)
    .replaceAll(String.raw`[ \n\t]*`, String.raw`[ \n\t]{0,${MAX_BLANKS}}`);
}

const compilers = new WeakMap<ChatTokenizer, Promise<Compiler>>();

class XgrammarConstraint implements TokenConstraint {
  private state = 0;
  constructor(
    private readonly m: GrammarMatcher,
    private readonly utf8: Utf8Masks,
  ) {}
  async allowed(): Promise<Int32Array> {
    const mask = await this.m.getNextTokenBitmask();
    const wellFormed = this.utf8.masks[this.state]!;
    for (let i = 0; i < mask.length; i++) mask[i]! &= wellFormed[i]!;
    return mask;
  }
  accept(token: number): boolean {
    const q = this.utf8.next[this.state]![token]!;
    if (q < 0 || !this.m.acceptToken(token)) return false;
    this.state = q;
    return true;
  }
  dispose(): void {
    this.m.dispose();
  }
}

/** The constraint factory of a format for a model: see `tokenizerConstraint`. */
export function formatConstraint(model: Model, format: StructuredFormat): Promise<ConstraintFactory> {
  if (!model.tokenizer) throw new Error("structured outputs need the model's tokenizer (tokenizer.json)");
  return tokenizerConstraint(model.tokenizer, model.config.vocabSize, format);
}

/**
 * The constraint factory of a format over a tokenizer's vocabulary (`vocabSize` = the logits' width; compiled
 * once per tokenizer and schema; end of sequence = the tokenizer's EOS ids). Rejects, naming the format, when
 * xgrammar cannot compile the schema.
 */
export async function tokenizerConstraint(
  tok: ChatTokenizer,
  vocabSize: number,
  format: GrammarSpec,
): Promise<ConstraintFactory> {
  let c = compilers.get(tok);
  if (!c) {
    c = Compiler.create(tok, vocabSize, tok.eosIds);
    compilers.set(tok, c);
  }
  const compiler = await c;
  let grammar: CompiledGrammar;
  try {
    grammar = await compiler.grammar(format);
  } catch (e) {
    const what = format.type === "json_schema" ? `json_schema "${format.name}"` : format.type;
    throw new Error(`response_format ${what}: the schema cannot be compiled to a grammar: ${String(e)}`, {
      cause: e,
    });
  }
  return async () =>
    new XgrammarConstraint(
      await xgrammar().GrammarMatcher.createGrammarMatcher(grammar, compiler.stopIds),
      compiler.utf8,
    );
}

/**
 * A forced tool call (`tool_choice` "required" or a named function): the completion is exactly one
 * `<tool_call>\n{"name": …, "arguments": {…}}\n</tool_call>`, the arguments valid for the tool's parameters.
 */
export function toolCallConstraint(model: Model, tools: ToolDef[], choice: ToolChoice): Promise<ConstraintFactory> {
  if (!model.tokenizer) throw new Error("tool calls need the model's tokenizer (tokenizer.json)");
  return tokenizerConstraint(model.tokenizer, model.config.vocabSize, {
    type: "json_schema",
    name: "tool_call",
    strict: false,
    schema: toolCallSchema(tools, choice),
    wrap: ["<tool_call>\n", "\n</tool_call>"],
  });
}
