"""``external.web_search`` with pluggable backends; the default is an offline local corpus.

Nothing here touches the network by default: the ``offline`` backend searches the sample corpus's
``web`` collection and says so in every result (``offline: True`` and a ``note``), so nobody mistakes
it for live web results. Register a real backend with :func:`register_web_search_backend`.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Union

from ...document.schema import ConfigSchema, Field
from ...errors import ConfigError, TechniqueError
from ...text import corpus
from ...text.gather import upstream_queries
from ...text.ranking import reciprocal_rank_fusion
from ..registry import technique

__all__ = [
    "register_web_search_backend",
    "unregister_web_search_backend",
    "web_search_backends",
    "set_default_web_search_backend",
    "web_search",
    "offline_backend",
    "OFFLINE_NOTE",
]

BackendResult = Union[Sequence[Mapping[str, Any]], Awaitable[Sequence[Mapping[str, Any]]]]
Backend = Callable[[str, int, Mapping[str, Any]], BackendResult]

OFFLINE_NOTE = (
    "offline: results come from the local sample corpus ('web' collection), not the live web; "
    "register a real backend with sibyl_nb.techniques.builtins.external.register_web_search_backend"
)

_BACKENDS: dict[str, Backend] = {}
_DEFAULT = ["offline"]


def offline_backend(query: str, max_results: int, config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Search the corpus's ``web`` collection (or ``config['collection']``) with hybrid search."""
    collection = str(config.get("collection") or "web")
    hits = corpus.search(query, collection, "hybrid", max_results)
    for h in hits:
        h["snippet"] = h.get("text", "")
        h["offline"] = True
        h["note"] = OFFLINE_NOTE
    return hits


def register_web_search_backend(name: str, fn: Backend, *, default: bool = False) -> None:
    """Add a backend ``fn(query, max_results, config) -> [{"title", "url", "text"|"snippet"}, ...]``
    (sync or async). ``default=True`` makes steps without ``backend:`` use it."""
    if not callable(fn):
        raise ConfigError(f"web search backend '{name}' must be callable")
    _BACKENDS[name] = fn
    if default:
        _DEFAULT[0] = name


def unregister_web_search_backend(name: str) -> None:
    if name == "offline":
        raise ConfigError("the offline web search backend cannot be removed")
    _BACKENDS.pop(name, None)
    if _DEFAULT[0] == name:
        _DEFAULT[0] = "offline"


def set_default_web_search_backend(name: str) -> None:
    if name not in _BACKENDS:
        raise ConfigError(f"unknown web search backend '{name}' (known: {', '.join(sorted(_BACKENDS))})")
    _DEFAULT[0] = name


def web_search_backends() -> list[str]:
    return sorted(_BACKENDS)


register_web_search_backend("offline", offline_backend)


def _normalise(hit: Mapping[str, Any], backend: str, rank: int) -> dict[str, Any]:
    d = dict(hit)
    text = d.get("text") or d.get("snippet") or d.get("content") or ""
    d["text"] = str(text)
    d.setdefault("snippet", d["text"])
    d.setdefault("url", "")
    d["id"] = str(d.get("id") or d.get("url") or f"{backend}-{rank}")
    d.setdefault("title", d["url"] or d["id"])
    d.setdefault("source", backend)
    d.setdefault("collection", "web")
    d.setdefault("score", round(1.0 / rank, 6))
    d.setdefault("offline", backend == "offline")
    return d


MAX_RESULTS = 1_000


@technique(
    "external.web_search",
    blocking=False,
    config_schema=ConfigSchema(
        {
            "max_results": Field(int, "results per query", default=5, minimum=1, maximum=MAX_RESULTS),
            "backend": Field(str, "registered search backend (default: offline)"),
            "query": Field(str, "the query (default: upstream queries, else the input's)"),
            "collection": Field(str, "corpus collection of the offline backend", default="web"),
        },
        description="web search through a registered backend",
    ),
    outputs=("results", "documents", "count", "offline", "backend", "query", "queries", "note"),
)
async def web_search(ctx: Any) -> dict[str, Any]:
    """Web search through a registered backend (default: ``offline``, the local corpus's ``web``
    collection). Several upstream ``queries`` are searched and fused by reciprocal rank fusion."""
    name = str(ctx.config.get("backend") or _DEFAULT[0])
    backend = _BACKENDS.get(name)
    if backend is None:
        raise TechniqueError(
            f"unknown web search backend '{name}' (known: {', '.join(web_search_backends())})",
            node_id=ctx.node_id,
            technique="external.web_search",
        )
    try:
        max_results = max(1, int(ctx.config.get("max_results") or 5))
    except (TypeError, ValueError):
        raise TechniqueError(
            f"config 'max_results' must be an integer, got {ctx.config.get('max_results')!r}",
            node_id=ctx.node_id,
            technique="external.web_search",
        ) from None
    queries = [str(ctx.config["query"])] if ctx.config.get("query") else upstream_queries(ctx)
    config = dict(ctx.config)
    if inspect.iscoroutinefunction(backend):
        hits = await asyncio.gather(*(backend(q, max_results, config) for q in queries))
    else:  # a sync backend (the offline corpus, an HTTP client) runs in a thread: the loop stays free
        hits = await asyncio.to_thread(lambda: [backend(q, max_results, config) for q in queries])
        hits = [await h if inspect.isawaitable(h) else h for h in hits]
    runs = [[_normalise(h, name, i + 1) for i, h in enumerate(out or [])] for out in hits]
    runs = [r for r in runs if r]
    if len(runs) > 1:
        results = reciprocal_rank_fusion(runs)[:max_results]
        for r in results:
            r.pop("ranks", None)
            r.pop("source_score", None)
    else:
        results = runs[0][:max_results] if runs else []
    offline = all(bool(r.get("offline")) for r in results) if results else name == "offline"
    out_dict: dict[str, Any] = {
        "results": results,
        "documents": [dict(r) for r in results],
        "count": len(results),
        "offline": offline,
        "backend": name,
        "query": queries[0] if queries else "",
        "queries": queries,
    }
    out_dict["note"] = OFFLINE_NOTE if offline else ""
    return out_dict
