"""Rank fusion and reranking: reciprocal rank fusion, score fusion, MMR and a lexical relevance scorer.

All pure functions over document dicts (``{"id", "title", "text", ...}``), so ``rag.search`` (fusing
BM25 with vectors, or several expanded queries), ``rag.ranking`` (fusing upstream result lists) and
``rag.reranking`` share one implementation.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .embedding import DEFAULT_DIM, embed
from .tokenize import normalise, stem, terms, words

__all__ = [
    "doc_key",
    "reciprocal_rank_fusion",
    "score_fusion",
    "mmr",
    "lexical_relevance",
    "dedupe_documents",
]

Doc = dict[str, Any]


def doc_key(doc: Mapping[str, Any]) -> str:
    """Identity for dedupe: ``id``, else ``url``, else a hash of the normalised text."""
    for field in ("id", "url"):
        v = doc.get(field)
        if v not in (None, ""):
            return str(v)
    return "text:" + hashlib.blake2b(normalise(str(doc.get("text", ""))).encode(), digest_size=8).hexdigest()


def dedupe_documents(docs: Sequence[Mapping[str, Any]]) -> list[Doc]:
    """First occurrence wins, order kept."""
    seen: set[str] = set()
    out = []
    for d in docs:
        k = doc_key(d)
        if k not in seen:
            seen.add(k)
            out.append(dict(d))
    return out


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[Mapping[str, Any]]], k: int = 60, weights: Sequence[float] | None = None
) -> list[Doc]:
    """Cormack et al. (2009): ``score(d) = sum_i w_i / (k + rank_i(d))``, ranks from 1.

    The fused copy of each document keeps the fields of its first sighting, gets ``score`` (the RRF
    score) and ``ranks`` (its 1-based rank in each input list, ``None`` where absent). Ties keep the
    order of first sighting, so the result is deterministic.
    """
    weights = list(weights) if weights is not None else [1.0] * len(rankings)
    scores: dict[str, float] = {}
    first: dict[str, Doc] = {}
    ranks: dict[str, list[int | None]] = {}
    for li, (ranking, w) in enumerate(zip(rankings, weights, strict=True)):
        seen_here: set[str] = set()
        for rank, doc in enumerate(ranking, start=1):
            key = doc_key(doc)
            if key in seen_here:
                continue
            seen_here.add(key)
            if key not in first:
                first[key] = dict(doc)
                ranks[key] = [None] * len(rankings)
                scores[key] = 0.0
            scores[key] += w / (k + rank)
            ranks[key][li] = rank
    order = {key: i for i, key in enumerate(first)}
    fused = sorted(first, key=lambda key: (-scores[key], order[key]))
    out = []
    for key in fused:
        d = first[key]
        if "score" in d and "source_score" not in d:
            d["source_score"] = d["score"]
        d["score"] = round(scores[key], 6)
        d["ranks"] = ranks[key]
        out.append(d)
    return out


def score_fusion(
    rankings: Sequence[Sequence[Mapping[str, Any]]], weights: Sequence[float] | None = None
) -> list[Doc]:
    """Fuse by each list's own scores, min-max normalised per list, weighted and summed.

    A list without scores counts rank ``r`` of ``n`` as ``1 - (r-1)/n``.
    """
    weights = list(weights) if weights is not None else [1.0] * len(rankings)
    total: dict[str, float] = {}
    first: dict[str, Doc] = {}
    for ranking, w in zip(rankings, weights, strict=True):
        n = len(ranking)
        raw = [d.get("score") for d in ranking]
        if n and all(isinstance(s, (int, float)) for s in raw):
            lo, hi = min(raw), max(raw)  # type: ignore[type-var]
            norm = [1.0 if hi == lo else (s - lo) / (hi - lo) for s in raw]  # type: ignore[operator]
        else:
            norm = [1.0 - i / n for i in range(n)] if n else []
        for doc, s in zip(ranking, norm, strict=True):
            key = doc_key(doc)
            if key not in first:
                first[key] = dict(doc)
                total[key] = 0.0
            total[key] += w * s
    order = {key: i for i, key in enumerate(first)}
    out = []
    for key in sorted(first, key=lambda key: (-total[key], order[key])):
        d = first[key]
        d["source_score"] = d.get("score")
        d["score"] = round(total[key], 6)
        out.append(d)
    return out


def lexical_relevance(query: str, doc: Mapping[str, Any], idf: Callable[[str], float] | None = None) -> float:
    """A local stand-in for a cross-encoder, in [0, 1]: how well ``doc`` answers ``query``.

    Why these parts: term overlap (weighted by ``idf`` when given) says the document is about the
    query; proximity (the shortest window holding all matched terms) says the terms belong to one
    statement rather than scattered mentions; a title match is a strong topical signal; an early
    first mention separates a document about the topic from one that mentions it in passing.
    """
    q = list(dict.fromkeys(terms(query)))
    if not q:
        return 0.0
    weight = idf or (lambda _t: 1.0)
    text = str(doc.get("text", ""))
    toks = [stem(w) for w in words(text)]
    present = set(toks)
    total_w = sum(weight(t) for t in q) or 1.0
    matched = [t for t in q if t in present]
    overlap = sum(weight(t) for t in matched) / total_w
    proximity = 0.0
    if len(matched) >= 2:
        window = _min_window(toks, set(matched))
        proximity = len(matched) / window if window else 0.0
    elif len(matched) == 1:
        proximity = 0.5
    title_terms = set(terms(str(doc.get("title", ""))))
    title = len(title_terms & set(q)) / len(q)
    first = min((i for i, t in enumerate(toks) if t in set(matched)), default=len(toks))
    early = 1.0 - first / len(toks) if toks else 0.0  # the topic stated up front, not in passing
    score = 0.55 * overlap + 0.25 * proximity + 0.15 * title + 0.05 * early
    return round(min(1.0, score), 6)


def _min_window(tokens: Sequence[str], needed: set[str]) -> int:
    """Length of the shortest token window containing every term of ``needed`` (0 if impossible)."""
    counts: dict[str, int] = {}
    have, best, left = 0, math.inf, 0
    for right, tok in enumerate(tokens):
        if tok in needed:
            counts[tok] = counts.get(tok, 0) + 1
            if counts[tok] == 1:
                have += 1
        while have == len(needed) and left <= right:
            best = min(best, right - left + 1)
            lt = tokens[left]
            if lt in needed:
                counts[lt] -= 1
                if counts[lt] == 0:
                    have -= 1
            left += 1
    return 0 if best is math.inf else int(best)


def mmr(
    query: str, docs: Sequence[Mapping[str, Any]], top_k: int, lambda_: float = 0.7, dim: int = DEFAULT_DIM
) -> list[Doc]:
    """Maximal marginal relevance (Carbonell & Goldstein, 1998) over hashing embeddings.

    Picks, one at a time, the document maximising ``lambda * sim(query, d) - (1-lambda) * max sim(d, picked)``:
    relevant, but not a near-copy of what is already chosen.
    """
    if not docs:
        return []
    import numpy as np

    qv = embed(query, dim)
    mat = np.vstack([embed(f"{d.get('title', '')} {d.get('text', '')}", dim) for d in docs])
    rel = mat @ qv
    chosen: list[int] = []
    remaining = list(range(len(docs)))
    while remaining and len(chosen) < top_k:
        red = (mat[remaining] @ mat[chosen].T).max(axis=1) if chosen else np.zeros(len(remaining))
        vals = lambda_ * rel[remaining] - (1 - lambda_) * red
        best = remaining[int(np.argmax(vals))]  # argmax returns the first max: stable
        chosen.append(best)
        remaining.remove(best)
    out = []
    for i in chosen:
        d = dict(docs[i])
        d["source_score"] = d.get("score")
        d["score"] = round(float(rel[i]), 6)
        out.append(d)
    return out
