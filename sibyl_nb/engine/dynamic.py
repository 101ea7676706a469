"""Dynamic graphs: build the graph at run time, then run it on the same scheduler code.

The builder is ``build_graph(input_data)`` as the seed writes it, or ``build_graph(input_data, ctx)``
to read upstream outputs (``ctx.upstream``, ``ctx.results``: the node's ``StepContext``). A built
graph with a cycle is refused unless the builder declared it: ``Graph(cyclic=True)``. A failure
inside the built graph names the inner node and technique; ``ctx.interrupt`` inside it is refused as
the dynamic node's error (engine/nested.py: a nested run cannot pause its outer run).

``builder_code`` is code execution. It runs only when the caller trusts the source: a notebook cell
is the user's own code; a YAML file needs ``trust_code=True``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..document.expressions import compile_condition
from ..document.templates import compile_value
from ..errors import SibylError, SpecError, TechniqueError, TrustError
from ..techniques.registry import get_technique
from .builder import Graph
from .ir import CycleFound, Edge, GraphIR, Node
from .nested import settle_nested

if TYPE_CHECKING:  # the scheduler imports this module; a nested one is type(scheduler)(...)
    from .run import RunLike
    from .scheduler import Scheduler

__all__ = ["run_dynamic", "graph_builder", "compile_built_graph"]

_BUILDERS: dict[str, Callable[..., Any]] = {}


def graph_builder(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a Python builder usable as ``builder: <name>`` in a dynamic graph's config."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        _BUILDERS[name] = fn
        return fn

    return decorate


def _builder_from(node: Node, run: RunLike) -> Callable[..., Any]:
    config = node.config
    builder = config.get("builder")
    if callable(builder):
        fn: Callable[..., Any] = builder  # what it returns is checked by compile_built_graph
        return fn
    if isinstance(builder, str):
        try:
            return _BUILDERS[builder]
        except KeyError:
            raise TechniqueError(
                f"no graph builder registered as '{builder}' (use @sibyl_nb.graph_builder)",
                node_id=node.id,
                path=node.path,
                line=node.line,
            ) from None
    code = config.get("builder_code")
    if not run.trusted:
        raise TrustError(
            "builder_code is Python from the document and runs only from a trusted source: "
            "pass trust_code=True (a %%sibyl_pipeline cell is trusted)",
            node_id=node.id,
            path=node.path,
            line=node.line,
        )
    if not isinstance(code, str):
        raise SpecError(
            "a dynamic node needs `builder` or `builder_code`",
            node_id=node.id,
            path=node.path,
            line=node.line,
        )
    namespace: dict[str, Any] = {"Graph": Graph, "__name__": f"sibyl_builder_{node.id}"}
    exec(compile(code, f"<builder_code of {node.id}>", "exec"), namespace)  # trusted code only (above)
    built: Callable[..., Any] = namespace["build_graph"]
    return built


# How ``add_node(..., retry=..., timeout=...)`` options are checked: exactly as the same keys on a YAML
# node. The document compiler (a layer above the engine) registers its checker when it is imported,
# which is always before any document can hold a dynamic graph.
NodeOptionChecker = Callable[[dict[str, Any], tuple[str, ...], str], dict[str, Any]]
_OPTION_CHECKER: list[NodeOptionChecker] = []


def set_node_option_checker(checker: NodeOptionChecker) -> None:
    """Called by :mod:`sibyl_nb.document.compile`: the one place node settings are validated."""
    _OPTION_CHECKER[:] = [checker]


def _node_option_checker() -> NodeOptionChecker:
    # a dynamic node only exists in a compiled document, so the compiler has registered its checker
    assert _OPTION_CHECKER, "sibyl_nb.document.compile registers the node option checker on import"
    return _OPTION_CHECKER[0]


def compile_built_graph(built: Any, node: Node, outer: GraphIR) -> GraphIR:
    """Validate what a builder returned and turn it into IR (errors name the dynamic node)."""
    if not isinstance(built, Graph):
        raise SpecError(
            f"build_graph must return a Graph, got {type(built).__name__}",
            node_id=node.id,
            path=node.path,
            line=node.line,
        )
    built_node_options = _node_option_checker()

    g = GraphIR(max_concurrent=outer.max_concurrent)
    uses_start = any(e["from"] == "start" for e in built.edges)
    if uses_start:
        g.add_node(Node("start", "workflow_orchestration.start", kind="entry", group=node.id))
    for nid, spec in built.nodes.items():
        if nid in outer.nodes:
            raise SpecError(
                f"dynamic node id '{nid}' clashes with a node of the pipeline",
                node_id=node.id,
                path=node.path,
                line=node.line,
            )
        try:
            get_technique(spec["technique"])
        except SibylError as exc:
            raise SpecError(
                f"built node '{nid}': {exc.message}", node_id=node.id, path=node.path, line=node.line
            ) from None
        render, _ = compile_value(spec["config"], (node.id, nid, "config"))
        options = {k: v for k, v in spec.items() if k not in ("technique", "config")}
        settings = built_node_options(options, (node.id, nid), f"build_graph of {node.id}") if options else {}
        g.add_node(
            Node(
                nid,
                spec["technique"],
                spec["config"],
                render=render,
                group=node.id,
                max_iterations=settings.pop("max_iterations", node.max_iterations),
                path=f"{node.path} -> {nid}",
                line=node.line,
                **settings,
            )
        )
    for e in built.edges:
        for end in ("from", "to"):
            if e[end] not in g.nodes:
                raise SpecError(
                    f"built edge {e['from']} -> {e['to']}: no node '{e[end]}'",
                    node_id=node.id,
                    path=node.path,
                    line=node.line,
                )
        cond = compile_condition(e["condition"]) if e.get("condition") else None
        g.add_edge(Edge(e["from"], e["to"], condition=cond, path=f"{node.path} -> {e['from']}->{e['to']}"))
    try:
        return g.finalize(allow_cycles=built.cyclic)
    except CycleFound as cyc:
        raise SpecError(
            f"the built graph has a cycle: {' -> '.join(cyc.cycle)}; a builder that means to loop "
            f"says so with Graph(cyclic=True)",
            node_id=node.id,
            path=node.path,
            line=node.line,
        ) from None


def _takes_ctx(build: Callable[..., Any]) -> bool:
    try:
        params = list(inspect.signature(build).parameters.values())
    except (TypeError, ValueError):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in params)


async def run_dynamic(scheduler: Scheduler, node: Node, ctx: Any) -> Any:
    """Build, then run the built graph with a nested scheduler sharing this run's state."""
    run = scheduler.run
    build = _builder_from(node, run)
    built = build(run.input, ctx) if _takes_ctx(build) else build(run.input)
    graph = compile_built_graph(built, node, scheduler.graph)
    if not graph.nodes:
        return {}
    graph.exits = [x for x in graph.exits if x != "start"]
    sub = type(scheduler)(graph, run, executor=scheduler.executor, hooks=scheduler.hooks)
    await sub.execute()
    scheduler.warnings.extend(f"{node.id}: {w}" for w in sub.warnings)
    settle_nested(
        scheduler,
        sub,
        node,
        failed=lambda error: (
            f"inside the graph built by '{node.id}': node '{error.node_id}' (technique "
            f"'{error.technique}') failed after {error.attempts} attempt(s): {error.message}"
        ),
        interrupted=lambda paused: (
            f"ctx.interrupt inside the graph built by '{node.id}' ({', '.join(paused)}) is not supported: "
            f"ask before or after the dynamic node"
        ),
    )
    return sub.output()
