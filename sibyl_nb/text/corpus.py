"""The in-process document store every local technique searches: named collections of documents.

Starts with the packaged sample corpus (``sibyl_nb/data/corpus.json``), loaded on first use. Users
add their own with :func:`add_documents`; ``data.store_vectors`` writes chunks and their embeddings
here, so a later ``rag.search`` with that ``collection`` finds them. Each collection builds its BM25
index and embedding matrix once, on first search, and again only after it changes.

A document is a dict ``{"id", "title", "text", "source", "collection"}`` (plus ``url`` for web
pages, or any other fields); search results are copies with a ``score``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .bm25 import BM25Index
from .embedding import DEFAULT_DIM, embed, embed_many
from .ranking import reciprocal_rank_fusion
from .tokenize import term_set

__all__ = [
    "DATA_DIR",
    "CORPUS_PATH",
    "DOCS_DIR",
    "SEARCH_MODES",
    "ALL",
    "CorpusStore",
    "default_store",
    "add_documents",
    "list_collections",
    "get_documents",
    "search",
    "reset_corpus",
    "has_collection",
    "idf",
]

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
CORPUS_PATH = DATA_DIR / "corpus.json"
DOCS_DIR = DATA_DIR / "docs"
SEARCH_MODES = ("keyword", "bm25", "semantic", "vector", "hybrid")
ALL = "*"  # search every collection

if TYPE_CHECKING:  # numpy loads on first search, not on import
    import numpy as np

Doc = dict[str, Any]


class _Collection:
    """Documents plus lazily built indexes (invalidated on change)."""

    __slots__ = ("docs", "vectors", "_bm25", "_matrix", "_terms")

    def __init__(self) -> None:
        self.docs: list[Doc] = []
        self.vectors: dict[str, list[float]] = {}  # id -> stored embedding (data.store_vectors)
        self._bm25: BM25Index | None = None
        self._matrix: dict[int, np.ndarray] = {}
        self._terms: list[frozenset[str]] | None = None

    def invalidate(self) -> None:
        self._bm25, self._matrix, self._terms = None, {}, None

    def bm25(self) -> BM25Index:
        if self._bm25 is None:
            # The title counts twice (a light BM25F): a document titled "Python" is about Python.
            self._bm25 = BM25Index([f"{d.get('title', '')}. {_index_text(d)}" for d in self.docs])
        return self._bm25

    def snapshot(self, mode: str, dim: int) -> _Collection:
        """The documents as they are now, with the indexes ``mode`` reads built: a read-only copy to
        search without the store's lock (indexes are replaced on change, never mutated)."""
        snap = _Collection()
        snap.docs = list(self.docs)
        if mode in ("bm25", "hybrid"):
            snap._bm25 = self.bm25()
        if mode != "bm25":
            snap._terms = self.terms()
        if mode in ("vector", "semantic", "hybrid"):
            snap._matrix = {dim: self.matrix(dim)}
        return snap

    def terms(self) -> list[frozenset[str]]:
        if self._terms is None:
            self._terms = [term_set(_index_text(d)) for d in self.docs]
        return self._terms

    def matrix(self, dim: int) -> np.ndarray:
        import numpy as np

        if dim not in self._matrix:
            rows: list[np.ndarray | None] = []
            for d in self.docs:
                stored = self.vectors.get(str(d["id"]))
                if stored is not None and len(stored) == dim:
                    v = np.asarray(stored, dtype=np.float64)
                    n = float(np.linalg.norm(v))
                    rows.append(v / n if n > 0 else v)
                else:
                    rows.append(None)
            missing = [i for i, r in enumerate(rows) if r is None]
            if missing:
                fresh = embed_many([_index_text(self.docs[i]) for i in missing], dim)
                for j, i in enumerate(missing):
                    rows[i] = fresh[j]
            full = [r for r in rows if r is not None]
            assert len(full) == len(rows)  # every missing row was embedded just above
            self._matrix[dim] = np.vstack(full) if full else np.zeros((0, dim))
        return self._matrix[dim]


def _index_text(doc: Mapping[str, Any]) -> str:
    return f"{doc.get('title', '')}. {doc.get('text', '')}"


