"""The one output widget per run, and ``run_live`` which drives it while a pipeline runs.

Layout (top to bottom): header line, progress bar, graph (PNG in an ``ipywidgets.Image``), token
allocation bars, step table. Why this split of work:

* the engine runs on a helper thread; a :class:`RunView` observer records events in O(1);
* the calling (kernel main) thread waits for the run and repaints at most every ``interval``
  seconds, and only if something changed — so a fast run is never slowed by its own display, and a
  slow one (LLM calls) still shows nodes turning colour as they go;
* one final paint uses the run's records (authoritative), then the display is *updated*, so the
  saved notebook's ``text/html`` fallback shows the finished run, not the empty one.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import ipywidgets as w

from ..engine.sync import run_in_thread
from .graphview import GraphPainter
from .live import RunView, following
from .render import SHOW_ALL, graph_html, run_html, steps_html, tokens_html

__all__ = ["RunWidget", "LiveRun", "run_live"]


class RunWidget(w.VBox):
    """A VBox of header, progress, graph, tokens and steps; CSS classes ``sibyl-run-widget`` etc.

    Its mimebundle carries ``text/html`` beside the widget view, so front ends without a widget
    manager (GitHub, nbviewer, VS Code without the extension) still show graph, tokens and steps.
    """

    def __init__(self, title: str, *, total: int, show: Sequence[str] = SHOW_ALL, **kwargs: Any) -> None:
        self.title = title
        self.show = tuple(show)
        self.header = w.HTML(value=f"<b>{title}</b>")
        self.header.add_class("sibyl-header")
        self.progress = w.IntProgress(
            value=0, min=0, max=max(total, 1), bar_style="info", layout=w.Layout(width="320px")
        )
        self.progress.add_class("sibyl-progress")
        self.status = w.Label(value="pending")
        self.status.add_class("sibyl-status-line")
        self.graph = w.Image(format="png", layout=w.Layout(max_width="100%", height="auto"))
        self.graph.add_class("sibyl-graph")
        self.tokens = w.HTML(value=tokens_html(None))
        self.tokens.add_class("sibyl-tokens-view")
        self.steps = w.HTML(value=steps_html(None))
        self.steps.add_class("sibyl-steps-view")
        children: list[w.Widget] = [self.header, w.HBox([self.progress, self.status])]
        for part in self.show:
            children.append({"graph": self.graph, "tokens": self.tokens, "steps": self.steps}[part])
        super().__init__(children=children, **kwargs)
        self.add_class("sibyl-run-widget")
        self._png: bytes | None = None
        self._snapshot: dict[str, Any] = {"rows": [], "allocations": [], "summary": "pending"}
        self._tokens_key: Any = None
        self._steps_key: Any = None

    def paint(self, snapshot: dict[str, Any], png: bytes | None = None) -> None:
        """Push a :meth:`RunView.snapshot` (and a fresh graph PNG) to the front end, changed parts only."""
        self._snapshot = snapshot
        total = snapshot.get("total", 0)
        if total and self.progress.max != max(total, 1):
            self.progress.max = max(total, 1)
        self.progress.value = min(snapshot.get("done", 0), self.progress.max)
        state = snapshot.get("state", "running")
        self.progress.bar_style = {
            "failed": "danger",
            "completed": "success",
            "max_iterations": "warning",
        }.get(state, "info")
        self.status.value = snapshot.get("summary", state)
        if png is not None and png != self._png:
            if self._png is None:
                width = _png_width(png)
                if width:  # show at its own size (scaled down only on narrow screens), never blown up
                    self.graph.layout.width = f"{width}px"
            self._png = png
            self.graph.value = png
        if "tokens" in self.show:
            allocs = snapshot.get("allocations", [])
            if len(allocs) != self._tokens_key:
                self._tokens_key = len(allocs)
                self.tokens.value = tokens_html(allocs)
        if "steps" in self.show:
            rows = snapshot.get("rows", [])
            key = (snapshot.get("version"), len(rows))
            if key != self._steps_key:
                self._steps_key = key
                self.steps.value = steps_html(rows)

    def static_html(self) -> str:
        """The current state as self-contained HTML (what a saved notebook shows without widgets)."""
        snap = self._snapshot
        return run_html(
            title=self.title,
            summary=snap.get("summary", ""),
            png=self._png,
            allocations=snap.get("allocations"),
            rows=snap.get("rows"),
            show=self.show,
        )

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        data = super()._repr_mimebundle_(**kwargs) or {}
        data["text/html"] = self.static_html()
        data["text/plain"] = f"{self.title}: {self._snapshot.get('summary', '')}"
        return data

    def graph_html(self) -> str:
        return graph_html(self._png, self.title)


def _one_line(exc: BaseException) -> str:
    one_line = getattr(exc, "one_line", None)
    return one_line() if callable(one_line) else f"{type(exc).__name__}: {exc}"


def _png_width(png: bytes) -> int | None:
    """Pixel width from a PNG's IHDR chunk (bytes 16-20), without decoding the image."""
    if len(png) >= 24 and png[:8] == b"\x89PNG\r\n\x1a\n":
        return int.from_bytes(png[16:20], "big")
    return None


