"""The one drawing of a pipeline graph, for the notebook (inline SVG) and the CLI (PNG/SVG/PDF).

Why one module with a geometry step and two painters: the notebook and ``sibyl workflow visualize``
must show the same picture. :func:`layout` computes every box, line and label in pixels once;
:func:`to_svg` paints it as self-contained SVG (colours through JupyterLab's CSS variables with
light fallbacks, so a dark theme stays readable and GitHub/nbconvert still show it), and
:func:`draw_graph` paints the same geometry on a matplotlib Agg canvas for raster files. Nothing
here needs a network, Graphviz or a browser.

Layout (Sugiyama-style, top to bottom): layers by longest forward path, a dummy point per layer
for long edges, two barycentre passes to cut crossings, then each row is packed left to right with
real box widths, so node boxes never overlap. Labels are never truncated to a shared prefix: long
ids wrap at ``_ . -``. Condition labels sit in the gap above their edge's target and are swept
apart. Conditional orchestration (nodes with a ``condition`` guard in a chain) is drawn as the
branches it means, each branch edge carrying its condition. Back edges (loops) run in lanes on the
right; ``on_error`` fallbacks sit beside their node with a dotted edge.

The status vocabulary (``STATUSES``) is the engine's record statuses plus ``pending`` and
``running``: the same words in the graph, the step table, the CLI and ``RunResult.format_trace``.
"""

from __future__ import annotations

import html
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "STATUSES",
    "STATUS_COLORS",
    "EDGE_COLORS",
    "Layout",
    "layout",
    "to_svg",
    "draw_graph",
    "save_graph",
    "statuses_from_result",
    "statuses_from_records",
]

# Status -> (fill, text colour). Record statuses (ran, cached, skipped, failed, cancelled) as the
# engine writes them, plus pending (not started) and running (its code is executing now).
STATUSES = ("pending", "running", "ran", "cached", "skipped", "failed", "cancelled", "interrupted", "edited")
STATUS_COLORS: dict[str, str] = {
    "pending": "#eeeeee",
    "running": "#f9a825",
    "ran": "#2e7d32",
    "cached": "#1565c0",
    "skipped": "#fafafa",
    "failed": "#c62828",
    "cancelled": "#6d6d6d",
    "interrupted": "#8e24aa",  # waiting for a person's answer (ctx.interrupt)
    "edited": "#00838f",  # output set by a time-travel fork
}
_STATUS_TEXT = {
    "pending": "#212121",
    "running": "#212121",
    "ran": "#ffffff",
    "cached": "#ffffff",
    "skipped": "#616161",
    "failed": "#ffffff",
    "cancelled": "#ffffff",
    "interrupted": "#ffffff",
    "edited": "#ffffff",
}
# CSS variables for the statuses whose colours must follow the theme (the others read on both).
_STATUS_FILL_VAR = {"pending": "--jp-layout-color2", "skipped": "--jp-layout-color1"}
_STATUS_TEXT_VAR = {"pending": "--jp-ui-font-color1", "skipped": "--jp-ui-font-color2"}
EDGE_COLORS = {"edge": "#757575", "conditional": "#1e88e5", "back": "#ab47bc", "fallback": "#e53935"}
_EDGE_VAR = {"edge": "--jp-ui-font-color2"}
_RECORD_STATUS = {"recovered": "ran", "done": "ran"}  # legacy words folded into the one vocabulary

# Geometry (pixels). Node text is monospace so its width is known without a font engine.
ID_FONT, SUB_FONT, LABEL_FONT = 12.0, 10.5, 10.5
CHAR_W = 0.62  # advance of one monospace character per pixel of font size (DejaVu Sans Mono: 0.602)
LINE_H, PAD_X, PAD_Y = 15.0, 10.0, 6.0
H_GAP, V_GAP, LABEL_GAP = 26.0, 40.0, 40.0
LABEL_LINE = 13.0
MIN_W = 84.0
ID_WRAP, SUB_WRAP, EDGE_LABEL_MAX = 24, 40, 36
MARGIN = 16.0
LEGEND_H = 24.0
_REF = re.compile(r"\$\{([^}]*)\}")


def statuses_from_records(records: Any) -> dict[str, str]:
    """Latest status per node id from a run's :class:`StepRecord` list.

    A node whose ``on_error`` fallback succeeded shows as ran: the fallback's output is its output.
    """
    out: dict[str, str] = {}
    for rec in records or ():
        status = _RECORD_STATUS.get(rec.status, rec.status)
        out[rec.node_id] = status
        if rec.fallback_for and status == "ran":
            out[rec.fallback_for] = "ran"
    return out


def statuses_from_result(result: Any) -> dict[str, str]:
    """Latest status per node of a :class:`~sibyl_nb.engine.result.RunResult`."""
    return statuses_from_records(result.records)


# ---------------------------------------------------------------------- text helpers
def _pretty(condition: str) -> str:
    """``${classify.type} == "factual"`` reads as ``classify.type == "factual"`` in a small label."""
    return " ".join(_REF.sub(lambda m: m.group(1), condition).split())


