// NLTK's PorterStemmer in its default NLTK_EXTENSIONS mode (nltk 3.9.1, nltk/stem/porter.py),
// ported rule for rule so that ROUGE (rouge-score, use_stemmer=True) and METEOR's stem stage
// produce the same stems as the Python libraries. Python indexes strings by code point; words
// holding astral characters are mapped onto private-use BMP placeholders first so that string
// indexing here is code-point indexing too (the algorithm treats every non-ASCII letter alike).

type Condition = ((stem: string) => boolean) | null;
type Rule = readonly [suffix: string, replacement: string, condition: Condition];

const POOL: ReadonlyMap<string, string> = new Map([
  ["sky", "sky"],
  ["skies", "sky"],
  ["dying", "die"],
  ["lying", "lie"],
  ["tying", "tie"],
  ["news", "news"],
  ["innings", "inning"],
  ["inning", "inning"],
  ["outings", "outing"],
  ["outing", "outing"],
  ["cannings", "canning"],
  ["canning", "canning"],
  ["howe", "howe"],
  ["proceed", "proceed"],
  ["exceed", "exceed"],
  ["succeed", "succeed"],
]);

function isVowelChar(c: string): boolean {
  return c === "a" || c === "e" || c === "i" || c === "o" || c === "u";
}

/** `_is_consonant(word, i)`: a, e, i, o, u are vowels; y is a vowel after a consonant. */
function isConsonant(word: string, i: number): boolean {
  const c = word[i] as string;
  if (isVowelChar(c)) return false;
  if (c === "y") return i === 0 ? true : !isConsonant(word, i - 1);
  return true;
}

/** m in [C](VC)^m[V]: the number of vowel→consonant transitions. */
function measure(stem: string): number {
  let m = 0;
  let prevVowel = false;
  for (let i = 0; i < stem.length; i++) {
    const cons = isConsonant(stem, i);
    if (cons && prevVowel) m++;
    prevVowel = !cons;
  }
  return m;
}

const positiveMeasure = (stem: string): boolean => measure(stem) > 0;
const measureGt1 = (stem: string): boolean => measure(stem) > 1;

function containsVowel(stem: string): boolean {
  for (let i = 0; i < stem.length; i++) if (!isConsonant(stem, i)) return true;
  return false;
}

function endsDoubleConsonant(word: string): boolean {
  const n = word.length;
  return n >= 2 && word[n - 1] === word[n - 2] && isConsonant(word, n - 1);
}

/** Condition *o, with NLTK's extension for two-letter stems (vowel + consonant). */
function endsCvc(word: string): boolean {
  const n = word.length;
  if (n >= 3) {
    const last = word[n - 1];
    if (
      isConsonant(word, n - 3) &&
      !isConsonant(word, n - 2) &&
      isConsonant(word, n - 1) &&
      last !== "w" &&
      last !== "x" &&
      last !== "y"
    ) {
      return true;
    }
  }
  return n === 2 && !isConsonant(word, 0) && isConsonant(word, 1);
}

function dropSuffix(word: string, suffix: string): string {
  return suffix.length === 0 ? word : word.slice(0, word.length - suffix.length);
}

function applyRuleList(word: string, rules: readonly Rule[]): string {
  for (const [suffix, replacement, condition] of rules) {
    if (suffix === "*d" && endsDoubleConsonant(word)) {
      const stem = word.slice(0, -2);
      return condition === null || condition(stem) ? stem + replacement : word;
    }
    if (word.endsWith(suffix)) {
      const stem = dropSuffix(word, suffix);
      return condition === null || condition(stem) ? stem + replacement : word;
    }
  }
  return word;
}

const STEP1A: readonly Rule[] = [
  ["sses", "ss", null],
  ["ies", "i", null],
  ["ss", "ss", null],
  ["s", "", null],
];

function step1a(word: string): string {
  if (word.endsWith("ies") && word.length === 4) return `${dropSuffix(word, "ies")}ie`;
  return applyRuleList(word, STEP1A);
}

function step1b(word: string): string {
  if (word.endsWith("ied")) return dropSuffix(word, "ied") + (word.length === 4 ? "ie" : "i");
  if (word.endsWith("eed")) {
    const stem = dropSuffix(word, "eed");
    return measure(stem) > 0 ? `${stem}ee` : word;
  }
  let stem: string | null = null;
  for (const suffix of ["ed", "ing"]) {
    if (word.endsWith(suffix)) {
      const candidate = dropSuffix(word, suffix);
      if (containsVowel(candidate)) {
        stem = candidate;
        break;
      }
    }
  }
  if (stem === null) return word;
  const inter = stem;
  const last = inter[inter.length - 1] as string;
  return applyRuleList(inter, [
    ["at", "ate", null],
    ["bl", "ble", null],
    ["iz", "ize", null],
    ["*d", last, () => last !== "l" && last !== "s" && last !== "z"],
    ["", "e", (s) => measure(s) === 1 && endsCvc(s)],
  ]);
}

const STEP1C: readonly Rule[] = [["y", "i", (stem) => stem.length > 1 && isConsonant(stem, stem.length - 1)]];

