"""What a ``${name}`` means at run time: the one table, implemented once.

A reference ``${root.field...}`` (or ``${root:-default}``) is looked up by its root, first match wins:

====  ==========================================  ================================================
 #    the root is…                                it reads
====  ==========================================  ================================================
 0    ``item`` inside a ``for_each`` step         the current item
 1    ``env:NAME``                                the environment variable ``NAME`` (unset: null).
                                                  The loader lists every such read on the spec.
 2    an UPPER_CASE name in a connection setting  the same, so the seed's ``redis_url:
      (``redis_url``, ``database_url``,           "${REDIS_URL}"`` works. Nowhere else does a
      ``base_url``, ``scheduler_address``)        bare name read the environment.
 3    a node id                                   that node's latest output
 4    a field of a fired predecessor's output     that field (the last predecessor in declaration
                                                  order that has it)
 5    a field of the pipeline input               that field
 6    a state key                                 that value
 7    a session field                             that value
 8    a field any node output so far has          its most recent value (an index built as the run
                                                  goes: a lookup never rescans the records)
 9    ``previous_X``                              X as in row 8
10    a run builtin (:data:`BUILTIN_NAMES`)       ``run_id``, ``iteration``, ``input``, …
11    a session name (:data:`SESSION_NAMES`)      empty (``[]`` for histories, ``""`` otherwise)
12    in an edge condition, a name no row above   the edge's source node output (the seed's
      defines and the loader could not place     ``${evaluation.score}`` on the edge leaving
                                                  ``evaluate``); the loader warns where it applies
====  ==========================================  ================================================

Nothing found: ``:-default`` if given, else the template fails naming the reference. A name that exists
(an input field, say) is never rebound to a node: row 12 is the last resort, decided per lookup.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..document.expressions import MISSING, Ref, _field
from ..document.templates import ENV_PREFIX, compile_value, is_env_name

if TYPE_CHECKING:  # pragma: no cover
    from .run import ContextRun

__all__ = [
    "resolver_for",
    "BUILTIN_NAMES",
    "SESSION_NAMES",
    "is_env_name",
    "FieldIndex",
    "field_index",
    "env_value",
]

BUILTIN_NAMES = frozenset(
    {
        "run_id",
        "workflow_id",
        "node_id",
        "step_name",
        "iteration",
        "input",
        "inputs",
        "state",
        "session",
        "results",
        "upstream",
    }
)
SESSION_NAMES = frozenset(
    {
        "conversation_history",
        "conversation_summary",
        "session_id",
        "context_messages",
        "token_allocation",
        "query",
    }
)


class FieldIndex:
    """Latest value of every output field, kept up to date by reading only the records added since the
    last lookup (records are append-only), so row 8 of the table costs O(1) per lookup."""

    __slots__ = ("seen", "latest")

    def __init__(self) -> None:
        self.seen = 0
        self.latest: dict[str, Any] = {}

    def get(self, records: list[Any], name: str) -> Any:
        n = len(records)
        if n != self.seen:
            latest = self.latest
            for i in range(self.seen, n):
                out = records[i].output
                if isinstance(out, dict):
                    latest.update(out)
            self.seen = n
        return self.latest.get(name, MISSING)


def field_index(run: ContextRun) -> FieldIndex:
    """The run's index (created on first use; a run without ``extras`` gets a throwaway one)."""
    extras = getattr(run, "extras", None)
    if extras is None:
        return FieldIndex()
    index: FieldIndex | None = extras.get("_field_index")
    if index is None:
        index = extras["_field_index"] = FieldIndex()
    return index


def env_value(ref: Ref) -> Any:
    """Rows 1-2: an ``env:NAME`` reference's value (unset and no default: null)."""
    value = os.environ.get(ref.root[len(ENV_PREFIX) :])
    if value is None:
        return MISSING if ref.default is not None else None
    return value


def _root(run: ContextRun, node_id: str | None, ctx: Any, name: str, index: FieldIndex) -> Any:
    if name == "item":  # row 0: a for_each item's own item comes first (the loader refuses it elsewhere)
        from .items import NO_ITEM, item_of

        value = item_of(run, node_id)
        if value is not NO_ITEM:
            return value
    results = run.results
    if name in results:  # row 3
        return results[name]
    if ctx is not None:  # row 4
        for out in reversed(list(ctx.upstream.values())):
            if isinstance(out, dict) and name in out:
                return out[name]
    inp = run.input
    if isinstance(inp, dict) and name in inp:  # row 5
        return inp[name]
    if name in run.state:  # row 6
        return run.state[name]
    if name in run.session:  # row 7
        return run.session[name]
    records = getattr(run, "records", None)
    if records is not None:
        value = index.get(records, name)  # row 8
        if value is not MISSING:
            return value
        if name.startswith("previous_"):  # row 9
            value = index.get(records, name[len("previous_") :])
            if value is not MISSING:
                return value
    if name in BUILTIN_NAMES:  # row 10
        return {
            "run_id": run.run_id,
            "workflow_id": run.workflow_id,
            "node_id": node_id,
            "step_name": node_id,
            "iteration": getattr(ctx, "iteration", 1),
            "input": inp,
            "inputs": inp,
            "state": run.state,
            "session": run.session,
            "results": results,
            "upstream": ctx.upstream if ctx is not None else {},
        }[name]
    if name in SESSION_NAMES:  # row 11
        return [] if name in ("conversation_history", "context_messages") else ""
    aliases = getattr(run, "aliases", None)
    if aliases and node_id is not None:  # row 12: only names the loader placed on an edge leaving node_id
        src = aliases.get((node_id, name))
        if src is not None and src in results:
            return results[src]
    return MISSING


def resolver_for(run: ContextRun, node_id: str | None, ctx: Any = None) -> Callable[[Ref], Any]:
    """A resolver for templates/conditions evaluated for ``node_id`` (``ctx`` gives its upstream)."""
    index = field_index(run)

    def resolve(ref: Ref) -> Any:
        root = ref.root
        if root.startswith(ENV_PREFIX):  # rows 1-2
            return env_value(ref)
        value = _root(run, node_id, ctx, root, index)
        for f in ref.fields:
            if value is MISSING:
                break
            value = _field(value, f)
        return value

    return resolve


def render_runtime(text: Any, run: ContextRun, ctx: Any) -> Any:
    """Render templates in ``text`` now, in the scope of ``ctx`` (used by ``ctx.render``)."""
    if not isinstance(text, (str, list, dict)) or "${" not in (
        text if isinstance(text, str) else json.dumps(text, default=str)
    ):
        return text
    fn, _ = compile_value(text, f"node {getattr(ctx, 'node_id', '?')}")
    if fn is None:
        return text
    return fn(resolver_for(run, ctx.node_id, ctx))
