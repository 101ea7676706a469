"""Call a technique by hand, outside a pipeline: for unit tests and for trying one out in a cell."""

from __future__ import annotations

import asyncio
import inspect
import uuid
from typing import Any

from .techniques.context import StepContext

__all__ = ["StandaloneRun", "make_context", "call_technique"]


class StandaloneRun:
    """The slice of a run a :class:`StepContext` reads, with no scheduler behind it."""

    def __init__(
        self,
        input: Any = None,
        results: dict[str, Any] | None = None,
        state: dict[str, Any] | None = None,
        session: dict[str, Any] | None = None,
        providers: dict[str, Any] | None = None,
    ) -> None:
        self.input = {} if input is None else input
        self.results: dict[str, Any] = dict(results or {})
        self.state: dict[str, Any] = dict(state or {})
        self.session: dict[str, Any] = dict(session or {})
        self.providers = dict(providers or {})
        self.run_id = uuid.uuid4().hex[:12]
        self.workflow_id = self.run_id
        self.deferred: list[Any] = []
        self.events: list[tuple[str, str, int, dict[str, Any]]] = []

    def render(self, text: Any, ctx: StepContext) -> Any:
        from .engine.scope import render_runtime

        return render_runtime(text, self, ctx)

    def emit_custom(self, kind: str, node_id: str, iteration: int, data: dict[str, Any]) -> None:
        self.events.append((kind, node_id, iteration, data))


def make_context(
    config: dict[str, Any] | None = None,
    input: Any = None,
    *,
    upstream: dict[str, Any] | None = None,
    node_id: str = "step",
    technique: str = "",
    session: dict[str, Any] | None = None,
    state: dict[str, Any] | None = None,
    iteration: int = 1,
    run: StandaloneRun | None = None,
) -> StepContext:
    """A context whose ``upstream`` is exactly ``upstream`` (its entries also count as results)."""
    run = run or StandaloneRun(input=input, results=upstream, state=state, session=session)
    if input is not None:
        run.input = input
    preds = tuple((upstream or {}).keys())
    for k, v in (upstream or {}).items():
        run.results[k] = v
    return StepContext(run, node_id, technique, config or {}, preds, iteration=iteration)


def call_technique(name: str, config: dict[str, Any] | None = None, input: Any = None, **kwargs: Any) -> Any:
    """Run the registered technique ``name`` once on a standalone context and return its output."""
    from .techniques.registry import get_technique

    info = get_technique(name)
    ctx = make_context(config, input, technique=name, **kwargs)
    out = info.fn(ctx)
    if inspect.isawaitable(out):
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(_await(out))
        raise RuntimeError("call_technique() inside a running loop: await the technique yourself")
    return out


async def _await(aw: Any) -> Any:
    return await aw
