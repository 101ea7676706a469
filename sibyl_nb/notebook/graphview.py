"""Draw a pipeline's graph with networkx + matplotlib, offline, and recolour it cheaply.

Why a painter object and not one ``draw`` call: the live widget redraws the graph many times while a
run goes on. Laying the graph out and rendering edges and labels costs ~0.1–0.3 s for 200 nodes;
recolouring must not. So the layout and the static layer (edges, labels, legend) are rendered once
into a background bitmap, and each update only blits the node markers on top of it (~5–10 ms), then
encodes a PNG with Pillow (a matplotlib dependency).

matplotlib is used through its object API (``Figure`` + Agg canvas), never ``pyplot``: no global
state, no inline-backend capture, safe to call from a helper thread.
"""

from __future__ import annotations

import io
import math
import threading
from collections.abc import Mapping
from typing import Any

from ..draw import STATUS_COLORS, statuses_from_records

__all__ = [
    "STATUS_COLORS",
    "STATUS_LABELS",
    "GraphPainter",
    "graph_png",
    "statuses_from_records",
    "layered_layout",
]

STATUS_LABELS = tuple(STATUS_COLORS)
_EDGE_FOR_STATUS = {"skipped": "#9a9a9a"}


def _forward_edges(graph: Any) -> list[tuple[str, str]]:
    return [(e.src, e.dst) for e in graph.edges if not getattr(e, "back", False)]


def layered_layout(graph: Any, max_cols: int = 12) -> dict[str, tuple[float, float]]:
    """Left-to-right layers by topological generation of the forward edges (back edges ignored).

    Long chains wrap into rows that alternate direction (boustrophedon), so a 200-step pipeline stays
    a readable block instead of a 200-column strip. Falls back to a spring layout if the forward
    graph still has a cycle (a graph that was never finalised).
    """
    import networkx as nx

    ids = list(graph.nodes)
    g = nx.DiGraph()
    g.add_nodes_from(ids)
    g.add_edges_from(_forward_edges(graph))
    try:
        layers = [sorted(layer, key=ids.index) for layer in nx.topological_generations(g)]
    except nx.NetworkXUnfeasible:
        return {k: (float(x), float(y)) for k, (x, y) in nx.spring_layout(g, seed=7).items()}
    if not layers:
        return {}
    # one barycentre pass: order each layer by the mean position of its predecessors
    order: dict[str, float] = {}
    for layer in layers:

        def key(n: str) -> tuple[float, int]:
            preds = [order[p] for p in g.predecessors(n) if p in order]
            return (sum(preds) / len(preds) if preds else 0.0, ids.index(n))

        layer.sort(key=key)
        for i, n in enumerate(layer):
            order[n] = i - (len(layer) - 1) / 2
    widest = max(len(layer) for layer in layers)
    cols = len(layers) if len(layers) <= max_cols else max(max_cols, math.ceil(math.sqrt(len(layers) * 2)))
    pos: dict[str, tuple[float, float]] = {}
    for i, layer in enumerate(layers):
        block, col = divmod(i, cols)
        x = col if block % 2 == 0 else cols - 1 - col
        y0 = -block * (widest + 0.8)
        for j, n in enumerate(layer):
            pos[n] = (float(x), y0 - (j - (len(layer) - 1) / 2))
    return pos


