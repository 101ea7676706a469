"""Human in the loop: ``ctx.interrupt(payload)`` pauses a run at a node; ``resume(value=)`` answers it.

The first time a node calls ``ctx.interrupt(payload)`` it raises :class:`Interrupt`. The scheduler
settles that as an *interrupted* outcome (no retry, no fallback): a step record with status
``interrupted``, the node kept in the frontier, everything that does not depend on it run to the end,
then the run returns ``stopped_by="interrupted"`` with ``result.interrupt`` (node id, payload). The
checkpoint (every store) holds the frontier and the record.

``resume(workflow_id, value=v)`` runs the node again with the answers so far: its k-th call to
``ctx.interrupt`` returns the k-th answer, so a node may ask several questions in turn (each one
pauses the run once). Completed steps do not run again. The answers live in the interrupted step's
record (``output["answers"]``), so they survive in any checkpoint store, across processes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from .run import RunLike
    from .scheduler import Scheduler

__all__ = ["Interrupt", "InterruptInfo", "INTERRUPTED", "answers_for", "interrupt_of", "paused_snapshot"]

INTERRUPTED = "interrupted"  # step status and ``stopped_by`` value


class Interrupt(Exception):
    """Raised by ``ctx.interrupt`` to pause the run; the scheduler turns it into an outcome.

    A technique that catches every ``Exception`` must re-raise this one (as with ``asyncio.CancelledError``).
    """

    def __init__(self, node_id: str, iteration: int, payload: Any, answers: list[Any]) -> None:
        self.node_id = node_id
        self.iteration = iteration
        self.payload = payload
        self.answers = list(answers)
        super().__init__(f"node '{node_id}' is waiting for input")


@dataclass(frozen=True)
class InterruptInfo:
    """What a paused run waits for: ``result.interrupt``."""

    node_id: str
    payload: Any
    iteration: int = 1
    workflow_id: str | None = None
    answers: list[Any] = field(default_factory=list)  # earlier answers of the same activation

    def as_dict(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "payload": self.payload,
            "iteration": self.iteration,
            "workflow_id": self.workflow_id,
            "answers": list(self.answers),
        }


def record_output(exc: Interrupt) -> dict[str, Any]:
    """What the interrupted step's record holds (JSON: it goes into the checkpoint)."""
    return {"payload": exc.payload, "answers": exc.answers}


def ask(ctx: Any, payload: Any) -> Any:
    """``ctx.interrupt``: the next answer of this activation, or raise :class:`Interrupt`."""
    run = ctx._run
    extras = getattr(run, "extras", None)
    if extras is None:
        raise ConfigError(
            "ctx.interrupt needs a pipeline run (a stand-alone technique call has nobody to ask)"
        )
    answers = extras.get("answers", {}).get((ctx.node_id, ctx.iteration), [])
    attempt, index = ctx._asked or (ctx.attempt, 0)
    if attempt != ctx.attempt:  # a retry asks its questions from the first again
        index = 0
    ctx._asked = (ctx.attempt, index + 1)
    if index < len(answers):
        return answers[index]
    raise Interrupt(ctx.node_id, ctx.iteration, payload, answers[:index])


def interrupt_of(records: list[Any]) -> list[InterruptInfo]:
    """The interrupts a run stopped on: the latest record of each node, when it is interrupted."""
    latest: dict[str, Any] = {}
    for rec in records:
        latest[_get(rec, "node_id")] = rec
    out = []
    for nid, rec in latest.items():
        if _get(rec, "status") == INTERRUPTED:
            data = _get(rec, "output") or {}
            out.append(
                InterruptInfo(
                    nid, data.get("payload"), int(_get(rec, "iteration") or 1), None, data.get("answers", [])
                )
            )
    return out


def answers_for(records: list[Any], node_id: str | None, value: Any) -> dict[tuple[str, int], list[Any]]:
    """The answers a resume gives: each waiting node's earlier answers, plus ``value`` for ``node_id``
    (or for the only waiting node). Raises when the workflow waits for nothing or the node is ambiguous."""
    waiting = interrupt_of(records)
    if not waiting:
        raise ConfigError(
            "resume(value=...): this workflow is not waiting for input (it was not interrupted)"
        )
    if node_id is None:
        if len(waiting) > 1:
            names = ", ".join(w.node_id for w in waiting)
            raise ConfigError(f"resume(value=...): several nodes wait for input ({names}): pass node=")
        node_id = waiting[0].node_id
    out: dict[tuple[str, int], list[Any]] = {}
    for w in waiting:
        answers = list(w.answers)
        if w.node_id == node_id:
            answers.append(value)
        out[(w.node_id, w.iteration)] = answers
    if not any(w.node_id == node_id for w in waiting):
        names = ", ".join(w.node_id for w in waiting)
        raise ConfigError(f"resume(value=...): node '{node_id}' is not waiting for input (waiting: {names})")
    return out


def paused_snapshot(run: RunLike, scheduler: Scheduler) -> dict[str, Any]:
    """A paused run's state as a ``restore`` dict (what a checkpoint folds to), kept in the process
    so ``resume(value=)`` also works when the document has no checkpointing."""
    import copy

    return copy.deepcopy(
        {
            "results": dict(run.results),
            "records": [r.to_dict() for r in run.records],
            "passthrough": {k: list(v) for k, v in run.passthrough.items()},
            "state": run.state,
            "session": run.session,
            "retries": run.retries,
            "last_completed": run.last_completed,
            "allocations": list(run.allocations),
            "scheduler": scheduler.snapshot(),
            "input": run.input,
            "run_id": run.run_id,
        }
    )


def _get(rec: Any, name: str) -> Any:
    return rec.get(name) if isinstance(rec, dict) else getattr(rec, name, None)
