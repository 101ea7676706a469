"""``rag.*``: offline reference implementations of the retrieval techniques the seed's examples call.

Fast local CPU work (``blocking=False``: they run inline), except the searches: ``rag.search`` and
``rag.retrieval`` may build a collection's BM25 / vector index first (60-260 ms), so they search in a
worker thread and never hold up the event loop (a sibling branch keeps running meanwhile). Each reads its inputs from upstream
outputs when there are any (``queries`` from a query_processing step, ``documents`` from searches)
and otherwise falls back to ``ctx.query`` and the sample corpus, so it also works as a first step.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from ...document.schema import ConfigSchema, Field, Rule
from ...errors import TechniqueError
from ...text import corpus
from ...text.embedding import DEFAULT_DIM, EMBEDDER_NAME, HashingEmbedder
from ...text.gather import document_lists, upstream_documents, upstream_queries
from ...text.prompts import parse_score
from ...text.query import decompose_query, expand_query, messages_of, resolve_followup
from ...text.ranking import dedupe_documents, lexical_relevance, mmr, reciprocal_rank_fusion, score_fusion
from ...text.tokenize import sentences
from ..context import query_of
from ..registry import technique

__all__ = [
    "query_processing",
    "search",
    "retrieval",
    "ranking",
    "reranking",
    "chunking",
    "embedding",
    "format_source",
    "chunk_document",
]

_MODES = ("keyword", "bm25", "semantic", "vector", "hybrid")
_NUMBER = (int, float)
MAX_QUERIES = 50  # query variants, each searched: a sane ceiling (1e8 once took 3 GB)
MAX_TOP_K = 10_000
MAX_DIM = 65_536
_TOP_K = Field(int, "documents kept", minimum=1, maximum=MAX_TOP_K)
_COLLECTION = Field(str, "collection searched (default: documents)")
_QUERY = Field(str, "the query (default: upstream queries, else the input's)")


def _int(ctx: Any, key: str, default: int, minimum: int = 1) -> int:
    value = ctx.config.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise TechniqueError(
            f"config '{key}' must be an integer, got {value!r}",
            node_id=ctx.node_id,
            technique=ctx.technique or None,
        )
    try:
        number = int(value)
    except ValueError:
        raise TechniqueError(
            f"config '{key}' must be an integer, got {value!r}",
            node_id=ctx.node_id,
            technique=ctx.technique or None,
        ) from None
    if number < minimum:
        raise TechniqueError(
            f"config '{key}' must be >= {minimum}, got {number}",
            node_id=ctx.node_id,
            technique=ctx.technique or None,
        )
    return number


def _check_collection(ctx: Any, name: str, technique_name: str) -> None:
    if not corpus.has_collection(name):
        known = ", ".join(corpus.list_collections())
        raise TechniqueError(
            f"unknown collection '{name}' (known collections: {known}; add one with "
            "sibyl_nb.text.corpus.add_documents or a data.store_vectors step)",
            node_id=ctx.node_id,
            technique=technique_name,
        )


def _search_many(queries: Sequence[str], collection: str, mode: str, top_k: int) -> list[dict[str, Any]]:
    """Search each query; several queries (an expansion) are fused by reciprocal rank fusion."""
    runs = [corpus.search(q, collection, mode, top_k) for q in queries]
    runs = [r for r in runs if r]
    if not runs:
        return []
    if len(runs) == 1:
        return runs[0]
    fused = reciprocal_rank_fusion(runs)
    for d in fused:
        d.pop("ranks", None)
        d.pop("source_score", None)
    return fused[:top_k]


# -- rag.query_processing ---------------------------------------------------------------------------
@technique(
    "rag.query_processing",
    blocking=False,
    subtechniques=("expansion", "decomposition", "rewriting"),
    config_schema=ConfigSchema(
        {
            "num_queries": Field(
                int, "query variants (the original first)", default=3, minimum=1, maximum=MAX_QUERIES
            ),
            "context": Field((str, list, dict, type(None)), "conversation to resolve a follow-up against"),
            "query": _QUERY,
        },
        subtechniques={
            "expansion": ("num_queries", "query"),
            "decomposition": ("query",),
            "rewriting": ("context", "query"),
        },
        default_subtechnique="expansion",
        description="reformulate the user's query",
    ),
    outputs=("query", "queries", "original", "subtechnique", "expansions", "rewritten"),
)
def query_processing(ctx: Any) -> dict[str, Any]:
    """Reformulate the user's query: ``expansion`` (N variants), ``decomposition`` (sub-questions) or
    ``rewriting`` (resolve a follow-up against the conversation; later steps then use the rewrite)."""
    sub = str(ctx.config.get("subtechnique") or "expansion")
    original = str(
        ctx.config.get("query") or (query_of(ctx.input) if sub == "rewriting" else "") or ctx.query
    )
    out: dict[str, Any] = {"original": original, "subtechnique": sub}
    if sub == "expansion":
        queries = expand_query(original, _int(ctx, "num_queries", 3))
        out.update(query=original, queries=queries, expansions=queries[1:])
    elif sub == "decomposition":
        queries = decompose_query(original)
        out.update(query=original, queries=queries)
    elif sub == "rewriting":
        raw = ctx.config.get("context")
        history = messages_of(raw) if raw not in (None, "", []) else []
        if not history:
            history = messages_of(ctx.session.get("conversation_history"))
        rewritten = resolve_followup(original, history) if original else original
        ctx.session["query"] = rewritten
        out.update(
            query=rewritten,
            queries=[rewritten],
            rewritten=rewritten != original,
            history_messages=len(history),
        )
    else:  # the loader rejects unknown subtechniques; this guards direct calls
        raise TechniqueError(
            f"unknown subtechnique '{sub}' (known: expansion, decomposition, rewriting)",
            node_id=ctx.node_id,
            technique="rag.query_processing",
        )
    return out


# -- rag.search --------------------------------------------------------------------------------------
@technique(
    "rag.search",
    blocking=False,
    subtechniques=_MODES,
    config_schema=ConfigSchema(
        {"top_k": _TOP_K, "collection": _COLLECTION, "query": _QUERY},
        description="search one collection: keyword, BM25, vector or hybrid",
    ),
    outputs=("documents", "count", "query", "queries", "collection", "subtechnique"),
)
async def search(ctx: Any) -> dict[str, Any]:
    """Search one collection: keyword, BM25, vector (hashing embeddings) or hybrid (BM25 + vector, RRF).

    Uses every upstream ``queries`` list (fused by RRF) when a query-processing step ran, else
    ``ctx.query``.
    """
    mode = str(ctx.config.get("subtechnique") or "hybrid")
    out = await asyncio.to_thread(_search_output, ctx, "rag.search", mode)
    return {**out, "subtechnique": mode}


# -- rag.retrieval -------------------------------------------------------------------------------------
@technique(
    "rag.retrieval",
    blocking=False,
    config_schema=ConfigSchema(
        {
            "top_k": _TOP_K,
            "collection": _COLLECTION,
            "mode": Field(_MODES, "search mode", default="hybrid"),
            "query": _QUERY,
        },
        description="retrieve the most relevant documents (hybrid by default)",
    ),
    outputs=("documents", "count", "query", "queries", "collection"),
)
async def retrieval(ctx: Any) -> dict[str, Any]:
    """Retrieve up to ``top_k`` (default 10) relevant documents (hybrid by default).

    Only documents that share a term with the query count, so ``count`` says how much the corpus
    knows: conditions like ``${retrieve.count} < 3`` can branch to query expansion.
    """
    return await asyncio.to_thread(
        _search_output, ctx, "rag.retrieval", str(ctx.config.get("mode") or "hybrid")
    )


def _search_output(ctx: Any, technique_name: str, mode: str) -> dict[str, Any]:
    """What search and retrieval share: the collection, the queries (config, else upstream), the hits."""
    collection = str(ctx.config.get("collection") or "documents")
    top_k = _int(ctx, "top_k", 10)
    _check_collection(ctx, collection, technique_name)
    queries = [str(ctx.config["query"])] if ctx.config.get("query") else upstream_queries(ctx)
    docs = _search_many(queries, collection, mode, top_k)
    return {
        "documents": docs,
        "count": len(docs),
        "query": queries[0] if queries else "",
        "queries": queries,
        "collection": collection,
    }


# -- rag.ranking ----------------------------------------------------------------------------------------
def format_source(doc: Mapping[str, Any]) -> str:
    """``"title (source)"``, with the URL as the source for web results."""
    title = str(doc.get("title") or doc.get("id") or "untitled")
    where = doc.get("url") or doc.get("source") or doc.get("collection") or ""
    return f"{title} ({where})" if where else title


@technique(
    "rag.ranking",
    blocking=False,
    subtechniques=("reciprocal_rank_fusion", "score", "weighted"),
    config_schema=ConfigSchema(
        {
            "k": Field(int, "reciprocal rank fusion constant", default=60, minimum=1, maximum=1_000_000),
            "top_k": _TOP_K,
            "weights": Field(
                (dict, list),
                "per-input weights: by node id, or in upstream order",
                items=Field(_NUMBER, minimum=0),
                values=Field(_NUMBER, minimum=0),
            ),
        },
        subtechniques={
            "reciprocal_rank_fusion": ("k", "top_k"),
            "score": ("top_k",),
            "weighted": ("k", "top_k", "weights"),
        },
        default_subtechnique="reciprocal_rank_fusion",
        description="fuse upstream document lists into one ranking",
    ),
    outputs=("documents", "sources", "count", "subtechnique", "inputs"),
)
def ranking(ctx: Any) -> dict[str, Any]:
    """Fuse the ``documents`` lists of every upstream step into one ranking (deduplicated by id).

    ``reciprocal_rank_fusion`` (default, ``k`` = 60), ``score`` (min-max normalised scores summed),
    ``weighted`` (RRF with per-input ``weights``: a dict by node id, or a list in upstream order).
    """
    sub = str(ctx.config.get("subtechnique") or "reciprocal_rank_fusion")
    lists = document_lists(ctx.upstream) or document_lists(ctx.results)
    names = [n for n, _ in lists]
    rankings = [docs for _, docs in lists]
    k = _int(ctx, "k", 60)
    top_k = _int(ctx, "top_k", 10)
    if sub == "score":
        fused = score_fusion(rankings)
    else:
        weights = None
        if sub == "weighted":
            raw = ctx.config.get("weights") or {}
            if isinstance(raw, Mapping):
                weights = [float(raw.get(n, 1.0)) for n in names]
            elif isinstance(raw, Sequence):
                weights = [float(raw[i]) if i < len(raw) else 1.0 for i in range(len(names))]
        fused = reciprocal_rank_fusion(rankings, k=k, weights=weights)
    fused = fused[:top_k]
    return {
        "documents": fused,
        "sources": [format_source(d) for d in fused],
        "count": len(fused),
        "subtechnique": sub,
        "inputs": names,
    }


# -- rag.reranking ----------------------------------------------------------------------------------------
_RERANK_SYSTEM = "You rate how relevant a document is to a question. Reply with 'Score: N/10'."


@technique(
    "rag.reranking",
    blocking=False,
    subtechniques=("lexical", "llm", "mmr"),
    config_schema=ConfigSchema(
        {
            "top_k": _TOP_K,
            "provider": Field(str, "provider that rates documents"),
            "lambda": Field(_NUMBER, "relevance vs diversity", default=0.7, minimum=0, maximum=1),
            "temperature": Field(_NUMBER, "sampling temperature of the ratings", minimum=0, maximum=2),
        },
        subtechniques={
            "lexical": ("top_k",),
            "llm": ("top_k", "provider", "temperature"),
            "mmr": ("top_k", "lambda"),
        },
        default_subtechnique="lexical",
        description="reorder upstream documents by relevance",
    ),
    outputs=("documents", "count", "subtechnique", "query"),
)
async def reranking(ctx: Any) -> dict[str, Any]:
    """Reorder upstream documents by relevance and keep ``top_k`` (default 5).

    ``lexical`` (default): a local lexical scorer, not a neural cross-encoder (idf-weighted term overlap, proximity, title);
    ``llm``: the provider rates each document 0-10; ``mmr``: relevance balanced with diversity.
    """
    sub = str(ctx.config.get("subtechnique") or "lexical")
    top_k = _int(ctx, "top_k", 5)
    query = ctx.query
    docs = upstream_documents(ctx)
    if not docs and query:
        docs = corpus.search(query, "documents", "hybrid", 20)
    if sub == "mmr":
        lam = float(ctx.config.get("lambda", 0.7))
        ranked = mmr(query, docs, top_k, lambda_=lam)
    elif sub == "llm":
        ranked = await _llm_rerank(ctx, query, docs)
    else:
        ranked = []
        for d in docs:
            nd = dict(d)
            nd["retrieval_score"] = d.get("score")
            nd["score"] = lexical_relevance(query, d, corpus.idf)
            ranked.append(nd)
        ranked.sort(key=lambda d: -d["score"])  # stable: ties keep retrieval order
    ranked = ranked[:top_k]
    return {"documents": ranked, "count": len(ranked), "subtechnique": sub, "query": query}


async def _llm_rerank(ctx: Any, query: str, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    provider = ctx.provider(ctx.config.get("provider"))
    sem = asyncio.Semaphore(8)

    async def rate(doc: dict[str, Any]) -> dict[str, Any]:
        text = " ".join(str(doc.get("text", "")).split())
        prompt = (
            f"Rate the relevance of this document to the question on a scale 0-10.\n"
            f"Document: {doc.get('title', '')}: {text}\nQuestion: {query}"
        )
        async with sem:
            completion = await provider.complete(
                [{"role": "system", "content": _RERANK_SYSTEM}, {"role": "user", "content": prompt}],
                temperature=float(ctx.config.get("temperature", 0.0)),
            )
        score = parse_score(completion.text, 0, 10)
        if score is None:
            score = completion.fields.get("score", 0) if isinstance(completion.fields, Mapping) else 0
        nd = dict(doc)
        nd["retrieval_score"] = doc.get("score")
        nd["score"] = score
        return nd

    rated = await asyncio.gather(*(rate(d) for d in docs))
    return sorted(rated, key=lambda d: -float(d["score"] or 0))


# -- rag.chunking ---------------------------------------------------------------------------------------
def _sections(text: str) -> list[tuple[str, str]]:
    """Markdown ``#`` headings split a text into ``(heading, body)`` sections."""
    out: list[tuple[str, list[str]]] = [("", [])]
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") and stripped.lstrip("#").startswith(" "):
            out.append((stripped.lstrip("#").strip(), []))
        else:
            out[-1][1].append(line)
    return [(h, "\n".join(lines).strip()) for h, lines in out if "\n".join(lines).strip()]


