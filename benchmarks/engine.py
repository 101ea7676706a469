"""Engine overhead, sibyl_nb vs LangGraph, same workloads in one process; prints ratios.

    python benchmarks/engine.py [--quick]

Workloads: a chain of no-op nodes (1000 and 3000: per-node overhead and whether it stays flat), a
1-node pipeline (fixed cost per run), fan-out 100 x asyncio.sleep(0.05) -> join (wall time), a
50-iteration cycle, a 1000-way dynamic fan-out, and ``import sibyl_nb`` in a fresh interpreter.
Goals (issue 2): per-node <= 0.1 x LangGraph and flat to 3000 nodes; fixed cost <= 0.1 ms; fan-out
wall <= 55 ms; import <= 0.2 s.
"""

import asyncio
import operator
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypedDict

import sibyl_nb as sb
from sibyl_nb.engine.builder import Graph

__all__ = ["run", "main"]


# ---------------------------------------------------------------------- sibyl_nb workloads
def _register() -> None:
    @sb.technique("bench.noop", blocking=False)
    def noop(ctx: Any) -> dict[str, Any]:
        return {}

    @sb.technique("bench.sleep")
    async def sleep(ctx: Any) -> dict[str, Any]:
        await asyncio.sleep(0.05)
        return {}

    @sb.technique("bench.count", blocking=False)
    def count(ctx: Any) -> dict[str, Any]:
        return {"n": ctx.iteration}

    @sb.graph_builder("bench.fanout")
    def fanout(input_data: dict[str, Any]) -> Graph:
        g = Graph()
        for i in range(input_data["width"]):
            g.add_node(f"w{i}", "bench.noop")
            g.add_edge("start", f"w{i}")
        return g


def sibyl_chain(n: int) -> sb.Pipeline:
    return sb.Pipeline.from_dict({"steps": [{"use": "bench.noop", "id": f"n{i}"} for i in range(n)]})


def sibyl_fanout(width: int) -> sb.Pipeline:
    nodes = [{"id": "src", "technique": "bench.noop"}, {"id": "join", "technique": "bench.noop"}]
    edges = []
    for i in range(width):
        nodes.append({"id": f"w{i}", "technique": "bench.sleep"})
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


def sibyl_cycle(iterations: int) -> sb.Pipeline:
    return sb.Pipeline.from_dict(
        {
            "steps": [
                {
                    "use": "workflow_orchestration.graph",
                    "config": {
                        "subtechnique": "cyclic",
                        "max_iterations": iterations + 1,
                        "graph_definition": {
                            "nodes": [
                                {"id": "a", "technique": "bench.count"},
                                {"id": "b", "technique": "bench.noop"},
                            ],
                            "edges": [
                                {"from": "a", "to": "b", "condition": f"${{a.n}} < {iterations}"},
                                {"from": "b", "to": "a"},
                            ],
                        },
                    },
                }
            ]
        }
    )


def sibyl_dynamic() -> sb.Pipeline:
    return sb.Pipeline.from_dict(
        {
            "steps": [
                {
                    "use": "workflow_orchestration.graph",
                    "config": {"subtechnique": "dynamic", "builder": "bench.fanout"},
                }
            ]
        }
    )


# ---------------------------------------------------------------------- LangGraph workloads
def lg_available() -> bool:
    try:
        import langgraph  # noqa: F401
    except ImportError:
        return False
    return True


def lg_chain(n: int) -> Any:
    from langgraph.graph import END, START, StateGraph

    class S(TypedDict, total=False):
        x: int

    g = StateGraph(S)
    for i in range(n):
        g.add_node(f"n{i}", lambda s: {})
    g.add_edge(START, "n0")
    for i in range(n - 1):
        g.add_edge(f"n{i}", f"n{i + 1}")
    g.add_edge(f"n{n - 1}", END)
    return g.compile()


def lg_fanout(width: int) -> Any:
    from langgraph.graph import END, START, StateGraph

    class S(TypedDict, total=False):
        done: Annotated[list[int], operator.add]

    async def sleeper(s: S) -> dict[str, Any]:
        await asyncio.sleep(0.05)
        return {"done": [1]}

    g = StateGraph(S)
    g.add_node("src", lambda s: {})
    g.add_node("join", lambda s: {})
    g.add_edge(START, "src")
    for i in range(width):
        g.add_node(f"w{i}", sleeper)
        g.add_edge("src", f"w{i}")
        g.add_edge(f"w{i}", "join")
    g.add_edge("join", END)
    return g.compile()


def lg_cycle(iterations: int) -> Any:
    from langgraph.graph import END, START, StateGraph

    class S(TypedDict, total=False):
        n: int

    g = StateGraph(S)
    g.add_node("a", lambda s: {"n": s.get("n", 0) + 1})
    g.add_node("b", lambda s: {})
    g.add_edge(START, "a")
    g.add_conditional_edges("a", lambda s: "b" if s["n"] < iterations else END)
    g.add_edge("b", "a")
    return g.compile()