class CorpusStore:
    """Named document collections with keyword, BM25, vector and hybrid search. Thread-safe."""

    def __init__(self, path: Path | None = CORPUS_PATH) -> None:
        self._path = path
        self._collections: dict[str, _Collection] = {}
        self._all: _Collection | None = None
        self._loaded = path is None
        self._lock = threading.RLock()

    # -- loading ---------------------------------------------------------------------------------
    def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        with self._lock:
            if self._loaded:
                return
            assert self._path is not None
            data = json.loads(self._path.read_text(encoding="utf-8"))
            docs = data["documents"] if isinstance(data, dict) else data
            by_coll: dict[str, list[Doc]] = {}
            for d in docs:
                by_coll.setdefault(str(d.get("collection") or "documents"), []).append(d)
            for name, items in by_coll.items():
                self._add_locked(name, items, None)
            self._loaded = True

    def reset(self) -> None:
        """Forget every added document and reload the packaged corpus on next use (for tests)."""
        with self._lock:
            self._collections.clear()
            self._all = None
            self._loaded = self._path is None

    # -- writing ---------------------------------------------------------------------------------
    def add_documents(
        self,
        collection: str,
        docs: Iterable[Mapping[str, Any]],
        embeddings: Sequence[Sequence[float]] | None = None,
    ) -> int:
        """Insert or replace (by ``id``) documents in ``collection``, creating it; returns how many."""
        if not isinstance(collection, str) or not collection or collection == ALL:
            raise ValueError(f"collection name must be a non-empty string other than '*', got {collection!r}")
        self._ensure_loaded()
        with self._lock:
            return self._add_locked(collection, list(docs), embeddings)

    def _add_locked(
        self, collection: str, docs: Sequence[Mapping[str, Any]], embeddings: Sequence[Sequence[float]] | None
    ) -> int:
        if embeddings is not None and len(embeddings) != len(docs):
            raise ValueError(f"{len(docs)} documents but {len(embeddings)} embeddings")
        coll = self._collections.setdefault(collection, _Collection())
        index = {str(d["id"]): i for i, d in enumerate(coll.docs)}
        for n, raw in enumerate(docs):
            doc = _normalise_doc(raw, collection, len(coll.docs))
            key = str(doc["id"])
            if key in index:
                coll.docs[index[key]] = doc
            else:
                index[key] = len(coll.docs)
                coll.docs.append(doc)
            if embeddings is not None:
                coll.vectors[key] = [float(x) for x in embeddings[n]]
            else:
                coll.vectors.pop(key, None)
        coll.invalidate()
        self._all = None
        return len(docs)

    # -- reading ---------------------------------------------------------------------------------
    def list_collections(self) -> list[str]:
        self._ensure_loaded()
        with self._lock:
            return sorted(self._collections)

    def has_collection(self, name: str) -> bool:
        return name == ALL or name in self.list_collections()

    def documents(self, collection: str = "documents") -> list[Doc]:
        """Copies of the documents in ``collection`` (``"*"``: all), in insertion order."""
        return [dict(d) for d in self._get(collection).docs]

    def _get(self, collection: str | None) -> _Collection:
        merged = self._all
        if merged is not None and collection in (None, "", ALL):
            return merged  # built and loaded: no lock (``_all`` is replaced, never mutated, on change)
        self._ensure_loaded()
        with self._lock:
            if collection in (None, "", ALL) or (collection == "all" and "all" not in self._collections):
                if self._all is None:
                    merged = _Collection()
                    for name in sorted(self._collections):
                        src = self._collections[name]
                        merged.docs.extend(src.docs)
                        merged.vectors.update(src.vectors)
                    self._all = merged
                return self._all
            try:
                return self._collections[str(collection)]
            except KeyError:
                known = ", ".join(sorted(self._collections))
                raise KeyError(f"unknown collection '{collection}' (known: {known})") from None

    def idf(self, term: str, collection: str | None = ALL) -> float:
        """BM25 idf of a stemmed term in ``collection``; unseen terms count as rare (the max idf)."""
        coll = self._get(collection)
        index = coll._bm25  # an index never changes once built (a change builds a new one)
        if index is None:
            with self._lock:
                index = coll.bm25()
        return index.idf_or_rare(term)

    def search(
        self,
        query: str,
        collection: str | None = "documents",
        mode: str = "hybrid",
        top_k: int = 10,
        *,
        dim: int = DEFAULT_DIM,
        rrf_k: int = 60,
    ) -> list[Doc]:
        """The best ``top_k`` documents for ``query``; only documents sharing a term with it.

        ``mode``: ``keyword`` (fraction of query terms present), ``bm25``, ``vector``/``semantic``
        (cosine of hashing embeddings), ``hybrid`` (the BM25 and vector rankings, plus a title-match
        ranking as a light field boost, fused by reciprocal rank fusion). A hashing embedder only "sees" shared words, so a document with no query term in
        common has only hash-collision similarity: it is noise and is dropped in every mode.
        """
        if mode not in SEARCH_MODES:
            raise ValueError(f"unknown search mode '{mode}' (known: {', '.join(SEARCH_MODES)})")
        qterms = term_set(query)
        with self._lock:
            coll = self._get(collection)
            if not qterms or not coll.docs:
                return []
            coll = coll.snapshot(mode, dim)
        # Scored outside the lock: concurrent searches (a sweep's runs, ``asyncio.to_thread``) then
        # wait only for the snapshot, never for one another's scoring while the GIL passes between them.
        pool = max(top_k * 3, 30)
        if mode == "keyword":
            ranked = self._keyword(coll, qterms)
        elif mode == "bm25":
            ranked = coll.bm25().search(list(qterms))
        elif mode in ("vector", "semantic"):
            ranked = self._vector(coll, query, qterms, dim)
        else:
            lexical = [(coll.docs[i], s) for i, s in coll.bm25().search(list(qterms), pool)]
            vector = [(coll.docs[i], s) for i, s in self._vector(coll, query, qterms, dim)[:pool]]
            titles = [(coll.docs[i], s) for i, s in self._titles(coll, qterms)[:pool]]
            fused = reciprocal_rank_fusion(
                [
                    [_scored(d, s) for d, s in lexical],
                    [_scored(d, s) for d, s in vector],
                    [_scored(d, s) for d, s in titles],
                ],
                k=rrf_k,
            )
            for d in fused:
                d.pop("ranks", None)
                d.pop("source_score", None)
            return fused[:top_k]
        return [_scored(coll.docs[i], s) for i, s in ranked[:top_k]]

    @staticmethod
    def _keyword(coll: _Collection, qterms: frozenset[str]) -> list[tuple[int, float]]:
        scored = [(i, len(qterms & t) / len(qterms)) for i, t in enumerate(coll.terms())]
        scored = [p for p in scored if p[1] > 0]
        scored.sort(key=lambda p: (-p[1], p[0]))
        return scored

    @staticmethod
    def _titles(coll: _Collection, qterms: frozenset[str]) -> list[tuple[int, float]]:
        """Documents whose title matches: share of the query in the title plus share of the title in
        the query, so "Python" beats "Python performance" for "What is Python?"."""
        scored = []
        for i, d in enumerate(coll.docs):
            t = term_set(str(d.get("title", "")))
            hit = len(t & qterms)
            if hit:
                scored.append((i, hit / len(qterms) + hit / len(t)))
        scored.sort(key=lambda p: (-p[1], p[0]))
        return scored

    @staticmethod
    def _vector(coll: _Collection, query: str, qterms: frozenset[str], dim: int) -> list[tuple[int, float]]:
        sims = (coll.matrix(dim) @ _query_vector(query, dim)).tolist()  # Python floats: the same values
        terms_ = coll.terms()
        scored = [(i, s) for i, s in enumerate(sims) if s > 0 and qterms & terms_[i]]
        scored.sort(key=lambda p: (-p[1], p[0]))
        return scored


