"""``python -m benchmarks [--quick] [--only engine,dask] [--output PATH]``: every suite, one table.

Each suite runs in a fresh interpreter (``--suite NAME --json PATH`` is that child's entry point), so
one suite's registered techniques, threads or clusters never colour another's timings. Rows from the
suites are normalised into one table — sibyl_nb's value, then each peer's value with the ratio
sibyl_nb / peer, the ratio to the fastest peer, the goal and whether it is met — and written with the
machine and package versions to ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from . import HERE, discover

__all__ = [
    "main",
    "run_suite",
    "expand",
    "normalise",
    "format_table",
    "markdown_report",
    "machine_info",
    "package_versions",
    "PACKAGES",
]

PACKAGES = (
    "sibyl_nb",
    "pyyaml",
    "sf-hamilton",
    "burr",
    "pydantic-graph",
    "llama-index-workflows",
    "langgraph",
    "langchain-core",
    "dask",
    "distributed",
)
PEER_ORDER = ("Hamilton", "Burr", "pydantic-graph", "LlamaIndex Workflows", "LangGraph")
STANDARD = ("suite", "benchmark", "unit", "sibyl_nb", "peer", "peer_value", "ratio", "goal", "notes", "peers")
PEER_NAMES = {
    "langgraph": "LangGraph",
    "langchain": "LangChain",
    "langchain_core": "LangChain",
    "llamaindex": "LlamaIndex",
    "llama_index": "LlamaIndex",
}
SUITE_TIMEOUT = 1800


# ---------------------------------------------------------------------- running
def run_suite(name: str, module: str, quick: bool) -> tuple[str, list[dict[str, Any]], float]:
    """(status, rows, seconds) for one suite, run in a child interpreter."""
    if importlib.util.find_spec(module) is None:
        return "not present", [], 0.0
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rows.json"
        cmd = [sys.executable, "-m", "benchmarks", "--suite", module, "--json", str(out)]
        if quick:
            cmd.append("--quick")
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=HERE.parent, capture_output=True, text=True, timeout=SUITE_TIMEOUT)
        except subprocess.TimeoutExpired:
            return f"failed: timed out after {SUITE_TIMEOUT} s", [], time.perf_counter() - t0
        seconds = time.perf_counter() - t0
        if proc.returncode != 0 or not out.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            return f"failed: {tail[0][:200]}", [], seconds
        rows = json.loads(out.read_text(encoding="utf-8"))
    return "ran", rows, seconds


def _child(module: str, out: str, quick: bool) -> None:
    rows = importlib.import_module(module).run(quick)
    Path(out).write_text(json.dumps(rows, default=str), encoding="utf-8")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _context_rows(row: dict[str, Any]) -> list[dict[str, Any]]:
    """``benchmarks/context.py`` reports one wide row per history size; one row per strategy here."""
    n = row.get("messages")
    label = f"{n:,} messages" if isinstance(n, int) else str(n)
    kept = f"kept: window {row.get('window_kept')}, trim_messages {row.get('trim_messages_kept')}"
    common = {
        "unit": "ms",
        "peer": "LangChain trim_messages",
        "peer_value": row.get("trim_messages_ms"),
        "goal": "<= 1 ms per turn",
    }
    return [
        {
            **common,
            "benchmark": f"context window: 1 turn at {label}",
            "sibyl_nb": row.get("window_ms"),
            "notes": f"p95 {_fmt(row.get('window_p95_ms'))} ms; {kept}",
        },
        {
            **common,
            "benchmark": f"context hierarchical: 1 turn at {label}",
            "sibyl_nb": row.get("hierarchical_ms"),
            "notes": f"p95 {_fmt(row.get('hierarchical_p95_ms'))} ms; first call "
            f"{_fmt(row.get('hierarchical_first_ms'))} ms",
        },
    ]


def _widget_rows(row: dict[str, Any]) -> list[dict[str, Any]]:
    """``benchmarks/widget.py`` reports one row per workload, with and without the live widget."""
    return [
        {
            "benchmark": f"widget: {row.get('nodes')}-node {row.get('workload')} run time",
            "unit": "ms",
            "sibyl_nb": row.get("with_widget_ms"),
            "peer": "same run, no widget",
            "peer_value": row.get("without_ms"),
            "ratio": row.get("ratio"),
            "goal": "<= 1.5 x no widget",
            "notes": f"{row.get('live_repaints')} live repaints; setup {_fmt(row.get('widget_setup_ms'))} ms, "
            f"final paint {_fmt(row.get('final_paint_ms'))} ms (outside the run)",
        }
    ]


def _checkpoint_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``benchmarks/checkpoint.py`` reports one row per (system, backend); pair each sibyl_nb backend
    with LangGraph's checkpointer on the per-step overhead."""
    peer = next((r for r in rows if r.get("system") == "langgraph" and r.get("backend") != "none"), None)
    out = []
    for r in rows:
        if r.get("system") != "sibyl_nb" or r.get("backend") == "none":
            continue
        out.append(
            {
                "benchmark": f"checkpoint every step, {r.get('steps')}-step chain: {r.get('backend')}",
                "unit": "us",
                "sibyl_nb": r.get("overhead_us_per_step"),
                "peer": f"LangGraph {peer.get('backend')}" if peer else "LangGraph",
                "peer_value": peer.get("overhead_us_per_step") if peer else None,
                "ratio": r.get("vs_langgraph"),
                "goal": "<= 200 us per step",
                "notes": "overhead per step = (run with checkpoints - run without) / steps",
            }
        )
    return out


