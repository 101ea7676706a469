"""Does the live widget slow a run? A 200-node pipeline with the widget attached vs. without.

Run: ``.venv/bin/python benchmarks/widget.py [--quick]``. Goal: run time with the widget ≤ 1.5 × without.

What is timed: the run itself (``RunResult.duration``: from the engine's start to its result), on the
same helper-thread runner the magic uses, with and without a :class:`LiveRun` observing it and
repainting (graph PNG, token bars, step table) every ``interval`` seconds from the calling thread.
Widget setup (layout + first paint of the pending graph, before the run) and the final paint (after
it) are reported separately: they happen outside the run and do not scale with its length.

Workloads (200 nodes each):

* ``noop_chain``   — 200 sequential no-op nodes: the engine's per-node cost only (a few ms in all).
* ``io_chain``     — 200 sequential nodes awaiting 2 ms each (a stand-in for model / HTTP calls).
* ``io_fanout``    — 20 layers × 10 parallel nodes awaiting 10 ms each.
* ``cpu_chain``    — 200 sequential nodes doing ~1 ms of pure-Python work (the worst case for
  repaints on another thread: both need the GIL).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from typing import Any

__all__ = ["run", "build", "WORKLOADS"]

WORKLOADS = ("noop_chain", "io_chain", "io_fanout", "cpu_chain")
GOAL = 1.5


def _register() -> None:
    import sibyl_nb as sb

    @sb.technique("bench_widget.noop", blocking=False)
    def noop(ctx: Any) -> int:
        return 1

    @sb.technique("bench_widget.io")
    async def io(ctx: Any) -> int:
        await asyncio.sleep(ctx.config.get("delay", 0.002))
        return 1

    @sb.technique("bench_widget.cpu", blocking=False)
    def cpu(ctx: Any) -> int:
        t = time.perf_counter()
        n = 0
        while time.perf_counter() - t < 0.001:
            n += 1
        return n


def build(workload: str) -> Any:
    """The 200-node pipeline for ``workload``."""
    import sibyl_nb as sb

    _register()
    if workload == "io_fanout":
        nodes, edges = [], []
        for layer in range(20):
            for j in range(10):
                nodes.append(
                    {"id": f"n{layer}_{j}", "technique": "bench_widget.io", "config": {"delay": 0.01}}
                )
                if layer:
                    edges.extend(
                        {"from": f"n{layer - 1}_{k}", "to": f"n{layer}_{j}"}
                        for k in range(10)
                        if k == j or k == (j + 1) % 10
                    )
        doc = {
            "pipelines": {
                workload: {
                    "steps": [
                        {
                            "use": "workflow_orchestration.graph",
                            "config": {
                                "subtechnique": "dag",
                                "graph_definition": {"nodes": nodes, "edges": edges},
                            },
                        }
                    ]
                }
            }
        }
        return sb.Pipeline.from_dict(doc, workload)
    technique = {
        "noop_chain": "bench_widget.noop",
        "io_chain": "bench_widget.io",
        "cpu_chain": "bench_widget.cpu",
    }[workload]
    steps = [{"use": technique, "id": f"s{i}"} for i in range(200)]
    return sb.Pipeline.from_dict({"pipelines": {workload: {"steps": steps}}}, workload)


def _plain(pipe: Any) -> float:
    from sibyl_nb.notebook.runner import run_in_thread

    return run_in_thread(pipe.execute({"query": "bench"})).duration


def _with_widget(pipe: Any, interval: float) -> tuple[float, float, float, int]:
    """(run duration, widget setup s, final paint s, paints) for one run with the live widget."""
    from sibyl_nb.notebook.widget import LiveRun

    t0 = time.perf_counter()
    live = LiveRun(pipe, display=False, interval=interval)
    live.start()  # layout + first paint of the pending graph: before the run
    setup = time.perf_counter() - t0
    result = live.follow({"query": "bench"})
    paints = live.paints
    t1 = time.perf_counter()
    live.finish(result)  # the final paint again, timed on its own
    return result.duration, setup, time.perf_counter() - t1, paints


def run(quick: bool = False, interval: float = 0.15) -> list[dict[str, Any]]:
    """One row per workload: median run time with the live widget (``sibyl_nb``) and without it
    (``peer_value``), their ratio, repaints during the run, and the setup / final-paint costs."""
    import matplotlib

    matplotlib.use("Agg")
    repeats = 3 if quick else 7
    rows = []
    for workload in WORKLOADS:
        pipe = build(workload)
        _plain(pipe)  # warm up: imports, technique lookups, first-call costs
        _with_widget(pipe, interval)
        plain, live, setups, finals, paints = [], [], [], [], []
        for _ in range(repeats):  # interleaved so drift affects both sides alike
            plain.append(_plain(pipe))
            d, s, f, p = _with_widget(pipe, interval)
            live.append(d)
            setups.append(s)
            finals.append(f)
            paints.append(p)
        p_ms = statistics.median(plain) * 1000
        l_ms = statistics.median(live) * 1000
        ratio = l_ms / p_ms
        rows.append(
            {
                "benchmark": f"{workload} ({len(pipe.graph.nodes)} nodes): run time with live widget",
                "unit": "ms",
                "sibyl_nb": round(l_ms, 3),
                "peer": "without widget",
                "peer_value": round(p_ms, 3),
                "ratio": round(ratio, 3),
                "goal": f"<= {GOAL}x",
                "goal_met": ratio <= GOAL,
                "live_repaints": int(statistics.median(paints)) - 2,
                "widget_setup_ms": round(statistics.median(setups) * 1000, 1),
                "final_paint_ms": round(statistics.median(finals) * 1000, 1),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    rows = run(quick="--quick" in argv)
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(str(r[c]).ljust(widths[c]) for c in cols))
    print(f"goal: with_widget <= {GOAL} x without (run time; setup and final paint happen outside the run)")
    return 0 if all(r["goal_met"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
