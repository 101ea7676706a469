"""``draw_graph``: offline matplotlib drawing with status colours, labelled conditional edges and
distinguishable back edges; and the import-weight promise (no matplotlib/pandas at engine import)."""

from __future__ import annotations

import subprocess
import sys

from matplotlib.colors import to_hex
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
from seed_examples import block

import sibyl_nb as sb
from sibyl_nb.draw import EDGE_COLORS, STATUS_COLORS, draw_graph, statuses_from_result


def boxes(fig):
    ax = fig.axes[0]
    labels = [t for t in ax.texts if t.get_fontweight() == "bold"]
    patches = [p for p in ax.patches if isinstance(p, FancyBboxPatch)]
    return {t.get_text(): p for t, p in zip(labels, patches, strict=False)}


def arrows(fig):
    return [p for p in fig.axes[0].patches if isinstance(p, FancyArrowPatch)]


def test_status_colours_and_result_input():
    pipe = sb.Pipeline.from_yaml(block("Iterative Refinement Workflow"))
    result = pipe.run({"query": "What is Python?"})
    statuses = statuses_from_result(result)
    assert statuses["generate"] == "done"
    fig = draw_graph(result)  # a RunResult: its graph, coloured by its records
    drawn = boxes(fig)
    assert set(drawn) >= {"generate", "critique", "refine"}
    for node, status in statuses.items():
        assert to_hex(drawn[node].get_facecolor()) == STATUS_COLORS[status]
    all_statuses = {"generate": "done", "critique": "running", "refine": "failed"}
    fig = draw_graph(pipe.graph, all_statuses)
    for node, status in all_statuses.items():
        assert to_hex(boxes(fig)[node].get_facecolor()) == STATUS_COLORS[status]
    fig = draw_graph(pipe.graph, {"generate": "cached", "critique": "skipped"})
    assert to_hex(boxes(fig)["generate"].get_facecolor()) == STATUS_COLORS["cached"]
    assert to_hex(boxes(fig)["refine"].get_facecolor()) == STATUS_COLORS["pending"]
    assert boxes(fig)["critique"].get_linestyle() == "--"


def test_back_edges_are_dashed_purple_and_conditions_are_labelled():
    pipe = sb.Pipeline.from_yaml(block("Iterative Refinement Workflow"))
    fig = draw_graph(pipe)
    edges = arrows(fig)
    back = [a for a in edges if to_hex(a.get_edgecolor()) == EDGE_COLORS["back"]]
    forward = [a for a in edges if to_hex(a.get_edgecolor()) != EDGE_COLORS["back"]]
    assert len(back) == 1 and len(forward) == 2
    assert back[0].get_linestyle() == "--" and forward[0].get_linestyle() == "-"
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "critique.score < 8" in texts and "↺ loop" in texts
    assert "iterative_refinement" in texts  # the pipeline's name as title
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "back edge (loop)" in legend and "conditional edge" in legend


def test_guards_fallbacks_and_drawing_into_given_axes():
    from matplotlib.figure import Figure

    pipe = sb.Pipeline.from_yaml(block("Error Handling Orchestration"))
    fig = Figure()
    ax = fig.add_subplot()
    assert draw_graph(pipe.graph, ax=ax) is fig
    texts = [t.get_text() for t in ax.texts]
    assert "fallback_search" in texts and "on error" in texts
    adaptive = draw_graph(sb.Pipeline.from_yaml(block("Adaptive Workflow")))
    assert any('if classify.complexity == "simple"' in t.get_text() for t in adaptive.axes[0].texts)


def test_conditional_fan_out_labels_do_not_overlap():
    fig = draw_graph(sb.Pipeline.from_yaml(block("Conditional Graphs")))
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    labels = [t for t in fig.axes[0].texts if t.get_text().startswith("classify.type")]
    assert len(labels) == 3
    extents = [t.get_window_extent(renderer) for t in labels]
    for i in range(3):
        for j in range(i + 1, 3):
            assert not extents[i].overlaps(extents[j])


def test_engine_and_state_imports_stay_light():
    code = (
        "import sys, sibyl_nb, sibyl_nb.pipeline, sibyl_nb.state.api, sibyl_nb.state.technique, "
        "sibyl_nb.observe, sibyl_nb.cli; "
        "heavy = [m for m in ('matplotlib', 'pandas', 'IPython', 'diskcache', 'sqlalchemy', 'redis') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
