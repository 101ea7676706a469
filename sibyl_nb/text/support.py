"""Is a sentence supported by the sources? Lexical grounding shared by validation and the provider.

A sentence counts as supported when most of its content terms (default 60%) occur together in one
source document (the retrieved documents first, then the local corpus). That is a blunt instrument (it cannot see a negation that flips a claim), but it
is deterministic, explainable ("supported by [doc-id]") and catches the failure that matters most
here: an answer sentence that no retrieved document talks about.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import corpus
from .tokenize import sentences, term_set

__all__ = ["SUPPORT_THRESHOLD", "SentenceCheck", "check_sentence", "check_answer", "support_documents"]

SUPPORT_THRESHOLD = 0.6


@dataclass(slots=True)
class SentenceCheck:
    sentence: str
    support: float  # fraction of the sentence's terms found in the best document
    supported: bool
    source: str | None  # id of the best document
    in_sources: bool = True  # supported by the given documents (False: only by the wider corpus)

    def as_dict(self) -> dict[str, Any]:
        return {
            "sentence": self.sentence,
            "support": round(self.support, 3),
            "supported": self.supported,
            "source": self.source,
            "in_sources": self.in_sources,
        }


def check_sentence(
    sentence: str, docs: Sequence[Mapping[str, Any]], threshold: float = SUPPORT_THRESHOLD
) -> SentenceCheck:
    sterms = term_set(sentence)
    if not sterms:
        return SentenceCheck(sentence, 1.0, True, None)
    best, best_id = 0.0, None
    for d in docs:
        dterms = term_set(f"{d.get('title', '')} {d.get('text', '')}")
        frac = len(sterms & dterms) / len(sterms)
        if frac > best:
            best, best_id = frac, (str(d.get("id")) if d.get("id") is not None else None)
    return SentenceCheck(sentence, best, best >= threshold, best_id)


def support_documents(
    text: str, docs: Sequence[Mapping[str, Any]] | None, per_sentence: int = 3
) -> list[dict[str, Any]]:
    """``docs`` when given, else the corpus documents most similar to each sentence of ``text``."""
    if docs:
        return [dict(d) for d in docs]
    found: dict[str, dict[str, Any]] = {}
    for s in sentences(text):
        for d in corpus.search(s, corpus.ALL, "bm25", per_sentence):
            found.setdefault(str(d["id"]), d)
    return list(found.values())


def check_answer(
    answer: str,
    docs: Sequence[Mapping[str, Any]] | None,
    threshold: float = SUPPORT_THRESHOLD,
    fallback_to_corpus: bool = True,
) -> list[SentenceCheck]:
    """One check per sentence of ``answer``, against ``docs`` (or the corpus when ``docs`` is empty).

    With ``fallback_to_corpus`` a sentence the given documents do not support is checked against the
    corpus too: it then counts as supported, with ``in_sources=False`` (grounded in the local
    knowledge base, though not in what this run retrieved).
    """
    pool = support_documents(answer, docs)
    out = []
    for s in sentences(answer):
        if not term_set(s):
            continue
        check = check_sentence(s, pool, threshold)
        if docs and not check.supported and fallback_to_corpus:
            wider = check_sentence(s, support_documents(s, None), threshold)
            if wider.supported:
                wider.in_sources = False
                check = wider
        out.append(check)
    return out
