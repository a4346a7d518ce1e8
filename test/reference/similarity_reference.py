"""Reference values for the text_similarity metrics (grader-sidecar/src/similarity/).

Writes a JSON fixture of (input, reference) pairs -- hand-written edge cases plus seeded random
pairs -- scored by the Python libraries the TypeScript port must agree with (to 1e-6):

  fuzzy_match  rapidfuzz.fuzz.WRatio(input, reference) / 100            (C++ implementation)
  bleu         sacrebleu.sentence_bleu(input, [reference]).score / 100  (13a, exp smoothing)
  gleu         nltk sentence_gleu([ref_tokens], hyp_tokens)
  meteor       nltk meteor_score([ref_tokens], hyp_tokens), WordNet stage disabled (no synsets)
  rouge_*      rouge_score RougeScorer([...], use_stemmer=True).score(reference, input) F-measure

Tokens for GLEU and METEOR: sacrebleu's 13a tokenization (as BLEU applies it) split on spaces,
because NLTK's word_tokenize needs punkt data that cannot be downloaded here.

Usage: python similarity_reference.py OUT.json
"""

import json
import random
import sys

import nltk
import rapidfuzz
import rouge_score
import sacrebleu
from nltk.stem.porter import PorterStemmer
from nltk.translate.gleu_score import sentence_gleu
from nltk.translate.meteor_score import meteor_score
from rapidfuzz import fuzz
from rouge_score import rouge_scorer
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

ROUGE_TYPES = ["rouge1", "rouge2", "rouge3", "rouge4", "rouge5", "rougeL"]
SCORER = rouge_scorer.RougeScorer(ROUGE_TYPES, use_stemmer=True)
TOKENIZER = Tokenizer13a()
STEMMER = PorterStemmer()


class NoWordNet:
    """A WordNet with no synsets: METEOR's synonym stage matches nothing."""

    def synsets(self, _word):
        return []


NO_WORDNET = NoWordNet()


def tokens(text):
    return TOKENIZER(text.rstrip()).split()


def score_all(inp, ref):
    hyp_tokens = tokens(inp)
    ref_tokens = tokens(ref)
    rouge = SCORER.score(ref, inp)
    out = {
        "fuzzy_match": fuzz.WRatio(inp, ref) / 100,
        "bleu": sacrebleu.sentence_bleu(inp, [ref]).score / 100,
        "gleu": sentence_gleu([ref_tokens], hyp_tokens),
        "meteor": meteor_score([ref_tokens], hyp_tokens, stemmer=STEMMER, wordnet=NO_WORDNET),
    }
    for i in range(1, 6):
        out[f"rouge_{i}"] = rouge[f"rouge{i}"].fmeasure
    out["rouge_l"] = rouge["rougeL"].fmeasure
    return {k: float(v) for k, v in out.items()}


LONG_A = (
    "The quick brown fox jumps over the lazy dog while the farmer, who was generally "
    "considered an organizational genius, watched happily from the porch. Later that day "
    "the dogs were running around the fields and the foxes had disappeared into the woods."
)
LONG_B = (
    "A quick brown fox jumped over lazy dogs as the farmer (an organisational genius, "
    "generally speaking) watched from his porch; later the dog ran around the field and "
    "the fox disappeared into the forest."
)

