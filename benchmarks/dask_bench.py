"""The Dask executor's cost: a 200-node fan-out of 50 ms tasks on a 2-worker ``LocalCluster``.

    python -m benchmarks.dask_bench [--quick]

Compared with the local executor (same pipeline, same blocking technique, which the local executor
sends to its thread pool) and with raw Dask (``client.map(time.sleep, ...)``, no sibyl_nb). The
cluster gets as many task slots as the local thread pool (2 workers x ceil(slots / 2) threads), so
both have the same ideal wall time, ``ceil(200 / slots) x 50 ms``; "overhead per task" is
``(wall - ideal) / 200``: what each task adds beyond its own 50 ms on a saturated pool.
"""

from __future__ import annotations

import logging
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import sibyl_nb as sb

__all__ = ["run", "main", "TASKS", "TASK_SECONDS"]

TASKS = 200
TASK_SECONDS = 0.05


@sb.technique("bench_dask.work")
def work(ctx: Any) -> dict[str, Any]:
    """50 ms of blocking work (a model call, a parser): what one node of the fan-out costs."""
    time.sleep(TASK_SECONDS)
    return {"i": ctx.config["i"]}


@sb.technique("bench_dask.join", blocking=False)
def join(ctx: Any) -> dict[str, Any]:
    return {"count": len(ctx.upstream)}


@sb.technique("bench_dask.src", blocking=False)
def src(ctx: Any) -> dict[str, Any]:
    return {}


def fanout(width: int) -> sb.Pipeline:
    nodes = [{"id": "src", "technique": "bench_dask.src"}, {"id": "join", "technique": "bench_dask.join"}]
    edges = []
    for i in range(width):
        nodes.append({"id": f"w{i}", "technique": "bench_dask.work", "config": {"i": i}})
        edges += [{"from": "src", "to": f"w{i}"}, {"from": f"w{i}", "to": "join"}]
    return sb.Pipeline.from_dict(
        {
            "steps": [
                {
                    "use": "workflow_orchestration.graph",
                    "config": {"subtechnique": "dag", "graph_definition": {"nodes": nodes, "edges": edges}},
                }
            ]
        }
    )


def _median_wall(fn: Callable[[], Any], repeat: int) -> float:
    fn()  # warm-up: imports on the workers, shipping the technique, thread pools
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _ideal(slots: int) -> float:
    return math.ceil(TASKS / slots) * TASK_SECONDS


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Rows (benchmark, unit, sibyl_nb, peer, peer_value, ratio, goal, notes)."""
    from distributed import Client, LocalCluster

    from sibyl_nb.engine.dask_executor import DaskExecutor

    repeat = 1 if quick else 3
    local_slots = min(32, (os.cpu_count() or 1) + 4)  # asyncio's default thread pool
    threads = max(1, math.ceil(local_slots / 2))
    pipe = fanout(TASKS)
    local = _median_wall(lambda: pipe.run({}), repeat)
    with (
        LocalCluster(
            n_workers=2,
            processes=True,
            threads_per_worker=threads,
            dashboard_address=":0",
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        client.wait_for_workers(2)
        dask_slots = sum(client.nthreads().values())
        executor = DaskExecutor(client=client)
        check = pipe.run({}, executor=executor).output
        assert check == {"count": TASKS}, check
        ours = _median_wall(lambda: pipe.run({}, executor=executor), repeat)
        raw = _median_wall(
            lambda: client.gather(client.map(time.sleep, [TASK_SECONDS] * TASKS, pure=False)), repeat
        )
    per = {
        name: (wall - _ideal(slots)) / TASKS
        for name, wall, slots in (
            ("ours", ours, dask_slots),
            ("raw", raw, dask_slots),
            ("local", local, local_slots),
        )
    }
    setup = (
        f"{TASKS} tasks x {TASK_SECONDS * 1e3:.0f} ms; Dask: 2 workers x {threads} threads "
        f"(processes); local: {local_slots}-thread pool; ideal {_ideal(dask_slots):.2f} s / "
        f"{_ideal(local_slots):.2f} s"
    )
    return [
        _row(
            "dask: fan-out 200 x 50 ms (wall) vs local executor",
            ours,
            "local executor",
            local,
            "s",
            "<= 1.2 x local",
            setup,
        ),
        _row(
            "dask: overhead per task vs local executor",
            per["ours"] * 1e3,
            "local executor",
            per["local"] * 1e3,
            "ms",
            "",
            "(wall - ideal) / tasks",
        ),
        _row(
            "dask: fan-out 200 x 50 ms (wall) vs raw Dask",
            ours,
            "raw dask (client.map)",
            raw,
            "s",
            "<= 1.1 x raw Dask",
            "",
        ),
        _row(
            "dask: overhead per task vs raw Dask",
            per["ours"] * 1e3,
            "raw dask (client.map)",
            per["raw"] * 1e3,
            "ms",
            "<= 2 ms per task",
            "what the executor adds to Dask itself",
        ),
    ]


def _row(
    name: str, ours: float, peer: str, peer_value: float, unit: str, goal: str, notes: str
) -> dict[str, Any]:
    ratio = ours / peer_value if peer_value > 0 and ours >= 0 else None
    return {
        "benchmark": name,
        "unit": unit,
        "sibyl_nb": ours,
        "peer": peer,
        "peer_value": peer_value,
        "ratio": ratio,
        "goal": goal,
        "notes": notes,
    }


def main() -> None:
    for row in run("--quick" in sys.argv):
        print(row)


if __name__ == "__main__":
    main()