def _short(text: str, width: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def wrap_id(text: str, width: int = ID_WRAP) -> list[str]:
    """Wrap an identifier at ``_ . - /`` (kept at the line end), hard-splitting only a separator-free run."""
    parts = re.findall(r"[^_.\-/]+[_.\-/]*|[_.\-/]+", text) or [text]
    lines: list[str] = []
    cur = ""
    for part in parts:
        while len(part) > width:
            if cur:
                lines.append(cur)
                cur = ""
            lines.append(part[:width])
            part = part[width:]
        if len(cur) + len(part) > width and cur:
            lines.append(cur)
            cur = part
        else:
            cur += part
    if cur:
        lines.append(cur)
    return lines


def _wrap_label(text: str, width: int, max_lines: int = 2) -> list[str]:
    """Word-wrap a condition label to ``width`` characters, at most ``max_lines`` (the last may end in …)."""
    import textwrap

    longest = max((len(w) for w in text.split()), default=0)
    width = min(max(width, 12, longest + 3), EDGE_LABEL_MAX)
    lines = textwrap.wrap(text, width, break_on_hyphens=False) or [""]
    if len(lines) > max_lines:
        lines = lines[: max_lines - 1] + [_short(" ".join(lines[max_lines - 1 :]), max(width, 12))]
    return lines


def text_width(text: str, size: float) -> float:
    return len(text) * size * CHAR_W


# ---------------------------------------------------------------------- geometry
@dataclass(slots=True)
class Box:
    id: str
    x: float  # centre
    y: float  # top
    w: float
    h: float
    lines: list[str]  # first len(id_lines) lines are the id, the rest smaller
    id_lines: int
    kind: str = "task"  # task | fallback | dynamic | entry
    owner: str | None = None  # fallbacks: the node they stand in for

    @property
    def left(self) -> float:
        return self.x - self.w / 2

    @property
    def right(self) -> float:
        return self.x + self.w / 2

    @property
    def bottom(self) -> float:
        return self.y + self.h


@dataclass(slots=True)
class EdgePath:
    kind: str  # edge | conditional | back | fallback
    points: list[tuple[float, float]]
    label: str | None = None
    label_box: tuple[float, float, float, float] | None = None  # x, y, w, h
    src: str = ""
    dst: str = ""


@dataclass(slots=True)
class _LabelSlot:
    """A label's box while labels in one gap are swept apart (then copied to ``edge.label_box``)."""

    x: float
    y: float
    w: float
    h: float
    edge: EdgePath


@dataclass
class Layout:
    """Every box, edge polyline and label of one graph, in pixels (origin top-left)."""

    boxes: dict[str, Box] = field(default_factory=dict)
    edges: list[EdgePath] = field(default_factory=list)
    width: float = 0.0
    height: float = 0.0
    top: float = 0.0  # y where the graph starts (below the legend)
    # its SVG painters (themed, plain), made on first paint: see :func:`to_svg`
    _painters: dict[bool, _SvgPainter] = field(default_factory=dict, repr=False, compare=False)

    def label_boxes(self) -> list[tuple[str, tuple[float, float, float, float]]]:
        """(name, (x, y, w, h)) of every node box and edge label: what must never overlap."""
        out = [(f"node:{b.id}", (b.left, b.y, b.w, b.h)) for b in self.boxes.values()]
        out += [(f"label:{e.src}->{e.dst}", e.label_box) for e in self.edges if e.label_box]
        return out


@dataclass(slots=True)
class _Link:
    src: str
    dst: str
    kind: str
    label: str | None


def _display_links(graph: Any) -> tuple[list[_Link], list[_Link], set[str]]:
    """Forward links to draw, back links, and nodes whose guard is drawn on their incoming edge.

    A chain with guarded nodes (``orchestration: conditional``) runs each guarded node or passes
    over it, so ``classify -> simple -> medium`` really means ``classify -> simple`` *if* one
    condition, ``classify -> medium`` *if* another. Consecutive nodes with the same guard form one
    branch. Only chain links (one forward in-edge, at most one out-edge) are rerouted; elsewhere the
    guard is written inside the node.
    """
    nodes = graph.nodes
    fwd = [e for e in graph.edges if not e.back and e.src in nodes and e.dst in nodes]
    ins: dict[str, list[Any]] = {n: [] for n in nodes}
    outs: dict[str, list[Any]] = {n: [] for n in nodes}
    for e in fwd:
        ins[e.dst].append(e)
        outs[e.src].append(e)

    def guard(nid: str) -> str | None:
        g = nodes[nid].guard
        return None if g is None else g.text

    routed = {
        n
        for n in nodes
        if guard(n) is not None and len(ins[n]) == 1 and len(outs[n]) <= 1 and ins[n][0].condition is None
    }

    def anchor_before(nid: str) -> str | None:
        """Walk back over routed nodes of other branches to the node the branch hangs from."""
        g = guard(nid)
        cur = ins[nid][0].src
        while cur in routed and guard(cur) != g:
            if len(ins[cur]) != 1:
                break
            cur = ins[cur][0].src
        return cur

    def join_after(nid: str) -> str | None:
        """Walk forward over routed nodes of other branches to where the branches meet again."""
        g = guard(nid)
        cur = outs[nid][0].dst if outs[nid] else None
        while cur is not None and cur in routed and guard(cur) != g:
            cur = outs[cur][0].dst if outs[cur] else None
        return cur

    links: list[_Link] = []
    seen: set[tuple[str, str]] = set()

    def add(src: str, dst: str, kind: str, label: str | None) -> None:
        if (src, dst) not in seen and src != dst:
            seen.add((src, dst))
            links.append(_Link(src, dst, kind, label))

    for e in fwd:
        cond = (
            _pretty(e.condition.text) if e.condition is not None else (f"when {e.when}" if e.when else None)
        )
        src_routed, dst_routed = e.src in routed, e.dst in routed
        if dst_routed:
            anchor = anchor_before(e.dst)
            if anchor is None:
                continue
            if anchor == e.src and src_routed and guard(e.src) == guard(e.dst):
                add(e.src, e.dst, "edge", None)  # inside one branch
            else:
                add(anchor, e.dst, "conditional", "if " + _pretty(guard(e.dst) or ""))
            if src_routed and guard(e.src) != guard(e.dst):
                end = join_after(e.src)  # the branch ending at e.src joins further down
                if end is not None:
                    add(e.src, end, "edge", None)
            continue
        add(e.src, e.dst, "conditional" if cond else "edge", cond)
    back = [
        _Link(
            e.src,
            e.dst,
            "back",
            "↺ " + _pretty(e.condition.text) if e.condition is not None else "↺ loop",
        )
        for e in graph.edges
        if e.back and e.src in nodes and e.dst in nodes
    ]
    return links, back, routed


def _node_lines(node: Any, routed: bool, show_techniques: bool) -> tuple[list[str], int]:
    id_lines = wrap_id(node.id)
    lines = list(id_lines)
    if node.kind == "task":
        if show_techniques:
            lines.append(_short(node.technique, SUB_WRAP))
    else:
        lines.append(f"[{node.kind}]")
    if node.guard is not None and not routed:
        lines.append(_short("if " + _pretty(node.guard.text), SUB_WRAP))
    return lines, len(id_lines)


def _box_size(lines: list[str], id_lines: int) -> tuple[float, float]:
    widths = [text_width(s, ID_FONT if i < id_lines else SUB_FONT) for i, s in enumerate(lines)]
    w = max(MIN_W, max(widths, default=0.0) + 2 * PAD_X)
    return w, len(lines) * LINE_H + 2 * PAD_Y


def _as_graph(obj: Any) -> tuple[Any, str | None, Mapping[str, str] | None]:
    """Accept a GraphIR, a Pipeline or a RunResult: (graph, title, statuses)."""
    title = None
    statuses = None
    if hasattr(obj, "records") and hasattr(obj, "graph"):
        statuses = statuses_from_result(obj)
        title = getattr(obj, "pipeline", None)
        obj = obj.graph
    elif not hasattr(obj, "nodes") and hasattr(obj, "graph"):
        title = getattr(obj, "name", None)
        obj = obj.graph
    if not getattr(obj, "finalized", True):
        obj.finalize()
    return obj, title, statuses


# Layouts by graph structure (:func:`_layout_key`), most recently used last. A pipeline's graph does
# not change between runs, and a notebook re-running a cell compiles an equal graph again: both find
# their picture here instead of laying out again (25-50 ms for 1000 nodes).
_LAYOUTS: OrderedDict[tuple[Any, ...], Layout] = OrderedDict()
_LAYOUTS_KEPT = 16
_LAYOUTS_LOCK = threading.Lock()


def _layout_key(graph: Any, show_techniques: bool) -> tuple[Any, ...]:
    """Everything :func:`_lay_out` reads from a graph: graphs with equal keys have the same picture."""

    def text(cond: Any) -> str | None:
        return None if cond is None else cond.text

    nodes = tuple(
        (nid, n.id, n.kind, n.technique, text(n.guard), tuple((f.id, f.technique) for f in n.fallbacks))
        for nid, n in graph.nodes.items()
    )
    edges = tuple((e.src, e.dst, e.back, text(e.condition), e.when) for e in graph.edges)
    return (show_techniques, nodes, edges)


def layout(graph_ir: Any, *, show_techniques: bool = True) -> Layout:
    """The picture of ``graph_ir`` (a GraphIR, Pipeline or RunResult): boxes, edges, labels.

    Computed once per graph structure and shared: treat the returned :class:`Layout` as read-only.
    """
    graph, _, _ = _as_graph(graph_ir)
    key = _layout_key(graph, show_techniques)
    with _LAYOUTS_LOCK:
        geo = _LAYOUTS.get(key)
        if geo is not None:
            _LAYOUTS.move_to_end(key)
            return geo
    geo = _lay_out(graph, show_techniques)
    with _LAYOUTS_LOCK:
        _LAYOUTS[key] = geo
        while len(_LAYOUTS) > _LAYOUTS_KEPT:
            _LAYOUTS.popitem(last=False)
    return geo


def _lay_out(graph: Any, show_techniques: bool) -> Layout:
    """Lay out a finalised graph (uncached; steps 1-8 below)."""
    nodes = graph.nodes
    links, back, routed = _display_links(graph)
    out = Layout()
    if not nodes:
        out.width, out.height = 2 * MARGIN + MIN_W, 2 * MARGIN
        return out

    # 1. layers: longest path over the drawn forward links (Kahn order, declaration order on ties)
    ids = list(nodes)
    preds: dict[str, list[str]] = {n: [] for n in ids}
    succs: dict[str, list[str]] = {n: [] for n in ids}
    for lk in links:
        preds[lk.dst].append(lk.src)
        succs[lk.src].append(lk.dst)
    indeg = {n: len(preds[n]) for n in ids}
    layer = dict.fromkeys(ids, 0)
    todo = [n for n in ids if indeg[n] == 0]
    head = 0
    while head < len(todo):
        n = todo[head]
        head += 1
        for m in succs[n]:
            layer[m] = max(layer[m], layer[n] + 1)
            indeg[m] -= 1
            if indeg[m] == 0:
                todo.append(m)
    for n in ids:  # a leftover cycle (never finalised): keep declaration order
        if indeg[n] > 0:
            layer[n] = max(layer[n], 0)

    # 2. dummy points for links spanning several layers, so their lines bend around boxes
    rows: list[list[str]] = [[] for _ in range(max(layer.values()) + 1)]
    for n in ids:
        rows[layer[n]].append(n)
    chains: list[tuple[_Link, list[str]]] = []
    up: dict[str, list[str]] = {n: list(preds[n]) for n in ids}
    for k, lk in enumerate(links):
        a, b = layer[lk.src], layer[lk.dst]
        chain = [lk.src]
        if b - a > 1:
            for li in range(a + 1, b):
                d = f"\0{k}:{li}"
                rows[li].append(d)
                up[d] = [chain[-1]]
                chain.append(d)
            up[lk.dst][up[lk.dst].index(lk.src)] = chain[-1]  # its barycentre follows the bend
        chain.append(lk.dst)
        chains.append((lk, chain))

    # 3. order each row by the barycentre of the row above (two passes)
    order: dict[str, float] = {}
    for _ in range(2):
        for r, row in enumerate(rows):
            if r == 0 and not order:
                order.update({n: float(i) for i, n in enumerate(row)})
                continue
            base = {n: float(i) for i, n in enumerate(row)}

            def key(n: str, base: dict[str, float] = base) -> tuple[float, float]:
                ps = [order[p] for p in up.get(n, ()) if p in order]
                return (sum(ps) / len(ps) if ps else base[n], base[n])

            row.sort(key=key)
            order.update({n: float(i) for i, n in enumerate(row)})

    # 4. fallbacks beside their owner, in its row
    fallback_owner: dict[str, str] = {}
    for row in rows:
        extra: list[str] = []
        for n in row:
            extra.append(n)
            if not n.startswith("\0"):
                for fb in nodes[n].fallbacks:
                    fallback_owner[fb.id] = n
                    extra.append(fb.id)
        row[:] = extra

    # 5. sizes, then rows top to bottom, packed left to right around their wished centres
    sizes: dict[str, tuple[float, float, list[str], int, str]] = {}
    for row in rows:
        for n in row:
            if n.startswith("\0"):
                sizes[n] = (2.0, 0.0, [], 0, "dummy")
            elif n in fallback_owner:
                fb = next(f for f in nodes[fallback_owner[n]].fallbacks if f.id == n)
                lines = wrap_id(n) + ([_short(fb.technique, SUB_WRAP)] if show_techniques else [])
                w, h = _box_size(lines, len(lines) - (1 if show_techniques else 0))
                sizes[n] = (w, h, lines, len(lines) - (1 if show_techniques else 0), "fallback")
            else:
                lines, nid = _node_lines(nodes[n], n in routed, show_techniques)
                w, h = _box_size(lines, nid)
                sizes[n] = (w, h, lines, nid, nodes[n].kind)
    labelled_into = {lk.dst for lk in links if lk.label}
    centre: dict[str, float] = {}
    tops: list[float] = []
    y = MARGIN + LEGEND_H + 8
    for row in rows:
        gap_needed = any(n in labelled_into for n in row) or any(
            n.startswith("\0") and chains[int(n[1:].split(":")[0])][0].label for n in row
        )
        if tops:
            y += LABEL_GAP if gap_needed else 0.0
        tops.append(y)
        wished = []
        for n in row:
            ps = [centre[p] for p in up.get(n, ()) if p in centre]
            if n in fallback_owner and fallback_owner[n] in centre:
                ps = [centre[fallback_owner[n]] + 1.0]
            wished.append(sum(ps) / len(ps) if ps else None)
        xs = _pack([sizes[n][0] for n in row], wished)
        for n, x in zip(row, xs, strict=True):
            centre[n] = x
        y += max(sizes[n][1] for n in row) + V_GAP
    # rows were packed independently: shift everything so the leftmost box starts at MARGIN
    min_left = min(centre[n] - sizes[n][0] / 2 for row in rows for n in row)
    shift = MARGIN - min_left
    row_h = [max(sizes[n][1] for n in row) for row in rows]
    for r, row in enumerate(rows):
        for n in row:
            centre[n] += shift
            w, h, lines, nid, kind = sizes[n]
            if kind == "dummy":
                continue
            top = tops[r] + (row_h[r] - h) / 2
            out.boxes[n] = Box(n, centre[n], top, w, h, lines, nid, kind, fallback_owner.get(n))

    def point(n: str, r: int) -> tuple[float, float]:
        return (centre[n], tops[r] + row_h[r] / 2)

    # 6. forward edges: bottom of source, through dummies, top of target
    row_of = {n: r for r, row in enumerate(rows) for n in row}
    for lk, chain in chains:
        src, dst = out.boxes[lk.src], out.boxes[lk.dst]
        pts = [(src.x, src.bottom)]
        pts += [point(d, row_of[d]) for d in chain[1:-1]]
        pts.append((dst.x, dst.y))
        out.edges.append(EdgePath(lk.kind, pts, lk.label, None, lk.src, lk.dst))
    for fid, owner in fallback_owner.items():
        owner_box, fb_box = out.boxes[owner], out.boxes[fid]
        mid = owner_box.y + owner_box.h / 2
        out.edges.append(
            EdgePath("fallback", [(owner_box.right, mid), (fb_box.left, mid)], None, None, owner, fid)
        )

    # 7. condition labels in the gap above the target, swept apart per gap
    by_gap: dict[int, list[EdgePath]] = {}
    for e in out.edges:
        if e.label and e.kind in ("edge", "conditional"):
            by_gap.setdefault(row_of[e.dst], []).append(e)
    for r, group in by_gap.items():
        placed: list[_LabelSlot] = []
        for e in group:
            room = max(out.boxes[e.dst].w, 130.0)
            lines = _wrap_label(e.label or "", int(room / (LABEL_FONT * CHAR_W)) - 1)
            e.label = "\n".join(lines)
            w = max(text_width(s, LABEL_FONT) for s in lines) + 8
            h = LABEL_LINE * len(lines) + 4
            (x0, y0), (x1, y1) = e.points[-2], e.points[-1]
            ly = tops[r] - 10 - h / 2 if y1 - y0 > LABEL_GAP else (y0 + y1) / 2
            t = 0.0 if y1 == y0 else (ly - y0) / (y1 - y0)
            lx = x0 + (x1 - x0) * min(max(t, 0.0), 1.0)
            placed.append(_LabelSlot(lx - w / 2, ly - h / 2, w, h, e))
        placed.sort(key=lambda p: p.x)
        for i in range(1, len(placed)):
            prev = placed[i - 1]
            if placed[i].x < prev.x + prev.w + 6:
                placed[i].x = prev.x + prev.w + 6
        for slot in placed:
            slot.edge.label_box = (slot.x, slot.y, slot.w, slot.h)

    # 8. back edges in lanes right of everything, labels beside their lane, swept apart vertically
    right = max(
        [b.right for b in out.boxes.values()]
        + [e.label_box[0] + e.label_box[2] for e in out.edges if e.label_box]
    )
    lane_x = right + 18
    back_labels = []
    for k, lk in enumerate(back):
        sbox, dbox = out.boxes[lk.src], out.boxes[lk.dst]
        x = lane_x + 14 * k
        ya, yb = sbox.y + sbox.h / 2 + 4, dbox.y + dbox.h / 2 - 4
        if lk.src == lk.dst:
            ya, yb = sbox.y + sbox.h * 0.7, sbox.y + sbox.h * 0.3
        pts = [(sbox.right, ya), (x, ya), (x, yb), (dbox.right, yb)]
        e = EdgePath("back", pts, _short(lk.label or "", EDGE_LABEL_MAX), None, lk.src, lk.dst)
        out.edges.append(e)
        back_labels.append(e)
    label_x = lane_x + 14 * len(back) + 4
    placed_back: list[_LabelSlot] = []
    for e in back_labels:
        text = e.label or ""
        w, h = text_width(text, LABEL_FONT) + 8, LABEL_LINE + 4
        ymid = (e.points[1][1] + e.points[2][1]) / 2
        placed_back.append(_LabelSlot(label_x, ymid - h / 2, w, h, e))
    placed_back.sort(key=lambda p: p.y)
    for i in range(1, len(placed_back)):
        prev = placed_back[i - 1]
        if placed_back[i].y < prev.y + prev.h + 4:
            placed_back[i].y = prev.y + prev.h + 4
    for slot in placed_back:
        slot.edge.label_box = (slot.x, slot.y, slot.w, slot.h)

    extents_x = [b.right for b in out.boxes.values()] + [
        e.label_box[0] + e.label_box[2] for e in out.edges if e.label_box
    ]
    extents_x += [p[0] for e in out.edges for p in e.points]
    extents_y = [b.bottom for b in out.boxes.values()] + [
        e.label_box[1] + e.label_box[3] for e in out.edges if e.label_box
    ]
    out.width = max(max(extents_x) + MARGIN, MARGIN + legend_width(kinds_of(out)) + MARGIN)
    out.height = max(extents_y) + MARGIN
    out.top = MARGIN + LEGEND_H
    return out


_EDGE_LEGEND = {"conditional": "condition", "back": "loop", "fallback": "on_error"}


def kinds_of(geo: Layout) -> list[str]:
    """Edge kinds the legend lists (those drawn, in a fixed order)."""
    kinds = {e.kind for e in geo.edges}
    return [k for k in _EDGE_LEGEND if k in kinds]


def legend_width(kinds: list[str]) -> float:
    w = sum(16 + text_width(s, 10.5) + 12 for s in STATUSES)
    return w + sum(22 + text_width(_EDGE_LEGEND[k], 10.5) + 12 for k in kinds)


def _pack(widths: list[float], wished: list[float | None]) -> list[float]:
    """Centres for boxes of ``widths`` in this order, as near their wished centres as no-overlap allows."""
    n = len(widths)
    if n == 0:
        return []
    # boxes without a wish go right after the previous one
    xs: list[float] = []
    for i in range(n):
        want = wished[i]
        if want is None:
            want = (xs[-1] + widths[i - 1] / 2 + H_GAP + widths[i] / 2) if xs else 0.0
        xs.append(want)
    # left-to-right: push right to clear the previous box
    for i in range(1, n):
        least = xs[i - 1] + (widths[i - 1] + widths[i]) / 2 + H_GAP
        if xs[i] < least:
            xs[i] = least
    # centre the block on the mean wish so a fan-out stays under its parent
    wishes = [w for w in wished if w is not None]
    if wishes:
        delta = sum(wishes) / len(wishes) - sum(xs) / n
        xs = [x + delta for x in xs]
    return xs


# ---------------------------------------------------------------------- SVG painter
def _css(var: str | None, fallback: str) -> str:
    return f"var({var}, {fallback})" if var else fallback


def to_svg(
    graph_ir: Any,
    statuses: Mapping[str, str] | None = None,
    *,
    title: str | None = None,
    geometry: Layout | None = None,
    themed: bool = True,
) -> str:
    """Inline SVG of the graph with nodes coloured by ``statuses``; every element has a ``sibyl-*`` class.

    Pass a precomputed ``geometry`` (from :func:`layout`) to recolour without laying out again.
    ``themed=False``: the same picture for an ``<img>`` (nothing outside it can theme or query it): literal
    colours instead of CSS variables, no classes, ``data-*`` or tooltips.
    """
    graph, _title, own = _as_graph(graph_ir)
    geo = geometry if geometry is not None else layout(graph)
    painter = geo._painters.get(themed)
    if painter is None:
        painter = geo._painters[themed] = _SvgPainter(geo, themed)
    return painter.paint(statuses if statuses is not None else own or {}, title or _title or "pipeline graph")


class _SvgPainter:
    """One layout's SVG, split by what a run changes: the legend, edges and labels are built once, and
    each node's group once per status it is shown in, so a repaint of a 1000-node graph is a join."""

    def __init__(self, geo: Layout, themed: bool) -> None:
        self.geo = geo
        self.themed = themed
        self.boxes = list(geo.boxes.items())
        self.nodes: list[dict[str, str]] = [{} for _ in self.boxes]  # per box: status -> its <g>
        self.pieces: list[tuple[str, str, list[tuple[str, str]]] | None] = [None] * len(self.boxes)
        self.styles: dict[tuple[str, str], tuple[str, str]] = {}  # (status, box kind) -> style
        self.static = self._static()
        self.tail = self._labels() + "</svg>"

    def paint(self, statuses: Mapping[str, str], label: str) -> str:
        parts = [self._open(label), self.static]
        for i, ((n, _), painted) in enumerate(zip(self.boxes, self.nodes, strict=True)):
            status = statuses.get(n, "pending")
            status = _RECORD_STATUS.get(status, status)
            group = painted.get(status)
            if group is None:
                group = painted[status] = self._node(i, status)
            parts.append(group)
        parts.append(self.tail)
        return "".join(parts)

    # ------------------------------------------------------------------ pieces
    def _css(self, var: str | None, fallback: str) -> str:
        return _css(var if self.themed else None, fallback)

    def _hook(self, attrs: str) -> str:
        """Classes and data attributes: hooks for the page (tests, styling), pointless inside an image."""
        return attrs if self.themed else ""

    def _status_style(self, status: str) -> tuple[str, str]:
        fill = self._css(_STATUS_FILL_VAR.get(status), STATUS_COLORS.get(status, STATUS_COLORS["pending"]))
        text = self._css(_STATUS_TEXT_VAR.get(status), _STATUS_TEXT.get(status, "#212121"))
        return fill, text

    def _edge_color(self, kind: str) -> str:
        return self._css(_EDGE_VAR.get(kind), EDGE_COLORS[kind])

    def _open(self, label: str) -> str:
        geo = self.geo
        font = self._css("--jp-code-font-family", "'DejaVu Sans Mono', Menlo, Consolas, monospace")
        return (
            "<svg" + self._hook(' class="sibyl-graph-svg"') + ' xmlns="http://www.w3.org/2000/svg" '
            f'width="{geo.width:.0f}" height="{geo.height:.0f}" viewBox="0 0 {geo.width:.0f} {geo.height:.0f}"'
            + self._hook(f' role="img" aria-label="{html.escape(label)}"')
            + f' style="font-family:{font};">'
        )

    def _static(self) -> str:
        """Markers, background, legend and edges: everything under the nodes."""
        geo, esc, hook = self.geo, html.escape, self._hook
        ink = self._css("--jp-ui-font-color1", "#212121")
        out = ["<defs>"]
        for kind in EDGE_COLORS:
            out.append(
                f'<marker id="sibyl-arrow-{kind}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
                f'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
                f'style="fill:{self._edge_color(kind)};"/></marker>'
            )
        out.append("</defs>")
        out.append(
            "<rect" + hook(' class="sibyl-graph-bg"') + f' x="0" y="0" width="{geo.width:.0f}" '
            f'height="{geo.height:.0f}" style="fill:{self._css("--jp-layout-color0", "#ffffff")};"/>'
        )
        # legend: the status vocabulary, then the edge kinds that appear
        x = MARGIN
        ly = MARGIN + 8
        out.append("<g" + hook(' class="sibyl-legend"') + ">")
        for s in STATUSES:
            fill, _ = self._status_style(s)
            out.append(
                f'<rect x="{x:.1f}" y="{ly - 6:.1f}" width="12" height="12" rx="3" '
                f'style="fill:{fill};stroke:{self._css("--jp-border-color1", "#9e9e9e")};"/>'
                f'<text x="{x + 16:.1f}" y="{ly + 4:.1f}" style="font-size:10.5px;fill:{ink};">{s}</text>'
            )
            x += 16 + text_width(s, 10.5) + 12
        for kind in kinds_of(geo):
            dash = {"back": "5,3", "fallback": "2,3"}.get(kind, "")
            out.append(
                f'<line x1="{x:.1f}" y1="{ly:.1f}" x2="{x + 18:.1f}" y2="{ly:.1f}" '
                f'style="stroke:{self._edge_color(kind)};stroke-width:1.6;stroke-dasharray:{dash or "none"};"/>'
                f'<text x="{x + 22:.1f}" y="{ly + 4:.1f}" style="font-size:10.5px;fill:{ink};">'
                f"{_EDGE_LEGEND[kind]}</text>"
            )
            x += 22 + text_width(_EDGE_LEGEND[kind], 10.5) + 12
        out.append("</g>")
        # edges under nodes
        for e in geo.edges:
            dash = {"back": "5,3", "fallback": "2,3"}.get(e.kind, "none")
            d = "M" + " L".join(f"{px:.1f},{py:.1f}" for px, py in e.points)
            out.append(
                "<path"
                + hook(
                    f' class="sibyl-edge sibyl-edge-{e.kind}" data-src="{esc(e.src)}" data-dst="{esc(e.dst)}"'
                )
                + f' d="{d}" marker-end="url(#sibyl-arrow-{e.kind})" '
                f'style="fill:none;stroke:{self._edge_color(e.kind)};stroke-width:1.4;stroke-dasharray:{dash};"/>'
            )
        return "".join(out)

    def _pieces(self, n: str, b: Box) -> tuple[str, str, list[tuple[str, str]]]:
        """A node's status-free pieces: escaped id, box geometry, each label line around its colour."""
        hook = self._hook
        geometry = (
            hook(' class="sibyl-node-box"')
            + f' x="{b.left:.1f}" y="{b.y:.1f}" width="{b.w:.1f}" height="{b.h:.1f}" rx="7" style="'
        )
        lines = []
        for i, line in enumerate(b.lines):
            size = ID_FONT if i < b.id_lines else SUB_FONT
            weight = "700" if i < b.id_lines else "400"
            ty = b.y + PAD_Y + LINE_H * i + LINE_H * 0.72
            opacity = "1" if i < b.id_lines else "0.85"
            lines.append(
                (
                    "<text"
                    + hook(' class="sibyl-node-label"')
                    + f' x="{b.x:.1f}" y="{ty:.1f}" text-anchor="middle" '
                    f'style="font-size:{size}px;font-weight:{weight};fill:',
                    f';opacity:{opacity};">{html.escape(line)}</text>',
                )
            )
        return html.escape(n), geometry, lines

    def _style(self, status: str, kind: str) -> tuple[str, str]:
        """(the box's style, the label colour) of a node of ``kind`` in ``status``."""
        fill, text = self._status_style(status)
        dashed = kind == "fallback" or status == "skipped" or kind in ("dynamic", "entry")
        stroke = self._css("--jp-border-color1", "#616161") if status in ("pending", "skipped") else fill
        if kind == "fallback":
            stroke = EDGE_COLORS["fallback"]
        width = 2.6 if status == "running" else 1.2
        if status == "running":
            stroke = "#e65100"
        dash = "4,3" if dashed else "none"
        return f'fill:{fill};stroke:{stroke};stroke-width:{width};stroke-dasharray:{dash};"/>', text

    def _node(self, i: int, status: str) -> str:
        """Box ``i``'s group in ``status``: box, tooltip, label lines."""
        n, b = self.boxes[i]
        pieces = self.pieces[i]
        if pieces is None:
            pieces = self.pieces[i] = self._pieces(n, b)
        nid, geometry, lines = pieces
        style = self.styles.get((status, b.kind))
        if style is None:
            style = self.styles[(status, b.kind)] = self._style(status, b.kind)
        box, text = style
        st = html.escape(status)
        out = [
            "<g",
            self._hook(f' class="sibyl-node sibyl-status-{st}" data-node="{nid}" data-status="{st}"'),
            "><rect",
            geometry,
            box,
            self._hook(f"<title>{nid} · {st}</title>"),
        ]
        for head, tail in lines:
            out += (head, text, tail)
        out.append("</g>")
        return "".join(out)

    def _labels(self) -> str:
        """Edge labels, over the nodes."""
        esc, out = html.escape, []
        for e in self.geo.edges:
            if not e.label_box:
                continue
            x0, y0, w, h = e.label_box
            color = self._edge_color(e.kind)
            out.append(
                "<g"
                + self._hook(f' class="sibyl-edge-label" data-src="{esc(e.src)}" data-dst="{esc(e.dst)}"')
                + f'><rect x="{x0:.1f}" y="{y0:.1f}" width="{w:.1f}" height="{h:.1f}" rx="4" '
                f'style="fill:{self._css("--jp-layout-color1", "#ffffff")};stroke:{color};stroke-width:0.8;"/>'
                f'<text text-anchor="middle" style="font-size:{LABEL_FONT}px;fill:{color};">'
                + "".join(
                    f'<tspan x="{x0 + w / 2:.1f}" y="{y0 + 2 + LABEL_LINE * (i + 0.75):.1f}">{esc(line)}</tspan>'
                    for i, line in enumerate((e.label or "").split("\n"))
                )
                + "</text></g>"
            )
        return "".join(out)


# ---------------------------------------------------------------------- matplotlib painter
def draw_graph(
    graph_ir: Any,
    statuses: Mapping[str, str] | None = None,
    ax: Any = None,
    *,
    title: str | None = None,
    show_techniques: bool = True,
) -> Any:
    """Paint :func:`layout`'s geometry with matplotlib (Agg, no pyplot); return the ``Figure``.

    ``graph_ir``: a GraphIR, Pipeline or RunResult. ``statuses``: node id -> one of ``STATUSES``.
    Pass ``ax`` to draw into existing axes. The picture is the notebook's SVG, in light colours.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle
    from matplotlib.path import Path as MplPath

    graph, own_title, own = _as_graph(graph_ir)
    title = title if title is not None else own_title
    statuses = {
        k: _RECORD_STATUS.get(v, v) for k, v in (statuses if statuses is not None else own or {}).items()
    }
    geo = layout(graph, show_techniques=show_techniques)
    title_h = 26.0 if title else 0.0
    W, H = geo.width, geo.height + title_h
    dpi = 100.0
    if ax is None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        fig = Figure(figsize=(W / dpi, H / dpi), dpi=dpi)
        FigureCanvasAgg(fig)
        ax = fig.add_axes((0, 0, 1, 1))
    else:
        fig = ax.figure
    ax.set_xlim(0, W)
    ax.set_ylim(H, 0)  # y grows downwards, as in the SVG
    ax.set_axis_off()
    pt = 72.0 / dpi  # pixel sizes -> points
    mono = "DejaVu Sans Mono"

    def Y(y: float) -> float:
        return y + title_h

    if title:
        ax.text(MARGIN, 16, title, ha="left", va="center", fontsize=13 * pt, fontweight="bold", family=mono)
    x = MARGIN
    ly = Y(MARGIN + 8)
    for s in STATUSES:
        ax.add_patch(Rectangle((x, ly - 6), 12, 12, fc=STATUS_COLORS[s], ec="#9e9e9e", lw=0.6))
        ax.text(x + 16, ly, s, va="center", fontsize=10.5 * pt, family=mono, color="#212121")
        x += 16 + text_width(s, 10.5) + 12
    names = _EDGE_LEGEND
    for kind in kinds_of(geo):
        if True:
            ax.plot(
                [x, x + 18],
                [ly, ly],
                color=EDGE_COLORS[kind],
                lw=1.4,
                ls={"back": "--", "fallback": ":"}.get(kind, "-"),
            )
            ax.text(x + 22, ly, names[kind], va="center", fontsize=10.5 * pt, family=mono, color="#212121")
            x += 22 + text_width(names[kind], 10.5) + 12
    for e in geo.edges:
        pts = [(px, Y(py)) for px, py in e.points]
        codes = [MplPath.MOVETO] + [MplPath.LINETO] * (len(pts) - 1)
        ax.add_patch(
            FancyArrowPatch(
                path=MplPath(pts, codes),
                arrowstyle="-|>",
                mutation_scale=10,
                color=EDGE_COLORS[e.kind],
                lw=1.2,
                ls={"back": "--", "fallback": ":"}.get(e.kind, "-"),
                zorder=2,
                shrinkA=0,
                shrinkB=0,
            )
        )
    for n, b in geo.boxes.items():
        status = statuses.get(n, "pending")
        dashed = b.kind == "fallback" or status == "skipped" or b.kind in ("dynamic", "entry")
        edge = (
            EDGE_COLORS["fallback"]
            if b.kind == "fallback"
            else ("#e65100" if status == "running" else "#616161")
        )
        ax.add_patch(
            FancyBboxPatch(
                (b.left, Y(b.y)),
                b.w,
                b.h,
                boxstyle="round,pad=0,rounding_size=7",
                fc=STATUS_COLORS.get(status, STATUS_COLORS["pending"]),
                ec=edge,
                lw=2.0 if status == "running" else 0.9,
                ls="--" if dashed else "-",
                zorder=3,
            )
        )
        for i, line in enumerate(b.lines):
            ty = Y(b.y + PAD_Y + LINE_H * i + LINE_H / 2)
            ax.text(
                b.x,
                ty,
                line,
                ha="center",
                va="center",
                fontsize=(ID_FONT if i < b.id_lines else SUB_FONT) * pt,
                fontweight="bold" if i < b.id_lines else "normal",
                family=mono,
                color=_STATUS_TEXT.get(status, "#212121"),
                zorder=4,
            )
    for e in geo.edges:
        if not e.label_box:
            continue
        x0, y0, w, h = e.label_box
        ax.add_patch(
            FancyBboxPatch(
                (x0, Y(y0)),
                w,
                h,
                boxstyle="round,pad=0,rounding_size=4",
                fc="white",
                ec=EDGE_COLORS[e.kind],
                lw=0.6,
                zorder=5,
            )
        )
        ax.text(
            x0 + w / 2,
            Y(y0 + h / 2),
            e.label,
            linespacing=1.0,
            ha="center",
            va="center",
            fontsize=LABEL_FONT * pt,
            family=mono,
            color=EDGE_COLORS[e.kind],
            zorder=6,
        )
    return fig


def save_graph(
    graph_ir: Any,
    path: str,
    statuses: Mapping[str, str] | None = None,
    *,
    title: str | None = None,
    dpi: int = 150,
) -> str:
    """Write the drawing to ``path``: ``.svg`` is the notebook's SVG; ``.png``/``.pdf`` go through matplotlib."""
    if str(path).lower().endswith(".svg"):
        from pathlib import Path

        svg = to_svg(graph_ir, statuses, title=title)
        Path(path).write_text('<?xml version="1.0" encoding="UTF-8"?>\n' + svg + "\n", encoding="utf-8")
        return path
    fig = draw_graph(graph_ir, statuses, title=title)
    fig.savefig(path, dpi=dpi, facecolor="white")
    return path
