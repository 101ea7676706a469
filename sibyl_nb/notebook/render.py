"""Static HTML for runs and pipelines: graph (inline PNG), token allocation bars, step table.

Why static HTML at all: a saved notebook opened on GitHub, in nbviewer or in VS Code without a widget
manager shows no ipywidget. Every view the live widget shows is therefore also rendered here, with
inline styles only (no ``<style>`` blocks, no scripts), and the live widget reuses these same
builders for its token and step panes so the two never drift apart.

The CSS classes (``sibyl-run``, ``sibyl-graph``, ``sibyl-tokens``, ``sibyl-token-bar``, ``sibyl-steps``)
are a stable hook for tests and user styling.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .graphview import STATUS_COLORS, graph_png, statuses_from_records

__all__ = [
    "TOKEN_CATEGORIES",
    "TOKEN_COLORS",
    "SHOW_ALL",
    "parse_show",
    "preview",
    "rows_from_records",
    "graph_html",
    "tokens_html",
    "steps_html",
    "run_html",
    "result_html",
    "pipeline_html",
    "pipeline_mimebundle",
]

TOKEN_CATEGORIES = ("system", "summary", "compressed", "recent", "current", "reserved", "free")
TOKEN_COLORS = {
    "system": "#6a3d9a",
    "summary": "#1f78b4",
    "compressed": "#a6cee3",
    "recent": "#33a02c",
    "current": "#ff7f00",
    "reserved": "#e31a1c",
    "free": "#e8e8e8",
}
SHOW_ALL = ("graph", "tokens", "steps")
_FONT = "font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; font-size: 12px;"
_VIEW_STATUS = {"ran": "done"}


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
    return text if len(text) <= width else text[: width - 1] + "…"


def rows_from_records(records: Sequence[Any] | None) -> list[dict[str, Any]]:
    """Step-table rows (plain dicts) from :class:`StepRecord` objects."""
    rows = []
    for r in records or ():
        rows.append(
            {
                "node_id": r.node_id,
                "technique": r.technique,
                "iteration": r.iteration,
                "status": _VIEW_STATUS.get(r.status, r.status),
                "started": r.started,
                "duration": r.duration,
                "attempts": r.attempts,
                "output": r.output,
                "error": r.error or r.reason,
                "fallback_for": r.fallback_for,
            }
        )
    return rows


# ---------------------------------------------------------------------- pieces
def graph_html(png: bytes | None, alt: str = "pipeline graph") -> str:
    if not png:
        return ""
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<div class="sibyl-graph"><img alt="{html.escape(alt)}" style="max-width:100%;height:auto;" '
        f'src="data:image/png;base64,{data}"/></div>'
    )


def _legend() -> str:
    items = "".join(
        f'<span style="display:inline-flex;align-items:center;margin-right:10px;">'
        f'<span style="display:inline-block;width:10px;height:10px;background:{TOKEN_COLORS[c]};'
        f'border:1px solid #999;margin-right:3px;"></span>{c}</span>'
        for c in TOKEN_CATEGORIES
    )
    return f'<div class="sibyl-token-legend" style="margin:2px 0 6px 0;color:#444;">{items}</div>'


def tokens_html(allocations: Sequence[Mapping[str, Any]] | None) -> str:
    """One stacked horizontal bar per context step, segments proportional to ``max_tokens``."""
    head = (
        '<div class="sibyl-tokens" style="margin:6px 0;">'
        '<div style="font-weight:600;margin-bottom:2px;">Token allocation</div>'
    )
    if not allocations:
        return head + '<div class="sibyl-empty" style="color:#888;">no context step in this run</div></div>'
    bars = []
    for a in allocations:
        alloc = a.get("allocation") or {}
        total = a.get("max_tokens") or sum(int(alloc.get(c, 0) or 0) for c in TOKEN_CATEGORIES) or 1
        segs = []
        for c in TOKEN_CATEGORIES:
            v = int(alloc.get(c, 0) or 0)
            if v <= 0:
                continue
            pct = 100.0 * v / total
            segs.append(
                f'<div class="sibyl-token-seg sibyl-token-{c}" title="{c}: {v} tokens" '
                f'style="width:{pct:.3f}%;background:{TOKEN_COLORS[c]};height:100%;'
                f"overflow:hidden;white-space:nowrap;color:{'#333' if c in ('free', 'compressed') else '#fff'};"
                f'font-size:10px;line-height:18px;text-align:center;">{v if pct >= 7 else ""}</div>'
            )
        label = a.get("node_id") or "context"
        if (a.get("iteration") or 1) > 1:
            label += f" #{a['iteration']}"
        strategy = a.get("strategy")
        used = total - int(alloc.get("free", 0) or 0)
        meta = f"{html.escape(str(strategy))} · " if strategy else ""
        bars.append(
            f'<div class="sibyl-token-row" style="display:flex;align-items:center;margin:2px 0;">'
            f'<div style="width:170px;flex:none;overflow:hidden;text-overflow:ellipsis;white-space:nowrap;" '
            f'title="{html.escape(label)}">{html.escape(label)}</div>'
            f'<div class="sibyl-token-bar" style="display:flex;flex:1;height:18px;border:1px solid #bbb;'
            f'background:#fafafa;">{"".join(segs)}</div>'
            f'<div style="width:190px;flex:none;padding-left:8px;color:#555;">{meta}{used}/{total} tokens</div>'
            f"</div>"
        )
    return head + _legend() + "".join(bars) + "</div>"


def _badge(status: str) -> str:
    color = STATUS_COLORS.get(status, "#bbbbbb")
    fg = "#333" if status in ("pending", "skipped", "running") else "#fff"
    return (
        f'<span class="sibyl-status sibyl-status-{html.escape(status)}" style="background:{color};color:{fg};'
        f'padding:0 6px;border-radius:8px;border:1px solid #bbb;">{html.escape(status)}</span>'
    )


def steps_html(
    rows: Sequence[Mapping[str, Any]] | None, *, max_rows: int = 500, preview_width: int = 120
) -> str:
    """A table: node, technique, iteration, status, start, duration, attempts, output preview."""
    head = (
        '<div class="sibyl-steps" style="margin:6px 0;">'
        '<div style="font-weight:600;margin-bottom:2px;">Steps</div>'
    )
    if not rows:
        return head + '<div class="sibyl-empty" style="color:#888;">no step has run yet</div></div>'
    cells = (
        "padding:2px 8px;border-bottom:1px solid #eee;text-align:left;vertical-align:top;line-height:1.35;"
    )
    out = [
        head,
        '<div style="max-height:420px;overflow:auto;">',
        f'<table class="sibyl-steps-table" style="border-collapse:collapse;{_FONT}">',
        "<thead><tr>"
        + "".join(
            f'<th style="{cells}border-bottom:1px solid #999;white-space:nowrap;">{h}</th>'
            for h in ("#", "node", "technique", "it.", "status", "start ms", "time ms", "attempts", "output")
        )
        + "</tr></thead><tbody>",
    ]
    shown = rows[:max_rows]
    for i, r in enumerate(shown, 1):
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
            f'<tr class="sibyl-step-row">'
            f'<td style="{cells}color:#888;">{i}</td>'
            f'<td style="{cells}font-weight:600;">{html.escape(str(r.get("node_id", "")))}</td>'
            f'<td style="{cells}color:#555;">{html.escape(str(r.get("technique", "")))}</td>'
            f'<td style="{cells}">{r.get("iteration", 1)}</td>'
            f'<td style="{cells}">{_badge(status)}</td>'
            f'<td style="{cells}text-align:right;">{"" if started is None else f"{started * 1000:.1f}"}</td>'
            f'<td style="{cells}text-align:right;">{"" if duration is None else f"{duration * 1000:.1f}"}</td>'
            f'<td style="{cells}text-align:right;">{r.get("attempts", "") or ""}</td>'
            f'<td style="{cells}font-family:monospace;max-width:520px;white-space:pre-wrap;word-break:break-word;">'
            f"{html.escape(str(text or ''))}</td></tr>"
        )
    out.append("</tbody></table></div>")
    if len(rows) > max_rows:
        out.append(f'<div style="color:#888;">… {len(rows) - max_rows} more rows (see result.trace())</div>')
    out.append("</div>")
    return "".join(out)


def header_html(title: str, summary: str = "") -> str:
    return (
        f'<div class="sibyl-header" style="margin-bottom:4px;"><b>{html.escape(title)}</b>'
        f'<span class="sibyl-summary" style="color:#555;margin-left:8px;">{html.escape(summary)}</span></div>'
    )


def run_html(
    *,
    title: str,
    summary: str = "",
    png: bytes | None = None,
    allocations: Sequence[Mapping[str, Any]] | None = None,
    rows: Sequence[Mapping[str, Any]] | None = None,
    show: Sequence[str] = SHOW_ALL,
) -> str:
    """The whole static run view: header, then the requested parts in graph/tokens/steps order."""
    parts = [f'<div class="sibyl-run sibyl-static" style="{_FONT}">', header_html(title, summary)]
    if "graph" in show:
        parts.append(graph_html(png, f"graph of {title}"))
    if "tokens" in show:
        parts.append(tokens_html(allocations))
    if "steps" in show:
        parts.append(steps_html(rows))
    parts.append("</div>")
    return "".join(parts)


def result_summary(result: Any) -> str:
    """``completed · 6 steps · 12.3 ms`` (plus the error line when the run failed)."""
    text = f"{result.stopped_by} · {len(result.records)} steps · {result.duration * 1000:.1f} ms"
    if result.error:
        text += f" · {result.error}"
    return text


# ---------------------------------------------------------------------- whole objects
def result_html(result: Any, show: Sequence[str] = SHOW_ALL) -> str:
    """``RunResult._repr_html_``: graph with final statuses, token bars, step table."""
    png = None
    if "graph" in show and result.graph is not None and len(result.graph.nodes):
        png = graph_png(result.graph, statuses_from_records(result.records))
    return run_html(
        title=f"{result.pipeline} · run {result.run_id}",
        summary=result_summary(result),
        png=png,
        allocations=result.allocations,
        rows=rows_from_records(result.records),
        show=show,
    )


def pipeline_html(pipeline: Any) -> str:
    """A pipeline on its own: its graph (all pending), inputs it needs, load-time warnings."""
    g = pipeline.graph
    png = graph_png(g) if len(g.nodes) else None
    summary = f"{len(g.nodes)} nodes · {len(g.edges)} edges"
    if pipeline.required_inputs:
        summary += f" · inputs: {', '.join(pipeline.required_inputs)}"
    parts = [
        f'<div class="sibyl-run sibyl-pipeline sibyl-static" style="{_FONT}">',
        header_html(f"pipeline {pipeline.name}", summary),
        graph_html(png, f"graph of {pipeline.name}"),
    ]
    for w in pipeline.warnings:
        parts.append(f'<div class="sibyl-warning" style="color:#a15c00;">⚠ {html.escape(w)}</div>')
    parts.append("</div>")
    return "".join(parts)


def pipeline_mimebundle(pipeline: Any) -> dict[str, Any]:
    """``Pipeline._repr_mimebundle_``: HTML graph for notebooks, the plain repr elsewhere."""
    return {"text/plain": repr(pipeline), "text/html": pipeline_html(pipeline)}