def _pack(sents: list[str], size: int, overlap: int) -> list[str]:
    pieces: list[str] = []
    for s in sents:  # a sentence longer than a chunk is cut by words
        n = len(s.split())
        if n <= size:
            pieces.append(s)
        else:
            ws = s.split()
            step = max(1, size - overlap)
            pieces.extend(" ".join(ws[i : i + size]) for i in range(0, len(ws), step) if ws[i : i + size])
    chunks: list[list[str]] = []
    current: list[str] = []
    for p in pieces:
        if current and sum(len(x.split()) for x in current) + len(p.split()) > size:
            chunks.append(current)
            carry: list[str] = []
            for prev in reversed(current):
                if sum(len(x.split()) for x in carry) + len(prev.split()) > overlap:
                    break
                carry.insert(0, prev)
            current = carry if carry != current else []
        current.append(p)
    if current:
        chunks.append(current)
    return [" ".join(c) for c in chunks]


def chunk_document(
    doc: Mapping[str, Any], chunk_size: int = 200, chunk_overlap: int = 20
) -> list[dict[str, Any]]:
    """Split one document into chunks of at most ``chunk_size`` words at sentence boundaries.

    Consecutive chunks share up to ``chunk_overlap`` words of whole trailing sentences; markdown
    sections are chunked separately and their heading joins the chunk title.
    """
    doc_id = str(doc.get("id") or "doc")
    title = str(doc.get("title") or doc_id)
    out: list[dict[str, Any]] = []
    for heading, body in _sections(str(doc.get("text", ""))):
        for text in _pack(sentences(body), chunk_size, chunk_overlap):
            ctitle = f"{title} - {heading}" if heading and heading != title else title
            out.append(
                {
                    "id": f"{doc_id}#chunk-{len(out) + 1}",
                    "doc_id": doc_id,
                    "title": ctitle,
                    "text": text,
                    "source": doc.get("source", ""),
                    "collection": doc.get("collection", ""),
                    "chunk_index": len(out),
                    "n_words": len(text.split()),
                }
            )
    return out


