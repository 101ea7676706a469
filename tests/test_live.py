"""The live run view: driven by the run's events, it shows a lone sync node as running while its code
runs, keeps its clock ticking between completions, stops on an interrupt and keeps what finished,
and leaves the finished run's static HTML behind (no widget, nothing to load)."""

from __future__ import annotations

import re
import time

import pytest

import sibyl_nb as sb
from sibyl_nb.notebook.live import LiveRun, RunInterrupted, RunView

CALLS: list[str] = []


@sb.technique("live_test.nap")
def _nap(ctx):
    CALLS.append(ctx.node_id)
    time.sleep(float(ctx.config.get("seconds", 0.3)))
    return {"text": f"{ctx.node_id} done"}


@sb.technique("live_test.other")
def _other(ctx):
    return {"text": "other"}


def chain(n: int = 5, seconds: float = 0.3) -> sb.Pipeline:
    steps = "\n".join(
        f"  - {{name: call_{i}, use: live_test.nap, config: {{seconds: {seconds}}}}}" for i in range(n)
    )
    return sb.Pipeline.from_yaml("steps:\n" + steps + "\n", name="naps")


class Recording(LiveRun):
    """A LiveRun that keeps every HTML frame it would publish (display=False: no IPython needed)."""

    def __init__(self, *args, stop_after: str | None = None, **kwargs):
        super().__init__(*args, display=False, **kwargs)
        self.frames: list[str] = []
        self.stop_after = stop_after

    def _publish(self, **kwargs) -> None:
        super()._publish(**kwargs)
        self.frames.append(self.html)

    def _tick(self) -> None:
        super()._tick()
        if self.stop_after and self.view.statuses.get(self.stop_after) == "ran":
            self.stop_after = None
            raise KeyboardInterrupt  # what Kernel › Interrupt delivers to the kernel's main thread


def status_of(frame: str, node: str) -> str:
    return re.search(rf'data-node="{node}" data-status="(\w+)"', frame).group(1)


def summary_of(frame: str) -> str:
    return re.search(r'class="sibyl-summary"[^>]*>([^<]*)<', frame).group(1)


def seconds_of(summary: str) -> float:
    m = re.search(r"· ([\d.]+) (ms|s)\b", summary)
    return float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)


def test_a_lone_sync_node_is_shown_running_and_the_clock_ticks():
    CALLS.clear()
    live = Recording(chain(5, 0.4), interval=0.05, clock=0.1)
    result = live.run({"query": "x"})
    assert result.stopped_by == "completed" and [f"call_{i}" for i in range(5)] == CALLS
    during_first = [f for f in live.frames if status_of(f, "call_0") == "running"]
    assert len(during_first) >= 2, "the first call (0.4 s, inline fast path) was never shown running"
    summaries = [summary_of(f) for f in during_first]
    assert all(s.startswith("running · 0/5 nodes") and "running: call_0" in s for s in summaries)
    clocks = [seconds_of(s) for s in summaries]
    assert clocks == sorted(clocks) and clocks[-1] - clocks[0] >= 0.15, clocks  # it ticks
    final = live.frames[-1]
    assert summary_of(final).startswith("completed · 5/5 nodes · 5 steps")
    assert final.count('class="sibyl-step-row"') == 5
    assert all(status_of(final, f"call_{i}") == "ran" for i in range(5))


def test_interrupt_stops_sync_techniques_and_keeps_what_finished():
    CALLS.clear()
    live = Recording(chain(5, 0.25), interval=0.03, clock=0.1, stop_after="call_1")
    with pytest.raises(RunInterrupted) as info:
        live.run({"query": "x"})
    result = info.value.result
    assert result is not None and result.stopped_by == "interrupted"
    ran = result.ran()
    assert ran[:2] == ["call_0", "call_1"] and len(ran) <= 3, ran
    assert len(CALLS) <= 3, CALLS  # the rest never started
    final = live.frames[-1]
    assert summary_of(final).startswith("interrupted ·")
    assert status_of(final, "call_4") == "pending"


def test_run_view_folds_events_into_the_one_vocabulary():
    pipe = chain(2, 0.0)
    view = RunView(pipe.graph, pipe.name)
    result = pipe.run({"query": "x"}, observers=[view])
    assert view.statuses == {"call_0": "ran", "call_1": "ran"} and view.done == 2
    assert view.state == "completed"
    assert [r["status"] for r in view.snapshot()["rows"]] == ["ran", "ran"]
    assert result.stopped_by == "completed"


def test_failed_run_paints_the_failure_and_reraises():
    @sb.technique("live_test.boom")
    def boom(ctx):
        raise ValueError("kaboom")

    pipe = sb.Pipeline.from_yaml(
        "steps:\n  - {name: ok, use: live_test.nap, config: {seconds: 0}}\n  - use: live_test.boom\n"
    )
    live = Recording(pipe)
    with pytest.raises(sb.NodeExecutionError):
        live.run({"query": "x"})
    final = live.frames[-1]
    assert summary_of(final).startswith("failed · 2/2 nodes") and status_of(final, "boom") == "failed"
    assert "kaboom" in final


def test_show_limits_the_parts_and_none_renders_nothing_live():
    live = Recording(chain(1, 0.0), show=("steps",))
    live.run({"query": "x"})
    assert "sibyl-steps" in live.frames[-1] and "sibyl-graph" not in live.frames[-1]
    assert "sibyl-tokens" not in live.frames[-1]


def _drawing(frame: str) -> str:
    """The inline SVG of a frame (the graph as drawn, without the summary's clock or the step table)."""
    return re.search(r'<svg class="sibyl-graph-svg".*?</svg>', frame, re.S).group(0)


def test_a_graph_is_laid_out_once_across_runs_paints_and_recompiles(monkeypatch):
    """Layout is the costly part of the view (tens of ms at 1000 nodes): done once per graph."""
    from collections import OrderedDict

    from sibyl_nb import draw

    real = draw._lay_out
    laid_out: list[list[str]] = []

    def counting(graph, show_techniques):
        laid_out.append(list(graph.nodes))
        return real(graph, show_techniques)

    monkeypatch.setattr(draw, "_lay_out", counting)
    monkeypatch.setattr(draw, "_LAYOUTS", OrderedDict())  # cold, whatever ran before
    pipe = chain(4, 0.0)
    runs = []
    for p in (pipe, pipe, chain(4, 0.0)):  # the same pipeline twice, then compiled again (a re-run cell)
        live = Recording(p, interval=0.02)
        assert live.run({"query": "x"}).stopped_by == "completed"
        runs.append(live)
    assert laid_out == [["call_0", "call_1", "call_2", "call_3"]]
    first, second, third = ([_drawing(f) for f in live.frames] for live in runs)
    assert first[0] == second[0] == third[0] and first[-1] == second[-1] == third[-1]
    assert first[0].count('data-status="pending"') == 4 and first[-1].count('data-status="ran"') == 4
    # byte for byte what a fresh layout of the graph draws
    fresh = real(pipe.graph, True)
    assert first[-1] == draw.to_svg(pipe, runs[0].view.statuses, title="sibyl · naps", geometry=fresh)

    # a graph of another structure (one more step; or a changed technique) is laid out on its own
    Recording(chain(5, 0.0)).render()
    changed = sb.Pipeline.from_yaml(
        "steps:\n"
        + "".join(f"  - {{name: call_{i}, use: live_test.nap}}\n" for i in range(3))
        + "  - {name: call_3, use: live_test.other}\n",
        name="naps",
    )
    draw.layout(changed)
    assert [len(ids) for ids in laid_out] == [4, 5, 4]