@lru_cache(maxsize=4096)
def _query_vector(query: str, dim: int) -> np.ndarray:
    """A query's embedding, read-only and cached: one run searches the same queries in several steps."""
    vec = embed(query, dim)
    vec.setflags(write=False)
    return vec


def _scored(doc: Mapping[str, Any], score: float) -> Doc:
    d = dict(doc)
    d["score"] = round(float(score), 6)
    return d


def _normalise_doc(raw: Mapping[str, Any], collection: str, position: int) -> Doc:
    if isinstance(raw, str):
        raw = {"text": raw}
    if not isinstance(raw, Mapping):
        raise TypeError(f"a document must be a dict or a string, got {type(raw).__name__}")
    doc = dict(raw)
    text = doc.get("text", doc.get("content", ""))
    doc["text"] = text if isinstance(text, str) else str(text)
    doc.pop("content", None)
    doc["id"] = str(doc.get("id") or f"{collection}-{position + 1}")
    doc.setdefault("title", doc["text"][:60])
    doc.setdefault("source", "user")
    doc["collection"] = collection
    doc.pop("score", None)
    return doc


default_store = CorpusStore()


def add_documents(
    collection: str,
    docs: Iterable[Mapping[str, Any] | str],
    embeddings: Sequence[Sequence[float]] | None = None,
) -> int:
    """Add (or replace, by ``id``) documents in a collection of the default store."""
    return default_store.add_documents(collection, docs, embeddings)  # type: ignore[arg-type]


def list_collections() -> list[str]:
    """Names of the collections ``rag.search`` can use (the sample corpus plus anything added)."""
    return default_store.list_collections()


def has_collection(name: str) -> bool:
    return default_store.has_collection(name)


def idf(term: str, collection: str | None = ALL) -> float:
    return default_store.idf(term, collection)


def get_documents(collection: str = "documents") -> list[Doc]:
    return default_store.documents(collection)


def search(
    query: str, collection: str | None = "documents", mode: str = "hybrid", top_k: int = 10, **kwargs: Any
) -> list[Doc]:
    return default_store.search(query, collection, mode, top_k, **kwargs)


def reset_corpus() -> None:
    """Drop added documents; the packaged corpus reloads on next use."""
    default_store.reset()
