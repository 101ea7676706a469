"""``for_each`` over a list a step produced at run time vs LangGraph's ``Send``, same process:

    python benchmarks/for_each.py [--quick] [--items N]

Workload: one node returns ``N`` items; a second node runs once per item (a no-op that returns a
one-field dict) and a third collects the list. LangGraph: the same three nodes, the fan-out by
``add_conditional_edges(..., lambda s: [Send("work", {"item": i}) for i in s["items"]])`` into an
``operator.add`` reducer. Overhead per item = (run time with N items - run time with 0 items) / N,
each against its own framework; the median of several runs. No checkpointing on either side.
"""

from __future__ import annotations

import asyncio
import operator
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypedDict

__all__ = ["run", "main"]


def sibyl_pipe() -> Any:
    import sibyl_nb as sb

    @sb.technique("bench.fe_items", blocking=False)
    def items(ctx: Any) -> dict[str, Any]:
        return {"items": list(range(ctx.input["n"]))}

    @sb.technique("bench.fe_work", blocking=False)
    def work(ctx: Any) -> dict[str, Any]:
        return {"v": ctx.item}

    @sb.technique("bench.fe_collect", blocking=False)
    def collect(ctx: Any) -> dict[str, Any]:
        (out,) = ctx.upstream.values()
        return {"n": len(out)}

    return sb.Pipeline.from_dict(
        {
            "steps": [
                {"name": "items", "use": "bench.fe_items"},
                {"name": "work", "use": "bench.fe_work", "for_each": "${items.items}"},
                {"name": "collect", "use": "bench.fe_collect"},
            ]
        }
    )


def lg_graph() -> Any:
    from langgraph.graph import END, START, StateGraph
    from langgraph.types import Send

    class S(TypedDict, total=False):
        n: int
        items: list[int]
        out: Annotated[list[dict[str, Any]], operator.add]
        count: int

    class W(TypedDict):
        item: int

    g = StateGraph(S)
    g.add_node("items", lambda s: {"items": list(range(s["n"]))})
    g.add_node("work", lambda w: {"out": [{"v": w["item"]}]})
    g.add_node("collect", lambda s: {"count": len(s.get("out", []))})
    g.add_edge(START, "items")
    g.add_conditional_edges("items", lambda s: [Send("work", {"item": i}) for i in s["items"]] or "collect")
    g.add_edge("work", "collect")
    g.add_edge("collect", END)
    return g.compile()


async def _median(fn: Callable[[], Awaitable[Any]], reps: int) -> float:
    await fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        await fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


async def _measure(quick: bool, n: int) -> list[dict[str, Any]]:
    reps = 3 if quick else 7
    pipe = sibyl_pipe()
    check = await pipe.execute({"n": n})
    assert check.output == {"n": n}, check.output
    s_n = await _median(lambda: pipe.execute({"n": n}), reps)
    s_0 = await _median(lambda: pipe.execute({"n": 0}), reps * 5)
    rows = []
    try:
        graph = lg_graph()
    except ImportError:
        graph = None
    lg_n = lg_0 = None
    if graph is not None:
        got = await graph.ainvoke({"n": n})
        assert got["count"] == n, got
        lg_n = await _median(lambda: graph.ainvoke({"n": n}), reps)
        lg_0 = await _median(lambda: graph.ainvoke({"n": 0}), reps * 5)
    ours = (s_n - s_0) / n
    peer = (lg_n - lg_0) / n if lg_n is not None and lg_0 is not None else None
    rows.append(
        {
            "benchmark": f"for_each {n} items vs Send (overhead per item)",
            "unit": "us",
            "sibyl_nb": ours * 1e6,
            "langgraph": peer * 1e6 if peer is not None else None,
            "ratio": ours / peer if peer else None,
            "goal": "< 1 (cheaper than Send)",
        }
    )
    rows.append(
        {
            "benchmark": f"for_each {n} items vs Send (whole run, wall)",
            "unit": "ms",
            "sibyl_nb": s_n * 1e3,
            "langgraph": lg_n * 1e3 if lg_n is not None else None,
            "ratio": s_n / lg_n if lg_n else None,
            "goal": "",
        }
    )
    return rows


def run(quick: bool = False, items: int = 1000) -> list[dict[str, Any]]:
    """Rows: benchmark, unit, sibyl_nb, langgraph, ratio, goal."""
    return asyncio.run(_measure(quick, items))


def main() -> None:
    quick = "--quick" in sys.argv
    items = int(sys.argv[sys.argv.index("--items") + 1]) if "--items" in sys.argv else 1000
    for r in run(quick, items):
        lg = f"{r['langgraph']:.2f} {r['unit']}" if r["langgraph"] is not None else "-"
        ratio = f"{r['ratio']:.3f}" if r["ratio"] is not None else "-"
        print(
            f"{r['benchmark']:<50} sibyl_nb {r['sibyl_nb']:>9.2f} {r['unit']:<2}  LangGraph {lg:>12}  ratio {ratio}"
        )


if __name__ == "__main__":
    main()