ROW_ADAPTERS = {"context": _context_rows, "widget": _widget_rows}  # one wide row -> table rows
SUITE_ADAPTERS = {"checkpoint": _checkpoint_rows}  # all rows of a suite -> table rows
UNIT_SUFFIXES = {"_ms": "ms", "_us": "us", "_s": "s"}


def _wide_rows(row: dict[str, Any]) -> list[dict[str, Any]]:
    """Any other wide row: one table row per timing column (``*_ms``/``*_us``/``*_s``), no peer."""
    label = ", ".join(
        f"{k}={v}"
        for k, v in row.items()
        if not any(k.endswith(x) for x in UNIT_SUFFIXES)
        and isinstance(v, (int, str))
        and not isinstance(v, bool)
    )
    out = []
    for key, value in row.items():
        for suffix, unit in UNIT_SUFFIXES.items():
            if key.endswith(suffix) and (value is None or _number(value)):
                out.append(
                    {
                        "benchmark": f"{key[: -len(suffix)]} ({label})",
                        "unit": unit,
                        "sibyl_nb": value,
                        "peer": "",
                        "notes": "",
                    }
                )
                break
    return out


def expand(suite: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A suite's rows -> rows in the common shape (most suites already are)."""
    if all("benchmark" in r or "name" in r for r in rows):
        return rows
    if suite in SUITE_ADAPTERS:
        return SUITE_ADAPTERS[suite](rows)
    adapter = ROW_ADAPTERS.get(suite, _wide_rows)
    return [x for r in rows for x in ([r] if "benchmark" in r or "name" in r else adapter(r))]


def normalise(suite: str, row: dict[str, Any]) -> dict[str, Any]:
    """One suite's row in the common columns: ``peers`` (name -> value), the ratio to the fastest
    peer, and whether the goal is met. A single ``peer``/``peer_value`` (or a peer given as its own
    numeric column, ``"langgraph": 1.2``) becomes a one-entry ``peers``; unknown columns go to notes."""
    out: dict[str, Any] = {
        "suite": suite,
        "benchmark": row.get("benchmark") or row.get("name") or "?",
        "unit": row.get("unit", ""),
        "sibyl_nb": row.get("sibyl_nb"),
        "goal": row.get("goal") or "",
    }
    peers: dict[str, Any] = dict(row.get("peers") or {})
    extras = {k: v for k, v in row.items() if k not in STANDARD and k != "name"}
    peer = row.get("peer")
    value = row.get("peer_value")
    if peer is None and not peers:
        for key in list(extras):
            if extras[key] is None or _number(extras[key]):
                peer, value = key, extras.pop(key)
                break
    if peer:
        peers[PEER_NAMES.get(str(peer), str(peer))] = value
    out["peers"] = peers
    ours = out["sibyl_nb"]
    out["ratios"] = {k: (ours / v if _number(ours) and _number(v) and v else None) for k, v in peers.items()}
    if row.get("ratio") is not None and len(peers) == 1:
        out["ratios"] = {k: row["ratio"] for k in peers}
    known = [(v, k) for k, v in peers.items() if _number(v) and v > 0 and _is_peer(k)]
    fastest = min(known) if known else None
    out["fastest"] = fastest[1] if fastest else None
    out["vs_fastest"] = ours / fastest[0] if fastest and _number(ours) else None
    out["met"] = goal_met(out)
    notes = [str(row["notes"])] if row.get("notes") else []
    notes += [f"{k}={v}" for k, v in extras.items() if k != "notes"]
    out["notes"] = "; ".join(notes)
    return out


def _is_peer(name: str) -> bool:
    """A competing engine (not a baseline such as "same run, no widget" or "local executor")."""
    return name in PEER_ORDER or name in PEER_NAMES.values()


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}
_ABSOLUTE = re.compile(r"<=\s*([\d.]+)\s*(us|ms|s)\b")
_RELATIVE = re.compile(r"<=\s*([\d.]+)\s*x\s+fastest peer")


