"""The engines a user would pick instead of sibyl_nb, each on its own idiomatic API, same workloads.

Every peer builds: a chain of ``n`` no-op steps, a 1-step graph, a fan-out of ``width`` workers that each
``asyncio.sleep(0.05)`` then join, and an ``iterations``-long two-node cycle. A workload the peer has no
idiomatic form for is ``None`` (with the reason in :data:`MISSING`), never a contorted imitation.

- **Hamilton** (``sf-hamilton``): functions whose parameters name their inputs; ``Driver.execute`` (sync),
  ``AsyncDriver`` for async functions. DAGs only: no cycle. It resolves a DAG recursively, so a long
  chain needs a higher recursion limit (raised here, as a user would have to).
- **Burr**: ``@action`` functions and transitions on an ``ApplicationBuilder``; ``app.run(halt_after=...)``.
  Parallel fan-out needs its separate parallelism sub-API (sub-applications), not measured.
- **pydantic-graph**: 2.x's ``GraphBuilder``: async steps and edges, ``.map()`` fan-out into a reducing
  join; a cycle is ``BaseNode`` classes whose ``run`` returns the next node; ``Graph.run_sync``/``run``.
- **LlamaIndex Workflows** (``llama-index-workflows``): ``@step`` methods passing events; ``await
  Workflow.run()`` (async only), ``ctx.send_event`` + ``collect_events`` for fan-out.
- **LangGraph**: ``StateGraph`` nodes and edges, ``compile()``, ``invoke``/``ainvoke``; ``Send`` fan-out.

Chains and fan-outs of generated size are written as source text and ``exec``'d here: Hamilton,
pydantic-graph and LlamaIndex read a step's wiring from its signature or type hints.
"""

from __future__ import annotations

import asyncio
import importlib.util
import operator
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypedDict

__all__ = ["PEERS", "MISSING", "CAVEATS", "available", "Peer"]

SLEEP = 0.05


class Peer:
    """One engine. ``chain``/``one_step`` return a sync runner, ``fanout`` an async one, ``cycle`` sync."""

    name = ""
    module = ""
    package = ""

    @classmethod
    def available(cls) -> bool:
        return importlib.util.find_spec(cls.module) is not None

    def chain(self, n: int) -> Callable[[], Any] | None:
        raise NotImplementedError

    def build_chain(self, n: int) -> Any:
        """Only the build (for the build/compile benchmark); defaults to :meth:`chain`."""
        return self.chain(n)

    def one_step(self) -> Callable[[], Any] | None:
        return self.chain(1)

    def one_step_async(self) -> Callable[[], Awaitable[Any]] | None:
        return None

    def fanout(self, width: int) -> Callable[[], Awaitable[Any]] | None:
        return None

    def cycle(self, iterations: int) -> Callable[[], Any] | None:
        return None


def _exec(source: str, namespace: dict[str, Any]) -> dict[str, Any]:
    exec(compile(source, "<benchmarks.peers>", "exec"), namespace)  # our own generated source
    return namespace


