"""A nested run's outcome, said as its outer node's: one rule for every node that runs a graph of its
own on a nested scheduler (``for_each`` items, subgraphs).

An inner failure, or an interrupt inside (a nested run cannot pause its outer run), fails the outer
node with a :class:`TechniqueError` naming that node, its YAML path and line, so the user is pointed
at the line they wrote; another early stop (a budget, a cancel) carries over to the outer run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import NodeExecutionError, TechniqueError

if TYPE_CHECKING:  # never imported at run time: the scheduler imports the modules that use this
    from .ir import Node
    from .scheduler import Scheduler

__all__ = ["settle_nested"]


def settle_nested(
    scheduler: Scheduler,
    sub: Scheduler,
    node: Node,
    *,
    failed: Callable[[NodeExecutionError], str],
    interrupted: Callable[[list[str]], str],
) -> None:
    """Raise for ``sub``'s failure (message ``failed(error)``) or interrupt (``interrupted(paused
    node ids)``) as ``node``'s error; else carry an early stop over to ``scheduler``."""
    error = sub.failure_error()
    if error is not None:
        raise _node_error(node, failed(error)) from error.cause
    if sub.stopped_by == "interrupted":
        raise _node_error(node, interrupted([n.id for n, _ in sub._paused]))
    if sub.stopped_by != "completed" and scheduler.stopped_by == "completed":
        scheduler.stopped_by = sub.stopped_by


def _node_error(node: Node, message: str) -> TechniqueError:
    return TechniqueError(
        message, node_id=node.id, technique=node.technique, path=node.path or None, line=node.line
    )
