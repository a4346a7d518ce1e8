// sacrebleu's default "13a" tokenizer (sacrebleu 2.4.3: tokenizers/tokenizer_13a.py + tokenizer_re.py),
// applied the way BLEU applies it (`_preprocess_segment`: rstrip, then tokenize), plus Python's
// notion of whitespace for `str.split()` / `str.rstrip()`. The regexes run on UTF-16 units; where
// `[^0-9]` meets a surrogate pair it matches one half and inserts the same spaces Python's
// code-point matching does.

/** Characters for which Python's `str.isspace()` is true (`str.split()` separators). */
const PY_WS = "\\t\\n\\v\\f\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";
const PY_WS_RUN = new RegExp(`[${PY_WS}]+`);
const PY_WS_TRAILING = new RegExp(`[${PY_WS}]+$`);

/** Python `s.split()` (no argument): split on runs of whitespace, no empty fields. */
export function pySplit(s: string): string[] {
  const parts = s.split(PY_WS_RUN);
  let start = 0;
  let end = parts.length;
  if (end > 0 && parts[0] === "") start = 1;
  if (end > start && parts[end - 1] === "") end--;
  return start === 0 && end === parts.length ? parts : parts.slice(start, end);
}

/** Python `s.rstrip()`. */
export function pyRstrip(s: string): string {
  return s.replace(PY_WS_TRAILING, "");
}

// sacrebleu's class is [{-~[-` -&(-+:-@/]; it also pads every space with spaces, which changes
// nothing once whitespace is collapsed (a run of spaces matches the later rules exactly as one
// space does), so the space is left out of the class here: the same tokens, half the work.
const RE_SYMBOLS = /([{-~[-`!-&(-+:-@/])/g;
const RE_PERIOD_COMMA_AFTER = /([^0-9])([.,])/g;
const RE_PERIOD_COMMA_BEFORE = /([.,])([^0-9])/g;
const RE_DASH_AFTER_DIGIT = /([0-9])(-)/g;

/** `Tokenizer13a()(line)`: the tokenized line, tokens joined by single spaces. */
export function tokenizer13a(line: string): string {
  let s = line.replaceAll("<skipped>", "").replaceAll("-\n", "").replaceAll("\n", " ");
  if (s.includes("&")) {
    s = s.replaceAll("&quot;", '"').replaceAll("&amp;", "&").replaceAll("&lt;", "<").replaceAll("&gt;", ">");
  }
  s = ` ${s} `;
  s = s.replace(RE_SYMBOLS, " $1 ");
  s = s.replace(RE_PERIOD_COMMA_AFTER, "$1 $2 ");
  s = s.replace(RE_PERIOD_COMMA_BEFORE, " $1 $2");
  s = s.replace(RE_DASH_AFTER_DIGIT, "$1 $2 ");
  return pySplit(s).join(" ");
}

/**
 * The tokens sacrebleu's BLEU scores: `Tokenizer13a()(text.rstrip()).split()`. Also the tokenizer
 * used here for GLEU and METEOR (NLTK's word_tokenize needs punkt data that is not shipped).
 */
export function tokens13a(text: string): string[] {
  return pySplit(tokenizer13a(pyRstrip(text)));
}
