"""The live table a sweep shows in a notebook: the frame so far, repainted as runs finish.

IPython is imported only here, and only when a sweep runs in a kernel (or asks ``live=True``).
Repaints are throttled so a fast sweep spends its time running, not drawing, and a repaint builds
only the rows it shows: building the whole frame each time made a long sweep quadratic.
"""

from __future__ import annotations

import time
from typing import Any

__all__ = ["LiveTable"]

MAX_ROWS = 30  # rows shown while running (the newest); the final table is the whole frame
INTERVAL = 0.5  # seconds between repaints


class LiveTable:
    def __init__(self, run: Any, *, progress: bool = True) -> None:
        from IPython.display import HTML, display

        self._HTML = HTML
        self.run = run
        self.progress = progress
        self.total = len(run.cells)
        self._t0 = time.monotonic()
        self._initial = sum(1 for c in run.cells if c.key in run.store.cells)
        self._last = 0.0
        self.repaints = 0
        self.handle = display(HTML(self._html(None)), display_id=True)

    def _html(self, frame: Any) -> str:
        import html

        done = sum(1 for c in self.run.cells if c.key in self.run.store.cells)
        meter = f"{done}/{self.total} runs"
        if self.progress:
            from tqdm import tqdm

            meter = tqdm.format_meter(done, self.total, time.monotonic() - self._t0, unit="run",
                                      initial=self._initial, ascii=False)  # fmt: skip
        head = (
            f"<div class='sibyl-sweep' style='font-weight:bold;font-family:monospace'>"
            f"sweep {html.escape(self.run.name)}: {html.escape(meter)}</div>"
        )
        if frame is None or frame.empty:
            return head
        return head + frame.to_html(max_cols=20, na_rep="", float_format=lambda v: f"{v:.4g}")

    def _latest(self) -> Any:
        """The frame of the last ``MAX_ROWS`` finished cells, in the sweep's (input, setting) order."""
        from .frame import build_frame

        run = self.run
        cells = []
        for cell in reversed(run.cells):
            if cell.key in run.store.cells:
                cells.append(cell)
                if len(cells) == MAX_ROWS:
                    break
        cells.reverse()
        return build_frame(cells, run.store.cells, run.store.metrics, run.metrics, run.fields)

    def update(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < INTERVAL:
            return
        self._last = now
        self.repaints += 1
        if self.handle is not None:
            self.handle.update(self._HTML(self._html(self._latest())))

    def finish(self, frame: Any) -> None:
        """The last paint: every row (the cell's own output shows the returned frame as usual)."""
        if self.handle is not None:
            self.handle.update(self._HTML(self._html(frame)))
