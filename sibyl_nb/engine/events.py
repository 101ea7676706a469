"""Typed events the scheduler publishes; logging, metrics, checkpoints, caches and widgets subscribe.

Events are only built when somebody listens, so an unobserved run pays nothing for them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Event", "EventBus", "EVENT_KINDS"]

EVENT_KINDS = (
    "run_started",  # data: pipeline, input, nodes (ids), edges
    "node_started",  # data: technique, attempt
    "node_finished",  # data: technique, output, duration, attempts
    "node_skipped",  # data: reason
    "node_cached",  # data: technique, output, key
    "node_retrying",  # data: technique, attempt, delay, error
    "node_failed",  # data: technique, attempts, error, recovered (bool: a fallback takes over)
    "token",  # data: delta (a generation's text as its provider streams it; only when a subscriber wants_tokens)
    "run_finished",  # data: stopped_by, duration, output
    "run_failed",  # data: error, node_id
    "custom",  # data: kind-specific, e.g. {"kind": "token_allocation", ...}
)


@dataclass(slots=True)
class Event:
    kind: str
    run_id: str
    node_id: str | None = None
    iteration: int = 1
    time: float = 0.0  # time.time() when it happened
    data: dict[str, Any] = field(default_factory=dict)


Subscriber = Callable[[Event], Any]


class EventBus:
    """A list of subscribers; a subscriber that raises is reported once and never breaks a run."""

    __slots__ = ("_subscribers",)

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def __bool__(self) -> bool:
        return bool(self._subscribers)

    def subscribe(self, fn: Subscriber) -> Callable[[], None]:
        self._subscribers.append(fn)

        def unsubscribe() -> None:
            if fn in self._subscribers:
                self._subscribers.remove(fn)

        return unsubscribe

    def emit(self, event: Event) -> None:
        for fn in tuple(self._subscribers):
            try:
                fn(event)
            except Exception as exc:  # an observer must never break the run it observes
                import logging

                logging.getLogger("sibyl_nb.events").warning(
                    "event subscriber %r failed on %s: %s", fn, event.kind, exc
                )
