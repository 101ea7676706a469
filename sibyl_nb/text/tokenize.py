"""Words, terms and sentences: the one tokeniser every local technique shares.

Retrieval, ranking, validation and the local provider must agree on what a "term" is, or a sentence
the retriever found would not count as support for itself. So there is exactly one definition here:
lower-cased word tokens, stop words dropped, a light suffix-stripping stemmer ("used", "uses",
"using" and "use" all become "us").
"""

from __future__ import annotations

import re
from functools import lru_cache

__all__ = [
    "STOPWORDS",
    "wordlist",
    "words",
    "stem",
    "terms",
    "term_set",
    "sentences",
    "normalise",
    "jaccard",
    "expand_contractions",
]


def wordlist(text: str) -> list[str]:
    """Whitespace-separated words of a literal: keeps long word lists readable in source."""
    return text.split()


STOPWORDS = frozenset(
    wordlist("""
a an the and or but if then else of to in on at by for with about as into onto from up down over under
is are was were be been being am do does did doing done have has had having can could will would shall
should may might must i me my mine we us our ours you your yours he him his she her hers it its they
them their theirs this that these those there here what which who whom whose when where why how
not no nor so than too very just also only own same such both each few more most other some any all
s t don doesn didn isn aren wasn weren won wouldn couldn shouldn let lets let's please tell explain
describe know give show want like get got make use used uses using
""")
) - {"use", "used", "uses", "using", "make"}
# "use"/"make" stay content words: "What is Python used for?" needs "used" to match "is used for".

_WORD_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9+#]*(?:['’][A-Za-z]+)?")
# Sentence ends, marked with \x02 before splitting: closing quotes stay with their sentence; after
# quotes/brackets the next sentence must start with a capital (``print('hi!') writes`` is one sentence).
_SENT_MARKS = (
    (re.compile(r"([.!?][\"')\]]+)\s+(?=[\"'(\[`]?[A-Z0-9])"), "\\1\x02"),
    (re.compile(r"([.!?])\s+(?=\S)"), "\\1\x02"),
    (re.compile(r"\n\s*\n+"), "\x02"),
    (re.compile(r"\n(?=\s*(?:[-*•]|\d+[.)])\s)"), "\x02"),
)
_INITIAL_RE = re.compile(r"\b([A-Z])\.(?=\s+[A-Z])")  # "J. Smith": an initial, not a sentence end
_ABBREV = ("e.g.", "i.e.", "etc.", "vs.", "mr.", "mrs.", "dr.", "prof.", "al.", "approx.", "fig.")
_ABBREV_RES = tuple(re.compile(re.escape(ab), re.I) for ab in _ABBREV)

_CONTRACTIONS = {
    "what's": "what is",
    "who's": "who is",
    "where's": "where is",
    "how's": "how is",
    "it's": "it is",
    "that's": "that is",
    "there's": "there is",
    "when's": "when is",
    "why's": "why is",
    "isn't": "is not",
    "aren't": "are not",
    "doesn't": "does not",
    "don't": "do not",
    "didn't": "did not",
    "can't": "cannot",
    "won't": "will not",
    "i'm": "i am",
    "you're": "you are",
    "they're": "they are",
    "we're": "we are",
    "i've": "i have",
    "what're": "what are",
}
_CONTRACTION_RE = re.compile(r"\b(" + "|".join(re.escape(k) for k in _CONTRACTIONS) + r")\b", re.I)


def expand_contractions(text: str) -> str:
    """``What's it used for?`` -> ``What is it used for?`` (keeps the first letter's case)."""

    def repl(m: re.Match[str]) -> str:
        full = _CONTRACTIONS[m.group(0).lower().replace("’", "'")]
        return full[0].upper() + full[1:] if m.group(0)[0].isupper() else full

    return _CONTRACTION_RE.sub(repl, text.replace("’", "'"))


def words(text: str) -> list[str]:
    """Lower-cased word tokens (letters, digits, ``c++``/``c#`` kept whole)."""
    return [w.lower().replace("’", "'") for w in _WORD_RE.findall(text or "")]


@lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """A light, deterministic suffix stripper: enough to match inflections, never a dictionary."""
    w = word.lower()
    if w.endswith("'s"):
        w = w[:-2]
    if len(w) <= 2 or not w.isalpha():
        return w
    if w.endswith("ies") and len(w) > 4:
        w = w[:-3] + "y"
    elif w.endswith("sses"):
        w = w[:-2]
    elif w.endswith("s") and not w.endswith(("ss", "us", "is")):
        w = w[:-1]
    for suffix in ("ing", "ed"):
        if w.endswith(suffix) and len(w) - len(suffix) >= 2 and not w.endswith("eed"):
            w = w[: -len(suffix)]
            if len(w) > 3 and w[-1] == w[-2] and w[-1] not in "lsz":
                w = w[:-1]  # running -> run
            break
    if w.endswith(("er", "or")) and len(w) >= 6:
        w = w[:-2]  # creator -> creat, transformer -> transform
    elif w.endswith("e") and len(w) >= 3:
        w = w[:-1]  # use/used/uses/using -> us; create/created -> creat
    return w


def terms(text: str) -> list[str]:
    """Stemmed content words in order (duplicates kept): what BM25, embeddings and overlap use."""
    return list(_terms(text or ""))


@lru_cache(maxsize=32768)
def _terms(text: str) -> tuple[str, ...]:
    """Cached by text: every run tokenises the same corpus sentences and prompts again and again."""
    return tuple(stem(w) for w in words(expand_contractions(text)) if w not in STOPWORDS)


@lru_cache(maxsize=32768)
def term_set(text: str) -> frozenset[str]:
    """Distinct stemmed content words (cached: corpus sentences are compared again and again)."""
    return frozenset(_terms(text or ""))


def sentences(text: str) -> list[str]:
    """Split prose into sentences (and list items / paragraphs), skipping common abbreviations."""
    return list(_sentences(text or ""))


@lru_cache(maxsize=8192)
def _sentences(text: str) -> tuple[str, ...]:
    text = text.strip()
    if not text:
        return ()
    protected = _INITIAL_RE.sub(lambda m: m.group(1) + "\x01", text)
    for i, abbrev in enumerate(_ABBREV_RES):
        protected = abbrev.sub(f"\x00{i}\x00", protected)
    for pattern, repl in _SENT_MARKS:
        protected = pattern.sub(repl, protected)
    parts = protected.split("\x02")
    out = []
    for part in parts:
        if part is None:
            continue
        for i, ab in enumerate(_ABBREV):
            part = part.replace(f"\x00{i}\x00", ab)
        part = part.replace("\x01", ".")
        part = " ".join(part.split())
        if part:
            out.append(part)
    return tuple(out)


def normalise(text: str) -> str:
    """Case- and punctuation-insensitive key for "is this the same sentence/query?"."""
    return " ".join(words(text))


def jaccard(a: frozenset[str] | set[str], b: frozenset[str] | set[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b) if (a or b) else 0.0
