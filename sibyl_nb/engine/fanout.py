"""``for_each``: one node run once per item of a list a step produced at run time (LangGraph's ``Send``).

``for_each: ${expand.queries}`` on a graph node or an orchestration step makes it a *map* node
(``kind="map"``). When it runs, the expression is evaluated in the node's scope; each item ``i``
becomes its own activation ``<id>[i]`` on a nested scheduler that shares the run: items run
concurrently up to ``max_concurrent`` (the node's, else the graph's), each with its own retries,
timeout, cache entry and step record, and sees the item as ``${item}`` / ``ctx.item`` and the map
node's upstream as its own. The map node's output is the list of the items' outputs, in item order.

An empty list is a defined outcome: no item runs and the node's output is ``[]`` (what follows runs
on that). A value that is not a list is an error naming the node and what the expression gave.
An item that fails (after its retries) fails the map node; its ``on_error`` fallbacks then apply
to the node as a whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import NodeExecutionError, TemplateError, short_repr
from .ir import GraphIR, Node, RetryPolicy
from .items import ITEMS_KEY, NO_ITEM, item_id, item_of
from .nested import settle_nested
from .scope import resolver_for

if TYPE_CHECKING:  # the scheduler imports this module; a nested one is type(scheduler)(...)
    from .run import RunLike
    from .scheduler import Scheduler

__all__ = ["ForEach", "run_for_each", "item_id", "item_of", "ITEMS_KEY", "NO_ITEM"]


@dataclass(slots=True)
class ForEach:
    """What a map node runs per item (compiled at load)."""

    text: str  # the for_each expression as written
    render: Any  # compiled template: resolver -> the list
    config_render: Any = None  # the node's config templates, rendered per item (None: static)
    retry: RetryPolicy | None = None  # each item's
    timeout: float | None = None  # each item's
    max_concurrent: int | None = None


def _items(node: Node, ctx: Any, run: RunLike) -> list[Any]:
    plan: ForEach = node.inner
    value = plan.render(resolver_for(run, node.id, ctx))
    if isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, list):
        where = f" at {node.path}" + (f" (line {node.line})" if node.line else "")
        raise TemplateError(
            f"for_each of node '{node.id}'{where}: {plan.text} gave {type(value).__name__} "
            f"{short_repr(value)}, not a list"
        )
    return value


async def run_for_each(scheduler: Scheduler, node: Node, ctx: Any) -> list[Any]:
    """Run ``node`` once per item (nested scheduler); returns the outputs in item order."""
    run = scheduler.run
    items = _items(node, ctx, run)
    if not items:
        return []
    plan: ForEach = node.inner
    outer = scheduler.graph
    group = outer.limits.get(node.limit_key) if node.limit_key is not None else None
    limits = [x for x in (plan.max_concurrent, group, outer.max_concurrent) if x]
    limit = min(limits) if limits else None
    graph = GraphIR(max_concurrent=limit)
    ids = [item_id(node.id, i) for i in range(len(items))]
    for nid in ids:
        graph.add_node(
            Node(
                nid,
                node.technique,
                node.config,
                render=plan.config_render,
                retry=plan.retry,
                timeout=plan.timeout,
                cache=node.cache,
                group=node.group,
                path=node.path,
                line=node.line,
            )
        )
    graph.finalize()
    preds = ctx._preds if isinstance(ctx._preds, tuple) else ()
    table = run.extras.setdefault(ITEMS_KEY, {})  # what ctx.item and ${item} read, by item node id
    table.update(zip(ids, items, strict=True))
    # a nested scheduler of the outer one's class (no import of the scheduler, which imports this)
    sub = type(scheduler)(graph, run, executor=scheduler.executor, hooks=scheduler.hooks)
    sub._ready = type(sub._ready)((n, preds) for n, _ in sub._ready)  # items see the map node's upstream
    try:
        await sub.execute()
    finally:
        for nid in ids:
            table.pop(nid, None)

    def failed(error: NodeExecutionError) -> str:
        index = ids.index(error.node_id) if error.node_id in ids else -1
        what = f" (item {short_repr(items[index])})" if index >= 0 else ""
        return (
            f"for_each item '{error.node_id}'{what} failed after {error.attempts} attempt(s): {error.message}"
        )

    settle_nested(
        scheduler,
        sub,
        node,
        failed=failed,
        interrupted=lambda paused: (
            f"ctx.interrupt inside a for_each item ({', '.join(paused)}) is not supported: "
            f"ask before or after the for_each node"
        ),
    )
    results = run.results
    return [results.get(nid) for nid in ids]
