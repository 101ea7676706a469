"""The one drawing module: layout geometry (no overlapping boxes or labels up to 60+ nodes), the
SVG the notebook shows, the matplotlib file the CLI writes, and the import-weight promise."""

from __future__ import annotations

import itertools
import re
import subprocess
import sys

import pytest
from matplotlib.colors import to_hex
from matplotlib.patches import FancyBboxPatch
from seed_examples import block, pipeline_blocks

import sibyl_nb as sb
from sibyl_nb.draw import (
    STATUS_COLORS,
    STATUSES,
    draw_graph,
    layout,
    save_graph,
    statuses_from_result,
    to_svg,
)
from sibyl_nb.pipeline import load_document


def overlaps(geo) -> list[tuple[str, str]]:
    out = []
    for (na, a), (nb, b) in itertools.combinations(geo.label_boxes(), 2):
        if a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]:
            out.append((na, nb))
    return out


def wide_graph(n_branches: int = 10, depth: int = 5) -> sb.Pipeline:
    """A fan-out of long-named chains joined at the end: 2 + n_branches * depth nodes."""
    nodes = ["      - {id: session_management_and_routing_entry, technique: ai_generation.generation}"]
    edges = []
    for b in range(n_branches):
        prev = "session_management_and_routing_entry"
        for d in range(depth):
            nid = f"context_management_branch_{b:02d}_stage_{d}"
            nodes.append(f"      - {{id: {nid}, technique: ai_generation.generation}}")
            cond = f", condition: '${{session_management_and_routing_entry.text}} == {b}'" if d == 0 else ""
            edges.append(f"      - {{from: {prev}, to: {nid}{cond}}}")
            prev = nid
        edges.append(f"      - {{from: {prev}, to: final_synthesis_of_everything}}")
    nodes.append("      - {id: final_synthesis_of_everything, technique: ai_generation.generation}")
    yaml = (
        "steps:\n  - use: workflow_orchestration.graph\n    config:\n      subtechnique: dag\n"
        "      graph_definition:\n        nodes:\n"
        + "\n".join("  " + n for n in nodes)
        + "\n        edges:\n"
        + "\n".join("  " + e for e in edges)
        + "\n"
    )
    return sb.Pipeline.from_yaml(yaml, name="wide")


def test_every_seed_pipeline_is_drawn_without_overlaps():
    checked = 0
    for _heading, yaml in pipeline_blocks():
        try:
            doc = load_document(yaml, trust_code=True)
        except sb.SibylError:
            continue
        for name in doc.pipelines:
            try:
                pipe = sb.Pipeline.from_document(doc, name, trusted=True)
            except sb.SibylError:
                continue
            geo = layout(pipe)
            assert overlaps(geo) == [], name
            assert set(geo.boxes) >= set(pipe.graph.nodes)
            checked += 1
    assert checked >= 15


def test_fifty_two_nodes_with_long_ids_neither_overlap_nor_truncate():
    pipe = wide_graph()
    assert len(pipe.graph.nodes) == 52
    geo = layout(pipe)
    assert overlaps(geo) == []
    # ids wrap at separators instead of being cut to a shared prefix: the full id is in the box
    for nid, box in geo.boxes.items():
        assert "".join(box.lines[: box.id_lines]) == nid
    # every box is wide enough for its own text (monospace advance of 0.62 em, as the SVG font)
    for box in geo.boxes.values():
        assert all(len(line) * 12 * 0.62 <= box.w for line in box.lines[: box.id_lines])
    # a branch hangs under its parent: every stage-0 node is in the row below the entry
    entry = geo.boxes["session_management_and_routing_entry"]
    assert all(geo.boxes[f"context_management_branch_{b:02d}_stage_0"].y > entry.bottom for b in range(10))
    svg = to_svg(pipe)
    assert svg.count('class="sibyl-node ') == 52 and svg.count('class="sibyl-edge-label"') == 10