HAND_WRITTEN = [
    ("", ""),
    ("", "reference text"),
    ("input text", ""),
    (" ", " "),
    ("   ", "a"),
    ("a", "   "),
    ("\t\n", "\n"),
    ("a", "a"),
    ("a", "b"),
    ("ab", "ba"),
    ("The cat sat on the mat.", "The cat sat on the mat."),
    ("the cat sat on the mat", "The Cat Sat On The Mat"),
    ("THE CAT", "the cat"),
    ("The cat sat on the mat.", "The mat sat on the cat."),
    ("cat the mat on sat the", "the cat sat on the mat"),
    ("Hello, world!", "Hello world"),
    ("Hello,world!", "hello , world !"),
    ("!!!", "???"),
    ("...", "..."),
    (".,;:!?", "-- -- --"),
    ("e.g. i.e. etc.", "eg ie etc"),
    ("3.14159", "3.14"),
    ("1,000,000 dollars", "1000000 dollars"),
    ("pages 10-20", "pages 10 - 20"),
    ("state-of-the-art model", "state of the art model"),
    ("end-\nof-line hyphen", "endof-line hyphen"),
    ("&quot;quoted&quot; &amp; &lt;tag&gt;", '"quoted" & <tag>'),
    ("<skipped> text", "text"),
    ("café naïve résumé", "cafe naive resume"),
    ("Straße", "STRASSE"),
    ("İstanbul", "istanbul"),
    ("\u212a kelvin", "k kelvin"),
    ("ΟΔΟΣ οδός", "οδος ΟΔΟΣ"),
    ("日本語のテキスト", "日本語テキスト"),
    ("emoji 😀 test 🎉", "emoji 😀 test"),
    ("😀😀😀", "😀"),
    ("😀a", "a😀"),
    ("tabs\tand\nnewlines", "tabs and newlines"),
    ("non\u00a0breaking\u2003spaces", "non breaking spaces"),
    ("zero\u200bwidth", "zerowidth"),
    # rapidfuzz splits words on U+0085/U+00A0 only in strings holding a code point above U+00FF
    ("a\u00a0b c", "c b a"),
    ("a\u00a0b c \u0100", "c b a \u0100"),
    ("x\u0085y z", "z y x"),
    ("x\u0085y z \U0001f600", "z y x \U0001f600"),
    ("\u00a0\u00a0", "a"),
    ("na\u00efve\u00a0caf\u00e9 word", "word caf\u00e9 na\u00efve"),
    ("the the the the the", "the"),
    ("the", "the the the the the"),
    ("a a a b b b", "b b b a a a"),
    ("new york mets vs atlanta braves", "atlanta braves vs new york mets"),
    ("new york mets", "new york mets vs atlanta braves"),
    ("fuzzy wuzzy was a bear", "wuzzy fuzzy was a bear"),
    ("fuzzy was a bear", "fuzzy fuzzy was a bear"),
    ("this is a test", "this is a test!"),
    ("what a wonderful day", "wonderful"),
    ("wonderful", "what a wonderful day it has been for all of us here today"),
    ("abc", "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxabcxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"),
    ("needle", "haystack haystack haystack needle haystack haystack haystack haystack"),
    ("neddle", "haystack haystack haystack needle haystack haystack haystack haystack"),
    ("x", "y" * 200),
    ("hello", "hello" * 40),
    ("generalization generalizations generalize", "general generally generality"),
    ("running runs ran runner", "run run run run"),
    ("skies dying lying tying news innings", "sky die lie tie news inning"),
    ("hopping hoped hoping agreed feed", "hop hope hope agree fee"),
    ("relational conditional rational valency", "relate condition ration valenci"),
    ("happily happiness happy", "happi happi happi"),
    ("The cats are running quickly", "A cat is running quick"),
    ("organizations organized organizing", "organ organization organize"),
    ("I'm can't won't it's", "I am cannot will not it is"),
    ("Numbers: 1 2 3 4 5 6 7 8 9 10", "Numbers: 10 9 8 7 6 5 4 3 2 1"),
    ("one two three four five six", "one two three four five six seven"),
    ("one two three four five", "two three four five six"),
    ("a b c d e f g h", "a b c d e f g h"),
    ("a b c d", "d c b a"),
    (LONG_A, LONG_B),
    (LONG_B, LONG_A),
    (LONG_A, LONG_A[:60]),
    (LONG_A[:60], LONG_A),
    (LONG_A[40:140], LONG_A),
    (LONG_A * 3, LONG_B),
    ("The model outputs 42.", "42"),
    ("42", "The answer is 42."),
    ("Paris", "The capital of France is Paris."),
    ("The capital of France is Paris.", "Paris is the capital of France."),
    ("x*ded y*ding", "x*d y*d"),
    ("sses ies ss s", "ss i ss"),
    ("yyyy yes yay", "yy ye ya"),
    ("ALL CAPS SENTENCE HERE", "all caps sentence here"),
    # more than 1350 distinct tokens: ROUGE-5 n-gram keys no longer fit a float64 integer
    (" ".join(f"t{i}" for i in range(1600) if i % 7), " ".join(f"t{i}" for i in range(1600) if i % 5)),
    ("Mixed CASE words Words WORDS", "mixed case words words words"),
]

VOCAB = (
    "the a an of to and in on at for with by from cat cats dog dogs fox foxes run runs running "
    "ran runner quick quickly slow slowly happy happily happiness general generally generalization "
    "organize organized organization relational conditional model models train training trained "
    "reward rewards grader graders answer answers correct incorrect value values 42 3.14 1,000 "
    "2024 France Paris capital city cities big bigger biggest is are was were be been being "
    "hopping hoped agree agreed feed feeds news sky skies dying lies lying tie tying innings "
    "computer computing computation compute computes state-of-the-art e.g. U.S. Dr. don't it's"
).split()
PUNCT = [".", ",", "!", "?", ";", ":", "(", ")", '"', "'", "-", "&", "&amp;", "/", "..."]
UNICODE_WORDS = ["café", "naïve", "Straße", "日本", "語", "😀", "🎉", "Ωmega", "İzmir", "ñandú", "Ελλάδα"]


def random_sentence(rng, n_words, unicode_rate=0.0, punct_rate=0.1):
    words = []
    for _ in range(n_words):
        if rng.random() < unicode_rate:
            words.append(rng.choice(UNICODE_WORDS))
        else:
            words.append(rng.choice(VOCAB))
        if rng.random() < punct_rate:
            words.append(rng.choice(PUNCT))
    sentence = " ".join(words)
    if rng.random() < 0.5:
        sentence = sentence[:1].upper() + sentence[1:]
    if rng.random() < 0.5:
        sentence += rng.choice([".", "!", "?", ""])
    return sentence