def _input_documents(ctx: Any) -> list[dict[str, Any]]:
    docs = upstream_documents(ctx, fallback_to_results=False)
    if docs:
        return docs
    inp = ctx.input if isinstance(ctx.input, Mapping) else {}
    if isinstance(inp.get("documents"), Sequence) and not isinstance(inp.get("documents"), str):
        return [
            d
            if isinstance(d, dict)
            else dict(d)
            if isinstance(d, Mapping)
            else {"id": f"input-{i + 1}", "text": str(d)}
            for i, d in enumerate(inp["documents"])
        ]
    if isinstance(inp.get("text"), str) and inp["text"].strip():
        return [{"id": "input", "title": "input", "text": inp["text"], "source": "input"}]
    return upstream_documents(ctx) or corpus.get_documents("documents")


@technique(
    "rag.chunking",
    blocking=False,
    config_schema=ConfigSchema(
        {
            "chunk_size": Field(int, "words per chunk", default=200, minimum=1, maximum=1_000_000),
            "chunk_overlap": Field(
                int, "words shared by neighbouring chunks", default=20, minimum=0, maximum=1_000_000
            ),
        },
        rules=(Rule("chunk_overlap", "<", "chunk_size"),),
        description="split documents into sentence-aligned chunks",
    ),
    outputs=("chunks", "count", "chunk_size", "chunk_overlap", "documents_in"),
)
def chunking(ctx: Any) -> dict[str, Any]:
    """Split upstream documents into sentence-aligned chunks (``chunk_size``/``chunk_overlap`` in words)."""
    size = _int(ctx, "chunk_size", 200)
    overlap = _int(ctx, "chunk_overlap", 20, minimum=0)
    if overlap >= size:
        raise TechniqueError(
            f"chunk_overlap ({overlap}) must be smaller than chunk_size ({size})",
            node_id=ctx.node_id,
            technique="rag.chunking",
        )
    docs = _input_documents(ctx)
    chunks = [c for d in docs for c in chunk_document(d, size, overlap)]
    return {
        "chunks": chunks,
        "count": len(chunks),
        "chunk_size": size,
        "chunk_overlap": overlap,
        "documents_in": len(docs),
    }


