"""The engine-level ``workflow_orchestration`` techniques.

``graph`` and ``orchestration`` are compiled into the graph IR by the loader (they are never called);
``passthrough`` stands in for the seed's placeholder steps that name no technique.
"""

from __future__ import annotations

from typing import Any

from ...spec.schema import ConfigSchema
from ...techniques.context import StepContext
from ..registry import register_technique

__all__ = ["passthrough"]


def _compiled(ctx: StepContext) -> Any:  # pragma: no cover - the loader never lets this be called
    raise RuntimeError(f"{ctx.technique} is compiled into the graph and is never called directly")


register_technique(
    "workflow_orchestration.graph",
    _compiled,
    blocking=False,
    compiles=True,
    subtechniques=("dag", "cyclic", "conditional", "dynamic"),
)
register_technique(
    "workflow_orchestration.orchestration",
    _compiled,
    blocking=False,
    compiles=True,
    subtechniques=("sequential", "parallel", "conditional", "error_handling"),
)


def passthrough(ctx: StepContext) -> Any:
    """Placeholder step: hands on its upstream output (or the input when it has none)."""
    upstream = ctx.upstream
    if len(upstream) == 1:
        return next(iter(upstream.values()))
    if upstream:
        return dict(upstream)
    return ctx.input


register_technique(
    "workflow_orchestration.passthrough",
    passthrough,
    blocking=False,
    # open: a placeholder stands for a technique still to be written; its config is rendered (so a
    # template typo is still caught) but not otherwise checked
    config_schema=ConfigSchema({}, closed=False, description="placeholder step: hands its input on"),
)
