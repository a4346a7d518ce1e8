/**
 * Tokenizer and chat template: `tokenizer.json` through @huggingface/tokenizers, the chat template of
 * `tokenizer_config.json` through @huggingface/jinja. Also makes the byte-level tokenizer `init-model` writes.
 */
import { Template } from "@huggingface/jinja";
import { Tokenizer } from "@huggingface/tokenizers";

export interface ChatMessage {
  role: string;
  content: string;
  /** Hugging Face's tool-use fields (trainer/sampling/tools.ts fills them for templates that read `tools`). */
  tool_calls?: unknown[];
  tool_call_id?: string;
  name?: string;
}

export interface TokenizerFiles {
  tokenizerJson: Record<string, unknown>;
  tokenizerConfig: Record<string, unknown>;
}

export class TokenizerError extends Error {
  override name = "TokenizerError";
}

function tokenString(v: unknown): string | null {
  if (typeof v === "string") return v;
  if (v && typeof v === "object" && typeof (v as { content?: unknown }).content === "string")
    return (v as { content: string }).content;
  return null;
}

/**
 * The tokenizer.json to hand @huggingface/tokenizers, rewritten where that library reads a definition
 * differently from Rust `tokenizers` (what transformers runs). Its `Digits` pre-tokenizer splits on JavaScript's
 * `\d`, which matches ASCII digits only even with the `u` flag, while Rust's splits on `char::is_numeric`
 * (Unicode categories Nd, Nl, No, i.e. `\p{N}`): SmolLM2's `Digits(individual_digits)` then keeps " ٣" together
 * here but not in Python. The equivalent `Split` on `\p{N}` (isolated; `\p{N}+` for contiguous digits) reads
 * the same in both. The files themselves are kept as given.
 */
export function portableTokenizerJson(json: Record<string, unknown>): Record<string, unknown> {
  const fix = (node: unknown): unknown => {
    if (!node || typeof node !== "object") return node;
    const n = node as Record<string, unknown>;
    if (n["type"] === "Digits") {
      return {
        type: "Split",
        pattern: { Regex: n["individual_digits"] === true ? "\\p{N}" : "\\p{N}+" },
        behavior: "Isolated",
        invert: false,
      };
    }
    if (n["type"] === "Sequence" && Array.isArray(n["pretokenizers"])) {
      return { ...n, pretokenizers: n["pretokenizers"].map(fix) };
    }
    return node;
  };
  const pre = json["pre_tokenizer"];
  const fixed = fix(pre);
  return fixed === pre ? json : { ...json, pre_tokenizer: fixed };
}

export class ChatTokenizer {
  private readonly tok: Tokenizer;
  private readonly template: Template | null;
  /** The chat template's source (null without one). */
  readonly templateSource: string | null;
  readonly eosIds: number[];
  readonly padId: number | null;
  readonly specialIds: Set<number>;

  constructor(
    readonly files: TokenizerFiles,
    configEosIds: number[] = [],
  ) {
    try {
      this.tok = new Tokenizer(portableTokenizerJson(files.tokenizerJson), files.tokenizerConfig);
    } catch (e) {
      throw new TokenizerError(`tokenizer.json: cannot build the tokenizer: ${(e as Error).message}`);
    }
    let tpl = files.tokenizerConfig["chat_template"];
    if (Array.isArray(tpl))
      tpl = (tpl as { name: string; template: string }[]).find((t) => t.name === "default")?.template;
    this.templateSource = typeof tpl === "string" ? tpl : null;
    try {
      this.template = typeof tpl === "string" ? new Template(tpl) : null;
    } catch (e) {
      throw new TokenizerError(`tokenizer_config.json: chat_template does not parse: ${(e as Error).message}`);
    }
    const eosTok = tokenString(files.tokenizerConfig["eos_token"]);
    const eos = new Set(configEosIds);
    if (eosTok !== null) {
      const id = this.tok.token_to_id(eosTok);
      if (id !== undefined) eos.add(id);
    }
    this.eosIds = [...eos];
    const padTok = tokenString(files.tokenizerConfig["pad_token"]);
    this.padId = padTok === null ? null : (this.tok.token_to_id(padTok) ?? null);
    this.specialIds = new Set(
      [...this.tok.get_added_tokens_decoder().entries()].filter(([, t]) => t.special).map(([id]) => id),
    );
  }

  get hasChatTemplate(): boolean {
    return this.template !== null;
  }

  encode(text: string): number[] {
    return this.tok.encode(text, { add_special_tokens: false }).ids;
  }

