"""The live run view: the static run HTML, replaced in place while the run goes on.

Why no ipywidgets: a widget view needs a widget manager and its JavaScript; a notebook executed
headless and exported showed a blank run, and a reopened one said "model not found". This view is
one ``display(..., display_id=True)`` output that the kernel updates (``update_display_data``), so
every front end that shows HTML shows it live, and what is saved in the notebook is the finished
run's static HTML (:mod:`.render`) — nothing to load, no kernel, no network.

Why events: :class:`RunView` subscribes to the run's event bus (through a run extension, only for
the run it follows), so a node is shown running from the moment its code starts (``node_started``),
also on the scheduler's inline fast path where no task exists. The kernel's main thread waits for
the run (the engine runs on a helper thread) and repaints at most every ``interval`` seconds: when
something changed, and at least every ``clock`` seconds so the elapsed time keeps ticking.

Kernel › Interrupt: the run stops before the next node starts (a sync technique already running
finishes its call), the view paints what finished, and the partial :class:`RunResult`
(``stopped_by="interrupted"``) is kept — the magic stores it in ``-o``.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import Sequence
from typing import Any

from ..draw import layout, statuses_from_records
from ..errors import SibylError
from .render import SHOW_ALL, result_summary, rows_from_records, run_html, summary_line

__all__ = ["RunView", "LiveRun", "RunInterrupted", "run_live", "following", "install_extension"]

# The view that wants the next run; set by ``following`` around one ``execute`` call.
_FOLLOWER: contextvars.ContextVar[RunView | None] = contextvars.ContextVar(
    "sibyl_live_follower", default=None
)
_FINAL = frozenset(("ran", "skipped", "failed", "cached", "cancelled"))


class RunInterrupted(SibylError):
    """The run was interrupted (Kernel › Interrupt, Ctrl-C); ``.result`` holds what finished."""


class RunView:
    """Display state of one run, folded from its events: node statuses, step rows, token allocations.

    It is the run's observer (``RunView(graph)(event)``), called on the engine's thread; readers on
    another thread take :meth:`snapshot`, which copies under a lock.
    """

    wants_tokens = True  # generation nodes stream to the view (their text grows while they run)

    def __init__(self, graph: Any = None, pipeline: str = "") -> None:
        self.graph = graph
        self.pipeline = pipeline
        self.node_ids = frozenset(graph.nodes) if graph is not None else frozenset()
        self.total = len(self.node_ids)
        self.statuses: dict[str, str] = {}
        self.rows: dict[tuple[str, int], dict[str, Any]] = {}
        self.allocations: list[dict[str, Any]] = []
        self.finished: set[str] = set()
        self.state = "pending"  # pending | running | completed | max_iterations | failed | interrupted
        self.error: str | None = None
        self.version = 0
        self.t0: float | None = None  # wall clock of run_started
        self.started_perf: float | None = None
        self.duration: float | None = None
        self.run: Any = None  # the RunState, handed over by the run extension
        self.stop_requested = False
        self._lock = threading.Lock()
        self._claimed = False

    # ------------------------------------------------------------------ observer
    def __call__(self, ev: Any) -> None:
        kind = ev.kind
        if self.stop_requested and kind == "node_started":
            # Kernel › Interrupt: stop before this node's code runs. CancelledError is not an
            # Exception, so the event bus lets it through and the run unwinds as cancelled.
            raise asyncio.CancelledError("interrupted")
        nid = ev.node_id
        data = ev.data
        with self._lock:
            if kind == "node_started":
                row = self._row(nid, ev, data)
                row["status"] = "running"
                row["attempts"] = data.get("attempt", row["attempts"] or 1)
                if row["started"] is None:
                    row["started"] = self._since(ev)
                self.statuses[nid] = "running"
            elif kind in ("node_finished", "node_cached"):
                status = "ran" if kind == "node_finished" else "cached"
                row = self._row(nid, ev, data)
                row.update(
                    status=status,
                    output=data.get("output"),
                    duration=data.get("duration", 0.0),
                    attempts=data.get("attempts", row["attempts"]),
                )
                self._final(nid, status)
                if data.get("fallback_for"):
                    self._final(data["fallback_for"], "ran")
            elif kind == "node_skipped":
                row = self._row(nid, ev, data)
                row.update(status="skipped", error=data.get("reason"), duration=0.0, attempts=0)
                self._final(nid, "skipped")
            elif kind == "token":
                row = self._row(nid, ev, data)
                text = row.get("streamed", "") + str(data.get("delta", ""))
                row["streamed"] = text
                row["output"] = {"text": text}
            elif kind == "interrupted":
                row = self._row(nid, ev, data)
                row.update(status="interrupted", output=data.get("payload"), duration=0.0)
                self.statuses[nid] = "interrupted"
            elif kind == "node_retrying":
                row = self._row(nid, ev, data)
                row.update(status="running", error=data.get("error"), attempts=data.get("attempt", 1))
            elif kind == "node_failed":
                row = self._row(nid, ev, data)
                row.update(
                    status="failed",
                    error=data.get("error"),
                    attempts=data.get("attempts", 1),
                    duration=max(self._since(ev) - (row["started"] or 0.0), 0.0),
                )
                self._final(nid, "failed")
            elif kind == "custom":
                if data.get("kind") != "token_allocation":
                    return
                self.allocations.append(
                    {
                        "node_id": nid,
                        "iteration": ev.iteration,
                        **{k: v for k, v in data.items() if k != "kind"},
                    }
                )
            elif kind == "run_started":
                self.t0 = ev.time
                self.started_perf = time.perf_counter()
                self.state = "running"
            elif kind == "run_finished":
                self.state = data.get("stopped_by", "completed")
                self.duration = data.get("duration")
                self._cancel_running()
            elif kind == "run_failed":
                self.state = "interrupted" if self.stop_requested else "failed"
                self.error = None if self.stop_requested else data.get("error")
                self._cancel_running()
            else:
                return
            self.version += 1

    def _since(self, ev: Any) -> float:
        return ev.time - (self.t0 or ev.time)

    def _row(self, nid: str, ev: Any, data: dict[str, Any]) -> dict[str, Any]:
        key = (nid, ev.iteration)
        row = self.rows.get(key)
        if row is None:
            row = self.rows[key] = {
                "node_id": nid,
                "technique": data.get("technique", ""),
                "iteration": ev.iteration,
                "status": "pending",
                "started": self._since(ev),
                "duration": None,
                "attempts": 0,
                "output": None,
                "error": None,
                "fallback_for": data.get("fallback_for"),
            }
        return row

    def _final(self, nid: str, status: str) -> None:
        self.statuses[nid] = status
        if nid in self.node_ids:
            self.finished.add(nid)

    def _cancel_running(self) -> None:
        for nid, status in self.statuses.items():
            if status == "running":
                self.statuses[nid] = "cancelled"
        for row in self.rows.values():
            if row["status"] == "running":
                row["status"] = "cancelled"

    # ------------------------------------------------------------------ readers
    @property
    def done(self) -> int:
        """Graph nodes that reached a final status at least once (progress numerator)."""
        return len(self.finished)

    def running(self) -> list[str]:
        with self._lock:
            return sorted(n for n, s in self.statuses.items() if s == "running")

    def elapsed(self) -> float:
        if self.duration is not None:
            return self.duration
        return 0.0 if self.started_perf is None else time.perf_counter() - self.started_perf

    def summary(self) -> str:
        text = summary_line(self.state, self.done, self.total, len(self.rows), self.elapsed(), self.error)
        running = [n for n, s in self.statuses.items() if s == "running"]
        if running and self.state == "running":
            text += " · running: " + ", ".join(sorted(running)[:5]) + ("…" if len(running) > 5 else "")
        return text

    def snapshot(self) -> dict[str, Any]:
        """A consistent copy for a painter: statuses, rows (start order), allocations, counters."""
        with self._lock:
            return {
                "version": self.version,
                "statuses": dict(self.statuses),
                "rows": [dict(r) for r in self.rows.values()],
                "allocations": list(self.allocations),
                "done": len(self.finished),
                "total": self.total,
                "state": self.state,
                "summary": self.summary(),
            }

    def load_result(self, result: Any) -> None:
        """Replace the live state with a finished :class:`RunResult` (its records are authoritative)."""
        with self._lock:
            self.statuses = statuses_from_records(result.records)
            self.rows = {(r["node_id"], i): r for i, r in enumerate(rows_from_records(result.records))}
            self.allocations = list(result.allocations)
            self.finished = {n for n, s in self.statuses.items() if s in _FINAL and n in self.node_ids}
            self.state = result.stopped_by
            self.error = result.error
            self.duration = result.duration
            self.version += 1

    def partial_result(self) -> Any:
        """What finished before an interrupt, as a :class:`RunResult` with ``stopped_by="interrupted"``."""
        run = self.run
        if run is None or run.scheduler is None:
            return None
        result = run.pipeline._result(run, run.scheduler, None)
        result.records = list(run.records)
        result.stopped_by = "interrupted"
        return result


def _extension(pipeline: Any, run: Any) -> tuple[list[Any], list[Any]]:
    """``RUN_EXTENSIONS`` entry: the view following this run becomes its observer (outer run only)."""
    view = _FOLLOWER.get()
    if view is not None and not view._claimed:
        view._claimed = True
        view.run = run
        return [view], []
    return [], []


def install_extension() -> None:
    """Register the run extension once (idempotent)."""
    from ..pipeline import RUN_EXTENSIONS

    if _extension not in RUN_EXTENSIONS:
        RUN_EXTENSIONS.append(_extension)


async def following(view: RunView, coro_fn: Any) -> Any:
    """Await ``coro_fn()`` with ``view`` observing the run it starts (set in this task's context)."""
    install_extension()
    token = _FOLLOWER.set(view)
    try:
        return await coro_fn()
    finally:
        _FOLLOWER.reset(token)


class LiveRun:
    """Run ``pipeline`` once with its run view displayed and repainted in place; see :func:`run_live`."""

    def __init__(
        self,
        pipeline: Any,
        *,
        show: Sequence[str] = SHOW_ALL,
        live: bool = True,
        interval: float = 0.15,
        clock: float = 0.5,
        display: bool = True,
        title: str | None = None,
        preview_width: int = 120,
    ) -> None:
        self.pipeline = pipeline
        self.show = tuple(show)
        self.live = live
        self.interval = max(float(interval), 0.02)
        self.clock = max(float(clock), self.interval)
        self.display = display
        self.title = title or f"sibyl · {pipeline.name}"
        self.preview_width = preview_width
        self.view = RunView(pipeline.graph, pipeline.name)
        graph = pipeline.graph
        self.geometry = layout(graph) if "graph" in self.show and len(graph.nodes) else None
        self.handle: Any = None
        self.paints = 0
        self.html = ""
        self._painted_version = -1
        self._last_paint = 0.0

    # ------------------------------------------------------------------ painting
    def render(self) -> str:
        snap = self.view.snapshot()
        self._painted_version = snap["version"]
        return run_html(
            title=self.title,
            summary=snap["summary"],
            state=snap["state"],
            graph=self.pipeline.graph,
            statuses=snap["statuses"],
            geometry=self.geometry,
            allocations=snap["allocations"],
            rows=snap["rows"],
            show=self.show,
            preview_width=self.preview_width,
        )

    def _publish(self) -> None:
        self.html = self.render()
        self.paints += 1
        self._last_paint = time.perf_counter()
        if not self.display or not self.show:
            return
        from IPython.display import HTML, display

        if self.handle is None:
            self.handle = display(HTML(self.html), display_id=True)
        else:
            self.handle.update(HTML(self.html))

    def _tick(self) -> None:
        now = time.perf_counter()
        since = now - self._last_paint
        if since < self.interval:
            return
        if self.view.version != self._painted_version or since >= self.clock:
            self._publish()

    # ------------------------------------------------------------------ running
    def run(self, inputs: Any = None, **execute_kwargs: Any) -> Any:
        """Display, execute and return the :class:`RunResult`; a failure re-raises after the final paint."""
        from ..engine.sync import run_in_thread

        pipeline = self.pipeline
        if self.live:
            self._publish()  # the pending graph, before anything runs

        def start_run() -> Any:
            return pipeline.execute(inputs, **execute_kwargs)

        def interrupt() -> None:
            self.view.stop_requested = True

        try:
            result = run_in_thread(
                following(self.view, start_run),
                tick=self._tick if self.live else None,
                interval=min(self.interval, 0.05),
                on_interrupt=interrupt,
            )
        except KeyboardInterrupt:
            result = self.view.partial_result()
            if result is not None:
                self.view.load_result(result)
            else:
                self.view.state = "interrupted"
            self._publish()
            error = RunInterrupted(
                f"interrupted: {self.view.done}/{self.view.total} nodes finished"
                + ("; the partial result is kept" if result is not None else "")
            )
            error.result = result
            raise error from None
        except BaseException as exc:
            partial = getattr(exc, "result", None)
            if partial is not None:
                self.view.load_result(partial)
            else:
                self.view.state = "failed"
                one_line = getattr(exc, "one_line", None)
                self.view.error = one_line() if callable(one_line) else f"{type(exc).__name__}: {exc}"
            self._publish()
            raise
        self.view.load_result(result)
        self._publish()
        return result


def run_live(
    pipeline: Any,
    inputs: Any = None,
    *,
    show: Sequence[str] = SHOW_ALL,
    live: bool = True,
    interval: float = 0.15,
    display: bool = True,
    **execute_kwargs: Any,
) -> Any:
    """Run ``pipeline`` with the live run view displayed in the current cell; returns the RunResult."""
    return LiveRun(pipeline, show=show, live=live, interval=interval, display=display).run(
        inputs, **execute_kwargs
    )


def static_result_html(result: Any, show: Sequence[str] = SHOW_ALL, preview_width: int = 120) -> str:
    """The finished view of ``result`` (what :class:`LiveRun` leaves in the cell)."""
    from .render import result_html

    return result_html(result, show, preview_width=preview_width)


__all__ += ["static_result_html", "result_summary"]