# -- rag.embedding --------------------------------------------------------------------------------------
@technique(
    "rag.embedding",
    blocking=False,
    config_schema=ConfigSchema(
        {
            "dim": Field(int, "embedding dimensions", default=DEFAULT_DIM, minimum=1, maximum=MAX_DIM),
            "model": Field(("hashing", EMBEDDER_NAME, "local"), "embedder", default="hashing"),
        },
        description="embed chunks with the local hashing embedder",
    ),
    outputs=("embeddings", "chunks", "dim", "count", "model"),
)
def embedding(ctx: Any) -> dict[str, Any]:
    """Embed upstream chunks (or documents) with the local hashing embedder (word unigrams + bigrams,
    signed feature hashing into ``dim`` dims, L2-normalised): deterministic and model-free."""
    model = str(ctx.config.get("model") or "hashing")
    if model not in ("hashing", EMBEDDER_NAME, "local"):
        raise TechniqueError(
            f"unknown embedding model '{model}' (built in: hashing)",
            node_id=ctx.node_id,
            technique="rag.embedding",
        )
    dim = _int(ctx, "dim", DEFAULT_DIM, minimum=8)
    chunks: list[dict[str, Any]] = []
    for output in ctx.upstream.values():
        if isinstance(output, Mapping) and isinstance(output.get("chunks"), list):
            chunks.extend(dict(c) for c in output["chunks"] if isinstance(c, Mapping))
    chunks = dedupe_documents(chunks) if chunks else _input_documents(ctx)
    vectors = HashingEmbedder(dim).embed([f"{c.get('title', '')}. {c.get('text', '')}" for c in chunks])
    return {"embeddings": vectors, "chunks": chunks, "dim": dim, "count": len(chunks), "model": EMBEDDER_NAME}