class GraphPainter:
    """A graph laid out and rendered once; :meth:`png` recolours nodes and returns PNG bytes.

    Thread-safe (one lock): the live widget may paint from the engine's side while the main thread
    renders the final frame.
    """

    def __init__(self, graph: Any, *, dpi: int = 96, max_cols: int = 12, title: str | None = None) -> None:
        self.graph = graph
        self.ids = list(graph.nodes)
        self.dpi = dpi
        self.max_cols = max_cols
        self.title = title
        self._lock = threading.Lock()
        self._fig: Any = None
        self._nodes: Any = None
        self._bg: Any = None

    # ------------------------------------------------------------------ build once
    def _build(self) -> None:
        import networkx as nx
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.patches import Patch

        n = len(self.ids)
        pos = layered_layout(self.graph, self.max_cols) if n else {}
        xs = [p[0] for p in pos.values()] or [0.0]
        ys = [p[1] for p in pos.values()] or [0.0]
        span_x = max(xs) - min(xs) + 1
        span_y = max(ys) - min(ys) + 1
        width = min(max(span_x * 1.35, 5.5), 11.0)
        height = min(max(span_y * 0.75 + 1.0, 2.6), 9.0)
        fig = Figure(figsize=(width, height), dpi=self.dpi)
        FigureCanvasAgg(fig)
        ax = fig.add_axes((0.01, 0.09, 0.98, 0.82) if n else (0.01, 0.01, 0.98, 0.98))
        ax.set_axis_off()
        ax.set_xlim(min(xs) - 0.6, max(xs) + 0.6)
        ax.set_ylim(min(ys) - 0.7, max(ys) + 0.5)
        scale = min(1.0, 3.2 / max(span_x / width, span_y / height, 1e-9))
        node_size = max(60.0, 520.0 * scale)
        font = 8.0 if n <= 24 else (6.5 if n <= 60 else 5.0)
        g = nx.DiGraph()
        g.add_nodes_from(self.ids)
        fwd = [(e.src, e.dst) for e in self.graph.edges if not e.back]
        back = [(e.src, e.dst) for e in self.graph.edges if e.back]
        conditional = [(e.src, e.dst) for e in self.graph.edges if not e.back and e.condition is not None]
        g.add_edges_from(fwd + back)
        plain = [e for e in fwd if e not in conditional]
        if plain:
            nx.draw_networkx_edges(
                g,
                pos,
                edgelist=plain,
                ax=ax,
                node_size=node_size,
                edge_color="#555555",
                arrowsize=9,
                width=1.0,
                hide_ticks=False,
            )
        if conditional:
            nx.draw_networkx_edges(
                g,
                pos,
                edgelist=conditional,
                ax=ax,
                node_size=node_size,
                edge_color="#7a5195",
                style="dashed",
                arrowsize=9,
                width=1.0,
                hide_ticks=False,
            )
            if n <= 40:
                labels = {
                    (e.src, e.dst): e.condition.text
                    for e in self.graph.edges
                    if not e.back and e.condition is not None
                }
                nx.draw_networkx_edge_labels(
                    g,
                    pos,
                    edge_labels=labels,
                    ax=ax,
                    font_size=font - 1.5,
                    font_color="#7a5195",
                    rotate=False,
                    hide_ticks=False,
                    bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.8},
                )
        if back:
            nx.draw_networkx_edges(
                g,
                pos,
                edgelist=back,
                ax=ax,
                node_size=node_size,
                edge_color="#ef5675",
                style="dashed",
                arrowsize=9,
                width=1.2,
                hide_ticks=False,
                connectionstyle="arc3,rad=0.45",
            )
        if n <= 120:
            offset = 0.22 + 0.12 * math.sqrt(node_size / 520.0)
            for nid, (x, y) in pos.items():
                ax.text(
                    x,
                    y - offset,
                    _short(nid, 22 if n <= 40 else 14),
                    ha="center",
                    va="top",
                    fontsize=font,
                    color="#222222",
                    clip_on=False,
                )
        handles = [Patch(facecolor=STATUS_COLORS[s], edgecolor="#666666", label=s) for s in STATUS_LABELS]
        fig.legend(
            handles=handles,
            loc="lower center",
            ncol=len(handles),
            fontsize=7,
            frameon=False,
            handlelength=1.0,
            handletextpad=0.3,
            columnspacing=0.8,
        )
        if self.title:
            fig.text(0.01, 0.99, self.title, ha="left", va="top", fontsize=8, color="#444444")
        self._nodes = (
            ax.scatter(
                [pos[i][0] for i in self.ids],
                [pos[i][1] for i in self.ids],
                s=node_size,
                c=[STATUS_COLORS["pending"]] * n,
                edgecolors="#555555",
                linewidths=0.8,
                zorder=3,
            )
            if n
            else None
        )
        if self._nodes is not None:
            self._nodes.set_animated(True)  # drawn on top of the cached background only
        fig.canvas.draw()
        self._bg = fig.canvas.copy_from_bbox(fig.bbox)
        self._fig = fig

    # ------------------------------------------------------------------ per update
    def png(self, statuses: Mapping[str, str] | None = None) -> bytes:
        """PNG bytes of the graph with nodes coloured by ``statuses`` (node id -> status)."""
        from PIL import Image

        with self._lock:
            if self._fig is None:
                self._build()
            canvas = self._fig.canvas
            canvas.restore_region(self._bg)
            if self._nodes is not None:
                st = statuses or {}
                faces = [STATUS_COLORS.get(st.get(i, "pending"), STATUS_COLORS["pending"]) for i in self.ids]
                edges = [_EDGE_FOR_STATUS.get(st.get(i, "pending"), "#555555") for i in self.ids]
                self._nodes.set_facecolor(faces)
                self._nodes.set_edgecolor(edges)
                self._nodes.axes.draw_artist(self._nodes)
            w, h = canvas.get_width_height()
            image = Image.frombuffer("RGBA", (w, h), bytes(canvas.buffer_rgba()), "raw", "RGBA", 0, 1)
            out = io.BytesIO()
            image.convert("RGB").save(out, format="PNG", compress_level=1)
            return out.getvalue()

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels (builds the figure if needed)."""
        with self._lock:
            if self._fig is None:
                self._build()
            return self._fig.canvas.get_width_height()


def graph_png(graph: Any, statuses: Mapping[str, str] | None = None, *, title: str | None = None) -> bytes:
    """One-off PNG of ``graph`` (a :class:`GraphIR`), e.g. for static HTML."""
    return GraphPainter(graph, title=title).png(statuses)


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