def lg_dynamic() -> Any:
    from langgraph.graph import END, START, StateGraph
    from langgraph.types import Send

    class S(TypedDict, total=False):
        width: int
        done: Annotated[list[int], operator.add]

    g = StateGraph(S)
    g.add_node("w", lambda s: {"done": [1]})
    g.add_conditional_edges(START, lambda s: [Send("w", {}) for _ in range(s["width"])])
    g.add_edge("w", END)
    return g.compile()


# ---------------------------------------------------------------------- timing
async def _time(fn: Callable[[], Awaitable[Any]], repeat: int) -> float:
    await fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        await fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _import_time() -> float:
    code = "import time; t=time.perf_counter(); import sibyl_nb; print(time.perf_counter()-t)"
    samples = [float(subprocess.check_output([sys.executable, "-c", code]).decode()) for _ in range(5)]
    return statistics.median(samples)


async def _measure(quick: bool) -> list[dict[str, Any]]:
    _register()
    have_lg = lg_available()
    rows: list[dict[str, Any]] = []
    rep = 3 if quick else 7
    recursion = {"recursion_limit": 100_000}

    for n in (1000, 3000):
        pipe = sibyl_chain(n)
        s = await _time(lambda p=pipe: p.execute({}), rep)
        lg = None
        if have_lg and (n == 1000 or not quick):
            graph = lg_chain(n)
            lg = await _time(lambda g=graph: g.ainvoke({}, recursion), max(2, rep // 2))
        rows.append(
            _row(
                f"chain {n} no-op nodes (per node)",
                s / n,
                lg / n if lg else None,
                "us",
                goal="<= 0.1 x LangGraph, flat",
            )
        )

    one = sibyl_chain(1)
    s = await _time(lambda: one.execute({}), rep * 200)
    lg = None
    if have_lg:
        g1 = lg_chain(1)
        lg = await _time(lambda: g1.ainvoke({}), rep * 50)
    rows.append(_row("1-node pipeline (fixed cost)", s, lg, "ms", goal="<= 0.1 ms"))

    fan = sibyl_fanout(100)
    s = await _time(lambda: fan.execute({}), rep)
    lg = None
    if have_lg:
        gf = lg_fanout(100)
        lg = await _time(lambda: gf.ainvoke({}), rep)
    rows.append(_row("fan-out 100 x sleep(50ms) -> join (wall)", s, lg, "ms", goal="<= 55 ms"))

    cyc = sibyl_cycle(50)
    s = await _time(lambda: cyc.execute({}), rep * 5)
    lg = None
    if have_lg:
        gc = lg_cycle(50)
        lg = await _time(lambda: gc.ainvoke({}, recursion), rep * 5)
    rows.append(_row("50-iteration cycle (wall)", s, lg, "ms"))

    dyn = sibyl_dynamic()
    s = await _time(lambda: dyn.execute({"width": 1000}), rep)
    lg = None
    if have_lg:
        gd = lg_dynamic()
        lg = await _time(lambda: gd.ainvoke({"width": 1000}, recursion), rep)
    rows.append(_row("dynamic fan-out 1000 (wall)", s, lg, "ms"))

    rows.append(_row("import sibyl_nb", _import_time(), None, "s", goal="<= 0.2 s"))
    return rows


def _row(name: str, ours: float, peer: float | None, unit: str, goal: str = "") -> dict[str, Any]:
    scale = {"us": 1e6, "ms": 1e3, "s": 1.0}[unit]
    return {
        "benchmark": name,
        "unit": unit,
        "sibyl_nb": ours * scale,
        "langgraph": peer * scale if peer is not None else None,
        "ratio": (ours / peer) if peer else None,
        "goal": goal,
    }


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Run every workload; returns rows (benchmark, unit, sibyl_nb, langgraph, ratio, goal)."""
    return asyncio.run(_measure(quick))


def format_rows(rows: list[dict[str, Any]]) -> str:
    out = [f"{'benchmark':<44} {'sibyl_nb':>12} {'LangGraph':>12} {'ratio':>8}  goal"]
    for r in rows:
        lg = f"{r['langgraph']:.3f}" if r["langgraph"] is not None else "-"
        ratio = f"{r['ratio']:.3f}" if r["ratio"] is not None else "-"
        out.append(
            f"{r['benchmark']:<44} {r['sibyl_nb']:>9.3f} {r['unit']:<2} {lg:>9} {r['unit']:<2} "
            f"{ratio:>8}  {r['goal']}"
        )
    return "\n".join(out)


def main() -> None:
    quick = "--quick" in sys.argv
    print(format_rows(run(quick)))


if __name__ == "__main__":
    main()
