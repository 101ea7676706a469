"""A keyword-lexicon classifier: picks one of the labels a prompt lists, for a given text.

Used by the local provider for "Classify ...: a, b, or c" prompts. Known label families have a
lexicon (factual/opinion/creative, simple/medium/complex, positive/negative/neutral, yes/no...);
an unknown label scores by whether its own words occur in the text. Ties and all-zero scores fall
back to the first listed label, so the result is always one of the choices and always the same.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

from .tokenize import STOPWORDS, expand_contractions, stem, terms, wordlist, words

__all__ = ["classify_text", "complexity_of", "is_creative_request", "LEXICONS"]

_Q_START = (
    "what",
    "who",
    "when",
    "where",
    "which",
    "whose",
    "how many",
    "how much",
    "in what",
    "in which",
    "define",
    "list",
    "name",
    "is",
    "are",
    "was",
    "were",
    "does",
    "did",
    "how",
)

# label -> (word -> weight). Weights: 2 = strong cue, 1 = weak cue.
LEXICONS: dict[str, dict[str, float]] = {
    "factual": dict.fromkeys(
        wordlist("""year date when who where which define definition fact facts created invented
        released founded capital number many much version author meaning stand difference"""),
        1.0,
    ),
    "opinion": {
        **dict.fromkeys(
            wordlist("""should better best worst prefer think opinion recommend worth favourite
        favorite overrated underrated believe feel agree disagree pros cons"""),
            2.0,
        ),
        **dict.fromkeys(wordlist("vs versus good bad like love hate nicer"), 1.0),
    },
    "creative": {
        **dict.fromkeys(
            wordlist("""poem poetry story haiku song lyrics limerick fiction fairy tale joke
        slogan sonnet imagine invent fantasy novel screenplay ode rhyme"""),
            2.0,
        ),
        **dict.fromkeys(wordlist("write compose creative dream character plot"), 1.0),
    },
    "positive": dict.fromkeys(
        wordlist("""good great love excellent amazing happy wonderful best fantastic awesome
        helpful fast easy perfect nice enjoy pleased recommend brilliant"""),
        1.0,
    ),
    "negative": dict.fromkeys(
        wordlist("""bad terrible hate awful poor slow broken worst bug annoying difficult sad angry
        disappointed fail fails failed useless horrible crash problem"""),
        1.0,
    ),
    "technical": dict.fromkeys(
        wordlist("""code api function error bug python java install configure compile deploy
        database server algorithm library framework"""),
        1.0,
    ),
    "question": dict.fromkeys(wordlist("what who when where why how which"), 1.0),
    "command": dict.fromkeys(wordlist("please do make create write run show give list send open"), 1.0),
    "urgent": dict.fromkeys(wordlist("urgent asap immediately now emergency critical outage down"), 2.0),
}
_NEGATIONS = frozenset({"not", "no", "never", "hardly", "isn't", "don't", "doesn't", "wasn't", "cannot"})
_COMPLEX_MARKERS = (
    "compare",
    "contrast",
    "analy",
    "evaluat",
    "trade-off",
    "tradeoff",
    "pros and cons",
    "step by step",
    "architecture",
    "design a",
    "implication",
    "relationship between",
    "impact",
    "strateg",
    "optimi",
    "differences between",
    "in depth",
    "comprehensive",
)


@lru_cache(maxsize=64)
def _stemmed(lexicon: tuple[tuple[str, float], ...]) -> dict[str, float]:
    """Keyed by the lexicon's contents (``LEXICONS`` is public and may be edited), read-only to callers."""
    return {stem(w): weight for w, weight in lexicon}


_CLAUSE_RE = re.compile(r"\b(?:and|but|or|then|while|whereas)\b|[,;]")
_EXPLAIN_RE = re.compile(r"^\s*(?:how|why)\b")


def complexity_of(text: str) -> str:
    """simple / medium / complex from length, clauses and analysis words."""
    return _complexity_of(text or "")