class LiveRun:
    """Runs ``pipeline`` once with a :class:`RunWidget` attached; see :func:`run_live`."""

    def __init__(
        self,
        pipeline: Any,
        *,
        show: Sequence[str] = SHOW_ALL,
        live: bool = True,
        interval: float = 0.15,
        display: bool = True,
        title: str | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.show = tuple(show)
        self.live = live
        self.interval = max(float(interval), 0.02)
        self.display = display
        self.title = title or f"sibyl · {pipeline.name}"
        self.view = RunView(pipeline.graph, pipeline.name)
        self.painter = (
            GraphPainter(pipeline.graph) if "graph" in self.show and len(pipeline.graph.nodes) else None
        )
        self.widget = RunWidget(self.title, total=self.view.total, show=self.show)
        self.handle: Any = None
        self.paints = 0
        self._painted_version = -1
        self._last_paint = 0.0

    def _paint(self, *, force: bool = False) -> None:
        if not force:
            if self.view.version == self._painted_version:
                return
            if time.perf_counter() - self._last_paint < self.interval:
                return
        snap = self.view.snapshot()
        png = self.painter.png(snap["statuses"]) if self.painter is not None else None
        self.widget.paint(snap, png)
        self._painted_version = snap["version"]
        self._last_paint = time.perf_counter()
        self.paints += 1

    def start(self) -> None:
        """Paint the pending graph and display the widget (before the run starts)."""
        self._paint(force=True)
        if self.display:
            from IPython.display import display

            self.handle = display(self.widget, display_id=True)
        self._last_paint = time.perf_counter()  # first live repaint one interval after the start

    def finish(self, result: Any, error: BaseException | None = None) -> None:
        """Final paint from the run's records; refresh the display so its HTML fallback is final."""
        if result is not None:
            self.view.load_result(result)
        else:
            self.view.poll()
            if error is not None:
                self.view.state = "failed"
                self.view.error = _one_line(error)
        self._paint(force=True)
        if self.handle is not None:
            self.handle.update(self.widget)

    def run(self, inputs: Any = None, **execute_kwargs: Any) -> Any:
        """Display, execute and return the :class:`RunResult`; a failure re-raises after the final paint."""
        self.start()
        return self.follow(inputs, **execute_kwargs)

    def follow(self, inputs: Any = None, **execute_kwargs: Any) -> Any:
        """Execute with the (already started) widget following; repaint live, then paint the final state.

        The widget adds no observer to the run (see :mod:`.live`): it polls the run's state from
        this thread, at most every ``interval`` seconds.
        """
        pipeline = self.pipeline

        def start_run() -> Any:
            return pipeline.execute(inputs, **execute_kwargs)

        try:
            result = run_in_thread(
                following(self.view, start_run),
                tick=self._tick if self.live else None,
                interval=min(self.interval, 0.05),
            )
        except BaseException as exc:
            self.finish(getattr(exc, "result", None), exc)
            raise
        self.finish(result)
        return result

    def _tick(self) -> None:
        if time.perf_counter() - self._last_paint < self.interval:
            return
        self.view.poll()
        self._paint()


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
    """Run ``pipeline`` with the live widget displayed in the current cell; returns the RunResult."""
    return LiveRun(pipeline, show=show, live=live, interval=interval, display=display).run(
        inputs, **execute_kwargs
    )
