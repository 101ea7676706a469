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

    def __len__(self) -> int:
        return len(self._tokens)

    def idf(self, term: str) -> float:
        return float(self._bm25.idf.get(term, 0.0)) if self._bm25 is not None else 0.0

    def scores(self, query: str | Sequence[str]) -> list[float]:
        q = terms(query) if isinstance(query, str) else list(query)
        if self._bm25 is None or not q:
            return [0.0] * len(self._tokens)
        return [float(s) for s in self._bm25.get_scores(q)]

    def search(self, query: str | Sequence[str], top_k: int | None = None) -> list[tuple[int, float]]:
        """Matching positions, best first (ties keep corpus order); only documents sharing a term."""
        q = terms(query) if isinstance(query, str) else list(query)
        qset = set(q)
        scored = [(i, s) for i, s in enumerate(self.scores(q)) if s > 0 and self._sets[i] & qset]
        scored.sort(key=lambda p: (-p[1], p[0]))
        return scored[:top_k] if top_k is not None else scored
