"""Engine overhead, sibyl_nb against every peer in :mod:`benchmarks.peers`, same workloads, one process.

    python -m benchmarks --only engine [--quick]

Workloads: a chain of no-op steps (1000 and 3000: per-step cost, and whether it stays flat), a 1-step
run (sync ``pipe.run`` and async ``await pipe.execute``), fan-out 100 x ``asyncio.sleep(0.05)`` ->
join (wall), a 50-iteration cycle, a 1000-way dynamic fan-out, compiling a fan-out graph of 4k and
40k nodes, ``Pipeline.from_yaml`` of a 1000-node chain, and a cold start (import + build + first
1-step run, in a fresh interpreter). Goals from issue 16 are in each row's ``goal``.

CPU-bound rows report the best of several repeats of the process's CPU time (``time.process_time``,
every thread of it): on a shared machine other processes inflate wall-clock time by up to 2x from
one batch to the next, CPU time far less, and on an idle machine the two agree. Wall-clock rows
(sleeps) report the median of ``time.perf_counter``. The cold start is the CPU time from the first
import to the end of the first run in each fresh interpreter, best of several.
"""

import asyncio
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sibyl_nb as sb
from benchmarks.peers import CAVEATS, MISSING, Peer, available
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


def sibyl_chain_yaml(n: int) -> str:
    return "steps:\n" + "".join(f"  - use: bench.noop\n    id: n{i}\n" for i in range(n))


def sibyl_fanout_compile(width: int) -> float:
    """CPU seconds to compile source -> ``width`` workers -> join from a dict (the dict built beforehand)."""
    nodes = [{"id": "src", "technique": "bench.noop"}, {"id": "join", "technique": "bench.noop"}]
    edges = []
    for i in range(width):
        nodes.append({"id": f"w{i}", "technique": "bench.noop"})
        edges += [{"from": "src", "to": f"w{i}"}, {"from": f"w{i}", "to": "join"}]
    doc = {
        "steps": [
            {
                "use": "workflow_orchestration.graph",
                "config": {"subtechnique": "dag", "graph_definition": {"nodes": nodes, "edges": edges}},
            }
        ]
    }
    t0 = time.process_time()
    sb.Pipeline.from_dict(doc)
    return time.process_time() - t0


# ---------------------------------------------------------------------- timing
_cpu = time.process_time


def _quiet() -> None:
    """Before each measurement: collect, then freeze what is alive, so the garbage collector's passes
    during a measurement cover what that workload allocates, not the graphs and modules every earlier
    workload (of every peer) left in this long-lived process; they slowed all engines alike by ~1.5x."""
    gc.collect()
    gc.freeze()


FILL = [1.0]  # seconds a measurement may take when the workload is cheap (the suite sets it)
MAX_REPEAT = 50


def best(fn: Callable[[], Any], repeat: int, number: int = 1, budget: float | None = None) -> float:
    """Best mean CPU seconds per call over ``repeat`` batches of ``number`` calls (after one warm-up).
    A cheap workload gets more batches, up to :data:`FILL` seconds of them (at most
    :data:`MAX_REPEAT`), the same for every engine: one batch of a few milliseconds is at the mercy
    of the other processes. ``budget``: fewer batches (at least one) when ``repeat`` would take longer."""
    _quiet()
    t0 = time.perf_counter()
    fn()
    first = max(time.perf_counter() - t0, 1e-9) * number
    repeat = max(repeat, min(MAX_REPEAT, int(FILL[0] / first)))
    if budget is not None and first * repeat > budget:
        repeat = max(1, int(budget / first))
    times = []
    for _ in range(repeat):
        t0 = _cpu()
        for _ in range(number):
            fn()
        times.append((_cpu() - t0) / number)
    return min(times)


LADDER = (100, 300, 1000, 3000)


