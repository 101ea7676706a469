"""``ctx``: what a technique sees when the scheduler calls it.

Kept deliberately small and cheap to build (slots, lazy ``upstream``) because one is made per node
execution and per-node overhead is a product goal.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from ..engine.run import BusLike, ContextRun
    from ..providers.base import Provider

__all__ = ["StepContext", "QUERY_KEYS", "query_of"]

# Input fields, in order, that hold "the user's query" for techniques that need one.
QUERY_KEYS = ("query", "message", "question", "prompt", "text", "input")


def query_of(value: Any) -> str:
    """The user's query inside a pipeline input (a string, or a dict with one of ``QUERY_KEYS``)."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        for key in QUERY_KEYS:
            v = value.get(key)
            if isinstance(v, str) and v:
                return v
    return ""


class StepContext:
    """The argument every technique receives.

    Attributes: ``config`` (the node's config, templates rendered), ``input`` (pipeline input),
    ``node_id``, ``technique``, ``iteration`` (1-based, grows on back edges), ``attempt`` (1-based,
    grows on retries), ``cancelled``. Properties: ``upstream`` (outputs of fired predecessors by id), ``results``
    (every output so far by id), ``state`` and ``session`` (run-wide dicts), ``query``.
    """

    __slots__ = (
        "node_id",
        "technique",
        "config",
        "input",
        "iteration",
        "attempt",
        "_run",
        "_preds",
        "_cancel",
        "_asked",
    )

    def __init__(
        self,
        run: ContextRun,
        node_id: str,
        technique: str,
        config: Mapping[str, Any],
        preds: tuple[str, ...] | Callable[[], dict[str, Any]] = (),
        iteration: int = 1,
        attempt: int = 1,
    ) -> None:
        self._run = run
        self.node_id = node_id
        self.technique = technique
        self.config = config
        self.input = run.input
        self._preds = preds
        self.iteration = iteration
        self.attempt = attempt
        self._cancel: Any = None  # a threading.Event the scheduler sets on timeout / cancellation
        self._asked: tuple[int, int] | None = None  # (attempt, calls to interrupt() in it)

    @property
    def cancelled(self) -> bool:
        """True once the step timed out or the run cancelled it. Sync code in a worker thread cannot
        be killed: a long-running technique polls this and returns early."""
        cancel = self._cancel
        return cancel is not None and cancel.is_set()

    # -- data ---------------------------------------------------------------------------------
    @property
    def upstream(self) -> dict[str, Any]:
        """Outputs of the predecessors whose edges fired into this node, by node id."""
        preds = self._preds
        if callable(preds):
            return preds()
        results = self._run.results
        return {p: results[p] for p in preds if p in results}

    @property
    def item(self) -> Any:
        """This activation's item when the node has ``for_each`` (``${item}`` in its config), else None."""
        from ..engine.items import NO_ITEM, item_of

        value = item_of(self._run, self.node_id)
        return None if value is NO_ITEM else value

    @property
    def results(self) -> dict[str, Any]:
        return self._run.results

    @property
    def state(self) -> dict[str, Any]:
        return self._run.state

    @property
    def session(self) -> dict[str, Any]:
        """Run-wide session fields (``session_id``, ``conversation_history``, ``conversation_summary``...)."""
        return self._run.session

    @property
    def run_id(self) -> str:
        return self._run.run_id

    @property
    def workflow_id(self) -> str:
        return self._run.workflow_id

    @property
    def query(self) -> str:
        """The current user query: the session's rewritten query if a step set one, else the input's."""
        q = self._run.session.get("query")
        return q if isinstance(q, str) and q else query_of(self._run.input)

    # -- services -----------------------------------------------------------------------------
    def provider(self, name: str | None = None) -> Provider:
        """The LLM provider called ``name`` (``config['provider']``, else ``primary``)."""
        from ..providers.registry import get_provider

        chosen = name or self.config.get("provider") or "primary"
        return get_provider(chosen, run=self._run)

    def render(self, text: Any) -> Any:
        """Render ``${...}`` templates in ``text`` in this node's scope, at run time."""
        return self._run.render(text, self)

    def defer(self, fn: Callable[[Any], Any]) -> None:
        """Call ``fn(result)`` (sync or async) after the run succeeds: a session stores the reply this way."""
        self._run.deferred.append(fn)

    def interrupt(self, payload: Any = None) -> Any:
        """Pause the run here and ask for input (``payload``: JSON, shown to whoever answers). The run
        returns ``stopped_by="interrupted"``; ``pipe.resume(workflow_id, value=v)`` runs this node again
        and this same call returns ``v`` (the k-th call the k-th answer). Sync and async techniques."""
        from ..engine.interrupt import ask

        return ask(self, payload)

    def token_sink(self) -> Callable[[str], None] | None:
        """Where a generation sends its text deltas, or None when nobody streams this run (then the
        provider is asked for a whole answer, not a stream)."""
        run = self._run
        extras = getattr(run, "extras", None)  # a stand-alone run (sibyl_nb.testing) has none
        if not extras or not extras.get("tokens"):
            return None
        bus: BusLike | None = getattr(run, "bus", None)  # nor a bus (a Dask worker's is None)
        if not bus:
            return None
        from ..engine.events import Event

        emit, run_id, node_id, iteration = bus.emit, run.run_id, self.node_id, self.iteration

        def sink(delta: str) -> None:
            if delta:
                emit(Event("token", run_id, node_id, iteration, time.time(), {"delta": delta}))

        return sink

    def emit(self, kind: str, **data: Any) -> None:
        """Publish a custom event (e.g. ``token_allocation``) to the run's observers."""
        self._run.emit_custom(kind, self.node_id, self.iteration, data)

    def __repr__(self) -> str:
        return f"<StepContext node={self.node_id!r} technique={self.technique!r} iteration={self.iteration}>"