def test_conditional_orchestration_is_drawn_as_branches_with_their_conditions():
    pipe = sb.Pipeline.from_yaml(block("Adaptive Workflow"))
    geo = layout(pipe)
    drawn = {(e.src, e.dst): e for e in geo.edges}
    # each branch hangs from classify with its condition; the chain links between branches are gone
    for first, word in (
        ("simple_search", "simple"),
        ("medium_search", "medium"),
        ("complex_expand", "complex"),
    ):
        edge = drawn[("classify", first)]
        assert edge.kind == "conditional" and f'"{word}"' in edge.label.replace("\n", " ")
    assert ("simple_search", "medium_search") not in drawn
    assert ("medium_search", "complex_expand") not in drawn
    assert drawn[("medium_search", "medium_rerank")].kind == "edge"  # inside one branch
    rows = {n: b.y for n, b in geo.boxes.items()}
    assert rows["simple_search"] == rows["medium_search"] == rows["complex_expand"]
    assert overlaps(geo) == []


def test_back_edges_and_fallbacks():
    loop = layout(sb.Pipeline.from_yaml(block("Iterative Refinement Workflow")))
    back = [e for e in loop.edges if e.kind == "back"]
    assert len(back) == 1 and back[0].label.startswith("↺")
    assert max(p[0] for p in back[0].points) > max(
        b.right for b in loop.boxes.values()
    )  # in a lane on the right
    handled = layout(sb.Pipeline.from_yaml(block("Error Handling Orchestration")))
    fallbacks = [e for e in handled.edges if e.kind == "fallback"]
    assert fallbacks and all(handled.boxes[e.dst].kind == "fallback" for e in fallbacks)
    assert overlaps(handled) == []


def test_svg_uses_theme_variables_and_the_one_status_vocabulary():
    pipe = sb.Pipeline.from_yaml(block("Iterative Refinement Workflow"))
    result = pipe.run({"query": "What is Python?"})
    statuses = statuses_from_result(result)
    assert set(statuses.values()) <= set(STATUSES) and statuses["generate"] == "ran"
    svg = to_svg(result)
    assert 'data-node="generate" data-status="ran"' in svg
    assert "var(--jp-ui-font-color1" in svg and "var(--jp-layout-color" in svg
    for word in STATUSES:  # the legend lists the whole vocabulary
        assert f">{word}</text>" in svg
    assert "<script" not in svg and "http" not in svg.replace("http://www.w3.org/2000/svg", "")


def test_matplotlib_painter_draws_the_same_boxes_in_status_colours(tmp_path):
    pipe = sb.Pipeline.from_yaml(block("Iterative Refinement Workflow"))
    statuses = {"generate": "ran", "critique": "running", "refine": "failed"}
    fig = draw_graph(pipe, statuses)
    geo = layout(pipe)
    boxes = [p for p in fig.axes[0].patches if isinstance(p, FancyBboxPatch) and p.get_zorder() == 3]
    assert len(boxes) == len(geo.boxes)
    faces = sorted(to_hex(b.get_facecolor()) for b in boxes)
    assert faces == sorted(STATUS_COLORS[s] for s in statuses.values())
    for ext in ("png", "svg", "pdf"):
        path = save_graph(pipe, str(tmp_path / f"g.{ext}"), statuses)
        assert (tmp_path / f"g.{ext}").stat().st_size > 1000, path
    assert "sibyl-graph-svg" in (tmp_path / "g.svg").read_text()


@pytest.mark.parametrize("n", [1, 60])
def test_chains_of_any_length(n):
    steps = "\n".join(f"  - {{name: step_{i}, use: ai_generation.generation}}" for i in range(n))
    geo = layout(sb.Pipeline.from_yaml("steps:\n" + steps + "\n", name="chain"))
    assert len(geo.boxes) == n and overlaps(geo) == []


