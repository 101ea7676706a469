"""The run widget, its live repaints, the static HTML fallback and the graph painter."""

from __future__ import annotations

import asyncio
import time

import pytest

import sibyl_nb as sb
from sibyl_nb.engine.events import Event
from sibyl_nb.engine.sync import run_in_thread
from sibyl_nb.notebook.graphview import STATUS_COLORS, GraphPainter, layered_layout, statuses_from_records
from sibyl_nb.notebook.live import RunView
from sibyl_nb.notebook.render import parse_show, pipeline_mimebundle, result_html, tokens_html
from sibyl_nb.notebook.widget import LiveRun, RunWidget

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ALLOCATION = {
    "system": 200,
    "summary": 300,
    "compressed": 500,
    "recent": 3000,
    "current": 50,
    "reserved": 2000,
    "free": 1950,
}


@sb.technique("widget_test.slow")
async def _slow(ctx):
    await asyncio.sleep(ctx.config.get("delay", 0.03))
    return {"text": f"{ctx.node_id} done"}


@sb.technique("widget_test.context")
def _context(ctx):
    ctx.emit("token_allocation", allocation=dict(ALLOCATION), max_tokens=8000, strategy="hierarchical")
    return {"text": "context kept"}


@sb.technique("widget_test.fail")
def _fail(ctx):
    raise RuntimeError("widget boom")


def chain(n: int, technique: str = "widget_test.slow", delay: float = 0.03) -> sb.Pipeline:
    steps = "".join(f"      - use: {technique}\n        config: {{delay: {delay}}}\n" for _ in range(n))
    return sb.Pipeline.from_yaml(f"pipelines:\n  chain:\n    steps:\n{steps}")


CONDITIONAL = """
pipelines:
  branchy:
    steps:
      - use: workflow_orchestration.graph
        config:
          subtechnique: cyclic
          max_iterations: 3
          graph_definition:
            nodes:
              - {id: ctx, technique: widget_test.context}
              - {id: a, technique: widget_test.slow, config: {delay: 0.001}}
              - {id: b, technique: widget_test.slow, config: {delay: 0.001}}
            edges:
              - {from: ctx, to: a}
              - {from: a, to: b, condition: "${a.text} == 'never'"}
              - {from: b, to: a}
"""


def test_live_run_repaints_while_running_and_ends_final():
    pipe = chain(12)
    live = LiveRun(pipe, interval=0.05, display=False)
    result = live.run({"query": "x"})
    assert result.stopped_by == "completed"
    assert live.paints >= 4, live.paints  # pending + several live repaints + final
    w = live.widget
    assert w.progress.value == w.progress.max == 12
    assert w.progress.bar_style == "success"
    assert w.graph.value[:8] == PNG_MAGIC
    assert w.steps.value.count("sibyl-step-row") == 12
    assert "completed" in w.status.value


def test_widget_mimebundle_has_widget_view_and_html_fallback():
    live = LiveRun(sb.Pipeline.from_yaml(CONDITIONAL), display=False)
    live.run({"query": "x"})
    bundle = live.widget._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    html = bundle["text/html"]
    for cls in ("sibyl-run", "sibyl-graph", "sibyl-tokens", "sibyl-token-bar", "sibyl-steps"):
        assert cls in html, cls
    assert "data:image/png;base64," in html
    assert "hierarchical" in html and "skipped" in html
    assert bundle["text/plain"].startswith("sibyl · branchy")


def test_token_view_draws_one_stacked_bar_per_context_step():
    live = LiveRun(sb.Pipeline.from_yaml(CONDITIONAL), display=False)
    live.run({"query": "x"})
    html = live.widget.tokens.value
    assert html.count('class="sibyl-token-bar"') == 1
    for cat in ALLOCATION:
        assert f"sibyl-token-{cat}" in html
    assert "width:37.500%" in html  # recent: 3000 / 8000
    assert "6050/8000 tokens" in html


def test_show_limits_the_parts():
    live = LiveRun(chain(2, delay=0.0), show=parse_show("graph,steps"), display=False)
    live.run({"query": "x"})
    kids = live.widget.children
    assert live.widget.graph in kids and live.widget.steps in kids and live.widget.tokens not in kids
    assert "sibyl-tokens" not in live.widget.static_html()


def test_failed_run_paints_failure_and_reraises():
    pipe = sb.Pipeline.from_yaml(
        "steps:\n  - use: widget_test.slow\n    config: {delay: 0}\n  - use: widget_test.fail\n"
    )
    live = LiveRun(pipe, display=False)
    with pytest.raises(sb.NodeExecutionError):
        live.run({"query": "x"})
    assert live.widget.progress.bar_style == "danger"
    assert "sibyl-status-failed" in live.widget.steps.value
    assert "widget boom" in live.widget.steps.value