def typo(rng, text, n):
    chars = list(text)
    alphabet = "abcdefghijklmnopqrstuvwxyz "
    for _ in range(n):
        op = rng.randrange(3)
        pos = rng.randrange(len(chars) + 1)
        if op == 0:
            chars.insert(pos, rng.choice(alphabet))
        elif op == 1 and chars:
            del chars[min(pos, len(chars) - 1)]
        elif chars:
            chars[min(pos, len(chars) - 1)] = rng.choice(alphabet)
    return "".join(chars)


def perturb(rng, ref):
    words = ref.split()
    kind = rng.randrange(12)
    if kind == 0:
        return ref
    if kind == 1 and len(words) > 1:
        keep = [w for w in words if rng.random() > 0.3]
        return " ".join(keep)
    if kind == 2:
        rng.shuffle(words)
        return " ".join(words)
    if kind == 3:
        return typo(rng, ref, rng.randint(1, 8))
    if kind == 4:
        return ref.upper() if rng.random() < 0.5 else ref.lower()
    if kind == 5:
        return random_sentence(rng, rng.randint(1, 25))
    if kind == 6:
        return ref + " " + random_sentence(rng, rng.randint(5, 40))
    if kind == 7 and len(ref) > 4:
        start = rng.randrange(len(ref) // 2)
        return ref[start : start + rng.randint(1, max(1, len(ref) - start))]
    if kind == 8:
        return " ".join(w for w in words for _ in range(rng.randint(1, 3)))
    if kind == 9:
        return random_sentence(rng, rng.randint(1, 6)) + " " + ref + " " + random_sentence(rng, rng.randint(1, 6))
    if kind == 10:
        return typo(rng, " ".join(reversed(words)), rng.randint(0, 4))
    return ref.replace(" ", rng.choice(["  ", "\t", "\n", " , "]))


def random_chars(rng, alphabet, n):
    return "".join(rng.choice(alphabet) for _ in range(n))


def generated_pairs(seed):
    rng = random.Random(seed)
    pairs = []
    # sentence-level pairs, the common grading shape
    for _ in range(260):
        ref = random_sentence(rng, rng.randint(1, 30))
        inp = perturb(rng, ref)
        pairs.append((inp, ref) if rng.random() < 0.8 else (ref, inp))
    # unicode-heavy sentences
    for _ in range(40):
        ref = random_sentence(rng, rng.randint(1, 15), unicode_rate=0.4)
        inp = perturb(rng, ref)
        pairs.append((inp, ref))
    # character-level strings over small alphabets: every WRatio branch and partial_ratio
    # alignment (needles shorter and longer than 64, length ratios around 1.5 and 8)
    for _ in range(200):
        alphabet = rng.choice(["ab ", "abc ", "abcde ", "abcdefgh  ", "xyz", "a😀b ", "αβγ δ"])
        la = rng.choice([1, 2, 3, 5, 8, 13, 20, 31, 32, 33, 40, 63, 64, 65, 66, 80, 100, 130])
        ratio = rng.choice([1.0, 1.2, 1.49, 1.5, 1.51, 2.0, 3.0, 7.9, 8.0, 8.1, 12.0])
        lb = max(1, int(la * ratio))
        a = random_chars(rng, alphabet, la)
        b = random_chars(rng, alphabet, lb)
        if rng.random() < 0.4 and lb > la:
            start = rng.randrange(lb - la + 1)
            b = b[:start] + typo(rng, a, rng.randint(0, 3)) + b[start + la :]
        pairs.append((a, b) if rng.random() < 0.5 else (b, a))
    # long texts (paragraphs)
    for _ in range(20):
        ref = random_sentence(rng, rng.randint(60, 160), punct_rate=0.15)
        inp = perturb(rng, ref)
        pairs.append((inp, ref))
    return pairs


def main():
    out_path = sys.argv[1]
    pairs = list(HAND_WRITTEN) + generated_pairs(20240611)
    cases = [{"input": inp, "reference": ref, "scores": score_all(inp, ref)} for inp, ref in pairs]
    fixture = {
        "generated_by": "test/reference/similarity_reference.py (via make-similarity-fixture.sh)",
        "versions": {
            "python": sys.version.split()[0],
            "rapidfuzz": rapidfuzz.__version__,
            "rapidfuzz_wratio_impl": fuzz.WRatio.__module__,
            "sacrebleu": sacrebleu.__version__,
            "nltk": nltk.__version__,
            "rouge_score": getattr(rouge_score, "__version__", "0.1.2"),
        },
        "metrics": list(cases[0]["scores"].keys()),
        "cases": cases,
    }
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(fixture, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {len(cases)} cases to {out_path}")


if __name__ == "__main__":
    main()
