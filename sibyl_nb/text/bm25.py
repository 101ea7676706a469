"""A BM25 index over documents, built once per collection by :mod:`sibyl_nb.text.corpus`.

Wraps ``rank_bm25.BM25Okapi`` with two fixes that matter for small collections: the idf is
Lucene's always-positive ``log(1 + (N - df + 0.5) / (df + 0.5))`` (rank_bm25's own idf is zero or
negative for a term in half the documents, so a 2-document collection could never match), and
documents that share no term with the query are left out rather than returned with score 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from .tokenize import terms

__all__ = ["BM25Index"]

_MEMO_SIZE = 4096  # remembered searches per index, then forgotten all at once


@lru_cache(maxsize=1)
def _bm25_class() -> Any:
    """rank_bm25 (and numpy) load on the first index build, not when techniques register."""
    from rank_bm25 import BM25Okapi

    class PositiveIdfBM25(BM25Okapi):
        def _calc_idf(self, nd: dict[str, int]) -> None:
            n = self.corpus_size
            for word, freq in nd.items():
                self.idf[word] = math.log(1.0 + (n - freq + 0.5) / (freq + 0.5))
            self.average_idf = (sum(self.idf.values()) / len(self.idf)) if self.idf else 0.0

    return PositiveIdfBM25


class BM25Index:
    """BM25 over ``texts`` (tokenised with :func:`terms`); ``search`` returns ``(position, score)``."""

    def __init__(self, texts: Sequence[str]) -> None:
        self._tokens = [terms(t) for t in texts]
        self._sets = [frozenset(t) for t in self._tokens]
        # rank_bm25 divides by the average length: give it one dummy token for an empty corpus.
        self._bm25 = _bm25_class()([t or ["\x00"] for t in self._tokens]) if self._tokens else None
        self._idf: dict[str, float] = {}
        self._memo: dict[tuple[tuple[str, ...], int | None], list[tuple[int, float]]] = {}
        self._rare = math.log(1.0 + (len(self._tokens) + 0.5) / 0.5)
        # Postings (document, term frequency) and each document's length norm, for scoring only the
        # documents that hold a query term: rank_bm25's get_scores walks every document for every term.
        self._postings: dict[str, list[tuple[int, int]]] = {}
        self._norm: list[float] = []
        if self._bm25 is not None:
            bm = self._bm25
            for i, freqs in enumerate(bm.doc_freqs):
                for word, freq in freqs.items():
                    self._postings.setdefault(word, []).append((i, freq))
            # the same float operations, in the same order, as BM25Okapi.get_scores
            self._norm = [bm.k1 * (1 - bm.b + bm.b * dl / bm.avgdl) for dl in bm.doc_len]

    def __len__(self) -> int:
        return len(self._tokens)

    def idf(self, term: str) -> float:
        return float(self._bm25.idf.get(term, 0.0)) if self._bm25 is not None else 0.0

    def idf_or_rare(self, term: str) -> float:
        """:meth:`idf`, or the idf of a term in no document (the maximum) for an unseen term; cached."""
        value = self._idf.get(term)
        if value is None:
            value = self.idf(term)
            value = value if value > 0 else self._rare
            self._idf[term] = value
        return value

    def scores(self, query: str | Sequence[str]) -> list[float]:
        """BM25Okapi's scores, bit for bit: per document, each query term's share added in query order
        (a term absent from a document adds exactly 0.0 there, so only its postings are visited)."""
        q = terms(query) if isinstance(query, str) else list(query)
        out = [0.0] * len(self._tokens)
        if self._bm25 is None or not q:
            return out
        idf, k1, norm = self._bm25.idf, self._bm25.k1, self._norm
        for word in q:
            w = idf.get(word) or 0
            if not w:
                continue
            for i, freq in self._postings.get(word, ()):
                out[i] += w * (freq * (k1 + 1) / (freq + norm[i]))
        return out

    def search(self, query: str | Sequence[str], top_k: int | None = None) -> list[tuple[int, float]]:
        """Matching positions, best first (ties keep corpus order); only documents sharing a term.

        Remembered per query (this index never changes; a changed collection builds a new one): answers
        quote corpus sentences, and checking their support searches the same sentences run after run."""
        q = tuple(terms(query) if isinstance(query, str) else query)
        key = (q, top_k)
        hit = self._memo.get(key)
        if hit is None:
            if len(self._memo) >= _MEMO_SIZE:
                self._memo.clear()
            hit = self._memo[key] = self._search(list(q), top_k)
        return list(hit)

    def _search(self, q: list[str], top_k: int | None) -> list[tuple[int, float]]:
        qset = set(q)
        scored = [(i, s) for i, s in enumerate(self.scores(q)) if s > 0 and self._sets[i] & qset]
        scored.sort(key=lambda p: (-p[1], p[0]))
        return scored[:top_k] if top_k is not None else scored
