"""Per-step cost of checkpointing every step: sibyl_nb on diskcache and SQLite vs LangGraph's
SqliteSaver with ``durability="sync"``, same chain, same process; prints a table with ratios.

    python benchmarks/checkpoint.py [--quick] [--steps N]

Workload: a chain of N small nodes (each returns a one-field dict). Overhead per step = (run time
with checkpoints - run time without) / N, each side against its own framework's baseline; the median
of several runs, fresh workflow / thread ids every run. Goal (issue 5): <= 200 µs per step.
"""

from __future__ import annotations

import os
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypedDict

__all__ = ["run", "main", "GOAL_US"]

GOAL_US = 200.0


def _sibyl_chain(n: int, checkpointing: dict[str, Any] | None) -> Any:
    import sibyl_nb as sb

    @sb.technique("bench.ck_step", blocking=False)
    def step(ctx: Any) -> dict[str, Any]:
        return {"i": ctx.node_id}

    pipe = sb.Pipeline.from_dict({"steps": [{"use": "bench.ck_step", "id": f"n{i}"} for i in range(n)]})
    if checkpointing is not None:
        pipe.configure(checkpointing={"enabled": True, "frequency": 1, **checkpointing})
    return pipe


def _lg_chain(n: int, checkpointer: Any = None) -> Any:
    from langgraph.graph import END, START, StateGraph

    class S(TypedDict, total=False):
        x: int

    g = StateGraph(S)
    for i in range(n):
        g.add_node(f"n{i}", lambda s, i=i: {"x": i})
    g.add_edge(START, "n0")
    for i in range(n - 1):
        g.add_edge(f"n{i}", f"n{i + 1}")
    g.add_edge(f"n{n - 1}", END)
    return g.compile(checkpointer=checkpointer)


def _median_time(fn: Callable[[], Any], reps: int) -> float:
    fn()  # warm-up (imports, connections, table creation)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run(quick: bool = False, steps: int | None = None) -> list[dict[str, Any]]:
    """Rows: system, backend, steps, run_ms, overhead_us_per_step, vs_langgraph, goal_met."""
    n = steps or (100 if quick else 300)
    reps = 5 if quick else 9
    home = tempfile.mkdtemp(prefix="sibyl-bench-")
    os.environ["SIBYL_HOME"] = home
    rows: list[dict[str, Any]] = []

    base = _sibyl_chain(n, None)
    t_base = _median_time(lambda: base.run({}), reps)
    rows.append(
        {
            "system": "sibyl_nb",
            "backend": "none",
            "steps": n,
            "run_ms": t_base * 1e3,
            "overhead_us_per_step": 0.0,
        }
    )
    for backend, cfg in (
        ("diskcache", {"storage": "diskcache", "path": str(Path(home) / "ck")}),
        ("sqlite", {"storage": "database", "database_url": f"sqlite:///{home}/ck.db"}),
    ):
        pipe = _sibyl_chain(n, cfg)
        t = _median_time(lambda p=pipe: p.run({}, workflow_id=uuid.uuid4().hex), reps)
        rows.append(
            {
                "system": "sibyl_nb",
                "backend": backend,
                "steps": n,
                "run_ms": t * 1e3,
                "overhead_us_per_step": (t - t_base) / n * 1e6,
            }
        )

    try:
        from langgraph.checkpoint.sqlite import SqliteSaver
    except ImportError:  # pragma: no cover - the bench extra is not installed
        print("langgraph-checkpoint-sqlite not installed: no LangGraph rows", file=sys.stderr)
        SqliteSaver = None
    lg_over = None
    if SqliteSaver is not None:
        limit = {"recursion_limit": n + 10}
        plain = _lg_chain(n)
        t_lg = _median_time(lambda: plain.invoke({}, limit), reps)
        rows.append(
            {
                "system": "langgraph",
                "backend": "none",
                "steps": n,
                "run_ms": t_lg * 1e3,
                "overhead_us_per_step": 0.0,
            }
        )
        conn = sqlite3.connect(os.path.join(home, "lg.db"), check_same_thread=False)
        saver = SqliteSaver(conn)
        graph = _lg_chain(n, saver)

        def lg_run() -> Any:
            cfg = {"configurable": {"thread_id": uuid.uuid4().hex}, **limit}
            return graph.invoke({}, cfg, durability="sync")

        t = _median_time(lg_run, reps)
        lg_over = (t - t_lg) / n * 1e6
        rows.append(
            {
                "system": "langgraph",
                "backend": "SqliteSaver sync",
                "steps": n,
                "run_ms": t * 1e3,
                "overhead_us_per_step": lg_over,
            }
        )
        conn.close()
    for r in rows:
        over = r["overhead_us_per_step"]
        r["vs_langgraph"] = (over / lg_over) if (lg_over and r["backend"] != "none") else None
        r["goal_met"] = (over <= GOAL_US) if r["system"] == "sibyl_nb" and r["backend"] != "none" else None
    return rows


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--steps", type=int)
    args = p.parse_args(argv)
    rows = run(quick=args.quick, steps=args.steps)
    print(
        f"{'system':<10} {'backend':<17} {'steps':>5} {'run ms':>9} {'µs/step overhead':>17} "
        f"{'× LangGraph':>11}  goal ≤{GOAL_US:.0f} µs"
    )
    for r in rows:
        ratio = f"{r['vs_langgraph']:.2f}" if r["vs_langgraph"] is not None else "-"
        goal = {True: "yes", False: "NO", None: ""}[r["goal_met"]]
        print(
            f"{r['system']:<10} {r['backend']:<17} {r['steps']:>5} {r['run_ms']:>9.2f} "
            f"{r['overhead_us_per_step']:>17.1f} {ratio:>11}  {goal}"
        )


if __name__ == "__main__":
    main()
