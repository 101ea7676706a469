"""What the engine reads and writes on a run, as Protocols (the run itself is ``pipeline.RunState``).

The engine sits below ``pipeline`` and must not import it, yet the scheduler, the scope table and ``ctx``
all touch the run: these Protocols name exactly those members so mypy checks every use, and any run
(``RunState``, a subgraph's inner run, a Dask worker's or a stand-alone test run) fits by its shape.
Members are read-only properties unless the engine assigns them, so a plain attribute, a property or a
delegating ``__getattr__`` all satisfy them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # pragma: no cover
    import random

    from ..techniques.context import StepContext
    from .events import Event
    from .result import StepRecord

__all__ = ["BusLike", "ContextRun", "RunLike"]


class BusLike(Protocol):
    """Where a run's events go: falsy when nobody listens (then the scheduler skips building events)."""

    def __bool__(self) -> bool: ...

    def emit(self, event: Event, /) -> None: ...


class ContextRun(Protocol):
    """The slice of a run a :class:`StepContext` and ``${...}`` templates read. Optional members
    (``extras``, ``records``, ``aliases``, ``bus``) are read with ``getattr``: a stand-alone run lacks them."""

    @property
    def input(self) -> Any: ...

    @property
    def results(self) -> dict[str, Any]: ...

    @property
    def state(self) -> dict[str, Any]: ...

    @property
    def session(self) -> dict[str, Any]: ...

    @property
    def run_id(self) -> str: ...

    @property
    def workflow_id(self) -> str: ...

    @property
    def deferred(self) -> list[Callable[[Any], Any]]: ...

    def render(self, text: Any, ctx: StepContext, /) -> Any: ...

    def emit_custom(self, kind: str, node_id: str, iteration: int, data: dict[str, Any], /) -> None: ...


class RunLike(ContextRun, Protocol):
    """A run the scheduler drives: the context slice plus what scheduling records and reads."""

    retries: int
    last_completed: str | None

    @property
    def records(self) -> list[StepRecord]: ...

    @property
    def passthrough(self) -> dict[str, tuple[str, ...]]: ...

    @property
    def extras(self) -> dict[str, Any]: ...

    @property
    def allocations(self) -> list[dict[str, Any]]: ...

    @property
    def bus(self) -> BusLike: ...

    @property
    def rng(self) -> random.Random: ...

    @property
    def trusted(self) -> bool: ...

    @property
    def t0(self) -> float: ...
