"""``sb.diff_runs(a, b)``: node by node, which config, inputs and outputs differ between two runs.

A run is a :class:`~sibyl_nb.engine.result.RunResult` (from ``pipe.run`` or ``df.sibyl.result(i)``)
or a row of a sweep's frame. The answer is a DataFrame (one row per node, both runs' values side by
side) that shows itself in a notebook as a table with the differences highlighted.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

import pandas as pd

from ..errors import ConfigError
from .grid import canonical

__all__ = ["diff_runs", "RunDiff", "run_view"]

COLUMNS = ["technique", "changed", "config_a", "config_b", "input_a", "input_b", "output_a", "output_b",
           "status_a", "status_b"]  # fmt: skip


def _preview(value: Any, width: int = 120) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else canonical(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def run_view(run: Any) -> dict[str, Any]:
    """``{"input", "nodes": {id: {technique, config, after, status, output}}}`` for any run form."""
    from ..engine.result import RunResult

    if isinstance(run, pd.Series):
        from .rows import result_of_row

        run = result_of_row(run)
    if not isinstance(run, RunResult):
        raise ConfigError(f"diff_runs: expected a RunResult or a sweep row, got {type(run).__name__}")
    table = getattr(run, "_sibyl_nodes", None)
    if table is None:
        if run.graph is None:
            raise ConfigError("diff_runs: this RunResult carries no graph (node configs are unknown)")
        from .grid import graph_node_table

        table = graph_node_table(run.graph)
    nodes: dict[str, dict[str, Any]] = {}
    for nid, info in table.items():
        rec = run.record(nid)
        nodes[nid] = {
            **info,
            "status": rec.status if rec is not None else "not run",
            "output": run.outputs.get(nid) if rec is not None and rec.status in ("ran", "cached") else None,
        }
    return {"input": run.input, "nodes": nodes, "run_id": run.run_id}


def _config_change(a: Any, b: Any) -> str:
    if a == b:
        return ""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        keys = sorted(set(a) | set(b), key=str)
        parts = [
            f"{k}: {_preview(a.get(k), 40)} → {_preview(b.get(k), 40)}" for k in keys if a.get(k) != b.get(k)
        ]
        return "; ".join(parts)
    return f"{_preview(a, 40)} → {_preview(b, 40)}"


def _outcome(status: str) -> str:
    """A step served from the cache gave the same kind of result as one that ran: not a difference."""
    return "ok" if status in ("ran", "cached") else status


def _inputs_of(view: dict[str, Any], nid: str) -> Any:
    after = view["nodes"][nid]["after"]
    if not after:
        return view["input"]
    return {p: view["nodes"][p]["output"] for p in after if p in view["nodes"]}


class RunDiff(pd.DataFrame):
    """The diff as a DataFrame (index: node id); in a notebook, an HTML table with changes marked."""

    _metadata = ["run_a", "run_b"]

    @property
    def _constructor(self) -> type[RunDiff]:
        return RunDiff

    @property
    def changed_nodes(self) -> list[str]:
        return [str(n) for n, c in zip(self.index, self["changed"], strict=True) if c]

    def nodes_where(self, what: str) -> list[str]:
        """Nodes whose ``config``, ``input``, ``output`` or ``status`` differ."""
        return [str(n) for n, c in zip(self.index, self["changed"], strict=True) if what in c.split(", ")]

    def _repr_html_(self) -> str:
        head = "".join(
            f"<th>{h}</th>" for h in ("node", "technique", "changed", "config", "input", "output", "status")
        )
        rows = []
        for nid, r in self.iterrows():
            changed = set(r["changed"].split(", ")) if r["changed"] else set()

            def pair(col: str, what: str, r: Any = r, changed: set[str] = changed) -> str:
                a, b = html.escape(str(r[f"{col}_a"])), html.escape(str(r[f"{col}_b"]))
                if what in changed:
                    return (f"<td style='background:#fff3cd'><div style='color:#842029'>− {a}</div>"
                            f"<div style='color:#0f5132'>+ {b}</div></td>")  # fmt: skip
                return f"<td style='color:#666'>{a}</td>"

            rows.append(
                f"<tr><td><b>{html.escape(str(nid))}</b></td><td>{html.escape(r['technique'])}</td>"
                f"<td>{html.escape(r['changed'] or '—')}</td>{pair('config', 'config')}{pair('input', 'input')}"
                f"{pair('output', 'output')}{pair('status', 'status')}</tr>"
            )
        n = len(self.changed_nodes)
        title = f"runs {html.escape(str(self.run_a))} → {html.escape(str(self.run_b))}: {n} node(s) differ"
        return (
            f"<div class='sibyl-diff'><div style='font-weight:bold;margin:4px 0'>{title}</div>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
        )


def diff_runs(a: Any, b: Any) -> RunDiff:
    """One row per node (in ``a``'s order, then nodes only ``b`` has): config, inputs, output and
    status of both runs, and ``changed`` naming what differs (``config``, ``input``, ``output``,
    ``status``). ``.changed_nodes`` lists the nodes that differ at all."""
    va, vb = run_view(a), run_view(b)
    order = list(va["nodes"]) + [n for n in vb["nodes"] if n not in va["nodes"]]
    empty: dict[str, Any] = {"technique": "", "config": None, "after": [], "status": "absent", "output": None}
    rows = []
    for nid in order:
        na, nb = va["nodes"].get(nid, empty), vb["nodes"].get(nid, empty)
        ia = _inputs_of(va, nid) if nid in va["nodes"] else None
        ib = _inputs_of(vb, nid) if nid in vb["nodes"] else None
        changed = [
            what
            for what, x, y in (
                ("config", na["config"], nb["config"]),
                ("input", ia, ib),
                ("output", na["output"], nb["output"]),
                ("status", _outcome(na["status"]), _outcome(nb["status"])),
            )
            if canonical(x) != canonical(y)
        ]
        rows.append(
            {
                "node": nid,
                "technique": na["technique"] or nb["technique"],
                "changed": ", ".join(changed),
                "config_a": _preview(na["config"]),
                "config_b": _preview(nb["config"]),
                "config_change": _config_change(na["config"], nb["config"]),
                "input_a": _preview(ia),
                "input_b": _preview(ib),
                "output_a": _preview(na["output"]),
                "output_b": _preview(nb["output"]),
                "status_a": na["status"],
                "status_b": nb["status"],
            }
        )
    out = RunDiff(rows).set_index("node")
    out.run_a, out.run_b = va["run_id"], vb["run_id"]
    return out