# ---------------------------------------------------------------------- Hamilton
class Hamilton(Peer):
    name, module, package = "Hamilton", "hamilton", "sf-hamilton"

    built = 0

    @classmethod
    def _module(cls, source: str) -> Any:
        from hamilton import ad_hoc_utils

        cls.built += 1
        ns = _exec(source, {"asyncio": asyncio})
        fns = [v for k, v in ns.items() if callable(v) and not k.startswith("__") and k != "asyncio"]
        return ad_hoc_utils.create_temporary_module(*fns, module_name=f"bench_dag_{cls.built}")

    def _chain_driver(self, n: int) -> Any:
        from hamilton import driver

        # Hamilton walks a DAG recursively: a 1000-step chain needs more than Python's default 1000 frames
        sys.setrecursionlimit(max(sys.getrecursionlimit(), 20 * n + 1000))

        src = "def n0() -> int:\n    return 0\n" + "".join(
            f"def n{i}(n{i - 1}: int) -> int:\n    return n{i - 1}\n" for i in range(1, n)
        )
        return driver.Builder().with_modules(self._module(src)).build()

    def build_chain(self, n: int) -> Any:
        return self._chain_driver(n)

    def chain(self, n: int) -> Callable[[], Any]:
        dr = self._chain_driver(n)
        last = [f"n{n - 1}"]
        return lambda: dr.execute(last)

    def fanout(self, width: int) -> Callable[[], Awaitable[Any]]:
        from hamilton import async_driver

        src = "import asyncio\ndef src() -> int:\n    return 0\n"
        src += "".join(
            f"async def w{i}(src: int) -> int:\n    await asyncio.sleep({SLEEP})\n    return 1\n"
            for i in range(width)
        )
        src += f"def join({', '.join(f'w{i}: int' for i in range(width))}) -> int:\n    return 0\n"
        module = self._module(src)

        async def go() -> Any:
            dr = await async_driver.Builder().with_modules(module).build()
            return await dr.execute(["join"])

        return go


# ---------------------------------------------------------------------- Burr
class Burr(Peer):
    name, module, package = "Burr", "burr", "burr"

    def _chain_app(self, n: int) -> Any:
        from burr.core import ApplicationBuilder, State, action

        @action(reads=[], writes=[])
        def noop(state: State) -> State:
            return state

        actions = {f"n{i}": noop for i in range(n)}
        transitions = [(f"n{i}", f"n{i + 1}") for i in range(n - 1)]
        return (
            ApplicationBuilder()
            .with_actions(**actions)
            .with_transitions(*transitions)
            .with_state(x=0)
            .with_entrypoint("n0")
            .build()
        )

    def build_chain(self, n: int) -> Any:
        return self._chain_app(n)

    def chain(self, n: int) -> Callable[[], Any]:
        def go() -> Any:
            app = self._chain_app(n)  # an application is one run: building it is part of the run
            return app.run(halt_after=[f"n{n - 1}"])

        return go

    def cycle(self, iterations: int) -> Callable[[], Any]:
        from burr.core import ApplicationBuilder, State, action, expr

        @action(reads=["n"], writes=["n"])
        def a(state: State) -> State:
            return state.update(n=state["n"] + 1)

        @action(reads=[], writes=[])
        def b(state: State) -> State:
            return state

        @action(reads=[], writes=[])
        def done(state: State) -> State:
            return state

        def go() -> Any:
            app = (
                ApplicationBuilder()
                .with_actions(a=a, b=b, done=done)
                .with_transitions(("a", "b", expr(f"n < {iterations}")), ("a", "done"), ("b", "a"))
                .with_state(n=0)
                .with_entrypoint("a")
                .build()
            )
            return app.run(halt_after=["done"])

        return go


