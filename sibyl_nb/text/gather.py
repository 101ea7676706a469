"""Find a technique's inputs in what earlier steps produced (``ctx.upstream``, then ``ctx.results``).

Techniques are wired by edges, not by argument names, so each one looks for the fields it
understands: ``documents`` (or ``results``/``chunks``) lists, ``queries``, an ``answer``/``text``.
Upstream outputs (the predecessors whose edges fired) come first; ``ctx.results`` (everything that
ran so far, newest last) is the fallback for a step that is a few hops away from its sources.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .ranking import dedupe_documents

__all__ = ["document_lists", "upstream_documents", "upstream_queries", "upstream_answer", "is_document"]

_DOC_FIELDS = ("documents", "results", "chunks")


def is_document(x: Any) -> bool:
    # ``type(x) is dict`` first: the common case, without the ABC's slower isinstance check
    return (type(x) is dict or isinstance(x, Mapping)) and isinstance(x.get("text"), str)


def _docs_of(output: Any) -> list[dict[str, Any]] | None:
    if not (type(output) is dict or isinstance(output, Mapping)):
        return None
    for field in _DOC_FIELDS:  # "documents" wins: web_search returns the same list under both names
        value = output.get(field)
        if type(value) is list or (isinstance(value, Sequence) and not isinstance(value, str)):
            docs = [dict(d) for d in value if is_document(d)]
            if docs or field == "documents":
                return docs
    return None


def document_lists(outputs: Mapping[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    """``(node_id, documents)`` for every output that carries a document list, in order."""
    out = []
    for node_id, output in outputs.items():
        # a for_each node's output is the list of its items' outputs: each item counts on its own
        parts = enumerate(output) if isinstance(output, list) else ((None, output),)
        for i, part in parts:
            docs = _docs_of(part)
            if docs is not None:
                out.append((str(node_id) if i is None else f"{node_id}[{i}]", docs))
    return out


def upstream_documents(ctx: Any, *, fallback_to_results: bool = True) -> list[dict[str, Any]]:
    """Documents from upstream outputs (deduped, in order), else from the newest result that has some."""
    lists = document_lists(ctx.upstream)
    if lists:
        return dedupe_documents([d for _, docs in lists for d in docs])
    if fallback_to_results:
        for _, docs in reversed(document_lists(ctx.results)):
            if docs:
                return docs
    return []


def upstream_queries(ctx: Any) -> list[str]:
    """``queries`` lists from upstream (deduped, in order); else ``[ctx.query]`` (or ``[]``)."""
    seen: dict[str, None] = {}
    for output in ctx.upstream.values():
        if isinstance(output, Mapping):
            qs = output.get("queries")
            if isinstance(qs, Sequence) and not isinstance(qs, str):
                for q in qs:
                    if isinstance(q, str) and q.strip():
                        seen.setdefault(q.strip(), None)
    if seen:
        return list(seen)
    q = ctx.query
    return [q] if q else []


def upstream_answer(ctx: Any) -> tuple[str, str | None]:
    """``(text, node_id)`` of the answer to work on: upstream ``answer``/``text``, else the newest result's."""
    for source in (ctx.upstream, ctx.results):
        items = list(source.items())
        if source is ctx.results:
            items.reverse()
        for node_id, output in items:
            if isinstance(output, Mapping):
                for field in ("answer", "text"):
                    value = output.get(field)
                    if (
                        isinstance(value, str)
                        and value.strip()
                        and (field == "answer" or output.get("kind") in (None, "answer"))
                    ):
                        return value, str(node_id)
            elif isinstance(output, str) and output.strip():
                return output, str(node_id)
    return "", None
