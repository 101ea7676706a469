"""What a ``${name}`` means at run time, in one place.

Lookup order for the root name: a node id (its latest output), a field of an upstream output, a
pipeline input field, state, a session field, the latest value of that field produced anywhere in
the run (``previous_X`` reads X the same way), run builtins, environment variables (an UPPER_CASE
name that is unset reads as null, so ``database_url: ${DATABASE_URL}`` falls back to the default).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from ..spec.expressions import MISSING, Ref, _field

__all__ = ["resolver_for", "BUILTIN_NAMES", "SESSION_NAMES", "is_env_name"]

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


def is_env_name(name: str) -> bool:
    return name.isupper() or (name[:1].isupper() and "_" in name and name.upper() == name)


def latest_field(run: Any, name: str) -> Any:
    """The most recent value of ``name`` in any node output so far (records, newest first)."""
    for rec in reversed(run.records):
        out = rec.output
        if isinstance(out, dict) and name in out:
            return out[name]
    return MISSING


def _root(run: Any, node_id: str | None, ctx: Any, name: str) -> Any:
    if name == "item":  # a for_each item's own item comes first (the loader refuses it elsewhere)
        from .fanout import NO_ITEM, item_of

        value = item_of(run, node_id)
        if value is not NO_ITEM:
            return value
    results = run.results
    alias = run.aliases.get(name) if run.aliases else None
    if name in results:
        return results[name]
    if alias is not None and alias in results:
        return results[alias]
    if ctx is not None:
        upstream = ctx.upstream
        for out in reversed(list(upstream.values())):
            if isinstance(out, dict) and name in out:
                return out[name]
    inp = run.input
    if isinstance(inp, dict) and name in inp:
        return inp[name]
    if name in run.state:
        return run.state[name]
    if name in run.session:
        return run.session[name]
    value = latest_field(run, name)
    if value is not MISSING:
        return value
    if name.startswith("previous_"):
        value = latest_field(run, name[len("previous_") :])
        if value is not MISSING:
            return value
    if name in BUILTIN_NAMES:
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
    if name in SESSION_NAMES:
        return [] if name in ("conversation_history", "context_messages") else ""
    if name in os.environ:
        return os.environ[name]
    if is_env_name(name):
        return None
    return MISSING


def resolver_for(run: Any, node_id: str | None, ctx: Any = None) -> Callable[[Ref], Any]:
    """A resolver for templates/conditions evaluated for ``node_id`` (``ctx`` gives its upstream)."""

    def resolve(ref: Ref) -> Any:
        value = _root(run, node_id, ctx, ref.root)
        for f in ref.fields:
            if value is MISSING:
                break
            value = _field(value, f)
        return value

    return resolve