def test_run_view_folds_events():
    g = sb.Pipeline.from_yaml("steps:\n  - use: widget_test.slow\n  - use: widget_test.slow\n").graph
    a, b = list(g.nodes)
    view = RunView(g)
    t = time.time()
    for ev in (
        Event("run_started", "r", None, 1, t, {}),
        Event("node_started", "r", a, 1, t, {"technique": "x", "attempt": 1}),
        Event("node_retrying", "r", a, 1, t, {"attempt": 1, "error": "flaky"}),
        Event("node_started", "r", a, 1, t, {"technique": "x", "attempt": 2}),
        Event(
            "node_finished", "r", a, 1, t + 0.01, {"output": {"text": "ok"}, "duration": 0.01, "attempts": 2}
        ),
        Event("node_cached", "r", b, 1, t + 0.02, {"output": 1}),
        Event(
            "custom", "r", b, 1, t, {"kind": "token_allocation", "allocation": ALLOCATION, "max_tokens": 8000}
        ),
    ):
        view(ev)
    snap = view.snapshot()
    assert snap["statuses"] == {a: "done", b: "cached"}
    assert snap["done"] == 2 and snap["total"] == 2
    assert snap["rows"][0]["attempts"] == 2
    assert len(snap["allocations"]) == 1
    view(Event("run_failed", "r", None, 1, t, {"error": "E"}))
    assert view.state == "failed"


def test_graph_painter_recolours_cheaply():
    pipe = chain(200, delay=0.0)
    painter = GraphPainter(pipe.graph)
    first = painter.png({})
    assert first[:8] == PNG_MAGIC
    ids = list(pipe.graph.nodes)
    t = time.perf_counter()
    second = painter.png(dict.fromkeys(ids[:100], "done"))
    assert time.perf_counter() - t < 0.25  # a recolour, not a re-layout
    assert second != first
    w, h = painter.size
    assert 400 < w <= 1100 and 200 < h <= 900


def test_layout_wraps_long_chains_and_handles_cycles():
    pos = layered_layout(chain(60, delay=0.0).graph)
    xs = {x for x, _ in pos.values()}
    assert len(xs) <= 12
    cyclic = sb.Pipeline.from_yaml(CONDITIONAL).graph
    pos = layered_layout(cyclic)
    assert set(pos) == set(cyclic.nodes)
    assert pos["ctx"][0] < pos["a"][0] < pos["b"][0]  # the back edge b -> a does not reorder layers


def test_statuses_from_records_marks_recovered_nodes_done():
    from sibyl_nb.engine.result import StepRecord

    recs = [
        StepRecord("n", "t", 1, "failed", reason="fallback takes over"),
        StepRecord("n_fallback", "t", 1, "ran", fallback_for="n"),
        StepRecord("m", "t", 1, "skipped"),
    ]
    assert statuses_from_records(recs) == {"n": "done", "n_fallback": "done", "m": "skipped"}
    assert set(STATUS_COLORS) >= {"pending", "running", "done", "skipped", "failed", "cached"}


def test_pipeline_and_result_html():
    pipe = sb.Pipeline.from_yaml(CONDITIONAL)
    bundle = pipeline_mimebundle(pipe)
    assert bundle["text/plain"].startswith("<Pipeline 'branchy'")
    assert "sibyl-graph" in bundle["text/html"] and "3 nodes" in bundle["text/html"]
    assert "sibyl-graph" in pipe._repr_mimebundle_()["text/html"]
    result = pipe.run({"query": "x"})
    html = result_html(result)
    assert "sibyl-token-bar" in html and "sibyl-steps-table" in html and "<img" in html
    assert result._repr_html_().startswith('<div class="sibyl-run')


def test_tokens_html_empty_and_parse_show():
    assert "no context step" in tokens_html([])
    assert parse_show("all") == ("graph", "tokens", "steps")
    assert parse_show("none") == ()
    assert parse_show("steps, graph") == ("steps", "graph")
    with pytest.raises(ValueError):
        parse_show("graph,charts")


def test_run_in_thread_inside_a_running_loop():
    async def outer():
        async def inner():
            await asyncio.sleep(0.01)
            return 42

        return run_in_thread(inner())  # a sync call from inside a running loop, like a kernel cell

    assert asyncio.run(outer()) == 42

    async def bad():
        raise KeyError("nope")

    with pytest.raises(KeyError):
        run_in_thread(bad())


def test_run_widget_without_a_run():
    widget = RunWidget("empty", total=0)
    bundle = widget._repr_mimebundle_()
    assert "no step has run yet" in bundle["text/html"]


def test_import_sibyl_nb_does_not_load_the_notebook_layer():
    import subprocess
    import sys

    code = (
        "import sys, sibyl_nb; p = sibyl_nb.Pipeline; "
        "bad = [m for m in ('sibyl_nb.notebook', 'IPython', 'ipywidgets', 'matplotlib', 'pandas') "
        "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_live_run_adds_no_observer_to_the_engine():
    """The widget polls: the run's event bus stays empty, so the engine builds no events for it."""
    seen = []

    @sb.technique("widget_test.bus_probe")
    def probe(ctx):
        seen.append(bool(ctx._run.bus))
        return 1

    LiveRun(sb.Pipeline.from_yaml("steps:\n  - use: widget_test.bus_probe\n"), display=False).run(
        {"query": "x"}
    )
    assert seen == [False]