def goal_met(row: dict[str, Any]) -> bool | None:
    """Check the goal's first clause: ``<= 15 us`` (against the row's own unit) or ``<= 0.5 x fastest
    peer``; ``None`` when the goal says something else or a number is missing."""
    goal, ours = row.get("goal") or "", row.get("sibyl_nb")
    if not _number(ours):
        return None
    first = goal.split(";")[0]
    m = _RELATIVE.search(first)
    if m:
        return None if row.get("vs_fastest") is None else row["vs_fastest"] <= float(m.group(1))
    m = _ABSOLUTE.search(first)
    if m and row.get("unit") in _UNITS:
        return ours * _UNITS[row["unit"]] <= float(m.group(1)) * _UNITS[m.group(2)]
    return None


# ---------------------------------------------------------------------- reporting
def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if not _number(value):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    a = abs(value)
    if a == 0:
        return "0"
    if a >= 100:
        return f"{value:,.0f}"
    if a >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def peer_columns(rows: list[dict[str, Any]]) -> list[str]:
    """Every peer that appears: the engines first, in their usual order, then the baselines."""
    seen: list[str] = []
    for r in rows:
        seen += [k for k in r["peers"] if k not in seen]
    return [p for p in PEER_ORDER if p in seen] + [p for p in seen if p not in PEER_ORDER]


def _peer_cell(row: dict[str, Any], peer: str) -> str:
    if peer not in row["peers"]:
        return ""
    value, ratio = row["peers"][peer], row["ratios"].get(peer)
    if value is None:
        return "n/a"
    return f"{_fmt(value)} ({_fmt(ratio)}x)" if ratio is not None else _fmt(value)


def _cells(row: dict[str, Any], peers: list[str]) -> list[str]:
    vs = f"{_fmt(row['vs_fastest'])}x {row['fastest']}" if row["vs_fastest"] is not None else "-"
    met = {True: "yes", False: "NO", None: ""}[row["met"]]
    return [
        row["suite"],
        row["benchmark"],
        row["unit"],
        _fmt(row["sibyl_nb"]),
        *[_peer_cell(row, p) for p in peers],
        vs,
        row["goal"],
        met,
    ]


def _head(peers: list[str]) -> list[str]:
    return ["suite", "benchmark", "unit", "sibyl_nb", *peers, "vs fastest peer", "goal", "met"]


