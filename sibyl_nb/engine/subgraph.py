"""Subgraphs: a pipeline of the same document used as a step (``use: pipeline.<name>``) or a graph
node (``technique: pipeline.<name>``), any number of times.

The node (``kind="subgraph"``) runs the inner pipeline's graph on a nested scheduler with a run
state of its own (its own results, so two uses of one pipeline never see each other's outputs)
that shares the outer run's providers, state, session, trust and clock. Its input is the node's
``config.input`` (templates rendered in the node's scope), else the outer pipeline's input.

Everything it does appears under the node, ids prefixed with ``<node id>/``: its events as they
happen (so the trace, the widget and ``pipe.stream`` show ``review/draft``), its step records and
outputs in the outer result (so checkpoints hold them). An inner failure fails the node with an
error that names the inner node. The node's output is the inner pipeline's output.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .events import Event
from .ir import SUBGRAPH_PREFIX
from .nested import settle_nested
from .scope import resolver_for

if TYPE_CHECKING:  # the scheduler imports this module; a nested one is type(scheduler)(...)
    from .ir import Node
    from .run import BusLike, RunLike
    from .scheduler import Scheduler

__all__ = ["SubgraphPlan", "run_subgraph", "SUBGRAPH_PREFIX", "SEP"]

SEP = "/"


@dataclass(slots=True)
class SubgraphPlan:
    pipeline: str  # the inner pipeline's name
    input_render: Any = None  # compiled ``config.input`` (None: the outer input)
    has_input: bool = False
    spec: Any = None  # the inner PipelineSpec, set when the whole document is compiled


class _PrefixBus:
    """Forwards the inner run's events to the outer bus with prefixed node ids."""

    __slots__ = ("outer", "prefix", "owner")

    def __init__(self, outer: BusLike, prefix: str, owner: str) -> None:
        self.outer = outer
        self.prefix = prefix
        self.owner = owner

    def __bool__(self) -> bool:
        return bool(self.outer)

    @property
    def _subscribers(self) -> list[Any]:
        return list(getattr(self.outer, "_subscribers", ()))

    def emit(self, ev: Event) -> None:
        if ev.node_id is not None:
            ev.node_id = self.prefix + ev.node_id
        ev.data.setdefault("subgraph", self.owner)
        self.outer.emit(ev)


@dataclass
class _InnerRun:
    """What the scheduler, ``ctx`` and templates read of a run, for one use of a subgraph."""

    outer: RunLike
    input: Any
    prefix: str
    spec: Any
    results: dict[str, Any] = field(default_factory=dict)
    records: list[Any] = field(default_factory=list)
    passthrough: dict[str, tuple[str, ...]] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)
    last_completed: str | None = None
    scheduler: Scheduler | None = None

    def __post_init__(self) -> None:
        o = self.outer
        self.bus = _PrefixBus(o.bus, self.prefix, self.prefix[: -len(SEP)])
        self.extras["tokens"] = o.extras.get("tokens", False)

    # shared with the outer run
    def __getattr__(self, name: str) -> Any:
        if name in ("run_id", "workflow_id", "state", "session", "providers", "deferred", "t0"):
            return getattr(self.outer, name)
        if name in ("started_at", "rng", "trusted", "pipeline", "allocations"):
            return getattr(self.outer, name)
        raise AttributeError(name)

    @property
    def retries(self) -> int:
        retries: int = self.outer.retries
        return retries

    @retries.setter
    def retries(self, value: int) -> None:
        self.outer.retries = value

    @property
    def aliases(self) -> dict[str, str]:
        aliases: dict[str, str] = self.spec.aliases
        return aliases

    def render(self, text: Any, ctx: Any) -> Any:
        from .scope import render_runtime

        return render_runtime(text, self, ctx)

    def emit_custom(self, kind: str, node_id: str, iteration: int, data: dict[str, Any]) -> None:
        self.outer.emit_custom(kind, self.prefix + node_id, iteration, data)


async def run_subgraph(scheduler: Scheduler, node: Node, ctx: Any) -> Any:
    """Run the inner pipeline for ``node``; returns its output (records copied, prefixed, into the run)."""
    run = scheduler.run
    plan: SubgraphPlan = node.inner
    spec = plan.spec
    inner_input = plan.input_render(resolver_for(run, node.id, ctx)) if plan.has_input else run.input
    prefix = node.id + SEP
    inner = _InnerRun(run, inner_input, prefix, spec)
    # a nested scheduler of the outer one's class (no import of the scheduler, which imports this)
    sub = type(scheduler)(spec.graph, inner, executor=scheduler.executor, pruned=spec.pruned)
    inner.scheduler = sub
    output: Any = None
    try:
        await sub.execute()
        output = _output(sub, inner)  # before the records move out under prefixed ids
    finally:
        _copy_out(run, inner, prefix)
    settle_nested(
        scheduler,
        sub,
        node,
        failed=lambda error: (
            f"subgraph pipeline '{plan.pipeline}': node '{prefix}{error.node_id}' "
            f"({error.technique}, attempt {error.attempts}) failed: {error.message}"
        ),
        interrupted=lambda paused: (
            f"subgraph pipeline '{plan.pipeline}': ctx.interrupt inside a subgraph "
            f"({', '.join(prefix + n for n in paused)}) is not supported: put the question in "
            f"the outer pipeline"
        ),
    )
    return output


def _output(sub: Scheduler, inner: _InnerRun) -> Any:
    """The inner pipeline's output, as ``Pipeline`` computes a run's: its exits that produced one."""
    output = getattr(sub, "output", None)
    if callable(output):
        return output()
    latest = {r.node_id: r.status for r in inner.records}
    outs = {
        x: inner.results[x]
        for x in sub.graph.exits
        if latest.get(x) in ("ran", "cached", "edited") and x in inner.results
    }
    if len(outs) == 1:
        return next(iter(outs.values()))
    return outs or None


def _copy_out(run: RunLike, inner: _InnerRun, prefix: str) -> None:
    for rec in inner.records:
        rec.node_id = prefix + rec.node_id
        if rec.fallback_for:
            rec.fallback_for = prefix + rec.fallback_for
        run.records.append(rec)
    for nid, out in inner.results.items():
        run.results[prefix + nid] = out