def chain_per_step(
    make: Callable[[int], Callable[[], Any] | None], n: int, repeat: int, budget: float
) -> tuple[float, int, str]:
    """(seconds per step, steps measured, why not ``n``) of a peer's chain: on ``n`` steps, or on the
    longest chain of :data:`LADDER` whose ``repeat + 1`` runs are predicted to fit ``budget``. The
    prediction extends the growth seen between the last two sizes (run time ~ length^k, k from 1 to
    2; k = 2 after one size). Some peers' per-step cost grows with the chain: a 1000-step LlamaIndex
    run took 54-195 s, which made the full suite run for hours."""
    sizes = [x for x in LADDER if x < n] + [n]
    seen: list[tuple[int, float]] = []
    fn: Callable[[], Any] | None = None
    why = ""
    for size in sizes:
        if seen:
            last, seconds = seen[-1]
            k = 2.0
            if len(seen) > 1:
                (s0, t0), (s1, t1) = seen[-2], seen[-1]
                k = min(2.0, max(1.0, math.log(max(t1, 1e-9) / max(t0, 1e-9)) / math.log(s1 / s0)))
            predicted = seconds * (size / last) ** k
            if predicted * (repeat + 1) > budget:
                why = (
                    f"one {last}-step run {seconds:.2f} s; a {size}-step run, predicted ~{predicted:.0f} s "
                    f"(run time ~ length^{k:.1f}), would not fit the {budget:.0f} s budget"
                )
                break
        candidate = make(size)
        assert candidate is not None
        fn = candidate
        if not seen:
            fn()  # the first run of a library pays its one-time set-up (Burr's: ~0.8 s)
        t = time.perf_counter()
        fn()
        seen.append((size, time.perf_counter() - t))
        if seen[-1][1] * (repeat + 1) > budget and size < n:
            why = f"one {size}-step run took {seen[-1][1]:.1f} s, over the {budget:.0f} s budget"
            break
    assert fn is not None
    size = seen[-1][0]
    return best(fn, repeat, budget=budget) / size, size, why


async def abest(fn: Callable[[], Any], repeat: int, number: int = 1, median: bool = False) -> float:
    """:func:`best` for an async callable, on the running loop; ``median``: the median wall-clock time,
    for workloads that wait (sleeps)."""
    _quiet()
    t0 = time.perf_counter()
    await fn()
    if not median:
        repeat = max(repeat, min(MAX_REPEAT, int(FILL[0] / (max(time.perf_counter() - t0, 1e-9) * number))))
    clock = time.perf_counter if median else _cpu
    times = []
    for _ in range(repeat):
        t0 = clock()
        for _ in range(number):
            await fn()
        times.append((clock() - t0) / number)
    return statistics.median(times) if median else min(times)


def _peer_values(
    peers: list[Peer], workload: str, measure: Callable[[Peer], float | None]
) -> tuple[dict[str, float | None], list[str]]:
    values: dict[str, float | None] = {}
    notes: list[str] = []
    for p in peers:
        why = MISSING.get((p.name, workload))
        if why:
            values[p.name] = None
            notes.append(f"{p.name}: {why}")
            continue
        if (p.name, workload) in CAVEATS:
            notes.append(CAVEATS[(p.name, workload)])
        try:
            values[p.name] = measure(p)
        except Exception as exc:  # a peer's failure is reported in the table, not fatal
            values[p.name] = None
            notes.append(f"{p.name} failed: {type(exc).__name__}: {str(exc)[:80]}")
    return values, notes


ROUNDS = 3


def _rounds(
    ours: Callable[[], float], peers: Callable[[], tuple[dict[str, float | None], list[str]]]
) -> tuple[float, dict[str, float | None], list[str]]:
    """Measure sibyl_nb, then every peer, :data:`ROUNDS` times over; the best of each engine."""
    best_ours = float("inf")
    best_peers: dict[str, float | None] = {}
    notes: list[str] = []
    for _ in range(ROUNDS):
        best_ours = min(best_ours, ours())
        values, notes = peers()
        for name, value in values.items():
            known = best_peers.get(name)
            best_peers[name] = value if known is None else known if value is None else min(known, value)
    return best_ours, best_peers, notes