# ---------------------------------------------------------------------- pydantic-graph
class PydanticGraph(Peer):
    name, module, package = "pydantic-graph", "pydantic_graph", "pydantic-graph"

    def build_chain(self, n: int) -> Any:
        from pydantic_graph import GraphBuilder, StepContext

        async def noop(ctx: StepContext[None, None, Any]) -> int:
            return 0

        g = GraphBuilder(output_type=int)
        steps = [g.step(noop, node_id=f"n{i}") for i in range(n)]
        g.add(g.edge_from(g.start_node).to(steps[0]), g.edge_from(steps[-1]).to(g.end_node))
        for a, b in zip(steps, steps[1:], strict=False):
            g.add(g.edge_from(a).to(b))
        return g.build()

    def chain(self, n: int) -> Callable[[], Any]:
        graph = self.build_chain(n)
        return lambda: graph.run_sync()

    def one_step_async(self) -> Callable[[], Awaitable[Any]]:
        graph = self.build_chain(1)
        return lambda: graph.run()

    def fanout(self, width: int) -> Callable[[], Awaitable[Any]]:
        from pydantic_graph import GraphBuilder, StepContext, reduce_list_append

        g = GraphBuilder(output_type=list[int])

        @g.step
        async def src(ctx: StepContext[None, None, None]) -> list[int]:
            return list(range(width))

        @g.step
        async def work(ctx: StepContext[None, None, int]) -> int:
            await asyncio.sleep(SLEEP)
            return ctx.inputs

        join = g.join(reduce_list_append, initial_factory=list[int])
        g.add(
            g.edge_from(g.start_node).to(src),
            g.edge_from(src).map().to(work),
            g.edge_from(work).to(join),
            g.edge_from(join).to(g.end_node),
        )
        graph = g.build()
        return lambda: graph.run()

    def cycle(self, iterations: int) -> Callable[[], Any]:
        import dataclasses

        from pydantic_graph import BaseNode, End, GraphBuilder, GraphRunContext

        ns: dict[str, Any] = {
            "BaseNode": BaseNode,
            "End": End,
            "GraphRunContext": GraphRunContext,
            "dataclass": dataclasses.dataclass,
        }
        _exec(
            "@dataclass\nclass A(BaseNode[None, None, int]):\n"
            "    n: int = 0\n"
            "    async def run(self, ctx: GraphRunContext) -> 'B | End[int]':\n"
            f"        return B(self.n + 1) if self.n + 1 < {iterations} else End(self.n + 1)\n"
            "@dataclass\nclass B(BaseNode[None, None, int]):\n"
            "    n: int = 0\n"
            "    async def run(self, ctx: GraphRunContext) -> A:\n"
            "        return A(self.n)\n",
            ns,
        )
        g = GraphBuilder(output_type=int)
        g.add(g.node(ns["A"]), g.node(ns["B"]), g.edge_from(g.start_node).to(ns["A"]))
        graph = g.build()
        return lambda: graph.run_sync(inputs=ns["A"]())


# ---------------------------------------------------------------------- LlamaIndex Workflows
class LlamaIndex(Peer):
    name, module, package = "LlamaIndex Workflows", "workflows", "llama-index-workflows"

    def _chain_workflow(self, n: int) -> Any:
        from workflows import Context, Workflow, step
        from workflows.events import Event, StartEvent, StopEvent

        ns: dict[str, Any] = {
            "Workflow": Workflow,
            "step": step,
            "Event": Event,
            "StartEvent": StartEvent,
            "StopEvent": StopEvent,
            "Context": Context,
        }
        src = "".join(f"class E{i}(Event):\n    pass\n" for i in range(1, n))
        src += "class Chain(Workflow):\n"
        for i in range(n):
            arg = "StartEvent" if i == 0 else f"E{i}"
            out = f"E{i + 1}" if i < n - 1 else "StopEvent"
            ret = f"E{i + 1}()" if i < n - 1 else "StopEvent(result=0)"
            src += f"    @step\n    async def s{i}(self, ev: {arg}) -> {out}:\n        return {ret}\n"
        _exec(src, ns)
        return ns["Chain"](timeout=None)

    def build_chain(self, n: int) -> Any:
        return self._chain_workflow(n)

    def chain(self, n: int) -> Callable[[], Any]:
        wf = self._chain_workflow(n)

        async def go() -> Any:
            return await wf.run()

        return lambda: asyncio.run(go())

    def one_step_async(self) -> Callable[[], Awaitable[Any]]:
        wf = self._chain_workflow(1)
        return lambda: wf.run()

    def fanout(self, width: int) -> Callable[[], Awaitable[Any]]:
        from workflows import Context, Workflow, step
        from workflows.events import Event, StartEvent, StopEvent

        class Job(Event):
            pass

        class Done(Event):
            pass

        class FanOut(Workflow):
            @step
            async def src(self, ctx: Context, ev: StartEvent) -> Job | None:
                for _ in range(width):
                    ctx.send_event(Job())
                return None

            @step(num_workers=width)
            async def work(self, ev: Job) -> Done:
                await asyncio.sleep(SLEEP)
                return Done()

            @step
            async def join(self, ctx: Context, ev: Done) -> StopEvent | None:
                got = ctx.collect_events(ev, [Done] * width)
                return None if got is None else StopEvent(result=len(got))

        wf = FanOut(timeout=None)
        return lambda: wf.run()

    def cycle(self, iterations: int) -> Callable[[], Any]:
        from workflows import Workflow, step
        from workflows.events import Event, StartEvent, StopEvent

        class Tick(Event):
            n: int

        class Tock(Event):
            n: int

        class Loop(Workflow):
            @step
            async def start(self, ev: StartEvent) -> Tick:
                return Tick(n=0)

            @step
            async def a(self, ev: Tick) -> Tock | StopEvent:
                n = ev.n + 1
                return Tock(n=n) if n < iterations else StopEvent(result=n)

            @step
            async def b(self, ev: Tock) -> Tick:
                return Tick(n=ev.n)

        wf = Loop(timeout=None)

        async def go() -> Any:
            return await wf.run()

        return lambda: asyncio.run(go())