def format_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table for the terminal (notes are in RESULTS.md)."""
    peers = peer_columns(rows)
    head = _head(peers)
    table = [head] + [_cells(r, peers) for r in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    numeric = range(3, 5 + len(peers))
    lines = []
    for n, r in enumerate(table):
        cells = [
            c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        lines.append("  ".join(cells))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def machine_info() -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        ram = f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.1f} GiB"
    except (ValueError, OSError, AttributeError):
        ram = "unknown"
    try:
        load = (
            ", ".join(f"{x:.1f}" for x in os.getloadavg())
            + " (1, 5, 15 min; above the CPU count, timings inflate)"
        )
    except OSError:
        load = "unknown"
    return {
        "CPU": f"{cpu} ({os.cpu_count()} logical CPUs)",
        "Load average when written": load,
        "RAM": ram,
        "Python": f"{platform.python_version()} ({platform.python_implementation()})",
        "Platform": platform.platform(),
    }


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    try:
        import yaml

        out["pyyaml"] += " (libyaml: yes)" if getattr(yaml, "__with_libyaml__", False) else " (libyaml: NO)"
    except ImportError:
        pass
    return out


def _md(cell: str) -> str:
    return cell.replace("|", "\\|")


def _raw_table(raw: list[dict[str, Any]]) -> list[str]:
    keys: list[str] = []
    for r in raw:
        keys += [k for k in r if k not in keys]
    lines = ["| " + " | ".join(keys) + " |", "|" + "|".join("---" for _ in keys) + "|"]
    lines += ["| " + " | ".join(_md(_fmt(r.get(k))) for k in keys) + " |" for r in raw]
    return lines


def markdown_report(
    rows: list[dict[str, Any]],
    statuses: list[tuple[str, str, float]],
    quick: bool,
    raw: dict[str, list[dict[str, Any]]] | None = None,
) -> str:
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Benchmark results",
        "",
        f"Generated by `python -m benchmarks{' --quick' if quick else ''}` on {when}. Regenerate; "
        "do not edit by hand. Each peer cell is the peer's value (sibyl_nb / peer): below 1x means "
        "sibyl_nb is faster. n/a: the peer has no idiomatic form of that workload (see notes). "
        "met: the goal's first clause, checked.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
    ]
    lines += [f"| {k} | {_md(v)} |" for k, v in machine_info().items()]
    lines += ["", "## Versions", "", "| package | version |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in package_versions().items()]
    peers = peer_columns(rows)
    head = _head(peers) + ["notes"]
    align = ["---", "---", "---", "--:", *["--:"] * len(peers), "--:", "---", "---", "---"]
    lines += ["", "## Results", "", "| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(_md(c) for c in _cells(r, peers) + [r["notes"]]) + " |" for r in rows]
    lines += ["", "## Suites", ""]
    lines += [
        f"- **{name}**: {status}" + (f" ({seconds:.1f} s)" if seconds else "")
        for name, status, seconds in statuses
    ]
    for suite, suite_rows in (raw or {}).items():
        lines += ["", f"## {suite}: the suite's own columns", ""] + _raw_table(suite_rows)
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------- entry point
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (CI smoke run)")
    suites = discover()
    parser.add_argument(
        "--only", default="", help="comma-separated suites: " + ", ".join(n for n, _ in suites)
    )
    parser.add_argument("--output", default=str(HERE / "RESULTS.md"), help="where to write the report")
    parser.add_argument("--suite", help=argparse.SUPPRESS)  # child mode: run one module
    parser.add_argument("--json", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.suite:
        _child(args.suite, args.json, args.quick)
        return 0
    wanted = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = wanted - {n for n, _ in suites}
    if unknown:
        parser.error(f"unknown suite(s): {', '.join(sorted(unknown))}")
    rows: list[dict[str, Any]] = []
    statuses: list[tuple[str, str, float]] = []
    raw: dict[str, list[dict[str, Any]]] = {}
    for name, module in suites:
        if wanted and name not in wanted:
            continue
        print(f"[{name}] running...", file=sys.stderr, flush=True)
        status, suite_rows, seconds = run_suite(name, module, args.quick)
        print(f"[{name}] {status}" + (f" in {seconds:.1f} s" if seconds else ""), file=sys.stderr, flush=True)
        statuses.append((name, status, seconds))
        if any("benchmark" not in r and "name" not in r for r in suite_rows):
            raw[name] = suite_rows  # a different shape: keep its own columns in the report too
        rows += [normalise(name, r) for r in expand(name, suite_rows)]
    print(format_table(rows))
    for name, status, _ in statuses:
        if status != "ran":
            print(f"{name}: {status}")
    Path(args.output).write_text(markdown_report(rows, statuses, args.quick, raw), encoding="utf-8")
    print(f"wrote {args.output}")
    return 1 if any(s.startswith("failed") for _, s, _ in statuses) else 0


if __name__ == "__main__":
    sys.exit(main())
