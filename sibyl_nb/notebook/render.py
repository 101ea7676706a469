"""Static HTML for runs and pipelines: graph (inline SVG), token allocation bars, step table.

Why static HTML, and only that: a saved notebook is read on GitHub, in nbviewer, in VS Code, in
nbconvert's HTML and in a reopened JupyterLab, mostly with no kernel and no network. So the run view
is plain HTML with inline styles (no scripts, no ``<style>`` block, nothing fetched), and the live
view while a run goes on is this same HTML, replaced in place (see :mod:`.live`). Colours go
through JupyterLab's CSS variables with light fallbacks, so the dark theme stays readable.

The CSS classes (``sibyl-run``, ``sibyl-graph``, ``sibyl-node``, ``sibyl-tokens``, ``sibyl-token-bar``,
``sibyl-steps``, ``sibyl-step-row``, ``sibyl-status-<status>``) are a stable hook for tests and styling.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..draw import STATUS_COLORS, STATUSES, Layout, layout, statuses_from_records, to_svg

__all__ = [
    "TOKEN_CATEGORIES",
    "USED_CATEGORIES",
    "TOKEN_COLORS",
    "SHOW_ALL",
    "parse_show",
    "preview",
    "rows_from_records",
    "summary_line",
    "graph_html",
    "tokens_html",
    "steps_html",
    "run_html",
    "result_html",
    "pipeline_html",
    "pipeline_mimebundle",
]

USED_CATEGORIES = ("system", "summary", "compressed", "recent", "current")
TOKEN_CATEGORIES = (*USED_CATEGORIES, "reserved", "free")
TOKEN_COLORS = {
    "system": "#7b1fa2",
    "summary": "#1565c0",
    "compressed": "#00838f",
    "recent": "#2e7d32",
    "current": "#ef6c00",
    "reserved": "#c62828",
    "free": "transparent",
}
SHOW_ALL = ("graph", "tokens", "steps")
_FONT = "font-family:var(--jp-ui-font-family, -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif);font-size:12px;"
_INK = "var(--jp-ui-font-color1, #212121)"
_INK2 = "var(--jp-ui-font-color2, #616161)"
_LINE = "var(--jp-border-color2, #e0e0e0)"
_LINE1 = "var(--jp-border-color1, #9e9e9e)"
_BG = "var(--jp-layout-color1, #ffffff)"


def parse_show(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """``"graph,tokens"`` -> ``("graph", "tokens")``; ``all``/empty -> all three; ``none`` -> nothing.

    Raises ``ValueError`` naming the unknown part, so the magic can report it in one line.
    """
    if value is None:
        return SHOW_ALL
    parts = [p.strip().lower() for p in (value.split(",") if isinstance(value, str) else value)]
    parts = [p for p in parts if p]
    if not parts or parts == ["all"]:
        return SHOW_ALL
    if parts == ["none"]:
        return ()
    aliases = {"step": "steps", "token": "tokens", "outputs": "steps"}
    out: list[str] = []
    for p in parts:
        p = aliases.get(p, p)
        if p not in SHOW_ALL:
            raise ValueError(f"unknown view '{p}' in --show (choose from graph, tokens, steps, all, none)")
        if p not in out:
            out.append(p)
    return tuple(out)


def preview(value: Any, width: int = 120) -> str:
    """A one-line text preview of a step output (the answer/text field if it has one)."""
    if value is None:
        return ""
    try:
        from ..engine.result import text_of

        text = text_of(value)
    except Exception:  # a preview must never break a display
        text = repr(value)
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: max(width - 1, 1)] + "…"


def rows_from_records(records: Sequence[Any] | None) -> list[dict[str, Any]]:
    """Step-table rows (plain dicts) from :class:`StepRecord` objects, statuses as recorded."""
    return [
        {
            "node_id": r.node_id,
            "technique": r.technique,
            "iteration": r.iteration,
            "status": r.status,
            "started": r.started,
            "duration": r.duration,
            "attempts": r.attempts,
            "output": r.output,
            "error": r.error or r.reason,
            "fallback_for": r.fallback_for,
        }
        for r in records or ()
    ]


def summary_line(
    state: str, nodes_done: int, nodes_total: int, steps: int, seconds: float, error: str | None = None
) -> str:
    """The one run summary, live and final: ``completed · 4/4 nodes · 5 steps · 12.3 ms``.

    *nodes* counts graph nodes that reached a final status; *steps* counts executions (a loop runs a
    node several times; a skipped node is a step too), the rows of the step table.
    """
    clock = f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.1f} s"
    text = f"{state} · {nodes_done}/{nodes_total} nodes · {steps} step{'s' if steps != 1 else ''} · {clock}"
    return f"{text} · {error}" if error else text


# ---------------------------------------------------------------------- pieces
# Why the saved graph is there twice. Neither copy alone serves every front end:
# - the inline SVG is the one a page can theme and query: its colours are JupyterLab's CSS variables
#   (the dark theme) and its nodes carry data-status (the live view, tests). An <img> can do neither:
#   nothing outside an image reaches into it, so alone it would draw the light theme on a dark page.
# - the <img> (a data: URI, nothing fetched) is the one a sanitizer keeps: JupyterLab renders an
#   untrusted notebook (every notebook it did not run itself: a cloned repository's demo notebooks)
#   through its sanitizer, which removes <svg> and <style>; GitHub's notebook view sanitizes output
#   HTML too (not checked here: it needs the network).
# nbconvert's HTML, VS Code and a trusted Lab keep both, and this rule hides the image that follows
# the inline SVG (it can never hide an image that has no SVG before it). The image's copy is the
# plain painting (literal colours, no hooks: what the CSS variables fall back to is what an image
# shows anyway), about half the size. The live repaints carry no image: they are never sanitized.
_FALLBACK_RULE = "<style>.sibyl-graph svg.sibyl-graph-svg ~ img.sibyl-graph-fallback{display:none}</style>"


def graph_html(
    graph: Any,
    statuses: Mapping[str, str] | None = None,
    *,
    title: str = "",
    geometry: Layout | None = None,
    fallback: bool = True,
) -> str:
    """The graph as inline SVG in a scrollable box (a wide or tall graph keeps its readable size).

    ``fallback``: also carry the same picture as an ``<img>`` for front ends that sanitize inline SVG
    away (the saved output; the live repaints leave it out to stay small). See ``_FALLBACK_RULE``.
    """
    if graph is None or not len(graph.nodes):
        return ""
    svg = to_svg(graph, statuses or {}, title=title, geometry=geometry)
    img = ""
    if fallback:
        plain = to_svg(graph, statuses or {}, title=title, geometry=geometry, themed=False)
        data = base64.b64encode(plain.encode("utf-8")).decode("ascii")
        img = (
            f'{_FALLBACK_RULE}<img class="sibyl-graph-fallback" alt="{html.escape(title or "pipeline graph")}" '
            f'src="data:image/svg+xml;base64,{data}"/>'
        )
    # font-size:0: where a sanitizer removed the <svg> tags, their text (labels, tooltips) stays behind as
    # loose text above the image; it takes no room. The SVG's own text sets its size on every element.
    return (
        '<div class="sibyl-graph" style="max-width:100%;max-height:720px;overflow:auto;margin:4px 0;'
        f'font-size:0;">{svg}{img}</div>'
    )


def _fmt(n: int) -> str:
    return f"{n:,}"


def _legend() -> str:
    items = []
    for c in TOKEN_CATEGORIES:
        swatch = _swatch_style(c)
        items.append(
            f'<span style="display:inline-flex;align-items:center;margin-right:12px;">'
            f'<span style="display:inline-block;width:11px;height:11px;{swatch}'
            f'border:1px solid {_LINE1};margin-right:4px;"></span>{c}</span>'
        )
    return f'<div class="sibyl-token-legend" style="margin:2px 0 6px 0;color:{_INK2};">{"".join(items)}</div>'


def _swatch_style(category: str) -> str:
    if category == "reserved":  # reserved for the reply: hatched, so it never reads as "used"
        return (
            f"background:repeating-linear-gradient(135deg,{TOKEN_COLORS['reserved']} 0 3px,"
            f"transparent 3px 6px);"
        )
    return f"background:{TOKEN_COLORS[category]};"


def tokens_html(allocations: Sequence[Mapping[str, Any]] | None) -> str:
    """One bar per context step: used segments, then free, then the hatched reply reserve.

    A segment is at least 3 px wide whatever its share, and every number is also written out under
    the bar (``system 120 · recent 800 …``), so small segments stay readable.
    """
    head = (
        f'<div class="sibyl-tokens" style="margin:6px 0;color:{_INK};">'
        '<div style="font-weight:600;margin-bottom:2px;">Token allocation</div>'
    )
    if not allocations:
        return (
            head + f'<div class="sibyl-empty" style="color:{_INK2};">no context step in this run</div></div>'
        )
    bars = []
    for a in allocations:
        alloc = {c: int((a.get("allocation") or {}).get(c, 0) or 0) for c in TOKEN_CATEGORIES}
        total = int(a.get("max_tokens") or sum(alloc.values()) or 1)
        used = sum(alloc[c] for c in USED_CATEGORIES)
        segs = []
        for c in (*USED_CATEGORIES, "free", "reserved"):
            v = alloc[c]
            if v <= 0:
                continue
            pct = 100.0 * v / total
            segs.append(
                f'<div class="sibyl-token-seg sibyl-token-{c}" data-tokens="{v}" title="{c}: {_fmt(v)} tokens" '
                f'style="flex:0 0 {pct:.3f}%;min-width:3px;height:100%;{_swatch_style(c)}'
                f'box-sizing:border-box;{"border-left:1px solid " + _LINE1 + ";" if c == "reserved" else ""}"></div>'
            )
        label = str(a.get("node_id") or "context")
        if (a.get("iteration") or 1) > 1:
            label += f" #{a['iteration']}"
        strategy = a.get("strategy")
        parts = " · ".join(f"{c} {_fmt(alloc[c])}" for c in USED_CATEGORIES if alloc[c] > 0) or "nothing used"
        bars.append(
            f'<div class="sibyl-token-row" style="margin:4px 0 8px 0;">'
            f'<div style="display:flex;align-items:baseline;gap:10px;">'
            f'<b class="sibyl-token-node">{html.escape(label)}</b>'
            f'<span style="color:{_INK2};">{html.escape(str(strategy)) if strategy else ""}</span>'
            f'<span class="sibyl-token-totals" style="margin-left:auto;">'
            f"<b>used {_fmt(used)}</b> · reserved {_fmt(alloc['reserved'])} · free {_fmt(alloc['free'])}"
            f" · budget {_fmt(total)}</span></div>"
            f'<div class="sibyl-token-bar" style="display:flex;height:16px;border:1px solid {_LINE1};'
            f'border-radius:3px;overflow:hidden;background:{_BG};margin:2px 0;">{"".join(segs)}</div>'
            f'<div class="sibyl-token-parts" style="color:{_INK2};font-size:11px;">used: {parts}</div>'
            f"</div>"
        )
    return head + _legend() + "".join(bars) + "</div>"


def _badge(status: str) -> str:
    color = STATUS_COLORS.get(status, STATUS_COLORS["pending"])
    if status in ("pending", "skipped"):
        style = f"background:transparent;color:{_INK};border:1px solid {_LINE1};"
    elif status == "running":
        style = f"background:{color};color:#212121;border:1px solid {color};"
    else:
        style = f"background:{color};color:#fff;border:1px solid {color};"
    return (
        f'<span class="sibyl-status sibyl-status-{html.escape(status)}" style="{style}'
        f'padding:0 6px;border-radius:8px;white-space:nowrap;">{html.escape(status)}</span>'
    )


def steps_html(
    rows: Sequence[Mapping[str, Any]] | None, *, max_rows: int = 500, preview_width: int = 120
) -> str:
    """A table: node, technique, iteration, status, start, duration, attempts, output preview."""
    head = (
        f'<div class="sibyl-steps" style="margin:6px 0;color:{_INK};">'
        '<div style="font-weight:600;margin-bottom:2px;">Steps</div>'
    )
    if not rows:
        return head + f'<div class="sibyl-empty" style="color:{_INK2};">no step has run yet</div></div>'
    cells = f"padding:2px 8px;border-bottom:1px solid {_LINE};text-align:left;vertical-align:top;line-height:1.35;"
    out = [
        head,
        '<div style="max-height:420px;overflow:auto;">',
        f'<table class="sibyl-steps-table" style="border-collapse:collapse;{_FONT}color:{_INK};">',
        "<thead><tr>"
        + "".join(
            f'<th style="{cells}border-bottom:1px solid {_LINE1};white-space:nowrap;">{h}</th>'
            for h in ("#", "node", "technique", "it.", "status", "start ms", "time ms", "attempts", "output")
        )
        + "</tr></thead><tbody>",
    ]
    for i, r in enumerate(rows[:max_rows], 1):
        status = str(r.get("status", "pending"))
        text = (
            r.get("error")
            if status in ("failed", "skipped", "cancelled") and r.get("error")
            else preview(r.get("output"), preview_width)
        )
        if r.get("fallback_for"):
            text = f"(fallback for {r['fallback_for']}) {text}"
        started = r.get("started")
        duration = r.get("duration")
        out.append(
            f'<tr class="sibyl-step-row" data-node="{html.escape(str(r.get("node_id", "")))}" data-status="{html.escape(status)}">'
            f'<td style="{cells}color:{_INK2};">{i}</td>'
            f'<td style="{cells}font-weight:600;">{html.escape(str(r.get("node_id", "")))}</td>'
            f'<td style="{cells}color:{_INK2};">{html.escape(str(r.get("technique", "")))}</td>'
            f'<td style="{cells}">{r.get("iteration") or ""}</td>'
            f'<td style="{cells}">{_badge(status)}</td>'
            f'<td style="{cells}text-align:right;">{"" if started is None else f"{started * 1000:.1f}"}</td>'
            f'<td style="{cells}text-align:right;">{"" if duration is None else f"{duration * 1000:.1f}"}</td>'
            f'<td style="{cells}text-align:right;">{r.get("attempts", "") or ""}</td>'
            f'<td class="sibyl-output" style="{cells}font-family:var(--jp-code-font-family, monospace);max-width:520px;'
            f'white-space:pre-wrap;word-break:break-word;">{html.escape(str(text or ""))}</td></tr>'
        )
    out.append("</tbody></table></div>")
    if len(rows) > max_rows:
        out.append(
            f'<div style="color:{_INK2};">… {len(rows) - max_rows} more rows (see result.trace())</div>'
        )
    out.append("</div>")
    return "".join(out)


def header_html(title: str, summary: str = "", state: str = "") -> str:
    return (
        f'<div class="sibyl-header" data-state="{html.escape(state)}" style="margin-bottom:4px;color:{_INK};">'
        f"<b>{html.escape(title)}</b>"
        f'<span class="sibyl-summary" style="color:{_INK2};margin-left:8px;">{html.escape(summary)}</span></div>'
    )


def run_html(
    *,
    title: str,
    summary: str = "",
    state: str = "",
    graph: Any = None,
    statuses: Mapping[str, str] | None = None,
    geometry: Layout | None = None,
    allocations: Sequence[Mapping[str, Any]] | None = None,
    rows: Sequence[Mapping[str, Any]] | None = None,
    show: Sequence[str] = SHOW_ALL,
    preview_width: int = 120,
    fallback: bool = True,
) -> str:
    """The whole run view: header, then the requested parts in graph/tokens/steps order."""
    parts = [
        f'<div class="sibyl-run sibyl-static" data-state="{html.escape(state)}" style="{_FONT}">',
        header_html(title, summary, state),
    ]
    if "graph" in show:
        parts.append(graph_html(graph, statuses, title=title, geometry=geometry, fallback=fallback))
    if "tokens" in show:
        parts.append(tokens_html(allocations))
    if "steps" in show:
        parts.append(steps_html(rows, preview_width=preview_width))
    parts.append("</div>")
    return "".join(parts)


def result_summary(result: Any) -> str:
    """:func:`summary_line` for a finished :class:`RunResult`."""
    statuses = statuses_from_records(result.records)
    nodes = list(result.graph.nodes) if result.graph is not None else sorted(statuses)
    done = sum(1 for n in nodes if statuses.get(n) not in (None, "pending", "running"))
    return summary_line(
        result.stopped_by, done, len(nodes), len(result.records), result.duration, result.error
    )


# ---------------------------------------------------------------------- whole objects
def result_html(result: Any, show: Sequence[str] = SHOW_ALL, *, preview_width: int = 120) -> str:
    """``RunResult`` as HTML: graph with final statuses, token bars, step table."""
    return run_html(
        title=f"{result.pipeline} · run {result.run_id}",
        summary=result_summary(result),
        state=result.stopped_by,
        graph=result.graph,
        statuses=statuses_from_records(result.records),
        allocations=result.allocations,
        rows=rows_from_records(result.records),
        show=show,
        preview_width=preview_width,
    )


def pipeline_html(pipeline: Any) -> str:
    """A pipeline on its own: its graph (all pending), inputs it needs, load-time warnings."""
    g = pipeline.graph
    summary = f"{len(g.nodes)} nodes · {len(g.edges)} edges"
    if pipeline.required_inputs:
        summary += f" · inputs: {', '.join(pipeline.required_inputs)}"
    parts = [
        f'<div class="sibyl-run sibyl-pipeline sibyl-static" style="{_FONT}">',
        header_html(f"pipeline {pipeline.name}", summary, "pending"),
        graph_html(g, {}, title=pipeline.name),
    ]
    for w in pipeline.warnings:
        parts.append(
            f'<div class="sibyl-warning" style="color:var(--jp-warn-color1, #a15c00);">⚠ {html.escape(w)}</div>'
        )
    parts.append("</div>")
    return "".join(parts)


def pipeline_mimebundle(pipeline: Any) -> dict[str, Any]:
    """A pipeline's display: HTML graph for notebooks, the plain repr elsewhere."""
    return {"text/plain": repr(pipeline), "text/html": pipeline_html(pipeline)}


__all__ += ["STATUSES", "layout"]