# ---------------------------------------------------------------------- LangGraph
class LangGraph(Peer):
    name, module, package = "LangGraph", "langgraph", "langgraph"
    limit = {"recursion_limit": 100_000}

    def build_chain(self, n: int) -> Any:
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

    def chain(self, n: int) -> Callable[[], Any]:
        graph = self.build_chain(n)
        return lambda: graph.invoke({}, self.limit)

    def one_step_async(self) -> Callable[[], Awaitable[Any]]:
        graph = self.build_chain(1)
        return lambda: graph.ainvoke({})

    def fanout(self, width: int) -> Callable[[], Awaitable[Any]]:
        from langgraph.graph import END, START, StateGraph

        class S(TypedDict, total=False):
            done: Annotated[list[int], operator.add]

        async def sleeper(s: S) -> dict[str, Any]:
            await asyncio.sleep(SLEEP)
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
        graph = g.compile()
        return lambda: graph.ainvoke({})

    def cycle(self, iterations: int) -> Callable[[], Any]:
        from langgraph.graph import END, START, StateGraph

        class S(TypedDict, total=False):
            n: int

        g = StateGraph(S)
        g.add_node("a", lambda s: {"n": s.get("n", 0) + 1})
        g.add_node("b", lambda s: {})
        g.add_edge(START, "a")
        g.add_conditional_edges("a", lambda s: "b" if s["n"] < iterations else END)
        g.add_edge("b", "a")
        graph = g.compile()
        return lambda: graph.invoke({}, self.limit)

    def dynamic(self, width: int) -> Callable[[], Awaitable[Any]]:
        from langgraph.graph import END, START, StateGraph
        from langgraph.types import Send

        class S(TypedDict, total=False):
            width: int
            done: Annotated[list[int], operator.add]

        g = StateGraph(S)
        g.add_node("w", lambda s: {"done": [1]})
        g.add_conditional_edges(START, lambda s: [Send("w", {}) for _ in range(s["width"])])
        g.add_edge("w", END)
        graph = g.compile()
        return lambda: graph.ainvoke({"width": width}, self.limit)


PEERS: tuple[type[Peer], ...] = (Hamilton, Burr, PydanticGraph, LlamaIndex, LangGraph)
MISSING = {
    ("Hamilton", "cycle"): "DAGs only",
    ("Burr", "fanout"): "parallel fan-out is a separate sub-application API",
}


# How a peer's number was taken, where a reader would otherwise wonder (shown in the table's notes).
CAVEATS = {
    ("Burr", "chain"): "Burr: an Application holds one run's state, so each run builds it",
    ("Burr", "one_step"): "Burr: built per run",
    ("LlamaIndex Workflows", "chain"): "LlamaIndex: async only, asyncio.run per sync run",
    ("LlamaIndex Workflows", "one_step"): "LlamaIndex: asyncio.run per run",
    ("Hamilton", "chain"): "Hamilton: recursion limit raised for long chains",
}


def available() -> list[Peer]:
    """An instance of every peer that is installed (the ``bench`` extra installs them all)."""
    return [p() for p in PEERS if p.available()]