# ---------------------------------------------------------------------- cold start (fresh interpreter)
_COLD_SIBYL = """
import time
t0 = time.process_time()
import sibyl_nb as sb
@sb.technique("cold.noop", blocking=False)
def noop(ctx):
    return {}
sb.Pipeline.from_dict({"steps": [{"use": "cold.noop"}]}).run({})
print(time.process_time() - t0)
"""
_COLD_PEER = """
import time, asyncio, inspect
t0 = time.process_time()
from benchmarks.peers import {cls}
run = {cls}().one_step()
out = run()
if inspect.isawaitable(out):
    asyncio.run(out)
print(time.process_time() - t0)
"""


def cold_start(code: str, repeat: int) -> float:
    """Best CPU seconds from the first import to the end of the first 1-step run, in fresh interpreters.

    Every interpreter reads compiled bytecode, as after ``pip install``: the first run writes it into a
    private cache (``PYTHONPYCACHEPREFIX``), and ``PYTHONDONTWRITEBYTECODE`` is dropped for these
    children. With it set (as in some CI shells) sibyl_nb's source was recompiled on every start,
    ~2x its cold start, while the peers' installed bytecode was read."""
    root = Path(__file__).resolve().parent.parent
    samples = []
    with tempfile.TemporaryDirectory(prefix="sibyl-pycache-") as cache:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = cache
        for _ in range(repeat + 1):  # the first one writes the bytecode (and warms the disk cache)
            out = subprocess.run(
                [sys.executable, "-c", code],
                cwd=root,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
                check=True,
            )
            samples.append(float(out.stdout.strip().splitlines()[-1]))
    return min(samples[1:])


# ---------------------------------------------------------------------- the suite
def _row(
    name: str,
    unit: str,
    ours: float | None,
    peers: dict[str, float | None],
    goal: str = "",
    notes: list[str] | None = None,
) -> dict[str, Any]:
    scale = {"us": 1e6, "ms": 1e3, "s": 1.0}[unit]
    return {
        "benchmark": name,
        "unit": unit,
        "sibyl_nb": ours * scale if ours is not None else None,
        "peers": {k: (v * scale if v is not None else None) for k, v in peers.items()},
        "goal": goal,
        "notes": "; ".join(notes or []),
    }


