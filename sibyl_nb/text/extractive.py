"""Extractive answering: pick the source sentences that best answer a question.

The local provider's whole "model". Each sentence of each source document is scored by the
idf-weighted share of the question's terms it contains, plus small bonuses for the shape of a good
answer (a definition for "what is X", a year for "when", a name for "who"), a title match, an early
position and the document's rank. Answers are 1-3 of the best sentences, quoted as they are (never
rewritten), the later ones on the question's topic; ``temperature`` lets a seeded generator pick
among near-ties, so the same input always gives the same output.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from . import corpus
from .query import topic_of
from .tokenize import jaccard, normalise, sentences, term_set, terms

__all__ = ["MIN_RELEVANCE", "Candidate", "rank_sentences", "compose", "more_sentences", "context_or_corpus"]

MIN_RELEVANCE = 0.3
_LEADING_PRONOUN = re.compile(r"^(It|Its|They|Their)\b")


@dataclass(slots=True)
class Candidate:
    sentence: str
    doc: Mapping[str, Any]
    score: float
    relevance: float  # idf-weighted share of question terms present, in [0, 1]
    matched: frozenset[str]


_YEAR_QUESTION = re.compile(r"\b(?:when|what\s+year|which\s+year|in\s+what\s+year)\b")
_YEAR = re.compile(r"\b1[89]\d\d\b|\b20\d\d\b")
_NAME = re.compile(r"\b[A-Z][a-z]+\s+(?:van\s+|de\s+)?[A-Z][a-z]+")
_HOW_MANY = re.compile(r"\bhow\s+many\b")
_DIGIT = re.compile(r"\d")


@dataclass(frozen=True, slots=True)
class _Shape:
    """What a good answer to one question looks like: read once per question, not once per sentence."""

    definition: re.Pattern[str] | None  # "Python is a ..." when the question asks "what is Python"
    year: bool
    name: bool
    count: bool


_ASKS = re.compile(r"(?:what|who)\s+(?:is|are|was|were)\s+(.*)", re.S)
_ARTICLE = re.compile(r"(?:an?|the)\s+")
_END = re.compile(r"\s*[?.!]*")


def _asks_definition(q: str, topic: str) -> bool:
    """Whether ``q`` is "what/who is [a|an|the] <topic>[?.!]": the question-wide pattern of ``_shape_of``'s
    fallback, without compiling one per question. The same answer: ``topic`` has no edge whitespace, so the
    greedy whitespace before it, and after the optional article, can match only one way."""
    m = _ASKS.fullmatch(q)
    if m is None:
        return False
    rest = m.group(1)
    candidates = [rest]
    art = _ARTICLE.match(rest)
    if art:
        candidates.append(rest[art.end() :])
    return any(c.startswith(topic) and _END.fullmatch(c, len(topic)) is not None for c in candidates)


@lru_cache(maxsize=1024)
def _definition_re(topic: str) -> re.Pattern[str]:
    return re.compile(
        rf"^(?:an?\s+|the\s+)?{re.escape(topic)}(?:\s*\([^)]*\))?\s+(?:is|are|was|were)\s+(an?|the)\b", re.I
    )


@lru_cache(maxsize=4096)
def _shape_of(question: str, topic: str) -> _Shape:
    q = question.lower().strip()
    lowered = topic.lower()
    if lowered and lowered == lowered.strip():
        asks_definition = _asks_definition(q, lowered)
    else:  # edge whitespace: the general pattern (never from topic_of, which strips)
        asks_definition = bool(
            topic
            and re.fullmatch(
                rf"(?:what|who)\s+(?:is|are|was|were)\s+(?:an?\s+|the\s+)?{re.escape(lowered)}\s*[?.!]*", q
            )
        )
    return _Shape(
        _definition_re(topic) if asks_definition else None,
        _YEAR_QUESTION.search(q) is not None,
        q.startswith("who"),
        bool(_HOW_MANY.search(q)),
    )


def _answer_shape_bonus(question: str, sentence: str, topic: str) -> float:
    return _shape_bonus(_shape_of(question, topic), sentence, *_features(sentence))


def _features(sentence: str) -> tuple[bool, bool, bool]:
    """What a sentence shows, whatever the question: a year, a name (past its first letter), a digit."""
    return (
        _YEAR.search(sentence) is not None,
        _NAME.search(sentence[1:]) is not None,
        _DIGIT.search(sentence) is not None,
    )


def _shape_bonus(shape: _Shape, sentence: str, year: bool, name: bool, digit: bool) -> float:
    bonus = 0.0
    if shape.definition is not None:
        # A definition: "Python is a ...", "An embedding is a ...", "Guido van Rossum is a ...".
        m = shape.definition.match(sentence)
        if m:
            bonus += 0.3 if m.group(1).lower() != "the" else 0.15
    if shape.year and year:
        bonus += 0.15
    if shape.name and name:
        bonus += 0.15
    if shape.count and digit:
        bonus += 0.15
    return bonus


def _subject(doc: Mapping[str, Any]) -> str:
    """A document's subject as its title names it ("Go", "Python (programming language)" -> "Python")."""
    return _subject_of(str(doc.get("title", "")))


@lru_cache(maxsize=8192)
def _subject_of(title: str) -> str:
    title = title.split(" - ")[0].split(" (")[0].strip()
    return title if title and len(title.split()) <= 4 else ""


def _leans_on_subject(sentence: str, position: int) -> bool:
    """ "It was released in 2009": past its document's first sentence, a sentence opening on a
    pronoun is about the document's subject, which it does not name."""
    return position > 0 and _LEADING_PRONOUN.match(sentence) is not None


_Prepared = tuple[int, str, frozenset[str], frozenset[tuple[str, str]], bool, bool, bool]


