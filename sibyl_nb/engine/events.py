"""Typed events the scheduler publishes, and the typed hooks observers subscribe with.

An observer is either a plain callable (it receives every :class:`Event`) or an :class:`Observer`
subclass that overrides the ``on_<kind>`` hooks it cares about (the pattern of Burr's lifecycle
hooks): the bus calls only the hooks a class overrides, so no observer needs an ``if kind == ...``
ladder and a kind nobody listens to costs nothing. Events are only built when somebody listens, so
an unobserved run pays nothing for them.

``EventKind`` is a ``str`` enum: ``ev.kind == "node_finished"`` keeps working for code that
compares with strings (notebook views, tests).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

__all__ = ["Event", "EventBus", "EventKind", "EVENT_KINDS", "Observer", "Subscriber"]

log = logging.getLogger("sibyl_nb.events")


class EventKind(str, Enum):
    """What happened. The ``data`` each kind carries is listed next to it."""

    RUN_STARTED = "run_started"  # pipeline, input, workflow_id, nodes (ids), resumed
    NODE_STARTED = "node_started"  # technique, attempt[, fallback_for]: emitted when the node's code begins
    NODE_FINISHED = "node_finished"  # technique, output, duration, attempts[, fallback_for]
    NODE_SKIPPED = "node_skipped"  # reason
    NODE_CACHED = "node_cached"  # technique, output
    NODE_RETRYING = "node_retrying"  # technique, attempt, delay, error
    NODE_FAILED = "node_failed"  # technique, attempts, error, recovered (a fallback takes over)
    INTERRUPTED = "interrupted"  # payload, answers: ctx.interrupt paused the node until resume(value=)
    TOKEN = "token"  # delta: streamed generation text (only when a subscriber wants_tokens)
    RUN_FINISHED = "run_finished"  # stopped_by, duration, output, result
    RUN_FAILED = "run_failed"  # error, node_id[, result]
    CUSTOM = "custom"  # kind-specific, e.g. {"kind": "token_allocation", ...}, {"kind": "max_iterations"}

    def __str__(self) -> str:
        return self.value


EVENT_KINDS = tuple(k.value for k in EventKind)


@dataclass(slots=True)
class Event:
    kind: str  # an EventKind (a str)
    run_id: str
    node_id: str | None = None
    iteration: int = 1
    time: float = 0.0  # time.time() when it happened
    data: dict[str, Any] = field(default_factory=dict)


Subscriber = Callable[[Event], Any]


class Observer:
    """Base class for typed observers: override the hooks you need; the others are never called.

    Calling the instance with an event dispatches to its hook too, so an observer also works where a
    plain callable is expected.
    """

    def on_run_started(self, ev: Event) -> None: ...
    def on_node_started(self, ev: Event) -> None: ...
    def on_node_finished(self, ev: Event) -> None: ...
    def on_node_skipped(self, ev: Event) -> None: ...
    def on_node_cached(self, ev: Event) -> None: ...
    def on_node_retrying(self, ev: Event) -> None: ...
    def on_node_failed(self, ev: Event) -> None: ...
    def on_interrupted(self, ev: Event) -> None: ...
    def on_token(self, ev: Event) -> None: ...
    def on_run_finished(self, ev: Event) -> None: ...
    def on_run_failed(self, ev: Event) -> None: ...
    def on_custom(self, ev: Event) -> None: ...

    def hooks(self) -> dict[str, Callable[[Event], Any]]:
        """The hooks this class overrides, by event kind."""
        out = {}
        for kind in EventKind:
            name = f"on_{kind.value}"
            if getattr(type(self), name) is not getattr(Observer, name):
                out[kind.value] = getattr(self, name)
        return out

    def __call__(self, ev: Event) -> None:
        hook = getattr(self, f"on_{ev.kind}", None)
        if hook is not None:
            hook(ev)


class EventBus:
    """Subscribers by event kind; a subscriber that raises is logged and never breaks a run."""

    __slots__ = ("_subscribers", "_by_kind", "_plain")

    def __init__(self) -> None:
        self._subscribers: list[Subscriber | Observer] = []
        self._by_kind: dict[str, list[Callable[[Event], Any]]] = {}
        self._plain: list[Callable[[Event], Any]] = []  # callables: they also get kinds outside EventKind

    def __bool__(self) -> bool:
        return bool(self._subscribers)

    def _rebuild(self) -> None:
        by_kind: dict[str, list[Callable[[Event], Any]]] = {k.value: [] for k in EventKind}
        for sub in self._subscribers:
            if isinstance(sub, Observer):
                for kind, hook in sub.hooks().items():
                    by_kind[kind].append(hook)
            else:
                for handlers in by_kind.values():
                    handlers.append(sub)
        self._by_kind = by_kind
        self._plain = [s for s in self._subscribers if not isinstance(s, Observer)]

    def subscribe(self, fn: Subscriber | Observer) -> Callable[[], None]:
        """Add a callable (every event) or an :class:`Observer` (its hooks); returns an unsubscribe."""
        self._subscribers.append(fn)
        self._rebuild()

        def unsubscribe() -> None:
            if fn in self._subscribers:
                self._subscribers.remove(fn)
                self._rebuild()

        return unsubscribe

    def emit(self, event: Event) -> None:
        handlers = self._by_kind.get(event.kind)
        for fn in self._plain if handlers is None else handlers:
            try:
                fn(event)
            except Exception as exc:  # an observer must never break the run it observes
                log.warning("event subscriber %r failed on %s: %s", fn, event.kind, exc)