def test_engine_and_state_imports_stay_light():
    code = (
        "import sys, sibyl_nb, sibyl_nb.pipeline, sibyl_nb.state.api, sibyl_nb.state.technique, "
        "sibyl_nb.observe, sibyl_nb.cli, sibyl_nb.draw, sibyl_nb.engine.result; "
        "heavy = [m for m in ('matplotlib', 'pandas', 'IPython', 'ipywidgets', 'diskcache', 'sqlalchemy', "
        "'redis', 'sibyl_nb.notebook') if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def _seed_pipelines() -> list[sb.Pipeline]:
    out = []
    for _heading, yaml in pipeline_blocks():
        try:
            doc = load_document(yaml, trust_code=True)
        except sb.SibylError:
            continue
        for name in doc.pipelines:
            try:
                out.append(sb.Pipeline.from_document(doc, name, trusted=True))
            except sb.SibylError:
                continue
    return out


def test_a_repaint_draws_byte_for_byte_what_a_first_paint_draws():
    """Repaints reuse the static SVG and each node's group per status (built on first use): whatever was
    painted before, a paint equals a first paint of a freshly laid-out graph. (When the painter was
    introduced it was checked byte for byte against the full painter it replaced, on these graphs.)"""
    from sibyl_nb.draw import _lay_out

    pipes = [wide_graph(), *_seed_pipelines()]
    kinds = {e.kind for p in pipes for e in layout(p).edges}
    assert len(pipes) >= 16 and kinds == {"edge", "conditional", "back", "fallback"}
    words = [*STATUSES, "done", "recovered", "unheard_of"]
    compared = 0
    for pipe in pipes:
        geo = layout(pipe)
        ids = list(geo.boxes)
        mixes = [
            {},
            dict.fromkeys(ids, "ran"),
            {n: words[i % len(words)] for i, n in enumerate(ids)},
            {n: words[(i * 7 + 3) % len(words)] for i, n in enumerate(ids[::2])},
            {},  # back to pending after every status was painted once
        ]
        for statuses in mixes:
            for title in (None, "sibyl · <run> & co"):
                for themed in (True, False):
                    first = to_svg(
                        pipe, statuses, title=title, geometry=_lay_out(pipe.graph, True), themed=themed
                    )
                    assert to_svg(pipe, statuses, title=title, geometry=geo, themed=themed) == first, (
                        pipe.name
                    )
                    compared += 1
    assert compared == len(pipes) * 20
    svg = to_svg(
        pipes[0], {"session_management_and_routing_entry": "ran", "final_synthesis_of_everything": "done"}
    )
    assert svg.count('data-status="ran"') == 2 and svg.count('data-status="pending"') == 50


def _as_an_image_sees_it(svg: str) -> str:
    """What an <img> of ``svg`` draws from: CSS variables resolve to their fallbacks (no page reaches
    into an image), and classes, data attributes, ARIA and tooltips do nothing there."""
    svg = re.sub(r"var\(--[\w-]+, ([^()]*)\)", r"\1", svg)
    svg = re.sub(r' (?:class|data-[\w-]+|role|aria-label)="[^"]*"', "", svg)
    return re.sub(r"<title>[^<]*</title>", "", svg)


def test_the_image_copy_is_the_same_picture_without_theme_or_hooks():
    pipes = [wide_graph(), *_seed_pipelines()]
    words = [*STATUSES, "done"]
    for pipe in pipes:
        ids = list(layout(pipe).boxes)
        for statuses in ({}, {n: words[i % len(words)] for i, n in enumerate(ids)}):
            themed = to_svg(pipe, statuses, title="run & <co>")
            plain = to_svg(pipe, statuses, title="run & <co>", themed=False)
            assert plain == _as_an_image_sees_it(themed), pipe.name
            assert "var(" not in plain and "class=" not in plain and "data-" not in plain
            assert plain.startswith('<svg xmlns="http://www.w3.org/2000/svg" width=')
    svg = to_svg(wide_graph(), {})
    assert len(to_svg(wide_graph(), {}, themed=False)) < 0.6 * len(svg)