@lru_cache(maxsize=8192)
def _prepared(text: str, subject: str) -> tuple[_Prepared, ...]:
    """A document's sentences as ranking reads them (label, terms, adjacent term pairs, features), keyed
    by its text: the corpus documents are ranked again for every question, their sentences never change."""
    out = []
    for pos, sent in enumerate(sentences(text)):
        sterms = term_set(sent)
        if subject and _leans_on_subject(sent, pos):
            # scored as being about the subject, and quoted with it as a label ("Go: It was
            # released in 2009 ..."), never rewritten into a sentence no source says
            sterms = sterms | term_set(subject)
            sent = f"{subject}: {sent}"
        seq = terms(sent)
        out.append((pos, sent, sterms, frozenset(zip(seq, seq[1:], strict=False)), *_features(sent)))
    return tuple(out)


def rank_sentences(
    question: str, docs: Sequence[Mapping[str, Any]], idf: Callable[[str], float] | None = None
) -> list[Candidate]:
    """Every sentence of ``docs`` that shares a term with ``question``, best first."""
    idf = idf or corpus.idf
    qterms = list(dict.fromkeys(terms(question)))
    if not qterms:
        return []
    weights = {t: idf(t) for t in qterms}
    total = sum(weights.values()) or 1.0
    shape = _shape_of(question, topic_of(question))
    qset = set(qterms)
    qpairs = set(zip(qterms, qterms[1:], strict=False))
    out: list[tuple[float, int, Candidate]] = []
    order = 0
    plain = shape.definition is None and not (shape.year or shape.name or shape.count)  # no bonus to give
    for rank, doc in enumerate(docs):
        title_terms = term_set(str(doc.get("title", "")))
        title_bonus = 0.1 * len(title_terms & qset) / len(qset)
        rank_penalty = 0.02 * min(rank, 10)
        for pos, sent, sterms, pairs, year, name, digit in _prepared(str(doc.get("text", "")), _subject(doc)):
            if qset.isdisjoint(sterms):
                continue
            matched = frozenset(qset & sterms)
            relevance = sum(map(weights.__getitem__, matched)) / total
            phrase_bonus = 0.1 * len(qpairs & pairs)  # "used for" next to "Python"
            score = (
                relevance
                + title_bonus
                + phrase_bonus
                + (0.0 if plain else _shape_bonus(shape, sent, year, name, digit))
                + (0.05 if pos == 0 else 0.0)
                - rank_penalty
            )
            out.append((score, order, Candidate(sent, doc, round(score, 6), round(relevance, 6), matched)))
            order += 1
    out.sort(key=lambda t: (-t[0], t[1]))
    return [c for _, _, c in out]


def _distinct(cand: Candidate, chosen: Iterable[str]) -> bool:
    """Not a copy, near-copy (Jaccard >= 0.6) or mostly-contained restatement of a chosen sentence."""
    ct = term_set(cand.sentence)
    for c in chosen:
        other = term_set(c)
        if normalise(cand.sentence) == normalise(c) or jaccard(ct, other) >= 0.6:
            return False
        if ct and other and len(ct & other) / min(len(ct), len(other)) >= 0.8:
            return False
    return True


def compose(
    question: str,
    docs: Sequence[Mapping[str, Any]],
    max_sentences: int = 2,
    temperature: float = 0.0,
    seed: int = 0,
    min_ratio: float = 0.5,
) -> list[Candidate]:
    """The answer's sentences, best first; empty when nothing is relevant enough.

    Further sentences join only if at least ``min_ratio`` times as good as the first. With ``temperature > 0`` the
    first sentence is drawn (seeded) from the near-ties within ``0.1 * temperature`` of the best.
    """
    ranked = rank_sentences(question, docs)
    if not ranked or ranked[0].relevance < MIN_RELEVANCE:
        return []
    first = ranked[0]
    if temperature > 0:
        ties = [
            c
            for c in ranked
            if c.score >= ranked[0].score - 0.1 * temperature and c.relevance >= MIN_RELEVANCE
        ]
        first = ties[random.Random(seed).randrange(len(ties))]
    chosen = [first]
    # Further sentences must be about the question's topic ("What is Python used for?": a sentence
    # on Okapi BM25 that shares "used" is off-topic), when the question names one the first shares.
    topic_terms = term_set(topic_of(question)) & first.matched
    for cand in ranked:
        if len(chosen) >= max_sentences:
            break
        if cand is first or cand.score < min_ratio * first.score or cand.relevance < MIN_RELEVANCE:
            continue
        if topic_terms and not (topic_terms & cand.matched) and cand.doc is not first.doc:
            continue
        if _distinct(cand, [c.sentence for c in chosen]):
            chosen.append(cand)
    return chosen


def more_sentences(
    question: str, answer: str, docs: Sequence[Mapping[str, Any]], k: int = 1, prefer: Iterable[str] = ()
) -> list[Candidate]:
    """The ``k`` best relevant sentences not already in ``answer`` (``prefer``: terms a critique missed)."""
    prefer_set = set(terms(" ".join(prefer)))
    existing = sentences(answer)
    ranked = rank_sentences(question, docs)
    if prefer_set:
        ranked.sort(key=lambda c: -(c.score + 0.5 * len(term_set(c.sentence) & prefer_set)))
    out: list[Candidate] = []
    for cand in ranked:
        if len(out) >= k:
            break
        if _distinct(cand, existing + [c.sentence for c in out]):
            out.append(cand)
    return out


def context_or_corpus(
    question: str, context: Sequence[Mapping[str, Any]], top_k: int = 8
) -> list[dict[str, Any]]:
    """The given context documents, or the corpus documents BM25 finds for ``question``."""
    if context:
        return [dict(d) for d in context]
    return corpus.search(question, corpus.ALL, "bm25", top_k)
