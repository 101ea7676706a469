"""What does the notebook's live run view add to a run? The same run with and without it, side by side.

Run: ``python -m benchmarks --quick --only widget`` (or ``python benchmarks/widget.py [--quick]``).

The live view (:mod:`sibyl_nb.notebook.live`, what ``%%sibyl_pipeline`` shows) costs in two places:

* per step: its :class:`RunView` observer folds every event (``node_started``, ``node_finished``…)
  on the engine's thread, under a lock. Measured on a 1000-step chain of no-op steps — the engine's
  own per-step cost is all there is to hide it, so this is the worst case — as microseconds added
  per step, observer alone and with the whole live view (repaints every ``interval`` s from the
  kernel's thread while the run goes on, which contend for the GIL). The whole view twice: as a
  re-run (a graph is laid out once per structure and kept, :func:`sibyl_nb.draw.layout`: the same
  pipeline run again, or a cell re-run that compiles an equal graph) and as the first run of a graph
  the kernel has not drawn yet (its layout and painter built inside the timed call).
* per run: the first paint of the pending graph (layout + HTML) before the run and the final paint
  after it. Measured on a 5-step chain, the size of a typical notebook cell, as milliseconds added
  per run.

Every side runs on the helper-thread runner the magic uses (``engine.sync.run_in_thread``) and is
timed from the caller's thread around the whole call (wall clock), interleaved so drift affects both
alike. ``display=False``: everything is rendered exactly as in a notebook, only not sent to a front
end (there is none here). Goals, in absolute terms: the observer at most doubles a no-op step
(<= 20 us); the whole view adds at most 0.1 % to a 100 ms model call (<= 100 us per step); a
5-step cell's view costs well under the ~100 ms a user notices (<= 20 ms per run).
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any

__all__ = ["run", "build", "main"]

OBSERVER_GOAL_US = 20.0
VIEW_GOAL_US = 100.0
RUN_GOAL_MS = 20.0


def _register() -> None:
    import sibyl_nb as sb

    @sb.technique("bench_widget.noop", blocking=False)
    def noop(ctx: Any) -> dict[str, Any]:
        return {"text": "ok"}


def build(steps: int) -> Any:
    """A chain of ``steps`` no-op steps (each one's input is the previous one's output)."""
    import sibyl_nb as sb

    _register()
    chain = [{"name": f"s{i}", "use": "bench_widget.noop"} for i in range(steps)]
    return sb.Pipeline.from_dict({"pipelines": {f"chain_{steps}": {"steps": chain}}}, f"chain_{steps}")


def _plain(pipe: Any) -> float:
    """Seconds for one run with no observer, on the runner the magic uses."""
    from sibyl_nb.engine.sync import run_in_thread

    t0 = time.perf_counter()
    result = run_in_thread(pipe.execute({"query": "bench"}))
    took = time.perf_counter() - t0
    assert result.stopped_by == "completed", result.stopped_by
    return took


def _observer_only(pipe: Any) -> float:
    """Seconds for one run followed by a :class:`RunView` (events folded, nothing painted)."""
    from sibyl_nb.engine.sync import run_in_thread
    from sibyl_nb.notebook.live import RunView, following

    view = RunView(pipe.graph, pipe.name)
    t0 = time.perf_counter()
    result = run_in_thread(following(view, lambda: pipe.execute({"query": "bench"})))
    took = time.perf_counter() - t0
    assert result.stopped_by == "completed" and view.done == len(pipe.graph.nodes), (view.done, result)
    return took


def _live(pipe: Any, interval: float, *, new_graph: bool = False) -> tuple[float, int]:
    """(seconds, paints) for one run through :class:`LiveRun` as the magic makes it.

    ``new_graph``: as the first run of a graph this kernel has not drawn yet (its layout is computed
    and its painter built inside the timed call); otherwise the layout cache has it, as on every
    re-run of a cell.
    """
    from sibyl_nb import draw
    from sibyl_nb.notebook.live import LiveRun

    if new_graph:
        draw._LAYOUTS.clear()
    t0 = time.perf_counter()
    live = LiveRun(pipe, display=False, interval=interval)  # the graph's layout: part of the cost
    result = live.run({"query": "bench"})
    took = time.perf_counter() - t0
    assert result.stopped_by == "completed" and live.view.done == len(pipe.graph.nodes)
    return took, live.paints


def _paint_costs(pipe: Any) -> dict[str, float]:
    """The fixed part of the view's cost on ``pipe``'s graph: layout (computed, and found in the cache),
    a repaint and the final paint (with the graph's image copy) of a finished run, and its HTML's size."""
    from sibyl_nb import draw
    from sibyl_nb.notebook.live import LiveRun

    def best(fn: Any, n: int = 3) -> float:
        took = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            took.append(time.perf_counter() - t0)
        return min(took)

    live = LiveRun(pipe, display=False)
    live.run({"query": "bench"})  # every step row, every node ran
    return {
        "layout": best(lambda: draw._lay_out(pipe.graph, True)),
        "cached": best(lambda: draw.layout(pipe.graph)),
        "paint": best(live.render),
        "final": best(lambda: live.render(final=True)),
        "mb": len(live.render(final=True).encode()) / 1e6,
    }


def _median_runs(pipe: Any, repeats: int, interval: float) -> dict[str, Any]:
    _plain(pipe)  # warm up: imports, technique lookups, first-call costs
    _observer_only(pipe)
    _live(pipe, interval)
    plain: list[float] = []
    observed: list[float] = []
    live: list[float] = []
    first: list[float] = []
    paints: list[int] = []
    for _ in range(repeats):  # interleaved so drift affects every side alike
        plain.append(_plain(pipe))
        observed.append(_observer_only(pipe))
        took, n = _live(pipe, interval)
        live.append(took)
        paints.append(n)
        first.append(_live(pipe, interval, new_graph=True)[0])
    return {
        "plain": statistics.median(plain),
        "observed": statistics.median(observed),
        "live": statistics.median(live),
        "first": statistics.median(first),
        "paints": int(statistics.median(paints)),
    }


def run(quick: bool = False, interval: float = 0.15) -> list[dict[str, Any]]:
    """Rows: per-step overhead on a 1000-step chain (observer alone, whole live view) and per-run
    overhead on a 5-step chain; each with the plain run as its peer and the ratio to it."""
    long_chain, short_chain = build(1000), build(5)
    long = _median_runs(long_chain, 5 if quick else 11, interval)
    short = _median_runs(short_chain, 30 if quick else 100, interval)
    n = len(long_chain.graph.nodes)
    per_step = lambda t: t / n * 1e6  # noqa: E731
    plain_step = per_step(long["plain"])
    rows = []
    cost = _paint_costs(long_chain)
    for side, label, goal in (
        ("observed", "observer only (RunView folds events)", OBSERVER_GOAL_US),
        ("live", "whole live view", VIEW_GOAL_US),
        ("first", "whole live view, first run of the graph (layout included)", VIEW_GOAL_US),
    ):
        added = per_step(long[side]) - plain_step
        rows.append(
            {
                "benchmark": f"1000-step chain, {label}: us added per step",
                "unit": "us",
                "sibyl_nb": round(added, 2),
                "peer": "same run, no observer",
                "peer_value": round(plain_step, 2),
                "ratio": round(long[side] / long["plain"], 3),  # whole run with / without
                "goal": f"<= {goal:g} us",
                "notes": f"run: {long[side] * 1e3:.1f} ms vs {long['plain'] * 1e3:.1f} ms"
                + (
                    f"; {long['paints']} paints: a repaint {cost['paint'] * 1e3:.1f} ms, the final one"
                    f" {cost['final'] * 1e3:.1f} ms ({cost['mb']:.2f} MB of HTML); layout"
                    f" {cost['layout'] * 1e3:.0f} ms once per graph, then {cost['cached'] * 1e3:.2f} ms"
                    if side == "live"
                    else ""
                ),
            }
        )
    added_ms = (short["live"] - short["plain"]) * 1e3
    rows.append(
        {
            "benchmark": "5-step chain, whole live view: ms added per run",
            "unit": "ms",
            "sibyl_nb": round(added_ms, 3),
            "peer": "same run, no observer",
            "peer_value": round(short["plain"] * 1e3, 3),
            "ratio": round(short["live"] / short["plain"], 3),
            "goal": f"<= {RUN_GOAL_MS:g} ms",
            "notes": f"observer only adds {(short['observed'] - short['plain']) * 1e3:.3f} ms; "
            f"{short['paints']} paints (first + final)",
        }
    )
    return rows


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    rows = run(quick="--quick" in argv)
    for r in rows:
        print(
            f"{r['benchmark']}: {r['sibyl_nb']} {r['unit']} (goal {r['goal']}); "
            f"plain {r['peer_value']} {r['unit']}; ratio with/without {r['ratio']}x; {r['notes']}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