@lru_cache(maxsize=8192)
def _complexity_of(text: str) -> str:
    clean = expand_contractions(text).lower()
    n_terms = len(set(terms(clean)))
    clauses = 1 + len(_CLAUSE_RE.findall(clean))
    clauses += max(0, clean.count("?") - 1)
    markers = sum(1 for m in _COMPLEX_MARKERS if m in clean)
    explain = 1.0 if _EXPLAIN_RE.match(clean) else 0.0
    score = n_terms / 4 + (clauses - 1) * 1.5 + 2.0 * markers + explain
    if score < 2.0:
        return "simple"
    if score < 5.0:
        return "medium"
    return "complex"


def is_creative_request(text: str) -> bool:
    """ "Write a poem about the sea" -> True; "What is Python?" -> False."""
    return _score("creative", text) >= 2.0


def _score(label: str, text: str) -> float:
    low = label.lower()
    if low == "factual" or low in LEXICONS:
        # keyed by the lexicons' contents too: ``LEXICONS`` is public and may be edited
        other = {"positive": "negative", "negative": "positive"}.get(low, "")
        lexicon = tuple(LEXICONS.get(low, {}).items())
        return _lexicon_text_score(low, text or "", lexicon, tuple(LEXICONS.get(other, {}).items()))
    return _label_score(low, text or "")


@lru_cache(maxsize=8192)
def _lexicon_text_score(
    low: str, text: str, lexicon: tuple[tuple[str, float], ...], other: tuple[tuple[str, float], ...]
) -> float:
    clean = expand_contractions(text).lower()
    toks = words(clean)
    if low == "factual":
        base = 1.0 if clean.strip().startswith(_Q_START) else 0.0
        return base + _lexicon_score(_stemmed(lexicon), toks)
    score = _lexicon_score(_stemmed(lexicon), toks, negate=low in ("positive", "negative"))
    if low in ("positive", "negative"):
        score += _negated_hits(_stemmed(other), toks)
    return score


def _label_score(low: str, text: str) -> float:
    clean = expand_contractions(text).lower()
    toks = words(clean)
    # Unknown label: do its own words (or their stems) occur in the text?
    label_terms = [stem(w) for w in words(low) if w not in STOPWORDS]
    text_terms = set(stem(t) for t in toks)
    return float(sum(1 for t in label_terms if t in text_terms))


def _lexicon_score(lex: dict[str, float], toks: Sequence[str], negate: bool = False) -> float:
    score = 0.0
    for i, tok in enumerate(toks):
        w = lex.get(stem(tok))
        if w:
            if negate and i > 0 and toks[i - 1] in _NEGATIONS:
                continue
            score += w
    return score


def _negated_hits(lex: dict[str, float], toks: Sequence[str]) -> float:
    return sum(lex.get(stem(t), 0.0) for i, t in enumerate(toks) if i > 0 and toks[i - 1] in _NEGATIONS)


def classify_text(text: str, choices: Sequence[str]) -> str:
    """One of ``choices`` for ``text`` (deterministic; the first choice when nothing matches)."""
    if not choices:
        raise ValueError("classify_text needs at least one choice")
    lowered = [c.lower() for c in choices]
    if set(lowered) >= {"simple", "complex"}:
        level = complexity_of(text)
        if level in lowered:
            return choices[lowered.index(level)]
        return choices[lowered.index("complex" if level == "complex" else "simple")]
    if set(lowered) >= {"yes", "no"}:
        neg = any(t in _NEGATIONS for t in words(text))
        return choices[lowered.index("no" if neg else "yes")]
    scores = [_score(c, text) for c in choices]
    best = max(scores)
    if best <= 0:
        for default in ("factual", "neutral", "general", "other", "medium", "statement"):
            if default in lowered:
                return choices[lowered.index(default)]
        return choices[0]
    return choices[scores.index(best)]
