"""What a run returns: the final output, one record per step execution, and why it stopped."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["StepRecord", "RunResult", "text_of"]


@dataclass(slots=True)
class StepRecord:
    """One execution (or skip) of one node. Times are seconds since the run started."""

    node_id: str
    technique: str
    iteration: int
    status: str  # ran | skipped | failed | cached | cancelled
    started: float = 0.0
    ended: float = 0.0
    attempts: int = 0
    output: Any = None
    error: str | None = None
    reason: str | None = None  # why skipped; "fallback for X"
    fallback_for: str | None = None
    group: str = ""

    @property
    def duration(self) -> float:
        return max(self.ended - self.started, 0.0)

    @property
    def usage(self) -> dict[str, Any] | None:
        """Token usage a model call reported (``prompt_tokens``, ``completion_tokens``, ...), if any."""
        out = self.output
        usage = out.get("usage") if isinstance(out, dict) else None
        return usage if isinstance(usage, dict) else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "technique": self.technique,
            "iteration": self.iteration,
            "status": self.status,
            "started": self.started,
            "ended": self.ended,
            "duration": self.duration,
            "attempts": self.attempts,
            "output": self.output,
            "error": self.error,
            "reason": self.reason,
            "fallback_for": self.fallback_for,
            "group": self.group,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StepRecord:
        d = {k: v for k, v in d.items() if k != "duration"}
        return cls(**d)


def text_of(value: Any) -> str:
    """The human answer inside an output: ``answer``, else ``text``, else the value as text."""
    from ..document.templates import to_text

    return to_text(value)


@dataclass
class RunResult:
    """What one run returned.

    ``output`` has one shape per graph, whatever ran or was skipped: a graph with one exit (a node
    with no forward out-edge, or a loop it ends in) gives that exit's output (``None`` if it was
    skipped); a graph with several exits gives ``{exit_id: output}`` with every exit, in declaration
    order (``None`` for those that did not run). A graph that ends in a loop gives the *loop value*:
    the latest answer fed to the loop's header, whether the loop ended by its condition or by
    ``max_iterations``. ``outputs`` holds every node's latest output by id; ``warnings`` what the run
    noticed (a conditional node where no edge fired, a thread a timeout could not stop).
    """

    run_id: str
    pipeline: str
    output: Any
    outputs: dict[str, Any]
    records: list[StepRecord]
    stopped_by: str = "completed"  # completed | max_iterations | failed
    started_at: float = 0.0  # wall clock (time.time())
    duration: float = 0.0
    input: Any = None
    session: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    graph: Any = None  # the GraphIR that ran (for drawing)
    allocations: list[dict[str, Any]] = field(default_factory=list)  # token allocations, per context step
    workflow_id: str | None = None  # the checkpoint chain this run writes to (resume/fork/history use it)
    exits: list[str] = field(default_factory=list)  # the graph's exits (keys of a multi-exit output)
    warnings: list[str] = field(default_factory=list)
    interrupts: list[Any] = field(default_factory=list)  # InterruptInfo of each node waiting for input

    @property
    def interrupt(self) -> Any:
        """What a run stopped by ``ctx.interrupt`` waits for (node id, payload), else None."""
        return self.interrupts[0] if self.interrupts else None

    @property
    def text(self) -> str:
        """The final answer as text (what a session stores as the assistant reply); with several
        exits, the texts of those that produced an output, one per line."""
        out = self.output
        if len(self.exits) > 1 and isinstance(out, dict) and set(out) == set(self.exits):
            return "\n".join(text_of(v) for v in out.values() if v is not None)
        return text_of(out)

    @property
    def answer(self) -> str:
        return self.text

    def record(self, node_id: str) -> StepRecord | None:
        """The latest record of ``node_id``."""
        for rec in reversed(self.records):
            if rec.node_id == node_id:
                return rec
        return None

    def status(self, node_id: str) -> str | None:
        rec = self.record(node_id)
        return rec.status if rec else None

    def ran(self) -> list[str]:
        """Node ids that ran, in the order they finished (repeats for loop iterations)."""
        return [r.node_id for r in self.records if r.status == "ran"]

    def trace(self) -> Any:
        """The records as a pandas DataFrame (pandas imported only now)."""
        import pandas as pd

        rows = []
        for r in self.records:
            d = r.to_dict()
            d["output"] = _preview(r.output)
            d["tokens"] = (r.usage or {}).get("total_tokens")
            rows.append(d)
        return pd.DataFrame(
            rows,
            columns=[
                "node_id",
                "technique",
                "iteration",
                "status",
                "started",
                "ended",
                "duration",
                "attempts",
                "tokens",
                "output",
                "error",
                "reason",
                "fallback_for",
                "group",
            ],
        )

    def format_trace(self) -> str:
        """A readable step trace for terminals and logs."""
        lines = [
            f"run {self.run_id} · {self.pipeline} · {self.duration * 1000:.1f} ms · stopped_by={self.stopped_by}"
        ]
        for r in self.records:
            mark = {
                "ran": "✓",
                "cached": "⚡",
                "edited": "✎",
                "interrupted": "⏸",
                "skipped": "·",
                "failed": "✗",
                "cancelled": "⊘",
            }.get(r.status, "?")
            extra = ""
            if r.status == "skipped" and r.reason:
                extra = f"  ({r.reason})"
            elif r.status == "failed" and r.error:
                extra = f"  {r.error}"
            elif r.fallback_for:
                extra = f"  (fallback for {r.fallback_for})"
            label = f"{r.node_id} #{r.iteration}" if r.iteration > 1 else r.node_id
            attempts = f" ×{r.attempts}" if r.attempts > 1 else ""
            lines.append(
                f"  {mark} {label:<22} {r.technique:<38} {r.started * 1000:8.1f} → "
                f"{r.ended * 1000:8.1f} ms{attempts}{extra}"
            )
            if r.status in ("ran", "cached", "edited"):
                lines.append(f"      {_preview(r.output, 110)}")
        lines.extend(f"  ! {w}" for w in self.warnings)
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"RunResult(pipeline={self.pipeline!r}, steps={len(self.records)}, "
            f"stopped_by={self.stopped_by!r}, output={_preview(self.output, 60)})"
        )


def _preview(value: Any, width: int = 80) -> str:
    text = text_of(value).replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"