const STEP2_BASE: readonly Rule[] = [
  ["ational", "ate", positiveMeasure],
  ["tional", "tion", positiveMeasure],
  ["enci", "ence", positiveMeasure],
  ["anci", "ance", positiveMeasure],
  ["izer", "ize", positiveMeasure],
  ["bli", "ble", positiveMeasure],
  ["alli", "al", positiveMeasure],
  ["entli", "ent", positiveMeasure],
  ["eli", "e", positiveMeasure],
  ["ousli", "ous", positiveMeasure],
  ["ization", "ize", positiveMeasure],
  ["ation", "ate", positiveMeasure],
  ["ator", "ate", positiveMeasure],
  ["alism", "al", positiveMeasure],
  ["iveness", "ive", positiveMeasure],
  ["fulness", "ful", positiveMeasure],
  ["ousness", "ous", positiveMeasure],
  ["aliti", "al", positiveMeasure],
  ["iviti", "ive", positiveMeasure],
  ["biliti", "ble", positiveMeasure],
  ["fulli", "ful", positiveMeasure],
];

function step2(word: string): string {
  if (word.endsWith("alli") && positiveMeasure(dropSuffix(word, "alli"))) {
    return step2(`${dropSuffix(word, "alli")}al`);
  }
  // NLTK's "logi" rule measures the word minus "ogi" (i.e. the stem plus its "l").
  return applyRuleList(word, [...STEP2_BASE, ["logi", "log", () => positiveMeasure(word.slice(0, -3))]]);
}

const STEP3: readonly Rule[] = [
  ["icate", "ic", positiveMeasure],
  ["ative", "", positiveMeasure],
  ["alize", "al", positiveMeasure],
  ["iciti", "ic", positiveMeasure],
  ["ical", "ic", positiveMeasure],
  ["ful", "", positiveMeasure],
  ["ness", "", positiveMeasure],
];

const STEP4: readonly Rule[] = [
  ["al", "", measureGt1],
  ["ance", "", measureGt1],
  ["ence", "", measureGt1],
  ["er", "", measureGt1],
  ["ic", "", measureGt1],
  ["able", "", measureGt1],
  ["ible", "", measureGt1],
  ["ant", "", measureGt1],
  ["ement", "", measureGt1],
  ["ment", "", measureGt1],
  ["ent", "", measureGt1],
  ["ion", "", (stem) => measure(stem) > 1 && (stem.endsWith("s") || stem.endsWith("t"))],
  ["ou", "", measureGt1],
  ["ism", "", measureGt1],
  ["ate", "", measureGt1],
  ["iti", "", measureGt1],
  ["ous", "", measureGt1],
  ["ive", "", measureGt1],
  ["ize", "", measureGt1],
];

function step5a(word: string): string {
  if (word.endsWith("e")) {
    const stem = word.slice(0, -1);
    const m = measure(stem);
    if (m > 1) return stem;
    if (m === 1 && !endsCvc(stem)) return stem;
  }
  return word;
}

function step5b(word: string): string {
  return applyRuleList(word, [["ll", "l", () => measure(word.slice(0, -1)) > 1]]);
}

function stemBmp(word: string, lowered: string): string {
  if (POOL.has(word)) return POOL.get(lowered) as string;
  if (word.length <= 2) return lowered;
  let s = step1a(lowered);
  s = step1b(s);
  s = applyRuleList(s, STEP1C);
  s = step2(s);
  s = applyRuleList(s, STEP3);
  s = applyRuleList(s, STEP4);
  s = step5a(s);
  return step5b(s);
}

const HAS_SURROGATE = /[\uD800-\uDFFF]/;

const CACHE_LIMIT = 50_000;
const cache = new Map<string, string>();

/** `PorterStemmer().stem(word)` (to_lowercase=True). Memoized: a grader sees the same words often. */
export function porterStem(word: string): string {
  let stem = cache.get(word);
  if (stem === undefined) {
    stem = stemUncached(word);
    if (cache.size >= CACHE_LIMIT) cache.clear();
    cache.set(word, stem);
  }
  return stem;
}

function stemUncached(word: string): string {
  const lowered = word.toLowerCase();
  if (!HAS_SURROGATE.test(word) && !HAS_SURROGATE.test(lowered)) return stemBmp(word, lowered);
  // Map each astral code point onto an unused private-use BMP character and back afterwards.
  const forward = new Map<string, string>();
  const back = new Map<string, string>();
  let next = 0xe000;
  const used = new Set([...word, ...lowered]);
  const encode = (s: string): string => {
    let out = "";
    for (const ch of s) {
      if (ch.length === 1) {
        out += ch;
        continue;
      }
      let p = forward.get(ch);
      if (p === undefined) {
        while (used.has(String.fromCharCode(next))) next++;
        p = String.fromCharCode(next++);
        forward.set(ch, p);
        back.set(p, ch);
      }
      out += p;
    }
    return out;
  };
  const stemmed = stemBmp(encode(word), encode(lowered));
  let out = "";
  for (const ch of stemmed) out += back.get(ch) ?? ch;
  return out;
}