  decode(ids: number[], skipSpecial = true): string {
    if (ids.length === 0) return ""; // the library rejects an empty list; a sample may end at once
    return this.tok.decode(ids, { skip_special_tokens: skipSpecial });
  }

  vocabSize(): number {
    return this.tok.get_vocab(true).size;
  }

  /** The vocabulary symbol of an id (for byte-level BPE, bytes mapped to printable characters). */
  tokenToSymbol(id: number): string | undefined {
    return this.tok.id_to_token(id);
  }

  tokenToId(token: string): number | undefined {
    return this.tok.token_to_id(token);
  }

  /**
   * Renders messages through the chat template (Jinja), as transformers' apply_chat_template does; `tools`
   * (function definitions) are handed to the template as transformers hands them.
   */
  applyChatTemplate(messages: ChatMessage[], addGenerationPrompt: boolean, tools?: unknown[]): string {
    if (!this.template) throw new TokenizerError("tokenizer_config.json has no chat_template");
    const cfg = this.files.tokenizerConfig;
    return this.template.render({
      messages,
      ...(tools?.length ? { tools } : {}),
      add_generation_prompt: addGenerationPrompt,
      bos_token: tokenString(cfg["bos_token"]) ?? "",
      eos_token: tokenString(cfg["eos_token"]) ?? "",
      pad_token: tokenString(cfg["pad_token"]) ?? "",
      unk_token: tokenString(cfg["unk_token"]) ?? "",
    });
  }
}

/** tokenizer.json's `model` for a byte-level BPE vocabulary and its merges (no unk token, no byte fallback). */
export function bpeModel(vocab: Record<string, number>, merges: [string, string][]): Record<string, unknown> {
  return {
    type: "BPE",
    dropout: null,
    unk_token: null,
    continuing_subword_prefix: null,
    end_of_word_suffix: null,
    fuse_unk: false,
    byte_fallback: false,
    ignore_merges: false,
    vocab,
    merges,
  };
}

/** GPT-2's byte → printable-unicode map used by byte-level BPE. */
export function bytesToUnicode(): string[] {
  const bs: number[] = [];
  for (let i = 33; i <= 126; i++) bs.push(i);
  for (let i = 161; i <= 172; i++) bs.push(i);
  for (let i = 174; i <= 255; i++) bs.push(i);
  const cs = [...bs];
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (!bs.includes(b)) {
      bs.push(b);
      cs.push(256 + n);
      n++;
    }
  }
  const out: string[] = new Array(256);
  bs.forEach((b, i) => {
    out[b] = String.fromCodePoint(cs[i]!);
  });
  return out;
}

export const BYTE_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] as const;

/** ChatML, the template of Qwen2-style chat models (kept simple: no tools, no system-prompt default). */
export const CHATML_TEMPLATE =
  "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/**
 * A byte-level tokenizer: 256 byte tokens (ids 0–255 in byte order) plus `<|endoftext|>` (256),
 * `<|im_start|>` (257), `<|im_end|>` (258); BPE with no merges, so every byte is one token. Loadable by
 * @huggingface/tokenizers and by Python `tokenizers`/`transformers`.
 */
export function byteLevelTokenizer(
  modelMaxLength = 2048,
): TokenizerFiles & { vocabSize: number; eosId: number; padId: number } {
  const map = bytesToUnicode();
  const vocab: Record<string, number> = {};
  for (let b = 0; b < 256; b++) vocab[map[b]!] = b;
  const added = BYTE_SPECIAL_TOKENS.map((content, i) => ({
    id: 256 + i,
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  }));
  const tokenizerJson = {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: null,
    pre_tokenizer: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: false },
    post_processor: null,
    decoder: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: false },
    model: bpeModel(vocab, []),
  };
  const addedDecoder: Record<string, unknown> = {};
  for (const a of added) {
    const { id, ...rest } = a;
    addedDecoder[String(id)] = rest;
  }
  const tokenizerConfig = {
    tokenizer_class: "PreTrainedTokenizerFast",
    added_tokens_decoder: addedDecoder,
    bos_token: null,
    eos_token: "<|im_end|>",
    pad_token: "<|endoftext|>",
    unk_token: null,
    model_max_length: modelMaxLength,
    clean_up_tokenization_spaces: false,
    chat_template: CHATML_TEMPLATE,
  };
  return { tokenizerJson, tokenizerConfig, vocabSize: 256 + added.length, eosId: 258, padId: 256 };
}