def _measure(quick: bool) -> list[dict[str, Any]]:
    """Sync workloads run with no event loop running (as in a script); async ones each in asyncio.run."""
    _register()
    peers = available()
    rows: list[dict[str, Any]] = []
    rep = 3 if quick else 7
    FILL[0] = 0.3 if quick else 1.0

    # chains: per step, sync runs (each peer's idiomatic sync call; LlamaIndex: asyncio.run)
    budget = 10.0 if quick else 30.0  # seconds per peer and chain size
    per_step: dict[int, float] = {}
    for n in (1000, 3000):
        pipe = sibyl_chain(n)
        ours = best(lambda p=pipe: p.run({}), rep) / n
        per_step[n] = ours
        if n == 1000 or not quick:
            shorter: list[str] = []

            def peer_chain(p: Peer, n: int = n, shorter: list[str] = shorter) -> float:
                value, size, why = chain_per_step(lambda k: p.chain(k), n, max(2, rep // 2), budget)
                if size < n:
                    shorter.append(f"{p.name}: per step on a {size}-step chain ({why})")
                return value

            values, notes = _peer_values(peers, "chain", peer_chain)
            notes += shorter
        else:
            values, notes = {p.name: None for p in peers}, ["peers at 3000 steps: full run only"]
        if n == 3000:
            notes.append(f"flat: 3000-step / 1000-step per-step cost = {per_step[3000] / per_step[1000]:.2f}")
        rows.append(
            _row(f"chain {n} no-op steps, per step", "us", ours, values, "<= 0.5 x fastest peer", notes)
        )

    # 1-step runs: the fixed cost of one run; engines take turns (ROUNDS), so a noisy spell of the
    # machine does not land on one engine only
    one = sibyl_chain(1)
    number = 2000 if not quick else 500
    ours, values, notes = _rounds(
        lambda: best(lambda: one.run({}), rep, number),
        lambda: _peer_values(peers, "one_step", lambda p: best(p.one_step(), rep, 200, budget)),
    )
    rows.append(_row("1-step run, sync (pipe.run)", "us", ours, values, "<= 15 us", notes))

    def peer_async(p: Peer) -> float | None:
        fn = p.one_step_async()
        return None if fn is None else asyncio.run(abest(fn, rep, 200))

    ours, values, notes = _rounds(
        lambda: asyncio.run(abest(lambda: one.execute({}), rep, number)),
        lambda: _peer_values(peers, "one_step_async", peer_async),
    )
    notes.append("n/a: no async API")
    rows.append(_row("1-step run, async (await execute)", "us", ours, values, "", notes))

    # fan-out 100 x 50 ms -> join: wall time
    fan = sibyl_fanout(100)
    ours = asyncio.run(abest(lambda: fan.execute({}), rep, median=True))

    def peer_fanout(p: Peer) -> float | None:
        fn = p.fanout(100)
        return None if fn is None else asyncio.run(abest(fn, rep, median=True))

    values, notes = _peer_values(peers, "fanout", peer_fanout)
    rows.append(_row("fan-out 100 x sleep(50 ms) -> join (wall)", "ms", ours, values, "<= 55 ms", notes))

    # 50-iteration cycle
    cyc = sibyl_cycle(50)
    ours, values, notes = _rounds(
        lambda: best(lambda: cyc.run({}), rep * 3),
        lambda: _peer_values(peers, "cycle", lambda p: best(p.cycle(50), rep * 3, budget=budget)),
    )
    rows.append(_row("50-iteration cycle", "ms", ours, values, "<= 0.2 x fastest peer", notes))

    # dynamic fan-out: LangGraph's Send is the peer with one
    dyn = sibyl_dynamic()
    ours = asyncio.run(abest(lambda: dyn.execute({"width": 1000}), rep))
    values = {}
    for p in peers:
        maker = getattr(p, "dynamic", None)
        values[p.name] = asyncio.run(abest(maker(1000), rep)) if maker else None
    rows.append(_row("dynamic fan-out 1000", "ms", ours, values, "", ["others: no run-time fan-out API"]))

    # compile: linear in the graph's size
    small, big = 4000, 40_000
    t_small = min(sibyl_fanout_compile(small) for _ in range(2 if quick else 3))
    t_big = min(sibyl_fanout_compile(big) for _ in range(1 if quick else 2))
    ratio = (t_big / big) / (t_small / small)
    rows.append(
        _row(
            f"compile fan-out graph, {big // 1000}k nodes",
            "s",
            t_big,
            {},
            "<= 1 s; per node <= 1.5 x that at 4k",
            [
                f"{small // 1000}k nodes: {t_small:.3f} s; per node {big // 1000}k / {small // 1000}k = {ratio:.2f}"
            ],
        )
    )

    # YAML: from_yaml of a 1000-node chain, against each peer's build of the same chain
    text = sibyl_chain_yaml(1000)
    ours = best(lambda: sb.Pipeline.from_yaml(text), rep)
    as_dict = best(lambda: sibyl_chain(1000), rep)
    values, notes = _peer_values(
        peers, "build", lambda p: best(lambda: p.build_chain(1000), max(2, rep // 2), budget=budget)
    )
    notes.insert(0, f"sibyl_nb from_dict {as_dict * 1e3:.1f} ms; peers: building the same chain")
    rows.append(
        _row("load 1000-step chain (from_yaml vs peers' build)", "ms", ours, values, "<= 40 ms", notes)
    )

    # cold start
    reps = 2 if quick else 4
    ours = cold_start(_COLD_SIBYL, reps)
    values, notes = _peer_values(
        peers, "cold", lambda p: cold_start(_COLD_PEER.format(cls=type(p).__name__), reps)
    )
    notes.insert(
        0, f"CPU time in fresh interpreters reading compiled bytecode (as after pip install), best of {reps}"
    )
    rows.append(_row("cold start: import + build + first 1-step run", "ms", ours, values, "<= 100 ms", notes))
    return rows


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Every workload; rows of (benchmark, unit, sibyl_nb, peers: {name: value}, goal, notes)."""
    return _measure(quick)


def main() -> None:
    print(json.dumps(run("--quick" in sys.argv), indent=1))


if __name__ == "__main__":
    main()
