"""Offline drawing of a pipeline graph (PNG/SVG/PDF) with matplotlib's Agg canvas: no network, no
Graphviz, no browser (LangGraph's ``draw_mermaid_png`` calls an online service and times out).

Layout: layers by longest forward path from the entries (flow top to bottom), ordered within a layer
by the mean position of their parents to cut crossings. Conditional edges carry their condition as a
label; back edges (loops) are dashed, curved and purple; ``on_error`` fallbacks hang off their node
with a dotted red edge. Node colours show run status (pending, running, done, skipped, failed,
cached), so the notebook widget reuses :func:`draw_graph` for its live graph.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = [
    "draw_graph",
    "save_graph",
    "statuses_from_result",
    "statuses_from_records",
    "STATUS_COLORS",
    "EDGE_COLORS",
]

# Status -> fill colour: one palette for the CLI drawing, the live widget and the static HTML.
STATUS_COLORS: dict[str, str] = {
    "pending": "#d9d9d9",
    "running": "#f5b700",
    "done": "#2ca02c",
    "cached": "#1f77b4",
    "skipped": "#f4f4f4",
    "failed": "#d62728",
    "cancelled": "#8c8c8c",
}
EDGE_COLORS = {"edge": "#546e7a", "conditional": "#1565c0", "back": "#8e24aa", "fallback": "#c62828"}
_RECORD_STATUS = {
    "ran": "done",
    "cached": "cached",
    "skipped": "skipped",
    "failed": "failed",
    "cancelled": "cancelled",
    "recovered": "done",
}
_MAX_LABEL = 38
_REF = re.compile(r"\$\{([^}]*)\}")


def statuses_from_records(records: Any) -> dict[str, str]:
    """Latest drawing status per node id from a run's :class:`StepRecord` list.

    A node whose ``on_error`` fallback succeeded shows as done: the fallback's output is its output.
    """
    out: dict[str, str] = {}
    for rec in records or ():
        status = _RECORD_STATUS.get(rec.status, rec.status)
        out[rec.node_id] = status
        if rec.fallback_for and status == "done":
            out[rec.fallback_for] = "done"
    return out


def statuses_from_result(result: Any) -> dict[str, str]:
    """Latest drawing status per node of a :class:`~sibyl_nb.engine.result.RunResult`."""
    return statuses_from_records(result.records)


def _short(text: str, width: int = _MAX_LABEL) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _pretty(condition: str) -> str:
    """``${classify.type} == "factual"`` reads as ``classify.type == "factual"`` in a small label."""
    return _REF.sub(lambda m: m.group(1), condition)


def _layers(graph: Any) -> tuple[list[list[str]], dict[str, int]]:
    """Longest-path layering over forward edges, then two barycenter passes."""
    nodes = list(graph.nodes)
    preds: dict[str, list[str]] = {n: [] for n in nodes}
    succs: dict[str, list[str]] = {n: [] for n in nodes}
    indeg = dict.fromkeys(nodes, 0)
    for e in graph.edges:
        if e.back or e.src not in preds or e.dst not in preds:
            continue
        preds[e.dst].append(e.src)
        succs[e.src].append(e.dst)
        indeg[e.dst] += 1
    layer = dict.fromkeys(nodes, 0)
    todo = [n for n in nodes if indeg[n] == 0]
    seen = 0
    while todo:
        n = todo.pop(0)
        seen += 1
        for m in succs[n]:
            layer[m] = max(layer[m], layer[n] + 1)
            indeg[m] -= 1
            if indeg[m] == 0:
                todo.append(m)
    rows: list[list[str]] = [[] for _ in range(max(layer.values(), default=0) + 1)]
    for n in nodes:  # declaration order first
        rows[layer[n]].append(n)
    for _ in range(2):
        pos = {n: i - (len(row) - 1) / 2 for row in rows for i, n in enumerate(row)}
        for row in rows[1:]:
            row.sort(key=lambda n: sum(pos[p] for p in preds[n]) / len(preds[n]) if preds[n] else pos[n])
            for i, n in enumerate(row):
                pos[n] = i - (len(row) - 1) / 2
    return rows, layer


def draw_graph(
    graph_ir: Any,
    statuses: Mapping[str, str] | None = None,
    ax: Any = None,
    *,
    title: str | None = None,
    show_techniques: bool = True,
) -> Any:
    """Draw ``graph_ir`` (a ``GraphIR``; a ``Pipeline`` or ``RunResult`` works too) and return the
    matplotlib ``Figure``. ``statuses``: node id -> pending | running | done | skipped | failed |
    cached (record statuses such as ``ran`` are accepted). Pass ``ax`` to draw into existing axes."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Patch

    graph = graph_ir
    if statuses is None and hasattr(graph, "records") and hasattr(graph, "graph"):
        statuses = statuses_from_result(graph)
    if hasattr(graph, "spec") and hasattr(graph, "graph"):
        title = title if title is not None else getattr(graph, "name", None)
        graph = graph.graph
    elif not hasattr(graph, "nodes") and hasattr(graph, "graph"):
        title = title if title is not None else getattr(graph, "pipeline", None)
        graph = graph.graph
    if not getattr(graph, "finalized", True):
        graph.finalize()
    statuses = {k: _RECORD_STATUS.get(v, v) for k, v in (statuses or {}).items()}

    rows, _ = _layers(graph)
    # fallbacks sit right after their node, in its layer
    fallback_of: dict[str, Any] = {}
    for row in rows:
        extra = []
        for nid in row:
            extra.append(nid)
            for fb in graph.nodes[nid].fallbacks:
                fallback_of[fb.id] = (nid, fb)
                extra.append(fb.id)
        row[:] = extra

    def label(nid: str) -> list[str]:
        if nid in fallback_of:
            fb = fallback_of[nid][1]
            return [_short(nid), _short(fb.technique)] if show_techniques else [_short(nid)]
        node = graph.nodes[nid]
        lines = [_short(nid)]
        if show_techniques and node.kind == "task":
            lines.append(_short(node.technique))
        elif node.kind != "task":
            lines.append(f"[{node.kind}]")
        if node.guard is not None:
            lines.append(_short("if " + _pretty(node.guard.text)))
        return lines

    labels = {nid: label(nid) for row in rows for nid in row}
    chars = max((len(s) for ls in labels.values() for s in ls), default=8)
    nlines = max((len(ls) for ls in labels.values()), default=1)
    box_w = min(max(1.5, chars * 0.072 + 0.3), 2.9)
    box_h = 0.22 + 0.17 * nlines
    xgap, ygap = box_w + 0.55, box_h + 0.75
    widest = max((len(r) for r in rows), default=1)
    pos = {}
    for li, row in enumerate(rows):
        for i, nid in enumerate(row):
            pos[nid] = ((i - (len(row) - 1) / 2) * xgap, -li * ygap)

    has_back = any(e.back for e in graph.edges)
    margin_x = 0.9 + (0.8 if has_back else 0.0)
    legend_w = 1.9
    x0, x1 = -(widest - 1) / 2 * xgap - box_w / 2 - margin_x, (widest - 1) / 2 * xgap + box_w / 2 + margin_x
    y0, y1 = -(len(rows) - 1) * ygap - box_h / 2 - 0.45, box_h / 2 + (0.65 if title else 0.35)
    if ax is None:
        width, height = (x1 - x0) + legend_w, (y1 - y0)
        fig = Figure(figsize=(max(width, 4.5), max(height, 2.5)), dpi=100)
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        FigureCanvasAgg(fig)
        ax = fig.add_axes((0, 0, 1, 1))
        ax.set_xlim(x0, x0 + max(width, 4.5))
        ax.set_ylim(y1 - max(height, 2.5), y1)
    else:
        fig = ax.figure
        ax.set_xlim(x0, x1 + legend_w)
        ax.set_ylim(y0, y1)
    ax.set_axis_off()

    boxes: dict[str, Any] = {}
    for nid, (x, y) in pos.items():
        fb = nid in fallback_of
        status = statuses.get(nid, "pending")
        face = STATUS_COLORS.get(status, STATUS_COLORS["pending"])
        node = None if fb else graph.nodes[nid]
        dashed = fb or status == "skipped" or (node is not None and node.kind != "task")
        edge = EDGE_COLORS["fallback"] if fb else ("#37474f" if status != "skipped" else "#9e9e9e")
        box = FancyBboxPatch(
            (x - box_w / 2, y - box_h / 2),
            box_w,
            box_h,
            boxstyle="round,pad=0.02,rounding_size=0.12",
            fc=face,
            ec=edge,
            lw=1.3 if status == "running" else 1.0,
            ls="--" if dashed else "-",
            zorder=3,
        )
        ax.add_patch(box)
        boxes[nid] = box
        lines = labels[nid]
        ax.text(
            x,
            y + (len(lines) - 1) * 0.085,
            lines[0],
            ha="center",
            va="center",
            fontsize=8.5,
            fontweight="bold",
            zorder=4,
            color="#212121" if status != "skipped" else "#757575",
        )
        if len(lines) > 1:
            ax.text(
                x,
                y - 0.085,
                "\n".join(lines[1:]),
                ha="center",
                va="center",
                fontsize=7,
                color="#455a64",
                zorder=4,
                linespacing=1.15,
            )

    kinds_used: set[str] = set()

    def arrow(src: str, dst: str, kind: str, rad: float, text: str | None, at: float = 0.5) -> None:
        (xa, ya), (xb, yb) = pos[src], pos[dst]
        color = EDGE_COLORS[kind]
        style = {"back": "--", "fallback": ":"}.get(kind, "-")
        if kind == "back" and src != dst:
            # leave from the right side of the source and come back into the right side of the target,
            # bulging outwards, so a loop never hides the forward edge it runs beside
            pa, pb = (xa + box_w / 2, ya), (xb + box_w / 2, yb)
            dx, dy = pb[0] - pa[0], pb[1] - pa[1]
            length = max((dx * dx + dy * dy) ** 0.5, 1e-6)
            bend = min(0.9, 0.75 / length + 0.25)
            r = bend if dy >= 0 else -bend  # control point offset r * (dy, -dx): to the right
            patch = FancyArrowPatch(
                pa,
                pb,
                connectionstyle=f"arc3,rad={r}",
                arrowstyle="-|>",
                mutation_scale=11,
                color=color,
                lw=1.1,
                ls=style,
                zorder=2,
                shrinkA=2,
                shrinkB=2,
            )
            mx = (pa[0] + pb[0]) / 2 + 0.5 * r * dy + 0.08
            my = (pa[1] + pb[1]) / 2 - 0.5 * r * dx
            ax.add_patch(patch)
            kinds_used.add(kind)
            if text:
                ax.text(
                    mx,
                    my,
                    _short(text, 30),
                    ha="left",
                    va="center",
                    fontsize=6.8,
                    color=color,
                    zorder=5,
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.9},
                )
            return
        if src == dst:  # self-loop: a small arc on the right side
            pa, pb = (xa + box_w / 2, ya + box_h / 4), (xa + box_w / 2, ya - box_h / 4)
            patch = FancyArrowPatch(
                pa,
                pb,
                connectionstyle="arc3,rad=-1.8",
                arrowstyle="-|>",
                mutation_scale=11,
                color=color,
                lw=1.1,
                ls=style,
                zorder=2,
            )
            mx, my = xa + box_w / 2 + 0.35, ya
        else:
            patch = FancyArrowPatch(
                (xa, ya),
                (xb, yb),
                patchA=boxes[src],
                patchB=boxes[dst],
                connectionstyle=f"arc3,rad={rad}",
                arrowstyle="-|>",
                mutation_scale=11,
                color=color,
                lw=1.1,
                ls=style,
                zorder=2,
                shrinkA=1,
                shrinkB=1,
            )
            # on the visible part of the quadratic curve arc3 draws (control point offset by
            # rad * (dy, -dx)); ``at`` staggers the labels of a fan-out so they never overlap
            edge_in = min(box_h / 2 / max(abs(yb - ya), 1e-6), 0.45)
            t = edge_in + at * (1 - 2 * edge_in)
            cx = (xa + xb) / 2 + rad * (yb - ya)
            cy = (ya + yb) / 2 - rad * (xb - xa)
            mx = (1 - t) ** 2 * xa + 2 * t * (1 - t) * cx + t * t * xb
            my = (1 - t) ** 2 * ya + 2 * t * (1 - t) * cy + t * t * yb
        ax.add_patch(patch)
        kinds_used.add(kind)
        if text:
            ax.text(
                mx,
                my,
                _short(text, 30),
                ha="center",
                va="center",
                fontsize=6.8,
                color=color,
                zorder=5,
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.9},
            )

    stagger: dict[int, float] = {}
    by_src: dict[str, list[Any]] = {}
    for e in graph.edges:
        if not e.back and (e.condition is not None or e.when) and e.src in pos and e.dst in pos:
            by_src.setdefault(e.src, []).append(e)
    for fan in by_src.values():
        if len(fan) > 1:
            fan.sort(key=lambda e: pos[e.dst][0])
            for i, e in enumerate(fan):
                stagger[id(e)] = 0.3 if i % 2 == 0 else 0.62
    for e in graph.edges:
        if e.src not in pos or e.dst not in pos:
            continue
        cond = (
            _pretty(e.condition.text) if e.condition is not None else (f"when {e.when}" if e.when else None)
        )
        if e.back:
            arrow(e.src, e.dst, "back", 0.0, ("↺ " + cond) if cond else "↺ loop")
        else:
            (xa, ya), (xb, yb) = pos[e.src], pos[e.dst]
            rad = 0.25 if abs(xa - xb) < 1e-6 and abs(ya - yb) > ygap * 1.5 else 0.0
            arrow(e.src, e.dst, "conditional" if cond else "edge", rad, cond, stagger.get(id(e), 0.5))
    for fid, (owner, _) in fallback_of.items():
        arrow(owner, fid, "fallback", 0.0, "on error")

    if title:
        ax.text((x0 + x1) / 2, y1 - 0.3, title, ha="center", va="center", fontsize=11, fontweight="bold")
    handles: list[Any] = []
    shown = [s for s in STATUS_COLORS if s in statuses.values()] if statuses else []
    if shown and "pending" not in shown and len(statuses) < len(pos):
        shown.insert(0, "pending")
    for s in shown:
        handles.append(Patch(fc=STATUS_COLORS[s], ec="#37474f", label=s))
    names = {
        "edge": "edge",
        "conditional": "conditional edge",
        "back": "back edge (loop)",
        "fallback": "on_error fallback",
    }
    for kind in ("conditional", "back", "fallback"):
        if kind in kinds_used:
            handles.append(
                Line2D(
                    [0],
                    [0],
                    color=EDGE_COLORS[kind],
                    lw=1.3,
                    ls={"back": "--", "fallback": ":"}.get(kind, "-"),
                    label=names[kind],
                )
            )
    if handles:
        ax.legend(handles=handles, loc="upper right", fontsize=7, frameon=False)
    return fig


def save_graph(
    graph_ir: Any,
    path: str,
    statuses: Mapping[str, str] | None = None,
    *,
    title: str | None = None,
    dpi: int = 150,
) -> str:
    """Draw and write ``path``; the format follows the extension (.png, .svg, .pdf)."""
    fig = draw_graph(graph_ir, statuses, title=title)
    fig.savefig(path, dpi=dpi, facecolor="white")
    return path
